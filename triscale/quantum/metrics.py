"""QH9-style metrics of a predicted AO Hamiltonian (Yu et al., NeurIPS 2023 Datasets & Benchmarks).

Per molecule: MAE over all entries of H; orbital energies and coefficients from the generalized eigenproblem
H C = S C ε with the *true* overlap S; MAE of the occupied orbital energies; |cosine similarity| of each occupied
orbital's coefficient vector (plain Euclidean, as QH9's ``test.py``) averaged over occupied orbitals; HOMO, LUMO
and gap errors. All energies in Hartree here; the benchmark prints meV and µEh.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sl

__all__ = ["qh9_metrics", "aggregate"]


def qh9_metrics(h_pred: np.ndarray, h_true: np.ndarray, overlap: np.ndarray, n_occ: int) -> dict[str, float]:
    e_p, c_p = sl.eigh(h_pred, overlap)
    e_t, c_t = sl.eigh(h_true, overlap)
    occ = slice(0, n_occ)
    cp, ct = c_p[:, occ], c_t[:, occ]
    cos = np.abs((cp * ct).sum(axis=0)) / (np.linalg.norm(cp, axis=0) * np.linalg.norm(ct, axis=0))
    out = {
        "h_mae": float(np.abs(h_pred - h_true).mean()),
        "eps_occ_mae": float(np.abs(e_p[occ] - e_t[occ]).mean()),
        "psi_cos": float(cos.mean()),
        "homo_err": float(abs(e_p[n_occ - 1] - e_t[n_occ - 1])),
    }
    if n_occ < len(e_t):
        out["lumo_err"] = float(abs(e_p[n_occ] - e_t[n_occ]))
        out["gap_err"] = float(abs((e_p[n_occ] - e_p[n_occ - 1]) - (e_t[n_occ] - e_t[n_occ - 1])))
        out["gap_true"] = float(e_t[n_occ] - e_t[n_occ - 1])
    return out


def aggregate(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over molecules (QH9 averages per structure)."""
    keys = sorted({k for r in rows for k in r})
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys} | {"n": len(rows)}
