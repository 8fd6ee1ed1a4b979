"""Agent middleware: provenance logging, repeated-call detection, approval of expensive calls, tool errors.

Used with ``langchain.agents.create_agent`` together with LangChain's own ``ToolErrorMiddleware``,
``ModelCallLimitMiddleware`` and ``ToolCallLimitMiddleware`` (see :mod:`triscale.agents.graph`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse, ToolCallRequest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.errors import GraphBubbleUp

__all__ = [
    "TriScaleMiddleware",
    "canonical_call",
    "is_expensive",
    "makes_structures_only",
    "message_text",
    "tool_error_content",
]


def makes_structures_only(name: str) -> bool:
    """A registered tool that only makes structures (``register(..., makes_structures_only=True)``): a run that
    called only these has computed nothing yet. Tools outside the registry count as computing."""
    tool = _registered(name)
    return tool is not None and tool.makes_structures_only


def is_expensive(name: str, args: dict[str, Any]) -> bool:
    """Whether a call needs a person's approval: the tool's own ``needs_approval`` (DFT/HF in any spelling,
    long MD, a job that runs such a call), judged on the validated arguments."""
    tool = _registered(name)
    return tool is not None and tool.approval_needed(args)


def _registered(name: str):
    from triscale.tools import list_tools

    return next((t for t in list_tools() if t.name == name), None)


def tool_error_content(exc: Exception, request: ToolCallRequest) -> str:
    """What the model reads when a tool raised an exception the tool layer did not turn into a ToolError."""
    name = request.tool_call.get("name", "tool")
    return (
        f"{name} failed: {type(exc).__name__}: {str(exc)[:400]}. Check the arguments against the tool's "
        "schema, or try another method."
    )


def canonical_call(name: str, args: dict[str, Any]) -> str:
    return name + ":" + json.dumps(args, sort_keys=True, default=str)


def message_text(content: Any) -> str:
    """The text of a LangChain message content (a string or a list of text/tool blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") if isinstance(c, dict) else str(c) for c in content)
    return str(content or "")


class TriScaleMiddleware(AgentMiddleware):
    """Logs every model turn and tool call to the run's provenance log, answers an identical repeated tool
    call from the earlier result (with a note) instead of running it again, ends the run when the model keeps
    repeating itself, and asks ``approve(name, args)`` before expensive calls when given.

    One instance serves one run at a time; :class:`~triscale.agents.graph.ScienceAgent` sets :attr:`log` and
    :attr:`on_event` before each run and state is reset in ``before_agent``.
    """

    def __init__(
        self,
        *,
        max_repeats: int = 2,
        approve: Callable[[str, dict[str, Any]], bool] | None = None,
        expensive: Callable[[str, dict[str, Any]], bool] = is_expensive,
        select: Callable[[str, list[str]], list[str]] | None = None,
        max_failures: int = 3,
        verbatim: bool = True,
    ):
        super().__init__()
        self.select = select
        self.max_failures = max_failures
        self.verbatim = verbatim
        self.max_repeats = max_repeats
        self.approve = approve
        self.expensive = expensive
        self.log = None
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        self.reset()

    def reset(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}
        self.n_ok = 0  # successful tool calls so far: a failed call may be retried once something succeeded
        self.computed = False  # a tool other than a structure builder succeeded
        self.narrowed = False  # the tool selection matched the question (only then is a computation required)
        self._order: list[str] = []  # the tool-call ids of the latest model turn, in the model's order
        self._done: set[str] = set()
        self._cond = threading.Condition()
        self.turns = 0
        self.stop_reason = "answered"
        self.n_tool_calls = 0
        self.failures: list[str] = []  # "tool: error" of each failed call, in order
        self.failed_in_a_row = 0  # failed calls since the last successful one
        self.repairs: list[str] = []  # arguments changed to what the question states

    def _emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(kind, data)
            except Exception:  # a display problem must not end the run
                pass

    # ------------------------------------------------------------------ hooks
    def before_agent(self, state, runtime) -> None:
        self.reset()
        return None

    def _selected(self, request: ModelRequest) -> ModelRequest:
        """Only the schemas of the tools the latest question calls for (``select``); all when none match."""
        from langchain_core.messages import HumanMessage

        question = next(
            (message_text(m.content) for m in reversed(request.messages) if isinstance(m, HumanMessage)), ""
        )
        names = [getattr(t, "name", None) for t in request.tools]
        keep = set(self.select(question, [n for n in names if n])) if question else set()
        self.narrowed = bool(keep)
        if not keep:
            return request
        return request.override(tools=[t for t, n in zip(request.tools, names, strict=True) if n is None or n in keep])

    @staticmethod
    def _question(request: ModelRequest) -> str:
        from langchain_core.messages import HumanMessage

        return next((message_text(m.content) for m in reversed(request.messages) if isinstance(m, HumanMessage)), "")

    def failure_summary(self) -> str:
        """A plain answer that says what failed (used when the run is stopped for failing calls)."""
        shown = "; ".join(self.failures[-self.max_failures :])
        return (
            f"I could not compute the answer: {self.failed_in_a_row} tool calls in a row failed, so the run was "
            f"stopped. The last errors were: {shown}"
        )

    def _repaired(self, ai: AIMessage, question: str) -> AIMessage:
        """Tool calls whose arguments say what the question says (:mod:`triscale.agents.verbatim`)."""
        from triscale.agents.verbatim import question_facts, repair_call

        facts = question_facts(question)
        calls, changed = [], False
        for tc in ai.tool_calls:
            args, notes = repair_call(tc["name"], dict(tc.get("args") or {}), facts)
            if notes:
                changed = True
                self.repairs.extend(f"{tc['name']}: {n}" for n in notes)
                if self.log is not None:
                    self.log.write(
                        "guard", reason="arguments set to what the question states", tool=tc["name"], changes=notes
                    )
            calls.append({**tc, "args": args})
        if not changed:
            return ai
        return AIMessage(content=ai.content, tool_calls=calls, id=ai.id, usage_metadata=ai.usage_metadata)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]):
        if self.max_failures and self.failed_in_a_row >= self.max_failures:
            # The model keeps making calls that fail (invented names, a mangled input): end the run here with
            # a plain answer that says what failed, instead of letting it loop until the call limit.
            self.stop_reason = "repeated_failures"
            if self.log is not None:
                self.log.write(
                    "guard",
                    reason=f"{self.failed_in_a_row} failed tool calls in a row; run ended",
                    errors=self.failures[-self.max_failures :],
                )
            return ModelResponse(result=[AIMessage(content=self.failure_summary())], structured_response=None)
        self.turns += 1
        if self.select is not None:
            request = self._selected(request)
        t0 = time.monotonic()
        response = handler(request)
        msgs = response.result if isinstance(response, ModelResponse) else [response]
        ai = next((m for m in msgs if isinstance(m, AIMessage)), None)
        compute = [t for t in request.tools if getattr(t, "name", "") and not makes_structures_only(t.name)]
        if self.narrowed and ai is not None and not ai.tool_calls and not self.computed and compute:
            # A small model that stops after building (or before any call) although the question asks for a
            # computation: ask once more with a call of a computing tool required (grammar-constrained locally).
            if self.log is not None:
                self.log.write("guard", reason="final answer before any computation; a tool call was required")
            response = handler(request.override(tools=compute, tool_choice="any"))
            msgs = response.result if isinstance(response, ModelResponse) else [response]
            ai = next((m for m in msgs if isinstance(m, AIMessage)), None)
        dt = time.monotonic() - t0
        if self.verbatim and ai is not None and ai.tool_calls:
            fixed = self._repaired(ai, self._question(request))
            if fixed is not ai:
                ai = fixed
                msgs = [fixed if isinstance(m, AIMessage) else m for m in msgs]
                response = ModelResponse(
                    result=msgs,
                    structured_response=response.structured_response if isinstance(response, ModelResponse) else None,
                )
        if ai is not None and ai.tool_calls:
            repeats = [
                tc
                for tc in ai.tool_calls
                if self.seen.get(canonical_call(tc["name"], tc.get("args") or {}), {}).get("count", 0)
                >= self.max_repeats
            ]
            if len(repeats) == len(ai.tool_calls):
                # The model is looping on calls it has already made (and been told about): stop it here; the
                # answer is assembled from the results it already has.
                self.stop_reason = "repeated_calls"
                if self.log:
                    self.log.write(
                        "guard",
                        reason="repeated identical tool calls; run ended",
                        calls=[{"name": t["name"], "args": t["args"]} for t in repeats],
                    )
                ai = AIMessage(content=message_text(ai.content), id=ai.id)
                response = ModelResponse(result=[ai], structured_response=None)
        if self.log is not None and ai is not None:
            self.log.write(
                "model_turn",
                turn=self.turns,
                wall_time_s=round(dt, 4),
                n_messages_in=len(request.messages),
                tools_offered=[getattr(t, "name", "?") for t in request.tools],
                content=message_text(ai.content),
                tool_calls=[{"name": t["name"], "args": t.get("args"), "id": t.get("id")} for t in ai.tool_calls],
                usage=getattr(ai, "usage_metadata", None),
                structured=getattr(response, "structured_response", None) is not None
                if isinstance(response, ModelResponse)
                else False,
            )
        if ai is not None:
            with self._cond:
                self._order = [tc.get("id") or "" for tc in ai.tool_calls]
                self._done = set()
            self._emit("model", content=message_text(ai.content), tool_calls=list(ai.tool_calls))
        return response

    def _wait_turn(self, lc_id: str) -> None:
        """Run the calls of one model turn in the model's order (the tool node starts them in parallel): a
        model often builds a structure and uses its id in the same turn."""
        with self._cond:
            if lc_id not in self._order:
                return
            before = self._order[: self._order.index(lc_id)]
            self._cond.wait_for(lambda: all(i in self._done for i in before))

    def _mark_done(self, lc_id: str) -> None:
        with self._cond:
            self._done.add(lc_id)
            self._cond.notify_all()

    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]):
        tc = request.tool_call
        lc_id = tc.get("id") or ""
        self._wait_turn(lc_id)
        try:
            return self._tool_call(request, handler)
        finally:
            self._mark_done(lc_id)

    def _tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]):
        tc = request.tool_call
        name, args, lc_id = tc["name"], dict(tc.get("args") or {}), tc.get("id") or ""
        key = canonical_call(name, args)
        self._emit("tool_start", name=name, args=args)
        t0 = time.monotonic()

        def done(msg: ToolMessage, note: str | None = None) -> ToolMessage:
            dt = time.monotonic() - t0
            ok = msg.status != "error" and isinstance(msg.artifact, dict)
            if self.log is not None:
                self.log.tool_call(
                    name=name,
                    args=args,
                    lc_id=lc_id,
                    status="ok" if ok else "error",
                    wall_time_s=dt,
                    result=msg.artifact if ok else None,
                    content=message_text(msg.content),
                    note=note,
                )
            self._emit(
                "tool_end",
                name=name,
                args=args,
                ok=ok,
                content=message_text(msg.content),
                artifact=msg.artifact if ok else None,
                wall_time_s=dt,
            )
            return msg

        prev = self.seen.get(key)
        if prev is not None and not prev["ok"] and self.n_ok > prev["n_ok"]:
            prev = None  # it failed before something else succeeded (e.g. the structure it needs): try again
        if prev is not None:
            prev["count"] += 1
            return done(
                ToolMessage(
                    content=f"You already made this exact call; its result was: {prev['content']} "
                    "Do not repeat it. Use this result, call a different tool, or give the final answer.",
                    tool_call_id=lc_id,
                    name=name,
                    status="error",
                ),
                note="repeated identical call answered from the earlier result",
            )
        if self.approve is not None and self.expensive(name, args):
            try:
                ok = bool(self.approve(name, args))
            except (EOFError, KeyboardInterrupt):
                ok = False
            if self.log is not None:
                self.log.write("approval", name=name, args=args, approved=ok)
            if not ok:
                return done(
                    ToolMessage(
                        content=f"The user did not approve this expensive {name} call. Use a cheaper method "
                        "(calculator 'triscale' or 'gfn2-xtb') or explain what would be needed.",
                        tool_call_id=lc_id,
                        name=name,
                        status="error",
                    ),
                    note="not approved",
                )
        self.n_tool_calls += 1
        try:
            msg = handler(request)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # last line of defence; ToolErrorMiddleware normally handles these
            msg = ToolMessage(content=tool_error_content(exc, request), tool_call_id=lc_id, name=name, status="error")
        if not isinstance(msg, ToolMessage):  # a Command: pass through unlogged
            return msg
        ok = msg.status != "error"
        with self._cond:
            if ok:
                self.failed_in_a_row = 0
            else:
                self.failed_in_a_row += 1
                self.failures.append(
                    f"{name}({json.dumps(args, default=str)[:120]}): {message_text(msg.content)[:200]}"
                )
            self.n_ok += ok
            self.computed = self.computed or (ok and not makes_structures_only(name))
            self.seen[key] = {"count": 1, "content": message_text(msg.content)[:2000], "ok": ok, "n_ok": self.n_ok}
        return done(msg)
