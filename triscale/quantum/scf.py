"""SCF acceleration: start a PySCF SCF from the density of a predicted Fock matrix instead of a default guess.

The predicted F is diagonalised with the true overlap (F C = S C ε), the lowest ``n_occ`` orbitals are doubly
occupied, and ``D = 2 C_occ C_occᵀ`` is passed as ``dm0``. Cycles are counted with PySCF's callback; the converged
energies of both starts are compared so that a "faster" start that lands elsewhere would show.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import scipy.linalg as sl
from ase import Atoms

from triscale.quantum.electronic import build_pyscf_mol, make_pyscf_mf

__all__ = ["density_from_fock", "scf_cycles", "compare_guesses"]


def density_from_fock(fock: np.ndarray, overlap: np.ndarray, n_occ: int) -> np.ndarray:
    _, c = sl.eigh(fock, overlap)
    c_occ = c[:, :n_occ]
    return 2.0 * c_occ @ c_occ.T


def scf_cycles(
    atoms: Atoms,
    basis: str,
    functional: str = "b3lyp",
    dm0: np.ndarray | None = None,
    init_guess: str = "minao",
    conv_tol: float = 1e-9,
) -> dict[str, Any]:
    """Run one restricted SCF; return cycles, converged energy (Eh) and wall time."""
    mol = build_pyscf_mol(atoms, basis)
    method = "hf" if functional.lower() == "hf" else "dft"
    mf = make_pyscf_mf(mol, method, functional, 0, 200)
    mf.conv_tol = conv_tol
    mf.init_guess = init_guess
    n = {"cycles": 0}

    def _cb(envs: dict[str, Any]) -> None:
        n["cycles"] = int(envs.get("cycle", n["cycles"])) + 1

    mf.callback = _cb
    t0 = time.perf_counter()
    e = mf.kernel(dm0=dm0)
    return {
        "cycles": n["cycles"],
        "energy_Eh": float(e),
        "converged": bool(mf.converged),
        "seconds": time.perf_counter() - t0,
    }


def compare_guesses(
    atoms: Atoms,
    fock_pred: np.ndarray,
    basis: str,
    functional: str = "b3lyp",
    guesses: tuple[str, ...] = ("minao", "atom", "huckel"),
) -> dict[str, dict[str, Any]]:
    """SCF cycles from each default guess and from the predicted Fock matrix, for one molecule."""
    mol = build_pyscf_mol(atoms, basis)
    s = mol.intor("int1e_ovlp")
    n_occ = mol.nelectron // 2
    out = {g: scf_cycles(atoms, basis, functional, init_guess=g) for g in guesses}
    out["predicted"] = scf_cycles(atoms, basis, functional, dm0=density_from_fock(fock_pred, s, n_occ))
    return out
