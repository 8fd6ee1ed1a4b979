"""Neural operators: a Fourier neural operator (FNO, Li et al. 2021) in 1D/2D and a group-equivariant FNO
(G-FNO, Helwig et al. 2023) for the groups p4 (90° rotations) and p4m (rotations and reflections).

Both are small, self-contained ``torch.nn.Module`` s built from an :class:`OperatorConfig` that round-trips
through ``config.json``; weights are saved as safetensors (:func:`save_operator` / :func:`load_operator`).
Inputs and outputs are channel-first: ``(B, C, N)`` in 1D, ``(B, C, N, N)`` in 2D. Normalisation (one scalar
mean/std for inputs and one for outputs) lives in the config and is applied inside ``forward``, so a model maps
physical fields to physical fields. Scalar, not pointwise, normalisation keeps the G-FNO equivariant.

G-FNO construction (equivariant by construction, no augmentation):

* features are functions on the grid times the group, ``(B, C, |G|, N, N)``; a group element ``u`` acts by
  ``(u f)_h = T_u f_{u^-1 h}``, with ``T_u`` a ``torch.rot90`` / ``torch.flip`` of the grid array;
* lifting: a pointwise linear map of the (scalar) input, copied to every group element;
* group spectral convolution ``out_h = sum_g (T_h K_{h^-1 g}) * f_g`` with ``K`` parametrised by complex Fourier
  weights on the symmetric square of modes ``|k_x|, |k_y| <= M`` (full FFT, not rfft, so the mode set is closed
  under rotations and reflections); rotating a kernel about the origin rotates its Fourier coefficients the same
  way, so ``T_h`` is applied to the weight array directly;
* group 1x1 convolution ``out_h = sum_g W_{h^-1 g} f_g`` plus a bias per output channel, GELU pointwise;
* projection: a pointwise MLP shared over group elements, then the mean over the group (invariant pooling), so
  the output is a scalar field that rotates/reflects with the input.

Raw coordinates would break the symmetry, so the G-FNO takes only D4-invariant positional features:
``boundary`` (``16 x(1-x) y(1-y)`` on the node grid of a bounded box) or ``invariant`` (``cos 2 pi x + cos 2 pi y``,
``cos 2 pi x cos 2 pi y`` and the same at ``4 pi``, on the cell-centred periodic grid). Without any, a G-FNO on a
periodic grid is also translation-equivariant and cannot represent a response to position-anchored forcing.
Padding (for non-periodic problems) is applied symmetrically on all sides, which commutes with the group action.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OperatorConfig",
    "FNO",
    "GFNO",
    "SpectralConv",
    "GroupSpectralConv",
    "GroupPointwise",
    "Group",
    "build_operator",
    "save_operator",
    "load_operator",
    "shipped_operators",
    "transform_field",
    "CHECKPOINT_DIR",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class OperatorConfig:
    """Everything needed to rebuild an operator, plus what it was trained on (round-trips through JSON)."""

    kind: Literal["fno", "gfno"] = "fno"
    dim: int = 2
    in_channels: int = 1
    out_channels: int = 1
    width: int = 20
    modes: int = 8  # FNO: modes kept per axis (rfft corner size); G-FNO: M, the square |k| <= M
    n_layers: int = 4
    proj_width: int = 64
    padding: int = 0
    pad_mode: Literal["both", "end"] = "both"  # "end": FNO paper style (after the last point only)
    grid: Literal["none", "xy", "boundary", "invariant"] = "none"
    domain: Literal["periodic", "box"] = "periodic"
    group: Literal["p4", "p4m"] | None = None
    in_mean: float = 0.0
    in_std: float = 1.0
    out_mean: float = 0.0
    out_std: float = 1.0
    # provenance: what the operator maps (task name, PDE, parameters, resolution) and how it was trained
    name: str = ""
    task: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown OperatorConfig fields: {sorted(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> OperatorConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ------------------------------------------------------------------------------------------------ group action


class Group:
    """p4 (rotations by multiples of 90°) or p4m (with reflections) acting on square grid arrays.

    Element ``(s, r)`` acts on an array as ``rot90(flip(x, last axis) if s else x, r)``, i.e. the index map
    ``x'(p) = x(A^-1 p)`` with ``A = R^r F^s``; ``index(A)`` and the Cayley table come from these matrices.
    """

    def __init__(self, name: str):
        if name not in ("p4", "p4m"):
            raise ValueError(f"unknown group {name!r}; use 'p4' or 'p4m'")
        self.name = name
        self.elements = [(s, r) for s in ((0, 1) if name == "p4m" else (0,)) for r in range(4)]
        rot = torch.tensor([[0, -1], [1, 0]])
        flip = torch.tensor([[1, 0], [0, -1]])
        self.mats = [
            torch.linalg.matrix_power(rot, r) @ (flip if s else torch.eye(2, dtype=torch.long))
            for s, r in self.elements
        ]
        self.order = len(self.elements)
        # inv_mul[h][g] = index of h^-1 g
        self.inv_mul = [
            [self.index(self.mats[h].T @ self.mats[g]) for g in range(self.order)] for h in range(self.order)
        ]

    def index(self, mat: torch.Tensor) -> int:
        for i, m in enumerate(self.mats):
            if torch.equal(m, mat):
                return i
        raise KeyError("matrix not in group")

    def inverse(self, i: int) -> int:
        return self.index(self.mats[i].T)

    def apply(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Transform the last two (spatial) axes of ``x`` by element ``i``."""
        s, r = self.elements[i]
        if s:
            x = torch.flip(x, dims=(-1,))
        return torch.rot90(x, r, dims=(-2, -1)) if r else x

    def act_on_features(self, f: torch.Tensor, i: int) -> torch.Tensor:
        """``(u f)_h = T_u f_{u^-1 h}`` on features ``(B, C, |G|, N, N)``."""
        perm = [self.inv_mul[i][h] for h in range(self.order)]
        return self.apply(f[:, :, perm], i)


def transform_field(x: torch.Tensor, rotation: int = 0, reflect: bool = False) -> torch.Tensor:
    """Rotate a grid field by ``rotation`` x 90° (after reflecting the last axis if ``reflect``)."""
    if reflect:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, rotation % 4, dims=(-2, -1)) if rotation % 4 else x


# -------------------------------------------------------------------------------------------------------- layers


class SpectralConv(nn.Module):
    """FNO Fourier layer: multiply the lowest ``modes`` Fourier modes (per axis, both signs of k_x in 2D) by
    learned complex matrices, drop the rest. Weights are stored as real ``(..., 2)`` tensors."""

    def __init__(self, in_channels: int, out_channels: int, modes: int, dim: int):
        super().__init__()
        self.modes, self.dim, self.out_channels = modes, dim, out_channels
        scale = 1.0 / (in_channels * out_channels)
        shape = (in_channels, out_channels, modes, 2) if dim == 1 else (2, in_channels, out_channels, modes, modes, 2)
        self.weight = nn.Parameter(scale * torch.rand(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.modes
        w = torch.view_as_complex(self.weight)
        if self.dim == 1:
            n = x.shape[-1]
            xf = torch.fft.rfft(x)
            if m > xf.shape[-1]:
                raise ValueError(f"{m} modes need a grid of at least {2 * m} points, got {n}")
            out = torch.zeros(x.shape[0], self.out_channels, xf.shape[-1], dtype=xf.dtype, device=x.device)
            out[..., :m] = torch.einsum("bix,iox->box", xf[..., :m], w)
            return torch.fft.irfft(out, n=n)
        h, wd = x.shape[-2:]
        xf = torch.fft.rfft2(x)
        if 2 * m > h or m > xf.shape[-1]:
            raise ValueError(f"{m} modes need a grid of at least {2 * m} points per axis, got {(h, wd)}")
        out = torch.zeros(x.shape[0], self.out_channels, h, xf.shape[-1], dtype=xf.dtype, device=x.device)
        out[..., :m, :m] = torch.einsum("bixy,ioxy->boxy", xf[..., :m, :m], w[0])
        out[..., -m:, :m] = torch.einsum("bixy,ioxy->boxy", xf[..., -m:, :m], w[1])
        return torch.fft.irfft2(out, s=(h, wd))


def _centred_index(m: int, n: int, device) -> torch.Tensor:
    """Indices of the modes -m..m in an FFT axis of length n (centred order)."""
    if 2 * m + 1 > n:
        raise ValueError(f"G-FNO with modes={m} needs a grid of at least {2 * m + 1} points per axis, got {n}")
    return torch.arange(-m, m + 1, device=device) % n


class GroupSpectralConv(nn.Module):
    """Group spectral convolution for p4/p4m; ``lifting=True`` takes scalar fields ``(B, C, N, N)``."""

    def __init__(self, in_channels: int, out_channels: int, modes: int, group: Group, lifting: bool = False):
        super().__init__()
        self.modes, self.group, self.lifting, self.out_channels = modes, group, lifting, out_channels
        k = 2 * modes + 1
        g_in = 1 if lifting else group.order
        scale = 1.0 / (in_channels * out_channels * g_in)
        self.weight = nn.Parameter(scale * torch.rand(out_channels, in_channels, g_in, k, k, 2))

    def full_kernel(self) -> torch.Tensor:
        """``(C_out, |G|, C_in, |G_in|, K, K)`` complex: ``W[:, h, :, g] = T_h(K_{h^-1 g})``."""
        w = torch.view_as_complex(self.weight)
        grp = self.group
        blocks = []
        for h in range(grp.order):
            wh = w if self.lifting else w[:, :, grp.inv_mul[h]]
            blocks.append(grp.apply(wh, h))
        return torch.stack(blocks, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lifting:
            x = x.unsqueeze(2)
        n1, n2 = x.shape[-2:]
        m = self.modes
        i1 = _centred_index(m, n1, x.device)
        _centred_index(m, n2, x.device)  # size check
        # Half plane k_y = 0..M from an rfft, completed to the symmetric square by Hermitian symmetry
        # X(-k) = conj X(k); both axes in centred order (index = k + M).
        xh = torch.fft.rfft2(x)[..., i1, : m + 1]
        xf = torch.cat([torch.conj(torch.flip(xh[..., 1:], dims=(-2, -1))), xh], dim=-1)
        of = torch.einsum("bigxy,ohigxy->bohxy", xf, self.full_kernel())
        # Re(ifft2(of)) equals irfft2 of the Hermitian part of ``of`` on the half plane.
        zh = 0.5 * (of[..., m:] + torch.conj(torch.flip(of, dims=(-2, -1))[..., m:]))
        out = torch.zeros(*of.shape[:-2], n1, n2 // 2 + 1, dtype=of.dtype, device=x.device)
        out[..., i1, : m + 1] = zh
        return torch.fft.irfft2(out, s=(n1, n2))


class GroupPointwise(nn.Module):
    """Group 1x1 convolution ``out_h = sum_g W_{h^-1 g} f_g + b`` on ``(B, C, |G|, N, N)``."""

    def __init__(self, in_channels: int, out_channels: int, group: Group):
        super().__init__()
        self.group = group
        bound = 1.0 / math.sqrt(in_channels * group.order)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, group.order).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group.order
        w = torch.stack([self.weight[:, :, self.group.inv_mul[h]] for h in range(g)], dim=1)  # (O, H, I, G)
        b, c = x.shape[:2]
        y = F.conv2d(x.reshape(b, c * g, *x.shape[-2:]), w.reshape(-1, c * g, 1, 1), self.bias.repeat_interleave(g))
        return y.reshape(b, -1, g, *x.shape[-2:])


# -------------------------------------------------------------------------------------------------------- models


def _grid_features(cfg: OperatorConfig, x: torch.Tensor) -> torch.Tensor | None:
    if cfg.grid == "none":
        return None
    shape = x.shape[2:]
    axes = []
    for n in shape:
        if cfg.domain == "periodic":
            axes.append((torch.arange(n, dtype=x.dtype, device=x.device) + 0.5) / n)
        else:
            axes.append(torch.linspace(0.0, 1.0, n, dtype=x.dtype, device=x.device))
    grids = torch.meshgrid(*axes, indexing="ij")
    if cfg.grid == "xy":
        feats = torch.stack(grids)
    elif cfg.grid == "boundary":
        feats = torch.prod(torch.stack([4 * g * (1 - g) for g in grids]), dim=0, keepdim=True)
    elif cfg.grid == "invariant":
        if cfg.dim != 2 or cfg.domain != "periodic":
            raise ValueError("grid='invariant' is for 2D periodic domains")
        c = [torch.cos(2 * math.pi * g) for g in grids]
        d = [torch.cos(4 * math.pi * g) for g in grids]
        feats = torch.stack([c[0] + c[1], c[0] * c[1], d[0] + d[1], d[0] * d[1]])
    else:
        raise ValueError(f"unknown grid feature {cfg.grid!r}")
    return feats.unsqueeze(0).expand(x.shape[0], *feats.shape)


class _Normalised(nn.Module):
    cfg: OperatorConfig

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.cfg.in_mean) / self.cfg.in_std
        g = _grid_features(self.cfg, x)
        return x if g is None else torch.cat([x, g], dim=1)

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.cfg.out_std + self.cfg.out_mean

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.padding
        if not p:
            return x
        return F.pad(x, ([p, p] if self.cfg.pad_mode == "both" else [0, p]) * self.cfg.dim)

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.padding
        if not p:
            return x
        lo, hi = (p, -p) if self.cfg.pad_mode == "both" else (0, -p)
        return x[..., lo:hi] if self.cfg.dim == 1 else x[..., lo:hi, lo:hi]


class FNO(_Normalised):
    """Fourier neural operator: lift -> ``n_layers`` x (spectral conv + 1x1 conv, GELU) -> 2-layer projection."""

    def __init__(self, cfg: OperatorConfig):
        super().__init__()
        if cfg.dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {cfg.dim}")
        self.cfg = cfg
        extra = {"none": 0, "xy": cfg.dim, "boundary": 1, "invariant": 4}[cfg.grid]
        conv = nn.Conv1d if cfg.dim == 1 else nn.Conv2d
        self.lift = conv(cfg.in_channels + extra, cfg.width, 1)
        self.spectral = nn.ModuleList(
            SpectralConv(cfg.width, cfg.width, cfg.modes, cfg.dim) for _ in range(cfg.n_layers)
        )
        self.pointwise = nn.ModuleList(conv(cfg.width, cfg.width, 1) for _ in range(cfg.n_layers))
        self.proj1 = conv(cfg.width, cfg.proj_width, 1)
        self.proj2 = conv(cfg.proj_width, cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._pad(self.lift(self._in(x)))
        for i, (sc, pw) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = sc(h) + pw(h)
            if i < len(self.spectral) - 1:
                h = F.gelu(h)
        h = self._crop(h)
        return self._out(self.proj2(F.gelu(self.proj1(h))))


class GFNO(_Normalised):
    """Group-equivariant FNO (p4 or p4m) for 2D scalar fields; see the module docstring for the construction."""

    def __init__(self, cfg: OperatorConfig):
        super().__init__()
        if cfg.dim != 2:
            raise ValueError("the G-FNO is two-dimensional")
        if cfg.grid == "xy":
            raise ValueError("grid='xy' breaks rotation equivariance; use 'none' or 'boundary'")
        if cfg.pad_mode != "both":
            raise ValueError("the G-FNO needs pad_mode='both' (one-sided padding breaks the symmetry)")
        self.cfg = cfg
        self.group = Group(cfg.group or "p4")
        extra = {"none": 0, "boundary": 1, "invariant": 4}[cfg.grid]
        self.lift = nn.Conv2d(cfg.in_channels + extra, cfg.width, 1)
        self.spectral = nn.ModuleList(
            GroupSpectralConv(cfg.width, cfg.width, cfg.modes, self.group) for _ in range(cfg.n_layers)
        )
        self.pointwise = nn.ModuleList(GroupPointwise(cfg.width, cfg.width, self.group) for _ in range(cfg.n_layers))
        self.proj1 = nn.Linear(cfg.width, cfg.proj_width)
        self.proj2 = nn.Linear(cfg.proj_width, cfg.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._pad(self.lift(self._in(x)))
        h = h.unsqueeze(2).expand(-1, -1, self.group.order, -1, -1)
        for i, (sc, pw) in enumerate(zip(self.spectral, self.pointwise, strict=True)):
            h = sc(h) + pw(h)
            if i < len(self.spectral) - 1:
                h = F.gelu(h)
        h = self._crop(h)
        h = h.movedim(1, -1)  # (B, G, N, N, C)
        y = self.proj2(F.gelu(self.proj1(h))).mean(dim=1)  # invariant pooling over the group
        return self._out(y.movedim(-1, 1))


# ------------------------------------------------------------------------------------------------------ save/load


def build_operator(cfg: OperatorConfig) -> FNO | GFNO:
    if cfg.kind == "fno":
        return FNO(cfg)
    if cfg.kind == "gfno":
        return GFNO(cfg)
    raise ValueError(f"unknown operator kind {cfg.kind!r}")


def save_operator(model: FNO | GFNO, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype``) into ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / WEIGHTS_NAME), metadata={"format": "pt", "kind": model.cfg.kind})
    model.cfg.save(d / CONFIG_NAME)
    return d


def shipped_operators() -> list[str]:
    """Names of the operator checkpoints shipped with the package."""
    from triscale.common import shipped_names

    return shipped_names(CHECKPOINT_DIR, CONFIG_NAME)


def load_operator(
    name_or_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> FNO | GFNO:
    """Load a shipped operator by name (``ns2d-fno``) or a directory written by :func:`save_operator`;
    returns it in eval mode."""
    from safetensors.torch import load_file

    from triscale.common import find_checkpoint

    d = find_checkpoint(name_or_dir, CHECKPOINT_DIR, CONFIG_NAME, kind="operator checkpoint")
    cfg = OperatorConfig.load(d / CONFIG_NAME)
    model = build_operator(cfg)
    model.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
    return model.to(device=device, dtype=dtype).eval()
