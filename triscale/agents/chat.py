"""``triscale ask`` and ``triscale chat``: the command-line front ends of :class:`ScienceAgent`."""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

__all__ = ["run_ask", "run_chat", "render_answer"]


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def _short(value: Any, n: int = 160) -> str:
    s = json.dumps(value, default=str) if not isinstance(value, str) else value
    return s if len(s) <= n else s[: n - 1] + "…"


def event_printer(console):
    """An ``on_event`` callback that streams tool calls and results as they happen."""

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "model":
            text = (data.get("content") or "").strip()
            if text and data.get("tool_calls"):
                console.print(f"[dim]{_short(text, 300)}[/dim]")
        elif kind == "tool_start":
            console.print(f"[cyan]→ {data['name']}[/cyan] {_short(data['args'])}")
        elif kind == "tool_end":
            if data["ok"]:
                art = {
                    k: v
                    for k, v in (data.get("artifact") or {}).items()
                    if k not in ("tool", "call_id", "notes")
                    and v not in (None, [], "")
                    and not (isinstance(v, list) and len(v) > 6)
                }
                console.print(f"  [green]✓[/green] {data['wall_time_s']:.2f} s  {_short(art, 300)}")
            else:
                console.print(f"  [red]✗[/red] {_short(data['content'], 400)}")

    return on_event


def render_answer(console, run) -> None:
    from rich.markdown import Markdown
    from rich.panel import Panel
    from rich.table import Table

    from triscale.agents.answer import format_value

    console.print(Panel(Markdown(run.answer.answer), title="answer", border_style="green"))
    if run.answer.results:
        t = Table(show_edge=False)
        for col in ("property", "value", "unit", "method", "± ", "structures", "calls"):
            t.add_column(col)
        for r in run.answer.results:
            v = format_value(r.value)
            t.add_row(
                r.property,
                v,
                r.unit,
                r.method,
                "" if r.uncertainty is None else f"{r.uncertainty:.2g}",
                ",".join(r.structure_ids),
                ",".join(r.tool_calls),
            )
        console.print(t)
    console.print(
        f"[dim]run {run.run_id} · {run.n_model_calls} model / {run.n_tool_calls} tool calls · "
        f"{run.wall_time_s:.1f} s · triscale runs show {run.run_id}[/dim]"
    )


def confirm_expensive(name: str, args: dict[str, Any]) -> bool:
    """Ask the person at the terminal before an expensive calculation (DFT, long MD)."""
    from rich.prompt import Confirm

    if not sys.stdin.isatty():
        return False
    return Confirm.ask(f"Run expensive [bold]{name}[/bold] {_short(args)}?", default=False)


def _agent(llm: str | None, workspace: str, approve: bool, **kw: Any):
    from triscale.agents.graph import ScienceAgent

    return ScienceAgent(llm, workspace, approve=confirm_expensive if approve else None, **kw)


def run_ask(
    question: str, *, llm: str | None, workspace: str, as_json: bool, session: str | None, approve: bool = False
) -> int:
    from triscale.agents.llm import NoBackendError

    err = _console(stderr=True)
    try:
        agent = _agent(llm, workspace, approve)
    except NoBackendError as e:
        err.print(str(e), style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    try:
        run = agent.ask(question, thread_id=session, on_event=None if as_json else event_printer(err))
    finally:
        agent.close()
    if as_json:
        print(json.dumps(run.as_json(), indent=1))
    else:
        render_answer(_console(), run)
    return 0 if run.stop_reason != "error" else 1


HELP = """Commands: /help  /new (new session)  /session NAME (switch/resume)  /runs  /show RUN  /export RUN
/tools  /approve on|off  /quit.  Anything else is a question for the agent."""


def run_chat(*, llm: str | None, workspace: str, session: str | None, approve: bool = True) -> int:
    from rich.prompt import Prompt

    from triscale.agents.llm import NoBackendError
    from triscale.agents.provenance import export_workflow, list_runs, show_run

    console = _console()
    try:
        agent = _agent(llm, workspace, approve)
    except NoBackendError as e:
        console.print(str(e), style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    approver = confirm_expensive
    thread = session or "default"
    console.print(
        f"[bold]TriScale chat[/bold] · backend {agent.llm_info.backend} {agent.llm_info.model} · "
        f"workspace {agent.workspace.root} · session {thread!r} "
        f"({len(agent.history(thread))} stored messages)\n{HELP}"
    )
    try:
        while True:
            try:
                line = Prompt.ask("[bold blue]you[/bold blue]").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if not line:
                continue
            if line.startswith("/"):
                cmd, _, arg = line[1:].partition(" ")
                arg = arg.strip()
                if cmd in ("quit", "exit", "q"):
                    break
                if cmd == "help":
                    console.print(HELP)
                elif cmd == "new":
                    thread = f"s-{uuid.uuid4().hex[:6]}"
                    console.print(f"new session {thread!r}")
                elif cmd == "session":
                    thread = arg or thread
                    console.print(f"session {thread!r} ({len(agent.history(thread))} stored messages)")
                elif cmd == "runs":
                    for r in list_runs(agent.workspace.root)[-20:]:
                        console.print(f"{r['run_id']}  {r['question'][:80]}")
                elif cmd == "show" and arg:
                    show_run(arg, agent.workspace.root)
                elif cmd == "export" and arg:
                    try:
                        console.print(f"wrote {export_workflow(arg, agent.workspace.root)}")
                    except (FileNotFoundError, ValueError) as e:
                        console.print(f"[red]{e}[/red]")
                elif cmd == "tools":
                    console.print(", ".join(t.name for t in agent.tools))
                elif cmd == "approve":
                    agent.guard.approve = None if arg == "off" else approver
                    console.print(f"approval {'off' if agent.guard.approve is None else 'on'}")
                else:
                    console.print(HELP)
                continue
            run = agent.ask(line, thread_id=thread, on_event=event_printer(console))
            render_answer(console, run)
    finally:
        agent.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_chat(llm=None, workspace="workspace", session=None))
