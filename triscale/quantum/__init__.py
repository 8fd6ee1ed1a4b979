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

from typing import Any

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
    "HamiltonianConfig": "triscale.quantum.hamiltonian",
    "HamiltonianModel": "triscale.quantum.hamiltonian",
    "HamiltonianPrediction": "triscale.quantum.hamiltonian",
    "load_hamiltonian_model": "triscale.quantum.hamiltonian",
    "predict_hamiltonian": "triscale.quantum.hamiltonian",
    "BasisLayout": "triscale.quantum.basis",
    "basis_layout": "triscale.quantum.basis",
    "qh9_metrics": "triscale.quantum.metrics",
    "compare_guesses": "triscale.quantum.scf",
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'triscale.quantum' has no attribute {name!r}")
