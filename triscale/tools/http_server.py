"""Plain HTTP/JSON access to the tool registry (``triscale serve``), for clients that do not speak MCP.

    GET  /health              {"status": "ok", "version", "workspace"}
    GET  /tools               [tool cards: name, description, category, cost, input schema]
    POST /tools/<name>        body: the tool's arguments as a JSON object
                              200 {"ok": true, "tool", "result": {...}, "content": "summary"}
                              400 {"ok": false, "error", "error_type"} (bad arguments, failed calculation)
                              404 unknown tool (with close matches)
    POST /ask                 body {"question", "session"?}: the science agent's structured answer
                              (only when the server was started with an ask handler, e.g. ``triscale serve --agent``)

Written on the standard library's ``http.server`` (no web framework to install): requests are handled one at a
time, which also keeps the workspace's SQLite store single-threaded; heavy calculations already run in worker
processes with wall-time limits. Binds to localhost unless told otherwise — the tools write files and run jobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from triscale.tools.registry import ToolError, ToolInputError, _as_workspace, call_tool, get_tool, list_tools
from triscale.tools.workspace import Workspace

MAX_BODY_BYTES = 1 << 20  # arguments are small; structures travel as ids or files in the workspace

AskHandler = Callable[[str, "str | None"], dict[str, Any]]


def make_server(
    workspace: Workspace | str, host: str = "127.0.0.1", port: int = 8766, ask: AskHandler | None = None
) -> HTTPServer:
    """An HTTP server bound to (host, port) serving the tools on ``workspace`` (``port=0``: any free port)."""
    ws = _as_workspace(workspace)

    class Handler(BaseHTTPRequestHandler):
        server_version = "triscale-serve"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: provenance lives in the workspace
            pass

        def _reply(self, status: int, payload: Any) -> None:
            body = json.dumps(payload, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str, error_type: str) -> None:
            self._reply(status, {"ok": False, "error": message, "error_type": error_type})

        def _json_body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                raise ToolInputError(f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
            raw = self.rfile.read(length) if length else b"{}"
            try:
                return json.loads(raw or b"{}")
            except json.JSONDecodeError as e:
                raise ToolInputError(f"request body is not valid JSON: {e}") from None

        def do_GET(self) -> None:
            if self.path == "/health":
                import triscale

                self._reply(200, {"status": "ok", "version": triscale.__version__, "workspace": str(ws.root)})
            elif self.path == "/tools":
                self._reply(200, [tool.card() for tool in list_tools()])
            else:
                self._error(404, f"no such endpoint: GET {self.path}", "NotFound")

        def do_POST(self) -> None:
            try:
                body = self._json_body()
            except ToolInputError as e:
                return self._error(400, str(e), "ToolInputError")
            if self.path.startswith("/tools/"):
                name = self.path.removeprefix("/tools/")
                try:
                    get_tool(name)
                except ToolError as e:
                    return self._error(404, str(e), type(e).__name__)
                try:
                    result = call_tool(name, body, ws)
                except ToolError as e:
                    return self._error(400, str(e), type(e).__name__)
                return self._reply(
                    200,
                    {"ok": True, "tool": name, "result": result.model_dump(mode="json"), "content": result.content()},
                )
            if self.path == "/ask":
                if ask is None:
                    return self._error(
                        404, "the agent is not enabled on this server (start it with --agent)", "NotFound"
                    )
                question = body.get("question") if isinstance(body, dict) else None
                if not isinstance(question, str) or not question.strip():
                    return self._error(400, 'POST /ask needs {"question": "..."}', "ToolInputError")
                return self._reply(200, {"ok": True, **ask(question, body.get("session"))})
            return self._error(404, f"no such endpoint: POST {self.path}", "NotFound")

    return HTTPServer((host, port), Handler)
