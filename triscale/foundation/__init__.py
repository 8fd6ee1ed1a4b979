"""The foundation encoder: graphs, layers, the multi-domain model, its ASE calculator and checkpoints."""

from triscale.foundation.calculator import TriScaleCalculator
from triscale.foundation.config import FoundationConfig
from triscale.foundation.graph import StructureError, atoms_to_graph, collate, neighbor_list
from triscale.foundation.model import FoundationModel

__all__ = [
    "FoundationConfig",
    "FoundationModel",
    "StructureError",
    "TriScaleCalculator",
    "atoms_to_graph",
    "collate",
    "neighbor_list",
]
