"""Breadth recipes: molecules-wide keeps base's held-out molecules held out; QM9 as energy-only molecule-dft domain."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from ase.io import read
from ase.units import Hartree

from triscale.foundation.datagen import (
    DFT_DOMAIN,
    DatagenConfig,
    generate,
    load_config,
    make_plan,
    molecule_entries,
    qm9,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "datagen"
FIXTURE = Path(__file__).resolve().parent / "data" / "qm9_fixture.csv"


@pytest.fixture
def qm9_fixture(tmp_path, monkeypatch):
    """qm9pack's data folder replaced by twelve real QM9 rows (methane ... formamide)."""
    folder = tmp_path / "qm9data"
    folder.mkdir()
    shutil.copy(FIXTURE, folder / "qm9_part1.csv")
    monkeypatch.setattr(qm9, "qm9_folder", lambda: folder)
    qm9.qm9_table.cache_clear()
    yield folder
    qm9.qm9_table.cache_clear()


def _splits(config: DatagenConfig) -> dict[str, str]:
    out: dict[str, str] = {}
    for shard in make_plan(config):
        for e in shard["entries"]:
            assert out.setdefault(e["group"], e["split"]) == e["split"]  # one split per group across domains
    return out


def test_nci_skip_takes_the_rest_of_the_same_seeded_order():
    first = DatagenConfig().molecule.model_copy(update={"nci_molecules": 30, "include_g2": False})
    rest = first.model_copy(update={"nci_skip": 30, "nci_molecules": 40})
    both = first.model_copy(update={"nci_molecules": 70})
    a = {e["group"] for e in molecule_entries(first, 20261124)}
    b = {e["group"] for e in molecule_entries(rest, 20261124)}
    assert len(a) == 30 and len(b) == 40 and not a & b
    assert a | b == {e["group"] for e in molecule_entries(both, 20261124)}


def test_new_fields_at_their_defaults_keep_the_recipe_hash():
    # base.yaml's hash as written into data/pretrain/plan.json before these fields existed
    assert load_config(CONFIGS / "base.yaml").recipe_hash() == "e62328e1bf236a76"
    assert load_config(CONFIGS / "materials-wide.yaml").recipe_hash() == "2dfbd793dd2c9651"
    changed = load_config(CONFIGS / "base.yaml")
    changed.molecule.nci_skip = 1
    assert changed.recipe_hash() != "e62328e1bf236a76"


def test_qm9_absent_is_refused_with_the_install_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "qm9pack" else real(name, *a))
    qm9.qm9_table.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"pip install 'triscale\[qm9\]'"):
            qm9.qm9_molecules(3, 1, "xtb")
    finally:
        qm9.qm9_table.cache_clear()


def test_qm9_dft_frames_are_energy_only_b3lyp_electronic_energies(qm9_fixture, tmp_path):
    import pandas as pd

    config = DatagenConfig(
        seed=20261124,
        molecule={"enabled": False},
        material={"enabled": False},
        molecule_dft={"enabled": True, "molecules": 8, "molecules_per_shard": 5},
    )
    manifest = generate(config, out=tmp_path / "dft", progress=False)
    assert manifest["complete"] and manifest["domains"][DFT_DOMAIN]["frames"] == 8
    assert "B3LYP" in manifest["methods"][DFT_DOMAIN]
    frames = [f for p in sorted((tmp_path / "dft" / DFT_DOMAIN).glob("*.extxyz")) for f in read(p, ":")]
    table = pd.read_csv(FIXTURE).set_index("Index")
    assert len(frames) == 8 and len({f.info["group"] for f in frames}) == 8
    for frame in frames:
        row = table.loc[int(frame.info["name"].split("-")[1])]
        assert frame.info["domain"] == DFT_DOMAIN and "REF_forces" not in frame.arrays
        assert frame.info["REF_energy"] == pytest.approx((row.InternalEnergy_0K_au - row.ZPVE_au) * Hartree, abs=1e-9)
        assert frame.info["qm9_U0_eV"] == pytest.approx(row.InternalEnergy_0K_au * Hartree, abs=1e-9)
        assert len(frame) == len(eval(row.Elements))  # noqa: S307 - the fixture's own list literal
        assert frame.info["split"] in ("train", "val", "test")
    # the same molecule as an xTB molecule of another recipe (same seed) lands in the same split as its DFT frame
    xtb = DatagenConfig(
        seed=20261124,
        molecule={"nci_molecules": 0, "qm9_molecules": 12, "include_g2": False},
        material={"enabled": False},
    )
    splits = _splits(xtb)
    assert len(splits) == 12 and all(splits[f.info["group"]] == f.info["split"] for f in frames)


def test_qm9_xtb_molecules_start_at_the_b3lyp_geometry(qm9_fixture, tmp_path):
    from triscale.foundation.datagen import molecule_conformers

    entries = qm9.qm9_molecules(12, 3, "xtb")
    assert len(entries) == 12 and {e["source"] for e in entries} == {"QM9"}
    water = next(e for e in entries if e["elements"] == ["H", "O"])
    (atoms,), kind = molecule_conformers(water, 2, 0)
    assert kind == "qm9" and atoms.get_chemical_formula() == "H2O"
    assert 0.95 < atoms.get_distance(0, 1) < 0.98  # B3LYP O-H, not an ETKDG guess


@pytest.mark.slow
def test_molecules_wide_keeps_every_base_heldout_molecule_heldout():
    """The real recipes: shared molecules have one split; NCI molecules of the two recipes are disjoint."""
    base = load_config(CONFIGS / "base.yaml")
    base.material.enabled = False
    wide = load_config(CONFIGS / "molecules-wide.yaml")
    base_splits, wide_splits = _splits(base), _splits(wide)
    shared = set(base_splits) & set(wide_splits)
    assert all(base_splits[g] == wide_splits[g] for g in shared)
    heldout = {g for g, s in base_splits.items() if s != "train"}
    assert len(heldout) > 150
    wide_entries = [e for s in make_plan(wide) for e in s["entries"]]
    nci_wide = {e["group"] for e in wide_entries if e["source"] == "NCI"}
    nci_base = {e["group"] for s in make_plan(base) for e in s["entries"] if e["source"] == "NCI"}
    assert len(nci_base) == 1650 and not nci_wide & nci_base  # the rest of the NCI set, none of base's
    assert len(wide_entries) > 15_000 and len(nci_wide) > 2_500
    assert np.mean([s != "train" for s in wide_splits.values()]) == pytest.approx(0.2, abs=0.02)
