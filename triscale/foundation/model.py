"""The TriScale foundation model: an equivariant encoder with per-domain energy heads and property heads."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel

from triscale.foundation import keys as K
from triscale.foundation.config import FoundationConfig
from triscale.foundation.layers import (
    MLP,
    BesselBasis,
    Interaction,
    PolynomialEnvelope,
    TensorInteraction,
    TensorUpdate,
    Update,
    scatter_sum,
    traceless_outer,
)


class DipoleHead(nn.Module):
    """Molecular dipole (e·Å) = sum_i q_i r_i + mu_i: charges from scalars, atomic dipoles from vectors.

    Charges are shifted to sum to zero per structure, which makes the dipole independent of the origin.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.charge = MLP(channels, hidden, 1)
        self.atomic_dipole = nn.Linear(channels, 1, bias=False)

    def forward(self, s, v, positions, batch, num_atoms):
        n_graphs = num_atoms.shape[0]
        q = self.charge(s).squeeze(-1)
        q = q - (scatter_sum(q, batch, n_graphs) / num_atoms.to(q.dtype))[batch]
        mu = self.atomic_dipole(v).squeeze(-1)
        dipole = scatter_sum(q.unsqueeze(-1) * positions + mu, batch, n_graphs)
        return {K.DIPOLE: dipole, K.CHARGES: q}


class FoundationModel(PreTrainedModel):
    """E(3)-equivariant message-passing encoder (scalar + vector features) with multi-domain heads.

    ``forward(graph)`` takes a graph dict (see :mod:`triscale.foundation.keys`) and returns energies in float64,
    and forces (-dE/dR) and stress ((1/V) dE/dε under a symmetric strain) by automatic differentiation.
    """

    config_class = FoundationConfig
    base_model_prefix = "triscale"
    main_input_name = K.POSITIONS
    _no_split_modules: list[str] = []

    def __init__(self, config: FoundationConfig):
        super().__init__(config)
        f = config.hidden_channels
        n_domains = len(config.domains)
        self.embedding = nn.Embedding(config.max_atomic_number + 1, f)
        self.domain_embedding = nn.Embedding(n_domains, f)
        self.radial = BesselBasis(config.cutoff, config.num_radial)
        self.envelope = PolynomialEnvelope(config.cutoff, config.envelope_exponent)
        self.interactions = nn.ModuleList([Interaction(f, config.num_radial) for _ in range(config.num_layers)])
        self.updates = nn.ModuleList([Update(f) for _ in range(config.num_layers)])
        ft = config.tensor_channels
        if ft:  # rank-2 features (capacity grid, issue 14); no shipped model has them
            self.tensor_interactions = nn.ModuleList(
                [TensorInteraction(f, ft, config.num_radial) for _ in range(config.num_layers)]
            )
            self.tensor_updates = nn.ModuleList([TensorUpdate(f, ft) for _ in range(config.num_layers)])
        self.energy_heads = nn.ModuleList([MLP(f, config.head_hidden_channels, 1) for _ in range(n_domains)])
        # Per-domain statistics (buffers: saved, never trained by gradient descent), fitted from data:
        # E0[d, Z] reference energy per element (eV), and scale/shift of the learned per-atom energy (eV).
        self.register_buffer(
            "atomic_energies", torch.zeros(n_domains, config.max_atomic_number + 1, dtype=torch.float64)
        )
        self.register_buffer("energy_scale", torch.ones(n_domains, dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros(n_domains, dtype=torch.float64))
        self.property_heads = nn.ModuleDict()
        if "dipole" in config.property_heads:
            self.property_heads["dipole"] = DipoleHead(f, config.head_hidden_channels)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)
        elif isinstance(module, FoundationModel):
            module.atomic_energies.zero_()
            module.energy_scale.fill_(1.0)
            module.energy_shift.zero_()

    # Reference energies of heavy elements are ~1e3 eV; rounding them to float32 would cost ~1e-4 eV per atom,
    # so these statistics stay float64 whatever dtype the network runs in (only their device follows).
    _float64_buffers = ("atomic_energies", "energy_scale", "energy_shift")

    def _apply(self, fn, recurse=True):
        kept = {name: getattr(self, name) for name in self._float64_buffers}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            setattr(self, name, value.to(device=getattr(self, name).device, dtype=torch.float64))
        return self

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        # safetensors tensors come memory-mapped at arbitrary alignment, which selects other SIMD kernels and
        # changes float32 results in the last bit; owning aligned copies makes save -> load bit-identical.
        with torch.no_grad():
            for tensor in list(model.parameters()) + list(model.buffers()):
                tensor.data = tensor.data.clone()
        return model

    def linear_module_names(self) -> list[str]:
        """Names of every ``nn.Linear`` (the layers PEFT LoRA can adapt without breaking equivariance)."""
        return [name for name, module in self.named_modules() if isinstance(module, nn.Linear)]

    # ------------------------------------------------------------------------------------------------------
    #: edges per checkpointed chunk when evaluating without a double-backward graph (memory ~ this x 4F floats)
    inference_edge_chunk: int = 32_768

    def encode(
        self, graph: dict[str, torch.Tensor], positions: torch.Tensor, cell: torch.Tensor, edge_chunk: int | None = None
    ):
        """Scalar (N, F) and vector (N, 3, F) features; ``positions``/``cell`` may carry autograd history.

        ``edge_chunk``: process edges in checkpointed chunks of this size (bounded memory; not for double backward).
        """
        numbers = graph[K.ATOMIC_NUMBERS]
        batch = graph[K.BATCH]
        edge_index = graph[K.EDGE_INDEX]
        receiver, sender = edge_index[0], edge_index[1]
        shifts = graph[K.CELL_SHIFTS].to(positions.dtype)
        offsets = torch.einsum("ek,ekl->el", shifts, torch.index_select(cell, 0, batch[receiver]))
        vectors = torch.index_select(positions, 0, sender) - torch.index_select(positions, 0, receiver) + offsets
        r = torch.linalg.norm(vectors, dim=-1)
        unit = vectors / r.unsqueeze(-1)
        radial = self.radial(r)
        envelope = self.envelope(r)

        s = self.embedding(numbers) + self.domain_embedding(graph[K.DOMAIN])[batch]
        v = s.new_zeros((s.shape[0], 3, s.shape[1]))
        norm = 1.0 / self.config.avg_num_neighbors
        ft = self.config.tensor_channels
        if ft:
            t = s.new_zeros((s.shape[0], 3, 3, ft))
            outer = traceless_outer(unit)
        for layer, (interaction, update) in enumerate(zip(self.interactions, self.updates)):
            s, v = interaction(
                s,
                v,
                radial,
                envelope,
                unit,
                edge_index,
                norm,
                first_layer_zero_vectors=layer == 0,
                edge_chunk=edge_chunk,
            )
            s, v = update(s, v)
            if ft:  # rank-2 messages are not edge-chunked: memory grows with edges x 9 Ft
                t = self.tensor_interactions[layer](s, t, radial, envelope, outer, edge_index, norm, layer == 0)
                s, v, t = self.tensor_updates[layer](s, v, t)
        return s, v

    def atomic_energies_of(self, s: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-atom energies (N,) in float64: scale_d * head_d(s_i) + shift_d + E0[d, Z_i]."""
        atom_domain = graph[K.DOMAIN][graph[K.BATCH]]
        numbers = graph[K.ATOMIC_NUMBERS]
        if len(self.energy_heads) == 1:
            learned = self.energy_heads[0](s).squeeze(-1)
        else:  # every head on every atom, then pick: cheaper than masking for a handful of small heads
            learned = torch.cat([head(s) for head in self.energy_heads], dim=-1)
            learned = learned.gather(1, atom_domain.unsqueeze(-1)).squeeze(-1)
        energies = (
            learned.to(torch.float64) * self.energy_scale[atom_domain]
            + self.energy_shift[atom_domain]
            + self.atomic_energies[atom_domain, numbers]
        )
        return energies

    def forward(
        self,
        graph: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energy (B,) and per-atom energies (N,) in float64; forces (N, 3); stress/virial (B, 3, 3); heads."""
        if create_graph is None:
            create_graph = self.training
        dtype = self.embedding.weight.dtype
        batch = graph[K.BATCH]
        num_atoms = graph[K.NUM_ATOMS]
        n_graphs = num_atoms.shape[0]
        positions = graph[K.POSITIONS].to(dtype)
        cell = graph[K.CELL].to(dtype)
        need_grad = compute_forces or compute_stress
        with torch.enable_grad() if need_grad else torch.no_grad():
            if compute_forces:
                positions = positions.detach().requires_grad_(True)
            if compute_stress:
                # Symmetric strain applied to positions and cell: stress = (1/V) dE/d(strain).
                strain = torch.zeros((n_graphs, 3, 3), dtype=dtype, device=positions.device, requires_grad=True)
                sym = 0.5 * (strain + strain.transpose(1, 2))
                positions = positions + torch.einsum("ni,nij->nj", positions, sym[batch])
                cell = cell + torch.bmm(cell, sym)
            # Large inference graphs go through checkpointed edge chunks (bounded memory); training keeps the
            # plain path, which double backward needs.
            s, v = self.encode(graph, positions, cell, edge_chunk=None if create_graph else self.inference_edge_chunk)
            atomic = self.atomic_energies_of(s, graph)
            energy = scatter_sum(atomic, batch, n_graphs)
            out: dict[str, torch.Tensor] = {K.ENERGY: energy, K.ATOMIC_ENERGIES: atomic}
            if need_grad:
                inputs = ([positions] if compute_forces else []) + ([strain] if compute_stress else [])
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=create_graph, allow_unused=True, materialize_grads=True
                )
                if compute_forces:
                    out[K.FORCES] = -grads[0]
                if compute_stress:
                    de_dstrain = grads[-1]
                    volume = torch.abs(torch.linalg.det(graph[K.CELL].to(dtype)))
                    out[K.VIRIAL] = -de_dstrain
                    # Non-periodic structures have no volume: stress reported as zero there.
                    safe = torch.where(volume > 0, volume, torch.ones_like(volume))
                    out[K.STRESS] = torch.where(volume.view(-1, 1, 1) > 0, de_dstrain / safe.view(-1, 1, 1), 0.0)
        for head in self.property_heads.values():
            out.update(head(s, v, positions, batch, num_atoms))
        return out
