"""The run says, in plain words, whether fine-tuning beat the base model, and never exports something worse."""

import json

import numpy as np
import torch

from triscale.finetune import FinetuneRecipe, attach_adapters, finetune
from triscale.finetune import trainer as T


def _val_forces(model, recipe_, out):
    """Forces of ``model`` on the run's validation structures (its own split)."""
    from triscale.finetune.adapters import load_base

    base, _ = load_base(recipe_.base)
    data = T.prepare_data(recipe_, base)
    val = [data["graphs"][i] for i in data["split"]["val"]]
    return T.predict_graphs(model, val)["forces"]


def test_verdict_in_metrics_and_console(recipe, tmp_path, capsys):
    rec = recipe(epochs=3, lr=3e-3, select_on="forces", progress=True)
    metrics = finetune(rec)
    verdict = metrics["verdict"]
    assert verdict["improved"] is True, verdict
    assert verdict["message"].startswith("fine-tuning beat the base model")
    assert verdict["ratio"] < 1 and verdict["selected_on"] == "force MAE"
    assert metrics["exported"] == "finetuned"
    on_disk = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert on_disk["verdict"]["message"] == verdict["message"]
    assert "verdict" in capsys.readouterr().err


def test_worse_than_base_is_flagged_and_not_exported(recipe, base_model, tmp_path, capsys):
    """One step at an absurd learning rate wrecks the adapter: the run says so and exports the base model
    (with the refitted E0) instead."""
    rec = recipe(epochs=1, max_steps=1, lr=5.0, schedule="constant", progress=True)
    metrics = finetune(rec)
    verdict = metrics["verdict"]
    assert verdict["improved"] is False, verdict
    assert "did NOT beat the base model" in verdict["message"]
    assert metrics["exported"].startswith("base")
    assert "did NOT beat" in capsys.readouterr().err
    # the exported adapter predicts the base model's forces (E0 does not enter forces)
    tuned = attach_adapters(base_model, tmp_path / "out")
    assert np.allclose(_val_forces(tuned, rec, tmp_path), _val_forces(base_model, rec, tmp_path), atol=1e-6)
    # and the validation error reported for the export is the base model's
    assert metrics["val"]["forces_mae_meV_per_A"] == verdict["base_val"]["forces_mae_meV_per_A"]


def test_verdict_numbers():
    rec = FinetuneRecipe(data="x.extxyz", out="o", select_on="forces")
    base = {"n_structures": 10, "forces_mae_meV_per_A": 200.0, "energy_mae_meV_per_atom": 5.0}
    better = {"n_structures": 10, "forces_mae_meV_per_A": 100.0, "energy_mae_meV_per_atom": 9.0}
    worse = {"n_structures": 4, "forces_mae_meV_per_A": 250.0, "energy_mae_meV_per_atom": 1.0}
    v = T.verdict(base, better, rec)
    assert v["improved"] is True and abs(v["ratio"] - 0.5) < 1e-12 and "200 -> 100 meV/Å" in v["message"]
    v = T.verdict(base, worse, rec)
    assert v["improved"] is False and "noisy" in v["message"]  # 4 validation structures
    v = T.verdict(base, worse, rec.model_copy(update={"select_on": "energy"}))
    assert v["improved"] is True and "energy MAE" in v["message"]
    assert T.verdict(None, None, rec)["improved"] is None


def test_min_val_and_no_early_stopping(recipe, tmp_path):
    rec = FinetuneRecipe(data="x.extxyz", out="o", val_fraction=0.1, min_val=8)
    assert round(T._val_fraction(rec, 80) * 80) == 8
    assert round(T._val_fraction(rec, 40) * 40) == 8
    assert round(T._val_fraction(rec, 20) * 20) == 5  # at most a quarter of the data
    assert T._val_fraction(rec.model_copy(update={"min_val": 0}), 20) == 0.1
    # patience None: the whole schedule runs whatever the validation does
    metrics = finetune(recipe(epochs=3, patience=None, min_val=6, val_fraction=0.1))
    assert metrics["epochs"] == 3 and metrics["stop_reason"] == "epochs"
    assert metrics["val"]["n_structures"] == 6
    assert torch.get_num_threads() >= 1


def test_divergence_stops_with_a_clear_error(recipe):
    """An absurd learning rate makes the loss NaN after the first step: the run stops and says why, instead of
    crashing inside the optimiser or training on NaN."""
    import pytest

    from triscale.finetune.loop import TrainingDiverged

    rec = recipe(epochs=2, max_steps=4, lr=5.0, schedule="constant")
    with pytest.raises(TrainingDiverged, match="Lower lr"):
        finetune(rec)
