"""benchmarks/pareto.py on a tiny EMT-labelled data set: frame selection by split, training by CPU budget, scoring,
timing, the winner rule and the table. MACE-small is trained too where its venv exists (else that part is skipped)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
MACE_PYTHON = os.environ.get("TRISCALE_MACE_PYTHON", "/work/venvs/mace/bin/python")


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("pareto_bench", BENCH / "pareto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pareto = _load()


def _labelled(atoms, domain: str, group: str, split: str):
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    atoms.info.update(
        domain=domain, group=group, split=split, REF_energy=float(atoms.get_potential_energy()), config_type="rattle"
    )
    atoms.arrays["REF_forces"] = atoms.get_forces()
    if atoms.pbc.any():
        atoms.info["REF_stress"] = atoms.get_stress()
    atoms.calc = None
    return atoms


def _shards(root: Path) -> list[Path]:
    """Two datagen-like directories: EMT materials (Cu, Al; held-out group CuAl, and AuCu whose Au is unseen) and
    EMT molecules (CH4, H2O train; CH3OH held out). A shard without its .json summary is unfinished and ignored."""
    from ase.build import bulk, molecule
    from ase.io import write

    rng = np.random.default_rng(0)
    mat, mol = root / "material", root / "molecule"
    mat.mkdir(parents=True)
    mol.mkdir(parents=True)
    frames = []
    for group, make, split in (
        ("fcc:Cu", lambda: bulk("Cu", "fcc", a=3.6) * (2, 2, 1), "train"),
        ("fcc:Al", lambda: bulk("Al", "fcc", a=4.05) * (2, 2, 1), "train"),
        ("L1:CuAl", lambda: _alloy(bulk("Cu", "fcc", a=3.8) * (2, 2, 1), "Al"), "test"),
        ("L1:AuCu", lambda: _alloy(bulk("Cu", "fcc", a=3.9) * (2, 2, 1), "Au"), "test"),
    ):
        for _ in range(4):
            atoms = make()
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            frames.append(_labelled(atoms, "material", group, split))
    write(mat / "shard-00000.extxyz", frames[:8], format="extxyz")
    write(mat / "shard-00001.extxyz", frames[8:], format="extxyz")
    for p in ("shard-00000", "shard-00001"):
        (mat / f"{p}.json").write_text("{}")
    frames = []
    for name, split in (("CH4", "train"), ("H2O", "train"), ("CH3OH", "test")):
        for _ in range(4):
            atoms = molecule(name)
            atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
            frames.append(_labelled(atoms, "molecule", name, split))
    write(mol / "shard-00000.extxyz", frames, format="extxyz")
    (mol / "shard-00000.json").write_text("{}")
    write(mol / "shard-00001.extxyz", frames[:2], format="extxyz")  # unfinished: no summary json
    return [mol, mat]


def _alloy(atoms, other: str):
    atoms.symbols[::2] = other
    return atoms


def test_select_frames_by_split_and_coverage(tmp_path):
    from ase.io import read

    data = _shards(tmp_path / "src")
    summary = pareto.select_frames(data, [5, 5], tmp_path / "data")
    assert summary["shards"][str(data[0])] == ["shard-00000.extxyz"]  # the unfinished shard is not used
    assert summary["train"]["molecule"] == {"frames": 8, "atoms": 20 + 12, "groups": 2}
    assert summary["train"]["material"]["groups"] == 2
    assert summary["heldout"]["molecule"]["frames"] == 4
    assert summary["heldout"]["material"] == {"frames": 4, "atoms": 16, "groups": 1}  # AuCu: Au unseen
    assert summary["heldout_excluded_unseen_element"] == 4
    heldout = read(tmp_path / "data" / "heldout.extxyz", index=":")
    assert {a.info["group"] for a in heldout} == {"CH3OH", "L1:CuAl"}
    train = read(tmp_path / "data" / "train.extxyz", index=":")
    assert {a.info["split"] for a in train} == {"train"}
    np.testing.assert_allclose(
        train[0].arrays["REF_forces"], read(data[0] / "shard-00000.extxyz", index=0).arrays["REF_forces"]
    )
    # the first shard only of the material directory: no held-out material frames
    summary = pareto.select_frames(data, [5, 1], tmp_path / "data1")
    assert summary["heldout"]["material"]["frames"] == 0


def test_winner_rule():
    mace = {
        "atoms_per_s": {"cell": 100.0, "molecule": 50.0},
        "heldout": {"molecule": {"forces_mae_meV_per_A": 100.0}, "material": {"forces_mae_meV_per_A": 50.0}},
    }

    def row(name, cell, mol, f_mol, f_mat):
        return {
            "name": name,
            "atoms_per_s": {"cell": cell, "molecule": mol},
            "heldout": {"molecule": {"forces_mae_meV_per_A": f_mol}, "material": {"forces_mae_meV_per_A": f_mat}},
        }

    slow = row("slow", 900.0, 600.0, 80.0, 40.0)  # accurate, 9x on the cell: not enough
    sloppy = row("sloppy", 2000.0, 1000.0, 111.0, 40.0)  # 20x, but 1.11x MACE's molecule force error
    assert pareto.winner([slow, sloppy], mace) == "none at this budget"
    ok = row("ok", 1000.0, 500.0, 110.0, 55.0)  # exactly 10x and 1.1x
    better = row("better", 1500.0, 800.0, 90.0, 45.0)
    assert pareto.winner([slow, ok, sloppy], mace) == "ok"
    assert pareto.winner([ok, better], mace) == "better"
    assert pareto.winner([ok], None).startswith("not decided")


@pytest.mark.slow  # ~1 CPU-minute: two trainings and MACE-small each in a fresh process (imports dominate)
def test_harness_end_to_end(tmp_path):
    """Two grid points for ~2 CPU-seconds each (and MACE-small where its venv exists): a complete table."""
    data = _shards(tmp_path / "src")
    out = tmp_path / "out"
    argv = ["--data", *map(str, data), "--shards", "5", "--minutes", "0.03", "--points", "c64-l2-r5", "c64-l3-r4-t16"]
    argv += ["--repeats", "1", "--threads", "1", "--jobs", "3", "--out", str(out)]
    with_mace = Path(MACE_PYTHON).exists()
    if with_mace:
        argv += ["--peer-python", MACE_PYTHON]
    result = pareto.main(argv)
    assert [r["name"] for r in result["rows"]] == ["c64-l2-r5", "c64-l3-r4-t16"]
    small, short = result["rows"]
    assert small["num_layers"] == 2 and short["cutoff_A"] == 4.0 and short["tensor_channels"] == 16
    assert small["params"] < short["params"]  # one layer fewer, no rank-2 features
    for r in result["rows"]:
        assert r["steps"] >= 1
        assert 1.8 <= r["trained_cpu_seconds"] <= 30  # the CPU budget stopped it (one step may overrun)
        assert r["heldout"]["molecule"]["n_structures"] == 4
        assert r["heldout"]["material"]["n_structures"] == 4
        assert 0 < r["heldout"]["material"]["forces_mae_meV_per_A"] < 1e5
        assert r["atoms_per_s"]["cell"] > 0 and r["atoms_per_s"]["molecule"] > 0
        recipe = (out / "points" / r["name"] / "recipe.yaml").read_text()
        assert "budget_clock: cpu" in recipe and "max_minutes: 0.03" in recipe
    saved = json.loads((out / "pareto.json").read_text())
    assert saved["rows"][0]["params"] == small["params"]
    table = (out / "pareto.md").read_text()
    assert "| c64-l2-r5 |" in table and "Winner" in table
    if with_mace:
        mace = result["mace"]
        assert mace["steps"] >= 1 and set(mace["heldout"]) == {"molecule", "material"}
        assert mace["heldout"]["material"]["n_structures"] == 4
        assert mace["atoms_per_s"]["cell"] > 0
        assert "| MACE-small |" in table
        assert result["winner"] in ("none at this budget", "c64-l2-r5", "c64-l3-r4")
    else:
        assert result["winner"].startswith("not decided")
    # A rerun reuses the trained points and the selected frames (no retraining: the logs are untouched).
    log = out / "points" / "c64-l2-r5" / "train.log"
    before = log.stat().st_mtime_ns
    pareto.main(argv)
    assert log.stat().st_mtime_ns == before
    # Another budget retrains (only the point asked for here).
    again = pareto.main([*argv[:6], "0.02", "--points", "c64-l2-r5", *argv[10:18]])  # without MACE
    assert log.stat().st_mtime_ns > before
    assert "max_minutes: 0.02" in log.with_name("recipe.yaml").read_text()
    assert again["rows"][0]["steps"] >= 1 and again["mace"] is None


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--shards", "1", "2", "3"], None),
        (["--peer-python", "/nonexistent/python"], None),
        (["--cell-element", "Ni"], "no material frame with ['Ni']"),  # refused before any training
        (["--data", "/nonexistent"], "not a directory"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, bad, message, capsys):
    data = _shards(tmp_path / "src")
    with pytest.raises(SystemExit) as err:
        pareto.main(["--data", *map(str, data), "--out", str(tmp_path / "out"), *bad])
    if message:
        assert message in str(err.value)
    assert not (tmp_path / "out" / "points").exists()


def test_point_recipes_are_valid_pretrain_recipes(tmp_path):
    from pydantic import ValidationError

    from triscale.foundation.pretrain import PretrainRecipe

    for name, (channels, layers, cutoff, tensors) in pareto.GRID.items():
        recipe = PretrainRecipe(**pareto.point_recipe(name, tmp_path / "data", tmp_path / name, 2.0, 0))
        assert (recipe.model["hidden_channels"], recipe.model["num_layers"], recipe.model["cutoff"]) == (
            channels,
            layers,
            cutoff,
        )
        # the l <= 1 points' recipes carry no tensor key (their trained runs are reused by recipe equality)
        assert recipe.model.get("tensor_channels", 0) == tensors and ("tensor_channels" in recipe.model) == bool(
            tensors
        )
        assert recipe.budget_clock == "cpu" and recipe.max_minutes == 2.0 and recipe.num_threads == 1
    assert PretrainRecipe(data=["x"]).budget_clock == "wall"  # the default is unchanged
    with pytest.raises(ValidationError, match="budget_clock"):
        PretrainRecipe(data=["x"], budget_clock="gpu")
