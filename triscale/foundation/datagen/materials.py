"""The material domain: the prototype catalogues, CHGNet-relaxed cells, strained/rattled/vacancy/MD frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from triscale.foundation.datagen.config import DatagenConfig, MaterialConfig
from triscale.foundation.datagen.labelling import (
    FrameSkipped,
    chgnet_calculator,
    code_versions,
    common_info,
    label_material,
    quiet,
)
from triscale.foundation.datagen.seeds import derive_seed

__all__ = [
    "MATERIAL_PROTOTYPES",
    "MaterialSpec",
    "build_bases",
    "combinatorial_material_specs",
    "material_specs",
    "run_material_shard",
]


# ---------------------------------------------------------------------------------- material catalogue
class MaterialSpec(BaseModel):
    """One material group: a prototype and a composition, with approximate lattice parameters (Å)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    kind: Literal[
        "fcc",
        "bcc",
        "hcp",
        "diamond",
        "rocksalt",
        "cesiumchloride",
        "zincblende",
        "wurtzite",
        "fluorite",
        "perovskite",
        "alloy_fcc",
        "alloy_bcc",
        "fcc111",
        "fcc100",
    ]
    symbols: str
    a: float
    c: float | None = None
    layers: int = 4

    @property
    def prototype(self) -> str:
        return self.id.split(":")[0]

    @property
    def elements(self) -> list[str]:
        from ase.symbols import string2symbols

        return sorted(set(string2symbols(self.symbols)))


def _spec(id: str, a: float, c: float | None = None, **kw: Any) -> MaterialSpec:
    kind, symbols = id.split(":")
    kind = {
        "perovskite": "perovskite",
        "fcc-alloy": "alloy_fcc",
        "bcc-alloy": "alloy_bcc",
        "B2": "cesiumchloride",
        "fcc111": "fcc111",
        "fcc100": "fcc100",
        "antifluorite": "fluorite",
    }.get(kind, kind)
    return MaterialSpec(id=id, kind=kind, symbols=symbols, a=a, c=c, **kw)


# Chosen so that every element occurs in at least two groups (so no element is held out entirely).
# Lattice parameters are approximate experimental values; each group is relaxed with CHGNet first.
MATERIAL_PROTOTYPES: tuple[MaterialSpec, ...] = (
    *(
        _spec(f"fcc:{s}", a)
        for s, a in [
            ("Cu", 3.61),
            ("Al", 4.05),
            ("Ni", 3.52),
            ("Ag", 4.09),
            ("Au", 4.08),
            ("Pt", 3.92),
            ("Pd", 3.89),
        ]
    ),
    *(
        _spec(f"bcc:{s}", a)
        for s, a in [("Fe", 2.87), ("W", 3.16), ("Mo", 3.15), ("Na", 4.23), ("Li", 3.51), ("Nb", 3.30)]
    ),
    *(
        _spec(f"hcp:{s}", a, c)
        for s, a, c in [("Mg", 3.21, 5.21), ("Ti", 2.95, 4.68), ("Zn", 2.66, 4.95), ("Zr", 3.23, 5.15)]
    ),
    *(_spec(f"diamond:{s}", a) for s, a in [("Si", 5.43), ("Ge", 5.66), ("C", 3.567)]),
    *(
        _spec(f"rocksalt:{s}", a)
        for s, a in [
            ("NaCl", 5.64),
            ("MgO", 4.21),
            ("LiF", 4.03),
            ("KCl", 6.29),
            ("CaO", 4.81),
            ("CaS", 5.69),
            ("BaO", 5.52),
        ]
    ),
    *(_spec(f"B2:{s}", a) for s, a in [("NiAl", 2.89), ("FeAl", 2.91), ("CuZn", 2.95)]),
    *(
        _spec(f"zincblende:{s}", a)
        for s, a in [("SiC", 4.36), ("GaAs", 5.65), ("AlAs", 5.66), ("ZnS", 5.41), ("SiGe", 5.54)]
    ),
    *(_spec(f"wurtzite:{s}", a, c) for s, a, c in [("ZnO", 3.25, 5.21), ("GaN", 3.19, 5.19), ("AlN", 3.11, 4.98)]),
    _spec("fluorite:CaF2", 5.46),
    _spec("fluorite:ZrO2", 5.07),
    _spec("antifluorite:OLi2", 4.61),
    *(
        _spec(f"perovskite:{s}", a)
        for s, a in [("SrTiO3", 3.905), ("BaTiO3", 4.00), ("CaTiO3", 3.84), ("KNbO3", 4.02), ("SrZrO3", 4.15)]
    ),
    *(
        _spec(f"fcc-alloy:{s}", a)
        for s, a in [("CuNi", 3.56), ("AgAu", 4.08), ("PtNi", 3.72), ("PdAg", 3.99), ("CuAu", 3.85)]
    ),
    _spec("bcc-alloy:MoW", 3.155),
    *(_spec(f"fcc111:{s}", a) for s, a in [("Cu", 3.61), ("Pt", 3.92), ("Al", 4.05)]),
    *(_spec(f"fcc100:{s}", a) for s, a in [("Ni", 3.52), ("Ag", 4.09)]),
)


# Element pools of the combinatorial catalogue (all well covered by CHGNet's MPtrj training data).
_METALS = (
    "Li Na K Rb Be Mg Ca Sr Ba Sc Y Ti Zr Hf V Nb Ta Cr Mo W Mn Re Fe Ru Os Co Rh Ir Ni Pd Pt Cu Ag Au Zn Cd Al Ga "
    "In Sn Pb"
).split()
_CATIONS = "Li Na K Rb Mg Ca Sr Ba Zn Cd Ga In Al Sc Y Ti Zr Hf Mn Fe Co Ni Cu Ag Pb Sn".split()
_ANIONS = "O S Se N P As F Cl Br I".split()
_PEROVSKITE_A = "Ca Sr Ba K Na La Pb".split()
_PEROVSKITE_B = "Ti Zr Hf Nb Ta Sn Fe Mn V Al Ga Cr".split()
_FLUORITE_A = "Ca Sr Ba Zr Hf Ce Cd Pb".split()


def combinatorial_material_specs() -> list[MaterialSpec]:
    """A broad catalogue of simple prototypes over many elements, with lattice parameters from covalent radii.

    The hand-picked MATERIAL_PROTOTYPES give ~50 groups, too few for a prototype-level held-out split to test
    anything but extrapolation to unseen chemistry. This pool (elemental fcc/bcc/hcp, binary rock-salt, CsCl and
    zinc-blende, 50/50 fcc/bcc alloys, ABO3 perovskites, AX2 fluorites) is sampled by ``n_combinatorial``. The
    radius-based lattice parameters are only a start: every group is cell-relaxed with CHGNet before sampling.
    """
    from itertools import combinations

    from ase.data import atomic_numbers, covalent_radii

    r = {s: float(covalent_radii[atomic_numbers[s]]) for s in {*_METALS, *_CATIONS, *_ANIONS, "La", "Ce", "O"}}
    specs: list[MaterialSpec] = []
    for m in _METALS:
        d = 2.0 * r[m] * 0.97  # nearest-neighbour distance of the metal
        specs += [
            _spec(f"fcc:{m}", round(d * 2**0.5, 3)),
            _spec(f"bcc:{m}", round(2 * d / 3**0.5, 3)),
            _spec(f"hcp:{m}", round(d, 3), round(d * 1.633, 3)),
        ]
    for c in _CATIONS:
        for x in _ANIONS:
            d = r[c] + r[x]
            specs += [
                _spec(f"rocksalt:{c}{x}", round(2 * d, 3)),
                _spec(f"B2:{c}{x}", round(2 * d / 3**0.5, 3)),
                _spec(f"zincblende:{c}{x}", round(4 * d / 3**0.5, 3)),
            ]
    for a_, b_ in combinations(_METALS, 2):
        d = (r[a_] + r[b_]) * 0.97
        specs += [
            _spec(f"fcc-alloy:{a_}{b_}", round(d * 2**0.5, 3)),
            _spec(f"bcc-alloy:{a_}{b_}", round(2 * d / 3**0.5, 3)),
            _spec(f"B2:{a_}{b_}", round(2 * d / 3**0.5, 3)),
        ]
    for a_ in _PEROVSKITE_A:
        for b_ in _PEROVSKITE_B:
            specs.append(_spec(f"perovskite:{a_}{b_}O3", round(2 * (r[b_] + r["O"]) * 0.87, 3)))
    for a_ in _FLUORITE_A:
        for x in ("O", "F", "Cl"):
            specs.append(_spec(f"fluorite:{a_}{x}2", round(4 * (r[a_] + r[x]) / 3**0.5, 3)))
    return specs


def material_specs(cfg: MaterialConfig, seed: int = 0) -> list[MaterialSpec]:
    if not cfg.enabled:
        return []
    by_id = {s.id: s for s in MATERIAL_PROTOTYPES}
    if cfg.groups is None:
        chosen = list(MATERIAL_PROTOTYPES)
    else:
        unknown = [g for g in cfg.groups if g not in by_id]
        if unknown:
            raise ValueError(f"unknown material groups {unknown}; known: {sorted(by_id)}")
        chosen = [by_id[g] for g in cfg.groups]
    if cfg.n_combinatorial:
        # Never a hand-picked group (even one not chosen here), so datasets from both catalogues do not overlap.
        taken = {s.id for s in MATERIAL_PROTOTYPES}
        by_kind: dict[str, list[MaterialSpec]] = {}
        for spec in combinatorial_material_specs():
            if spec.id not in taken:
                by_kind.setdefault(spec.kind, []).append(spec)
        rng = np.random.default_rng(derive_seed(seed, "combinatorial"))
        queues = [[specs[i] for i in rng.permutation(len(specs))] for _, specs in sorted(by_kind.items())]
        picked: list[MaterialSpec] = []
        while len(picked) < cfg.n_combinatorial and any(queues):  # round-robin over kinds: balanced prototypes
            for queue in queues:
                if queue and len(picked) < cfg.n_combinatorial:
                    picked.append(queue.pop())
        chosen += picked
    return chosen


# ------------------------------------------------------------------------------------------- materials
def build_bases(spec: MaterialSpec, a: float | None = None, c: float | None = None, vacuum: float = 7.5) -> list:
    """Small cells of a prototype (primitive first, then a conventional cell where it differs)."""
    from ase import Atoms
    from ase.build import bulk, fcc100, fcc111

    a = spec.a if a is None else a
    c = spec.c if c is None else c
    kind = spec.kind
    if kind in ("fcc", "bcc", "diamond", "rocksalt", "cesiumchloride", "zincblende", "fluorite"):
        bases = [bulk(spec.symbols, kind, a=a)]
        if kind != "cesiumchloride":
            bases.append(bulk(spec.symbols, kind, a=a, cubic=True))
        return bases
    if kind == "hcp":
        return [bulk(spec.symbols, "hcp", a=a, c=c), bulk(spec.symbols, "hcp", a=a, c=c, orthorhombic=True)]
    if kind == "wurtzite":
        return [bulk(spec.symbols, "wurtzite", a=a, c=c)]
    if kind == "perovskite":
        from ase.symbols import string2symbols

        sym = string2symbols(spec.symbols)  # A B O O O
        scaled = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        return [Atoms(sym, scaled_positions=scaled, cell=np.eye(3) * a, pbc=True)]
    if kind in ("alloy_fcc", "alloy_bcc"):
        from ase.symbols import string2symbols

        first = string2symbols(spec.symbols)[0]
        return [bulk(first, kind.split("_")[1], a=a, cubic=True)]
    if kind in ("fcc111", "fcc100"):
        build = fcc111 if kind == "fcc111" else fcc100
        slab = build(spec.symbols, size=(1, 1, spec.layers), a=a, vacuum=None, periodic=True)
        slab.center(vacuum=vacuum, axis=2)
        slab.pbc = True
        return [slab]
    raise ValueError(f"unknown prototype kind {kind!r}")  # pragma: no cover


def _supercells(bases: list, min_atoms: int, max_atoms: int, slab: bool) -> list[tuple[int, int, int, int]]:
    """(base index, i, j, k) repeats with min_atoms <= N <= max_atoms (k = 1 for slabs)."""
    out = []
    for b, base in enumerate(bases):
        for i in range(1, 5):
            for j in range(1, 5):
                for k in range(1, 2 if slab else 5):
                    n = len(base) * i * j * k
                    reps = (i, j) if slab else (i, j, k)
                    if min_atoms <= n <= max_atoms and max(reps) <= 2 * min(reps) + 1:
                        out.append((b, i, j, k))
    return out


def _pick_cell(bases, rng, min_atoms: int, max_atoms: int, slab: bool, exponent: float):
    cands = _supercells(bases, min_atoms, max_atoms, slab)
    if not cands:
        cands = _supercells(bases, 1, max(max_atoms, min(len(b) for b in bases)), slab)
    sizes = sorted({len(bases[b]) * i * j * k for b, i, j, k in cands})
    weights = np.array([n**-exponent for n in sizes])
    n = sizes[rng.choice(len(sizes), p=weights / weights.sum())]
    same = [c for c in cands if len(bases[c[0]]) * c[1] * c[2] * c[3] == n]
    b, i, j, k = same[rng.integers(len(same))]
    return bases[b].repeat((i, j, k))


def _strain(atoms, rng, scale: float, slab: bool):
    """Isotropic strain in [-scale, scale] plus a random symmetric shear-ish part up to scale/2."""
    eps = np.eye(3) * rng.uniform(-scale, scale)
    sym = rng.uniform(-scale / 2, scale / 2, (3, 3))
    eps += (sym + sym.T) / 2
    if slab:  # only in-plane components
        eps[2, :] = eps[:, 2] = 0.0
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def _decorate(atoms, spec: MaterialSpec, rng):
    """Random 50/50 occupation of an alloy (exact composition; odd N: the extra atom is random)."""
    if spec.kind not in ("alloy_fcc", "alloy_bcc"):
        return atoms
    from ase.symbols import string2symbols

    first, second = string2symbols(spec.symbols)[:2]
    n = len(atoms)
    symbols = [first] * (n // 2) + [second] * (n // 2) + ([first, second][rng.integers(2)] if n % 2 else [])
    atoms.set_chemical_symbols([symbols[i] for i in rng.permutation(n)])
    return atoms


def _relax_material(spec: MaterialSpec, cfg: MaterialConfig, calc, rng):
    """Relaxed small cells (cell and positions; slabs: positions at the CHGNet bulk lattice constant)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    def relax(atoms, cell: bool):
        atoms.calc = calc
        target = FrechetCellFilter(atoms, hydrostatic_strain=spec.kind.startswith("alloy")) if cell else atoms
        with open(os.devnull, "w") as devnull:
            FIRE(target, logfile=devnull).run(fmax=cfg.relax_fmax, steps=cfg.relax_steps)
        atoms.calc = None
        return atoms

    if spec.kind in ("fcc111", "fcc100"):
        bulk_spec = spec.model_copy(update={"kind": "fcc", "id": f"fcc:{spec.symbols}"})
        prim = relax(build_bases(bulk_spec)[0], cell=True)
        a = spec.a * (prim.get_volume() / build_bases(bulk_spec)[0].get_volume()) ** (1 / 3)
        slab = relax(build_bases(spec, a=a, vacuum=cfg.vacuum)[0], cell=False)
        return [slab], slab.copy()
    bases = build_bases(spec)
    if spec.kind.startswith("alloy"):
        probe = _decorate(bases[0].repeat(2), spec, rng)
        v0 = probe.get_volume()
        probe = relax(probe, cell=True)
        scale = (probe.get_volume() / v0) ** (1 / 3)
        for b in bases:
            b.set_cell(b.cell.array * scale, scale_atoms=True)
        return bases, probe
    prim = bases[0]
    cell0 = prim.cell.array.copy()
    prim = relax(prim, cell=True)
    deform = np.linalg.solve(cell0, prim.cell.array)  # rows: new = old @ deform
    for b in bases[1:]:
        b.set_cell(b.cell.array @ deform, scale_atoms=True)
    return [prim, *bases[1:]], prim.copy()


def _material_frames(spec: MaterialSpec, cfg: MaterialConfig, seed: int, calc) -> Iterator[tuple[str, Any]]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    rng = np.random.default_rng(derive_seed(seed, "material", spec.id))
    slab = spec.kind in ("fcc111", "fcc100")
    bases, relaxed = _relax_material(spec, cfg, calc, rng)
    yield "relaxed", relaxed
    exp = cfg.size_exponent
    for _ in range(cfg.n_strain):
        atoms = _decorate(_pick_cell(bases, rng, 1, cfg.strain_max_atoms, slab, exp), spec, rng)
        atoms = _strain(atoms, rng, cfg.strain_max, slab)
        atoms.positions += rng.normal(0.0, rng.uniform(0.0, 0.02), atoms.positions.shape)
        yield "strain", atoms
    for _ in range(cfg.n_rattle):
        atoms = _decorate(_pick_cell(bases, rng, 2, cfg.max_atoms, slab, exp), spec, rng)
        atoms = _strain(atoms, rng, cfg.strain_max / 2, slab)
        atoms.positions += rng.normal(0.0, rng.uniform(*cfg.rattle_sigma), atoms.positions.shape)
        yield "rattle", atoms
    for _ in range(cfg.n_vacancy):
        atoms = _decorate(_pick_cell(bases, rng, 8, cfg.max_atoms, slab, exp), spec, rng)
        del atoms[int(rng.integers(len(atoms)))]
        atoms = _strain(atoms, rng, cfg.strain_max / 2, slab)
        atoms.positions += rng.normal(
            0.0, rng.uniform(cfg.rattle_sigma[0], cfg.rattle_sigma[1] / 2), atoms.positions.shape
        )
        yield "vacancy", atoms
    for _ in range(cfg.md_runs):
        atoms = _decorate(_pick_cell(bases, rng, 8, cfg.md_max_atoms, slab, exp), spec, rng)
        atoms = _strain(atoms, rng, cfg.strain_max / 2, slab)
        atoms.positions += rng.normal(0.0, 0.02, atoms.positions.shape)
        atoms.calc = calc
        temperature = rng.uniform(*cfg.md_temperature_K)
        timestep = (1.0 if atoms.get_masses().min() < 10 else 2.0) * units.fs
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        md = Langevin(atoms, timestep, temperature_K=temperature, friction=0.01 / units.fs, rng=rng, fixcm=False)
        every = max(1, cfg.md_steps // cfg.md_frames)
        try:
            for _ in range(cfg.md_frames):
                md.run(every)
                frame = atoms.copy()
                frame.calc = None
                yield "md", frame
        except Exception as exc:
            yield "skip", f"md failed: {type(exc).__name__}"


def run_material_shard(shard: dict, config: DatagenConfig) -> tuple[list, list[dict]]:
    cfg = config.material
    calc = chgnet_calculator(cfg)
    versions = code_versions("material")
    method = f"CHGNet-{cfg.model}"
    frames, skipped = [], []
    for entry in shard["entries"]:
        spec = MaterialSpec(**entry["spec"])
        with quiet():
            for config_type, atoms in _material_frames(spec, cfg, config.seed, calc):
                if config_type == "skip":
                    skipped.append({"group": entry["group"], "config_type": "-", "reason": atoms})
                    continue
                try:
                    frame = label_material(atoms, calc, cfg.max_force)
                except FrameSkipped as why:
                    skipped.append({"group": entry["group"], "config_type": config_type, "reason": str(why)})
                    continue
                common_info(frame, entry, "material", config.seed, config_type, method, versions)
                frame.info["prototype"] = spec.prototype
                frame.info["distilled_from"] = f"CHGNet {cfg.model} (teacher model, not DFT)"
                frames.append(frame)
    return frames, skipped
