"""From ASE ``Atoms`` to TriScale graphs (see :mod:`triscale.foundation.keys`) and batches of them.

Neighbour lists come from vesin (O(N) cell lists in C++, periodic in any subset of directions, cells smaller than
the cutoff included). Graph construction is numpy-only so it can run in data-loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from triscale.foundation import keys as K


class StructureError(ValueError):
    """A structure the model cannot evaluate (empty, non-finite, unsupported element, degenerate cell...)."""


def neighbor_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``cutoff`` Å: edge_index (2, E) [receiver, sender] and integer shifts (E, 3)."""
    from vesin import NeighborList

    pbc = np.asarray(atoms.pbc, dtype=bool)
    positions = np.asarray(atoms.positions, dtype=np.float64)
    if pbc.any():
        box = np.asarray(atoms.cell.array, dtype=np.float64)
    else:
        box = np.zeros((3, 3))
    if len(atoms) < 2 and not pbc.any():
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.float64)
    nl = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = nl.compute(positions, box, pbc.tolist(), quantities="ijS")
    edge_index = np.stack([i, j]).astype(np.int64)
    return edge_index, shifts.astype(np.float64)


def check_model_input(atoms: Atoms, supported: Sequence[int] | None = None, max_atoms: int | None = None) -> None:
    """Raise :class:`StructureError` for a structure this model cannot take (no atoms, too many, non-finite, a
    degenerate cell, an element outside ``supported``). The general check is :func:`triscale.sanity.check_structure`."""
    n = len(atoms)
    if n == 0:
        raise StructureError("the structure has no atoms")
    if max_atoms is not None and n > max_atoms:
        raise StructureError(f"the structure has {n} atoms; the limit is {max_atoms}")
    if not np.all(np.isfinite(atoms.positions)):
        raise StructureError("the structure has non-finite (NaN or inf) positions")
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        cell = atoms.cell.array
        if not np.all(np.isfinite(cell)):
            raise StructureError("the cell has non-finite entries")
        lengths = np.linalg.norm(cell, axis=1)
        if np.any(lengths[pbc] < 1e-6) or abs(np.linalg.det(cell)) < 1e-6:
            raise StructureError("the structure is periodic but its cell is degenerate (zero volume)")
    if supported is not None:
        unknown = sorted(set(atoms.numbers.tolist()) - set(int(z) for z in supported))
        if unknown:
            from ase.data import chemical_symbols

            names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z) for z in unknown)
            raise StructureError(f"unsupported element(s) {names}; this model covers {_symbols(supported)}")


def _symbols(numbers: Sequence[int]) -> str:
    from ase.data import chemical_symbols

    return " ".join(chemical_symbols[int(z)] for z in sorted(numbers))


def atoms_to_graph(atoms: Atoms, cutoff: float, domain: int = 0) -> dict[str, torch.Tensor]:
    """One structure as an unbatched graph (float64 positions/cell; the model casts to its own dtype)."""
    edge_index, shifts = neighbor_list(atoms, cutoff)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64) if pbc.any() else np.zeros((3, 3))
    n = len(atoms)
    return {
        K.POSITIONS: torch.as_tensor(np.asarray(atoms.positions, dtype=np.float64)),
        K.ATOMIC_NUMBERS: torch.as_tensor(atoms.numbers.astype(np.int64)),
        K.CELL: torch.as_tensor(cell).unsqueeze(0),
        K.PBC: torch.as_tensor(pbc).unsqueeze(0),
        K.EDGE_INDEX: torch.as_tensor(edge_index),
        K.CELL_SHIFTS: torch.as_tensor(shifts),
        K.BATCH: torch.zeros(n, dtype=torch.long),
        K.NUM_ATOMS: torch.tensor([n], dtype=torch.long),
        K.DOMAIN: torch.tensor([domain], dtype=torch.long),
    }


def collate(graphs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate graphs into one batch: atoms and edges stacked, edge indices offset, ``BATCH`` rebuilt."""
    if not graphs:
        raise ValueError("cannot collate an empty list of graphs")
    out: dict[str, torch.Tensor] = {}
    counts = torch.cat([g[K.NUM_ATOMS] for g in graphs])
    offsets = torch.cumsum(counts, 0) - counts
    out[K.EDGE_INDEX] = torch.cat([g[K.EDGE_INDEX] + off for g, off in zip(graphs, offsets)], dim=1)
    out[K.BATCH] = torch.repeat_interleave(torch.arange(len(graphs)), counts)
    for key in graphs[0]:
        if key in (K.EDGE_INDEX, K.BATCH):
            continue
        out[key] = torch.cat([g[key] for g in graphs], dim=0)
    return out


def graph_to(graph: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device | str = "cpu"):
    """Move a graph to ``device``; floating tensors other than labels go to ``dtype``."""
    moved = {}
    for key, value in graph.items():
        if value.is_floating_point() and not key.startswith("REF_"):
            moved[key] = value.to(device=device, dtype=dtype)
        else:
            moved[key] = value.to(device=device)
    return moved
