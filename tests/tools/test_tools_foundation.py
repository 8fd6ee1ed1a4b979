"""Tools on the TriScale foundation model (an untrained model saved to a temporary directory)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
foundation = pytest.importorskip("triscale.foundation")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from triscale.foundation import FoundationConfig, FoundationModel

    dirs = []
    for seed in (0, 1):
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # different untrained members for the committee
        model = FoundationModel(FoundationConfig())
        torch.random.set_rng_state(gen_state)
        d = tmp_path_factory.mktemp(f"model{seed}")
        model.save_pretrained(d)
        dirs.append(str(d))
    return dirs


def _direct(model_dir, atoms, dtype="float64"):
    import triscale

    atoms = atoms.copy()
    atoms.calc = triscale.calculator(model_dir, dtype=dtype)
    return atoms.get_potential_energy(), atoms.get_forces()


def test_predict_properties_matches_direct_calculator(ws, call, model_dirs):
    r = call("predict_properties", structure_id="water", model=model_dirs[0])
    e, f = _direct(model_dirs[0], ws.get("st1"))
    assert r.energy_eV == pytest.approx(e, abs=1e-5)
    assert r.max_force_eV_per_A == pytest.approx(np.linalg.norm(f, axis=1).max(), abs=1e-5)
    assert r.method.startswith("triscale/") and r.energy_std_eV is None
    cu = call("build_bulk", name="Cu", cubic=True)
    rc = call(
        "single_point",
        structure_id=cu.structure_id,
        calculator={"method": "triscale", "model": model_dirs[0]},
    )
    assert rc.stress_eV_per_A3 is not None and len(rc.stress_eV_per_A3) == 6


def test_committee_gives_uncertainty(ws, call, model_dirs):
    r = call("predict_properties", structure_id="water", model=model_dirs)
    e0, _ = _direct(model_dirs[0], ws.get("st1"))
    e1, _ = _direct(model_dirs[1], ws.get("st1"))
    assert r.energy_eV == pytest.approx((e0 + e1) / 2, abs=1e-5)
    assert r.energy_std_eV == pytest.approx(abs(e0 - e1) / 2, abs=1e-5)
    assert r.max_force_std_eV_per_A is not None and r.max_force_std_eV_per_A >= 0


def test_foundation_model_drives_optimisation_and_md(ws, call, model_dirs):
    spec = {"method": "triscale", "model": model_dirs[0]}
    opt = call("optimize_geometry", structure_id="water", calculator=spec, steps=5, fmax_eV_per_A=0.05)
    assert opt.n_steps <= 5 and ws.record(opt.structure_id)["method"].startswith("triscale/")
    md = call(
        "molecular_dynamics",
        structure_id=opt.structure_id,
        calculator=spec,
        ensemble="nve",
        steps=10,
        interval=5,
        timestep_fs=0.25,
        temperature_K=100,
    )
    assert md.n_frames == 3


def test_missing_checkpoint_is_a_clear_error(ws, call):
    from triscale.tools import CalculationError

    with pytest.raises(CalculationError, match="Could not load the foundation model 'no-such-model'"):
        call("predict_properties", structure_id="water", model="no-such-model")
