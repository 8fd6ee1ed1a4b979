"""A foundation-model calculator with adapters: one adapter, a committee of adapters, or a committee directory
whose split-conformal calibration turns the committee's spread into calibrated error bars. The package root's
:func:`triscale.calculator` and the tools' calculator factory both build calculators here."""

from __future__ import annotations

from typing import Any

from triscale.foundation import FoundationModel, TriScaleCalculator
from triscale.foundation.checkpoints import load_checkpoint

__all__ = ["calculator_with_adapters"]


def calculator_with_adapters(
    model: str | FoundationModel = "triscale-base",
    domain: str | None = None,
    adapters: list[str] | None = None,
    dtype: str = "float32",
    **kwargs: Any,
) -> TriScaleCalculator:
    """An ASE calculator for a shipped or saved model, optionally with one adapter or a committee of adapters; a
    committee directory's conformal calibration adds ``energy_uncertainty``/``forces_uncertainty`` to the results."""
    if isinstance(model, str):
        model = load_checkpoint(model)
    if adapters:
        from triscale.finetune.adapters import attach_adapters, read_metadata

        model = attach_adapters(model, adapters)
        if isinstance(adapters, (list, tuple)) and len(adapters) == 1:
            adapters = adapters[0]
        if not isinstance(adapters, (list, tuple)) and "conformal" not in kwargs:
            # one committee directory: its calibration on held-out structures gives calibrated error bars
            kwargs["conformal"] = read_metadata(adapters).get("conformal")
    return TriScaleCalculator(model, domain=domain, dtype=dtype, **kwargs)
