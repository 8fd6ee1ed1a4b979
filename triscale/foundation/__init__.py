"""The foundation encoder: graphs, layers, the multi-domain model, its ASE calculator and checkpoints."""

from triscale.foundation.calculator import TriScaleCalculator
from triscale.foundation.config import FoundationConfig
from triscale.foundation.datasets import atoms_to_record, load_structure_dataset, record_to_atoms
from triscale.foundation.graph import StructureError, atoms_to_graph, collate, neighbor_list
from triscale.foundation.model import FoundationModel

__all__ = [
    "FoundationConfig",
    "FoundationModel",
    "StructureError",
    "atoms_to_record",
    "load_structure_dataset",
    "record_to_atoms",
    "TriScaleCalculator",
    "atoms_to_graph",
    "collate",
    "neighbor_list",
]
