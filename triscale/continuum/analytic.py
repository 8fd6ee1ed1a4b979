"""Closed-form solutions the reference solvers are validated against.

* :func:`taylor_green_vorticity` — the Taylor–Green vortex, an exact decaying Navier–Stokes solution
  (the nonlinear term vanishes identically, so ``w(t) = w(0) exp(-8 pi^2 k^2 nu t)``).
* :func:`gaussian_diffusion` — a Gaussian blob spreading and drifting on the periodic box (sum over images).
* :func:`cole_hopf_burgers` — viscous Burgers solutions ``u = -2 nu phi_x / phi`` from heat-equation solutions
  ``phi`` (the Cole–Hopf transform).
* :func:`darcy_manufactured` — a manufactured Darcy problem: smooth variable ``a``, exact ``u``, derived ``f``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from triscale.continuum.solvers import node_grid, periodic_grid

__all__ = ["taylor_green_vorticity", "gaussian_diffusion", "cole_hopf_burgers", "darcy_manufactured"]


def taylor_green_vorticity(
    resolution: int, t: float, viscosity: float, k: int = 1, amplitude: float = 1.0
) -> torch.Tensor:
    """``w(x, y, t) = A cos(2 pi k x) cos(2 pi k y) exp(-8 pi^2 k^2 nu t)`` on the cell-centred periodic grid."""
    x, y = periodic_grid(resolution)
    decay = math.exp(-8 * math.pi**2 * k**2 * viscosity * t)
    return amplitude * torch.cos(2 * math.pi * k * x) * torch.cos(2 * math.pi * k * y) * decay


def gaussian_diffusion(
    resolution: int,
    t: float,
    diffusivity: float,
    *,
    dim: int = 2,
    center: Sequence[float] | None = None,
    width: float = 0.05,
    velocity: Sequence[float] | None = None,
    n_images: int = 3,
) -> torch.Tensor:
    """Exact periodic solution of ``u_t + v.grad u = kappa lap u`` from ``u(x, 0) = exp(-|x - c|^2 / (2 w^2))``:
    ``(w^2 / s^2)^(d/2) sum_images exp(-|x - c - v t - n|^2 / (2 s^2))``, ``s^2 = w^2 + 2 kappa t``."""
    c = list(center) if center is not None else [0.5] * dim
    v = list(velocity) if velocity is not None else [0.0] * dim
    xs = periodic_grid(resolution, dim)
    s2 = width**2 + 2 * diffusivity * t
    out = torch.zeros_like(xs[0])
    shifts = range(-n_images, n_images + 1)
    grids = torch.meshgrid(*([torch.tensor(list(shifts), dtype=torch.float64)] * dim), indexing="ij")
    for img in zip(*(g.ravel() for g in grids), strict=True):
        r2 = sum((xs[i] - c[i] - v[i] * t - img[i]) ** 2 for i in range(dim))
        out = out + torch.exp(-r2 / (2 * s2))
    return out * (width**2 / s2) ** (dim / 2)


def cole_hopf_burgers(
    resolution: int,
    t: float,
    viscosity: float,
    *,
    a0: float = 1.0,
    modes: Sequence[tuple[int, float, float]] = ((1, 0.5, 0.0), (2, 0.2, 1.0), (3, 0.1, 2.0)),
) -> torch.Tensor:
    """Exact viscous Burgers solution on the periodic unit interval via Cole–Hopf.

    ``phi = a0 + sum_k b_k exp(-nu (2 pi k)^2 t) cos(2 pi k x + p_k)`` solves ``phi_t = nu phi_xx``; then
    ``u = -2 nu phi_x / phi`` solves ``u_t + u u_x = nu u_xx``. ``modes`` lists ``(k, b_k, p_k)``; ``phi > 0``
    needs ``a0 > sum |b_k|``.
    """
    if a0 <= sum(abs(b) for _, b, _ in modes):
        raise ValueError("a0 must exceed sum |b_k| so that phi stays positive")
    (x,) = periodic_grid(resolution, 1)
    phi = torch.full_like(x, a0)
    phi_x = torch.zeros_like(x)
    for k, b, p in modes:
        w = 2 * math.pi * k
        e = b * math.exp(-viscosity * w**2 * t)
        phi = phi + e * torch.cos(w * x + p)
        phi_x = phi_x - e * w * torch.sin(w * x + p)
    return -2 * viscosity * phi_x / phi


def darcy_manufactured(resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(a, f, u_exact)`` on the node grid of [0, 1]^2 with ``u = sin(pi x) sin(2 pi y)`` (zero on the
    boundary), ``a = 1.5 + x y + 0.5 sin(2 pi x) cos(2 pi y)`` (between 1 and 3) and
    ``f = -div(a grad u) = -(a_x u_x + a_y u_y) + 5 pi^2 a u``."""
    x, y = node_grid(resolution)
    pi = math.pi
    u = torch.sin(pi * x) * torch.sin(2 * pi * y)
    a = 1.5 + x * y + 0.5 * torch.sin(2 * pi * x) * torch.cos(2 * pi * y)
    a_x = y + pi * torch.cos(2 * pi * x) * torch.cos(2 * pi * y)
    a_y = x - pi * torch.sin(2 * pi * x) * torch.sin(2 * pi * y)
    u_x = pi * torch.cos(pi * x) * torch.sin(2 * pi * y)
    u_y = 2 * pi * torch.sin(pi * x) * torch.cos(2 * pi * y)
    f = -(a_x * u_x + a_y * u_y) + 5 * pi**2 * a * u
    return a, f, u
