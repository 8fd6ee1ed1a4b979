"""TriScaleCalculator contract: clear errors on bad input, committees, dtype hygiene, the predict command."""

import json

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import InputError
from typer.testing import CliRunner

from triscale.cli import app
from triscale.foundation import FoundationConfig, FoundationModel, TriScaleCalculator


def _model(seed: int = 0, **config) -> FoundationModel:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FoundationModel(FoundationConfig(hidden_channels=16, num_layers=2, num_radial=8, **config)).eval()


@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms(), "no atoms"),
        (Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "non-finite"),
        (Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=np.zeros((3, 3)), pbc=True), "degenerate"),
        (Atoms("HU", positions=[[0, 0, 0], [1.5, 0, 0]]), "unsupported element"),
    ],
)
def test_bad_structures_give_clear_input_errors(atoms, message):
    calc = TriScaleCalculator(_model(elements=[1, 6, 8]))
    atoms.calc = calc
    with pytest.raises(InputError, match=message) as info:
        atoms.get_potential_energy()
    assert isinstance(info.value, ValueError)  # also catchable as a plain ValueError


def test_element_without_labels_in_the_chosen_domain_is_refused(tmp_path):
    model = _model(elements=[1, 8, 26], domain_elements={"molecule": [1, 8], "material": [8, 26]})
    model.save_pretrained(tmp_path)  # the per-domain coverage survives config.json
    reloaded = FoundationModel.from_pretrained(str(tmp_path)).eval()
    feo = Atoms("FeO", positions=[[0, 0, 0], [0, 0, 1.6]])
    feo.calc = TriScaleCalculator(reloaded)
    with pytest.raises(InputError, match=r"Fe have no 'molecule'-domain training data.*\['material'\]"):
        feo.get_potential_energy()
    feo.calc = TriScaleCalculator(reloaded, domain="material")
    assert np.isfinite(feo.get_potential_energy())
    water = molecule("H2O")
    water.calc = TriScaleCalculator(reloaded)
    assert np.isfinite(water.get_potential_energy())


def test_unknown_domain_and_dtype_are_rejected():
    with pytest.raises(ValueError, match="unknown domain"):
        TriScaleCalculator(_model(), domain="plasma")
    with pytest.raises(ValueError, match="dtype"):
        TriScaleCalculator(_model(), dtype="float16")


def test_domain_follows_periodicity_unless_given():
    calc = TriScaleCalculator(_model())
    assert calc.domain_of(molecule("H2O")) == "molecule"
    assert calc.domain_of(bulk("Cu")) == "material"
    assert TriScaleCalculator(_model(), domain="molecule").domain_of(bulk("Cu")) == "molecule"
    # the two domains really are different heads
    a = bulk("Cu", "fcc", a=3.6)
    a.calc = TriScaleCalculator(_model(), domain="molecule")
    e_mol = a.get_potential_energy()
    a.calc = TriScaleCalculator(_model(), domain="material")
    assert abs(a.get_potential_energy() - e_mol) > 1e-6


def test_global_dtype_untouched_and_results_float64():
    before = torch.get_default_dtype()
    atoms = molecule("CH4")
    atoms.calc = TriScaleCalculator(_model(), dtype="float64")
    forces = atoms.get_forces()
    assert torch.get_default_dtype() == before
    assert forces.dtype == np.float64


def test_small_molecules_run_on_one_thread_and_the_setting_is_restored(monkeypatch):
    from triscale.foundation.calculator import SMALL_SYSTEM_ATOMS

    model = _model()
    seen = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (seen.append(torch.get_num_threads()), forward(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = molecule("CH4")
        large = bulk("Cu", cubic=True) * (2, 2, 2)  # 32 atoms
        assert len(small) < SMALL_SYSTEM_ATOMS <= len(large)
        for atoms in (small, large):
            atoms.calc = TriScaleCalculator(model)
            atoms.get_forces()
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_committee_mean_and_std():
    atoms = molecule("CH3OH")
    same = TriScaleCalculator([_model(0), _model(0)])
    atoms.calc = same
    atoms.get_potential_energy()
    assert same.results["energy_std"] == 0.0
    assert np.all(same.results["forces_std"] == 0.0)
    members = [_model(0), _model(1), _model(2)]
    committee = TriScaleCalculator(members, dtype="float64")
    atoms.calc = committee
    energy = atoms.get_potential_energy()
    singles = []
    for m in members:
        atoms.calc = TriScaleCalculator(m, dtype="float64")
        singles.append(atoms.get_potential_energy())
    assert energy == pytest.approx(np.mean(singles), abs=1e-10)
    assert committee.results["energy_std"] == pytest.approx(np.std(singles), abs=1e-10)
    assert committee.results["energy_std"] > 0


def test_predict_command_on_a_saved_model(tmp_path):
    model_dir = tmp_path / "model"
    _model().save_pretrained(model_dir)
    xyz = tmp_path / "mols.xyz"
    from ase.io import write

    write(xyz, [molecule("H2O"), molecule("CH4")])
    result = CliRunner().invoke(app, ["predict", str(xyz), "--model", str(model_dir), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["formula"] for r in rows] == ["H2O", "CH4"]
    assert all(np.isfinite(r["energy_eV"]) for r in rows)


def test_predict_command_reports_missing_and_malformed_files(tmp_path):
    model_dir = tmp_path / "model"
    _model().save_pretrained(model_dir)
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\nnot a frame\nH 0 0\n")
    for path, message in [(tmp_path / "nope.xyz", "no such file"), (bad, "cannot read")]:
        result = CliRunner().invoke(app, ["predict", str(path), "--model", str(model_dir)])
        assert result.exit_code != 0
        assert message in str(result.output) + str(result.exception)
