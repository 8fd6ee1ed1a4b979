"""An MCP server for the tool registry (official ``mcp`` SDK, v2 ``MCPServer``).

Every registry tool becomes an MCP tool whose input schema is the tool's pydantic input model and whose
output schema is its result model (structured content). Arguments are validated by the registry itself, so MCP
clients get the same actionable messages as Python and LangChain callers; failures come back as results with
``is_error`` set. Heavy tools run in worker threads (and their calculations in worker processes), so the
server keeps answering while they run.

    triscale mcp --workspace runs/demo            # stdio
    triscale mcp --workspace runs/demo --http     # streamable HTTP on 127.0.0.1:8765/mcp
"""

from __future__ import annotations

import functools
from typing import Any

from triscale.tools.base import Tool as RegistryTool
from triscale.tools.calls import call_tool, list_tools
from triscale.tools.errors import ToolError
from triscale.tools.workspace import Workspace

__all__ = ["build_server", "serve"]

INSTRUCTIONS = (
    "TriScale science tools. Structures live in a workspace store and are passed by id ('st1', 'st2', ...); "
    "build them with build_molecule (name or SMILES) or build_bulk, then run single_point, "
    "optimize_geometry, "
    "molecular_dynamics, vibrational_analysis, thermochemistry, equation_of_state, reaction_energy, "
    "orbital_energies or predict_properties. Units are in the field names (eV, Å, GPa, K, cm-1). "
    "Long calculations can be run with submit_job and polled with job_status/job_result."
)


def _mcp_tool(tool: RegistryTool, workspace: Workspace):
    import anyio
    from mcp.server.mcpserver.exceptions import ToolError as MCPToolError
    from mcp.server.mcpserver.tools.base import Tool as MCPTool
    from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
    from mcp_types import CallToolResult, TextContent, ToolAnnotations
    from pydantic import ConfigDict

    class _PassThrough(ArgModelBase):
        """Hands the raw JSON arguments to the registry, which validates them with its own messages."""

        model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)

        def model_dump_one_level(self) -> dict[str, Any]:
            return dict(self.model_extra or {})

    async def fn(**arguments: Any):
        try:
            result = await anyio.to_thread.run_sync(functools.partial(call_tool, tool.name, arguments, workspace))
        except ToolError as e:
            raise MCPToolError(str(e)) from None
        # Compact text for the model (no nulls), the full result as structured content.
        return CallToolResult(
            content=[TextContent(type="text", text=result.content())],
            structured_content=result.model_dump(mode="json"),
        )

    meta = FuncMetadata(arg_model=_PassThrough, output_model=tool.result_model)
    read_only = tool.category == "structure" and tool.name.startswith(("list_", "structure_info"))
    return MCPTool(
        fn=fn,
        name=tool.name,
        title=tool.name.replace("_", " ").capitalize(),
        description=tool.description,
        parameters=tool.input_model.model_json_schema(),
        fn_metadata=meta,
        is_async=True,
        context_kwarg=None,
        annotations=ToolAnnotations(readOnlyHint=read_only, openWorldHint=False),
        meta={"triscale/cost": tool.cost, "triscale/timeout_s": tool.timeout_s},
    )


def build_server(workspace: Workspace | str = "workspace", *, name: str = "triscale", tools: list[str] | None = None):
    """An ``MCPServer`` exposing the registry (or the named subset) on ``workspace``."""
    from mcp.server.mcpserver import MCPServer

    from triscale.common import VERSION

    ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    selected = [t for t in list_tools() if tools is None or t.name in tools]
    return MCPServer(
        name=name,
        title="TriScale science tools",
        instructions=INSTRUCTIONS,
        version=VERSION,
        tools=[_mcp_tool(t, ws) for t in selected],
        log_level="WARNING",
    )


def serve(workspace: str = "workspace", *, http: bool = False, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run the server: stdio by default, or streamable HTTP on ``host:port`` (localhost only by default)."""
    server = build_server(workspace)
    if http:
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
