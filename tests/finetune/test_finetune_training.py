"""Training runs: loss goes down, resume continues exactly, E0 refit, replay, clear data errors, property heads."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_testdata import emt_frames

from triscale.finetune import DatasetError, FinetuneRecipe, finetune
from triscale.finetune import data as D

ROOT = Path(__file__).resolve().parents[2]


def _epochs(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["lora", "heads", "full"])
def test_training_lowers_the_loss(recipe, method, tmp_path):
    metrics = finetune(recipe(method=method, epochs=6, lr=1e-2, plots=method == "lora"))
    rows = _epochs(tmp_path / "out")
    assert rows[0]["epoch"] == 0  # the base model with refitted E0, before any step
    start, best = rows[0]["val_weighted_loss"], min(r["val_weighted_loss"] for r in rows[1:])
    # a tiny head on a random encoder can only do a little; adapting the encoder does much more
    assert best < (0.999 if method == "heads" else 0.8) * start, [r["val_weighted_loss"] for r in rows]
    assert metrics["train"]["forces_mae_meV_per_A"] > 0
    meta = json.loads((tmp_path / "out" / "triscale_adapter.json").read_text())
    assert meta["method"] == method and meta["base"]["sha256"] and meta["data"]["n_structures"] == 24
    if method == "lora":
        assert (tmp_path / "out" / "parity.png").stat().st_size > 1000
        assert (tmp_path / "out" / "learning_curve.png").stat().st_size > 1000


def test_resume_continues_exactly(recipe, tmp_path):
    """4 epochs in one go == 2 epochs, 'interrupted', then resumed to 4 (constant schedule, same seed)."""
    from safetensors.torch import load_file

    whole = recipe(out=str(tmp_path / "whole"), epochs=4, schedule="constant", patience=100)
    finetune(whole)
    first = recipe(out=str(tmp_path / "split"), epochs=2, schedule="constant", patience=100)
    finetune(first)
    progress = json.loads((tmp_path / "split" / "state" / "progress.json").read_text())
    assert progress["epoch"] == 2
    finetune(first.model_copy(update={"epochs": 4}), resume=True)
    assert [r["epoch"] for r in _epochs(tmp_path / "split")] == [0, 1, 2, 3, 4]
    a = load_file(str(tmp_path / "whole" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "split" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # --fresh starts over
    finetune(first.model_copy(update={"epochs": 1}), resume=False)
    assert [r["epoch"] for r in _epochs(tmp_path / "split")] == [0, 1]


def _with_offsets(model, frames, offsets):
    """Frames relabelled as base prediction + per-element offsets (so the exact E0 change is known)."""
    from triscale.foundation import TriScaleCalculator

    calc = TriScaleCalculator(model, domain="molecule", dtype="float64")
    out = []
    for atoms, res in zip(frames, calc.predict(frames), strict=True):
        atoms = atoms.copy()
        atoms.info["REF_energy"] = res["energy"] + sum(offsets[s] for s in atoms.get_chemical_symbols())
        atoms.arrays["REF_forces"] = res["forces"]
        out.append(atoms)
    return out


def test_e0_refit_recovers_per_element_offsets(base_model):
    from triscale.foundation.training import record_to_graph

    offsets = {"H": 0.3, "C": -1.2, "O": 2.5}
    frames = _with_offsets(base_model, emt_frames(["CH3CH2OH", "CH3OH", "H2O", "CH4", "CO2"], 3, seed=1), offsets)
    records = D.records_from_atoms(frames)
    graphs = [record_to_graph(r, base_model.config.cutoff, 0) for r in records]
    e0, info = D.refit_reference_energies(base_model.double(), graphs, 0)
    base_model.float()
    assert info["mode"] == "least_squares" and info["rank"] == 3
    for symbol, z in (("H", 1), ("C", 6), ("O", 8)):
        assert abs(e0[z] - float(base_model.atomic_energies[0, z]) - offsets[symbol]) < 1e-5
    assert e0[29] == float(base_model.atomic_energies[0, 29])  # absent element keeps the base value
    assert info["mae_after_eV_per_atom"] < 1e-5 < info["mae_before_eV_per_atom"]


def test_e0_refit_single_composition_is_a_total_shift(base_model):
    from triscale.foundation.training import record_to_graph

    frames = _with_offsets(base_model, emt_frames(["CH3CH2OH"], 5, seed=2), {"H": 0.3, "C": -1.2, "O": 2.5})
    graphs = [record_to_graph(r, base_model.config.cutoff, 0) for r in D.records_from_atoms(frames)]
    e0, info = D.refit_reference_energies(base_model.double(), graphs, 0)
    base_model.float()
    assert info["mode"] == "single_composition" and "only the total" in info["note"]
    delta = {z: e0[z] - float(base_model.atomic_energies[0, z]) for z in (1, 6, 8)}
    total = 6 * delta[1] + 2 * delta[6] + delta[8]
    assert abs(total - (6 * 0.3 + 2 * -1.2 + 2.5)) < 1e-5  # the determined quantity is exact
    assert abs(delta[1] - delta[6]) < 1e-12 and abs(delta[6] - delta[8]) < 1e-12  # split evenly per atom


def test_replay_is_farthest_point_sampled_and_labelled_by_the_base(recipe, base_model, tmp_path):
    from triscale.finetune.recipe import ReplayOptions

    replay, info = D.build_replay(
        base_model, ReplayOptions(enabled=True, n_structures=6, source="builtin"), ["molecule", "material"], 0
    )
    assert 6 <= len(replay) <= 7 and info["n_candidates"] > 7  # slots rounded per domain
    assert any(bool(g["pbc"].all()) for g in replay) and any(not bool(g["pbc"].any()) for g in replay)
    for g in replay:
        assert torch.isfinite(g["REF_energy"]).all() and torch.isfinite(g["REF_forces"]).all()
    features = np.array([[0.0], [1.0], [0.1], [5.0], [4.9]])
    assert D.farthest_point_sampling(features, 3) == [0, 3, 1]
    metrics = finetune(
        recipe(epochs=2, replay={"enabled": True, "n_structures": 4, "per_batch": 2, "source": "builtin"})
    )
    assert metrics["epochs"] == 2


# --- clear errors before any training ---------------------------------------------------------------------
def _write(path, frames):
    from ase.io import write

    write(path, frames, format="extxyz")
    return str(path)


def _run_bad(recipe, tmp_path, frames, match):
    data = _write(tmp_path / "bad.extxyz", frames)
    with pytest.raises(DatasetError, match=match):
        finetune(recipe(data=data))
    assert not (tmp_path / "out" / "state").exists()  # nothing was trained


def test_missing_forces(recipe, tmp_path):
    frames = emt_frames(["CH3CH2OH"], 12, seed=3)
    for atoms in frames[3:5]:
        del atoms.arrays["REF_forces"]
    _run_bad(recipe, tmp_path, frames, r"structure 3: missing forces(.|\n)*structure 4: missing forces")


def test_unknown_element(recipe, tmp_path):
    frames = emt_frames(["CH3CH2OH"], 11, seed=4) + emt_frames(["NH3"], 1, seed=4)
    _run_bad(recipe, tmp_path, frames, r"elements unknown to the base model: N \(1 structures\)")


def test_non_finite_energy(recipe, tmp_path):
    frames = emt_frames(["CH3CH2OH"], 12, seed=5)
    frames[7].info["REF_energy"] = float("nan")
    _run_bad(recipe, tmp_path, frames, r"frame 7.*non-finite")


def test_mismatched_force_length(recipe, tmp_path):
    frames = emt_frames(["CH3CH2OH"], 12, seed=6)
    frames[2].info["REF_forces"] = np.zeros(3 * 8)  # 8 rows for 9 atoms
    del frames[2].arrays["REF_forces"]
    _run_bad(recipe, tmp_path, frames, r"frame 2.*REF_forces has shape")


def test_too_few_structures(recipe, tmp_path):
    _run_bad(recipe, tmp_path, emt_frames(["CH3CH2OH"], 4, seed=7), r"too few structures: 4")


def test_validate_records_lists_every_problem(base_model):
    good = D.records_from_atoms(emt_frames(["H2O"], 3, seed=8))
    good[0]["REF_forces"] = good[0]["REF_forces"][:2]
    good[1]["positions"] = [[0, 0, float("inf")]] * 3
    good[2]["REF_energy"] = None
    with pytest.raises(DatasetError) as err:
        D.validate_records(good, base_model.config.supported_elements, min_structures=2)
    text = str(err.value)
    assert "structure 0: forces have 2 rows, expected 3" in text
    assert "structure 1: non-finite" in text
    assert "structure 2: missing energy" in text


def test_units_are_converted_at_the_boundary():
    from ase import units

    rows = D.records_from_atoms(emt_frames(["H2O"], 1, seed=9))
    out = D.convert_units(rows, "kcal/mol", "Bohr")
    assert np.isclose(out[0]["REF_energy"], rows[0]["REF_energy"] * units.kcal / units.mol)
    assert np.allclose(out[0]["positions"], np.asarray(rows[0]["positions"]) * units.Bohr)
    f = np.asarray(rows[0]["REF_forces"]) * units.kcal / units.mol / units.Bohr
    assert np.allclose(out[0]["REF_forces"], f)


# --- property heads ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["frozen", "lora"])
def test_property_head(recipe, tmp_path, encoder, base_model):
    from ase.io import write

    from triscale.finetune import load_property_model

    frames = emt_frames(["CH3CH2OH", "CH3OH", "H2O", "CH4"], 5, seed=10)
    for atoms in frames:  # an intensive, learnable target: mean atomic number plus a geometry term
        atoms.info["gap"] = float(atoms.numbers.mean() + 0.1 * np.linalg.norm(atoms.positions, axis=1).mean())
    write(tmp_path / "gap.extxyz", frames)
    out = tmp_path / f"prop-{encoder}"
    rec = recipe(
        data=str(tmp_path / "gap.extxyz"),
        out=str(out),
        property={"key": "gap", "encoder": encoder, "unit": "eV"},
        epochs=25,
        lr=1e-2,
        batch_size=5,
        plots=True,
    )
    metrics = finetune(rec)
    rows = _epochs(out)
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"], [r["train_loss"] for r in rows]
    assert metrics["train"]["mae"] < np.std([a.info["gap"] for a in frames])
    model = load_property_model(out, base=base_model)
    values = model.predict(frames[:4])
    assert values.shape == (4,) and np.isfinite(values).all()
    again = load_property_model(out, base=base_model).predict(frames[:4])
    assert np.array_equal(values, again)
    assert (out / "parity.png").exists()


def test_attention_pooling_is_intensive_and_invariant(base_model):
    from ase.build import molecule

    from triscale.finetune.property import PropertyModel

    with torch.random.fork_rng():
        torch.manual_seed(3)
        encoder = copy.deepcopy(base_model)  # .double() must not convert the shared fixture
        head = PropertyModel(encoder, encoder.config.domain_index("molecule"), 16, "attention").double()
        head.target_mean.fill_(2.0)
    water = molecule("H2O")
    far = water.copy()
    far.positions += [100.0, 0, 0]  # two waters beyond the cutoff: the same intensive value as one
    pair = water + far
    shuffled = pair[[4, 1, 3, 0, 5, 2]]
    one, two, perm = head.predict([water]), head.predict([pair]), head.predict([shuffled])
    assert np.allclose(one, two, atol=1e-10) and np.allclose(two, perm, atol=1e-10)
    rotated = water.copy()
    rotated.rotate(73, "x")
    assert np.allclose(head.predict([rotated]), one, atol=1e-8)


def test_property_committee(recipe, tmp_path, base_model):
    from ase.io import write

    from triscale.finetune import load_property_model
    from triscale.finetune.property import PropertyCommittee

    frames = emt_frames(["CH3CH2OH", "CH3OH", "H2O", "CH4"], 5, seed=12)
    for atoms in frames:
        atoms.info["gap"] = float(atoms.numbers.mean() + 0.1 * np.linalg.norm(atoms.positions, axis=1).mean())
    write(tmp_path / "gap.extxyz", frames)
    out = tmp_path / "gap-committee"
    rec = recipe(
        data=str(tmp_path / "gap.extxyz"),
        out=str(out),
        property={"key": "gap", "unit": "eV"},
        committee=3,
        epochs=8,
        lr=1e-2,
        batch_size=5,
        val_fraction=0.3,
    )
    metrics = finetune(rec)
    assert metrics["committee"] == 3 and len(metrics["members"]) == 3
    assert metrics["val"]["mean_std"] > 0 and metrics["val"]["n_structures"] == 6
    committee = load_property_model(out, base=base_model)
    assert isinstance(committee, PropertyCommittee) and len(committee) == 3
    assert committee.shared_encoder  # frozen members: one encoder pass for all heads
    mean, std = committee.predict(frames[:4], return_std=True)
    members = np.stack(
        [load_property_model(out / f"member-{k}", base=base_model).predict(frames[:4]) for k in range(3)]
    )
    assert np.allclose(mean, members.mean(0), atol=1e-10) and np.allclose(std, members.std(0), atol=1e-10)
    assert (std > 0).all()  # bootstrap samples and seeds differ
    lo, hi = committee.interval(mean, std)  # calibrated on the validation split
    assert (lo < mean).all() and (hi > mean).all()


# --- recipes and CLI --------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "finetune").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_validate(path):
    from triscale.finetune import load_recipe

    recipe = load_recipe(path, data="x.extxyz", out="runs/x")
    assert isinstance(recipe, FinetuneRecipe)


def test_recipe_rejects_unknown_fields():
    with pytest.raises(ValueError, match="rnak"):
        FinetuneRecipe(data="a", out="b", lora={"rnak": 4})


def test_cli_reports_data_errors(tmp_path, base_dir):
    from typer.testing import CliRunner

    from triscale.cli import app

    data = _write(tmp_path / "few.extxyz", emt_frames(["H2O"], 3, seed=11))
    result = CliRunner().invoke(
        app, ["finetune", "--data", data, "--out", str(tmp_path / "o"), "--base", str(base_dir), "--quiet"]
    )
    assert result.exit_code == 2
    assert "too few structures" in result.output


def test_property_from_csv_and_ase_db_input(recipe, tmp_path, base_model):
    from ase.db import connect
    from ase.io import write

    from triscale.finetune import load_property_model

    frames = emt_frames(["CH3CH2OH", "CH3OH", "H2O"], 4, seed=12)
    lines = ["file,gap"]
    for i, atoms in enumerate(frames):
        write(tmp_path / f"m{i}.xyz", atoms, format="xyz")
        lines.append(f"m{i}.xyz,{2.0 + 0.1 * i}")
    (tmp_path / "gaps.csv").write_text("\n".join(lines) + "\n")
    finetune(recipe(data=str(tmp_path / "gaps.csv"), out=str(tmp_path / "gap"), property={"key": "gap"}, epochs=2))
    assert load_property_model(tmp_path / "gap", base=base_model).predict(frames[:2]).shape == (2,)
    # energies and forces from an ASE database (labels in the stored single-point results)
    from ase.calculators.singlepoint import SinglePointCalculator

    with connect(tmp_path / "data.db") as db:
        for atoms in frames:
            a = atoms.copy()
            a.calc = SinglePointCalculator(a, energy=atoms.info["REF_energy"], forces=atoms.arrays["REF_forces"])
            db.write(a)
    metrics = finetune(recipe(data=str(tmp_path / "data.db"), out=str(tmp_path / "db"), epochs=1))
    assert metrics["train"]["n_structures"] + metrics["val"]["n_structures"] == 12
