"""Building blocks of the equivariant encoder (PaiNN-style scalar + vector features).

Every channel-mixing layer is a plain ``nn.Linear`` over the last (channel) axis. Layers that act on vector
features have no bias, so ``W @ v`` commutes with rotations of the 3-axis; stock PEFT LoRA (which adds
``B @ A`` to such a layer, again without bias) keeps the model exactly equivariant before and after merging.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (along dim 0)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff u(x), x = r / r_c: 1 at 0, 0 at 1 with vanishing first and second derivatives (DimeNet)."""

    def __init__(self, cutoff: float, exponent: int = 5):
        super().__init__()
        self.cutoff = cutoff
        self.p = exponent

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        u = 1.0 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return torch.where(x < 1.0, u, torch.zeros_like(u))


class BesselBasis(nn.Module):
    """sqrt(2/r_c) sin(n pi r / r_c) / r, n = 1..num_radial (fixed frequencies: nothing here to fine-tune)."""

    def __init__(self, cutoff: float, num_radial: int):
        super().__init__()
        self.cutoff = cutoff
        self.num_radial = num_radial
        self.prefactor = math.sqrt(2.0 / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        # Built per call (not a buffer) so that meta-device construction in from_pretrained cannot leave it unset.
        freqs = torch.arange(1, self.num_radial + 1, dtype=r.dtype, device=r.device) * (math.pi / self.cutoff)
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(freqs * r) / r


class MLP(nn.Sequential):
    """Linear -> SiLU -> Linear on scalar channels."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, out_features))


class Interaction(nn.Module):
    """Continuous-filter message from sender j to receiver i for scalars and vectors (PaiNN eq. 7-8).

    The filter is a linear map of the radial basis times the smooth envelope, so every message and its first
    two derivatives vanish at the cutoff.
    """

    def __init__(self, channels: int, num_radial: int):
        super().__init__()
        self.channels = channels
        self.context = MLP(channels, channels, 3 * channels)
        self.filter = nn.Linear(num_radial, 3 * channels)

    def forward(
        self,
        s,
        v,
        radial,
        envelope,
        unit,
        edge_index,
        norm: float,
        first_layer_zero_vectors=False,
        edge_chunk: int | None = None,
    ):
        """Updated (s, v). With ``edge_chunk``, edges are processed in checkpointed chunks: activations of only one
        chunk are alive at a time (recomputed in the backward pass), so memory stays O(atoms + chunk)."""
        context = self.context(s)
        n = s.shape[0]
        receiver, sender = edge_index[0], edge_index[1]
        n_edges = receiver.shape[0]
        if edge_chunk is None or n_edges <= edge_chunk:
            ds, dv = self._messages(context, v, radial, envelope, unit, receiver, sender, n, first_layer_zero_vectors)
        else:
            from torch.utils.checkpoint import checkpoint

            ds, dv = 0.0, 0.0
            for start in range(0, n_edges, edge_chunk):
                sl = slice(start, start + edge_chunk)
                ds_c, dv_c = checkpoint(
                    self._messages,
                    context,
                    v,
                    radial[sl],
                    envelope[sl],
                    unit[sl],
                    receiver[sl],
                    sender[sl],
                    n,
                    first_layer_zero_vectors,
                    use_reentrant=False,
                )
                ds, dv = ds + ds_c, dv + dv_c
        return s + ds * norm, v + dv * norm

    def _messages(self, context, v, radial, envelope, unit, receiver, sender, n: int, first_layer_zero_vectors: bool):
        """Summed messages onto receivers: scalars (N, F) and vectors (N, 3, F)."""
        weights = self.filter(radial) * envelope.unsqueeze(-1)
        # index_select rather than fancy indexing: its backward is an index_add, several times faster on CPU
        x = torch.index_select(context, 0, sender) * weights
        ds, dv_v, dv_r = torch.split(x, self.channels, dim=-1)
        dv = dv_r.unsqueeze(1) * unit.unsqueeze(-1)
        if not first_layer_zero_vectors:  # v is identically zero before the first interaction
            dv = dv + torch.index_select(v, 0, sender) * dv_v.unsqueeze(1)
        return scatter_sum(ds, receiver, n), scatter_sum(dv, receiver, n)


class Update(nn.Module):
    """Per-atom mixing of scalars and vectors through invariant norms and dot products (PaiNN eq. 9-11)."""

    def __init__(self, channels: int, eps: float = 1e-8):
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.vec_u = nn.Linear(channels, channels, bias=False)
        self.vec_v = nn.Linear(channels, channels, bias=False)
        self.gate = MLP(2 * channels, channels, 3 * channels)

    def forward(self, s, v):
        u_v = self.vec_u(v)
        v_v = self.vec_v(v)
        # eps keeps the norm differentiable at v = 0 (isolated atoms, first layer)
        v_norm = torch.sqrt(torch.sum(v_v**2, dim=1) + self.eps)
        a_vv, a_sv, a_ss = torch.split(self.gate(torch.cat([s, v_norm], dim=-1)), self.channels, dim=-1)
        v = v + a_vv.unsqueeze(1) * u_v
        s = s + a_sv * torch.sum(u_v * v_v, dim=1) + a_ss
        return s, v


def traceless_outer(unit: torch.Tensor) -> torch.Tensor:
    """r̂ r̂ᵀ − I/3 per edge (E, 3, 3): the symmetric traceless rank-2 tensor of a bond direction."""
    eye = torch.eye(3, dtype=unit.dtype, device=unit.device)
    return unit.unsqueeze(-1) * unit.unsqueeze(-2) - eye / 3.0


class TensorInteraction(nn.Module):
    """Messages of symmetric traceless rank-2 features T (N, 3, 3, Ft), as in TensorNet (Simeon & De Fabritiis
    2023), added beside PaiNN's scalars and vectors: dT_i = sum_j w1(r) a(s_j) (r̂r̂ᵀ − I/3) + w2(r) b(s_j) T_j.
    Both terms are symmetric and traceless, and rotate as R T Rᵀ."""

    def __init__(self, channels: int, tensor_channels: int, num_radial: int):
        super().__init__()
        self.tensor_channels = tensor_channels
        self.context = nn.Linear(channels, 2 * tensor_channels)
        self.filter = nn.Linear(num_radial, 2 * tensor_channels)

    def forward(self, s, t, radial, envelope, outer, edge_index, norm: float, first_layer: bool):
        receiver, sender = edge_index[0], edge_index[1]
        x = torch.index_select(self.context(s), 0, sender) * self.filter(radial) * envelope.unsqueeze(-1)
        a, b = torch.split(x, self.tensor_channels, dim=-1)
        dt = outer.unsqueeze(-1) * a.unsqueeze(1).unsqueeze(1)
        if not first_layer:  # T is identically zero before the first interaction
            dt = dt + torch.index_select(t, 0, sender) * b.unsqueeze(1).unsqueeze(1)
        return t + scatter_sum(dt, receiver, s.shape[0]) * norm


class TensorUpdate(nn.Module):
    """Per-atom coupling of T with scalars and vectors through invariants: its Frobenius norms and uᵀTu (u a
    channel mix of the vectors) feed a gate MLP, which updates the scalars, rescales T and adds T·u to the vectors.
    Channel mixing of T and u has no bias (equivariance)."""

    def __init__(self, channels: int, tensor_channels: int, eps: float = 1e-8):
        super().__init__()
        self.channels = channels
        self.tensor_channels = tensor_channels
        self.eps = eps
        self.mix = nn.Linear(tensor_channels, tensor_channels, bias=False)
        self.vec_in = nn.Linear(channels, tensor_channels, bias=False)
        self.vec_out = nn.Linear(tensor_channels, channels, bias=False)
        self.gate = MLP(channels + 2 * tensor_channels, channels, channels + 2 * tensor_channels)

    def forward(self, s, v, t):
        t_mix = self.mix(t)
        t_norm = torch.sqrt(torch.sum(t_mix**2, dim=(1, 2)) + self.eps)
        u = self.vec_in(v)  # (N, 3, Ft)
        tu = torch.einsum("nabc,nbc->nac", t_mix, u)
        utu = torch.sum(u * tu, dim=1)
        ds, g_t, g_v = torch.split(
            self.gate(torch.cat([s, t_norm, utu], dim=-1)),
            [self.channels, self.tensor_channels, self.tensor_channels],
            dim=-1,
        )
        t = t + g_t.unsqueeze(1).unsqueeze(1) * t_mix
        v = v + self.vec_out(tu * g_v.unsqueeze(1))
        return s + ds, v, t
