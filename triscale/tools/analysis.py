"""Geometry analysis of a stored structure: ``analyze_structure``.

Distances, angles and dihedrals between given atoms (minimum image in periodic cells), the bonds found from
covalent radii (``ase.neighborlist.natural_cutoffs`` scaled by ``bond_scale``, ASE's vectorised neighbour list,
periodic images included), coordination numbers, bond-length statistics per element pair, and for 3D crystals
the cell volume and density. Nothing is computed with a calculator: it measures the geometry a tool produced
(after a relaxation, an MD run, an equation of state ...).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from ase import Atoms
from pydantic import AliasChoices, BaseModel, Field, field_validator

from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.errors import ToolInputError
from triscale.tools.validation import min_distance, summarize, validate_atoms

__all__ = ["AnalyzeStructureInput", "AnalyzeStructureResult", "measure_geometry"]

MAX_MEASUREMENTS = 500  # per kind (distances, angles, dihedrals)
MAX_ATOMS = 20_000
MAX_LISTED_BONDS = 100  # bonds listed in the result; all are counted and summarised per element pair
MAX_LISTED_CN = 200  # per-atom coordination numbers listed up to this size
AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


class AnalyzeStructureInput(ToolInput):
    structure_id: str = Field(
        validation_alias=AliasChoices("structure_id", "structure"),
        description="Structure id such as 'st3' (a molecule name or SMILES also works).",
    )
    distances: list[list[int | str]] = Field(
        default_factory=list,
        description="Atom index pairs [i, j] (0-based) whose distance to measure, or element pairs such as "
        "'O-H' (every bonded O-H pair).",
    )
    angles: list[list[int | str]] = Field(
        default_factory=list,
        description="Atom index triples [i, j, k]: the angle i-j-k at atom j; or 'H-O-H' (every bonded H-O-H).",
    )
    dihedrals: list[list[int | str]] = Field(
        default_factory=list,
        description="Atom index quadruples [i, j, k, l]: the dihedral about the j-k bond; or 'H-C-C-H'.",
    )
    bond_scale: float = Field(
        1.15,
        ge=0.8,
        le=1.6,
        description="Atoms are bonded when closer than bond_scale x the sum of their covalent radii.",
    )
    mic: bool = Field(True, description="Periodic cells: measure between nearest periodic images.")

    @field_validator("distances", "angles", "dihedrals", mode="before")
    @classmethod
    def _one_group(cls, v: Any, info: Any) -> Any:
        """One flat group (``distances=[0, 1]``, as small models write it) is read as a list of one."""
        size = {"distances": 2, "angles": 3, "dihedrals": 4}[info.field_name]
        if isinstance(v, str):  # 'H-O-H'
            v = [v]
        if isinstance(v, list | tuple) and len(v) == size and all(isinstance(x, int | str) for x in v):
            if not all(isinstance(x, str) and "-" in x for x in v):
                return [list(v)]
        if isinstance(v, list | tuple):
            return [x.split("-") if isinstance(x, str) else x for x in v]
        return v


class Measurement(BaseModel):
    atoms: list[int] = Field(description="0-based atom indices.")
    symbols: str = Field(description="Their elements, e.g. 'O-H'.")


class DistanceItem(Measurement):
    distance_A: float


class AngleItem(Measurement):
    angle_deg: float


class DihedralItem(Measurement):
    dihedral_deg: float = Field(description="In [0, 360), as ase.Atoms.get_dihedral.")


class BondLengthStats(BaseModel):
    pair: str = Field(description="Element pair, alphabetical, e.g. 'C-H'.")
    n_bonds: int
    bond_length_mean_A: float
    bond_length_min_A: float
    bond_length_max_A: float


class AnalyzeStructureResult(ToolResult):
    structure_id: str
    formula: str
    n_atoms: int
    periodic: bool
    minimum_image: bool = Field(description="Whether periodic images were used for the measurements.")
    distances: list[DistanceItem] = Field(default_factory=list)
    angles: list[AngleItem] = Field(default_factory=list)
    dihedrals: list[DihedralItem] = Field(default_factory=list)
    n_bonds: int = Field(description="Bonds by covalent radii (periodic images included).")
    bonds: list[DistanceItem] = Field(
        default_factory=list, description=f"The bonds, at most {MAX_LISTED_BONDS} listed (shortest first)."
    )
    bond_lengths: list[BondLengthStats] = Field(default_factory=list, description="Per element pair.")
    coordination_numbers: list[int] | None = Field(
        None, description=f"Bonded neighbours of each atom (listed up to {MAX_LISTED_CN} atoms)."
    )
    mean_coordination_by_element: dict[str, float] = Field(default_factory=dict)
    min_distance_A: float | None = Field(None, description="Shortest interatomic distance (minimum image).")
    mass_amu: float
    volume_A3: float | None = Field(None, description="Cell volume (3D periodic structures only).")
    density_g_per_cm3: float | None = Field(None, description="Mass / cell volume (3D periodic structures only).")


def _check_indices(kind: str, groups: list[list[int]], size: int, n: int) -> None:
    example = {2: "[0, 1]", 3: "[1, 0, 2]", 4: "[0, 1, 2, 3]"}[size]
    if len(groups) > MAX_MEASUREMENTS:
        raise ToolInputError(f"At most {MAX_MEASUREMENTS} {kind} per call, got {len(groups)}.")
    for g in groups:
        if len(g) != size:
            raise ToolInputError(
                f"Each entry of {kind} takes {size} atom indices, got {list(g)}.", hint=f"e.g. {kind}=[{example}]."
            )
        bad = [i for i in g if not 0 <= i < n]
        if bad:
            raise ToolInputError(
                f"Atom index {bad[0]} in {kind} entry {list(g)} is out of range: the structure has {n} atoms.",
                hint=f"Indices are 0-based, from 0 to {n - 1}.",
            )
        if len(set(g)) != size:
            raise ToolInputError(f"The {kind} entry {list(g)} repeats an atom; give {size} different atoms.")


def _vectors(atoms: Atoms, pairs: np.ndarray, mic: bool) -> np.ndarray:
    """Vectors from atom ``pairs[:, 0]`` to ``pairs[:, 1]``, as the nearest periodic image if ``mic``."""
    from ase.geometry import find_mic

    v = atoms.positions[pairs[:, 1]] - atoms.positions[pairs[:, 0]]
    if mic and len(v):
        v, _ = find_mic(v, atoms.cell, atoms.pbc)
    return v


def _angle_deg(u: np.ndarray, w: np.ndarray) -> np.ndarray:
    cos = np.einsum("ij,ij->i", u, w) / (np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _dihedral_deg(b0: np.ndarray, b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Dihedral angles in [0, 360) of the bond vectors b0 = p1-p0, b1 = p2-p1, b2 = p3-p2 (IUPAC sign)."""
    n1 = np.cross(b0, b1)
    n2 = np.cross(b1, b2)
    m = np.cross(n1, b1 / np.linalg.norm(b1, axis=1, keepdims=True))
    x = np.einsum("ij,ij->i", n1, n2)
    y = np.einsum("ij,ij->i", m, n2)
    return np.degrees(np.arctan2(-y, x)) % 360.0


def _symbols(atoms: Atoms, idx: list[int]) -> str:
    return "-".join(atoms[i].symbol for i in idx)


def _bonds(atoms: Atoms, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each bond once (i < j, or i == j with a periodic image): indices i, j and length (Å)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    radii = natural_cutoffs(atoms, mult=scale)
    i, j, d, shift = neighbor_list("ijdS", atoms, radii)
    # the list holds both directions; keep i < j, and for an atom bonded to its own image one of the two shifts
    first_nonzero = np.array([s[np.flatnonzero(s)[0]] if s.any() else 0 for s in shift], dtype=int)
    keep = (i < j) | ((i == j) & (first_nonzero > 0))
    return i[keep], j[keep], d[keep]


def _by_elements(
    atoms: Atoms, kind: str, groups: list[list[int | str]], size: int, bi: np.ndarray, bj: np.ndarray
) -> list[list[int]]:
    """Index groups, with each group of element symbols (['H', 'O', 'H']) replaced by every chain of bonded atoms
    with those elements (each chain once, not also reversed): the question says "the H-O-H angle", not which atoms."""
    from ase.data import atomic_numbers

    out: list[list[int]] = []
    symbols = atoms.get_chemical_symbols()
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in zip(bi.tolist(), bj.tolist(), strict=True):
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    for g in groups:
        if not any(isinstance(x, str) for x in g):
            out.append(list(g))
            continue
        elems = [str(x).strip() for x in g]
        if len(elems) != size or not all(isinstance(x, str) and x.strip() in atomic_numbers for x in g):
            raise ToolInputError(
                f"Each entry of {kind} takes {size} atom indices or {size} element symbols, got {list(g)}.",
                hint=f"e.g. {kind}=['{'-'.join(['O', 'H', 'O', 'H'][:size])}'] or atom indices.",
            )
        chains = [[i] for i in range(len(atoms)) if symbols[i] == elems[0]]
        for e in elems[1:]:
            chains = [c + [k] for c in chains for k in sorted(neighbours[c[-1]]) if symbols[k] == e and k not in c]
        seen: set[tuple[int, ...]] = set()
        found = [c for c in chains if tuple(c[::-1]) not in seen and not seen.add(tuple(c))]
        if not found:
            raise ToolInputError(
                f"No bonded {'-'.join(elems)} chain in this structure ({atoms.get_chemical_formula()}).",
                hint="See its bonds (analyze_structure without arguments) or give atom indices.",
            )
        out.extend(found)
    return out


def measure_geometry(
    atoms: Atoms,
    distances: list[list[int | str]] | None = None,
    angles: list[list[int | str]] | None = None,
    dihedrals: list[list[int | str]] | None = None,
    *,
    bond_scale: float = 1.15,
    mic: bool = True,
) -> dict[str, Any]:
    """The fields of :class:`AnalyzeStructureResult` except the ids (a plain function for Python callers)."""
    n = len(atoms)
    bi, bj, bd = _bonds(atoms, bond_scale)
    distances, angles, dihedrals = (
        _by_elements(atoms, kind, groups or [], size, bi, bj)
        for kind, groups, size in (("distances", distances, 2), ("angles", angles, 3), ("dihedrals", dihedrals, 4))
    )
    _check_indices("distances", distances, 2, n)
    _check_indices("angles", angles, 3, n)
    _check_indices("dihedrals", dihedrals, 4, n)
    use_mic = bool(mic and atoms.pbc.any())
    out: dict[str, Any] = {"minimum_image": use_mic}

    if distances:
        d = np.linalg.norm(_vectors(atoms, np.array(distances), use_mic), axis=1)
        out["distances"] = [
            DistanceItem(atoms=list(g), symbols=_symbols(atoms, g), distance_A=round(float(x), 6))
            for g, x in zip(distances, d, strict=True)
        ]
    if angles:
        g = np.array(angles)
        ang = _angle_deg(_vectors(atoms, g[:, [1, 0]], use_mic), _vectors(atoms, g[:, [1, 2]], use_mic))
        out["angles"] = [
            AngleItem(atoms=list(t), symbols=_symbols(atoms, t), angle_deg=round(float(x), 5))
            for t, x in zip(angles, ang, strict=True)
        ]
    if dihedrals:
        g = np.array(dihedrals)
        b0, b1, b2 = (_vectors(atoms, g[:, [k, k + 1]], use_mic) for k in range(3))
        for name, u, w in (("i-j-k", -b0, b1), ("j-k-l", -b1, b2)):
            straight = np.flatnonzero(
                np.linalg.norm(np.cross(u, w), axis=1)
                < 1e-8 * np.maximum(np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1), 1e-300)
            )
            if len(straight):
                q = dihedrals[int(straight[0])]
                raise ToolInputError(
                    f"The dihedral {q} is undefined: atoms {name} are collinear.",
                    hint="Choose four atoms whose consecutive triples are not on one line.",
                )
        dih = _dihedral_deg(b0, b1, b2)
        out["dihedrals"] = [
            DihedralItem(atoms=list(q), symbols=_symbols(atoms, q), dihedral_deg=round(float(x), 5))
            for q, x in zip(dihedrals, dih, strict=True)
        ]

    symbols = atoms.get_chemical_symbols()
    order = np.argsort(bd, kind="stable")
    out["n_bonds"] = len(bd)
    out["bonds"] = [
        DistanceItem(
            atoms=[int(bi[k]), int(bj[k])],
            symbols=f"{symbols[bi[k]]}-{symbols[bj[k]]}",
            distance_A=round(float(bd[k]), 6),
        )
        for k in order[:MAX_LISTED_BONDS]
    ]
    by_pair: dict[str, list[float]] = defaultdict(list)
    for a, b, x in zip(bi, bj, bd, strict=True):
        by_pair["-".join(sorted((symbols[a], symbols[b])))].append(float(x))
    out["bond_lengths"] = [
        BondLengthStats(
            pair=p,
            n_bonds=len(v),
            bond_length_mean_A=round(float(np.mean(v)), 6),
            bond_length_min_A=round(float(np.min(v)), 6),
            bond_length_max_A=round(float(np.max(v)), 6),
        )
        for p, v in sorted(by_pair.items())
    ]
    cn = np.bincount(bi, minlength=n) + np.bincount(bj, minlength=n)
    out["coordination_numbers"] = [int(c) for c in cn] if n <= MAX_LISTED_CN else None
    out["mean_coordination_by_element"] = {
        s: round(float(cn[[k for k in range(n) if symbols[k] == s]].mean()), 4) for s in sorted(set(symbols))
    }

    d_min = min_distance(atoms)  # minimum image in periodic cells
    out["min_distance_A"] = None if d_min is None else round(float(d_min), 6)
    mass = float(atoms.get_masses().sum())
    out["mass_amu"] = round(mass, 6)
    if atoms.pbc.all() and atoms.cell.rank == 3:
        vol = float(abs(atoms.cell.volume))
        out["volume_A3"] = round(vol, 6)
        out["density_g_per_cm3"] = round(mass / vol * AMU_PER_A3_TO_G_PER_CM3, 6)
    return out


@register(
    "analyze_structure",
    input=AnalyzeStructureInput,
    result=AnalyzeStructureResult,
    cost="instant",
    category="structure",
    compact=True,
    keywords=(
        r"\bbond (length|angle|distance)s?\b|\bbond ?lengths?\b|\bdistances?\b|\binteratomic\b|\bangles?\b"
        r"|\bdihedral|\btorsion|\bcoordination|\bneighbou?rs?\b|\bdensity\b(?! functional)|\bcell volume\b",
    ),
    answer_fields=("distances", "angles", "dihedrals", "volume_A3", "density_g_per_cm3"),
)
def analyze_structure(ctx: ToolContext, a: AnalyzeStructureInput) -> AnalyzeStructureResult:
    """Measure a stored structure: distances, angles and dihedrals between given atoms (0-based indices;
    nearest periodic images in crystals), bonds from covalent radii with coordination numbers and bond lengths
    per element pair, and for crystals the cell volume and density. No calculation: use it on the structure a
    relaxation or MD run produced to report its bond lengths."""
    sid, atoms = ctx.structure(a.structure_id)
    validate_atoms(atoms, check_overlap=False)
    if len(atoms) > MAX_ATOMS:
        raise ToolInputError(f"analyze_structure handles up to {MAX_ATOMS} atoms; {sid} has {len(atoms)}.")
    fields = measure_geometry(atoms, a.distances, a.angles, a.dihedrals, bond_scale=a.bond_scale, mic=a.mic)
    s = summarize(atoms)
    if atoms.pbc.any() and not atoms.pbc.all():
        ctx.notes.append("Partly periodic (a slab or wire): no volume or density is reported.")
    if fields["coordination_numbers"] is None:
        ctx.notes.append(f"Per-atom coordination numbers are listed up to {MAX_LISTED_CN} atoms; see the means.")
    if fields["n_bonds"] > MAX_LISTED_BONDS:
        ctx.notes.append(f"{fields['n_bonds']} bonds; the {MAX_LISTED_BONDS} shortest are listed.")
    return AnalyzeStructureResult(
        structure_id=sid, formula=s["formula"], n_atoms=len(atoms), periodic=s["periodic"], **fields
    )
