"""Checkpoints: bit-identical save/load round trip, and the shipped operators load, predict and keep symmetry."""

import json

import pytest
import torch

from triscale.continuum.data import generate, relative_l2
from triscale.continuum.operators import (
    CHECKPOINT_DIR,
    OperatorConfig,
    build_operator,
    load_operator,
    save_operator,
    shipped_operators,
    transform_field,
)

SHIPPED = ["burgers1d-fno", "darcy2d-fno", "ns2d-fno", "ns2d-gfno"]


@pytest.mark.parametrize(
    "cfg",
    [
        OperatorConfig(dim=1, width=6, modes=4, n_layers=2, proj_width=8, grid="xy", in_mean=0.3, in_std=2.0),
        OperatorConfig(
            width=6,
            modes=4,
            n_layers=2,
            proj_width=8,
            grid="xy",
            padding=3,
            pad_mode="end",
            domain="box",
            out_mean=-1.0,
            out_std=0.5,
        ),
        OperatorConfig(
            kind="gfno",
            group="p4m",
            width=3,
            modes=3,
            n_layers=2,
            proj_width=8,
            grid="boundary",
            padding=2,
            domain="box",
        ),
    ],
)
def test_save_load_round_trip_is_bit_identical(cfg, tmp_path):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_operator(cfg).eval()
        x = torch.randn(2, 1, *([12] * cfg.dim))
    with torch.no_grad():
        before = model(x)
    save_operator(model, tmp_path / "op")
    loaded = load_operator(tmp_path / "op")
    assert loaded.cfg == model.cfg
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    assert json.loads((tmp_path / "op" / "config.json").read_text())["kind"] == cfg.kind


def test_unknown_checkpoint_lists_shipped():
    with pytest.raises(FileNotFoundError, match="ns2d-fno"):
        load_operator("no-such-operator")


def test_shipped_operators_present_and_small():
    assert set(SHIPPED) <= set(shipped_operators())
    for name in shipped_operators():
        size = (CHECKPOINT_DIR / name / "model.safetensors").stat().st_size
        assert size < 2.2e6, f"{name} is {size / 1e6:.1f} MB"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_operator_predicts_fresh_inputs(name):
    model = load_operator(name)
    t = model.cfg.training
    task = model.cfg.task["name"]
    assert t["n_train"] >= 100 and t["epochs"] >= 5
    val = t["best_val_rel_l2"]
    assert val < 0.2
    x, y, _ = generate(task, 4, seed=3)  # neither the training (1) nor the benchmark (2) seed
    with torch.no_grad():
        err = relative_l2(model(x.float()).double(), y).mean()
    assert float(err) < 2 * val + 0.03


def test_shipped_gfno_is_equivariant_and_fno_is_not():
    x, _, _ = generate("ns2d", 2, seed=4)
    errs = {}
    for name in ("ns2d-gfno", "ns2d-fno"):
        m = load_operator(name, dtype=torch.float64)
        with torch.no_grad():
            y = m(x)
            errs[name] = max(
                float((m(transform_field(x, r)) - transform_field(y, r)).norm() / y.norm()) for r in (1, 2, 3)
            )
    assert errs["ns2d-gfno"] < 1e-10
    assert errs["ns2d-fno"] > 1e-3
