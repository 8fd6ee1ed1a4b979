"""The Hamiltonian trainer end to end on the smoke recipe: data, molecule-wise split, training, shipping, and the
conformal gap calibration written next to the shipped head."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from triscale.quantum.hamiltonian import gap_conformal, load_hamiltonian_model, predict_hamiltonian
from triscale.quantum.train import TrainRecipe, split_indices, train

ROOT = Path(__file__).resolve().parents[2]


def test_smoke_recipe_trains_ships_and_calibrates(tmp_path):
    recipe = replace(
        TrainRecipe.from_yaml(ROOT / "configs" / "quantum" / "smoke.yaml"),
        data=str(tmp_path / "data.npz"),
        out_dir=str(tmp_path / "run"),
        ship_to=str(tmp_path / "head"),
        max_epochs=2,
    )
    metrics = train(recipe, log=lambda msg: None)
    assert metrics["n_test"] > 0 and metrics["n_val"] > 0
    # no molecule is in two splits
    assert not set(metrics["test_molecules"]) & set(metrics["train_molecules"])
    assert not set(metrics["val_molecules"]) & set(metrics["train_molecules"])
    head = tmp_path / "head"
    conformal = gap_conformal(head)
    assert conformal is not None and conformal.n == metrics["n_val"]
    assert json.loads((head / "conformal.json").read_text())["meta"]["n_test"] == metrics["n_test"]
    # the shipped head loads and predicts; the data set regenerates to the same split
    from triscale.quantum.data import load_dataset

    data = load_dataset(recipe.data)
    _, idx_val, idx_test = split_indices(recipe, data, log=lambda msg: None)
    assert len(idx_val) == metrics["n_val"] and len(idx_test) == metrics["n_test"]
    from ase import Atoms

    atoms = Atoms(numbers=data.numbers[0], positions=data.positions[0])
    pred = predict_hamiltonian(atoms, load_hamiltonian_model(head))
    assert np.isfinite(pred.fock_Eh).all() and pred.gap_eV is not None
