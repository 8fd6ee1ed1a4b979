"""Quantum scale: electronic-structure calculations (tblite GFN-xTB, PySCF HF/DFT) behind one cached interface,
and Hamiltonian learning (an equivariant head on the foundation encoder that predicts AO Fock matrices).

>>> from ase.build import molecule
>>> from triscale.quantum import electronic_structure
>>> es = electronic_structure(molecule("H2O"), "gfn2-xtb")
>>> round(es.gap_eV, 1)
14.2

Torch-based parts (``predict_hamiltonian``, ``HamiltonianModel``) are imported on first use.
"""

from __future__ import annotations

from triscale.common import lazy_exports
from triscale.quantum.electronic import (
    METHODS,
    ElectronicStructure,
    QuantumComputationError,
    QuantumInputError,
    electronic_structure,
    load_npz,
    save_npz,
)
from triscale.quantum.methods import MethodChoice, canonical_method, is_dft

_LAZY = {
    "HamiltonianConfig": "hamiltonian",
    "HamiltonianModel": "hamiltonian",
    "HamiltonianPrediction": "hamiltonian",
    "load_hamiltonian_model": "hamiltonian",
    "predict_hamiltonian": "hamiltonian",
    "BasisLayout": "basis",
    "basis_layout": "basis",
    "qh9_metrics": "metrics",
    "compare_guesses": "scf",
}

__all__ = [
    "BasisLayout",
    "HamiltonianConfig",
    "HamiltonianModel",
    "HamiltonianPrediction",
    "METHODS",
    "MethodChoice",
    "ElectronicStructure",
    "QuantumComputationError",
    "QuantumInputError",
    "basis_layout",
    "canonical_method",
    "compare_guesses",
    "electronic_structure",
    "is_dft",
    "load_hamiltonian_model",
    "load_npz",
    "predict_hamiltonian",
    "qh9_metrics",
    "save_npz",
]


__getattr__ = lazy_exports(__name__, _LAZY)
