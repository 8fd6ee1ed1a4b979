"""The shared training loop: exact resume (with and without EMA), refused resumes (other data, corrupt progress,
truncated checkpoint) and one metrics.jsonl schema for energy and property training."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_testdata import emt_frames

from triscale.finetune import finetune
from triscale.finetune.loop import ROW_KEYS, LoopSettings, ResumeError, TrainLoop, graphs_sha256


def _rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _toy(out, epochs, ema_decay=None, data_seed=0, resume=True, max_steps=None):
    """A linear regression trained by the loop; returns (model, progress, rows)."""
    g = torch.Generator().manual_seed(data_seed)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1 * torch.randn(
        40, generator=g, dtype=torch.float64
    )
    train, val = (x[:30], y[:30]), (x[30:], y[30:])
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 1).double()
    settings = LoopSettings(
        epochs=epochs, learning_rate=0.05, schedule="constant", ema_decay=ema_decay, max_steps=max_steps
    )
    data = [{"x": train[0], "y": train[1]}, {"x": val[0], "y": val[1]}]
    loop = TrainLoop(model, out, settings, seed=3, steps_per_epoch=4, data_sha256=graphs_sha256(data))

    def batches(generator):
        order = torch.randperm(30, generator=generator)
        for s in range(0, 30, 8):
            yield order[s : s + 8]

    def loss(idx):
        err = model(train[0][idx]).squeeze(-1) - train[1][idx]
        return (err**2).mean(), {"abs": float(err.detach().abs().mean())}

    def evaluate():
        with torch.no_grad():
            return {"val_loss": float(((model(val[0]).squeeze(-1) - val[1]) ** 2).mean())}

    progress = loop.fit(batches, loss, evaluate, resume=resume)
    return model, progress, _rows(out)


@pytest.mark.parametrize("ema_decay", [None, 0.8])
def test_loop_resumes_bit_exactly(tmp_path, ema_decay):
    whole, p_whole, rows_whole = _toy(tmp_path / "whole", 8, ema_decay)
    _toy(tmp_path / "split", 3, ema_decay)
    split, p_split, rows_split = _toy(tmp_path / "split", 8, ema_decay)
    assert p_whole["stopped"] == p_split["stopped"] == "epochs" and p_split["step"] == 32
    assert torch.equal(whole.weight, split.weight) and torch.equal(whole.bias, split.bias)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_whole]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_split]
    assert [r["epoch"] for r in rows_split] == list(range(9)) and rows_whole[-1]["train_abs"] > 0
    assert all(set(ROW_KEYS) <= set(r) for r in rows_whole[1:])


def test_loop_ema_changes_the_selected_weights(tmp_path):
    plain, _, _ = _toy(tmp_path / "plain", 4)
    ema, _, _ = _toy(tmp_path / "ema", 4, ema_decay=0.9)
    assert not torch.equal(plain.weight, ema.weight)  # the EMA weights were evaluated and kept
    max_steps, progress, rows = _toy(tmp_path / "steps", 4, max_steps=6)
    assert progress["stopped"] == "max_steps" and progress["step"] == 6 and rows[-1]["epoch"] == 2


def test_loop_refuses_other_data_and_unreadable_state(tmp_path):
    _toy(tmp_path / "run", 2)
    with pytest.raises(ResumeError, match=r"other data.*--fresh"):
        _toy(tmp_path / "run", 4, data_seed=1)
    _toy(tmp_path / "run", 4, data_seed=1, resume=False)  # --fresh starts over on the new data
    state = tmp_path / "run" / "state"
    good = (state / "progress.json").read_text()
    (state / "progress.json").write_text(good[: len(good) // 2])
    with pytest.raises(ResumeError, match=r"progress.json is unreadable \(JSONDecodeError"):
        _toy(tmp_path / "run", 6, data_seed=1)
    (state / "progress.json").write_text(json.dumps({**json.loads(good), "epoch": "two"}))
    with pytest.raises(ResumeError, match="progress.json is corrupt"):
        _toy(tmp_path / "run", 6, data_seed=1)
    (state / "progress.json").write_text(json.dumps({"epoch": 1}))
    with pytest.raises(ResumeError, match="missing step"):
        _toy(tmp_path / "run", 6, data_seed=1)


# --- through `finetune` -----------------------------------------------------------------------------------
def test_resume_with_other_data_is_refused(recipe, tmp_path, base_dir):
    from ase.io import write
    from typer.testing import CliRunner

    from triscale.cli import app

    finetune(recipe(epochs=1))
    other = tmp_path / "other.extxyz"
    write(other, emt_frames(["CH3CH2OH"], 24, seed=99))
    with pytest.raises(ResumeError, match="other data"):
        finetune(recipe(data=str(other), epochs=2))
    rows = _rows(tmp_path / "out")
    assert [r["epoch"] for r in rows] == [0, 1]  # nothing was mixed in or lost
    args = ["finetune", "--data", str(other), "--out", str(tmp_path / "out"), "--base", str(base_dir), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--epochs", "2"])
    assert result.exit_code == 2 and "other data" in result.output and "--fresh" in result.output


def test_truncated_checkpoint_is_refused(recipe, tmp_path):
    finetune(recipe(epochs=1))
    state = tmp_path / "out" / "state"
    for name in ("weights.safetensors", "optimizer.pt"):
        saved = (state / name).read_bytes()
        (state / name).write_bytes(saved[: len(saved) // 2])
        with pytest.raises(ResumeError, match=r"checkpoint is unreadable"):
            finetune(recipe(epochs=2))
        (state / name).write_bytes(saved)
    (state / "progress.json").write_text("{not json")
    with pytest.raises(ResumeError, match=r"progress.json is unreadable"):
        finetune(recipe(epochs=2))


def test_energy_and_property_training_share_the_metrics_schema(recipe, tmp_path):
    from ase.io import write

    energy = finetune(recipe(epochs=2, out=str(tmp_path / "energy")))
    frames = emt_frames(["CH3CH2OH", "CH3OH", "H2O"], 4, seed=5)
    for atoms in frames:
        atoms.info["gap"] = float(atoms.numbers.mean())
    write(tmp_path / "gap.extxyz", frames)
    prop = finetune(
        recipe(data=str(tmp_path / "gap.extxyz"), out=str(tmp_path / "prop"), property={"key": "gap"}, epochs=2)
    )
    for out, extra in (("energy", "val_energy_mae_meV_per_atom"), ("prop", "val_property_mae")):
        rows = [r for r in _rows(tmp_path / out) if r["epoch"] > 0]
        assert [r["epoch"] for r in rows] == [1, 2]
        assert all(set(ROW_KEYS) | {extra} <= set(r) for r in rows), rows
        assert all(np.isfinite(r["train_loss"]) and r["lr"] > 0 for r in rows)
        progress = json.loads((tmp_path / out / "state" / "progress.json").read_text())
        assert len(progress["data_sha256"]) == 64 and progress["epoch"] == 2
    for m in (energy, prop):
        assert m["stop_reason"] == "epochs" and m["best_epoch"] in (1, 2)


def test_property_head_resumes_exactly(recipe, tmp_path):
    """A property head through the same loop: 4 epochs == 2 epochs, then resumed to 4 (constant schedule)."""
    from ase.io import write
    from safetensors.torch import load_file

    frames = emt_frames(["CH3CH2OH", "CH3OH", "H2O"], 4, seed=6)
    for atoms in frames:
        atoms.info["gap"] = float(atoms.numbers.mean() + 0.1 * np.linalg.norm(atoms.positions, axis=1).mean())
    write(tmp_path / "gap.extxyz", frames)
    kw = {"data": str(tmp_path / "gap.extxyz"), "property": {"key": "gap"}, "schedule": "constant", "patience": 100}
    finetune(recipe(out=str(tmp_path / "whole"), epochs=4, **kw))
    finetune(recipe(out=str(tmp_path / "split"), epochs=2, **kw))
    finetune(recipe(out=str(tmp_path / "split"), epochs=4, **kw))
    a = load_file(str(tmp_path / "whole" / "property_head.safetensors"))
    b = load_file(str(tmp_path / "split" / "property_head.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "whole")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in _rows(tmp_path / "split")]
    assert [r["epoch"] for r in strip] == [1, 2, 3, 4]


def test_loop_resumes_a_checkpoint_without_data_hash(tmp_path):
    """Checkpoints written before the data hash existed still resume (the hash is recorded from then on)."""
    _toy(tmp_path / "old", 2)
    path = tmp_path / "old" / "state" / "progress.json"
    progress = json.loads(path.read_text())
    del progress["data_sha256"]
    path.write_text(json.dumps(progress))
    _, resumed, rows = _toy(tmp_path / "old", 3)
    assert resumed["epoch"] == 3 and [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert json.loads(path.read_text())["data_sha256"] == resumed["data_sha256"]
