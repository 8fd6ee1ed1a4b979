"""Reference data for pretraining: ``triscale datagen``.

Two domains, each labelled by a real simulator:

* ``molecule`` - molecules from RDKit's shipped NCI set (``Data/NCI/first_5K.smi``) and
  ``ase.collections.g2``; 3D conformers by RDKit ETKDG; off-equilibrium frames (ETKDG geometries, rattles,
  a few steps along a GFN2-xTB relaxation, short high-temperature GFN2-xTB Langevin MD); labelled with
  GFN2-xTB through tblite's ASE calculator: energy (eV), forces (eV/Å), dipole (e·Å: tblite multiplies its
  atomic-unit dipole by Bohr, so despite its docstring the value is e·Å, not Debye) and Mulliken charges (e).
* ``material`` - periodic prototypes built with ``ase.build`` (elemental, binary, perovskite, random alloys,
  fcc(111)/(100) slabs with vacuum, vacancies), relaxed with CHGNet, then strained, rattled, with a vacancy,
  or sampled by short CHGNet Langevin MD; labelled by CHGNet (model 0.3.0 weights): energy (eV), forces
  (eV/Å) and stress (eV/Å³, ASE sign convention, Voigt xx yy zz yz xz xy; CHGNet's calculator converts its
  GPa). This domain is *distilled from CHGNet*; every frame says so in ``method`` and ``distilled_from``.

Every stored frame was labelled by one fresh single point at exactly the positions written to disk
(positions are rounded to the 1e-8 Å that extxyz stores *before* labelling), so the forces are -dE/dR of
the stored geometry.

Layout of the output directory::

    DIR/plan.json                      the recipe (and its hash) the shards were made with
    DIR/molecule/shard-00012.extxyz    frames: per-atom REF_forces, REF_charges; info REF_energy, REF_dipole
    DIR/molecule/shard-00012.json      what the shard holds, what was skipped and why, seconds spent
    DIR/material/shard-00003.extxyz    frames: per-atom REF_forces; info REF_energy, REF_stress
    DIR/manifest.json                  counts per domain/split, elements, versions, config, seeds

Work is cut into deterministic shards (a shard holds several molecules, or one material group). A shard
whose ``.extxyz`` and ``.json`` are both on disk (each written to a temporary file, then renamed) is
skipped, so a killed run continues where it stopped and a finished run does nothing the second time.
Results depend only on the recipe and its seed, not on the number of workers or the order shards finish in.

The split (train/val/test) is by ``group`` - the canonical SMILES of a molecule (stereo dropped) or the
``prototype:composition`` id of a material - from a seeded hash, so whole molecules/compositions are held
out. A val/test group containing an element that no training group of its domain has is moved to train,
so that no element is seen only at test time.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import io
import json
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from triscale.common import VERSION, atomic_write_text

__all__ = [
    "MATERIAL_PROTOTYPES",
    "MOLECULE_ELEMENTS",
    "DatagenConfig",
    "MaterialConfig",
    "MaterialSpec",
    "MoleculeConfig",
    "generate",
    "label_molecule",
    "label_material",
    "FrameSkipped",
    "load_config",
    "make_plan",
    "split_of",
]

MOLECULE_ELEMENTS = ("H", "C", "N", "O", "F", "P", "S", "Cl", "Br")
UNITS = "eV,Angstrom"
SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1
# extxyz stores positions and per-atom arrays with 8 decimals ("%16.8f"); labels use rounded positions.
_DECIMALS = 8


# --------------------------------------------------------------------------------------- configuration
class MoleculeConfig(BaseModel):
    """Recipe of the molecule domain (GFN2-xTB labels)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    nci_molecules: int = Field(1650, ge=0, description="sampled (seeded) from the filtered NCI set")
    include_g2: bool = True
    g2_open_shell: bool = Field(False, description="include g2 radicals (uhf from their magnetic moments)")
    max_heavy_atoms: int = Field(30, ge=1)
    elements: list[str] = Field(default_factory=lambda: list(MOLECULE_ELEMENTS))
    n_conformers: int = Field(2, ge=1, description="ETKDG conformers per molecule, each stored as a frame")
    n_rattles: int = Field(2, ge=0, description="Gaussian rattles of the conformers")
    rattle_sigma: tuple[float, float] = Field((0.02, 0.07), description="Å, sigma drawn uniformly per frame")
    relax_fraction: float = Field(0.4, ge=0, le=1, description="share of NCI molecules relaxed (g2: all)")
    relax_steps: int = Field(20, ge=1, description="BFGS steps of the GFN2-xTB relaxation at most")
    relax_frames: int = Field(2, ge=1, description="frames along the relaxation, the last included")
    md_fraction: float = Field(0.4, ge=0, le=1, description="share of molecules with a short MD run")
    md_temperature_K: tuple[float, float] = (500.0, 1200.0)
    md_steps: int = Field(20, ge=1)
    md_timestep_fs: float = Field(1.0, gt=0)
    md_frames: int = Field(2, ge=1)
    max_force: float = Field(20.0, gt=0, description="eV/Å; frames with a larger force component are skipped")
    molecules_per_shard: int = Field(20, ge=1)
    accuracy: float = Field(1.0, gt=0, description="tblite accuracy")


class MaterialConfig(BaseModel):
    """Recipe of the material domain (CHGNet labels)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    groups: list[str] | None = Field(None, description="ids from MATERIAL_PROTOTYPES; None: all of them")
    n_combinatorial: int = Field(
        0, ge=0, description="extra groups sampled (seeded) from combinatorial_material_specs(): chemical breadth"
    )
    model: Literal["0.3.0"] = "0.3.0"
    max_atoms: int = Field(64, ge=2)
    size_exponent: float = Field(0.5, description="supercell sizes N are drawn with weight N**-size_exponent")
    relax_steps: int = Field(100, ge=0)
    relax_fmax: float = Field(0.01, gt=0)
    n_strain: int = Field(10, ge=0, description="strained small cells (tiny rattle): E(V) and stress")
    strain_max_atoms: int = Field(16, ge=1)
    strain_max: float = Field(0.05, ge=0, description="largest isotropic strain")
    n_rattle: int = Field(36, ge=0, description="strained and rattled supercells")
    rattle_sigma: tuple[float, float] = Field((0.02, 0.12), description="Å")
    n_vacancy: int = Field(6, ge=0, description="supercells with one atom removed, rattled")
    md_runs: int = Field(1, ge=0)
    md_steps: int = Field(30, ge=1)
    md_frames: int = Field(3, ge=1, description="snapshots per MD run, evenly spaced")
    md_max_atoms: int = Field(32, ge=2)
    md_temperature_K: tuple[float, float] = (300.0, 1500.0)
    vacuum: float = Field(7.5, gt=0, description="Å of vacuum on each side of a slab (full pbc)")
    max_force: float = Field(20.0, gt=0)


class DatagenConfig(BaseModel):
    """A data-generation recipe, read from YAML (``configs/datagen/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 20261124
    out: str = "data/pretrain"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    molecule: MoleculeConfig = Field(default_factory=MoleculeConfig)
    material: MaterialConfig = Field(default_factory=MaterialConfig)

    def recipe_hash(self) -> str:
        """Hash of everything that changes the data (not ``out``)."""
        payload = self.model_dump(mode="json", exclude={"out"})
        if not payload["material"]["n_combinatorial"]:  # added later: recipes without it keep their hash
            del payload["material"]["n_combinatorial"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path) -> DatagenConfig:
    import yaml

    with open(path) as fh:
        return DatagenConfig(**(yaml.safe_load(fh) or {}))


# -------------------------------------------------------------------------------------- seeds & splits
def _hash_unit(*parts: Any) -> float:
    """A number in [0, 1) from a hash of ``parts``: stable across processes and Python versions."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF  # RDKit wants a non-negative int32


def split_of(group: str, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """train/val/test of a group from a seeded hash (the same group always lands in the same split)."""
    total = sum(fractions)
    u = _hash_unit("split", seed, group) * total
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


def _assign_splits(
    groups: dict[str, set[str]], seed: int, fractions: tuple[float, float, float]
) -> tuple[dict[str, str], int]:
    """Split per group; a val/test group with an element no train group has is moved to train.

    ``groups`` maps group -> its elements (one domain). Returns (group -> split, number of groups moved).
    """
    split = {g: split_of(g, seed, fractions) for g in groups}
    covered = set().union(*(groups[g] for g in groups if split[g] == "train")) if groups else set()
    moved = 0
    # deterministic order: by hash, so the groups moved are the same ones every time
    for g in sorted((g for g in groups if split[g] != "train"), key=lambda g: _hash_unit("order", seed, g)):
        if not groups[g] <= covered:
            split[g] = "train"
            covered |= groups[g]
            moved += 1
    return split, moved


# --------------------------------------------------------------------------------------- molecule pool
def _extxyz_safe(text: str) -> bool:
    """False for strings extxyz would read back as a bool or a number (e.g. the SMILES of HF, ``F``)."""
    from ase.io.extxyz import key_val_dict_to_str, key_val_str_to_dict

    try:
        back = key_val_str_to_dict(key_val_dict_to_str({"k": text}))["k"]
        return isinstance(back, str) and back == text
    except Exception:  # pragma: no cover - defensive
        return False


def _group_smiles(mol) -> str:
    """Canonical SMILES without stereo: the group. Hs made explicit where extxyz would misread it."""
    from rdkit import Chem

    smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
    if not _extxyz_safe(smiles):
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False, allHsExplicit=True)
    return smiles


def _nci_molecules(cfg: MoleculeConfig) -> list[dict]:
    """Filtered NCI set: neutral, closed shell, one fragment, sanitizable, allowed elements, small."""
    return [dict(e) for e in _nci_filtered(cfg.max_heavy_atoms, tuple(cfg.elements))]


@functools.lru_cache(maxsize=4)
def _nci_filtered(max_heavy_atoms: int, elements: tuple[str, ...]) -> tuple[dict, ...]:
    from rdkit import Chem, RDConfig, RDLogger
    from rdkit.Chem import Descriptors

    RDLogger.DisableLog("rdApp.*")
    path = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")
    allowed = set(elements)
    seen: set[str] = set()
    out = []
    with open(path) as fh:
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            smiles, nci_id = parts[0], (parts[1] if len(parts) > 1 else "")
            mol = Chem.MolFromSmiles(smiles)
            if mol is None or len(Chem.GetMolFrags(mol)) != 1 or Chem.GetFormalCharge(mol) != 0:
                continue
            if Descriptors.NumRadicalElectrons(mol) != 0 or mol.GetNumHeavyAtoms() > max_heavy_atoms:
                continue
            if any(a.GetSymbol() not in allowed for a in mol.GetAtoms()):
                continue
            group = _group_smiles(mol)
            if group in seen:
                continue
            seen.add(group)
            elements = sorted({a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()})
            out.append(
                {
                    "group": group,
                    "smiles": smiles,
                    "source": "NCI",
                    "name": f"NCI-{nci_id}",
                    "elements": elements,
                }
            )
    return tuple(out)


def _g2_molecules(cfg: MoleculeConfig) -> list[dict]:
    """g2 molecules made of the allowed elements (closed shell unless ``g2_open_shell``), >= 2 atoms."""
    from ase.collections import g2
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    allowed = set(cfg.elements)
    out = []
    for name in g2.names:
        atoms = g2[name]
        symbols = atoms.get_chemical_symbols()
        if len(atoms) < 2 or not set(symbols) <= allowed:
            continue
        if not cfg.g2_open_shell and abs(atoms.get_initial_magnetic_moments().sum()) > 1e-6:
            continue
        group = f"g2:{name}"
        try:  # the same chemistry as an NCI molecule must share its group (and so its split)
            xyz = f"{len(atoms)}\n\n" + "\n".join(
                f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(symbols, atoms.positions, strict=True)
            )
            mol = Chem.MolFromXYZBlock(xyz)
            rdDetermineBonds.DetermineBonds(mol, charge=0)
            Chem.SanitizeMol(mol)
            group = _group_smiles(mol)
        except Exception:
            pass
        out.append({"group": group, "smiles": "", "source": "g2", "name": name, "elements": sorted(set(symbols))})
    return out


def _molecule_entries(cfg: MoleculeConfig, seed: int) -> list[dict]:
    if not cfg.enabled:
        return []
    nci = _nci_molecules(cfg)
    rng = np.random.default_rng(_derive_seed(seed, "nci-sample"))
    chosen = [nci[i] for i in sorted(rng.permutation(len(nci))[: cfg.nci_molecules])]
    entries = chosen + (_g2_molecules(cfg) if cfg.include_g2 else [])
    # shuffle so every shard mixes sizes (and g2 molecules are spread over the run)
    order = np.random.default_rng(_derive_seed(seed, "molecule-order")).permutation(len(entries))
    return [entries[i] for i in order]


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


def _material_specs(cfg: MaterialConfig, seed: int = 0) -> list[MaterialSpec]:
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
        rng = np.random.default_rng(_derive_seed(seed, "combinatorial"))
        queues = [[specs[i] for i in rng.permutation(len(specs))] for _, specs in sorted(by_kind.items())]
        picked: list[MaterialSpec] = []
        while len(picked) < cfg.n_combinatorial and any(queues):  # round-robin over kinds: balanced prototypes
            for queue in queues:
                if queue and len(picked) < cfg.n_combinatorial:
                    picked.append(queue.pop())
        chosen += picked
    return chosen


# ------------------------------------------------------------------------------------------------ plan
def make_plan(config: DatagenConfig) -> list[dict]:
    """The deterministic list of shards, molecule and material shards interleaved.

    Each shard is ``{"domain", "index", "entries"}``; an entry carries its ``group`` and ``split``.
    """
    seed = config.seed
    molecules = _molecule_entries(config.molecule, seed)
    materials = [
        {"group": s.id, "spec": s.model_dump(), "source": "prototype", "elements": s.elements}
        for s in _material_specs(config.material, seed)
    ]
    for entries in (molecules, materials):
        groups: dict[str, set[str]] = {}
        for e in entries:
            groups.setdefault(e["group"], set()).update(e["elements"])
        split, _ = _assign_splits(groups, seed, config.split_fractions)
        for e in entries:
            e["split"] = split[e["group"]]
    n = config.molecule.molecules_per_shard
    shards = [
        {"domain": "molecule", "index": i, "entries": molecules[k : k + n]}
        for i, k in enumerate(range(0, len(molecules), n))
    ]
    shards += [{"domain": "material", "index": i, "entries": [e]} for i, e in enumerate(materials)]
    # interleave: order by the position of each shard within its own domain
    counts = Counter(s["domain"] for s in shards)
    shards.sort(key=lambda s: ((s["index"] + 0.5) / counts[s["domain"]], s["domain"]))
    return shards


def _shard_paths(out: Path, shard: dict) -> tuple[Path, Path]:
    base = out / shard["domain"] / f"shard-{shard['index']:05d}"
    return base.with_suffix(".extxyz"), base.with_suffix(".json")


def _is_done(out: Path, shard: dict) -> bool:
    xyz, meta = _shard_paths(out, shard)
    return xyz.exists() and meta.exists()


# ------------------------------------------------------------------------------------------- labelling
def _code_versions(domain: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ["ase", "numpy"] + (["rdkit", "tblite"] if domain == "molecule" else ["chgnet", "torch", "pymatgen"])
    versions = {"triscale": VERSION}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover
            versions[name] = "unknown"
    return json.dumps(versions, sort_keys=True, separators=(",", ":"))


class FrameSkipped(Exception):
    """A frame that is not stored; the message says why."""


def _rounded(atoms):
    """A clean copy (no calculator, info, tags, velocities) with positions rounded as extxyz stores them."""
    from ase import Atoms

    frame = Atoms(
        numbers=atoms.numbers,
        positions=np.round(atoms.positions, _DECIMALS),
        cell=atoms.cell.array,
        pbc=atoms.pbc,
    )
    magmoms = atoms.get_initial_magnetic_moments()
    if np.abs(magmoms).sum() > 0:
        frame.set_initial_magnetic_moments(magmoms)
    return frame


def _check_labels(energy: float, forces: np.ndarray, max_force: float, extra: np.ndarray | None = None) -> None:
    values = [np.asarray(energy, dtype=float).ravel(), forces.ravel()]
    if extra is not None:
        values.append(np.asarray(extra, dtype=float).ravel())
    if not all(np.isfinite(v).all() for v in values):
        raise FrameSkipped("non-finite label")
    largest = float(np.abs(forces).max()) if forces.size else 0.0
    if largest > max_force:
        raise FrameSkipped(f"max force > {max_force:g} eV/A ({largest:.1f})")


def label_molecule(atoms, calc, max_force: float = 20.0):
    """A copy of ``atoms`` (positions rounded to 1e-8 Å) with GFN2-xTB labels under REF_ keys, no calculator.

    Raises ``FrameSkipped`` (with the reason) when the SCF fails or the forces are absurd.
    """
    from ase.calculators.calculator import CalculationFailed, InputError

    frame = _rounded(atoms)
    work = frame.copy()
    work.calc = calc
    try:
        calc.reset()
        calc.calculate(work, ["energy", "forces"], ["positions", "numbers", "cell", "pbc"])
    except (CalculationFailed, InputError, RuntimeError) as exc:
        raise FrameSkipped(
            f"xtb failed: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        ) from None
    results = calc.results
    energy = float(results["energy"])
    forces = np.asarray(results["forces"], dtype=np.float64).reshape(len(frame), 3)
    dipole = np.asarray(results["dipole"], dtype=np.float64).reshape(3)  # e·Å (tblite: atomic units * Bohr)
    charges = np.asarray(results["charges"], dtype=np.float64).reshape(len(frame))
    _check_labels(energy, forces, max_force, np.concatenate([dipole, charges]))
    frame.info["REF_energy"] = energy
    frame.info["REF_dipole"] = dipole
    frame.arrays["REF_forces"] = forces
    frame.arrays["REF_charges"] = charges
    return frame


def label_material(atoms, calc, max_force: float = 20.0):
    """A copy of ``atoms`` (positions rounded) with CHGNet labels under REF_ keys (stress eV/Å³, Voigt)."""
    frame = _rounded(atoms)
    work = frame.copy()
    work.calc = calc
    try:
        energy = float(work.get_potential_energy())
        forces = np.asarray(work.get_forces(), dtype=np.float64)
        stress = np.asarray(work.get_stress(voigt=True), dtype=np.float64)  # the calculator's GPa -> eV/Å³
    except Exception as exc:  # CHGNet raises plain exceptions (e.g. isolated atoms)
        raise FrameSkipped(f"chgnet failed: {type(exc).__name__}: {str(exc)[:100]}") from None
    _check_labels(energy, forces, max_force, stress)
    frame.info["REF_energy"] = energy
    frame.info["REF_stress"] = stress
    frame.arrays["REF_forces"] = forces
    return frame


# ---------------------------------------------------------------------------------------- worker state
_STATE: dict[str, Any] = {}


def _xtb_calc(cfg: MoleculeConfig):
    if "xtb" not in _STATE:
        from tblite.ase import TBLite

        _STATE["xtb"] = TBLite(method="GFN2-xTB", verbosity=0, accuracy=cfg.accuracy)
    return _STATE["xtb"]


def _chgnet_calc(cfg: MaterialConfig):
    if "chgnet" not in _STATE:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            model = CHGNet.load(model_name=cfg.model, use_device="cpu", verbose=False)
            _STATE["chgnet"] = CHGNetCalculator(model=model, use_device="cpu", on_isolated_atoms="error")
    return _STATE["chgnet"]


@contextlib.contextmanager
def _quiet():
    """CHGNet/pymatgen/torch chatter off while labelling."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ------------------------------------------------------------------------------------------- molecules
def _common_info(frame, entry: dict, domain: str, seed: int, config_type: str, method: str, versions: str) -> None:
    frame.info.update(
        domain=domain,
        group=entry["group"],
        split=entry["split"],
        source=entry["source"],
        config_type=config_type,
        method=method,
        code_versions=versions,
        units=UNITS,
        seed=seed,
    )


def _conformers(entry: dict, n: int, seed: int):
    """Base geometries of a molecule: ETKDG conformers (with Hs) for NCI, the stored geometry for g2."""
    from ase import Atoms

    if entry["source"] == "g2":
        from ase.collections import g2

        ref = g2[entry["name"]]
        atoms = Atoms(ref.numbers, positions=ref.positions)
        if np.abs(ref.get_initial_magnetic_moments()).sum() > 0:  # radicals: tblite takes uhf from these
            atoms.set_initial_magnetic_moments(ref.get_initial_magnetic_moments())
        return [atoms], "g2"
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(entry["smiles"]))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.numThreads = 1
    params.pruneRmsThresh = 0.1
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return [Atoms(numbers, positions=mol.GetConformer(i).GetPositions()) for i in ids], "etkdg"


def _molecule_frames(entry: dict, cfg: MoleculeConfig, seed: int, calc) -> Iterator[tuple[str, Any]]:
    """(config_type, unlabelled Atoms) for one molecule; relaxation/MD use the calculator as they go."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.optimize import BFGS

    rng = np.random.default_rng(_derive_seed(seed, "molecule", entry["group"], entry["name"]))
    bases, kind = _conformers(entry, cfg.n_conformers, _derive_seed(seed, "etkdg", entry["group"]))
    if not bases:
        raise FrameSkipped("ETKDG embedding failed")
    for atoms in bases:
        yield kind, atoms
    for k in range(cfg.n_rattles):
        atoms = bases[k % len(bases)].copy()
        atoms.positions += rng.normal(0.0, rng.uniform(*cfg.rattle_sigma), atoms.positions.shape)
        yield "rattle", atoms
    # g2 molecules are always relaxed: their xTB minima anchor the bond-length checks
    if entry["source"] == "g2" or rng.uniform() < cfg.relax_fraction:
        atoms = bases[0].copy()
        atoms.calc = calc
        path = []
        try:
            with open(os.devnull, "w") as devnull:
                opt = BFGS(atoms, logfile=devnull, maxstep=0.2)
                for _ in opt.irun(fmax=0.01, steps=cfg.relax_steps):
                    path.append(atoms.positions.copy())
        except Exception as exc:
            yield "skip", f"relaxation failed: {type(exc).__name__}"
        if path:
            picks = sorted({round(x) for x in np.linspace(0, len(path) - 1, cfg.relax_frames + 1)[1:]})
            for i in picks:
                frame = bases[0].copy()
                frame.positions = path[i]
                yield ("relaxed" if i == len(path) - 1 else "relax"), frame
    if rng.uniform() < cfg.md_fraction:
        atoms = bases[-1].copy()
        atoms.calc = calc
        temperature = rng.uniform(*cfg.md_temperature_K)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
        dt = cfg.md_timestep_fs * units.fs
        md = Langevin(atoms, dt, temperature_K=temperature, friction=0.01 / units.fs, rng=rng, fixcm=False)
        every = max(1, cfg.md_steps // cfg.md_frames)
        try:
            for _ in range(cfg.md_frames):
                md.run(every)
                frame = bases[-1].copy()
                frame.positions = atoms.positions.copy()
                yield "md", frame
        except Exception as exc:
            yield "skip", f"md failed: {type(exc).__name__}"


def _run_molecule_shard(shard: dict, config: DatagenConfig) -> tuple[list, list[dict]]:
    cfg = config.molecule
    calc = _xtb_calc(cfg)
    versions = _code_versions("molecule")
    frames, skipped = [], []
    for entry in shard["entries"]:
        try:
            for config_type, atoms in _molecule_frames(entry, cfg, config.seed, calc):
                if config_type == "skip":
                    skipped.append({"group": entry["group"], "config_type": "-", "reason": atoms})
                    continue
                try:
                    frame = label_molecule(atoms, calc, cfg.max_force)
                except FrameSkipped as why:
                    skipped.append({"group": entry["group"], "config_type": config_type, "reason": str(why)})
                    continue
                _common_info(frame, entry, "molecule", config.seed, config_type, "GFN2-xTB", versions)
                frame.info["name"] = entry["name"]
                frame.info["total_charge"] = 0
                frame.info["spin_multiplicity"] = 1 + int(round(abs(atoms.get_initial_magnetic_moments().sum())))
                frames.append(frame)
        except FrameSkipped as why:
            skipped.append({"group": entry["group"], "config_type": "-", "reason": str(why)})
    return frames, skipped


# ------------------------------------------------------------------------------------------- materials
def _build_bases(spec: MaterialSpec, a: float | None = None, c: float | None = None, vacuum: float = 7.5) -> list:
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
        prim = relax(_build_bases(bulk_spec)[0], cell=True)
        a = spec.a * (prim.get_volume() / _build_bases(bulk_spec)[0].get_volume()) ** (1 / 3)
        slab = relax(_build_bases(spec, a=a, vacuum=cfg.vacuum)[0], cell=False)
        return [slab], slab.copy()
    bases = _build_bases(spec)
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

    rng = np.random.default_rng(_derive_seed(seed, "material", spec.id))
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


def _run_material_shard(shard: dict, config: DatagenConfig) -> tuple[list, list[dict]]:
    cfg = config.material
    calc = _chgnet_calc(cfg)
    versions = _code_versions("material")
    method = f"CHGNet-{cfg.model}"
    frames, skipped = [], []
    for entry in shard["entries"]:
        spec = MaterialSpec(**entry["spec"])
        with _quiet():
            for config_type, atoms in _material_frames(spec, cfg, config.seed, calc):
                if config_type == "skip":
                    skipped.append({"group": entry["group"], "config_type": "-", "reason": atoms})
                    continue
                try:
                    frame = label_material(atoms, calc, cfg.max_force)
                except FrameSkipped as why:
                    skipped.append({"group": entry["group"], "config_type": config_type, "reason": str(why)})
                    continue
                _common_info(frame, entry, "material", config.seed, config_type, method, versions)
                frame.info["prototype"] = spec.prototype
                frame.info["distilled_from"] = f"CHGNet {cfg.model} (teacher model, not DFT)"
                frames.append(frame)
    return frames, skipped


# ---------------------------------------------------------------------------------------------- shards
def _summarise(frames: list) -> dict:
    splits: dict[str, dict[str, Any]] = {}
    elements: set[str] = set()
    config_types: Counter = Counter()
    for f in frames:
        s = splits.setdefault(f.info["split"], {"frames": 0, "groups": set(), "atoms": 0})
        s["frames"] += 1
        s["atoms"] += len(f)
        s["groups"].add(f.info["group"])
        elements.update(f.get_chemical_symbols())
        config_types[f.info["config_type"]] += 1
    return {
        "splits": {
            k: {"frames": v["frames"], "atoms": v["atoms"], "groups": sorted(v["groups"])}
            for k, v in sorted(splits.items())
        },
        "elements": sorted(elements),
        "config_types": dict(sorted(config_types.items())),
    }


def _run_shard(shard: dict, config_json: str, out: str) -> dict:
    """Generate, label and write one shard (atomically). Returns its summary."""
    from ase.io import write

    config = DatagenConfig.model_validate_json(config_json)
    out_path = Path(out)
    xyz, meta = _shard_paths(out_path, shard)
    xyz.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    run = _run_molecule_shard if shard["domain"] == "molecule" else _run_material_shard
    frames, skipped = run(shard, config)
    seconds = time.perf_counter() - start
    buffer = io.StringIO()
    if frames:
        write(buffer, frames, format="extxyz")
    atomic_write_text(xyz, buffer.getvalue())
    summary = {
        "domain": shard["domain"],
        "index": shard["index"],
        "file": xyz.name,
        "frames": len(frames),
        "groups": [e["group"] for e in shard["entries"]],
        **_summarise(frames),
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "recipe_hash": config.recipe_hash(),
    }
    atomic_write_text(meta, json.dumps(summary, indent=1))
    return summary


def init_labelling_worker() -> None:
    """One quiet OpenMP thread per labelling process (two spinning runtimes on two cores are 2-1000x slower)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(1)


@contextlib.contextmanager
def _single_thread():
    """One torch thread while generating in this process; restored afterwards."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -------------------------------------------------------------------------------------------- manifest
def _versions() -> dict[str, str]:
    merged = json.loads(_code_versions("molecule"))
    merged.update(json.loads(_code_versions("material")))
    return merged


def write_manifest(out: Path, config: DatagenConfig, plan: list[dict]) -> dict:
    """Summarise the shards on disk into ``out/manifest.json`` (no timestamps: reruns give the same file)."""
    domains: dict[str, Any] = {}
    done = 0
    for shard in plan:
        xyz, meta = _shard_paths(out, shard)
        d = domains.setdefault(
            shard["domain"],
            {
                "shards": 0,
                "shards_done": 0,
                "frames": 0,
                "atoms": 0,
                "seconds": 0.0,
                "elements": set(),
                "splits": {s: {"frames": 0, "atoms": 0, "groups": set()} for s in SPLITS},
                "config_types": Counter(),
                "skipped": Counter(),
            },
        )
        d["shards"] += 1
        if not (xyz.exists() and meta.exists()):
            continue
        summary = json.loads(meta.read_text())
        done += 1
        d["shards_done"] += 1
        d["frames"] += summary["frames"]
        d["seconds"] += summary["seconds"]
        d["elements"].update(summary["elements"])
        d["config_types"].update(summary["config_types"])
        for split, s in summary["splits"].items():
            d["splits"][split]["frames"] += s["frames"]
            d["splits"][split]["atoms"] += s["atoms"]
            d["atoms"] += s["atoms"]
            d["splits"][split]["groups"].update(s["groups"])
        for skip in summary["skipped"]:
            d["skipped"][skip["reason"].split(" (")[0]] += 1
    for d in domains.values():
        d["seconds"] = round(d["seconds"], 1)
        d["elements"] = sorted(d["elements"], key=_atomic_number)
        for s in d["splits"].values():
            s["groups"] = len(s["groups"])
        d["config_types"] = dict(sorted(d["config_types"].items()))
        d["skipped"] = dict(sorted(d["skipped"].items()))
    manifest = {
        "format_version": FORMAT_VERSION,
        "complete": done == len(plan),
        "shards": len(plan),
        "shards_done": done,
        "domains": domains,
        "methods": {
            "molecule": "GFN2-xTB (tblite ASE calculator): energy eV, forces eV/A, dipole e*A, Mulliken charges e",
            "material": f"CHGNet {config.material.model} (distilled from CHGNet, a model trained on "
            "Materials Project PBE/PBE+U data; not DFT): energy eV, forces eV/A, stress eV/A^3 "
            "(ASE sign, Voigt xx yy zz yz "
            "xz xy)",
        },
        "units": UNITS,
        "label_keys": {
            "info": ["REF_energy", "REF_stress", "REF_dipole"],
            "arrays": ["REF_forces", "REF_charges"],
        },
        "split": "by group (canonical SMILES without stereo / prototype:composition), seeded hash, "
        "elements of "
        "val/test groups covered by train",
        "seed": config.seed,
        "recipe_hash": config.recipe_hash(),
        "config": config.model_dump(mode="json"),
        "versions": _versions(),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


# ---------------------------------------------------------------------------------------------- driver
def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(time.strftime("%H:%M:%S ") + msg, file=sys.stderr)


def generate(
    config: DatagenConfig,
    out: str | Path | None = None,
    workers: int = 1,
    limit: int | None = None,
    progress: bool = True,
) -> dict:
    """Run (or continue) a data generation; returns the manifest.

    ``limit``: process at most this many of the shards still to do (a partial run; run again to go on).
    """
    from tqdm import tqdm

    out_path = Path(out if out is not None else config.out)
    out_path.mkdir(parents=True, exist_ok=True)
    plan_file = out_path / "plan.json"
    recipe = config.recipe_hash()
    if plan_file.exists():
        old = json.loads(plan_file.read_text())
        if old.get("recipe_hash") != recipe:
            raise ValueError(
                f"{out_path} holds data of a different recipe (hash {old.get('recipe_hash')} != {recipe}); "
                "use another --out or delete it"
            )
    for stale in glob.glob(str(out_path / "*" / "*.tmp-*")):  # left by a killed run
        with contextlib.suppress(OSError):
            os.remove(stale)
    t0 = time.perf_counter()
    plan = make_plan(config)
    atomic_write_text(
        plan_file,
        json.dumps(
            {
                "recipe_hash": recipe,
                "config": config.model_dump(mode="json"),
                "shards": [
                    {"domain": s["domain"], "index": s["index"], "groups": [e["group"] for e in s["entries"]]}
                    for s in plan
                ],
            },
            indent=1,
        ),
    )
    todo = [s for s in plan if not _is_done(out_path, s)]
    n_done = len(plan) - len(todo)
    if limit is not None:
        todo = todo[:limit]
    counts = Counter(s["domain"] for s in plan)
    _log(
        f"datagen: {len(plan)} shards ({dict(counts)}), {n_done} done, "
        f"{len(todo)} to do, {workers} worker(s); planned in {time.perf_counter() - t0:.1f} s -> {out_path}"
    )
    config_json = config.model_dump_json()
    bar = tqdm(
        total=len(todo),
        unit="shard",
        disable=not progress,
        mininterval=1.0 if sys.stderr.isatty() else 60.0,
        file=sys.stderr,
    )
    frames_done = 0
    finished: list[str] = []

    def report(summary: dict) -> None:
        nonlocal frames_done
        frames_done += summary["frames"]
        bar.update(1)
        finished.append(summary["file"])
        bar.set_postfix(frames=frames_done)
        skipped = f", {len(summary['skipped'])} skipped" if summary["skipped"] else ""
        _log(
            f"{summary['domain']}/{summary['file']}: {summary['frames']} frames{skipped} "
            f"in {summary['seconds']:.1f} s"
            f" ({len(finished)}/{len(todo)})"
        )

    try:
        if workers <= 1:
            with _single_thread():
                for shard in todo:
                    report(_run_shard(shard, config_json, str(out_path)))
        else:
            import multiprocessing as mp

            for var, value in (
                ("OMP_NUM_THREADS", "1"),
                ("MKL_NUM_THREADS", "1"),
                ("OMP_WAIT_POLICY", "PASSIVE"),
            ):
                os.environ[var] = value
            ctx = mp.get_context("spawn")  # no fork after RDKit/torch/OpenMP are loaded
            with ctx.Pool(workers, initializer=init_labelling_worker, maxtasksperchild=50) as pool:
                jobs = [(s, config_json, str(out_path)) for s in todo]
                for summary in pool.imap_unordered(_run_shard_star, jobs):
                    report(summary)
    finally:
        bar.close()
    manifest = write_manifest(out_path, config, plan)
    _log(
        f"datagen: {manifest['shards_done']}/{manifest['shards']} shards on disk, "
        + ", ".join(f"{d}: {v['frames']} frames" for d, v in manifest["domains"].items())
        + f"; {time.perf_counter() - t0:.0f} s this run"
    )
    return manifest


def _run_shard_star(args: tuple) -> dict:
    return _run_shard(*args)


def run_datagen_cli(config: Path, out: Path | None, workers: int, limit: int | None) -> None:
    """Entry point of ``triscale datagen``."""
    for var, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
        os.environ.setdefault(var, value)
    cfg = load_config(config)
    manifest = generate(cfg, out=out, workers=workers, limit=limit)
    for domain, d in manifest["domains"].items():
        splits = ", ".join(f"{s} {v['frames']} frames/{v['groups']} groups" for s, v in d["splits"].items())
        print(f"{domain}: {d['frames']} frames ({splits}); elements {' '.join(d['elements'])}")
    if not manifest["complete"]:
        print(f"{manifest['shards_done']}/{manifest['shards']} shards done; run again to continue")
