"""TriScale: AI for science across quantum, atomistic and continuum scales.

The top level stays import-light (no torch) so that ``triscale --help`` starts fast; the heavy
units are imported when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triscale.common import VERSION as __version__

__all__ = ["__version__", "calculator", "load"]

if TYPE_CHECKING:  # pragma: no cover
    from triscale.foundation import FoundationModel, TriScaleCalculator


def load(name_or_path: str = "triscale-base", **kwargs: Any) -> FoundationModel:
    """Load a foundation model: a shipped checkpoint by name (offline) or a ``save_pretrained`` directory."""
    from triscale.foundation.checkpoints import load_checkpoint

    return load_checkpoint(name_or_path, **kwargs)


def calculator(
    model: str | FoundationModel = "triscale-base",
    domain: str | None = None,
    adapters: list[str] | None = None,
    dtype: str = "float32",
    **kwargs: Any,
) -> TriScaleCalculator:
    """An ASE calculator for a shipped or saved model, optionally with one adapter or a committee of adapters; a
    committee directory's conformal calibration adds ``energy_uncertainty``/``forces_uncertainty`` to the results."""
    from triscale.finetune.calculator import calculator_with_adapters

    return calculator_with_adapters(model, domain=domain, adapters=adapters, dtype=dtype, **kwargs)
