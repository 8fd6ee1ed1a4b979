"""Hamiltonian head: the change of basis U (checked on tblite's own Fock matrices), F(R·x) = U F Uᵀ for the
model under random rotations and reflections, symmetry, block placement, save/load, metrics, data."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation

from triscale.quantum.basis import BasisLayout, basis_layout
from triscale.quantum.electronic import electronic_structure
from triscale.quantum.hamiltonian import (
    HamiltonianConfig,
    HamiltonianModel,
    collate_samples,
    load_hamiltonian_model,
    prepare_sample,
)


@pytest.fixture(scope="module")
def encoder():
    from triscale.foundation import FoundationConfig, FoundationModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FoundationModel(FoundationConfig(hidden_channels=16, num_layers=2, num_radial=8)).eval()


def _random_model(encoder, basis="gfn2-xtb", seed=0):
    cfg = HamiltonianConfig(
        basis=basis, encoder_channels=16, channels=8, hidden=16, num_rbf=8, pair_cutoff=6.0, head_layers=1
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = HamiltonianModel(cfg, encoder=encoder).eval()
        with torch.no_grad():  # an untrained head is nearly block-constant; make every path matter
            for p in model.head.parameters():
                p.add_(0.3 * torch.randn_like(p))
            model.head.onsite_ss.normal_()
            model.head.onsite_pp.normal_()
            model.head.scale.fill_(0.2)
    return model


def _rotated(atoms, rot, shift=(0.3, -1.2, 2.0)):
    b = atoms.copy()
    b.positions = atoms.positions @ rot.T + np.asarray(shift)
    return b


@pytest.mark.parametrize("seed", [1, 2])
def test_u_matches_tblite_fock_under_rotation(seed):
    a = molecule("CH3CH2OH")
    rot = Rotation.random(random_state=seed).as_matrix()
    f0 = electronic_structure(a, use_cache=False).fock_Eh
    f1 = electronic_structure(_rotated(a, rot), use_cache=False).fock_Eh
    lay = basis_layout("gfn2-xtb")
    u = lay.rotation(a.numbers, rot)
    np.testing.assert_allclose(f1, u @ f0 @ u.T, atol=1e-7)
    # the same check fails with PySCF's (x, y, z) p order: the test can tell orders apart
    wrong = BasisLayout("wrong", lay.shells, (0, 1, 2)).rotation(a.numbers, rot)
    assert np.abs(f1 - wrong @ f0 @ wrong.T).max() > 1e-2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_model_equivariance_rotations_and_reflections(encoder, seed):
    model = _random_model(encoder, seed=seed)
    a = molecule("CH3CONH2") if seed != 1 else molecule("C4H4O")
    rng = np.random.default_rng(seed)
    a.positions += rng.normal(scale=0.05, size=a.positions.shape)  # no accidental symmetry
    f0 = model.fock(a)
    assert np.abs(f0).max() > 0.1
    np.testing.assert_allclose(f0, f0.T, atol=1e-12)
    for rot in (Rotation.random(random_state=seed + 10).as_matrix(), np.diag([1.0, -1.0, 1.0])):
        f1 = model.fock(_rotated(a, rot))
        u = model.layout.rotation(a.numbers, rot)
        err = np.abs(f1 - u @ f0 @ u.T).max()
        assert err < 1e-5 * np.abs(f0).max(), err
        assert np.abs(f1 - f0).max() > 1e-3  # the prediction does change with orientation


def test_model_equivariance_pyscf_layout(encoder):
    # two s and two p shells per heavy atom (6-31G): the multi-shell read-outs rotate correctly too
    model = _random_model(encoder, basis="pyscf:6-31g", seed=3)
    a = molecule("H2O")
    a.positions += np.array([[0.0, 0.02, 0.01], [0.03, 0.0, 0.0], [0.0, -0.01, 0.02]])
    rot = Rotation.random(random_state=5).as_matrix()
    f0, f1 = model.fock(a), model.fock(_rotated(a, rot))
    assert f0.shape == (13, 13)
    u = model.layout.rotation(a.numbers, rot)
    assert np.abs(f1 - u @ f0 @ u.T).max() < 1e-5 * np.abs(f0).max()


def test_blocks_land_in_the_right_places(encoder):
    model = _random_model(encoder)
    a = molecule("H2O")
    # put one H beyond the pair cutoff of the other: their block must be exactly zero
    a.positions[2] = a.positions[0] + np.array([0.0, 0.0, 5.5])
    f = model.fock(a)
    assert f[4, 5] == 0.0 and f[5, 4] == 0.0  # H...H at 6.2 Å > 6 Å cutoff
    assert f[0, 4] != 0.0
    lay = model.layout
    ao_atom, ao_can = lay.canonical(a.numbers)
    assert list(ao_atom) == [0, 0, 0, 0, 1, 2] and list(ao_can) == [0, 2, 3, 1, 0, 0]
    s = prepare_sample(a.numbers, a.positions, lay, 6.0)
    batch = collate_samples([s, s], lay.block_size)
    assert batch["gather"].shape[0] == 2 * 36 and int(batch["gather"].max()) == batch["gather"].max().item()


def test_save_load_round_trip(encoder, tmp_path):
    model = _random_model(encoder)
    a = molecule("CH3OH")
    model.save(tmp_path / "h")
    back = load_hamiltonian_model(tmp_path / "h", encoder=encoder)
    np.testing.assert_array_equal(back.fock(a), model.fock(a))
    with pytest.raises(FileNotFoundError, match="No Hamiltonian model"):
        load_hamiltonian_model(tmp_path / "missing", encoder=encoder)


def test_unsupported_elements_are_refused(encoder):
    from triscale.quantum.electronic import QuantumInputError

    with pytest.raises(QuantumInputError, match="covers H C N O only"):
        _random_model(encoder).fock(molecule("CH3Cl"))


def test_qh9_metrics_zero_for_exact_and_positive_for_noise():
    from triscale.quantum.metrics import qh9_metrics

    es = electronic_structure(molecule("CH3OH"))
    n_occ = int((es.occupations > 1).sum())
    exact = qh9_metrics(es.fock_Eh, es.fock_Eh, es.overlap, n_occ)
    assert exact["h_mae"] == 0 and exact["eps_occ_mae"] < 1e-12 and exact["psi_cos"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=1e-2, size=es.fock_Eh.shape)
    m = qh9_metrics(es.fock_Eh + 0.5 * (noise + noise.T), es.fock_Eh, es.overlap, n_occ)
    assert m["h_mae"] > 1e-3 and m["eps_occ_mae"] > 1e-4 and m["psi_cos"] < 1.0 and m["gap_err"] > 0


def test_generated_data_round_trip(tmp_path):
    from triscale.quantum.data import g2_molecules, generate, load_dataset, save_dataset

    mols = g2_molecules()
    assert {"H2O", "CH4", "C6H6"} <= set(mols) and all(set(m.numbers) <= {1, 6, 7, 8} for m in mols.values())
    data = generate({"H2O": mols["H2O"], "NH3": mols["NH3"]}, 2, seed=1, log=lambda *_: None)
    assert len(data) == 6 and data.method == "gfn2-xtb"
    back = load_dataset(save_dataset(data, tmp_path / "d.npz"))
    assert back.names == data.names and back.n_occ == [4, 4, 4, 4, 4, 4]
    for f, g in zip(back.fock, data.fock):
        np.testing.assert_array_equal(f, g)
    # conformers differ, are centred and rotated
    assert np.abs(back.positions[1] - back.positions[2]).max() > 0.05
    np.testing.assert_allclose(back.positions[1].mean(axis=0), 0, atol=1e-12)
