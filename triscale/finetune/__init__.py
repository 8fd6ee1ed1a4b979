"""Fine-tuning the foundation model on a user's small dataset: LoRA / heads / full, E0 refit, replay, adapter
committees for uncertainty, and scalar property heads (``triscale finetune``), all trained by one loop
(:class:`~triscale.finetune.loop.TrainLoop`).

Importing this package is light; torch/PEFT load when a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "DatasetError",
    "FinetuneRecipe",
    "PropertyModel",
    "ResumeError",
    "TrainLoop",
    "add_adapter",
    "attach_adapters",
    "finetune",
    "load_adapter",
    "load_property_model",
    "load_recipe",
    "merge",
    "read_metadata",
    "use_adapter",
    "validate_records",
]

_LOCATIONS = {
    "DatasetError": "triscale.finetune.data",
    "validate_records": "triscale.finetune.data",
    "FinetuneRecipe": "triscale.finetune.recipe",
    "load_recipe": "triscale.finetune.recipe",
    "add_adapter": "triscale.finetune.adapters",
    "attach_adapters": "triscale.finetune.adapters",
    "load_adapter": "triscale.finetune.adapters",
    "merge": "triscale.finetune.adapters",
    "read_metadata": "triscale.finetune.adapters",
    "use_adapter": "triscale.finetune.adapters",
    "finetune": "triscale.finetune.trainer",
    "PropertyModel": "triscale.finetune.property",
    "ResumeError": "triscale.finetune.loop",
    "TrainLoop": "triscale.finetune.loop",
    "load_property_model": "triscale.finetune.property",
}

if TYPE_CHECKING:  # pragma: no cover
    from triscale.finetune.adapters import (
        add_adapter,
        attach_adapters,
        load_adapter,
        merge,
        read_metadata,
        use_adapter,
    )
    from triscale.finetune.data import DatasetError, validate_records
    from triscale.finetune.loop import ResumeError, TrainLoop
    from triscale.finetune.property import PropertyModel, load_property_model
    from triscale.finetune.recipe import FinetuneRecipe, load_recipe
    from triscale.finetune.trainer import finetune


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'triscale.finetune' has no attribute {name!r}")
