"""The typed configuration of the foundation model; it round-trips through ``config.json``."""

from __future__ import annotations

from transformers import PreTrainedConfig

DEFAULT_DOMAINS = ("molecule", "material")


class FoundationConfig(PreTrainedConfig):
    """Size and physics of a TriScale encoder.

    Args:
        hidden_channels: feature channels F of scalars (N, F) and vectors (N, 3, F).
        num_layers: message-passing layers (receptive field = num_layers x cutoff).
        num_radial: Bessel radial basis functions.
        cutoff: neighbour cutoff in Å; messages vanish smoothly (with two derivatives) at it.
        envelope_exponent: p of the polynomial cutoff envelope.
        max_atomic_number: size of the element embedding (Z = 1..max_atomic_number).
        elements: atomic numbers the model was trained on; others are rejected by the calculator.
            ``None`` (an untrained model) accepts every Z up to ``max_atomic_number``.
        domains: names of the label domains; each has its own energy head and reference energies E0.
        domain_elements: per domain, the atomic numbers it has labels for (its E0 is fitted only for those);
            ``None``: every element in ``elements`` for every domain.
        avg_num_neighbors: normalisation of summed messages, so features stay O(1) across densities.
        head_hidden_channels: width of the per-atom readout MLPs.
        property_heads: extra heads; ``"dipole"`` (partial charges x positions + atomic dipoles, e·Å).
        tensor_channels: channels Ft of symmetric traceless rank-2 features (N, 3, 3, Ft), TensorNet-style;
            0 (every shipped model): scalars and vectors only.
    """

    model_type = "triscale"

    def __init__(
        self,
        hidden_channels: int = 64,
        num_layers: int = 3,
        num_radial: int = 16,
        cutoff: float = 5.0,
        envelope_exponent: int = 5,
        max_atomic_number: int = 94,
        elements: list[int] | None = None,
        domains: list[str] | None = None,
        domain_elements: dict[str, list[int]] | None = None,
        avg_num_neighbors: float = 24.0,
        head_hidden_channels: int = 32,
        property_heads: list[str] | None = None,
        tensor_channels: int = 0,
        **kwargs,
    ):
        if hidden_channels < 1 or num_layers < 1 or num_radial < 1:
            raise ValueError("hidden_channels, num_layers and num_radial must be positive")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.hidden_channels = int(hidden_channels)
        self.num_layers = int(num_layers)
        self.num_radial = int(num_radial)
        self.cutoff = float(cutoff)
        self.envelope_exponent = int(envelope_exponent)
        self.max_atomic_number = int(max_atomic_number)
        self.elements = sorted(int(z) for z in elements) if elements is not None else None
        self.domains = list(domains) if domains is not None else list(DEFAULT_DOMAINS)
        self.domain_elements = (
            {str(d): sorted(int(z) for z in zs) for d, zs in domain_elements.items()} if domain_elements else None
        )
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.head_hidden_channels = int(head_hidden_channels)
        if tensor_channels < 0:
            raise ValueError(f"tensor_channels must be >= 0, got {tensor_channels}")
        self.tensor_channels = int(tensor_channels)
        self.property_heads = list(property_heads) if property_heads is not None else ["dipole"]
        unknown = set(self.property_heads) - {"dipole"}
        if unknown:
            raise ValueError(f"unknown property head(s) {sorted(unknown)}; known: ['dipole']")
        super().__init__(**kwargs)

    @property
    def supported_elements(self) -> list[int]:
        return self.elements if self.elements is not None else list(range(1, self.max_atomic_number + 1))

    def supported_elements_of(self, domain: str) -> list[int]:
        """Elements the ``domain`` has reference energies for (all supported elements when not recorded)."""
        if self.domain_elements is not None and domain in self.domain_elements:
            return self.domain_elements[domain]
        return self.supported_elements

    def domain_index(self, domain: str) -> int:
        try:
            return self.domains.index(domain)
        except ValueError:
            raise ValueError(f"unknown domain {domain!r}; this model has {self.domains}") from None
