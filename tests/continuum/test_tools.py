"""simulate_pde / predict_pde: outputs on disk, analytic checks, clear errors, and the registry binding."""

import numpy as np
import pytest

from triscale.continuum.tools import ContinuumInputError, predict_pde, simulate_pde


@pytest.mark.parametrize(
    ("pde", "kwargs", "tol"),
    [
        ("navier_stokes_2d", {"initial_condition": "taylor_green", "viscosity": 0.01, "resolution": 32}, 1e-12),
        ("burgers_1d", {"initial_condition": "cole_hopf", "viscosity": 0.02, "resolution": 256, "t_final": 0.5}, 1e-8),
        ("heat", {"dim": 1, "resolution": 128}, 1e-12),
        ("advection_diffusion", {"resolution": 48, "velocity": [0.3, -0.1]}, 1e-12),
        ("darcy_2d", {"initial_condition": "manufactured", "resolution": 65}, 1e-3),
    ],
)
def test_simulate_pde_analytic(pde, kwargs, tol, tmp_path):
    r = simulate_pde(pde, out_dir=tmp_path, n_snapshots=3, **kwargs)
    assert r.analytic_max_abs_error is not None and r.analytic_max_abs_error < tol
    with np.load(r.npz_path) as z:
        fields = z["fields"]
        assert fields.shape[0] == (1 if pde == "darcy_2d" else 3)
        assert r.final_stats.max == pytest.approx(float(fields[-1].max()))
        assert len(z["times"]) == len(r.times)
    with open(r.png_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_simulate_pde_random_navier_stokes(tmp_path):
    r = simulate_pde("ns", resolution=32, t_final=0.5, seed=3, out_dir=tmp_path)
    assert r.pde == "navier_stokes_2d" and r.field_name == "vorticity"
    assert r.parameters["viscosity"] == 1e-3 and r.n_time_steps > 0
    assert r.analytic_max_abs_error is None
    r2 = simulate_pde("ns", resolution=32, t_final=0.5, seed=3, out_dir=tmp_path)
    assert r2.npz_path != r.npz_path  # never overwrites
    assert r2.final_stats == r.final_stats  # seeded


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({"pde": "navier-stokes-3d"}, "unknown PDE.*available"),
        ({"pde": "burgrs"}, "did you mean burgers_1d"),
        ({"pde": "navier_stokes_2d", "viscosity": -1e-3}, "viscosity must be positive"),
        ({"pde": "burgers_1d", "viscosity": 0.0}, "viscosity must be positive"),
        ({"pde": "navier_stokes_2d", "resolution": 1024}, r"outside \[16, 256\]"),
        ({"pde": "darcy_2d", "resolution": 4}, "outside"),
        ({"pde": "heat", "t_final": 0.0}, "t_final"),
        ({"pde": "heat", "viscosity": 0.1}, "use diffusivity"),
        ({"pde": "advection_diffusion", "velocity": [1.0]}, "2 components"),
        ({"pde": "burgers_1d", "initial_condition": "taylor_green"}, "cole_hopf"),
        ({"pde": "navier_stokes_2d", "dim": 3}, "leave dim unset"),
    ],
)
def test_simulate_pde_rejects_bad_arguments(args, match, tmp_path):
    with pytest.raises(ContinuumInputError, match=match):
        simulate_pde(**args, out_dir=tmp_path)


def test_predict_pde_with_solver_check(tmp_path):
    r = predict_pde("ns2d-gfno", seed=5, check_with_solver=True, out_dir=tmp_path)
    assert r.task == "ns2d" and r.resolution == 32
    assert r.rel_l2_error_vs_solver is not None and r.rel_l2_error_vs_solver < 0.3
    assert r.speedup_over_solver is not None and r.speedup_over_solver > 0
    with np.load(r.npz_path) as z:
        assert set(z.files) >= {"input", "prediction", "reference"}
        assert z["prediction"].shape == (32, 32)


def test_predict_pde_from_npz_and_errors(tmp_path):
    good = tmp_path / "in.npz"
    np.savez(good, input=np.random.default_rng(0).normal(size=128))
    r = predict_pde("burgers1d-fno", input_npz=str(good), out_dir=tmp_path)
    assert r.prediction_stats.std > 0 and r.rel_l2_error_vs_solver is None
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((64, 64)))
    with pytest.raises(ContinuumInputError, match="expects an input of shape"):
        predict_pde("ns2d-fno", input_npz=str(bad), out_dir=tmp_path)
    with pytest.raises(ContinuumInputError, match="has no array"):
        predict_pde("ns2d-fno", input_npz=str(bad), input_key="w", out_dir=tmp_path)
    with pytest.raises(ContinuumInputError, match="shipped operators"):
        predict_pde("ns2d-transformer", out_dir=tmp_path)


def test_registry_binding(tmp_path):
    from triscale.tools import ToolInputError, Workspace, call_tool, get_tool

    ws = Workspace(tmp_path / "ws", isolate=False)
    try:
        assert get_tool("simulate_pde").category == "continuum"
        r = call_tool("simulate_pde", {"pde": "heat", "resolution": 32, "t_final": 0.1}, ws)
        assert r.tool == "simulate_pde" and r.npz_path.startswith("fields/")
        assert (ws.root / r.npz_path).is_file()
        p = call_tool("predict_pde", {"model_name": "darcy2d-fno", "seed": 1}, ws)
        assert (ws.root / p.png_path).is_file()
        with pytest.raises(ToolInputError, match="viscosity must be positive"):
            call_tool("simulate_pde", {"pde": "navier_stokes_2d", "viscosity": -1}, ws)
        with pytest.raises(ToolInputError, match="outside the workspace"):
            call_tool("simulate_pde", {"pde": "heat", "out_dir": "/etc"}, ws)
    finally:
        ws.close()


def test_predict_pde_conformal_bound_and_ood_note(tmp_path):
    """The conformal bound and band come back with the prediction; a rotated input to the (anisotropically
    trained) FNO gets a small input p-value, a note to run the solver, and its error exceeds the bound."""
    r = predict_pde("ns2d-fno", seed=5, check_with_solver=True, out_dir=tmp_path)
    assert r.confidence == 0.9 and 0 < r.conformal_error_bound_rel_l2 < 0.1
    assert r.input_pvalue > 0.01 and r.within_conformal_bound is True
    with np.load(r.npz_path) as z:
        np.testing.assert_allclose(z["upper"] - z["prediction"], r.conformal_band_half_width)
        assert np.all(z["lower"] <= z["reference"]) and np.all(z["reference"] <= z["upper"])
    r95 = predict_pde("ns2d-fno", seed=5, confidence=0.95, out_dir=tmp_path)
    assert r95.conformal_error_bound_rel_l2 > r.conformal_error_bound_rel_l2
    rot = predict_pde("ns2d-fno", seed=5, rotate_quarter_turns=1, check_with_solver=True, out_dir=tmp_path)
    assert rot.input_pvalue < 0.01 and any("p-value" in n for n in rot.notes)
    assert rot.within_conformal_bound is False
    g = predict_pde("ns2d-gfno", seed=5, rotate_quarter_turns=1, out_dir=tmp_path)
    assert g.input_pvalue > 0.01  # the equivariant model's input statistic is rotation-invariant
    with pytest.raises(ContinuumInputError, match="confidence"):
        predict_pde("ns2d-fno", confidence=1.5, out_dir=tmp_path)
