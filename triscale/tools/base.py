"""The bottom of the tool layer: what a tool is made of. ``ToolInput``/``ToolResult`` (pydantic bases), the
``Tool`` record with its agent metadata, ``register`` (the decorator every tool module uses), the ``REGISTRY`` it
fills and the ``ToolContext`` a running tool sees. Tool modules import this; :mod:`triscale.tools.registry` imports
the tool modules (an explicit list) and runs calls. Nothing here imports a tool module.

A tool is a plain function ``func(ctx: ToolContext, args: InputModel) -> ResultModel`` registered with a name,
a description, its pydantic input and result models, a cost class and a default wall-time limit. Heavy work
inside a tool goes through ``ctx.compute(fn, ...)``, which runs ``fn`` in a worker process with the limit.

The registration also holds what the agent needs to know about a tool (read by :mod:`triscale.agents`, so that a
tool's metadata has one home): ``compact`` (offered to small local models), ``keywords`` (regular expressions on
a lower-cased question that call for the tool), ``makes_structures_only`` (a builder: a run that called only
these has computed nothing yet), ``needs_approval`` (a predicate on the *validated* input: whether a person must
approve the call when approval is on) and ``answer_fields`` (the result fields that answer the usual question).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triscale.tools.errors import ToolInputError
from triscale.tools.workspace import Workspace

__all__ = [
    "APPROVAL_POLICIES",
    "REGISTRY",
    "Tool",
    "ToolContext",
    "ToolInput",
    "ToolResult",
    "format_validation_error",
    "register",
    "set_structure_resolver",
    "uses_expensive_method",
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
    # agent metadata (see the module docstring)
    compact: bool = False
    keywords: tuple[str, ...] = ()
    makes_structures_only: bool = False
    needs_approval: Callable[[Any], bool] | None = None
    answer_fields: tuple[str, ...] = ()

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

    def validate_input(self, args: dict[str, Any] | BaseModel | None) -> ToolInput:
        """``args`` as this tool's validated input model; a :class:`ToolInputError` naming the problem if not."""
        if isinstance(args, self.input_model):
            return args
        if isinstance(args, BaseModel):
            args = args.model_dump()
        if args is not None and not isinstance(args, dict):
            raise ToolInputError(f"Arguments for {self.name} must be a JSON object, got {type(args).__name__}.")
        try:
            return self.input_model.model_validate(args or {})
        except ValidationError as e:
            raise ToolInputError(format_validation_error(e, self.input_model, self.name)) from None

    def approval_needed(self, args: dict[str, Any] | BaseModel | None) -> bool:
        """Whether this call needs a person's approval: ``needs_approval`` on the validated arguments (every
        spelling of a method counts the same). Arguments that do not validate need none: the call is refused
        before anything runs."""
        if self.needs_approval is None:
            return False
        try:
            validated = self.validate_input(args)
        except ToolInputError:
            return False
        return bool(self.needs_approval(validated))


REGISTRY: dict[str, Tool] = {}

# Calls that need a person's approval when approval is switched on: PySCF HF/DFT anywhere, and long MD.
LONG_MD_STEPS = 20_000


def uses_expensive_method(args: BaseModel) -> bool:
    """The validated input asks for PySCF HF or DFT, through ``calculator`` (a spec or a name) or ``method``
    (every spelling the method table accepts: 'hf', 'PBE', {'method': 'dft'}, ...)."""
    from triscale.tools.calculators import is_dft

    for key in ("calculator", "method"):
        value = getattr(args, key, None)
        if value is None:
            continue
        try:
            if is_dft(value):
                return True
        except ToolInputError:
            continue  # an unknown method is refused when the tool runs
    return False


def _long_md(args: BaseModel) -> bool:
    return uses_expensive_method(args) or int(getattr(args, "steps", 0) or 0) > LONG_MD_STEPS


def _submitted_tool(args: BaseModel) -> bool:
    """A background job needs the approval its tool would need."""
    name = getattr(args, "tool", None)
    if not isinstance(name, str) or name not in REGISTRY:
        return False
    return REGISTRY[name].approval_needed(getattr(args, "arguments", None) or {})


# Named approval predicates (``register(..., needs_approval="expensive_method")``); a callable works as well.
APPROVAL_POLICIES: dict[str, Callable[[Any], bool]] = {
    "expensive_method": uses_expensive_method,
    "expensive_method_or_long_md": _long_md,
    "submitted_tool": _submitted_tool,
}


def register(
    name: str,
    *,
    input: type[ToolInput],
    result: type[ToolResult],
    cost: Cost = "light",
    timeout_s: float = 600.0,
    category: str = "simulation",
    description: str | None = None,
    compact: bool = False,
    keywords: tuple[str, ...] = (),
    makes_structures_only: bool = False,
    needs_approval: Callable[[Any], bool] | str | None = None,
    answer_fields: tuple[str, ...] = (),
):
    """Decorator: add ``func(ctx, args)`` to the registry under ``name``. The docstring is the description.

    The agent metadata is described in the module docstring; ``needs_approval`` is a predicate on the validated
    input model or the name of one in :data:`APPROVAL_POLICIES`. ``answer_fields`` must be fields of ``result``.
    """
    if isinstance(needs_approval, str):
        if needs_approval not in APPROVAL_POLICIES:
            raise ValueError(f"Unknown approval policy {needs_approval!r}; known: {', '.join(APPROVAL_POLICIES)}.")
        needs_approval = APPROVAL_POLICIES[needs_approval]
    unknown = [f for f in answer_fields if f not in result.model_fields]
    if unknown:
        raise ValueError(f"{name}: answer_fields {unknown} are not fields of {result.__name__}.")
    if isinstance(keywords, str):
        raise TypeError(f"{name}: keywords must be a tuple of regular expressions, not one string.")
    for k in keywords:
        re.compile(k)  # a bad pattern fails at import, not in the middle of a run

    def deco(func: Callable[[ToolContext, Any], ToolResult]):
        desc = description or " ".join((func.__doc__ or name).split())
        REGISTRY[name] = Tool(
            name,
            desc,
            input,
            result,
            func,
            cost,
            timeout_s,
            category,
            compact=compact,
            keywords=tuple(keywords),
            makes_structures_only=makes_structures_only,
            needs_approval=needs_approval,
            answer_fields=tuple(answer_fields),
        )
        return func

    return deco


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


# Builds a structure from a name or SMILES for ``ToolContext.structure``; the builders module installs it (this module
# sits below every tool module, so it cannot import them). Signature: (text, compute=ctx.compute, crystals=bool) ->
# (atoms, label, source), raising ToolInputError for text that names nothing it can build.
_STRUCTURE_RESOLVER: Callable[..., tuple[Atoms, str, str]] | None = None


def set_structure_resolver(fn: Callable[..., tuple[Atoms, str, str]]) -> None:
    """Install the function that turns a molecule name or SMILES into a structure (see ``ToolContext.structure``)."""
    global _STRUCTURE_RESOLVER
    _STRUCTURE_RESOLVER = fn


class ToolContext:
    """What a running tool sees: the workspace, its call id, the wall-time limit and a cancel token."""

    def __init__(self, workspace: Workspace, tool: Tool, call_id: str, timeout_s: float | None, cancel: Any = None):
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

    def structure(self, ref: str, *, crystals: bool = True) -> tuple[str, Atoms]:
        """Resolve a structure reference: an id (``st3``), a label used earlier, or a molecule name/SMILES (an
        element alone: its reference crystal, unless ``crystals=False``), which is then built and stored
        (forgiving input for small LLMs)."""
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
        if _STRUCTURE_RESOLVER is None:
            raise ws.unknown_structure(text)
        try:
            atoms, label, source = _STRUCTURE_RESOLVER(text, compute=self.compute, crystals=crystals)
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
