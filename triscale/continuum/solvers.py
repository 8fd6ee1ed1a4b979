"""Reference PDE solvers: pseudo-spectral on periodic grids (torch FFTs, batched, float64), and a finite-difference
Darcy solve (scipy sparse LU).

Conventions
-----------
* Periodic problems live on [0, 1)^d with *cell-centred* points ``x_j = (j + 1/2) / N`` (:func:`periodic_grid`),
  so that ``torch.rot90`` / ``torch.flip`` of a grid array is an exact rotation/reflection of the torus about
  the origin; array axis 0 is x, axis 1 is y (``indexing="ij"``).
* Batched: inputs may carry a leading batch axis; a whole batch shares one adaptive time step.
* Time stepping (Navier–Stokes, Burgers, advection by a velocity field): integrating-factor RK4 — the linear
  viscous/diffusive term is integrated exactly (``exp(-nu |k|^2 dt)``, unconditionally stable), the nonlinear and
  forcing terms by classical RK4 — with a CFL-limited step and 2/3-rule dealiasing of every quadratic product.
* Constant-coefficient heat / advection–diffusion is solved exactly in Fourier space (no time stepping).
* Darcy ``-div(a grad u) = f`` on [0, 1]^2 with ``u = 0`` on the boundary: 5-point finite differences on the
  node grid (``N`` nodes per axis including the boundary), face coefficients by arithmetic averaging.

Units are whatever the caller's are (the benchmarks use the FNO papers' non-dimensional units, domain length 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "periodic_grid",
    "node_grid",
    "ns_forcing",
    "navier_stokes_2d",
    "ns_rhs",
    "burgers_1d",
    "advection_diffusion",
    "darcy_2d",
    "SolverDiverged",
]


class SolverDiverged(RuntimeError):
    """The time integration produced non-finite values or exceeded its step budget."""


def periodic_grid(resolution: int, dim: int = 2, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """Cell-centred coordinates of the periodic grid on [0, 1)^dim (``indexing='ij'``)."""
    x = (torch.arange(resolution, dtype=dtype) + 0.5) / resolution
    if dim == 1:
        return (x,)
    return torch.meshgrid(*([x] * dim), indexing="ij")


def node_grid(resolution: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Node coordinates of the closed unit square (both ends included), ``indexing='ij'``."""
    x = torch.linspace(0.0, 1.0, resolution, dtype=dtype)
    return torch.meshgrid(x, x, indexing="ij")


def ns_forcing(resolution: int, kind: str = "symmetric", amplitude: float = 0.1) -> torch.Tensor:
    """Vorticity forcing on the periodic grid.

    ``symmetric``: ``amplitude (cos 4 pi x + cos 4 pi y)`` (G-FNO's NS-Sym; invariant under 90° rotations);
    ``fno``: ``amplitude (sin 2 pi (x+y) + cos 2 pi (x+y))`` (the FNO paper; not rotation-invariant);
    ``none``: zero.
    """
    x, y = periodic_grid(resolution)
    if kind == "symmetric":
        return amplitude * (torch.cos(4 * math.pi * x) + torch.cos(4 * math.pi * y))
    if kind == "fno":
        return amplitude * (torch.sin(2 * math.pi * (x + y)) + torch.cos(2 * math.pi * (x + y)))
    if kind == "none":
        return torch.zeros_like(x)
    raise ValueError(f"unknown forcing kind {kind!r}; use 'symmetric', 'fno' or 'none'")


# --------------------------------------------------------------------------------------------------- helpers


def _as_batch(u: Any, dim: int, device: torch.device | str | None) -> tuple[torch.Tensor, bool]:
    t = torch.as_tensor(np.asarray(u) if not isinstance(u, torch.Tensor) else u)
    t = t.to(dtype=torch.float64, device=device if device is not None else t.device)
    if t.ndim == dim:
        return t.unsqueeze(0), True
    if t.ndim == dim + 1:
        return t, False
    raise ValueError(f"expected a field of {dim} dimensions (optionally batched), got shape {tuple(t.shape)}")


def _wavenumbers(n: int, dim: int, device) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(k for first derivatives with the Nyquist mode zeroed, k for the Laplacian, 2/3-rule mask) in the rfft
    layout, as angular wavenumbers 2 pi k on a domain of length 1."""
    full = torch.fft.fftfreq(n, d=1.0 / n, dtype=torch.float64, device=device)
    half = torch.fft.rfftfreq(n, d=1.0 / n, dtype=torch.float64, device=device)
    axes = [full] * (dim - 1) + [half]
    grids = torch.meshgrid(*axes, indexing="ij")
    lap_k = [2 * math.pi * g for g in grids]
    nyq = n // 2 if n % 2 == 0 else None
    d_k = [torch.where(g.abs() == nyq, torch.zeros_like(g), g) * 2 * math.pi if nyq else 2 * math.pi * g for g in grids]
    cut = n / 3.0
    mask = torch.ones_like(grids[0], dtype=torch.bool)
    for g in grids:
        mask &= g.abs() < cut
    return d_k, lap_k, mask.to(torch.float64)


def _check_times(t_final: float, times: Sequence[float] | None) -> list[float]:
    if not (t_final > 0 and math.isfinite(t_final)):
        raise ValueError(f"t_final must be a positive number, got {t_final}")
    out = sorted({float(t) for t in (times or [])} | {float(t_final)})
    if out[0] < 0:
        raise ValueError("output times must be >= 0")
    return out


def _integrate_ifrk4(
    u_hat: torch.Tensor,
    lin: torch.Tensor,
    rhs: Callable[[torch.Tensor], tuple[torch.Tensor, float]],
    times: list[float],
    dx: float,
    cfl: float,
    dt_max: float,
    max_steps: int,
    to_real: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """Integrating-factor RK4 for ``du/dt = lin * u + N(u)`` in Fourier space, landing exactly on ``times``.

    ``rhs(u_hat) -> (N(u_hat), max |velocity|)``; the step is ``min(dt_max, cfl dx / max|velocity|)``.
    """
    t = 0.0
    outs: list[torch.Tensor] = []
    steps = 0
    dts: list[float] = []
    for t_next in times:
        while t < t_next - 1e-12 * max(1.0, t_next):
            n1, speed = rhs(u_hat)
            dt = min(dt_max, cfl * dx / max(speed, 1e-12), t_next - t)
            e_half = torch.exp(lin * (dt / 2))
            e_full = e_half * e_half
            k1 = dt * n1
            k2 = dt * rhs(e_half * (u_hat + k1 / 2))[0]
            k3 = dt * rhs(e_half * u_hat + k2 / 2)[0]
            k4 = dt * rhs(e_full * u_hat + e_half * k3)[0]
            u_hat = e_full * u_hat + (e_full * k1 + 2 * e_half * (k2 + k3) + k4) / 6
            t += dt
            steps += 1
            dts.append(dt)
            if steps > max_steps:
                raise SolverDiverged(f"more than max_steps={max_steps} time steps (reached t={t:.4g})")
            if steps % 50 == 0 and not torch.isfinite(u_hat).all():
                raise SolverDiverged(f"non-finite values at t={t:.4g}")
        if not torch.isfinite(u_hat).all():
            raise SolverDiverged(f"non-finite values at t={t:.4g}")
        outs.append(to_real(u_hat))
    info = {"n_steps": steps, "dt_min": min(dts) if dts else 0.0, "dt_max": max(dts) if dts else 0.0}
    return outs, info


def _stack_outputs(
    outs: list[torch.Tensor], times: list[float], requested: Sequence[float] | None, squeeze: bool, t_final: float
) -> torch.Tensor:
    if requested is None:
        res = outs[times.index(float(t_final))]
    else:
        res = torch.stack([outs[times.index(float(t))] for t in requested], dim=1)
    return res[0] if squeeze else res


# ---------------------------------------------------------------------------------------------- Navier–Stokes


def navier_stokes_2d(
    w0: Any,
    t_final: float,
    viscosity: float = 1e-3,
    forcing: Any = "symmetric",
    *,
    times: Sequence[float] | None = None,
    cfl: float = 0.5,
    dt_max: float = 0.05,
    max_steps: int = 200_000,
    device: torch.device | str | None = None,
    return_info: bool = False,
):
    """2D incompressible Navier–Stokes in vorticity form on the periodic unit square:

    ``dw/dt + u . grad w = nu lap w + f``,  ``u = (d psi/dy, -d psi/dx)``,  ``-lap psi = w``.

    ``w0``: initial vorticity ``(N, N)`` or ``(B, N, N)`` (cell-centred grid). ``forcing``: a field ``(N, N)``
    or a name for :func:`ns_forcing`. Returns the vorticity at ``t_final`` (same shape as ``w0``), or at each of
    ``times`` stacked on axis 1 if given. With ``return_info`` also a dict (steps, dt range).
    """
    if not viscosity > 0:
        raise ValueError(f"viscosity must be positive, got {viscosity}")
    w, squeeze = _as_batch(w0, 2, device)
    n = w.shape[-1]
    if w.shape[-2] != n:
        raise ValueError(f"the grid must be square, got {tuple(w.shape[-2:])}")
    dev = w.device
    f = ns_forcing(n, forcing) if isinstance(forcing, str) else torch.as_tensor(np.asarray(forcing))
    f = f.to(dtype=torch.float64, device=dev)
    if f.shape != (n, n):
        raise ValueError(f"forcing must have shape {(n, n)}, got {tuple(f.shape)}")
    (kx, ky), (lx, ly), mask = _wavenumbers(n, 2, dev)
    k2 = lx**2 + ly**2
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), torch.zeros_like(k2))
    lin = -viscosity * k2
    f_hat = torch.fft.rfft2(f)

    def rhs(w_hat: torch.Tensor) -> tuple[torch.Tensor, float]:
        w_hat = w_hat * mask
        psi_hat = w_hat * inv_k2
        u = torch.fft.irfft2(1j * ky * psi_hat, s=(n, n))
        v = torch.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
        wx = torch.fft.irfft2(1j * kx * w_hat, s=(n, n))
        wy = torch.fft.irfft2(1j * ky * w_hat, s=(n, n))
        nl = torch.fft.rfft2(u * wx + v * wy)
        speed = float((u.abs() + v.abs()).max())
        return -nl * mask + f_hat, speed

    tlist = _check_times(t_final, times)
    outs, info = _integrate_ifrk4(
        torch.fft.rfft2(w),
        lin,
        rhs,
        tlist,
        1.0 / n,
        cfl,
        dt_max,
        max_steps,
        lambda h: torch.fft.irfft2(h, s=(n, n)),
    )
    res = _stack_outputs(outs, tlist, times, squeeze, t_final)
    return (res, info) if return_info else res


def ns_rhs(w: Any, viscosity: float, forcing: Any = "none") -> torch.Tensor:
    """``dw/dt`` of :func:`navier_stokes_2d` evaluated on a field (for tests against analytic Jacobians)."""
    wb, squeeze = _as_batch(w, 2, None)
    n = wb.shape[-1]
    f = ns_forcing(n, forcing) if isinstance(forcing, str) else torch.as_tensor(np.asarray(forcing))
    (kx, ky), (lx, ly), mask = _wavenumbers(n, 2, wb.device)
    k2 = lx**2 + ly**2
    inv_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), torch.zeros_like(k2))
    w_hat = torch.fft.rfft2(wb) * mask
    psi_hat = w_hat * inv_k2
    u = torch.fft.irfft2(1j * ky * psi_hat, s=(n, n))
    v = torch.fft.irfft2(-1j * kx * psi_hat, s=(n, n))
    wx = torch.fft.irfft2(1j * kx * w_hat, s=(n, n))
    wy = torch.fft.irfft2(1j * ky * w_hat, s=(n, n))
    lap = torch.fft.irfft2(-k2 * torch.fft.rfft2(wb), s=(n, n))
    out = -(u * wx + v * wy) + viscosity * lap + f.to(wb)
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------------------------------- Burgers


def burgers_1d(
    u0: Any,
    t_final: float,
    viscosity: float = 0.1,
    *,
    times: Sequence[float] | None = None,
    cfl: float = 0.5,
    dt_max: float = 0.01,
    max_steps: int = 500_000,
    device: torch.device | str | None = None,
    return_info: bool = False,
):
    """Viscous Burgers ``du/dt + d(u^2/2)/dx = nu d2u/dx2`` on the periodic unit interval.

    ``u0``: ``(N,)`` or ``(B, N)`` on the cell-centred grid. Returns ``u(t_final)`` (or ``times`` on axis 1).
    """
    if not viscosity > 0:
        raise ValueError(f"viscosity must be positive, got {viscosity}")
    u, squeeze = _as_batch(u0, 1, device)
    n = u.shape[-1]
    (k,), (lk,), mask = _wavenumbers(n, 1, u.device)
    lin = -viscosity * lk**2

    def rhs(u_hat: torch.Tensor) -> tuple[torch.Tensor, float]:
        ur = torch.fft.irfft(u_hat * mask, n=n)
        return -0.5j * k * torch.fft.rfft(ur * ur) * mask, float(ur.abs().max())

    tlist = _check_times(t_final, times)
    outs, info = _integrate_ifrk4(
        torch.fft.rfft(u), lin, rhs, tlist, 1.0 / n, cfl, dt_max, max_steps, lambda h: torch.fft.irfft(h, n=n)
    )
    res = _stack_outputs(outs, tlist, times, squeeze, t_final)
    return (res, info) if return_info else res


# ------------------------------------------------------------------------------------ heat / advection-diffusion


def advection_diffusion(
    u0: Any,
    t_final: float,
    diffusivity: float = 0.01,
    velocity: Any = None,
    *,
    dim: int = 2,
    times: Sequence[float] | None = None,
    cfl: float = 0.5,
    dt_max: float = 0.05,
    max_steps: int = 200_000,
    device: torch.device | str | None = None,
    return_info: bool = False,
):
    """Heat / advection–diffusion ``du/dt + v . grad u = kappa lap u`` on the periodic unit box (1D or 2D).

    ``velocity``: ``None`` (pure heat equation), a constant vector of ``dim`` components (solved exactly:
    ``u_hat(t) = u_hat(0) exp(-(kappa |k|^2 + i v.k) t)``), or a velocity *field* of shape ``(dim, N, ..., N)``
    (divergence-free for a conservative flow), integrated with integrating-factor RK4 and dealiased products.
    """
    if not diffusivity > 0:
        raise ValueError(f"diffusivity must be positive, got {diffusivity}")
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim}")
    u, squeeze = _as_batch(u0, dim, device)
    n = u.shape[-1]
    dev = u.device
    fft, ifft = (torch.fft.rfft, torch.fft.irfft) if dim == 1 else (torch.fft.rfft2, torch.fft.irfft2)
    s = (n,) * dim

    def to_real(h: torch.Tensor) -> torch.Tensor:
        return ifft(h, s[0]) if dim == 1 else ifft(h, s=s)

    d_k, l_k, mask = _wavenumbers(n, dim, dev)
    k2 = sum(k**2 for k in l_k)
    tlist = _check_times(t_final, times)
    vel = None if velocity is None else torch.as_tensor(np.asarray(velocity), dtype=torch.float64).to(dev)
    if vel is None or vel.ndim == 1:
        c = torch.zeros(dim, dtype=torch.float64, device=dev) if vel is None else vel
        if c.shape != (dim,):
            raise ValueError(f"a constant velocity needs {dim} components, got shape {tuple(c.shape)}")
        exponent = -diffusivity * k2 - 1j * sum(ci * ki for ci, ki in zip(c, d_k, strict=True))
        u_hat = fft(u)
        outs = [to_real(u_hat * torch.exp(exponent * t)) for t in tlist]
        info: dict[str, Any] = {"n_steps": 0, "method": "exact Fourier propagator"}
    else:
        if vel.shape != (dim,) + s:
            raise ValueError(f"a velocity field needs shape {(dim,) + s}, got {tuple(vel.shape)}")
        speed = float(vel.abs().sum(0).max())

        def rhs(h: torch.Tensor) -> tuple[torch.Tensor, float]:
            h = h * mask
            adv = sum(vel[i] * to_real(1j * d_k[i] * h) for i in range(dim))
            return -fft(adv) * mask, speed

        outs, info = _integrate_ifrk4(fft(u), -diffusivity * k2, rhs, tlist, 1.0 / n, cfl, dt_max, max_steps, to_real)
        info["method"] = "integrating-factor RK4"
    res = _stack_outputs(outs, tlist, times, squeeze, t_final)
    return (res, info) if return_info else res


# ------------------------------------------------------------------------------------------------------- Darcy


def _darcy_matrix(a: np.ndarray):
    import scipy.sparse as sp

    n_nodes = a.shape[0]
    h = 1.0 / (n_nodes - 1)
    m = n_nodes - 2
    idx = np.arange(m * m).reshape(m, m)
    ac = a[1:-1, 1:-1]
    a_e = 0.5 * (ac + a[2:, 1:-1])  # face (i+1/2, j)
    a_w = 0.5 * (ac + a[:-2, 1:-1])
    a_n = 0.5 * (ac + a[1:-1, 2:])  # face (i, j+1/2)
    a_s = 0.5 * (ac + a[1:-1, :-2])
    rows = [idx.ravel()]
    cols = [idx.ravel()]
    vals = [(a_e + a_w + a_n + a_s).ravel()]
    for coef, sl_from, sl_to in (
        (a_e, (slice(0, m - 1), slice(None)), (slice(1, m), slice(None))),
        (a_w, (slice(1, m), slice(None)), (slice(0, m - 1), slice(None))),
        (a_n, (slice(None), slice(0, m - 1)), (slice(None), slice(1, m))),
        (a_s, (slice(None), slice(1, m)), (slice(None), slice(0, m - 1))),
    ):
        rows.append(idx[sl_from].ravel())
        cols.append(idx[sl_to].ravel())
        vals.append(-coef[sl_from].ravel())
    mat = sp.csc_matrix(
        (np.concatenate(vals) / h**2, (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m)
    )
    return mat


def darcy_2d(a: Any, f: Any = 1.0) -> torch.Tensor:
    """Steady Darcy flow ``-div(a grad u) = f`` on [0, 1]^2, ``u = 0`` on the boundary.

    ``a``: permeability on the node grid, ``(N, N)`` or ``(B, N, N)``, positive; ``f``: a number or an
    ``(N, N)`` field. Second-order 5-point finite differences (face values of ``a`` by arithmetic mean), solved
    with a sparse LU factorisation (scipy SuperLU). Returns ``u`` on the same grid, zero on the boundary.
    """
    from scipy.sparse.linalg import splu

    ab, squeeze = _as_batch(a, 2, "cpu")
    n = ab.shape[-1]
    if ab.shape[-2] != n or n < 3:
        raise ValueError(f"a must be a square grid with at least 3 nodes per side, got {tuple(ab.shape[-2:])}")
    if not bool((ab > 0).all()):
        raise ValueError("the permeability a must be positive everywhere")
    f_arr = np.broadcast_to(np.asarray(f.cpu() if isinstance(f, torch.Tensor) else f, dtype=np.float64), (n, n))
    rhs = np.ascontiguousarray(f_arr[1:-1, 1:-1]).ravel()
    out = np.zeros(tuple(ab.shape), dtype=np.float64)
    for b in range(ab.shape[0]):
        lu = splu(_darcy_matrix(ab[b].numpy()))
        out[b, 1:-1, 1:-1] = lu.solve(rhs).reshape(n - 2, n - 2)
    res = torch.from_numpy(out)
    return res[0] if squeeze else res
