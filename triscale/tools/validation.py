"""Structure checks run before anything is stored or computed, and the compact summaries tools return."""

from __future__ import annotations

from typing import Any

from ase import Atoms
from ase.data import chemical_symbols

from triscale import sanity
from triscale.tools.errors import ToolInputError

__all__ = ["validate_atoms", "min_distance", "summarize", "check_symbol", "MIN_DISTANCE_A"]

#: Two atoms closer than this are treated as overlapping (the shortest real bond, H2, is 0.74 Å).
MIN_DISTANCE_A = sanity.MIN_DISTANCE_A


def check_symbol(symbol: str) -> str:
    """Return the canonical element symbol or raise a clear error."""
    s = str(symbol).strip()
    s = s[:1].upper() + s[1:].lower()
    if s not in chemical_symbols[1:]:
        raise ToolInputError(f"Unknown element {symbol!r}.", hint="Use an element symbol such as 'Cu', 'O', 'Si'.")
    return s


def min_distance(atoms: Atoms) -> float | None:
    """Shortest interatomic distance: exact for molecules; for periodic cells the minimum image within 3 Å (None
    when no pair is that close); None for a single atom (see :func:`triscale.sanity.min_distance`)."""
    return sanity.min_distance(atoms, cutoff=3.0 if atoms.pbc.any() else float("inf"))


def validate_atoms(atoms: Atoms, *, check_overlap: bool = True) -> None:
    """Raise :class:`ToolInputError` for a structure :func:`triscale.sanity.check_structure` refuses: empty,
    unknown elements, non-finite or out-of-range (> 1e4 Å) coordinates, a zero/degenerate/near-singular or tiny
    periodic cell, atoms closer than 0.5 Å."""
    try:
        sanity.check_structure(atoms, check_overlap=check_overlap)
    except sanity.StructureCheckError as e:
        raise ToolInputError(e.message, hint=e.hint) from None


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
