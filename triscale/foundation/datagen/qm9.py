"""QM9 (``qm9pack``, 130,831 molecules at their B3LYP/6-31G(2df,p) minima): a molecule source and an energy domain.

Two uses:

* extra *molecules* for the GFN2-xTB domain (``molecule.qm9_molecules``): the B3LYP geometry is the base frame,
  rattles are sampled around it, every frame is labelled by GFN2-xTB like any other molecule;
* the energy-only ``molecule-dft`` domain (``molecule_dft``): one frame per molecule at its B3LYP equilibrium
  geometry with the B3LYP energy and no forces (QM9 has none).

``qm9pack`` imports ``pkg_resources`` (gone from new setuptools), so its CSV files are read directly from the
installed package folder. Without it, the sources that need it refuse with the install hint.

The energy stored is the *electronic* energy ``U0 - ZPVE`` (Hartree -> eV): the potential-energy surface the
model's energy is, at the stored geometry. QM9's U0 adds the harmonic zero-point energy, which no single geometry
determines; it is kept beside it in ``info`` as ``qm9_U0_eV`` and ``qm9_ZPVE_eV``.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import numpy as np

__all__ = ["DFT_DOMAIN", "DFT_METHOD", "QM9_ELEMENTS", "qm9_folder", "qm9_molecules", "qm9_table"]

DFT_DOMAIN = "molecule-dft"
DFT_METHOD = "B3LYP/6-31G(2df,p) (QM9, Ramakrishnan et al. 2014)"
QM9_ELEMENTS = ("H", "C", "N", "O", "F")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_COLUMNS = ["Index", "SMILES", "Elements", "XYZ_Ang", "ZPVE_au", "InternalEnergy_0K_au"]


def qm9_folder() -> Path:
    """The folder of qm9pack's CSV files; a clear error when the package is absent."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "QM9 molecules need the qm9pack package, which is not installed: pip install 'triscale[qm9]'"
        )
    folder = Path(spec.origin).parent / "data"
    if not (folder / "qm9_part1.csv").exists():
        raise FileNotFoundError(f"qm9pack is installed but its data files are missing from {folder}")
    return folder


@functools.lru_cache(maxsize=1)
def qm9_table():
    """All QM9 rows (pandas DataFrame: Index, SMILES, Elements, XYZ_Ang, ZPVE_au, InternalEnergy_0K_au)."""
    import pandas as pd

    folder = qm9_folder()
    parts = sorted(folder.glob("qm9_part*.csv"))
    frame = pd.concat([pd.read_csv(p, usecols=_COLUMNS) for p in parts], ignore_index=True)
    return frame.sort_values("Index", kind="stable").reset_index(drop=True)


def _entry(row, group: str) -> dict:
    from ase.units import Hartree

    symbols = [s.strip().strip("'\"") for s in str(row.Elements).strip("[]").split(",")]
    # "[[x,y,z],...]" with numbers such as "0." that JSON refuses
    positions = np.array([float(x) for x in _NUMBER.findall(str(row.XYZ_Ang))]).reshape(-1, 3).tolist()
    u0 = float(row.InternalEnergy_0K_au) * Hartree
    zpve = float(row.ZPVE_au) * Hartree
    return {
        "group": group,
        "smiles": str(row.SMILES),
        "source": "QM9",
        "name": f"qm9-{int(row.Index)}",
        "elements": sorted(set(symbols)),
        "symbols": symbols,
        "positions": positions,
        "energy_eV": u0 - zpve,
        "U0_eV": u0,
        "ZPVE_eV": zpve,
    }


def qm9_molecules(n: int, seed: int, tag: str, max_heavy_atoms: int = 30, elements=QM9_ELEMENTS) -> list[dict]:
    """``n`` QM9 molecules (a seeded sample; ``n`` >= the table: all of them) as datagen entries.

    The group is the canonical SMILES without stereo (as for NCI molecules), from QM9's SMILES, so a molecule that
    is also in the NCI or g2 pool shares its group and its split. Rows RDKit cannot parse, duplicates of a group
    already taken, and molecules outside ``elements``/``max_heavy_atoms`` are passed over (the sample continues in
    the seeded order, so the count is met where the table allows). ``tag`` separates the samples of different uses.
    """
    from rdkit import Chem, RDLogger

    from triscale.foundation.datagen.groups import group_smiles
    from triscale.foundation.datagen.seeds import derive_seed

    RDLogger.DisableLog("rdApp.*")
    if n <= 0:
        return []
    table = qm9_table()
    allowed = set(elements)
    order = np.random.default_rng(derive_seed(seed, "qm9-sample", tag)).permutation(len(table))
    out: list[dict] = []
    seen: set[str] = set()
    for i in order:
        row = table.iloc[int(i)]
        mol = Chem.MolFromSmiles(str(row.SMILES))
        if mol is None or mol.GetNumHeavyAtoms() > max_heavy_atoms:
            continue
        if Chem.GetFormalCharge(mol) != 0 or len(Chem.GetMolFrags(mol)) != 1:
            continue
        group = group_smiles(mol)
        if group in seen:
            continue
        entry = _entry(row, group)
        if not set(entry["symbols"]) <= allowed or len(entry["symbols"]) != len(entry["positions"]):
            continue
        seen.add(group)
        out.append(entry)
        if len(out) >= n:
            break
    return out


def dft_entries(cfg, seed: int) -> list[dict]:
    """The entries of the ``molecule-dft`` domain (``cfg``: :class:`MoleculeDFTConfig`); [] when disabled."""
    if not cfg.enabled:
        return []
    return qm9_molecules(cfg.molecules, seed, "dft")


def run_dft_shard(shard: dict, config) -> tuple[list, list[dict]]:
    """Energy-only frames: QM9's B3LYP minimum of each molecule with its electronic energy (eV), no forces."""
    from ase import Atoms

    from triscale.foundation.datagen.labelling import FrameSkipped, check_energy, code_versions, common_info

    versions = code_versions(DFT_DOMAIN)
    frames, skipped = [], []
    for entry in shard["entries"]:
        positions = np.round(np.asarray(entry["positions"], dtype=np.float64), 8)
        frame = Atoms(entry["symbols"], positions=positions)
        try:
            check_energy(entry["energy_eV"])
        except FrameSkipped as why:
            skipped.append({"group": entry["group"], "config_type": "qm9", "reason": str(why)})
            continue
        frame.info["REF_energy"] = float(entry["energy_eV"])
        common_info(frame, entry, DFT_DOMAIN, config.seed, "qm9", DFT_METHOD, versions)
        frame.info["name"] = entry["name"]
        frame.info["qm9_U0_eV"] = float(entry["U0_eV"])
        frame.info["qm9_ZPVE_eV"] = float(entry["ZPVE_eV"])
        frame.info["total_charge"] = 0
        frame.info["spin_multiplicity"] = 1
        frames.append(frame)
    return frames, skipped
