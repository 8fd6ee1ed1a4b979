"""TriScale science tools: a structure store, builders, one calculator factory and simulation tools.

Every tool is a plain typed function ``tool(workspace, **arguments) -> pydantic result`` registered in
:data:`REGISTRY`; the same registry feeds LangChain (``triscale.agents.tool_bindings``), the MCP server
(``triscale.tools.mcp_server``) and YAML workflows (``triscale.tools.workflows``). This package imports no LLM
library.

>>> from triscale.tools import Workspace, call_tool
>>> ws = Workspace("runs/demo")
>>> r = call_tool("build_bulk", {"name": "Cu", "cubic": True}, ws)
>>> eos = call_tool("equation_of_state", {"structure_id": r.structure_id, "calculator": "emt"}, ws)
"""

from __future__ import annotations

from typing import Any

from triscale.tools.calculators import CalculatorSpec, available_methods, check_limits, resolve_method
from triscale.tools.errors import (
    CalculationError,
    ToolError,
    ToolInputError,
    ToolLimitError,
    ToolTimeoutError,
)

# Importing the registry registers every tool (its modules import only ASE, NumPy and pydantic at module level).
from triscale.tools.registry import (
    REGISTRY,
    Tool,
    ToolContext,
    ToolInput,
    ToolResult,
    call_tool,
    get_tool,
    list_tools,
    register,
)
from triscale.tools.workspace import Workspace

__all__ = [
    "REGISTRY",
    "CalculationError",
    "CalculatorSpec",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolInput",
    "ToolInputError",
    "ToolLimitError",
    "ToolResult",
    "ToolTimeoutError",
    "Workspace",
    "available_methods",
    "call_tool",
    "check_limits",
    "get_tool",
    "list_tools",
    "register",
    "resolve_method",
    "run_workflow",
]


def run_workflow(path_or_spec: Any, workspace: Any = None, **kwargs: Any):
    """Run a YAML workflow (see :mod:`triscale.tools.workflows`)."""
    from triscale.tools.workflows import run_workflow as _run

    return _run(path_or_spec, workspace, **kwargs)
