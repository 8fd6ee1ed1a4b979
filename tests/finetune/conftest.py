"""Shared fixtures: a tiny random base model saved to disk and small EMT-labelled datasets written as extxyz."""

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from finetune_testdata import emt_frames  # noqa: E402,F401  (re-exported for the test modules)

ELEMENTS = [1, 6, 8, 29]  # H C O Cu


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    from triscale.foundation import FoundationConfig, FoundationModel

    config = FoundationConfig(
        hidden_channels=16, num_layers=2, num_radial=8, cutoff=4.0, head_hidden_channels=8, elements=ELEMENTS
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = FoundationModel(config)
        with torch.no_grad():  # non-trivial base E0 so that the refit has something to change
            model.atomic_energies.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("base") / "tiny"
    model.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def base_model(base_dir):
    from triscale.foundation.checkpoints import load_checkpoint

    return load_checkpoint(base_dir)


@pytest.fixture(scope="session")
def ethanol_file(tmp_path_factory):
    from ase.io import write

    path = tmp_path_factory.mktemp("data") / "ethanol.extxyz"
    write(path, emt_frames(["CH3CH2OH"], 24, seed=0))
    return path


@pytest.fixture
def recipe(base_dir, ethanol_file, tmp_path):
    """A fast recipe factory: tiny model, a few epochs, no plots/progress unless asked."""
    from triscale.finetune import FinetuneRecipe

    def make(**kw):
        args = {
            "data": str(ethanol_file),
            "out": str(tmp_path / "out"),
            "base": str(base_dir),
            "epochs": 3,
            "batch_size": 6,
            "progress": False,
            "plots": False,
            "val_fraction": 0.2,
        }
        args.update(kw)
        return FinetuneRecipe(**args)

    return make
