"""Hamiltonian learning: an equivariant head on the foundation encoder that predicts the AO Fock matrix.

The encoder (``triscale-base``) gives every atom scalar features s (N, F) and vector features v (N, 3, F). The head
builds, for each atom (on-site block) and each ordered pair (i, j) within ``pair_cutoff`` (pair block), three
kinds of Cartesian features and reads the AO blocks from them:

* s–s: scalars (invariant MLPs of s_i, s_j and a radial basis of r_ij);
* s–p and p–s: vectors, gated sums of the unit vector u_ij and linear maps of v_i, v_j (no bias, so they rotate);
* p–p: rank-2 tensors ``a·I + g_sym ⊙ sym(V ⊗ W) + g_anti ⊙ anti(V ⊗ W)`` from two such vector sets V, W
  (the symmetrised outer products carry l = 0 and l = 2, the antisymmetric part l = 1).

Read-outs are linear maps over channels, one per element (on-site) or element pair (pair blocks), with bias only on
the s–s output, so each block transforms as D_l(R) B D_l'(R)ᵀ. The Cartesian p index is mapped to the code's AO
order by :class:`~triscale.quantum.basis.BasisLayout`, giving ``F(R·x) = U F(x) Uᵀ`` exactly; the matrix is
symmetrised as ½(B_ij + B_jiᵀ). Pair blocks are multiplied by a smooth envelope that vanishes at ``pair_cutoff``.

Units: Hartree (the codes' unit for AO matrices). ``predict_hamiltonian`` returns eV for orbital energies.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from torch import nn

from triscale.foundation.layers import MLP, BesselBasis, Interaction, PolynomialEnvelope, Update, scatter_sum
from triscale.quantum.basis import BasisLayout, basis_layout

__all__ = [
    "HamiltonianConfig",
    "HamiltonianHead",
    "HamiltonianModel",
    "HamiltonianPrediction",
    "prepare_sample",
    "collate_samples",
    "load_hamiltonian_model",
    "predict_hamiltonian",
    "CHECKPOINT_DIR",
]

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass
class HamiltonianConfig:
    """Everything needed to rebuild a head; round-trips through ``config.json``."""

    basis: str = "gfn2-xtb"  # "gfn2-xtb" or "pyscf:<basis>"
    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])
    encoder: str = "triscale-base"  # provenance; the weights themselves are saved beside the head (encoder/)
    encoder_sha256: str | None = None  # fingerprint of the encoder weights the head was trained with
    encoder_channels: int = 64
    channels: int = 32
    hidden: int = 64
    num_rbf: int = 16
    pair_cutoff: float = 10.0
    head_layers: int = 0  # trainable message-passing layers (foundation Interaction + Update) on the frozen features
    mp_cutoff: float = 5.0  # their neighbour cutoff (Å)
    mp_avg_neighbors: float = 12.0  # normalisation of their summed messages
    target: str = "fock"  # the converged (self-consistent) Fock/KS matrix
    method: str = "gfn2-xtb"  # the labels' level of theory (e.g. "dft/b3lyp/6-31g")
    metadata: dict[str, Any] = field(default_factory=dict)

    def layout(self) -> BasisLayout:
        return basis_layout(self.basis, self.elements)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HamiltonianConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


class GaussianRBF(nn.Module):
    def __init__(self, cutoff: float, n: int):
        super().__init__()
        self.cutoff, self.n = cutoff, n
        self.width = cutoff / n

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        centers = torch.linspace(0.0, self.cutoff, self.n, dtype=r.dtype, device=r.device)
        return torch.exp(-(((r.unsqueeze(-1) - centers) / self.width) ** 2))


class TypedLinear(nn.Module):
    """``y_e = x_e W[type_e] (+ b[type_e])`` over the last axis: one linear map per element (pair) type."""

    def __init__(self, n_types: int, cin: int, cout: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_types, cin, cout) / math.sqrt(cin))
        self.bias = nn.Parameter(torch.zeros(n_types, cout)) if bias else None

    def forward(self, x: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        w = self.weight[types]  # (E, cin, cout)
        shape = x.shape
        y = torch.einsum("eic,eco->eio", x.reshape(shape[0], -1, shape[-1]), w).reshape(*shape[:-1], -1)
        if self.bias is not None:
            y = y + self.bias[types].view(shape[0], *([1] * (len(shape) - 2)), -1)
        return y


def _rank2(v: torch.Tensor, w: torch.Tensor, g0, gsym, ganti) -> torch.Tensor:
    """(E, 3, 3, C): g0 I + gsym sym(v⊗w) + ganti anti(v⊗w) per channel."""
    outer = torch.einsum("eac,ebc->eabc", v, w)
    sym = 0.5 * (outer + outer.transpose(1, 2))
    anti = 0.5 * (outer - outer.transpose(1, 2))
    eye = torch.eye(3, dtype=v.dtype, device=v.device).view(1, 3, 3, 1)
    return g0[:, None, None, :] * eye + gsym[:, None, None, :] * sym + ganti[:, None, None, :] * anti


class HamiltonianHead(nn.Module):
    """Blocks of the Fock matrix from encoder features: on-site (N, B, B) and pair (E, B, B), B = n_s + 3 n_p."""

    def __init__(self, config: HamiltonianConfig):
        super().__init__()
        self.config = config
        layout = config.layout()
        self.n_s, self.n_p, self.block = layout.n_s, layout.n_p, layout.block_size
        f, c, h = config.encoder_channels, config.channels, config.hidden
        n_el = len(config.elements)
        self.n_el = n_el
        type_of = torch.full((119,), -1, dtype=torch.long)
        for i, z in enumerate(config.elements):
            type_of[z] = i
        self.register_buffer("type_of", type_of, persistent=False)
        self.mp_radial = BesselBasis(config.mp_cutoff, config.num_rbf)
        self.mp_envelope = PolynomialEnvelope(config.mp_cutoff, 5)
        self.interactions = nn.ModuleList([Interaction(f, config.num_rbf) for _ in range(config.head_layers)])
        self.updates = nn.ModuleList([Update(f) for _ in range(config.head_layers)])
        self.node = MLP(f, h, c)
        self.vec_a = nn.Linear(f, c, bias=False)
        self.vec_b = nn.Linear(f, c, bias=False)
        self.rbf = GaussianRBF(config.pair_cutoff, config.num_rbf)
        self.envelope = PolynomialEnvelope(config.pair_cutoff, 5)
        self.onsite_gates = MLP(c, h, 6 * c)
        # pair gates: 10 chunks for the pair block, 3 for the neighbour sums that feed the on-site block
        self.pair_gates = MLP(2 * c + config.num_rbf, h, 13 * c)
        ns, npp = self.n_s, self.n_p
        for prefix, n_types in (("on", n_el), ("pair", n_el * n_el)):
            setattr(self, f"{prefix}_ss", TypedLinear(n_types, c, ns * ns, bias=True))
            setattr(self, f"{prefix}_sp", TypedLinear(n_types, 2 * c, ns * npp, bias=False))
            setattr(self, f"{prefix}_ps", TypedLinear(n_types, 2 * c, npp * ns, bias=False))
            setattr(self, f"{prefix}_pp", TypedLinear(n_types, c, npp * npp, bias=False))
        # fitted from data (saved), in Eh: the mean on-site block per element, stored by its rotation-invariant
        # parts only (s-s entries; p-p shell pairs as multiples of I), so the baseline is equivariant whatever the
        # values; and the scale of the targets around it
        self.register_buffer("onsite_ss", torch.zeros(n_el, ns, ns))
        self.register_buffer("onsite_pp", torch.zeros(n_el, npp, npp))
        self.register_buffer("scale", torch.ones(()))

    def onsite_mean(self) -> torch.Tensor:
        """(n_el, B, B) on-site baseline blocks in the canonical layout."""
        ns, npp = self.n_s, self.n_p
        out = self.onsite_ss.new_zeros((self.n_el, self.block, self.block))
        out[:, :ns, :ns] = self.onsite_ss
        if npp:
            eye = torch.eye(3, dtype=out.dtype, device=out.device)
            out[:, ns:, ns:] = torch.einsum("ntu,ab->ntaub", self.onsite_pp, eye).reshape(self.n_el, 3 * npp, 3 * npp)
        return out

    def _assemble(self, ss, sp, ps, pp) -> torch.Tensor:
        """(E, B, B) canonical blocks from ss (E, ns*ns), sp (E, 3, ns*np), ps (E, 3, np*ns), pp (E, 3, 3, np*np)."""
        e, ns, npp = ss.shape[0], self.n_s, self.n_p
        out = ss.new_zeros((e, self.block, self.block))
        out[:, :ns, :ns] = ss.view(e, ns, ns)
        if npp:
            sp = sp.view(e, 3, ns, npp).permute(0, 2, 3, 1).reshape(e, ns, 3 * npp)  # (s, p-shell, xyz)
            ps = ps.view(e, 3, npp, ns).permute(0, 2, 1, 3).reshape(e, 3 * npp, ns)
            pp = pp.view(e, 3, 3, npp, npp).permute(0, 3, 1, 4, 2).reshape(e, 3 * npp, 3 * npp)
            out[:, :ns, ns:] = sp
            out[:, ns:, :ns] = ps
            out[:, ns:, ns:] = pp
        return out

    def forward(
        self, s: torch.Tensor, v: torch.Tensor, numbers: torch.Tensor, positions: torch.Tensor, pairs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config.channels
        types = self.type_of[numbers]
        # pair geometry: u points from i to j
        i, j = pairs[0], pairs[1]
        d = positions[j] - positions[i]
        r = torch.linalg.norm(d, dim=-1)
        u = d / r.unsqueeze(-1)
        if len(self.interactions):
            near = r < self.config.mp_cutoff
            edges, r_mp, u_mp = pairs[:, near], r[near], u[near]
            radial, env = self.mp_radial(r_mp), self.mp_envelope(r_mp)
            norm = 1.0 / self.config.mp_avg_neighbors
            for interaction, update in zip(self.interactions, self.updates):
                s, v = interaction(s, v, radial, env, u_mp, edges, norm)
                s, v = update(s, v)
        x = self.node(s)
        a, b = self.vec_a(v), self.vec_b(v)  # (N, 3, C)
        env = self.envelope(r)
        h = self.pair_gates(torch.cat([x[i], x[j], self.rbf(r)], dim=-1)) * env.unsqueeze(-1)
        # neighbour sums onto atom i: sum_j g u_ij and sum_j g u_ij u_ijᵀ per channel. Products of summed vectors
        # cannot express sum_j u_ij u_ijᵀ (e.g. the p-p anisotropy of O in water), so the on-site rank-2
        # features get it directly (TensorNet-style).
        h_on, h_pair = h[:, 10 * c :], h[:, : 10 * c]
        n = s.shape[0]
        nv1 = scatter_sum(u.unsqueeze(-1) * h_on[:, None, :c], i, n)
        nv2 = scatter_sum(u.unsqueeze(-1) * h_on[:, None, c : 2 * c], i, n)
        uu = (u.unsqueeze(-1) * u.unsqueeze(-2)).unsqueeze(-1)  # (E, 3, 3, 1)
        nt = scatter_sum(uu * h_on[:, None, None, 2 * c :], i, n)
        # on-site
        g = self.onsite_gates(x)
        gs, ga, gb, g0, gsym, ganti = torch.split(g, c, dim=-1)
        va, vb = a * ga.unsqueeze(1) + nv1, b * gb.unsqueeze(1) + nv2
        vec = torch.cat([va, vb], dim=-1)
        t2 = _rank2(va, vb, g0, gsym, ganti) + nt
        on = self._assemble(
            self.on_ss(gs, types),
            self.on_sp(vec, types),
            self.on_ps(vec, types),
            self.on_pp(t2, types),
        )
        on = on + self.onsite_mean()[types] / self.scale
        # pairs (i, j)
        g1, g2, g3, g4, g5, g6, g7, g8, g9, g10 = torch.split(h_pair, c, dim=-1)
        vv = u.unsqueeze(-1) * g1.unsqueeze(1) + a[i] * g2.unsqueeze(1) + a[j] * g3.unsqueeze(1)
        ww = u.unsqueeze(-1) * g4.unsqueeze(1) + b[i] * g5.unsqueeze(1) + b[j] * g6.unsqueeze(1)
        ptypes = types[i] * self.n_el + types[j]
        vec = torch.cat([vv, ww], dim=-1)
        pair = self._assemble(
            self.pair_ss(g10, ptypes),
            self.pair_sp(vec, ptypes),
            self.pair_ps(vec, ptypes),
            self.pair_pp(_rank2(vv, ww, g7, g8, g9), ptypes),
        )
        pair = pair * env.view(-1, 1, 1)
        return on * self.scale, pair * self.scale


# ----------------------------------------------------------------------------------------------- data plumbing


def prepare_sample(
    numbers: np.ndarray, positions: np.ndarray, layout: BasisLayout, pair_cutoff: float
) -> dict[str, np.ndarray]:
    """Index arrays that place the head's blocks into the AO matrix of one molecule.

    ``gather[p*n+q]`` is the flat index of F[p, q] in the (local) block storage: on-site blocks first
    (atom i -> block i), pair blocks after (pair e -> block N + e); ``gather_t`` is that of F[q, p]; -1 where the
    pair is beyond the cutoff (predicted as 0).
    """
    numbers = np.asarray(numbers)
    positions = np.asarray(positions, dtype=float)
    n = len(numbers)
    dist = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    ii, jj = np.nonzero((dist < pair_cutoff) & ~np.eye(n, dtype=bool))
    pair_id = np.full((n, n), -1, dtype=np.int64)
    pair_id[ii, jj] = np.arange(len(ii))
    block_of = np.where(np.eye(n, dtype=bool), np.arange(n)[:, None], np.where(pair_id >= 0, n + pair_id, -1))
    ao_atom, ao_can = layout.canonical(numbers)
    bsz = layout.block_size
    blk = block_of[ao_atom[:, None], ao_atom[None, :]]
    within = ao_can[:, None] * bsz + ao_can[None, :]
    gather = np.where(blk >= 0, blk * bsz * bsz + within, -1)
    return {
        "numbers": numbers.astype(np.int64),
        "positions": positions,
        "pairs": np.stack([ii, jj]).astype(np.int64),
        "gather": gather.reshape(-1),
        "gather_t": gather.T.reshape(-1),
        "n_ao": np.asarray(len(ao_atom)),
    }


def collate_samples(samples: list[dict[str, Any]], block: int) -> dict[str, torch.Tensor]:
    """Batch prepared samples: atoms and pairs concatenated, gather indices offset into the joint storage
    ``[on-site blocks of all molecules, pair blocks of all molecules, one zero]``."""
    n_atoms = [len(s["numbers"]) for s in samples]
    n_pairs = [s["pairs"].shape[1] for s in samples]
    n_tot, e_tot = sum(n_atoms), sum(n_pairs)
    bb = block * block
    zero_slot = (n_tot + e_tot) * bb
    gathers, gathers_t, pairs = [], [], []
    a_off = e_off = 0
    for s, n, e in zip(samples, n_atoms, n_pairs):
        pairs.append(s["pairs"] + a_off)
        for key, out in (("gather", gathers), ("gather_t", gathers_t)):
            g = s[key]
            blk, within = g // bb, g % bb
            glob = np.where(blk < n, blk + a_off, n_tot + e_off + (blk - n)) * bb + within
            out.append(np.where(g >= 0, glob, zero_slot))
        a_off += n
        e_off += e
    batch = {
        "numbers": torch.as_tensor(np.concatenate([s["numbers"] for s in samples])),
        "positions": torch.as_tensor(np.concatenate([s["positions"] for s in samples])),
        "pairs": torch.as_tensor(np.concatenate(pairs, axis=1)),
        "gather": torch.as_tensor(np.concatenate(gathers)),
        "gather_t": torch.as_tensor(np.concatenate(gathers_t)),
        "n_ao": torch.as_tensor([int(s["n_ao"]) for s in samples]),
        "n_atoms": torch.as_tensor(n_atoms),
    }
    for key in ("s", "v", "target"):
        if key in samples[0]:
            batch[key] = torch.as_tensor(np.concatenate([np.asarray(x[key]) for x in samples]))
    return batch


def assemble_flat(on: torch.Tensor, pair: torch.Tensor, gather: torch.Tensor, gather_t: torch.Tensor) -> torch.Tensor:
    """The concatenated, symmetrised AO matrices (flattened row-major per molecule)."""
    store = torch.cat([on.reshape(-1), pair.reshape(-1), on.new_zeros(1)])
    return 0.5 * (store[gather] + store[gather_t])


# ----------------------------------------------------------------------------------------------- the model


class HamiltonianModel(nn.Module):
    """Foundation encoder + :class:`HamiltonianHead`. ``forward(batch)`` returns the flat predicted matrices."""

    def __init__(self, config: HamiltonianConfig, encoder: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.layout = config.layout()
        if encoder is None:
            from triscale.foundation.checkpoints import load_checkpoint

            encoder = load_checkpoint(config.encoder)
        self.encoder = encoder
        self.head = HamiltonianHead(config)

    def encode(self, atoms: Atoms) -> tuple[torch.Tensor, torch.Tensor]:
        from triscale.foundation.graph import atoms_to_graph

        enc = self.encoder
        dom = enc.config.domain_index("molecule") if "molecule" in enc.config.domains else 0
        graph = atoms_to_graph(atoms, enc.config.cutoff, domain=dom)
        dtype = enc.embedding.weight.dtype
        return enc.encode(graph, graph["positions"].to(dtype), graph["cell"].to(dtype))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        dtype = self.head.node[0].weight.dtype
        on, pair = self.head(
            batch["s"].to(dtype), batch["v"].to(dtype), batch["numbers"], batch["positions"].to(dtype), batch["pairs"]
        )
        return assemble_flat(on, pair, batch["gather"], batch["gather_t"])

    @torch.no_grad()
    def fock(self, atoms: Atoms) -> np.ndarray:
        """The predicted Fock matrix (Hartree, float64) of one molecule in the code's AO order."""
        self.layout.check(atoms.numbers)
        s, v = self.encode(atoms)
        sample = prepare_sample(atoms.numbers, atoms.positions, self.layout, self.config.pair_cutoff)
        sample.update(s=s.numpy(), v=v.numpy())
        flat = self.forward(collate_samples([sample], self.layout.block_size))
        n = int(sample["n_ao"])
        return flat.double().numpy().reshape(n, n)

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json``, the head's weights (``head.safetensors``) and the frozen encoder it was trained on
        (``encoder/``, a ``save_pretrained`` directory): the head is only valid with exactly those features, and
        the shipped ``triscale-base`` may be retrained later. Identical encoder files are stored once by git."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(d / "encoder"))
        self.config.encoder_sha256 = encoder_fingerprint(self.encoder)
        (d / "config.json").write_text(self.config.to_json() + "\n")
        state = {k: t.detach().contiguous().clone() for k, t in self.head.state_dict().items()}
        save_file(state, str(d / "head.safetensors"))
        return d


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-256 over the parameters that determine the encoder's features (embeddings, interaction and update
    layers: names, shapes, float32 bytes); energy heads and fitted statistics do not enter."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(encoder.named_parameters()):
        if not name.startswith(("embedding.", "domain_embedding.", "interactions.", "updates.")):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()


def load_hamiltonian_model(
    name_or_path: str | Path = "gfn2-hcno", encoder: nn.Module | None = None
) -> HamiltonianModel:
    """A shipped head by name (``gfn2-hcno``, ...) or a directory written by :meth:`HamiltonianModel.save`."""
    from safetensors.torch import load_file

    from triscale.common import find_checkpoint

    p = find_checkpoint(name_or_path, CHECKPOINT_DIR, kind="Hamiltonian model")
    config = HamiltonianConfig.from_dict(json.loads((p / "config.json").read_text()))
    if encoder is None:
        from triscale.foundation.checkpoints import load_checkpoint

        encoder = (
            load_checkpoint(str(p / "encoder"))
            if (p / "encoder" / "config.json").is_file()
            else load_checkpoint(config.encoder)
        )
        if config.encoder_sha256 and encoder_fingerprint(encoder) != config.encoder_sha256:
            raise ValueError(
                f"The Hamiltonian head in {p} was trained on other encoder weights than {config.encoder!r} has now; "
                "its features would not match. Save the head together with its encoder (HamiltonianModel.save)."
            )
    model = HamiltonianModel(config, encoder=encoder)
    model.head.load_state_dict(load_file(str(p / "head.safetensors")))
    return model.eval()


# ----------------------------------------------------------------------------------------------- prediction


@dataclass
class HamiltonianPrediction:
    """A predicted Fock matrix and what follows from it with the true overlap."""

    method: str  # level of theory the model imitates
    basis: str
    fock_Eh: np.ndarray
    overlap: np.ndarray | None
    orbital_energies_eV: np.ndarray | None
    homo_index: int | None
    coefficients: np.ndarray | None

    @property
    def gap_eV(self) -> float | None:
        if self.orbital_energies_eV is None or self.homo_index is None:
            return None
        return float(self.orbital_energies_eV[self.homo_index + 1] - self.orbital_energies_eV[self.homo_index])


_MODELS: dict[str, HamiltonianModel] = {}

#: split-conformal calibration of a head's HOMO-LUMO gap, next to its weights (``quantum.train.calibrate_gap``)
CONFORMAL_FILE = "conformal.json"


def gap_conformal(name_or_path: str | Path = "gfn2-hcno"):
    """The head's calibrated gap interval (:class:`triscale.uncertainty.SplitConformal`), or None if it has none."""
    from triscale.common import CheckpointNotFound, find_checkpoint
    from triscale.uncertainty import SplitConformal

    try:
        f = find_checkpoint(name_or_path, CHECKPOINT_DIR) / CONFORMAL_FILE
    except CheckpointNotFound:
        return None
    return SplitConformal.from_dict(json.loads(f.read_text())) if f.is_file() else None


def overlap_matrix(atoms: Atoms, basis: str) -> np.ndarray:
    """The AO overlap of the model's basis: PySCF integrals, or tblite's (which runs its SCF too; ~10 ms)."""
    if basis.startswith("pyscf:"):
        from triscale.quantum.electronic import build_pyscf_mol

        return np.asarray(build_pyscf_mol(atoms, basis.split(":", 1)[1]).intor("int1e_ovlp"))
    from triscale.quantum.electronic import electronic_structure

    return electronic_structure(atoms, basis).overlap


def n_occupied(atoms: Atoms, basis: str, charge: int = 0) -> int:
    """Doubly occupied orbitals of a closed-shell molecule (xTB counts valence electrons only)."""
    if basis.startswith("pyscf:"):
        n_el = int(atoms.numbers.sum()) - charge
    else:
        valence = {1: 1, 6: 4, 7: 5, 8: 6}
        n_el = sum(valence[int(z)] for z in atoms.numbers) - charge
    return n_el // 2


def predict_hamiltonian(
    atoms: Atoms, model: str | HamiltonianModel = "gfn2-hcno", with_orbitals: bool = True
) -> HamiltonianPrediction:
    """Predict the Fock matrix of a closed-shell H/C/N/O molecule; with ``with_orbitals`` also the orbital
    energies and coefficients from the generalized eigenproblem F C = S C ε with the true overlap S."""
    import scipy.linalg as sl

    if isinstance(model, str):
        if model not in _MODELS:
            _MODELS[model] = load_hamiltonian_model(model)
        model = _MODELS[model]
    fock = model.fock(atoms)
    s = eps = coeff = homo = None
    if with_orbitals:
        s = overlap_matrix(atoms, model.config.basis)
        e, coeff = sl.eigh(fock, s)
        eps = e * units.Hartree
        homo = n_occupied(atoms, model.config.basis) - 1
    return HamiltonianPrediction(model.config.method, model.config.basis, fock, s, eps, homo, coeff)
