"""The ``triscale`` command line.

Each command imports its unit lazily so that ``triscale --help`` stays fast; options are plain typer
parameters, recipes live in YAML under ``configs/``.
"""

from __future__ import annotations

import os

# Spin-waiting OpenMP threads make tblite/PySCF/torch many times slower when both cores are busy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402
from typing import Annotated, Any  # noqa: E402

import typer  # noqa: E402

app = typer.Typer(
    name="triscale",
    help="TriScale: a foundation model, adapters, simulation tools and a science agent for atoms and fields.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="Structure files ASE can read (xyz, extxyz, cif, POSCAR, ...).")],
    model: Annotated[str, typer.Option(help="Shipped checkpoint name or a saved model directory.")] = "triscale-base",
    domain: Annotated[str | None, typer.Option(help="molecule | material; default: by periodicity.")] = None,
    adapter: Annotated[list[str] | None, typer.Option(help="Adapter directory; repeat for a committee.")] = None,
    dtype: Annotated[str, typer.Option(help="float32 or float64.")] = "float32",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    prop: Annotated[
        list[str] | None,
        typer.Option(
            "--property",
            help="Property-head committee to add for molecules: a shipped name (gfn2-gap: HOMO-LUMO gap) or a "
            "directory from 'triscale finetune --property-key'; repeatable.",
        ),
    ] = None,
) -> None:
    """Energy, forces and stress of every frame in FILES with the foundation model (and property heads)."""
    from triscale.finetune.predict import run_predict

    properties = []
    if prop:
        from triscale.finetune.property import PropertyCommittee, load_property_model

        for name in prop:
            try:
                loaded = load_property_model(name)
            except (FileNotFoundError, ValueError) as err:
                raise typer.BadParameter(str(err), param_hint="--property") from None
            properties.append(loaded if isinstance(loaded, PropertyCommittee) else PropertyCommittee([loaded]))
    run_predict(
        files, model=model, domain=domain, adapters=adapter, dtype=dtype, as_json=json_out, properties=properties
    )


@app.command()
def pretrain(
    config: Annotated[Path, typer.Option("--config", "-c", help="Pretraining recipe (configs/pretrain/*.yaml).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Override the recipe's out_dir.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override the recipe's max_steps.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop and export after this wall time.")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore an existing checkpoint in out_dir.")] = False,
    export_progress: Annotated[
        Path | None,
        typer.Option(
            "--export-progress",
            help="Keep a small committable copy of the run here (EMA weights + progress.json, rewritten at every "
            "checkpoint); a run without a checkpoint in out_dir continues from it. Overrides the recipe's "
            "progress_dir.",
        ),
    ] = None,
) -> None:
    """Pretrain the foundation model from a YAML recipe; resumes from its checkpoint unless --fresh."""
    from triscale.foundation.pretrain import load_recipe
    from triscale.foundation.pretrain import pretrain as run

    recipe = load_recipe(config)
    updates = {
        "out_dir": str(out_dir) if out_dir else None,
        "max_steps": max_steps,
        "max_minutes": max_minutes,
        "progress_dir": str(export_progress) if export_progress else None,
    }
    recipe = recipe.model_copy(update={k: v for k, v in updates.items() if v is not None})
    final = run(recipe, resume=not fresh)
    typer.echo(f"exported {final}")


def _one_thread_per_worker() -> None:
    """One passive OpenMP/MKL thread per process unless the user set otherwise; local Dask workers inherit it."""
    for var, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
        os.environ.setdefault(var, value)


@app.command()
def datagen(
    config: Annotated[Path, typer.Option("--config", "-c", help="Data recipe (configs/datagen/*.yaml).")],
    out: Annotated[Path | None, typer.Option("--out", help="Output directory (default: the recipe's).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes, one thread each.")] = 1,
    limit: Annotated[int | None, typer.Option(help="Do at most N of the shards still to do.")] = None,
    cluster: Annotated[
        str | None, typer.Option(help="Run the shards as Dask tasks: local:N, tcp://HOST:PORT or jobqueue:CFG.yaml.")
    ] = None,
) -> None:
    """Generate labelled pretraining data (GFN2-xTB molecules, CHGNet materials); resumes where it stopped."""
    from triscale.foundation.datagen import run_datagen_cli

    if cluster is None:
        run_datagen_cli(config, out=out, workers=workers, limit=limit)
        return
    from triscale.tools.campaigns import cluster_client
    from triscale.tools.errors import ToolError

    if workers > 1:
        typer.echo("error: give --workers (a process pool here) or --cluster, not both", err=True)
        raise typer.Exit(2)
    _one_thread_per_worker()
    try:
        with cluster_client(cluster) as client:
            run_datagen_cli(config, out=out, workers=1, limit=limit, client=client)
    except ToolError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


@app.command()
def finetune(
    data: Annotated[str | None, typer.Option(help="extxyz / ASE db / HF dataset (or CSV for --property).")] = None,
    method: Annotated[str | None, typer.Option(help="lora | heads | full (default lora).")] = None,
    out: Annotated[str | None, typer.Option(help="Output directory (adapter, metrics, plots).")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Recipe (configs/finetune/*.yaml).")] = None,
    base: Annotated[str | None, typer.Option(help="Base checkpoint name or directory.")] = None,
    domain: Annotated[str | None, typer.Option(help="molecule | material; default: by periodicity.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    committee: Annotated[int | None, typer.Option(help="Train K adapters for uncertainty.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps.")] = None,
    replay: Annotated[bool | None, typer.Option("--replay/--no-replay", help="Replay base predictions.")] = None,
    property_key: Annotated[str | None, typer.Option("--property", help="Train a scalar head on this key.")] = None,
    energy_unit: Annotated[str | None, typer.Option(help="eV (default), kcal/mol, Hartree, ...")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore a checkpoint in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Fine-tune the foundation model on your data: LoRA/heads/full adapters, E0 refit, committees."""
    from triscale.finetune.cli import run_finetune

    run_finetune(
        config=config,
        data=data,
        method=method,
        out=out,
        base=base,
        domain=domain,
        epochs=epochs,
        committee=committee,
        rank=rank,
        lr=lr,
        max_steps=max_steps,
        replay=replay,
        property_key=property_key,
        energy_unit=energy_unit,
        fresh=fresh,
        quiet=quiet,
    )


@app.command("run")
def run_workflow_cmd(
    workflow: Annotated[Path, typer.Argument(help="Workflow YAML (see configs/workflows/).")],
    workspace: Annotated[str | None, typer.Option(help="Workspace directory.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run as JSON.")] = False,
    cluster: Annotated[
        str | None,
        typer.Option(
            help="Run a for_each workflow's items on Dask: local:N (N worker processes here), tcp://HOST:PORT "
            "(an existing scheduler) or jobqueue:CONFIG.yaml (SLURM/PBS, see configs/cluster/). "
            "Without it the items run one after another in this process."
        ),
    ] = None,
    items: Annotated[
        str | None, typer.Option(help="Items file for a for_each workflow (replaces its for_each.items).")
    ] = None,
) -> None:
    """Run a YAML workflow of tool calls; later steps refer to earlier results as ${step.field}.

    A workflow with `for_each` is a campaign: its steps run once per item, results persist per item under
    <workspace>/campaigns/<name>/, and running the same command again resumes (finished items are skipped)."""
    from triscale.tools.campaigns import print_run

    raise typer.Exit(print_run(workflow, workspace, as_json=json_out, cluster=cluster, items=items))


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Campaign recipe YAML (see configs/plan/gap_screen.yaml).")],
    out: Annotated[str | None, typer.Option(help="Override the recipe's out directory.")] = None,
    budget: Annotated[int | None, typer.Option(help="Override the label budget (a larger one extends a run).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    cluster: Annotated[
        str | None,
        typer.Option(help="Label each round's batch as Dask tasks: local:N, tcp://HOST:PORT or jobqueue:CFG.yaml."),
    ] = None,
) -> None:
    """Active learning: score a candidate pool, label the best batch with a reference method, fine-tune, repeat
    until the label budget is spent; resumes after a kill. Writes labels, rounds, report.md and progress.png."""
    import json

    import yaml
    from pydantic import ValidationError

    from triscale.tools.active_learning import Campaign, CampaignRecipe

    try:
        raw = yaml.safe_load(config.read_text())
        recipe = CampaignRecipe.model_validate(raw if isinstance(raw, dict) else {})
        updates = {"out": out, "budget": budget}
        recipe = CampaignRecipe.model_validate(
            {**recipe.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except OSError as e:
        raise typer.BadParameter(f"cannot read {config}: {e.strerror}", param_hint="CONFIG") from None
    except (yaml.YAMLError, ValidationError) as e:
        raise typer.BadParameter(f"invalid campaign recipe {config}: {e}", param_hint="CONFIG") from None
    from triscale.tools.errors import ToolError

    log = lambda msg: typer.echo(msg, err=json_out)  # noqa: E731
    try:
        if cluster is None:
            report = Campaign(recipe, log=log).run()
        else:
            from triscale.tools.campaigns import cluster_client

            _one_thread_per_worker()
            with cluster_client(cluster) as client:
                report = Campaign(recipe, log=log, client=client).run()
    except (ValueError, FileNotFoundError, ToolError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps(report, indent=1))
        return
    unit = report["unit"]
    typer.echo(f"{report['labels_spent']}/{report['budget']} labels; best {report['objective']}:")
    for b in report["best"][:5]:
        typer.echo(f"  {b['name']}: {b['value']:.4f} {unit}")
    if report["proposal"]:
        typer.echo("proposal (unlabelled, calibrated sigma):")
        for p in report["proposal"][:5]:
            typer.echo(f"  {p['name']}: {p['predicted']:.4f} ± {p['sigma']:.4f} {unit}")
    typer.echo(f"report: {Path(recipe.out) / 'report.md'}")


@app.command()
def mcp(
    workspace: Annotated[str, typer.Option(help="Workspace directory.")] = "workspace",
    http: Annotated[bool, typer.Option("--http", help="Streamable HTTP instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="HTTP host (localhost by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8765,
) -> None:
    """Serve the science tools over MCP (stdio by default; --http for streamable HTTP on localhost)."""
    from triscale.tools.mcp_server import serve

    serve(workspace, http=http, host=host, port=port)


@app.command()
def serve(
    workspace: Annotated[str, typer.Option(help="Workspace directory.")] = "workspace",
    host: Annotated[str, typer.Option(help="Bind address (localhost by default: tools write files).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8766,
    agent: Annotated[bool, typer.Option("--agent", help="Also answer POST /ask with the science agent.")] = False,
    llm: Annotated[str | None, typer.Option(help="Agent backend for /ask (as for `triscale ask`).")] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="TRISCALE_TOKEN", help="Require 'Authorization: Bearer TOKEN' (needed beyond loopback)."),
    ] = None,
    max_workers: Annotated[
        int | None, typer.Option(min=1, help="Concurrent calculations; more requests wait (default: CPU count).")
    ] = None,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="Extra Host name clients may use (repeatable; '*' for any).")
    ] = None,
    allowed_origin: Annotated[
        list[str] | None, typer.Option(help="Extra browser Origin allowed, e.g. http://localhost:3000 (repeatable).")
    ] = None,
    request_timeout: Annotated[
        float, typer.Option(min=1, help="Wall-time limit per request in seconds, the wait for a slot included.")
    ] = 3600.0,
) -> None:
    """Serve the tools (and optionally the agent) as plain HTTP/JSON: GET /tools, POST /tools/NAME, POST /ask.

    Checks Host (DNS rebinding), Origin, Content-Type and body size on every request, and a bearer token when
    one is given; refuses to bind beyond loopback without a token.
    """
    from triscale.tools.http_server import serve as run_server

    ask_handler = None
    if agent:
        from triscale.agents.graph import ScienceAgent

        science_agent = ScienceAgent(llm, workspace)

        def ask_handler(question: str, session: str | None, cancel: Any) -> dict:
            # a client that disconnects (or a request past --request-timeout) stops the run and its calculation
            return science_agent.ask(question, thread_id=session, cancel=cancel).as_json()

    _serve_until_stopped(
        "serve",
        run_server,
        workspace,
        host,
        token,
        auth_text="bearer token required",
        ask=ask_handler,
        port=port,
        max_workers=max_workers,
        allowed_hosts=allowed_host or None,
        allowed_origins=allowed_origin or None,
        request_timeout_s=request_timeout,
    )


def _serve_until_stopped(
    command: str,
    runner,
    workspace: str,
    host: str,
    token: str | None,
    *,
    auth_text: str,
    url_text: str = "{url}",
    **options,
) -> None:
    """Run a server (``triscale serve`` / ``triscale web``) until Ctrl-C: its start line, and a refusal to start
    (port taken, no token beyond loopback) as one line on stderr with exit code 2."""
    from triscale.tools.errors import ToolError
    from triscale.tools.http_server import is_loopback

    def ready(server) -> None:
        where = "" if is_loopback(host) else f", listening on {host}"
        auth = f", {auth_text}" if token else ""
        url = url_text.format(url=server.url)
        typer.echo(f"triscale {command}: {url} (workspace {workspace}{where}{auth}); Ctrl-C stops")

    try:
        runner(workspace, host=host, token=token or None, on_ready=ready, **options)
    except ToolError as e:
        typer.echo(f"triscale {command}: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def web(
    workspace: Annotated[
        str, typer.Option(help="Workspace root; each browser session works in its own sessions/<id>/ inside it.")
    ] = "workspace",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8767,
    host: Annotated[str, typer.Option(help="Bind address (localhost by default).")] = "127.0.0.1",
    llm: Annotated[str | None, typer.Option(help="local | gguf:PATH | openai:MODEL@URL | ollama:MODEL")] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="TRISCALE_TOKEN", help="Access token (needed beyond loopback); the page asks for it."),
    ] = None,
    max_workers: Annotated[
        int | None, typer.Option(min=1, help="Questions answered at once; more wait (default: CPU count).")
    ] = None,
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="Extra Host name clients may use (repeatable; '*' for any).")
    ] = None,
    request_timeout: Annotated[
        float, typer.Option(min=1, help="Wall-time limit per question in seconds; the question is then cancelled.")
    ] = 3600.0,
) -> None:
    """The browser workbench: chat with the agent, watch tool calls stream, view structures, plots and runs.

    Same checks as `triscale serve` (Host, Origin, token beyond loopback, body size, time limit).
    """
    from triscale.web.app import serve_web

    _serve_until_stopped(
        "web",
        serve_web,
        workspace,
        host,
        token,
        auth_text="token required",
        url_text="open {url}/",
        port=port,
        llm=llm,
        max_workers=max_workers,
        allowed_hosts=allowed_host or None,
        request_timeout_s=request_timeout,
    )


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in plain language.")],
    llm: Annotated[str | None, typer.Option(help="local | gguf:PATH | openai:MODEL@URL | ollama:MODEL")] = None,
    workspace: Annotated[str, typer.Option(help="Run directory (structures, provenance).")] = "workspace",
    json_out: Annotated[bool, typer.Option("--json", help="Print {answer, results} as JSON.")] = False,
    session: Annotated[str | None, typer.Option(help="Continue this chat session (thread id).")] = None,
    approve: Annotated[bool, typer.Option("--approve", help="Ask before DFT / long MD.")] = False,
) -> None:
    """Ask the science agent one question; every number in the answer comes from a tool call."""
    from triscale.agents.chat import run_ask

    code = run_ask(question, llm=llm, workspace=workspace, as_json=json_out, session=session, approve=approve)
    raise typer.Exit(code)


@app.command()
def chat(
    llm: Annotated[str | None, typer.Option(help="local | gguf:PATH | openai:MODEL@URL | ollama:MODEL")] = None,
    workspace: Annotated[str, typer.Option(help="Run directory (structures, provenance, sessions).")] = "workspace",
    session: Annotated[str | None, typer.Option(help="Session to resume (default 'default').")] = None,
    approve: Annotated[bool, typer.Option("--approve/--no-approve", help="Ask before DFT / long MD.")] = True,
) -> None:
    """Chat with the science agent (tool calls and results stream as they run; sessions resume from disk)."""
    from triscale.agents.chat import run_chat

    raise typer.Exit(run_chat(llm=llm, workspace=workspace, session=session, approve=approve))


runs_app = typer.Typer(help="Agent runs: provenance logs and replayable workflows.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="Run id (a unique prefix is enough).")],
    workspace: Annotated[str | None, typer.Option(help="Workspace directory.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the raw JSONL entries as JSON.")] = False,
) -> None:
    """Print a run's provenance: model turns, tool calls with arguments/results/timings, the final answer."""
    from triscale.agents.provenance import show_run

    raise typer.Exit(show_run(run_id, workspace, as_json=json_out))


@runs_app.command("list")
def runs_list(workspace: Annotated[str | None, typer.Option(help="Workspace directory.")] = None) -> None:
    """List the agent runs in a workspace."""
    from triscale.agents.provenance import list_runs

    for r in list_runs(workspace):
        typer.echo(f"{r['run_id']}  {r['question'][:100]}")


@runs_app.command("export")
def runs_export(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    workspace: Annotated[str | None, typer.Option(help="Workspace directory.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output YAML (default: in the run folder).")] = None,
) -> None:
    """Export a run's tool calls as a workflow YAML that `triscale run` replays without an LLM."""
    from triscale.agents.provenance import export_workflow

    typer.echo(str(export_workflow(run_id, workspace, out)))


if __name__ == "__main__":  # pragma: no cover
    app()
