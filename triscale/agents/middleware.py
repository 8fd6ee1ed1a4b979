"""Agent middleware: provenance logging, repeated-call detection, approval of expensive calls, tool errors.

Used with ``langchain.agents.create_agent`` together with LangChain's own ``ToolErrorMiddleware``,
``ModelCallLimitMiddleware`` and ``ToolCallLimitMiddleware`` (see :mod:`triscale.agents.graph`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse, ToolCallRequest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.errors import GraphBubbleUp

from triscale.agents.context import CURRENT_CANCEL, RunState

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

    Settings live on the instance; everything a run accumulates (its provenance log, event callback, repeated
    and failed calls, counters) is the :class:`~triscale.agents.context.RunState` in the run's LangGraph context
    (:meth:`state`), so one instance serves every run of an agent.
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
        route: str = "keywords",
        max_wall_s: float | None = None,
    ):
        super().__init__()
        self.max_wall_s = max_wall_s
        self.route = route
        self.select = select
        self.max_failures = max_failures
        self.verbatim = verbatim
        self.max_repeats = max_repeats
        self.approve = approve
        self.expensive = expensive
        self.default_state = RunState()  # used when a run passes no RunContext

    def state(self, runtime: Any) -> RunState:
        """The state of the run ``runtime`` belongs to (its ``RunContext``)."""
        st = getattr(getattr(runtime, "context", None), "state", None)
        return st if isinstance(st, RunState) else self.default_state

    # ------------------------------------------------------------------ hooks
    def before_agent(self, state, runtime) -> None:
        if getattr(getattr(runtime, "context", None), "state", None) is None:
            self.default_state = RunState()  # a run without a context starts from a clean default
        return None

    def _selected(self, request: ModelRequest, st: RunState) -> ModelRequest:
        """Only the schemas of the tools the latest question calls for (``select``); all when none match."""
        from langchain_core.messages import HumanMessage

        question = next(
            (message_text(m.content) for m in reversed(request.messages) if isinstance(m, HumanMessage)), ""
        )
        names = [getattr(t, "name", None) for t in request.tools]
        avail = [n for n in names if n]
        keep = set(self.select(question, avail)) if question and self.route != "model" else set()
        if question and (self.route in ("model", "both") or (self.route == "fallback" and not keep)):
            if question not in st.routed:
                from triscale.agents.select import model_route

                t0 = time.monotonic()
                st.routed[question] = model_route(request.model, question, avail)
                if st.log is not None:
                    st.log.write("route", tools=st.routed[question], wall_time_s=round(time.monotonic() - t0, 3))
            keep |= set(st.routed[question])
        st.narrowed = bool(keep)
        if not keep:
            return request
        return request.override(tools=[t for t, n in zip(request.tools, names, strict=True) if n is None or n in keep])

    @staticmethod
    def _question(request: ModelRequest) -> str:
        from langchain_core.messages import HumanMessage

        return next((message_text(m.content) for m in reversed(request.messages) if isinstance(m, HumanMessage)), "")

    @staticmethod
    def _results_text(request: ModelRequest) -> str:
        """The tool results the model has seen since the question (numbers it may legitimately reuse)."""
        from langchain_core.messages import HumanMessage, ToolMessage

        start = max((i for i, m in enumerate(request.messages) if isinstance(m, HumanMessage)), default=-1) + 1
        return " ".join(message_text(m.content) for m in request.messages[start:] if isinstance(m, ToolMessage))

    def _repaired(self, ai: AIMessage, question: str, st: RunState, results: str = "") -> AIMessage:
        """Tool calls whose arguments say what the question says (:mod:`triscale.agents.verbatim`)."""
        from triscale.agents.verbatim import question_facts, repair_call, supercell_repairs

        facts = question_facts(question)
        facts.results = results
        calls, changed = [], False

        def record(tool: str, notes: list[str]) -> None:
            st.repairs.extend(f"{tool}: {n}" for n in notes)
            if st.log is not None:
                st.log.write("guard", reason="arguments set to what the question states", tool=tool, changes=notes)

        for tc in ai.tool_calls:
            args, notes = repair_call(tc["name"], dict(tc.get("args") or {}), facts)
            if notes:
                changed = True
                record(tc["name"], notes)
            calls.append({**tc, "args": args})
        calls, notes, st.supercell_built = supercell_repairs(calls, facts, st.supercell_built)
        if notes:
            changed = True
            record("supercell", notes)
        if not changed:
            return ai
        return AIMessage(content=ai.content, tool_calls=calls, id=ai.id, usage_metadata=ai.usage_metadata)

    def wrap_model_call(self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]):
        st = self.state(request.runtime)
        if self.max_failures and st.failed_in_a_row >= self.max_failures:
            # The model keeps making calls that fail (invented names, a mangled input): end the run here with
            # a plain answer that says what failed, instead of letting it loop until the call limit.
            st.stop_reason = "repeated_failures"
            if st.log is not None:
                st.log.write(
                    "guard",
                    reason=f"{st.failed_in_a_row} failed tool calls in a row; run ended",
                    errors=st.failures[-self.max_failures :],
                )
            return ModelResponse(
                result=[AIMessage(content=st.failure_summary(self.max_failures))], structured_response=None
            )
        if st.cancelled:
            st.stop_reason = "cancelled"
            if st.log is not None:
                st.log.write("guard", reason="cancelled by the user; run ended")
            return ModelResponse(result=[AIMessage(content="")], structured_response=None)
        if self.max_wall_s is not None and time.monotonic() - st.started > self.max_wall_s and st.turns:
            st.stop_reason = "time_limit"
            if st.log is not None:
                st.log.write("guard", reason=f"run longer than {self.max_wall_s:g} s; run ended")
            return ModelResponse(result=[AIMessage(content="")], structured_response=None)
        st.turns += 1
        if self.select is not None:
            request = self._selected(request, st)
        t0 = time.monotonic()
        response = handler(request)
        msgs = response.result if isinstance(response, ModelResponse) else [response]
        ai = next((m for m in msgs if isinstance(m, AIMessage)), None)
        compute = [t for t in request.tools if getattr(t, "name", "") and not makes_structures_only(t.name)]
        if st.narrowed and ai is not None and not ai.tool_calls and not st.computed and compute:
            # A small model that stops after building (or before any call) although the question asks for a
            # computation: ask once more with a call of a computing tool required (grammar-constrained locally).
            # ... but when its last call failed for want of a structure, building one is the step it needs
            # (held-out h_md_1: forced to compute, it called MD on a structure that did not exist until stopped)
            missing = bool(st.failures) and "Unknown structure" in st.failures[-1]
            forced = list(request.tools) if missing else compute
            if st.log is not None:
                st.log.write("guard", reason="final answer before any computation; a tool call was required")
            response = handler(request.override(tools=forced, tool_choice="any"))
            msgs = response.result if isinstance(response, ModelResponse) else [response]
            ai = next((m for m in msgs if isinstance(m, AIMessage)), None)
        dt = time.monotonic() - t0
        if self.verbatim and ai is not None and ai.tool_calls:
            fixed = self._repaired(ai, self._question(request), st, self._results_text(request))
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
                if st.seen.get(canonical_call(tc["name"], tc.get("args") or {}), {}).get("count", 0) >= self.max_repeats
            ]
            if len(repeats) == len(ai.tool_calls):
                # The model is looping on calls it has already made (and been told about): stop it here; the
                # answer is assembled from the results it already has.
                st.stop_reason = "repeated_calls"
                if st.log:
                    st.log.write(
                        "guard",
                        reason="repeated identical tool calls; run ended",
                        calls=[{"name": t["name"], "args": t["args"]} for t in repeats],
                    )
                ai = AIMessage(content=message_text(ai.content), id=ai.id)
                response = ModelResponse(result=[ai], structured_response=None)
        if st.log is not None and ai is not None:
            st.log.write(
                "model_turn",
                turn=st.turns,
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
            with st.cond:
                st.order = [tc.get("id") or "" for tc in ai.tool_calls]
                st.done = set()
            st.emit("model", content=message_text(ai.content), tool_calls=list(ai.tool_calls))
        return response

    def _wait_turn(self, lc_id: str, st: RunState) -> None:
        """Run the calls of one model turn in the model's order (the tool node starts them in parallel): a
        model often builds a structure and uses its id in the same turn."""
        with st.cond:
            if lc_id not in st.order:
                return
            before = st.order[: st.order.index(lc_id)]
            st.cond.wait_for(lambda: all(i in st.done for i in before))

    def _mark_done(self, lc_id: str, st: RunState) -> None:
        with st.cond:
            st.done.add(lc_id)
            st.cond.notify_all()

    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any]):
        st = self.state(request.runtime)
        tc = request.tool_call
        lc_id = tc.get("id") or ""
        self._wait_turn(lc_id, st)
        token = CURRENT_CANCEL.set(st.cancel)
        try:
            return self._tool_call(request, handler, st)
        finally:
            CURRENT_CANCEL.reset(token)
            self._mark_done(lc_id, st)

    def _tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Any], st: RunState):
        tc = request.tool_call
        name, args, lc_id = tc["name"], dict(tc.get("args") or {}), tc.get("id") or ""
        key = canonical_call(name, args)
        st.emit("tool_start", name=name, args=args)
        t0 = time.monotonic()

        def done(msg: ToolMessage, note: str | None = None) -> ToolMessage:
            dt = time.monotonic() - t0
            ok = msg.status != "error" and isinstance(msg.artifact, dict)
            if st.log is not None:
                st.log.tool_call(
                    name=name,
                    args=args,
                    lc_id=lc_id,
                    status="ok" if ok else "error",
                    wall_time_s=dt,
                    result=msg.artifact if ok else None,
                    content=message_text(msg.content),
                    note=note,
                )
            st.emit(
                "tool_end",
                name=name,
                args=args,
                ok=ok,
                content=message_text(msg.content),
                artifact=msg.artifact if ok else None,
                wall_time_s=dt,
            )
            return msg

        prev = st.seen.get(key)
        if prev is not None and not prev["ok"] and st.n_ok > prev["n_ok"]:
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
            if st.log is not None:
                st.log.write("approval", name=name, args=args, approved=ok)
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
        st.n_tool_calls += 1
        try:
            msg = handler(request)
        except GraphBubbleUp:
            raise
        except Exception as exc:  # last line of defence; ToolErrorMiddleware normally handles these
            msg = ToolMessage(content=tool_error_content(exc, request), tool_call_id=lc_id, name=name, status="error")
        if not isinstance(msg, ToolMessage):  # a Command: pass through unlogged
            return msg
        ok = msg.status != "error"
        with st.cond:
            if ok:
                st.failed_in_a_row = 0
            else:
                st.failed_in_a_row += 1
                st.failures.append(f"{name}({json.dumps(args, default=str)[:120]}): {message_text(msg.content)[:200]}")
            st.n_ok += ok
            st.computed = st.computed or (ok and not makes_structures_only(name))
            st.seen[key] = {"count": 1, "content": message_text(msg.content)[:2000], "ok": ok, "n_ok": st.n_ok}
        return done(msg)
