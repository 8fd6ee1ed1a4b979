"""The pretraining loop on a tiny EMT-labelled dataset: it learns, checkpoints, resumes and exports a loadable model."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

import triscale.foundation.pretrain as pretrain_module
from triscale.foundation.model import FoundationModel
from triscale.foundation.pretrain import PretrainRecipe, lr_factor, pretrain


def _emt_frames(n: int, seed: int) -> list:
    """Rattled and strained Cu/Al cells labelled by ASE's EMT (energy, forces, stress in ASE units)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        symbol, a = (("Cu", 3.6), ("Al", 4.05))[i % 2]
        atoms = bulk(symbol, "fcc", a=a * (1 + rng.uniform(-0.03, 0.03)), cubic=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.info.update(
            REF_energy=atoms.get_potential_energy(),
            REF_stress=atoms.get_stress(voigt=True),
            domain="material",
            group=f"fcc:{symbol}",
            split="val" if i % 5 == 4 else "train",
        )
        atoms.arrays["REF_forces"] = atoms.get_forces()
        atoms.calc = None
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("emt") / "emt.extxyz"
    write(path, _emt_frames(20, seed=0), format="extxyz")
    return path


def _recipe(data, out_dir, **overrides) -> PretrainRecipe:
    settings = dict(
        data=[str(data)],
        out_dir=str(out_dir),
        model=dict(hidden_channels=8, num_layers=1, num_radial=4, cutoff=4.0, head_hidden_channels=8),
        batch_size=4,
        max_steps=40,
        lr=5e-3,
        warmup_steps=2,
        eval_every=20,
        checkpoint_every=10,
        max_eval_structures=10,
    )
    settings.update(overrides)
    return PretrainRecipe(**settings)


def test_pretrain_learns_and_exports(emt_data, tmp_path):
    torch_state = torch.random.get_rng_state()
    final = pretrain(_recipe(emt_data, tmp_path / "run"))
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # seeded init is forked: caller RNG untouched
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_forces_mae_meV_per_A" in r]
    assert len(evals) == 2 and evals[-1]["val_forces_mae_meV_per_A"] < evals[0]["val_forces_mae_meV_per_A"]
    model = FoundationModel.from_pretrained(str(final))
    assert model.config.pretraining["steps"] == 40
    assert sorted(model.config.elements) == [13, 29]
    metrics = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert metrics["val/material"]["n_structures"] == 4
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 0


def test_pretrain_resumes_where_it_stopped(emt_data, tmp_path, monkeypatch):
    """A run killed right after its step-20 checkpoint and resumed ends with the weights of an uninterrupted run."""
    straight = FoundationModel.from_pretrained(str(pretrain(_recipe(emt_data, tmp_path / "a"))))

    real_checkpoint = pretrain_module._checkpoint

    def checkpoint_then_die(accelerator, state_dir, progress_path, step, seconds):
        real_checkpoint(accelerator, state_dir, progress_path, step, seconds)
        if step == 20:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(pretrain_module, "_checkpoint", checkpoint_then_die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_recipe(emt_data, tmp_path / "b"))
    monkeypatch.setattr(pretrain_module, "_checkpoint", real_checkpoint)
    progress = json.loads((tmp_path / "b" / "progress.json").read_text())
    assert progress["step"] == 20
    resumed = FoundationModel.from_pretrained(str(pretrain(_recipe(emt_data, tmp_path / "b"))))
    for (name, p), q in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_lr_schedule_warms_up_and_decays_over_the_time_budget():
    recipe = PretrainRecipe(data=["x"], max_steps=1000, warmup_steps=10, max_minutes=10.0, lr=1e-3, min_lr_ratio=0.1)
    assert lr_factor(recipe, 0, 0.0) == pytest.approx(0.1)
    assert lr_factor(recipe, 10, 0.0) == pytest.approx(1.0)
    # half the wall-time budget gone at step 20: the schedule follows time, not steps
    assert lr_factor(recipe, 20, 300.0) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-6)
    assert lr_factor(recipe, 20, 600.0) == pytest.approx(0.1)


def test_init_from_starts_at_the_given_weights(emt_data, tmp_path):
    first = pretrain(_recipe(emt_data, tmp_path / "a"))
    # one step at a negligible learning rate: the exported weights are the starting weights
    second = pretrain(_recipe(emt_data, tmp_path / "b", max_steps=1, lr=1e-12, init_from=str(first)))
    a = FoundationModel.from_pretrained(str(first))
    b = FoundationModel.from_pretrained(str(second))
    fresh = FoundationModel(a.config)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-8, msg=name)
    assert any(not torch.allclose(p, r) for p, r in zip(a.parameters(), fresh.parameters()))
    other = _recipe(emt_data, tmp_path / "c", max_steps=1, init_from=str(first))
    other.model["hidden_channels"] = 16
    with pytest.raises((ValueError, RuntimeError)):
        pretrain(other)


@pytest.mark.slow  # two 2-process launches (accelerate + gloo on CPU) and one in-process run: ~1-2 min wall
def test_two_processes_match_one_process_and_resume(emt_data, tmp_path):
    """``accelerate launch`` with 2 processes and the same global batch: the same losses and final weights as one
    process (RTOL), one metrics.jsonl and checkpoint written by the main process, and a resume that goes on."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    pytest.importorskip("accelerate")
    rtol = 1e-4  # float32 model; the processes sum the same terms in another order
    root = Path(__file__).resolve().parents[2]
    flat = dict(warmup_steps=0, min_lr_ratio=1.0, eval_every=12, checkpoint_every=3)  # constant lr: resumable
    pretrain(_recipe(emt_data, tmp_path / "1", max_steps=12, **flat))
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(_recipe(emt_data, tmp_path / "2", **flat).model_dump(mode="json")))

    def launch(steps: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port),
               "-m", "triscale.cli", "pretrain", "--config", str(config), "--max-steps", str(steps)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]

    launch(6)
    assert json.loads((tmp_path / "2" / "progress.json").read_text())["step"] == 6
    launch(12)  # resumes at step 6
    assert json.loads((tmp_path / "2" / "progress.json").read_text())["step"] == 12
    rows = {d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "12"}
    first = [r for r in rows["2"] if r["step"] == 1]
    assert len(first) == 1  # one writer
    assert first[0]["loss"] == pytest.approx(rows["1"][0]["loss"], rel=rtol)
    one = json.loads((tmp_path / "1" / "test_metrics.json").read_text())["val/material"]
    two = json.loads((tmp_path / "2" / "test_metrics.json").read_text())["val/material"]
    for key in [k for k in one if "_mae_" in k] or ["missing"]:
        assert two[key] == pytest.approx(one[key], rel=rtol), key
    a = FoundationModel.from_pretrained(str(tmp_path / "1" / "final")).state_dict()
    b = FoundationModel.from_pretrained(str(tmp_path / "2" / "final")).state_dict()
    for name, t in a.items():
        if t.is_floating_point():
            assert torch.allclose(b[name], t, rtol=rtol, atol=1e-6), name
