"""Gaussian random fields: the random inputs of the FNO benchmarks (Li et al. 2021), seeded locally.

* :func:`periodic_grf` — periodic fields on [0, 1)^d, covariance ``sigma^2 (-Δ + tau^2 I)^(-alpha)`` (the FNO
  ``GaussianRF``: Burgers ``alpha=2, tau=5, sigma=25``; Navier–Stokes ``alpha=2.5, tau=7``), optionally
  stretched along each axis (``anisotropy``) to make a training distribution with a preferred direction.
* :func:`cosine_grf` — fields on the closed square [0, 1]^2 expanded in cosines (Neumann eigenfunctions), the
  Darcy benchmark's ``N(0, (-Δ + 9 I)^(-2))``; :func:`darcy_coefficient` thresholds one into the
  piecewise-constant permeability (12 where positive, 3 where negative).

Every generator takes ``seed`` (an int, a ``torch.Generator`` or ``None``) and never touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["make_generator", "periodic_grf", "cosine_grf", "darcy_coefficient"]


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A local CPU generator: from an int seed, passed through, or freshly seeded from the OS if ``None``."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def periodic_grf(
    n_samples: int,
    resolution: int,
    dim: int = 2,
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    anisotropy: Sequence[float] | None = None,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Samples of a zero-mean periodic Gaussian random field on a uniform ``resolution^dim`` grid of [0, 1)^d.

    The Fourier coefficient of wave vector k has variance ``sigma^2 (4 pi^2 |A k|^2 + tau^2)^(-alpha)``, where
    ``A = diag(anisotropy)`` (default identity; ``anisotropy=(1, 2)`` damps variation along the last axis
    and doubles the correlation length there: structures elongated along y), and the k = 0 mode is zero.
    ``sigma`` defaults to ``tau^((2 alpha - dim)/2)`` as in the FNO code.
    Returns a tensor of shape ``(n_samples, resolution, ..., resolution)``. Sampling happens in float64 on the CPU.
    """
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2, got {dim}")
    if resolution < 4:
        raise ValueError(f"resolution must be >= 4, got {resolution}")
    gen = make_generator(seed)
    if sigma is None:
        sigma = tau ** (0.5 * (2 * alpha - dim))
    scales = list(anisotropy) if anisotropy is not None else [1.0] * dim
    if len(scales) != dim:
        raise ValueError(f"anisotropy needs {dim} entries, got {len(scales)}")
    k1 = torch.fft.fftfreq(resolution, d=1.0 / resolution, dtype=torch.float64)
    ks = torch.meshgrid(*([k1] * dim), indexing="ij")
    k2 = sum((s * k) ** 2 for s, k in zip(scales, ks, strict=True))
    sqrt_eig = sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig[(0,) * dim] = 0.0
    shape = (n_samples,) + (resolution,) * dim
    xi = torch.randn(shape, generator=gen, dtype=torch.float64) + 1j * torch.randn(
        shape, generator=gen, dtype=torch.float64
    )
    # Re(sum_k c_k xi_k e^{2 pi i k.x}): each mode contributes variance c_k^2 (the FNO GaussianRF convention).
    field = torch.fft.ifftn(resolution**dim * sqrt_eig * xi, dim=tuple(range(1, dim + 1))).real
    return field.to(dtype)


def cosine_grf(
    n_samples: int,
    resolution: int,
    *,
    alpha: float = 2.0,
    tau: float = 3.0,
    n_modes: int | None = None,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Samples of ``N(0, (-Δ + tau^2)^(-alpha))`` with Neumann boundaries on the node grid of [0, 1]^2.

    ``u(x, y) = sum_{k1,k2} c_k xi_k cos(pi k1 x) cos(pi k2 y)`` with
    ``c_k = tau^(alpha-1) (pi^2 |k|^2 + tau^2)^(-alpha/2)`` (the FNO ``GRF.m``), the constant mode dropped,
    evaluated on ``resolution`` nodes per axis including both ends. The distribution is invariant under the
    eight symmetries of the square. Returns ``(n_samples, resolution, resolution)``.
    """
    if resolution < 3:
        raise ValueError(f"resolution must be >= 3, got {resolution}")
    gen = make_generator(seed)
    m = n_modes or resolution
    k = torch.arange(m, dtype=torch.float64)
    coef = tau ** (alpha - 1) * (math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha / 2)
    coef[0, 0] = 0.0
    xi = torch.randn((n_samples, m, m), generator=gen, dtype=torch.float64)
    x = torch.linspace(0.0, 1.0, resolution, dtype=torch.float64)
    basis = torch.cos(math.pi * k[:, None] * x[None, :])  # (m, resolution)
    field = torch.einsum("kx,bkl,ly->bxy", basis, coef * xi, basis)
    return field.to(dtype)


def darcy_coefficient(
    n_samples: int,
    resolution: int,
    *,
    high: float = 12.0,
    low: float = 3.0,
    seed: int | torch.Generator | None = 0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Piecewise-constant permeability ``a = high where g >= 0 else low``, ``g ~ cosine_grf(alpha=2, tau=3)``
    (the FNO Darcy benchmark's inputs). Shape ``(n_samples, resolution, resolution)``."""
    g = cosine_grf(n_samples, resolution, alpha=2.0, tau=3.0, seed=seed)
    return torch.where(g >= 0, torch.as_tensor(high), torch.as_tensor(low)).to(dtype)
