"""Every model config we ship (configs/model/*.yaml, random weights) and the shipped checkpoint obey the physics."""

from pathlib import Path

import pytest
import torch
import yaml

from triscale.foundation import FoundationConfig, FoundationModel
from triscale.foundation.checkpoints import available_checkpoints, load_checkpoint
from triscale.foundation.testing import ModelPhysicsTests

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"
MODEL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _random_model(name: str) -> FoundationModel:
    config = FoundationConfig(**yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text()))
    # Local seeding only: the global torch RNG is forked, so tests do not seed the process.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FoundationModel(config).eval()


@pytest.fixture(
    scope="module", params=[f"config:{n}" for n in MODEL_CONFIGS] + [f"shipped:{n}" for n in available_checkpoints()]
)
def model(request):
    kind, name = request.param.split(":")
    return _random_model(name) if kind == "config" else load_checkpoint(name)


class TestPhysics(ModelPhysicsTests):
    pass


def test_there_is_something_to_test():
    assert MODEL_CONFIGS, "no model configs found"
