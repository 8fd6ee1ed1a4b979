"""Physical sanity of a structure, checked before anything is computed on it.

One low-level check shared by the foundation CLI (``triscale predict``) and the tools (``validate_atoms``): it
imports only NumPy and SciPy, so it sits below every unit (``foundation`` imports nothing above it; importing
``triscale.foundation`` would pull in torch, which the tool layer must not pay for on every stored structure).

The cell is checked before any neighbour search, so a tiny or near-singular cell is refused in microseconds
instead of hanging a search that would need millions of periodic images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms

__all__ = [
    "StructureCheckError",
    "check_structure",
    "min_distance",
    "MIN_DISTANCE_A",
    "MIN_CELL_HEIGHT_A",
    "MAX_COORDINATE_A",
]

#: Two atoms closer than this are refused as overlapping (the shortest real bond, H2, is 0.74 Å).
MIN_DISTANCE_A = 0.5
#: A periodic cell thinner than this along any periodic direction (distance between opposite faces) is refused:
#: an atom would sit closer than :data:`MIN_DISTANCE_A` to its own image, or the cell is near-singular.
MIN_CELL_HEIGHT_A = 0.5
#: Coordinates, the structure's extent and cell-vector lengths above this (Å) are refused: no atomistic
#: calculation spans 10 µm, and such values overflow the binning of neighbour-list libraries.
MAX_COORDINATE_A = 1.0e4
_MAX_IMAGE_POINTS = 3_000_000


class StructureCheckError(ValueError):
    """The structure is unphysical or degenerate; ``hint`` says what to do instead."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message)


def _periodic_geometry(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The periodic lattice vectors ``P`` (d, 3) and their plane spacings (heights) ``h`` (d,)."""
    vectors = cell[pbc]
    if len(vectors) == 0:
        return vectors, np.zeros(0)
    gram = vectors @ vectors.T
    recip = np.linalg.solve(gram, vectors)  # rows: reciprocal vectors within the periodic subspace
    return vectors, 1.0 / np.linalg.norm(recip, axis=1)


def _check_cell(atoms: Atoms, min_height: float, max_coordinate: float) -> None:
    cell = np.asarray(atoms.cell.array, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not np.all(np.isfinite(cell)):
        raise StructureCheckError("The cell has NaN or infinite entries.", hint="Give a finite cell.")
    lengths = np.linalg.norm(cell, axis=1)
    if np.any(lengths > max_coordinate):
        raise StructureCheckError(
            f"The cell vectors are {np.array2string(lengths, precision=4)} Å long; the limit is {max_coordinate:g} Å.",
            hint="Check the cell's units (Å).",
        )
    if not pbc.any():
        return
    names = np.array(["a", "b", "c"])
    zero = pbc & (lengths < 1e-6)
    if zero.any():
        raise StructureCheckError(
            f"The structure is periodic but its cell has zero volume (cell vector {', '.join(names[zero])} "
            "has zero length).",
            hint="Give a 3D cell (lattice vectors in Å) or set the structure non-periodic (pbc=False).",
        )
    vectors = cell[pbc]
    normalised = np.sqrt(max(np.linalg.det(vectors @ vectors.T), 0.0)) / np.prod(lengths[pbc])
    if normalised < 1e-9:
        raise StructureCheckError(
            "The structure is periodic but its cell has zero volume (its periodic cell vectors are linearly "
            "dependent).",
            hint="Give a 3D cell (lattice vectors in Å) or set the structure non-periodic (pbc=False).",
        )
    short = pbc & (lengths < min_height)
    if short.any():
        shown = ", ".join(f"{n} = {v:.3g} Å" for n, v in zip(names[short], lengths[short]))
        raise StructureCheckError(
            f"Atoms overlap their periodic images: the cell is far too small ({shown}; each periodic cell vector "
            f"must be at least {min_height:g} Å, shorter than any bond).",
            hint="Check the lattice constant and its units (Å).",
        )
    _, heights = _periodic_geometry(cell, pbc)
    if np.any(heights < min_height):
        i = int(np.argmin(heights))
        raise StructureCheckError(
            f"The cell is nearly singular: the spacing between its {names[pbc][i]}-planes is {heights[i]:.3g} Å "
            f"(< {min_height:g} Å).",
            hint="Give a well-shaped cell (e.g. a Niggli- or Minkowski-reduced one).",
        )


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float | None:
    """Shortest interatomic distance (periodic images included), or None when no pair lies within ``cutoff``.

    A k-d tree over the positions wrapped into the cell plus the periodic images that can lie within ``cutoff``
    (``ceil(cutoff / plane spacing)`` per periodic direction): O(N log N), independent of how far apart the atoms
    are. Call :func:`check_structure` first (or rely on its cell check) for untrusted input.
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(atoms.positions, dtype=float)
    n = len(positions)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if n == 0 or (n < 2 and not pbc.any()):
        return None
    vectors, heights = _periodic_geometry(np.asarray(atoms.cell.array, dtype=float), pbc)
    if len(vectors):
        frac = np.linalg.solve(vectors @ vectors.T, vectors @ positions.T).T  # (N, d)
        positions = positions - np.floor(frac) @ vectors
        while True:  # bound the number of image points (a very thin cell with a large report cutoff)
            reach = np.ceil(cutoff / heights).astype(int)
            if n * np.prod(2 * reach + 1) <= _MAX_IMAGE_POINTS or cutoff <= MIN_DISTANCE_A:
                break
            cutoff = max(cutoff / 2, MIN_DISTANCE_A)
        grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
        shifts = np.stack([g.ravel() for g in grids], axis=1) @ vectors  # (M, 3)
        points = (positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    else:
        points = positions
    dist, _ = cKDTree(points).query(positions, k=2, distance_upper_bound=cutoff)
    d = dist[:, 1]  # column 0 is the atom itself (or an atom on top of it: distance 0 either way)
    d = d[np.isfinite(d)]
    return float(d.min()) if len(d) else None


def check_structure(
    atoms: Atoms,
    *,
    min_distance_A: float = MIN_DISTANCE_A,
    min_cell_height_A: float = MIN_CELL_HEIGHT_A,
    max_coordinate_A: float = MAX_COORDINATE_A,
    max_atoms: int | None = None,
    supported: Sequence[int] | None = None,
    check_overlap: bool = True,
) -> None:
    """Raise :class:`StructureCheckError` for a structure no calculation should be run on.

    Refused, in this order (cheap checks first; the neighbour search runs last, on a cell known to be sane):
    no atoms; more than ``max_atoms``; atomic numbers outside 1-118 (or not in ``supported``); NaN/inf
    coordinates or cell entries; a coordinate or the extent beyond ``max_coordinate_A`` (1e4 Å); on periodic
    structures a zero, linearly dependent, too short (< ``min_cell_height_A``, 0.5 Å) or near-singular (plane
    spacing < 0.5 Å) cell; two atoms (or an atom and an image) closer than ``min_distance_A`` (0.5 Å).
    """
    n = len(atoms) if atoms is not None else 0
    if n == 0:
        raise StructureCheckError("The structure has no atoms.", hint="Build or read a non-empty structure.")
    if max_atoms is not None and n > max_atoms:
        raise StructureCheckError(f"The structure has {n} atoms; the limit is {max_atoms}.")
    numbers = np.asarray(atoms.numbers)
    if np.any(numbers < 1) or np.any(numbers > 118):
        raise StructureCheckError("The structure contains an unknown element (atomic number outside 1-118).")
    if supported is not None:
        unknown = sorted(set(numbers.tolist()) - {int(z) for z in supported})
        if unknown:
            from ase.data import chemical_symbols

            raise StructureCheckError(
                f"Unsupported element(s) {', '.join(chemical_symbols[z] for z in unknown)}.",
                hint="Covered: " + " ".join(chemical_symbols[int(z)] for z in sorted(supported)) + ".",
            )
    positions = np.asarray(atoms.positions, dtype=float)
    if not np.all(np.isfinite(positions)):
        raise StructureCheckError("The structure has NaN or infinite coordinates.", hint="Rebuild or re-read it.")
    biggest = float(np.abs(positions).max())
    extent = float((positions.max(axis=0) - positions.min(axis=0)).max())
    if biggest > max_coordinate_A or extent > max_coordinate_A:
        raise StructureCheckError(
            f"The coordinates are out of range: the largest is {biggest:.4g} Å and the structure spans "
            f"{extent:.4g} Å (limit {max_coordinate_A:g} Å).",
            hint="Check the coordinates' units (Å) and that the file is not corrupted.",
        )
    _check_cell(atoms, min_cell_height_A, max_coordinate_A)
    if check_overlap:
        d = min_distance(atoms, cutoff=min_distance_A)
        if d is not None and d < min_distance_A:
            where = "or with a periodic image " if atoms.pbc.any() else ""
            raise StructureCheckError(
                f"Atoms overlap: the shortest interatomic distance {where}is {d:.3f} Å (< {min_distance_A} Å).",
                hint="Check the coordinates, the lattice constant and their units (Å).",
            )
