"""The tool registry: the single source for the Python API, LangChain, the MCP server, HTTP and YAML workflows.

It imports every tool module (:data:`TOOL_MODULES`, in the order agents list the tools), which register themselves
with :func:`triscale.tools.base.register`, and runs calls: validation, limits, the call log. Tool modules import
:mod:`triscale.tools.base`, never this module, so the imports point one way.
"""

from __future__ import annotations

from triscale.tools import (  # noqa: F401 - imported to register their tools, in this order
    analysis,
    builders,
    continuum,
    dynamics,
    energy,
    eos,
    jobs,
    optimization,
    planner,
    prediction,
    quantum,
    reactions,
    vibrations,
)
from triscale.tools.base import (
    APPROVAL_POLICIES,
    REGISTRY,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    register,
    uses_expensive_method,
)
from triscale.tools.calls import as_workspace, call_tool, format_validation_error, get_tool, list_tools

__all__ = [
    "APPROVAL_POLICIES",
    "REGISTRY",
    "TOOL_MODULES",
    "Tool",
    "ToolContext",
    "ToolInput",
    "ToolResult",
    "as_workspace",
    "call_tool",
    "format_validation_error",
    "get_tool",
    "list_tools",
    "register",
    "uses_expensive_method",
]

#: The tool modules, one per tool or small family (input, result, worker function and agent metadata together).
TOOL_MODULES = (
    builders,
    continuum,
    jobs,
    planner,
    quantum,
    energy,
    optimization,
    dynamics,
    vibrations,
    eos,
    reactions,
    prediction,
    analysis,
)


def _in_module_order() -> None:
    """List tools in TOOL_MODULES order (stable within a module): agents and docs present them in this order."""
    rank = {m.__name__: i for i, m in enumerate(TOOL_MODULES)}
    ordered = sorted(REGISTRY.items(), key=lambda kv: rank.get(kv[1].func.__module__, len(rank)))
    REGISTRY.clear()
    REGISTRY.update(ordered)


_in_module_order()
