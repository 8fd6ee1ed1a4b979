"""The science agent: ``langchain.agents.create_agent`` over the TriScale tool registry.

>>> from triscale.agents import ScienceAgent
>>> agent = ScienceAgent(llm="openai:qwen2.5-7b-instruct@http://localhost:8000/v1", workspace="runs/chat")
>>> run = agent.ask("What is the GFN2-xTB energy of water?")
>>> run.answer.answer, run.answer.results[0].value, run.run_id

Each :meth:`ScienceAgent.ask` is one run with its own provenance log; runs in the same ``thread_id`` share the
conversation memory (a LangGraph checkpointer, SQLite in the workspace so sessions resume after a restart).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from triscale.agents.answer import FinalAnswer, ModelAnswer, ToolRecord, assemble_answer
from triscale.agents.context import RunContext, RunSettings, RunState
from triscale.agents.middleware import message_text
from triscale.agents.prompts import system_prompt
from triscale.tools import Workspace, list_tools

__all__ = ["ScienceAgent", "AgentRun", "compact_tools", "default_checkpointer"]


def compact_tools() -> list[str]:
    """The tool subset offered to small local models (``register(..., compact=True)``): fewer, simpler schemas
    (the full registry is ~25 tools)."""
    return [t.name for t in list_tools() if t.compact]


def __getattr__(name: str) -> Any:
    if name == "COMPACT_TOOLS":  # the former constant, now read from the registry
        return compact_tools()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class AgentRun(BaseModel):
    run_id: str
    thread_id: str
    question: str
    answer: FinalAnswer
    stop_reason: str
    n_model_calls: int
    n_tool_calls: int
    wall_time_s: float
    provenance: str

    def as_json(self) -> dict[str, Any]:
        """The ``triscale ask --json`` payload: exactly ``{"answer", "results"}``."""
        return self.answer.model_dump(mode="json")


def default_checkpointer(path: str | Path | None):
    """SQLite checkpointer at ``path`` (resumable sessions) if langgraph-checkpoint-sqlite is installed, else
    an in-memory one."""
    if path is not None:
        try:
            import sqlite3

            from langgraph.checkpoint.sqlite import SqliteSaver

            conn = sqlite3.connect(str(path), check_same_thread=False)
            return SqliteSaver(conn)
        except ImportError:
            pass
    from langgraph.checkpoint.memory import InMemorySaver

    return InMemorySaver()


class ScienceAgent:
    """An LLM agent whose every number comes from a TriScale tool.

    Parameters
    ----------
    llm:
        A LangChain chat model, or a backend spec string for :func:`triscale.agents.llm.make_llm`
        (``None``: the configured/default backend).
    workspace:
        Run directory (structure store, tool outputs, ``agent_runs/`` provenance, session database).
    settings:
        The run settings (:class:`~triscale.agents.context.RunSettings`: tools offered, call limits, repeated and
        failed-call limits, structured answers, tool selection, the verbatim-argument and multi-entity guards).
        Each field may also be given as a keyword (``max_model_calls=6``), which overrides ``settings``.
    extra_tools:
        Further LangChain tools (tests use this to inject a failing tool).
    memory:
        ``True``: SQLite sessions in the workspace; ``False``: in-memory; or a LangGraph checkpointer.
    approve:
        ``approve(tool_name, args) -> bool`` asked before expensive calls (DFT, long MD); ``None``: no approval.

    ``settings.tools`` default to all, or :func:`compact_tools` for local models; ``select_tools`` (``None``: on
    for small local models) shows the model only the schemas the question calls for; ``structured`` (``None``: on
    for backends that call tools natively) asks for a structured final answer, whose ``results`` still come from
    the tool results; ``fan_out`` computes every entity of "which of A, B and C" questions.
    """

    def __init__(
        self,
        llm: Any = None,
        workspace: Workspace | str | Path = "workspace",
        *,
        settings: RunSettings | None = None,
        extra_tools: list[Any] | None = None,
        memory: bool | Any = True,
        approve: Callable[[str, dict[str, Any]], bool] | None = None,
        **overrides: Any,
    ):
        from langchain.agents import create_agent
        from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware, ToolErrorMiddleware
        from langchain.agents.structured_output import ToolStrategy

        from triscale.agents.llm import LLMInfo, make_llm
        from triscale.agents.middleware import TriScaleMiddleware, tool_error_content
        from triscale.agents.tool_bindings import langchain_tools

        try:
            settings = (settings or RunSettings()).model_copy(
                update=RunSettings(**overrides).model_dump(include=set(overrides))
            )
        except ValidationError as e:
            raise TypeError(f"ScienceAgent: bad settings: {e}") from None
        self.settings = settings
        self.workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        if llm is None or isinstance(llm, str):
            llm, info = make_llm(llm)
        else:
            info = LLMInfo.describe(llm)
        self.llm = llm
        self.llm_info = info
        tools = settings.tools
        if tools is None and info.compact_tools:
            tools = compact_tools()
        available = {t.name for t in list_tools()}
        names = [n for n in (tools or sorted(available)) if n in available]
        self.tools = langchain_tools(self.workspace, names) + list(extra_tools or [])
        self.prompt = system_prompt(settings.prompt_extra)
        structured = settings.structured
        if structured is None:
            structured = info.native_tools
        self.structured = bool(structured)
        select_tools = settings.select_tools
        if select_tools is None:
            select_tools = info.compact_tools
        from triscale.agents.select import select_tools as selector

        self.guard = TriScaleMiddleware(
            max_repeats=settings.max_repeats,
            approve=approve,
            select=selector if select_tools else None,
            max_failures=settings.max_failures,
            verbatim=settings.verbatim,
            route=settings.route,
            max_wall_s=settings.max_wall_s,
        )
        middleware = [
            self.guard,
            ToolErrorMiddleware(tool_error_content),
            ModelCallLimitMiddleware(run_limit=settings.max_model_calls, exit_behavior="end"),
            ToolCallLimitMiddleware(run_limit=settings.max_tool_calls, exit_behavior="continue"),
        ]
        if memory is True:
            self.checkpointer = default_checkpointer(self.workspace.root / "agent_sessions.sqlite")
        elif memory is False or memory is None:
            self.checkpointer = default_checkpointer(None)
        else:
            self.checkpointer = memory
        self.graph = create_agent(
            llm,
            self.tools,
            system_prompt=self.prompt,
            middleware=middleware,
            response_format=ToolStrategy(ModelAnswer) if self.structured else None,
            checkpointer=self.checkpointer,
            context_schema=RunContext,
            name="triscale",
        )

    # ------------------------------------------------------------------ runs
    def ask(
        self,
        question: str,
        *,
        thread_id: str | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        cancel: Any = None,
    ) -> AgentRun:
        """Answer one question (one run). Never raises for tool or model-format problems: the answer then says
        what went wrong; a backend that cannot be reached raises its own connection error.

        ``cancel``: a :class:`triscale.tools.worker.CancelToken`. Once it is set (from another thread), the running
        calculation's worker is killed, no further tool call or model turn starts, and the answer is assembled
        from the results finished before (``stop_reason`` "cancelled")."""
        from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

        from triscale.agents.provenance import RunLog

        thread_id = thread_id or f"t-{uuid.uuid4().hex[:8]}"
        log = RunLog(self.workspace.root)
        log.start(
            question,
            thread_id=thread_id,
            llm=self.llm_info.as_dict(),
            tools=[t.name for t in self.tools],
            prompt=self.prompt,
        )
        st = RunState(log=log, on_event=on_event, cancel=cancel)
        t0 = time.monotonic()
        config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 100}
        error = None
        state: dict[str, Any] = {}
        try:
            state = self.graph.invoke({"messages": [HumanMessage(question)]}, config, context=RunContext(st))
        except Exception as e:  # the backend failed mid-run: keep what the tools produced
            error = f"{type(e).__name__}: {e}"
            log.write("error", error=error)
            try:
                state = dict(self.graph.get_state(config).values)
            except Exception:
                state = {}
        messages = list(state.get("messages", []))
        start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1) + 1
        turn = messages[start:]
        args_by_id = {
            tc["id"]: (tc["name"], tc.get("args") or {})
            for m in turn
            if isinstance(m, AIMessage)
            for tc in m.tool_calls
        }
        records = []
        for m in turn:
            if (
                isinstance(m, ToolMessage)
                and m.status != "error"
                and isinstance(m.artifact, dict)
                and "tool" in m.artifact
            ):
                name, args = args_by_id.get(m.tool_call_id, (m.artifact["tool"], {}))
                records.append(ToolRecord(name=name, args=args, result=m.artifact, lc_id=m.tool_call_id))
        last = next((m for m in reversed(turn) if isinstance(m, AIMessage)), None)
        final_text = message_text(last.content) if last is not None and not last.tool_calls else ""
        stop = st.stop_reason
        if final_text and "limit" in final_text.lower() and "exceeded" in final_text.lower():
            stop, final_text = "call_limit", ""
        notes = []
        if st.cancelled and not error:
            stop = "cancelled"
            notes.append("Cancelled by the user; the results are those finished before that.")
        if error:
            stop = "error"
            notes.append(f"The language model failed: {error}")
        elif stop == "repeated_calls":
            notes.append("The model repeated identical tool calls; the run was stopped.")
        elif stop == "repeated_failures":
            final_text = ""  # the failure summary is a note: its error texts are not results to trace
            notes.append(st.failure_summary(self.settings.max_failures))
        if st.repairs:
            notes.append("Arguments set to what the question states: " + "; ".join(st.repairs) + ".")
        elif stop == "call_limit":
            notes.append("The run reached its model/tool call limit.")
        elif stop == "time_limit":
            notes.append(f"The run reached its time limit ({self.settings.max_wall_s:g} s).")
        if stop not in ("error", "repeated_failures", "cancelled") and self.settings.fan_out:
            more, fan_notes = self._fan_out(question, records, st)
            records += more
            notes += fan_notes
        structured = state.get("structured_response")
        if structured is not None and isinstance(structured, BaseModel):
            structured = structured.model_dump()
        answer = assemble_answer(
            records, final_text, structured, question=question, notes=notes, workspace=self.workspace
        )
        from triscale.agents.entities import comparison_line

        line = comparison_line(question, answer.results, records)
        if line:
            answer = FinalAnswer(answer=answer.answer + "\n\n" + line, results=answer.results)
        wall = time.monotonic() - t0
        log.answer(answer.model_dump(mode="json"), wall, stop)
        return AgentRun(
            run_id=log.run_id,
            thread_id=thread_id,
            question=question,
            answer=answer,
            stop_reason=stop,
            n_model_calls=st.turns,
            n_tool_calls=st.n_tool_calls,
            wall_time_s=round(wall, 3),
            provenance=str(log.path),
        )

    def _fan_out(self, question: str, records: list[ToolRecord], st: RunState) -> tuple[list[ToolRecord], list[str]]:
        """The calls the model made for one entity of a multi-entity question, run for the others
        (:func:`triscale.agents.entities.fan_out`), logged like the model's own calls."""
        from triscale.agents.entities import fan_out
        from triscale.agents.tool_bindings import call_for_agent
        from triscale.tools import ToolError

        log = st.log

        def call(name: str, args: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
            t0 = time.monotonic()
            try:
                result = call_for_agent(name, dict(args), self.workspace)
            except ToolError as e:
                log.tool_call(
                    name=name,
                    args=args,
                    lc_id="fan-out",
                    status="error",
                    wall_time_s=time.monotonic() - t0,
                    content=str(e),
                    note="run for another entity of the question",
                )
                return None, str(e)
            art = result.model_dump(mode="json")
            log.tool_call(
                name=name,
                args=args,
                lc_id="fan-out",
                status="ok",
                wall_time_s=time.monotonic() - t0,
                result=art,
                content=result.content(),
                note="run for another entity of the question",
            )
            st.n_tool_calls += 1
            return art, None

        return fan_out(question, records, call)

    def history(self, thread_id: str) -> list[Any]:
        """The stored messages of a session."""
        snap = self.graph.get_state({"configurable": {"thread_id": thread_id}})
        return list(snap.values.get("messages", [])) if snap and snap.values else []

    def close(self) -> None:
        conn = getattr(self.checkpointer, "conn", None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        self.workspace.close()
