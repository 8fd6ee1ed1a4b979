"""Running a tool by name: look it up, validate the arguments, apply the wall-time limit, log the call.

The registry (:mod:`triscale.tools.registry`) fills :data:`~triscale.tools.base.REGISTRY` when the package is
imported; this module only reads it, so tools that call other tools (jobs, planner) import this, not the registry.
"""

from __future__ import annotations

import difflib
import time
from typing import Any

from pydantic import BaseModel, ValidationError

from triscale.tools.base import REGISTRY, Tool, ToolContext, ToolResult, format_validation_error
from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.workspace import Workspace

__all__ = ["as_workspace", "call_tool", "format_validation_error", "get_tool", "list_tools"]


def list_tools(category: str | None = None) -> list[Tool]:
    return [t for t in REGISTRY.values() if category is None or t.category == category]


def get_tool(name: str) -> Tool:
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(REGISTRY), n=3, cutoff=0.5)
    raise ToolInputError(
        f"Unknown tool {name!r}." + (f" Did you mean {', '.join(close)}?" if close else ""),
        hint=f"Available tools: {', '.join(sorted(REGISTRY))}.",
    )


def as_workspace(workspace: Workspace | str | None) -> Workspace:
    if isinstance(workspace, Workspace):
        return workspace
    return Workspace(workspace or "workspace")


def call_tool(
    name: str,
    args: dict[str, Any] | BaseModel | None,
    workspace: Workspace | str | None = None,
    *,
    timeout_s: float | None = None,
    cancel: Any = None,
) -> ToolResult:
    """Validate ``args`` against the tool's input model, run it and return its result model.

    Every failure is raised as a :class:`ToolError` with a message the caller can act on.
    """
    tool = get_tool(name)
    if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise ToolInputError(
            f"timeout_s must be a positive number of seconds, got {timeout_s!r}.",
            hint="Leave it unset for the tool's default limit.",
        )
    ws = as_workspace(workspace)
    if isinstance(args, BaseModel) and not isinstance(args, tool.input_model):
        args = args.model_dump()
    if not isinstance(args, tool.input_model):
        if args is not None and not isinstance(args, dict):
            raise ToolInputError(f"Arguments for {name} must be a JSON object, got {type(args).__name__}.")
        try:
            args = tool.input_model.model_validate(args or {})
        except ValidationError as e:
            raise ToolInputError(format_validation_error(e, tool.input_model, name)) from None
    limit = timeout_s if timeout_s is not None else (ws.timeout_s if ws.timeout_s is not None else tool.timeout_s)
    ctx = ToolContext(ws, tool, ws.new_call_id(), limit, cancel)
    t0 = time.monotonic()
    entry: dict[str, Any] = {
        "call_id": ctx.call_id,
        "tool": name,
        "args": args.model_dump(mode="json"),
        "started": time.time(),
    }
    try:
        result = tool.func(ctx, args)
    except ToolError as e:
        entry.update(status="error", error=str(e), wall_time_s=time.monotonic() - t0, created=ctx.created)
        ws.log_call(entry)
        raise
    except ValidationError as e:
        entry.update(status="error", error=str(e), wall_time_s=time.monotonic() - t0)
        ws.log_call(entry)
        raise ToolInputError(f"{name} produced invalid values: {e.errors()[0]['msg']}") from e
    except Exception as e:
        entry.update(status="error", error=repr(e), wall_time_s=time.monotonic() - t0)
        ws.log_call(entry)
        raise ToolError(f"{name} failed unexpectedly: {type(e).__name__}: {e}") from e
    result.tool = name
    result.call_id = ctx.call_id
    result.notes = [*ctx.notes, *result.notes]
    entry.update(
        status="ok",
        result=result.model_dump(mode="json"),
        wall_time_s=time.monotonic() - t0,
        created=ctx.created,
    )
    ws.log_call(entry)
    return result
