"""The shipped Hamiltonian heads: load offline, predict close to the reference on structures they never saw, stay
equivariant after training, and work as the predict_hamiltonian tool."""

import numpy as np
import pytest
from ase.build import molecule
from scipy.spatial.transform import Rotation

from triscale.quantum.data import rattled_conformers
from triscale.quantum.electronic import electronic_structure
from triscale.quantum.hamiltonian import load_hamiltonian_model, predict_hamiltonian


@pytest.fixture(scope="module")
def water_model():
    return load_hamiltonian_model("b3lyp-water")


@pytest.fixture(scope="module")
def gfn2_model():
    return load_hamiltonian_model("gfn2-hcno")


def test_water_head_against_pyscf(water_model):
    atoms = rattled_conformers(molecule("H2O"), 1, np.random.default_rng(123))[0]  # a fresh conformer
    pred = predict_hamiltonian(atoms, water_model)
    ref = electronic_structure(atoms, "dft", functional="b3lyp", basis="6-31g", use_cache=False)
    assert pred.method == "dft/b3lyp/6-31g" and pred.fock_Eh.shape == (13, 13)
    assert np.abs(pred.fock_Eh - ref.fock_Eh).mean() * 27211.4 < 25  # meV; ~4 meV on the held-out test split
    occ = slice(0, 5)
    assert np.abs(pred.orbital_energies_eV[occ] - ref.orbital_energies_eV[occ]).mean() < 0.05
    assert abs(pred.gap_eV - ref.gap_eV) < 0.2


def test_trained_heads_are_equivariant(water_model, gfn2_model):
    for model, name in ((water_model, "H2O"), (gfn2_model, "CH3CONH2")):
        atoms = rattled_conformers(molecule(name), 1, np.random.default_rng(7))[0]
        rot = Rotation.random(random_state=11).as_matrix()
        turned = atoms.copy()
        turned.positions = atoms.positions @ rot.T
        f0, f1 = model.fock(atoms), model.fock(turned)
        u = model.layout.rotation(atoms.numbers, rot)
        assert np.abs(f1 - u @ f0 @ u.T).max() < 1e-5 * np.abs(f0).max()


def test_gfn2_head_on_an_unseen_molecule(gfn2_model):
    test_molecules = gfn2_model.config.metadata["metrics"]["test_molecules"]
    assert "H2CO" in test_molecules  # formaldehyde was held out of training and validation
    atoms = rattled_conformers(molecule("H2CO"), 1, np.random.default_rng(5))[0]
    pred = predict_hamiltonian(atoms, gfn2_model)
    ref = electronic_structure(atoms, "gfn2-xtb", use_cache=False)
    assert np.abs(pred.fock_Eh - ref.fock_Eh).mean() * 27211.4 < 100  # meV
    assert abs(pred.gap_eV - ref.gap_eV) < 1.0


def test_predict_hamiltonian_tool(call, ws):
    r = call("predict_hamiltonian", structure_id="water", model="b3lyp-water", compare_with_reference=True)
    assert r.imitates == "dft/b3lyp/6-31g" and r.n_ao == 13
    assert r.h_mae_meV < 25 and abs(r.gap_error_eV) < 0.2 and r.occupied_orbital_cosine > 0.99
    assert r.gap_eV == pytest.approx(r.reference_gap_eV + r.gap_error_eV, abs=1e-4)
    with np.load(ws.root / r.npz_path) as z:
        assert z["fock_Eh"].shape == (13, 13)
    lo, hi = r.gap_interval_eV  # the shipped head's calibrated interval
    assert lo < r.gap_eV < hi
    from triscale.tools import ToolInputError

    with pytest.raises(ToolInputError, match="covers H O only"):
        call("predict_hamiltonian", structure_id="methane", model="b3lyp-water")
    with pytest.raises(ToolInputError, match="No Hamiltonian model"):
        call("predict_hamiltonian", structure_id="water", model="no-such-model")


def test_a_head_refuses_other_encoder_weights(tmp_path):
    # without its saved encoder, a head falls back to the named checkpoint, whose weights differ (triscale-base was
    # retrained after these heads were fitted): the fingerprint check refuses instead of predicting nonsense
    import shutil

    from triscale.quantum.hamiltonian import CHECKPOINT_DIR

    for f in ("config.json", "head.safetensors"):
        shutil.copy(CHECKPOINT_DIR / "b3lyp-water" / f, tmp_path / f)
    with pytest.raises(ValueError, match="other encoder weights"):
        load_hamiltonian_model(tmp_path)


@pytest.mark.parametrize("name", ["gfn2-hcno", "b3lyp-water"])
def test_shipped_heads_carry_a_calibrated_gap_interval(name):
    from triscale.quantum.hamiltonian import gap_conformal

    conformal = gap_conformal(name)
    assert conformal is not None and conformal.alpha == 0.1 and conformal.meta["quantity"] == "gap_eV"
    # measured when it was calibrated: coverage on the head's test structures within the range split conformal allows
    lo, hi = conformal.meta["test_coverage_expected_range_99"]
    assert lo <= conformal.meta["test_coverage"] <= hi
    assert gap_conformal("no-such-head") is None
