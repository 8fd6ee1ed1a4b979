"""The agent's run settings (one typed object) and the state of one run (passed per invocation).

:class:`RunSettings` replaces the dozen keyword arguments :class:`~triscale.agents.graph.ScienceAgent` took; they
are still accepted one by one (``ScienceAgent(llm, ws, max_model_calls=6)``) and validated here. :class:`RunState`
is what one :meth:`ScienceAgent.ask` accumulates (provenance log, event callback, repeated/failed calls,
counters); it travels in LangGraph's run context (``graph.invoke(..., context=RunContext(state))``), so the
middleware instance shared by all runs keeps no per-run state of its own.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RunSettings", "RunState", "RunContext", "CURRENT_CANCEL"]

#: the cancel token of the run whose tool call is executing (set by the middleware around each call), read by the
#: tool bindings so that a cancelled run kills the calculation it is waiting for and starts no other
CURRENT_CANCEL: contextvars.ContextVar[Any] = contextvars.ContextVar("triscale_cancel", default=None)


class RunSettings(BaseModel):
    """How the agent runs: limits, which tools the model sees, and the guards on its calls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: list[str] | None = Field(None, description="Registry tools to offer (None: all, or the compact set).")
    max_model_calls: int = Field(12, ge=1, description="Model turns per run.")
    max_tool_calls: int = Field(20, ge=1, description="Tool calls per run.")
    max_repeats: int = Field(2, ge=1, description="Identical calls answered from the earlier result before stop.")
    max_failures: int = Field(3, ge=0, description="Failed calls in a row before the run stops (0: never).")
    structured: bool | None = Field(None, description="Structured final answer (None: by backend).")
    prompt_extra: str | None = Field(None, description="Text appended to the system prompt.")
    select_tools: bool | None = Field(
        None, description="Show only the tools the question calls for (None: by backend)."
    )
    route: Literal["keywords", "model", "both", "fallback"] = Field(
        "keywords",
        description="How the tools are selected: the registry's keywords, the model choosing from one-line "
        "descriptions generated from the registry (one grammar-constrained call), the union of both, or the "
        "model only when no keyword matches (instead of offering every schema).",
    )
    max_wall_s: float | None = Field(
        None, gt=0, description="Start no model turn after this many seconds of the run (None: no limit)."
    )
    verbatim: bool = Field(True, description="Set tool arguments to what the question states (SMILES, K, method).")
    fan_out: bool = Field(True, description="Compute every entity of 'which of A, B and C' questions.")


@dataclass
class RunState:
    """What one run accumulates; created fresh by each :meth:`ScienceAgent.ask`."""

    log: Any = None
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_ok: int = 0  # successful tool calls so far: a failed call may be retried once something succeeded
    computed: bool = False  # a tool other than a structure builder succeeded
    narrowed: bool = False  # the tool selection matched the question (only then is a computation required)
    order: list[str] = field(default_factory=list)  # the tool-call ids of the latest model turn, in order
    done: set[str] = field(default_factory=set)
    cond: threading.Condition = field(default_factory=threading.Condition)
    turns: int = 0
    stop_reason: str = "answered"
    n_tool_calls: int = 0
    failures: list[str] = field(default_factory=list)  # "tool(args): error" of each failed call
    failed_in_a_row: int = 0  # failed calls since the last successful one
    repairs: list[str] = field(default_factory=list)  # arguments changed to what the question states
    supercell_built: bool = False  # a build_bulk was given the question's NxMxK repeat (verbatim.supercell_repairs)
    routed: dict[str, list[str]] = field(default_factory=dict)  # question -> the tools the model chose
    started: float = field(default_factory=time.monotonic)
    cancel: Any = None  # a triscale.tools CancelToken: once set, no model turn or tool call starts

    @property
    def cancelled(self) -> bool:
        return self.cancel is not None and bool(self.cancel.cancelled)

    def emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a display problem must not end the run
                pass

    def failure_summary(self, last: int = 3) -> str:
        """A plain answer that says what failed (when the run is stopped for failing calls)."""
        shown = "; ".join(self.failures[-max(last, 1) :])
        return (
            f"I could not compute the answer: {self.failed_in_a_row} tool calls in a row failed, so the run was "
            f"stopped. The last errors were: {shown}"
        )


@dataclass
class RunContext:
    """LangGraph's per-invocation context of the agent graph (``context_schema``)."""

    state: RunState = field(default_factory=RunState)
