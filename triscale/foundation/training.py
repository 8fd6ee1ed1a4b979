"""Pieces shared by pretraining and fine-tuning: labelled graphs, reference-energy fits, losses, metrics.

A *labelled graph* is a graph (see :mod:`triscale.foundation.keys`) that also carries ``REF_`` label tensors;
``collate`` batches it like any other graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from triscale.foundation import keys as K
from triscale.foundation.graph import atoms_to_graph, collate

_NAN3 = [float("nan")] * 3
_NAN6 = [float("nan")] * 6


def record_to_graph(record: dict, cutoff: float, domain_index: int) -> dict[str, torch.Tensor]:
    """A dataset row (columns as in :mod:`triscale.foundation.datasets`) as a labelled graph."""
    from ase import Atoms

    atoms = Atoms(
        numbers=record["numbers"],
        positions=np.asarray(record["positions"], dtype=np.float64),
        cell=np.asarray(record["cell"], dtype=np.float64),
        pbc=np.asarray(record["pbc"], dtype=bool),
    )
    graph = atoms_to_graph(atoms, cutoff, domain_index)
    n = len(atoms)
    forces = record.get(K.REF_FORCES)
    stress = record.get(K.REF_STRESS)
    dipole = record.get(K.REF_DIPOLE)
    graph[K.REF_ENERGY] = torch.tensor([float(record[K.REF_ENERGY])], dtype=torch.float64)
    graph[K.REF_FORCES] = (
        torch.tensor(np.asarray(forces, dtype=np.float64)).reshape(n, 3)
        if forces is not None
        else torch.full((n, 3), float("nan"), dtype=torch.float64)
    )
    graph[K.REF_STRESS] = torch.tensor([stress if stress is not None else _NAN6], dtype=torch.float64)
    graph[K.REF_DIPOLE] = torch.tensor([dipole if dipole is not None else _NAN3], dtype=torch.float64)
    return graph


def composition_matrix(graphs: Sequence[dict[str, torch.Tensor]], max_z: int) -> np.ndarray:
    """(B, max_z + 1) element counts of each structure."""
    counts = np.zeros((len(graphs), max_z + 1))
    for row, g in enumerate(graphs):
        np.add.at(counts[row], g[K.ATOMIC_NUMBERS].numpy(), 1)
    return counts


def fit_reference_energies(graphs: Sequence[dict[str, torch.Tensor]], max_z: int, ridge: float = 1e-8):
    """Per-element reference energies E0 (eV) by least squares of total energy on composition.

    Elements absent from ``graphs`` get E0 = 0. A tiny ridge term keeps collinear compositions (e.g. only
    stoichiometric binaries) well posed; it moves the fit by far less than the label noise.
    Returns ``(e0 (max_z+1,), rms residual per atom (eV))``.
    """
    counts = composition_matrix(graphs, max_z)
    energies = np.array([float(g[K.REF_ENERGY][0]) for g in graphs])
    present = counts.sum(0) > 0
    a = counts[:, present]
    e0_present = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ energies)
    e0 = np.zeros(max_z + 1)
    e0[present] = e0_present
    residual = (energies - counts @ e0) / counts.sum(1)
    return e0, float(np.sqrt(np.mean(residual**2)))


def force_rms(graphs: Iterable[dict[str, torch.Tensor]]) -> float:
    """Root mean square of the force label components (eV/Å), ignoring missing labels."""
    values = [g[K.REF_FORCES] for g in graphs]
    f = torch.cat(values).flatten()
    f = f[torch.isfinite(f)]
    return float(torch.sqrt(torch.mean(f**2))) if f.numel() else 1.0


def mean_num_neighbors(graphs: Iterable[dict[str, torch.Tensor]]) -> float:
    edges = atoms = 0
    for g in graphs:
        edges += g[K.EDGE_INDEX].shape[1]
        atoms += g[K.ATOMIC_NUMBERS].shape[0]
    return edges / max(atoms, 1)


def voigt_to_3x3(voigt: torch.Tensor) -> torch.Tensor:
    xx, yy, zz, yz, xz, xy = voigt.unbind(-1)
    return torch.stack(
        [torch.stack([xx, xy, xz], -1), torch.stack([xy, yy, yz], -1), torch.stack([xz, yz, zz], -1)], -2
    )


def losses_and_errors(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Squared and absolute errors per label kind, each averaged over the entries that have labels.

    Keys: ``energy`` (per atom, eV/atom), ``forces`` (eV/Å per component), ``stress`` (eV/Å³ per component),
    ``dipole`` (e·Å per component); for each ``mse_<k>``, ``mae_<k>`` and ``n_<k>`` (count of labelled entries).
    """
    n_atoms = batch[K.NUM_ATOMS].to(torch.float64)
    diffs = {
        "energy": (out[K.ENERGY] - batch[K.REF_ENERGY]) / n_atoms,
        "forces": out[K.FORCES].to(torch.float64) - batch[K.REF_FORCES],
    }
    if K.STRESS in out:
        diffs["stress"] = out[K.STRESS].to(torch.float64) - voigt_to_3x3(batch[K.REF_STRESS])
    if K.DIPOLE in out:
        diffs["dipole"] = out[K.DIPOLE].to(torch.float64) - batch[K.REF_DIPOLE]
    result: dict[str, torch.Tensor] = {}
    for name, diff in diffs.items():
        mask = torch.isfinite(diff)
        n = mask.sum()
        d = torch.where(mask, diff, torch.zeros_like(diff))
        denom = n.clamp(min=1).to(torch.float64)
        result[f"mse_{name}"] = (d**2).sum() / denom
        result[f"mae_{name}"] = d.abs().sum() / denom
        result[f"n_{name}"] = n
    return result


def batches(graphs: Sequence[dict], batch_size: int, generator: torch.Generator | None, shuffle: bool):
    """Yield collated batches over ``graphs`` (one epoch)."""
    order = torch.randperm(len(graphs), generator=generator).tolist() if shuffle else range(len(graphs))
    order = list(order)
    for start in range(0, len(order), batch_size):
        yield collate([graphs[i] for i in order[start : start + batch_size]])


@torch.no_grad()
def evaluate(model, graphs: Sequence[dict], batch_size: int = 32, dtype=torch.float32) -> dict[str, float]:
    """MAE/RMSE per label kind over ``graphs`` (energy in meV/atom, forces meV/Å, stress meV/Å³, dipole e·Å)."""
    from triscale.foundation.graph import graph_to

    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    device = next(model.parameters()).device
    for batch in batches(graphs, batch_size, None, shuffle=False):
        batch = graph_to(batch, dtype, device)
        has_stress = bool(torch.isfinite(batch[K.REF_STRESS]).any())
        out = model(batch, compute_forces=True, compute_stress=has_stress, create_graph=False)
        errors = losses_and_errors(out, batch)
        for key in ("energy", "forces", "stress", "dipole"):
            if f"n_{key}" not in errors:
                continue
            n = float(errors[f"n_{key}"])
            sums[f"mae_{key}"] = sums.get(f"mae_{key}", 0.0) + float(errors[f"mae_{key}"]) * n
            sums[f"mse_{key}"] = sums.get(f"mse_{key}", 0.0) + float(errors[f"mse_{key}"]) * n
            counts[key] = counts.get(key, 0.0) + n
    metrics = {}
    scale = {"energy": 1000.0, "forces": 1000.0, "stress": 1000.0, "dipole": 1.0}
    unit = {"energy": "meV_per_atom", "forces": "meV_per_A", "stress": "meV_per_A3", "dipole": "e_A"}
    for key, n in counts.items():
        if n == 0:
            continue
        metrics[f"{key}_mae_{unit[key]}"] = scale[key] * sums[f"mae_{key}"] / n
        metrics[f"{key}_rmse_{unit[key]}"] = scale[key] * float(np.sqrt(sums[f"mse_{key}"] / n))
    return metrics
