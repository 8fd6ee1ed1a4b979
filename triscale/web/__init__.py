"""The browser workbench (``triscale web``): chat with the science agent, a 3D structure viewer, plots, runs.

It sits above the agents in the layering (it imports ``triscale.agents`` and ``triscale.tools``; nothing imports
it). Starlette and uvicorn are imported only when an app is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["make_web_app", "web_server", "serve_web"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from triscale.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'triscale.web' has no attribute {name!r}")
