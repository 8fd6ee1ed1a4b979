"""Lazy package exports: a package names its public API in ``__all__`` without importing heavy submodules
(torch, PySCF, LangChain) until one of the names is used, so ``triscale --help`` starts fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: ``where`` maps a public name to the submodule (relative to
    the package, e.g. ``"trainer"``) that defines it; the submodule is imported on first use.

    >>> __getattr__ = lazy_exports(__name__, {"finetune": "trainer"})
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
