"""The tool registry: the single source for the Python API, LangChain, the MCP server and YAML workflows.

A tool is a plain function ``func(ctx: ToolContext, args: InputModel) -> ResultModel`` registered with a name,
a description, its pydantic input and result models, a cost class and a default wall-time limit. Heavy work
inside a tool goes through ``ctx.compute(fn, ...)``, which runs ``fn`` in a worker process with the limit.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.workspace import Workspace

__all__ = [
    "Tool",
    "ToolContext",
    "ToolInput",
    "ToolResult",
    "REGISTRY",
    "register",
    "get_tool",
    "list_tools",
    "call_tool",
    "format_validation_error",
]

Cost = Literal["instant", "light", "heavy"]


class ToolInput(BaseModel):
    """Base of every tool's arguments: unknown arguments are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ToolResult(BaseModel):
    """Base of every tool's result. Field names carry their units (``energy_eV``, ``bulk_modulus_GPa``)."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field("", description="The tool that produced this result.")
    call_id: str = Field("", description="Id of the call in the workspace log (calls.jsonl).")
    notes: list[str] = Field(default_factory=list, description="Warnings and hints for the next step.")

    def content(self) -> str:
        """Compact JSON for an LLM: summaries and ids only, no coordinates."""
        return self.model_dump_json(exclude_none=True, exclude={"call_id"})


@dataclass
class Tool:
    name: str
    description: str
    input_model: type[ToolInput]
    result_model: type[ToolResult]
    func: Callable[[ToolContext, Any], ToolResult]
    cost: Cost = "light"
    timeout_s: float = 600.0
    category: str = "simulation"
    examples: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, workspace: Workspace | str, /, **kwargs: Any) -> ToolResult:
        return call_tool(self.name, kwargs, workspace)

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def card(self) -> dict[str, Any]:
        """Name, description, argument schema and cost: what an agent or a UI needs to know."""
        return {
            "name": self.name,
            "description": self.description,
            "cost": self.cost,
            "timeout_s": self.timeout_s,
            "category": self.category,
            "input_schema": self.input_schema(),
        }


REGISTRY: dict[str, Tool] = {}


def register(
    name: str,
    *,
    input: type[ToolInput],
    result: type[ToolResult],
    cost: Cost = "light",
    timeout_s: float = 600.0,
    category: str = "simulation",
    description: str | None = None,
):
    """Decorator: add ``func(ctx, args)`` to the registry under ``name``. The docstring is the description."""

    def deco(func: Callable[[ToolContext, Any], ToolResult]):
        desc = description or " ".join((func.__doc__ or name).split())
        REGISTRY[name] = Tool(name, desc, input, result, func, cost, timeout_s, category)
        return func

    return deco


def _ensure_loaded() -> None:
    # The tool modules register themselves on import.
    from triscale.tools import builders, continuum, jobs, planner, quantum, simulation  # noqa: F401


def list_tools(category: str | None = None) -> list[Tool]:
    _ensure_loaded()
    return [t for t in REGISTRY.values() if category is None or t.category == category]


def get_tool(name: str) -> Tool:
    _ensure_loaded()
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(REGISTRY), n=3, cutoff=0.5)
    raise ToolInputError(
        f"Unknown tool {name!r}." + (f" Did you mean {', '.join(close)}?" if close else ""),
        hint=f"Available tools: {', '.join(sorted(REGISTRY))}.",
    )


def format_validation_error(err: ValidationError, model: type[BaseModel], tool: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(arguments)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown argument {loc!r}")
        elif e["type"] == "missing":
            parts.append(f"missing required argument {loc!r}")
        else:
            parts.append(f"{loc}: {e['msg']}")
    allowed = ", ".join(model.model_fields)
    return f"Invalid arguments for {tool}: {'; '.join(parts)}. Allowed arguments: {allowed}."


class ToolContext:
    """What a running tool sees: the workspace, its call id, the wall-time limit and a cancel token."""

    def __init__(
        self, workspace: Workspace, tool: Tool, call_id: str, timeout_s: float | None, cancel: Any = None
    ):
        self.workspace = workspace
        self.tool = tool
        self.call_id = call_id
        self.timeout_s = timeout_s
        self.cancel = cancel
        self.created: list[str] = []
        self.notes: list[str] = []
        self._t0 = time.monotonic()

    @property
    def root(self) -> str:
        return str(self.workspace.root)

    def remaining_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        return max(self.timeout_s - (time.monotonic() - self._t0), 0.5)

    def compute(self, fn: Callable[..., Any], *args: Any, label: str | None = None, **kwargs: Any) -> Any:
        """Run ``fn`` in a worker process (or inline if the workspace has ``isolate=False``)."""
        if not self.workspace.isolate:
            return fn(*args, **kwargs)
        from triscale.tools.worker import run_in_worker

        return run_in_worker(
            fn,
            *args,
            timeout_s=self.remaining_s(),
            cancel=self.cancel,
            label=label or f"{self.tool.name} calculation",
            limit_s=self.timeout_s,
            **kwargs,
        )

    def structure(self, ref: str) -> tuple[str, Atoms]:
        """Resolve a structure reference: an id (``st3``), a label used earlier, or a molecule name/SMILES,
        which is then built and stored (forgiving input for small LLMs)."""
        from triscale.tools.builders import molecule_from_text

        ws = self.workspace
        text = str(ref).strip()
        if ws.has(text):
            sid = ws.record(text)["id"]
            return sid, ws.get(sid)
        by_label = ws.find_label(text) if text else None
        if by_label:
            return by_label, ws.get(by_label)
        if text.lower().startswith("st") and text[2:].strip().isdigit():
            raise ws.unknown_structure(text)
        try:
            atoms, label, source = molecule_from_text(text)
        except ToolInputError as e:
            err = ws.unknown_structure(text)
            raise ToolInputError(
                err.message + f" It is also not a known molecule name or SMILES ({e.message}).", hint=err.hint
            ) from None
        sid = self.store(atoms, label=label, tool=f"{self.tool.name}:auto_build")
        self.notes.append(f"Built {label} ({source}) as {sid} from {text!r}.")
        return sid, ws.get(sid)

    def store(self, atoms: Atoms, **lineage: Any) -> str:
        lineage.setdefault("tool", self.tool.name)
        lineage.setdefault("call_id", self.call_id)
        sid = self.workspace.add(atoms, **lineage)
        self.created.append(sid)
        return sid


def _as_workspace(workspace: Workspace | str | None) -> Workspace:
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
    ws = _as_workspace(workspace)
    if isinstance(args, BaseModel) and not isinstance(args, tool.input_model):
        args = args.model_dump()
    if not isinstance(args, tool.input_model):
        if args is not None and not isinstance(args, dict):
            raise ToolInputError(f"Arguments for {name} must be a JSON object, got {type(args).__name__}.")
        try:
            args = tool.input_model.model_validate(args or {})
        except ValidationError as e:
            raise ToolInputError(format_validation_error(e, tool.input_model, name)) from None
    limit = (
        timeout_s if timeout_s is not None else (ws.timeout_s if ws.timeout_s is not None else tool.timeout_s)
    )
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
