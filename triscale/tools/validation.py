"""Structure checks run before anything is stored or computed, and the compact summaries tools return."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from triscale.tools.errors import ToolInputError

__all__ = ["validate_atoms", "min_distance", "summarize", "check_symbol", "MIN_DISTANCE_A"]

#: Two atoms closer than this are treated as overlapping (the shortest real bond, H2, is 0.74 Å).
MIN_DISTANCE_A = 0.5


def check_symbol(symbol: str) -> str:
    """Return the canonical element symbol or raise a clear error."""
    s = str(symbol).strip()
    s = s[:1].upper() + s[1:].lower()
    if s not in chemical_symbols[1:]:
        raise ToolInputError(
            f"Unknown element {symbol!r}.", hint="Use an element symbol such as 'Cu', 'O', 'Si'."
        )
    return s


def min_distance(atoms: Atoms) -> float | None:
    """Shortest interatomic distance (minimum image for periodic cells); None for a single atom."""
    n = len(atoms)
    if n < 2 and not atoms.pbc.any():
        return None
    if atoms.pbc.any():
        from ase.neighborlist import neighbor_list

        cutoff = 3.0
        d = neighbor_list("d", atoms, cutoff, self_interaction=False)
        return float(d.min()) if len(d) else None
    pos = atoms.positions
    if n <= 3000:
        from scipy.spatial.distance import pdist

        return float(pdist(pos).min())
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pos).query(pos, k=2)
    return float(d[:, 1].min())


def validate_atoms(atoms: Atoms, *, check_overlap: bool = True) -> None:
    """Raise :class:`ToolInputError` for empty, non-finite, unknown-element, degenerate-cell or overlapping
    structures."""
    if atoms is None or len(atoms) == 0:
        raise ToolInputError("The structure has no atoms.", hint="Build or import a non-empty structure.")
    numbers = atoms.numbers
    if np.any(numbers < 1) or np.any(numbers >= len(chemical_symbols)):
        raise ToolInputError("The structure contains an unknown element (atomic number outside 1-118).")
    if not np.all(np.isfinite(atoms.positions)):
        raise ToolInputError(
            "The structure has NaN or infinite coordinates.", hint="Rebuild or re-import it."
        )
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise ToolInputError("The cell has NaN or infinite entries.")
    if atoms.pbc.any():
        if abs(np.linalg.det(cell)) < 1e-6:
            raise ToolInputError(
                "The structure is periodic but its cell has zero volume.",
                hint="Give a 3D cell or set it non-periodic.",
            )
    if check_overlap:
        d = min_distance(atoms)
        if d is not None and d < MIN_DISTANCE_A:
            raise ToolInputError(
                f"Atoms overlap: the shortest interatomic distance is {d:.3f} Å (< {MIN_DISTANCE_A} Å).",
                hint="Check the coordinates or the lattice constant.",
            )


def summarize(atoms: Atoms) -> dict[str, Any]:
    """Formula, size and key geometry (no coordinates)."""
    out: dict[str, Any] = {
        "formula": atoms.get_chemical_formula(mode="hill"),
        "n_atoms": len(atoms),
        "periodic": bool(atoms.pbc.any()),
    }
    d = min_distance(atoms)
    out["min_distance_A"] = None if d is None else round(d, 4)
    if atoms.pbc.all():
        lengths_angles = atoms.cell.cellpar()
        out["cell_lengths_A"] = [round(float(x), 5) for x in lengths_angles[:3]]
        out["cell_angles_deg"] = [round(float(x), 3) for x in lengths_angles[3:]]
        vol = float(atoms.get_volume())
        out["volume_A3"] = round(vol, 4)
        out["density_g_per_cm3"] = round(float(atoms.get_masses().sum()) / vol * 1.66053906660, 4)
    return out
