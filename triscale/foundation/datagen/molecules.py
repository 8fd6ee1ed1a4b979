"""The molecule domain: the NCI/g2 pool, ETKDG conformers and off-equilibrium frames, GFN2-xTB shards."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from triscale.common.chem import EmbeddingError, SmilesError, embed_smiles
from triscale.foundation.datagen.config import DatagenConfig, MoleculeConfig
from triscale.foundation.datagen.groups import group_smiles
from triscale.foundation.datagen.labelling import (
    FrameSkipped,
    code_versions,
    common_info,
    label_molecule,
    xtb_calculator,
)
from triscale.foundation.datagen.seeds import derive_seed

__all__ = [
    "g2_molecules",
    "group_smiles",
    "molecule_conformers",
    "molecule_entries",
    "nci_molecules",
    "run_molecule_shard",
]


# --------------------------------------------------------------------------------------- molecule pool
def nci_molecules(cfg: MoleculeConfig) -> list[dict]:
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
            group = group_smiles(mol)
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


def g2_molecules(cfg: MoleculeConfig) -> list[dict]:
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
            group = group_smiles(mol)
        except Exception:
            pass
        out.append({"group": group, "smiles": "", "source": "g2", "name": name, "elements": sorted(set(symbols))})
    return out


def molecule_entries(cfg: MoleculeConfig, seed: int) -> list[dict]:
    if not cfg.enabled:
        return []
    nci = nci_molecules(cfg)
    rng = np.random.default_rng(derive_seed(seed, "nci-sample"))
    picks = rng.permutation(len(nci))[cfg.nci_skip : cfg.nci_skip + cfg.nci_molecules]
    chosen = [nci[i] for i in sorted(picks)]
    entries = chosen + (g2_molecules(cfg) if cfg.include_g2 else [])
    if cfg.qm9_molecules:
        from triscale.foundation.datagen.qm9 import qm9_molecules

        taken = {e["group"] for e in entries}
        qm9 = qm9_molecules(cfg.qm9_molecules + len(taken), seed, "xtb", cfg.max_heavy_atoms, tuple(cfg.elements))
        entries += [e for e in qm9 if e["group"] not in taken][: cfg.qm9_molecules]
    # shuffle so every shard mixes sizes (and g2 molecules are spread over the run)
    order = np.random.default_rng(derive_seed(seed, "molecule-order")).permutation(len(entries))
    return [entries[i] for i in order]


# ------------------------------------------------------------------------------------------- molecules


def molecule_conformers(entry: dict, n: int, seed: int, max_heavy_atoms: int | None = None):
    """Base geometries of a molecule: ETKDG conformers (with Hs) for NCI, the stored geometry for g2 and QM9.

    Returns ``(list of Atoms, "etkdg" | "g2" | "qm9")``; the list is empty when ETKDG finds no embedding. The
    conformers come from :func:`triscale.common.chem.embed_smiles` (seeded, pruned at 0.1 Å RMSD, not relaxed) with
    bare ``info``.
    Raises :class:`~triscale.common.chem.SmilesError` for an unparsable SMILES or one over ``max_heavy_atoms``.
    """
    from ase import Atoms

    if entry["source"] == "QM9":  # the B3LYP minimum as stored in QM9
        return [Atoms(entry["symbols"], positions=np.asarray(entry["positions"], dtype=np.float64))], "qm9"
    if entry["source"] == "g2":
        from ase.collections import g2

        ref = g2[entry["name"]]
        atoms = Atoms(ref.numbers, positions=ref.positions)
        if np.abs(ref.get_initial_magnetic_moments()).sum() > 0:  # radicals: tblite takes uhf from these
            atoms.set_initial_magnetic_moments(ref.get_initial_magnetic_moments())
        return [atoms], "g2"
    try:
        bases = embed_smiles(entry["smiles"], seed=seed, n_conformers=n, max_heavy_atoms=max_heavy_atoms)
    except EmbeddingError:
        return [], "etkdg"
    for atoms in bases:
        atoms.info.clear()  # charge/spin stay out of the stored frames, as before
    return bases, "etkdg"


def _molecule_frames(entry: dict, cfg: MoleculeConfig, seed: int, calc) -> Iterator[tuple[str, Any]]:
    """(config_type, unlabelled Atoms) for one molecule; relaxation/MD use the calculator as they go."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.optimize import BFGS

    rng = np.random.default_rng(derive_seed(seed, "molecule", entry["group"], entry["name"]))
    try:
        bases, kind = molecule_conformers(
            entry, cfg.n_conformers, derive_seed(seed, "etkdg", entry["group"]), cfg.max_heavy_atoms
        )
    except SmilesError as exc:
        raise FrameSkipped(str(exc)) from None
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


def run_molecule_shard(shard: dict, config: DatagenConfig) -> tuple[list, list[dict]]:
    cfg = config.molecule
    calc = xtb_calculator(cfg)
    versions = code_versions("molecule")
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
                common_info(frame, entry, "molecule", config.seed, config_type, "GFN2-xTB", versions)
                frame.info["name"] = entry["name"]
                frame.info["total_charge"] = 0
                frame.info["spin_multiplicity"] = 1 + int(round(abs(atoms.get_initial_magnetic_moments().sum())))
                frames.append(frame)
        except FrameSkipped as why:
            skipped.append({"group": entry["group"], "config_type": "-", "reason": str(why)})
    return frames, skipped
