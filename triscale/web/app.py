"""The browser workbench (``triscale web``): chat with the science agent, 3D structures, plots, runs.

One ASGI app (Starlette) on the same server, guard and limits as ``triscale serve``
(:mod:`triscale.tools.http_server`: Host and Origin checks, a bearer token beyond loopback — here also taken from a
cookie so a browser can send it —, JSON-only POST bodies with a size cap, a wall-time limit per question). Each
browser session (an HttpOnly cookie) gets its own workspace ``<root>/sessions/<id>/`` and its own agent.

Routes (all JSON unless said)::

    GET  /                          the page (static shell; data comes from /api)
    GET  /api/session               workspace, backend, the question running now (to re-attach after a reload)
    POST /api/ask {"question"}      start a question -> {"ask_id"}; 409 while another one runs in this session
    GET  /api/ask/{id}/events       Server-Sent Events: model turns, tool calls (start/end), the answer, done
    POST /api/ask/{id}/cancel       cancel it: the running calculation's worker is killed, later calls refused
    POST /api/chat/new              a new conversation (thread) in the same workspace
    GET  /api/structures            the workspace's structure records
    GET  /api/structures/{id}       XYZ text, cell and pbc for the viewer
    GET  /api/structures/{id}/download?format=extxyz|xyz|cif|poscar
    GET  /api/trajectory?path=...   frames of a trajectory file in the workspace (multi-frame XYZ, at most 200)
    GET  /api/plot/{call_id}.svg    E(V) with its fit (equation_of_state), energy/temperature (molecular_dynamics),
                                    IR/vibrational spectrum (vibrational_analysis), orbital levels (orbital_energies,
                                    electronic_structure)
    POST /api/upload {"filename", "content"}   a structure file, imported with the import_structure tool
    GET  /api/runs                  past agent runs; GET /api/runs/{id}: its provenance entries
    GET  /api/runs/{id}/workflow.yaml   the run exported as a replayable workflow; /answer.json: its answer
    GET  /api/files/{path}          download a file of the workspace
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triscale.tools import ToolError, ToolInputError, Workspace, call_tool
from triscale.tools.http_server import (
    REQUEST_TIMEOUT_S,
    TriscaleServer,
    error_response,
    guarded_app,
    json_response,
    require_web_stack,
)
from triscale.tools.worker import CancelToken

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette

__all__ = ["make_web_app", "web_server", "serve_web", "Workbench", "SESSION_COOKIE", "TOKEN_COOKIE"]

SESSION_COOKIE = "triscale_session"
TOKEN_COOKIE = "triscale_token"
MAX_BODY_BYTES = 8 << 20  # structure files come in the JSON body
MAX_FRAMES = 200
MAX_SESSIONS = 64  # browser sessions held in memory (agent + conversation); idle ones beyond are dropped
STATIC = Path(__file__).parent / "static"
_SID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_STRUCTURE_ID = re.compile(r"^st\d+$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_CALL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_DOWNLOAD_FORMATS = {"extxyz": "extxyz", "xyz": "xyz", "cif": "cif", "poscar": "vasp"}
PLOTTED = (
    "equation_of_state",
    "molecular_dynamics",
    "vibrational_analysis",
    "orbital_energies",
    "electronic_structure",
)

AgentFactory = Callable[[Workspace], Any]


# --------------------------------------------------------------------------- questions and sessions


#: Result fields that name a picture the tool drew itself (PDE fields, a campaign's progress), shown inline.
IMAGE_FIELDS = ("plot_file", "png_path")


def result_image(result: dict[str, Any], root: Path | None) -> str | None:
    """The URL of a PNG a tool wrote into the workspace and named in its result, or None."""
    for key in IMAGE_FIELDS:
        value = result.get(key)
        if not isinstance(value, str) or not value.endswith(".png"):
            continue
        path = Path(value)
        if path.is_absolute():
            if root is None or not path.resolve().is_relative_to(Path(root).resolve()):
                continue
            path = path.resolve().relative_to(Path(root).resolve())
        return f"/api/files/{path.as_posix()}"
    return None


class Ask:
    """One question: its events (kept, so a reloaded page replays them), cancel token and state."""

    def __init__(self, question: str, root: Path | None = None) -> None:
        self.root = root  # the session's workspace: image files named in results are served from it
        self.id = uuid.uuid4().hex[:12]
        self.question = question
        self.events: list[dict[str, Any]] = []
        self.cancel = CancelToken()
        self.done = False
        self.started = time.time()
        self._open: list[dict[str, Any]] = []  # tool calls started and not yet ended
        self._n = 0
        self._lock = threading.Lock()

    def emit(self, kind: str, **data: Any) -> None:
        with self._lock:
            self.events.append({"type": kind, "t": round(time.time() - self.started, 3), **data})

    def on_agent_event(self, kind: str, data: dict[str, Any]) -> None:
        """The agent's ``on_event`` callback, turned into browser events."""
        if kind == "model":
            calls = [{"name": c.get("name"), "args": c.get("args")} for c in data.get("tool_calls") or []]
            self.emit("model", content=data.get("content") or "", tool_calls=calls)
        elif kind == "tool_start":
            self._n += 1
            call = {"index": self._n, "name": data["name"]}
            self._open.append(call)
            self.emit("tool_start", index=self._n, name=data["name"], args=data.get("args") or {})
        elif kind == "tool_end":
            call = next((c for c in self._open if c["name"] == data["name"]), None)
            if call is not None:
                self._open.remove(call)
            art = data.get("artifact") or {}
            self.emit(
                "tool_end",
                index=call["index"] if call else None,
                name=data["name"],
                ok=bool(data.get("ok")),
                wall_time_s=round(float(data.get("wall_time_s") or 0.0), 3),
                content=str(data.get("content") or "")[:2000],
                result=compact(art) if art else None,
                notes=list(art.get("notes") or []) if art else [],
                call_id=art.get("call_id") if art else None,
                structure_ids=structure_ids(art) if art else [],
                plot=f"/api/plot/{art['call_id']}.svg" if art and data["name"] in PLOTTED else None,
                image=result_image(art, self.root) if art else None,
                trajectory=art.get("trajectory_file") if art else None,
            )


def compact(result: dict[str, Any], n: int = 8) -> dict[str, Any]:
    """A result for display: long lists shortened to a count, bookkeeping keys dropped."""
    out = {}
    for k, v in result.items():
        if k in ("tool", "notes") or v is None:
            continue
        out[k] = f"[{len(v)} values]" if isinstance(v, list) and len(v) > n else v
    return out


def structure_ids(obj: Any) -> list[str]:
    """Structure ids (``st12``) anywhere in a result, in order of appearance."""
    found: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str) and _STRUCTURE_ID.match(x) and x not in found:
            found.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(obj)
    return found


class Session:
    """One browser session: a workspace, an agent (made on the first question), the conversation thread."""

    def __init__(self, sid: str, workspace: Workspace) -> None:
        self.id = sid
        self.workspace = workspace
        self.agent: Any = None
        self.thread_id = f"web-{uuid.uuid4().hex[:8]}"
        self.asks: dict[str, Ask] = {}
        self.current: Ask | None = None
        self.lock = threading.Lock()

    def close(self) -> None:
        """Free what an idle session holds: its workspace's services (worker pools) and the agent's memory file."""
        conn = getattr(getattr(self.agent, "checkpointer", None), "conn", None)
        if conn is not None:
            conn.close()
        self.workspace.close()


class Workbench:
    """Sessions, their workspaces and agents, and the questions running in them."""

    def __init__(
        self,
        root: str | Path,
        *,
        agent_factory: AgentFactory | None = None,
        llm: str | None = None,
        isolate: bool = True,
        request_timeout_s: float | None = REQUEST_TIMEOUT_S,
        max_workers: int | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        (self.root / "sessions").mkdir(parents=True, exist_ok=True)
        self.llm = llm
        self.isolate = isolate
        self.request_timeout_s = request_timeout_s
        self.agent_factory = agent_factory or self._default_agent
        # most recently used last; beyond max_sessions the least recently used idle ones are dropped from memory
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        import os

        self._slots = threading.BoundedSemaphore(max_workers or os.cpu_count() or 1)

    def _default_agent(self, workspace: Workspace) -> Any:
        from triscale.agents.graph import ScienceAgent

        return ScienceAgent(self.llm, workspace)

    def session(self, sid: str | None) -> tuple[Session, bool]:
        """The session of a cookie value (its workspace reopened after a restart or an eviction), or a new one.

        Sessions held in memory (each with its agent and conversation) are capped: past ``max_sessions`` the least
        recently used ones with no question running are dropped. Their workspaces stay on disk, and the next request
        with that cookie reopens its files with a new conversation."""
        new = sid is None or not _SID.match(sid)
        if new:
            sid = secrets.token_urlsafe(24)
        with self._lock:
            s = self.sessions.get(sid)
            if s is None:
                ws = Workspace(self.root / "sessions" / sid, isolate=self.isolate)
                s = self.sessions[sid] = Session(sid, ws)
            self.sessions.move_to_end(sid)
            idle = [k for k, v in self.sessions.items() if k != sid and (v.current is None or v.current.done)]
            for k in idle[: max(0, len(self.sessions) - self.max_sessions)]:
                self.sessions.pop(k).close()
        return s, new

    # ------------------------------------------------------------------ questions
    def start(self, session: Session, question: str) -> Ask:
        with session.lock:
            if session.current is not None and not session.current.done:
                raise RuntimeError("a question is still running in this session; wait or cancel it")
            ask = Ask(question, session.workspace.root)
            session.asks[ask.id] = ask
            session.current = ask
        threading.Thread(target=self._run, args=(session, ask), name=f"triscale-web-{ask.id}", daemon=True).start()
        return ask

    def _run(self, session: Session, ask: Ask) -> None:
        timer = None
        try:
            if not self._slots.acquire(blocking=False):
                ask.emit("status", message="waiting for a free worker slot")
                while not self._slots.acquire(timeout=0.5):
                    if ask.cancel.cancelled:
                        ask.emit("error", message="cancelled before it started")
                        return
            try:
                if self.request_timeout_s is not None:

                    def expire() -> None:
                        ask.emit("status", message=f"the {self.request_timeout_s:g} s limit per question ran out")
                        ask.cancel.cancel()

                    timer = threading.Timer(self.request_timeout_s, expire)
                    timer.daemon = True
                    timer.start()
                self._answer(session, ask)
            finally:
                self._slots.release()
        except Exception as e:  # noqa: BLE001 - the page shows it; the server goes on
            ask.emit("error", message=f"{type(e).__name__}: {e}")
        finally:
            if timer is not None:
                timer.cancel()
            ask.emit("done")
            ask.done = True

    def _answer(self, session: Session, ask: Ask) -> None:
        if session.agent is None:
            ask.emit("status", message="starting the agent")
            session.agent = self.agent_factory(session.workspace)
        agent = session.agent
        info = getattr(agent, "llm_info", None)
        ask.emit("status", message=f"asking {getattr(info, 'backend', 'the model')} {getattr(info, 'model', '')}")
        # the page's cancel (and the per-question time limit) set this token: the agent kills the running
        # calculation, starts nothing more and answers from what finished
        run = agent.ask(ask.question, thread_id=session.thread_id, on_event=ask.on_agent_event, cancel=ask.cancel)
        answer = run.answer.model_dump(mode="json")
        stop = run.stop_reason
        notes = []
        if stop == "cancelled":
            notes.append("Cancelled from the page; the results below are those finished before that.")
        ask.emit(
            "answer",
            answer=answer["answer"],
            results=answer["results"],
            run_id=run.run_id,
            stop_reason=stop,
            notes=notes,
            wall_time_s=run.wall_time_s,
            n_model_calls=run.n_model_calls,
            n_tool_calls=run.n_tool_calls,
        )


# --------------------------------------------------------------------------- helpers for the routes


def _xyz(atoms: Any, comment: str = "") -> str:
    lines = [str(len(atoms)), comment.replace("\n", " ")]
    for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions):
        lines.append(f"{s} {x:.5f} {y:.5f} {z:.5f}")
    return "\n".join(lines) + "\n"


def _cell(atoms: Any) -> list[list[float]] | None:
    if not atoms.pbc.any() or atoms.cell.rank < 3:
        return None
    return [[round(float(v), 6) for v in row] for row in atoms.cell.array]


def _find_call(ws: Workspace, call_id: str) -> dict[str, Any] | None:
    hit = None
    for entry in ws.calls():
        if entry.get("call_id") == call_id and entry.get("status") == "ok":
            hit = entry
    return hit


def _safe_filename(name: str) -> str:
    base = _FILENAME.sub("_", Path(str(name)).name).strip("._") or "upload"
    return base[:100]


def make_web_app(
    workspace: str | Path,
    *,
    agent_factory: AgentFactory | None = None,
    llm: str | None = None,
    isolate: bool = True,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    allowed_origins: Iterable[str] | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    request_timeout_s: float | None = REQUEST_TIMEOUT_S,
    max_workers: int | None = None,
    max_sessions: int = MAX_SESSIONS,
) -> Starlette:
    """The workbench app over the workspace root ``workspace`` (one subdirectory per browser session).

    ``agent_factory(workspace) -> ScienceAgent``: how each session's agent is made (tests pass a scripted model);
    default ``ScienceAgent(llm, workspace)``. The guard and limits are those of ``triscale serve``.
    """
    require_web_stack()
    import anyio
    from starlette.responses import FileResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    bench = Workbench(
        workspace,
        agent_factory=agent_factory,
        llm=llm,
        isolate=isolate,
        request_timeout_s=request_timeout_s,
        max_workers=max_workers,
        max_sessions=max_sessions,
    )

    def session_of(request: Any) -> tuple[Session, bool]:
        return bench.session(request.cookies.get(SESSION_COOKIE))

    def reply(response: Any, session: Session, new: bool) -> Any:
        if new:
            response.set_cookie(
                SESSION_COOKIE, session.id, max_age=365 * 86400, httponly=True, samesite="strict", path="/"
            )
        return response

    def refuse(e: Exception, status: int = 400) -> Any:
        message = str(e)
        hint = getattr(e, "hint", None)
        if hint:
            message += f" ({hint})"
        return error_response(status, message, type(e).__name__)

    async def body_of(request: Any) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ToolInputError(f"request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise ToolInputError("request body must be a JSON object")
        return body

    async def index(request: Any):
        s, new = session_of(request)
        return reply(FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"}), s, new)

    async def session_info(request: Any):
        from triscale.common import VERSION

        s, new = session_of(request)
        current = s.current.id if s.current is not None and not s.current.done else None
        info = getattr(s.agent, "llm_info", None)
        if info is not None:
            backend = f"{info.backend} {info.model}".strip()
        else:
            backend = bench.llm or (
                "custom agent" if agent_factory is not None else "default (see triscale ask --help)"
            )
        payload = {
            "version": VERSION,
            "workspace": str(s.workspace.root),
            "backend": backend,
            "thread_id": s.thread_id,
            "running": current,
            "n_structures": s.workspace.count(),
        }
        return reply(json_response(200, payload), s, new)

    async def ask_route(request: Any):
        s, new = session_of(request)
        try:
            body = await body_of(request)
        except ToolInputError as e:
            return refuse(e)
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            return error_response(400, 'POST /api/ask needs {"question": "..."}', "ToolInputError")
        try:
            ask = bench.start(s, question.strip())
        except RuntimeError as e:
            return error_response(409, str(e), "Busy")
        return reply(json_response(200, {"ok": True, "ask_id": ask.id}), s, new)

    def ask_of(request: Any) -> tuple[Session, Ask | None]:
        s, _ = session_of(request)
        return s, s.asks.get(request.path_params["ask_id"])

    async def events(request: Any):
        _, ask = ask_of(request)
        if ask is None:
            return error_response(404, "no such question in this session", "NotFound")

        async def stream():
            i = 0
            last = time.monotonic()
            while True:
                while i < len(ask.events):
                    ev = ask.events[i]
                    i += 1
                    yield f"event: {ev['type']}\ndata: {json.dumps(ev, default=str)}\n\n"
                    last = time.monotonic()
                    if ev["type"] == "done":
                        return
                if time.monotonic() - last > 15:
                    yield ": keep-alive\n\n"
                    last = time.monotonic()
                await anyio.sleep(0.1)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def cancel(request: Any):
        _, ask = ask_of(request)
        if ask is None:
            return error_response(404, "no such question in this session", "NotFound")
        if not ask.done and not ask.cancel.cancelled:
            ask.cancel.cancel()
            ask.emit("status", message="cancelling: stopping the running calculation")
        return json_response(200, {"ok": True, "done": ask.done})

    async def new_chat(request: Any):
        s, new = session_of(request)
        s.thread_id = f"web-{uuid.uuid4().hex[:8]}"
        return reply(json_response(200, {"ok": True, "thread_id": s.thread_id}), s, new)

    async def structures(request: Any):
        s, new = session_of(request)
        return reply(json_response(200, [dict(r) for r in s.workspace.records()]), s, new)

    def structure_id(request: Any, ws: Workspace) -> str:
        sid = request.path_params["sid"]
        if not _STRUCTURE_ID.match(sid) or not ws.has(sid):
            raise ws.unknown_structure(sid)
        return sid

    async def structure(request: Any):
        s, _ = session_of(request)
        try:
            sid = structure_id(request, s.workspace)
        except ToolInputError as e:
            return refuse(e, 404)
        atoms = s.workspace.get(sid)
        rec = dict(s.workspace.record(sid))
        return json_response(
            200,
            {**rec, "xyz": _xyz(atoms, f"{sid} {rec.get('formula', '')}"), "cell": _cell(atoms), "frames": 1},
        )

    async def download_structure(request: Any):
        s, _ = session_of(request)
        fmt = request.query_params.get("format", "extxyz").lower()
        if fmt not in _DOWNLOAD_FORMATS:
            return error_response(400, f"format must be one of {', '.join(_DOWNLOAD_FORMATS)}", "ToolInputError")
        try:
            sid = structure_id(request, s.workspace)
            name = f"{sid}.{'vasp' if fmt == 'poscar' else fmt}"
            r = await anyio.to_thread.run_sync(
                lambda: call_tool(
                    "export_structure",
                    {"structure_id": sid, "path": f"exports/{name}", "format": fmt},
                    s.workspace,
                )
            )
        except ToolError as e:
            return refuse(e, 404 if "Unknown structure" in str(e) else 400)
        path = s.workspace.path(r.model_dump().get("file") or f"exports/{name}", must_exist=True)
        return FileResponse(path, filename=name, media_type="chemical/x-structure")

    async def trajectory(request: Any):
        import ase.io

        s, _ = session_of(request)
        try:
            path = s.workspace.path(request.query_params.get("path", ""), must_exist=True)
            frames = await anyio.to_thread.run_sync(lambda: ase.io.read(str(path), index=":"))
        except ToolInputError as e:
            return refuse(e, 404)
        except Exception as e:  # noqa: BLE001
            return error_response(400, f"cannot read {path.name}: {type(e).__name__}: {e}", "ToolInputError")
        step = max(1, -(-len(frames) // MAX_FRAMES))
        picked = frames[::step]
        text = "".join(_xyz(a, f"frame {i * step}") for i, a in enumerate(picked))
        return json_response(
            200,
            {"xyz": text, "frames": len(picked), "n_frames": len(frames), "stride": step, "cell": _cell(frames[-1])},
        )

    def draw(ws: Workspace, call_id: str) -> bytes:
        from triscale.web.plots import eos_svg, levels_svg, md_svg, md_traces, spectrum_svg

        entry = _find_call(ws, call_id)
        if entry is None or entry.get("tool") not in PLOTTED:
            raise ToolInputError(f"no successful {' or '.join(PLOTTED)} call {call_id!r} in this workspace")
        result = entry["result"]
        if entry["tool"] == "equation_of_state":
            return eos_svg(result)
        if entry["tool"] == "vibrational_analysis":
            return spectrum_svg(result)
        if entry["tool"] in ("orbital_energies", "electronic_structure"):
            return levels_svg(result)
        import ase.io

        args = entry.get("args") or {}
        frames = ase.io.read(str(ws.path(result["trajectory_file"], must_exist=True)), index=":")
        traces = md_traces(
            frames, float(args.get("timestep_fs", result.get("timestep_fs", 1.0))), int(args.get("interval", 1))
        )
        title = f"{result.get('formula', '')} · {result.get('method', '')} · {result.get('ensemble', '')}"
        return md_svg(traces, title)

    async def plot(request: Any):
        s, _ = session_of(request)
        call_id = request.path_params["call_id"]
        if not _CALL_ID.match(call_id):
            return error_response(400, "bad call id", "ToolInputError")
        try:
            svg = await anyio.to_thread.run_sync(lambda: draw(s.workspace, call_id))
        except ToolInputError as e:
            return refuse(e, 404)
        except (ValueError, KeyError, OSError) as e:
            return error_response(422, f"cannot plot {call_id}: {e}", "PlotError")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=3600"})

    async def upload(request: Any):
        s, new = session_of(request)
        try:
            body = await body_of(request)
            filename, content = body.get("filename"), body.get("content")
            if not isinstance(filename, str) or not isinstance(content, str):
                raise ToolInputError('POST /api/upload needs {"filename": "...", "content": "file text"}')
            name = _safe_filename(filename)
            folder = s.workspace.root / "uploads"
            folder.mkdir(exist_ok=True)
            target = folder / name
            i = 1
            while target.exists():
                i += 1
                stem, dot, ext = name.partition(".")
                target = folder / f"{stem}_{i}{dot}{ext}"
            target.write_text(content)
            rel = s.workspace.relpath(target)
            args: dict[str, Any] = {"path": rel, "label": Path(filename).name[:80]}
            if body.get("format"):
                args["format"] = body["format"]
            r = await anyio.to_thread.run_sync(lambda: call_tool("import_structure", args, s.workspace))
        except ToolError as e:
            return refuse(e)
        return reply(json_response(200, {"ok": True, "file": rel, "result": r.model_dump(mode="json")}), s, new)

    async def runs(request: Any):
        from triscale.agents.provenance import list_runs

        s, new = session_of(request)
        items = []
        for r in reversed(list_runs(s.workspace.root)):
            answer = Path(r["path"]).parent / "answer.json"
            items.append({"run_id": r["run_id"], "question": r["question"], "answered": answer.is_file()})
        return reply(json_response(200, items), s, new)

    def run_id(request: Any) -> str:
        rid = request.path_params["run_id"]
        if not _RUN_ID.match(rid):
            raise FileNotFoundError(f"bad run id {rid!r}")
        return rid

    async def run_detail(request: Any):
        from triscale.agents.provenance import load_run

        s, _ = session_of(request)
        try:
            entries = load_run(run_id(request), s.workspace.root)
        except FileNotFoundError as e:
            return refuse(e, 404)
        return json_response(200, {"run_id": request.path_params["run_id"], "entries": entries})

    async def run_workflow(request: Any):
        from triscale.agents.provenance import export_workflow

        s, _ = session_of(request)
        try:
            rid = run_id(request)
            path = await anyio.to_thread.run_sync(lambda: export_workflow(rid, s.workspace.root))
        except FileNotFoundError as e:
            return refuse(e, 404)
        except ValueError as e:
            return refuse(e, 400)
        return FileResponse(path, filename=f"{rid}.workflow.yaml", media_type="application/yaml")

    async def run_answer(request: Any):
        from triscale.agents.provenance import find_run

        s, _ = session_of(request)
        try:
            rid = run_id(request)
            path = find_run(rid, s.workspace.root).parent / "answer.json"
            if not path.is_file():
                raise FileNotFoundError(f"run {rid} has no answer yet")
        except FileNotFoundError as e:
            return refuse(e, 404)
        return FileResponse(path, filename=f"{rid}.answer.json", media_type="application/json")

    async def files(request: Any):
        s, _ = session_of(request)
        try:
            path = s.workspace.path(request.path_params["path"], must_exist=True)
        except ToolInputError as e:
            return refuse(e, 404)
        if not path.is_file():
            return error_response(404, f"{request.path_params['path']!r} is not a file", "NotFound")
        return FileResponse(path, filename=path.name)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/session", session_info, methods=["GET"]),
        Route("/api/ask", ask_route, methods=["POST"]),
        Route("/api/ask/{ask_id}/events", events, methods=["GET"]),
        Route("/api/ask/{ask_id}/cancel", cancel, methods=["POST"]),
        Route("/api/chat/new", new_chat, methods=["POST"]),
        Route("/api/structures", structures, methods=["GET"]),
        Route("/api/structures/{sid}", structure, methods=["GET"]),
        Route("/api/structures/{sid}/download", download_structure, methods=["GET"]),
        Route("/api/trajectory", trajectory, methods=["GET"]),
        Route("/api/plot/{call_id}.svg", plot, methods=["GET"]),
        Route("/api/upload", upload, methods=["POST"]),
        Route("/api/runs", runs, methods=["GET"]),
        Route("/api/runs/{run_id}", run_detail, methods=["GET"]),
        Route("/api/runs/{run_id}/workflow.yaml", run_workflow, methods=["GET"]),
        Route("/api/runs/{run_id}/answer.json", run_answer, methods=["GET"]),
        Route("/api/files/{path:path}", files, methods=["GET"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    app = guarded_app(
        routes,
        token=token,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        max_body_bytes=max_body_bytes,
        token_cookie=TOKEN_COOKIE,
        public_paths=("/", "/static/*"),
    )
    app.state.workbench = bench
    return app


def web_server(
    workspace: str | Path, host: str = "127.0.0.1", port: int = 8767, *, token: str | None = None, **kwargs: Any
) -> TriscaleServer:
    """A bound (not yet running) server for the workbench: ``triscale serve``'s server with this app."""
    return TriscaleServer(workspace, host, port, token=token, make=make_web_app, **kwargs)


def serve_web(
    workspace: str | Path,
    host: str = "127.0.0.1",
    port: int = 8767,
    token: str | None = None,
    *,
    on_ready: Callable[[TriscaleServer], None] | None = None,
    **kwargs: Any,
) -> None:
    """Serve the workbench until interrupted (``triscale serve``'s runner with the workbench's app)."""
    from triscale.tools.http_server import serve

    serve(workspace, host, port, token=token, on_ready=on_ready, make=make_web_app, **kwargs)
