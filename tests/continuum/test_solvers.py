"""Reference solvers against analytic solutions, convergence orders and symmetries."""

import math

import numpy as np
import pytest
import torch

from triscale.continuum import analytic, grf, solvers
from triscale.continuum.operators import transform_field


def _rel(a, b):
    return float((a - b).norm() / b.norm())


# ------------------------------------------------------------------------------------------------ Navier-Stokes


@pytest.mark.parametrize("k", [1, 3])
def test_taylor_green_decay(k):
    nu, t = 0.01, 0.7
    w0 = analytic.taylor_green_vorticity(32, 0.0, nu, k=k)
    w = solvers.navier_stokes_2d(w0, t, nu, forcing="none")
    exact = analytic.taylor_green_vorticity(32, t, nu, k=k)
    assert float((w - exact).abs().max()) < 1e-12
    # and it did decay by the analytic factor (not a trivially unchanged field)
    ratio = float(w.abs().max() / w0.abs().max())
    assert ratio == pytest.approx(math.exp(-8 * math.pi**2 * k**2 * nu * t), rel=1e-10)


def _two_mode_field(n):
    x, y = solvers.periodic_grid(n)
    return x, y, torch.cos(2 * math.pi * x) + torch.cos(4 * math.pi * y)


def test_ns_rhs_matches_analytic_jacobian():
    # w = cos 2pi x + cos 4pi y: psi = cos(2pi x)/(4pi^2) + cos(4pi y)/(16pi^2), u.grad w = -1.5 sin 2pi x sin 4pi y
    nu = 0.02
    x, y, w = _two_mode_field(32)
    expected = 1.5 * torch.sin(2 * math.pi * x) * torch.sin(4 * math.pi * y) + nu * (
        -4 * math.pi**2 * torch.cos(2 * math.pi * x) - 16 * math.pi**2 * torch.cos(4 * math.pi * y)
    )
    assert float((solvers.ns_rhs(w, nu) - expected).abs().max()) < 1e-10


def test_ns_integrator_uses_the_same_dynamics():
    # short step: (w(t) - w0)/t -> dw/dt; the nonlinear term is non-zero for this field
    nu, t = 0.02, 1e-4
    _, _, w0 = _two_mode_field(32)
    w = solvers.navier_stokes_2d(w0, t, nu, forcing="none")
    rhs = solvers.ns_rhs(w0, nu)
    assert _rel((w - w0) / t, rhs) < 1e-3


def test_ns_time_convergence_order():
    w0 = 3 * grf.periodic_grf(2, 32, 2, alpha=2.5, tau=7.0, seed=3)
    kw = {"viscosity": 1e-3, "forcing": "symmetric", "cfl": 10.0}
    ref = solvers.navier_stokes_2d(w0, 2.0, dt_max=0.0125, **kw)
    e1 = _rel(solvers.navier_stokes_2d(w0, 2.0, dt_max=0.2, **kw), ref)
    e2 = _rel(solvers.navier_stokes_2d(w0, 2.0, dt_max=0.1, **kw), ref)
    assert e1 > 1e-12
    assert e1 / e2 > 10  # fourth order: ~16


def test_ns_solver_is_rotation_equivariant_with_symmetric_forcing():
    w0 = 3 * grf.periodic_grf(1, 32, 2, alpha=2.5, tau=7.0, anisotropy=(1, 2), seed=5)[0]
    w = solvers.navier_stokes_2d(w0, 1.0, 1e-3, "symmetric")
    for r in (1, 2, 3):
        wr = solvers.navier_stokes_2d(transform_field(w0, r), 1.0, 1e-3, "symmetric")
        assert float((wr - transform_field(w, r)).abs().max()) < 1e-12
    # the FNO paper's forcing is not rotation invariant, so the same check fails there
    wf = solvers.navier_stokes_2d(w0, 1.0, 1e-3, "fno")
    wfr = solvers.navier_stokes_2d(transform_field(w0, 1), 1.0, 1e-3, "fno")
    assert _rel(wfr, transform_field(wf, 1)) > 1e-3


def test_ns_snapshots_and_batching():
    w0 = grf.periodic_grf(3, 16, 2, seed=1)
    out = solvers.navier_stokes_2d(w0, 1.0, 1e-2, times=[0.5, 1.0])
    assert out.shape == (3, 2, 16, 16)
    single = solvers.navier_stokes_2d(w0[1], 1.0, 1e-2)
    assert float((out[1, 1] - single).abs().max()) < 1e-12


def test_ns_rejects_bad_arguments():
    w0 = torch.zeros(16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="viscosity"):
        solvers.navier_stokes_2d(w0, 1.0, 0.0)
    with pytest.raises(ValueError, match="t_final"):
        solvers.navier_stokes_2d(w0, -1.0, 1e-3)
    with pytest.raises(ValueError, match="forcing"):
        solvers.navier_stokes_2d(w0, 1.0, 1e-3, forcing="sideways")


# -------------------------------------------------------------------------------------------- heat / advection


@pytest.mark.parametrize("dim", [1, 2])
def test_gaussian_diffusion_exact(dim):
    kappa, t = 0.01, 0.5
    vel = [0.3, -0.2][:dim]
    u0 = analytic.gaussian_diffusion(64, 0.0, kappa, dim=dim, width=0.08)
    u = solvers.advection_diffusion(u0, t, kappa, velocity=vel, dim=dim)
    exact = analytic.gaussian_diffusion(64, t, kappa, dim=dim, width=0.08, velocity=vel)
    assert float((u - exact).abs().max()) < 1e-12
    assert float(u.max()) < 0.9 * float(u0.max())  # it did spread


def test_advection_by_velocity_field_matches_exact_propagator():
    kappa, t = 0.01, 0.5
    u0 = analytic.gaussian_diffusion(48, 0.0, kappa, width=0.08)
    field = torch.stack([torch.full((48, 48), 0.3), torch.full((48, 48), -0.2)]).double()
    u = solvers.advection_diffusion(u0, t, kappa, velocity=field)
    exact = analytic.gaussian_diffusion(48, t, kappa, width=0.08, velocity=[0.3, -0.2])
    assert float((u - exact).abs().max()) < 1e-6


# ---------------------------------------------------------------------------------------------------- Burgers


def test_burgers_cole_hopf():
    nu, t = 0.02, 0.5
    u0 = analytic.cole_hopf_burgers(256, 0.0, nu)
    u = solvers.burgers_1d(u0, t, nu)
    exact = analytic.cole_hopf_burgers(256, t, nu)
    assert float((u - exact).abs().max()) < 1e-8
    assert _rel(u0, exact) > 0.1  # the solution changed substantially


def test_burgers_conserves_mean_and_reflection_symmetry():
    u0 = grf.periodic_grf(2, 128, 1, alpha=2.0, tau=5.0, sigma=25.0, seed=4) + 0.3
    u = solvers.burgers_1d(u0, 0.5, 0.01)
    assert torch.allclose(u.mean(-1), u0.mean(-1), atol=1e-12)
    # x -> -x, u -> -u (the reflection of the cell-centred grid is a flip of the array)
    ur = solvers.burgers_1d(-torch.flip(u0, dims=(-1,)), 0.5, 0.01)
    assert float((ur + torch.flip(u, dims=(-1,))).abs().max()) < 1e-12


# ------------------------------------------------------------------------------------------------------ Darcy


def test_darcy_manufactured_second_order():
    errs = []
    for n in (17, 33, 65):
        a, f, u_exact = analytic.darcy_manufactured(n)
        u = solvers.darcy_2d(a, f)
        errs.append(float((u - u_exact).abs().max()))
    assert errs[-1] < 1e-3
    for e_coarse, e_fine in zip(errs, errs[1:], strict=False):
        assert 3.5 < e_coarse / e_fine < 4.5


def test_darcy_symmetries_and_validation():
    a = grf.darcy_coefficient(1, 33, seed=2)[0]
    u = solvers.darcy_2d(a)
    assert float(u[0].abs().max()) == 0.0 and float(u[:, -1].abs().max()) == 0.0
    assert float(u[1:-1, 1:-1].min()) > 0  # positive source, zero boundary: u > 0 inside
    for r, s in ((1, False), (2, False), (0, True), (3, True)):
        us = solvers.darcy_2d(transform_field(a, r, s))
        assert float((us - transform_field(u, r, s)).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="positive"):
        solvers.darcy_2d(-a)


# -------------------------------------------------------------------------------------------------------- GRFs


def test_grf_seeding_is_local_and_reproducible():
    state = torch.random.get_rng_state()
    a = grf.periodic_grf(2, 32, 2, seed=11)
    b = grf.periodic_grf(2, 32, 2, seed=11)
    c = grf.periodic_grf(2, 32, 2, seed=12)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grf_variance_and_anisotropy():
    alpha, tau, n = 2.0, 3.0, 32
    u = grf.periodic_grf(400, n, 2, alpha=alpha, tau=tau, seed=0)
    k = np.fft.fftfreq(n, 1.0 / n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    eig = tau ** (2 * alpha - 2) * (4 * np.pi**2 * k2 + tau**2) ** (-alpha)
    eig[0, 0] = 0
    assert float(u.var()) == pytest.approx(eig.sum(), rel=0.1)
    v = grf.periodic_grf(200, n, 2, anisotropy=(1.0, 3.0), seed=0)
    dx = (v.roll(1, -2) - v).square().mean()
    dy = (v.roll(1, -1) - v).square().mean()
    assert float(dx / dy) > 2  # longer correlation length along y


def test_darcy_coefficient_values():
    a = grf.darcy_coefficient(3, 33, seed=0)
    assert set(torch.unique(a).tolist()) == {3.0, 12.0}
