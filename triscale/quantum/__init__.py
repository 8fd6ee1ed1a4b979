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

from triscale.quantum.electronic import (
    METHODS,
    ElectronicStructure,
    QuantumComputationError,
    QuantumInputError,
    electronic_structure,
    load_npz,
    save_npz,
)

__all__ = [
    "METHODS",
    "ElectronicStructure",
    "QuantumComputationError",
    "QuantumInputError",
    "electronic_structure",
    "load_npz",
    "save_npz",
]
