"""Plain HTTP/JSON access to the tool registry (``triscale serve``), for clients that do not speak MCP.

    GET  /health              {"status": "ok", "version", "workspace"}
    GET  /tools               [tool cards: name, description, category, cost, input schema]
    POST /tools/<name>        body: the tool's arguments as a JSON object
                              200 {"ok": true, "tool", "result": {...}, "content": "summary"}
                              400 {"ok": false, "error", "error_type"} (bad arguments, failed calculation)
                              404 unknown tool (with close matches)
    POST /ask                 body {"question", "session"?}: the science agent's structured answer
                              (only when the server was started with an ask handler, e.g. ``triscale serve --agent``)

An ASGI app (Starlette) served by uvicorn. Every request passes the same checks as the MCP SDK's streamable-HTTP
transport (``mcp.server.transport_security``), answered as JSON in the shape above:

* ``Host`` must name one of the allowed hosts (loopback names by default; the bound address and the machine's
  names when bound beyond loopback): 421 otherwise, 400 without one. This defeats DNS rebinding.
* ``Origin``, when present, must be the server's own origin or an allowed one: 403 otherwise (no CORS: a web
  page on another origin can neither call the tools nor read an answer).
* With a token, ``Authorization: Bearer <token>`` on every request, compared in constant time: 401 otherwise.
  :func:`serve` refuses to bind beyond loopback without one.
* ``POST`` needs ``Content-Type: application/json`` (415) and a body of at most ``max_body_bytes``, counted
  while it streams in (413).

Tool calls run in threads off the event loop, so many clients are served at once; calls that are not
``instant`` pass a capacity limiter (``max_workers``, default ``os.cpu_count()``): over the cap a request waits
for a slot, it is not refused. Each request has a wall-time limit (``request_timeout_s``, the wait included);
the calculation's worker process is killed when it runs out or when the client disconnects mid-call.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from triscale.tools.calls import as_workspace, call_tool, get_tool, list_tools
from triscale.tools.errors import ToolError, ToolInputError, ToolTimeoutError
from triscale.tools.workspace import Workspace

if TYPE_CHECKING:  # starlette / uvicorn are imported only when a server is built
    from starlette.applications import Starlette

__all__ = [
    "make_app",
    "guarded_app",
    "serve",
    "TriscaleServer",
    "RequestGuard",
    "is_loopback",
    "host_name",
    "default_hosts",
    "bind_socket",
    "require_web_stack",
    "error_response",
    "json_response",
    "not_found",
    "MAX_BODY_BYTES",
    "REQUEST_TIMEOUT_S",
    "LOOPBACK_HOSTS",
]

MAX_BODY_BYTES = 1 << 20  # arguments are small; structures travel as ids or files in the workspace
REQUEST_TIMEOUT_S = 3600.0  # longer than any tool's own limit (the longest is 1800 s), the queue wait included
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_POLL_S = 0.2  # how often a running call looks for a disconnected client

#: ``ask(question, session, cancel)``: the answer as ``triscale ask --json``; ``cancel`` (a CancelToken) is set when
#: the client disconnects or the request's time runs out, and should stop the run (``ScienceAgent.ask(cancel=...)``)
AskHandler = Callable[[str, "str | None", Any], dict[str, Any]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The host part of a Host header or an allowed-host entry, lower case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8766
        return value[1 : value.index("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        return value.split(":", 1)[0]
    return value


def require_web_stack() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ToolInputError(
            f"triscale serve needs starlette and uvicorn ({e})", hint="pip install 'triscale[serve]'"
        ) from None


def error_response(status: int, message: str, error_type: str, headers: dict[str, str] | None = None):
    from starlette.responses import Response

    body = json.dumps({"ok": False, "error": message, "error_type": error_type})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_response(status: int, payload: Any):
    from starlette.responses import Response

    return Response(json.dumps(payload, default=str), status_code=status, media_type="application/json")


class RequestGuard:
    """Pure ASGI middleware: host, origin, token, content type and body size, before any route runs.

    The approach of ``mcp.server.transport_security`` (TransportSecurityMiddleware + RequestBodyLimitMiddleware),
    with JSON errors in this API's shape, a 415 for a wrong content type, a bearer token, and host names
    compared without their port (so ``port=0`` and proxies on other ports need no list of ports).
    """

    def __init__(
        self,
        app: Any,
        *,
        token: str | None,
        allowed_hosts: Iterable[str],
        allowed_origins: Iterable[str],
        max_body_bytes: int,
        token_cookie: str | None = None,
        public_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        # A browser cannot add a header to a page load or an EventSource: the web workbench also accepts the token
        # from this cookie, and serves ``public_paths`` (its static page shell, no data; ``/static/*`` is a prefix)
        # to GET without one.
        self.token_cookie = token_cookie
        self.public_paths = tuple(public_paths)
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.allowed_hosts = hosts - {"*"}
        self.allowed_origins = {o.strip().rstrip("/").lower() for o in allowed_origins}
        self.max_body_bytes = max_body_bytes

    def _check(self, scope: Any):
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        host = headers.get("host")
        if not host:
            return error_response(400, "missing Host header", "BadRequest")
        if not self.any_host and host_name(host) not in self.allowed_hosts:
            return error_response(
                421,
                f"Host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed_hosts))}); "
                "start the server with --allowed-host to add a name.",
                "MisdirectedRequest",
            )
        origin = headers.get("origin")
        if origin is not None:
            o = origin.strip().rstrip("/").lower()
            scheme = scope.get("scheme", "http")
            same = o == f"{scheme}://{host.strip().lower()}"
            if not same and o not in self.allowed_origins:
                return error_response(403, f"Origin {origin!r} is not allowed", "Forbidden")
        if self.token is not None and not self._public(scope):
            auth = headers.get("authorization", "")
            scheme_, _, given = auth.partition(" ")
            if self.token_cookie and scheme_.lower() != "bearer":
                from starlette.requests import cookie_parser

                scheme_, given = "bearer", cookie_parser(headers.get("cookie", "")).get(self.token_cookie, "")
            if scheme_.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                return error_response(
                    401,
                    "missing or invalid token: send 'Authorization: Bearer <token>'",
                    "Unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="triscale"'},
                )
        if scope["method"] == "POST":
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return error_response(
                    415, f"POST needs Content-Type: application/json, got {ctype or 'none'!r}", "UnsupportedMediaType"
                )
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _public(self, scope: Any) -> bool:
        path = scope.get("path", "")
        return scope["method"] in ("GET", "HEAD") and any(
            path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in self.public_paths
        )

    def _too_large(self):
        return error_response(413, f"request body exceeds {self.max_body_bytes} bytes", "PayloadTooLarge")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        # Read the body here, counting while it streams (a chunked body has no Content-Length), then replay it.
        chunks: list[bytes] = []
        size = 0
        trailing = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                trailing = message
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        queued = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        if trailing is not None:
            queued.append(trailing)

        async def replay() -> Any:
            if queued:
                return queued.pop(0)
            return await receive()

        await self.app(scope, replay, send)


async def not_found(request: Any, exc: Exception):
    """404/405 as the same JSON error shape as every other refusal."""
    status = getattr(exc, "status_code", 404)
    kind = "MethodNotAllowed" if status == 405 else "NotFound"
    return error_response(status, f"no such endpoint: {request.method} {request.url.path}", kind)


def guarded_app(
    routes: list[Any],
    *,
    token: str | None,
    allowed_hosts: Iterable[str] | None,
    allowed_origins: Iterable[str] | None,
    max_body_bytes: int,
    **guard: Any,
) -> Starlette:
    """A Starlette app of ``routes`` behind :class:`RequestGuard` (Host/Origin checks, token, body limit; loopback
    names unless ``allowed_hosts``), with 404/405 in the JSON error shape: the tool server's and the workbench's
    one set-up. ``guard``: RequestGuard's other options (the workbench's token cookie and public paths)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    middleware = Middleware(
        RequestGuard,
        token=token,
        allowed_hosts=list(allowed_hosts) if allowed_hosts is not None else list(LOOPBACK_HOSTS),
        allowed_origins=list(allowed_origins or ()),
        max_body_bytes=max_body_bytes,
        **guard,
    )
    return Starlette(routes=routes, middleware=[middleware], exception_handlers={404: not_found, 405: not_found})


def make_app(
    workspace: Workspace | str,
    *,
    ask: AskHandler | None = None,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_timeout_s: float | None = REQUEST_TIMEOUT_S,
    max_workers: int | None = None,
) -> Starlette:
    """The ASGI app serving the tools on ``workspace`` (see the module docstring for the checks).

    ``allowed_hosts``: Host names accepted (ports ignored; ``"*"`` accepts any), default the loopback names.
    ``allowed_origins``: origins accepted besides the server's own (e.g. ``"http://localhost:3000"``).
    ``max_workers``: concurrent non-instant tool calls (and /ask); more wait. Default ``os.cpu_count()``.
    """
    require_web_stack()
    import anyio
    from starlette.routing import Route

    from triscale.tools.worker import CancelToken

    ws = as_workspace(workspace)
    if max_body_bytes < 1:
        raise ToolInputError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if max_workers is not None and max_workers < 1:
        raise ToolInputError(f"max_workers must be at least 1, got {max_workers}")
    if request_timeout_s is not None and request_timeout_s <= 0:
        raise ToolInputError(f"request_timeout_s must be positive, got {request_timeout_s}")
    slots = max_workers or os.cpu_count() or 1
    limiter_box: list[Any] = []  # an anyio limiter belongs to the running event loop: create it there

    def heavy_limiter():
        if not limiter_box:
            limiter_box.append(anyio.CapacityLimiter(slots))
        return limiter_box[0]

    async def run_call(request: Any, fn: Callable[[CancelToken, float | None], Any], *, heavy: bool) -> Any:
        """Run ``fn(cancel, seconds_left)`` in a thread; cancel it when the client leaves or time runs out."""
        cancel = CancelToken()
        deadline = None if request_timeout_s is None else time.monotonic() + request_timeout_s

        def job() -> Any:
            if cancel.cancelled:
                raise ToolError("the request was cancelled before it started (the client disconnected)")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ToolTimeoutError(
                    f"the request waited its whole {request_timeout_s:g} s limit for a free worker slot",
                    hint="The server is busy; try again later or submit the calculation as a job.",
                )
            return fn(cancel, left)

        async def watch() -> None:
            while not cancel.cancelled:
                if await request.is_disconnected() or (deadline is not None and time.monotonic() > deadline):
                    cancel.cancel()
                    return
                await anyio.sleep(_POLL_S)

        outcome: tuple[bool, Any]
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            try:
                outcome = (True, await anyio.to_thread.run_sync(job, limiter=heavy_limiter() if heavy else None))
            except Exception as e:  # noqa: BLE001 - returned to the caller below
                outcome = (False, e)
            tg.cancel_scope.cancel()
        ok, value = outcome
        if not ok:
            raise value
        return value

    async def health(request: Any):
        from triscale.common import VERSION

        return json_response(200, {"status": "ok", "version": VERSION, "workspace": str(ws.root)})

    async def tools(request: Any):
        return json_response(200, [tool.card() for tool in list_tools()])

    async def json_body(request: Any) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ToolInputError(f"request body is not valid JSON: {e}") from None

    async def call(request: Any):
        name = request.path_params["name"]
        try:
            body = await json_body(request)
        except ToolInputError as e:
            return error_response(400, str(e), "ToolInputError")
        try:
            tool = get_tool(name)
        except ToolError as e:
            return error_response(404, str(e), type(e).__name__)
        own_limit = ws.timeout_s if ws.timeout_s is not None else tool.timeout_s

        def fn(cancel: CancelToken, left: float | None):
            limit = own_limit if left is None else (left if own_limit is None else min(own_limit, left))
            return call_tool(name, body, ws, timeout_s=limit, cancel=cancel)

        try:
            result = await run_call(request, fn, heavy=tool.cost != "instant")
        except ToolError as e:
            return error_response(400, str(e), type(e).__name__)
        return json_response(
            200, {"ok": True, "tool": name, "result": result.model_dump(mode="json"), "content": result.content()}
        )

    async def ask_route(request: Any):
        if ask is None:
            return error_response(404, "the agent is not enabled on this server (start it with --agent)", "NotFound")
        try:
            body = await json_body(request)
        except ToolInputError as e:
            return error_response(400, str(e), "ToolInputError")
        question = body.get("question") if isinstance(body, dict) else None
        if not isinstance(question, str) or not question.strip():
            return error_response(400, 'POST /ask needs {"question": "..."}', "ToolInputError")
        try:
            answer = await run_call(
                request, lambda cancel, left: ask(question, body.get("session"), cancel), heavy=True
            )
        except ToolError as e:
            return error_response(400, str(e), type(e).__name__)
        return json_response(200, {"ok": True, **answer})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/tools", tools, methods=["GET"]),
        Route("/tools/{name:path}", call, methods=["POST"]),
        Route("/ask", ask_route, methods=["POST"]),
    ]
    return guarded_app(
        routes,
        token=token,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        max_body_bytes=max_body_bytes,
    )


def default_hosts(host: str) -> list[str]:
    """Host names a client may use to reach a server bound to ``host``."""
    names = set(LOOPBACK_HOSTS)
    names.add(host)
    if host in ("0.0.0.0", "::", ""):  # every interface: the machine's own names and addresses
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name)
            try:
                names.update(str(info[4][0]) for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    return sorted(n for n in names if n)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port); uvicorn listens on it with its backlog (2048)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise ToolInputError(
            f"cannot listen on {host}:{port}: {e.strerror or e}", hint="Choose another --port or --host."
        ) from None
    sock.set_inheritable(True)
    return sock


class TriscaleServer:
    """A uvicorn server for :func:`make_app`, bound on construction (``port=0``: any free port; see ``.port``).

    ``run()`` serves until Ctrl-C; ``start()`` / ``stop()`` run it in a background thread (tests, notebooks).
    Refuses to bind beyond loopback without a token. ``make``: the app factory, called as
    ``make(workspace, token=..., allowed_hosts=..., **app_kwargs)`` (default :func:`make_app`; the web workbench
    passes its own).
    """

    def __init__(
        self,
        workspace: Workspace | str,
        host: str = "127.0.0.1",
        port: int = 8766,
        *,
        token: str | None = None,
        allowed_hosts: Iterable[str] | None = None,
        make: Callable[..., Any] | None = None,
        **app_kwargs: Any,
    ) -> None:
        require_web_stack()
        import uvicorn

        if not is_loopback(host) and not token:
            raise ToolInputError(
                f"refusing to serve on {host!r} (beyond loopback) without a token: the tools write files and run jobs.",
                hint="Pass --token or set TRISCALE_TOKEN, e.g. "
                "export TRISCALE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'); "
                "clients then send 'Authorization: Bearer $TRISCALE_TOKEN'.",
            )
        hosts = default_hosts(host) if allowed_hosts is None else [*LOOPBACK_HOSTS, host, *allowed_hosts]
        self.host = host
        self.app = (make or make_app)(workspace, token=token, allowed_hosts=hosts, **app_kwargs)
        self.config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_config=None,  # leave the caller's logging alone; provenance lives in the workspace
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self.socket = bind_socket(host, port)
        self.port: int = self.socket.getsockname()[1]
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{self.port}"

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout_s: float = 30.0) -> TriscaleServer:
        self._thread = threading.Thread(target=self.run, name="triscale-serve", daemon=True)
        self._thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() - t0 > timeout_s:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)


def serve(
    workspace: Workspace | str,
    host: str = "127.0.0.1",
    port: int = 8766,
    token: str | None = None,
    *,
    on_ready: Callable[[TriscaleServer], None] | None = None,
    **kwargs: Any,
) -> None:
    """Serve the tools over HTTP until interrupted (uvicorn; see :class:`TriscaleServer` and :func:`make_app`)."""
    server = TriscaleServer(workspace, host, port, token=token, **kwargs)
    if on_ready is not None:
        on_ready(server)
    server.run()
