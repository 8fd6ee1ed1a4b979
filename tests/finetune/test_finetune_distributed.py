"""Fine-tuning on two processes (``accelerate launch``, gloo on CPU) against one process with the same global batch:
the same losses, one metrics.jsonl and one checkpoint written (by the main process), and a resume that continues."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-4  # float32 model; the two processes sum the same terms in another order


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    # accelerate 1.x starts N CPU processes through torchrun with --multi_gpu (--cpu alone starts one); without
    # CUDA they join a gloo group
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "triscale.cli", "finetune", "--config", str(config), "--out", str(out), "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # two 2-process launches (~10 s of CPU each) and one in-process run; ~2 min wall on shared cores
def test_two_processes_match_one_and_resume(recipe, tmp_path):
    pytest.importorskip("accelerate")
    from triscale.finetune.trainer import finetune

    settings = {"epochs": 3, "batch_size": 8, "schedule": "constant"}  # 19 train graphs: batches 8, 8, 3
    one = finetune(recipe(**settings, out=str(tmp_path / "one")))
    base = recipe(**settings).model_dump(mode="json")
    config = tmp_path / "recipe.yaml"
    two = tmp_path / "two"
    config.write_text(yaml.safe_dump({**base, "epochs": 2}))
    first = _launch(config, two, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads(first.stdout)["epochs"] == 2  # one summary: only the main process prints
    config.write_text(yaml.safe_dump(base))  # raise the epochs: the run resumes at epoch 2
    second = _launch(config, two, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout)
    assert (summary["epochs"], summary["steps"]) == (one["epochs"], one["steps"]) == (3, 9)
    progress = json.loads((two / "state" / "progress.json").read_text())
    assert (progress["epoch"], progress["step"]) == (3, 9)

    rows_one, rows_two = _rows(tmp_path / "one"), _rows(two)
    assert [r["epoch"] for r in rows_two] == [r["epoch"] for r in rows_one] == [0, 1, 2, 3]  # each row once
    for a, b in zip(rows_one, rows_two, strict=True):
        for key in ("train_loss", "val_loss", "train_energy_mae_meV_per_atom", "val_forces_mae_meV_per_A"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=RTOL), (a["epoch"], key)
    assert rows_two[1]["train_loss"] != rows_two[3]["train_loss"]  # it trained
    assert summary["val"]["energy_mae_meV_per_atom"] == pytest.approx(one["val"]["energy_mae_meV_per_atom"], rel=RTOL)
    assert (two / "adapter_model.safetensors").exists() or (two / "triscale_weights.safetensors").exists()
