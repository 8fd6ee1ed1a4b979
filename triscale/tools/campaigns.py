"""Campaigns: a ``for_each`` workflow run once per item, in this process or on a Dask cluster.

Each item runs the workflow's steps through :func:`triscale.tools.calls.call_tool` in whatever process executes
it (this one, or a Dask worker) with its own :class:`~triscale.tools.workspace.Workspace` handle on the shared
workspace directory: the same registry, argument checks and wall-time limits as everywhere else, and ids from the
workspace's SQLite counters, which are safe across processes.

Nothing lost, nothing twice. Under ``<workspace>/campaigns/<name>/``:

* ``items/<i>.json``: an item's record (its steps' results or errors), written atomically by the process that
  ran it as soon as it finishes, so a client that dies loses nothing already computed;
* ``items/<i>.partial.json``: the steps of an unfinished item done so far; a retry resumes after the last one;
* ``items/<i>.attempts``: one line per start (pid, host, time): how often the item was tried;
* ``results.csv`` (and ``results.parquet`` when pyarrow is installed) and ``summary.json`` at the end.

A re-run of the same campaign skips items whose record matches the item and the steps (a key hashes both) and
whose status is ``ok`` or ``error`` (a tool refused or failed: running it again would give the same answer);
items recorded ``failed`` (their worker died ``retries + 1`` times, or the item crashed) are run again.

Clusters (``cluster=``): ``local:N`` (a Dask ``LocalCluster`` of N single-threaded worker processes),
``tcp://HOST:PORT`` (an existing scheduler) or ``jobqueue:CONFIG.yaml`` (SLURM/PBS through dask-jobqueue, see
``configs/cluster/``). Dask is imported only here, only when a cluster is asked for.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from triscale.common import atomic_write_json, atomic_write_text
from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.workflows import read_text_file
from triscale.tools.workspace import Workspace

__all__ = [
    "CampaignItem",
    "CampaignSummary",
    "ClusterConfig",
    "cluster_client",
    "load_items",
    "run_campaign",
    "run_item",
    "print_campaign",
]

MAX_ITEMS_BYTES = 64 << 20  # an items file: up to 64 MiB of text
MAX_ITEMS = 1_000_000
DONE = ("ok", "error")  # statuses a re-run skips


class CampaignItem(BaseModel):
    index: int
    value: Any
    label: str | None = None


class CampaignSummary(BaseModel):
    name: str
    workspace: str
    directory: str = Field(description="campaigns/<name>, relative to the workspace")
    cluster: str
    dashboard: str | None = None
    total: int
    already_done: int = Field(description="Items skipped because an earlier run finished them.")
    succeeded: int
    failed: int = Field(description="Items whose steps failed (status error) or whose task failed (status failed).")
    retried: int = Field(description="Items of this run started more than once (a worker died, or a crash).")
    wall_time_s: float
    results_csv: str
    results_parquet: str | None = None
    failures: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failed == 0


# ---------------------------------------------------------------------------------------------------- items
def _read_items_file(path: Path) -> list[CampaignItem]:
    text = read_text_file(path, "Items file", MAX_ITEMS_BYTES, "One item per line.")
    items: list[CampaignItem] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        value, _, label = line.partition(" ") if " " in line else line.partition("\t")
        items.append(CampaignItem(index=len(items), value=value.strip(), label=label.strip() or None))
        if len(items) > MAX_ITEMS:
            raise ToolInputError(f"Items file {str(path)!r} has more than {MAX_ITEMS} items.")
    if not items:
        raise ToolInputError(f"Items file {str(path)!r} has no items (blank lines and '#' comments are skipped).")
    return items


def load_items(wf: Any, items: str | Path | list[Any] | None = None) -> list[CampaignItem]:
    """The campaign's items: ``items`` (a caller's file or list: any path) or the workflow's ``for_each.items``
    (a list, or a file that must stay inside the current directory, also through symlinks)."""
    fe = wf.for_each
    if fe is None:
        raise ToolInputError(
            f"Workflow {wf.name!r} has no for_each: there are no items to run.",
            hint="Add `for_each: {items: FILE-or-list, as: NAME}` and use ${NAME} in the steps' args.",
        )
    source = items if items is not None else fe.items
    if source is None:
        raise ToolInputError(
            f"Workflow {wf.name!r} names no items.", hint="Give for_each.items in the file, or pass --items FILE."
        )
    if isinstance(source, list):
        if not source:
            raise ToolInputError("The items list is empty.")
        out = [CampaignItem(index=i, value=v) for i, v in enumerate(source)]
    else:
        path = Path(source)
        if items is None:  # from the file: confined to the current directory
            base = Path.cwd().resolve()
            path = (base / path).resolve()
            if path != base and base not in path.parents:
                raise ToolInputError(
                    f"Invalid workflow: items file {fe.items!r} leads outside {str(base)!r} (through a symlink).",
                    hint="Use a file inside the directory you run from, or pass --items.",
                )
        out = _read_items_file(path)
    if fe.limit is not None:
        out = out[: fe.limit]
    return out


def _fingerprint(wf: Any) -> str:
    steps = [s.model_dump(mode="json") for s in wf.steps]
    return hashlib.sha256(json.dumps([wf.for_each.as_, steps], sort_keys=True, default=str).encode()).hexdigest()


def _item_key(fingerprint: str, item: CampaignItem) -> str:
    return hashlib.sha256((fingerprint + json.dumps(item.value, sort_keys=True, default=str)).encode()).hexdigest()[:16]


def campaign_dir(ws: Workspace, name: str) -> Path:
    return ws.root / "campaigns" / (re.sub(r"[^\w.-]+", "_", name)[:60] or "campaign")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------- one item
def run_item(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one item's steps (in whatever process calls this: a Dask worker or the client) and persist its record.

    ``spec`` holds plain data only (it travels to workers): the workspace root and limits, the steps, the item,
    its key and the campaign directory. Tool errors are recorded in the item (status ``error``); anything else
    raises, so that Dask can retry the task."""
    from triscale.tools.calls import call_tool
    from triscale.tools.workflows import StepOutcome, WorkflowStep, resolve_references

    items_dir = Path(spec["dir"]) / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    i = spec["index"]
    with open(items_dir / f"{i}.attempts", "a") as f:
        f.write(f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n")
    attempts = len((items_dir / f"{i}.attempts").read_text().splitlines())
    ws = Workspace(spec["root"], isolate=spec["isolate"], timeout_s=spec["timeout_s"])
    partial_path = items_dir / f"{i}.partial.json"
    partial = _read_json(partial_path)
    outcomes: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    if partial and partial.get("key") == spec["key"]:
        outcomes = partial["steps"]
        results = {o["id"]: o["result"] for o in outcomes if o["status"] == "ok"}
    results[spec["as"]] = spec["value"]
    t0 = time.monotonic()
    status = "ok" if all(o["status"] == "ok" for o in outcomes) else "error"
    steps = [WorkflowStep.model_validate(s) for s in spec["steps"]]
    stopped = any(o["status"] != "ok" and not s.continue_on_error for o, s in zip(outcomes, steps, strict=False))
    for step in steps[len(outcomes) :] if not stopped else []:
        ts = time.monotonic()
        try:
            args = resolve_references(step.args, results)
            res = call_tool(step.tool, args, ws, timeout_s=step.timeout_s)
            results[step.id] = res.model_dump(mode="json")
            out = StepOutcome(
                id=step.id, tool=step.tool, status="ok", wall_time_s=round(time.monotonic() - ts, 3),
                result=results[step.id],
            )  # fmt: skip
        except ToolError as e:
            out = StepOutcome(
                id=step.id, tool=step.tool, status="error", wall_time_s=round(time.monotonic() - ts, 3), error=str(e)
            )
        outcomes.append(out.model_dump(mode="json"))
        atomic_write_json(partial_path, {"key": spec["key"], "steps": outcomes}, indent=None)
        if out.status != "ok":
            status = "error"
            if not step.continue_on_error:
                break
    record = {
        "index": i,
        "item": spec["value"],
        "label": spec.get("label"),
        "key": spec["key"],
        "status": status,
        "attempts": attempts,
        "error": next((f"{o['id']}: {o['error']}" for o in outcomes if o["status"] != "ok"), None),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "wall_time_s": round(time.monotonic() - t0, 3),
        "steps": outcomes,
    }
    atomic_write_json(items_dir / f"{i}.json", record, indent=None)
    partial_path.unlink(missing_ok=True)
    return record


def _done_record(items_dir: Path, index: int, key: str) -> dict[str, Any] | None:
    """The item's record if it finished (``ok`` or a tool ``error``) under this recipe ``key``; else None."""
    rec = _read_json(items_dir / f"{index}.json")
    return rec if rec and rec.get("key") == key and rec.get("status") in DONE else None


def _failed_record(spec: dict[str, Any], error: str) -> dict[str, Any]:
    """The record of an item whose task failed (worker died too often, or a crash), written by the client.
    A finished record the item's own run already wrote for this key (``ok`` or a tool error) is kept: a result is
    never overwritten."""
    items_dir = Path(spec["dir"]) / "items"
    written = _done_record(items_dir, spec["index"], spec["key"])
    if written is not None:
        return written
    attempts_file = items_dir / f"{spec['index']}.attempts"
    attempts = len(attempts_file.read_text().splitlines()) if attempts_file.exists() else 0
    record = {
        "index": spec["index"],
        "item": spec["value"],
        "label": spec.get("label"),
        "key": spec["key"],
        "status": "failed",
        "attempts": attempts,
        "error": error,
        "steps": (_read_json(items_dir / f"{spec['index']}.partial.json") or {}).get("steps", []),
    }
    atomic_write_json(items_dir / f"{spec['index']}.json", record, indent=None)
    return record


# ---------------------------------------------------------------------------------------------------- clusters
class ClusterConfig(BaseModel):
    """``--cluster jobqueue:CONFIG.yaml``: a batch-queue cluster through dask-jobqueue (see configs/cluster/)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern="^(slurm|pbs)$")
    jobs: int = Field(1, ge=1, le=10_000, description="Batch jobs to start (each runs `processes` workers).")
    cores: int = Field(1, ge=1, description="Cores per job.")
    processes: int = Field(1, ge=1, description="Dask worker processes per job (one item at a time each).")
    memory: str = Field("4GB", description="Memory per job.")
    walltime: str | None = "01:00:00"
    queue: str | None = None
    account: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    job_script_prologue: list[str] = Field(default_factory=list, description="Shell lines before the worker starts.")
    job_extra_directives: list[str] = Field(default_factory=list)

    def cluster_kwargs(self) -> dict[str, Any]:
        kw = self.model_dump(exclude={"kind", "jobs"}, exclude_none=True)
        # workers must be able to start the tools' own worker processes, and use one thread each
        kw["job_script_prologue"] = [
            *self.job_script_prologue,
            "export DASK_DISTRIBUTED__WORKER__DAEMON=False",
            "export OMP_NUM_THREADS=1",
        ]
        return kw


def load_cluster_config(path: str | Path) -> ClusterConfig:
    import yaml

    p = Path(path)
    try:
        raw = p.read_bytes()[: 1 << 16]
        data = yaml.safe_load(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ToolInputError(f"Cluster config {str(p)!r} cannot be read as YAML ({type(e).__name__}).") from None
    try:
        return ClusterConfig.model_validate(data or {})
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ToolInputError(
            f"Invalid cluster config {str(p)!r}: {loc}: {first['msg']}.",
            hint=f"Accepted keys: {', '.join(ClusterConfig.model_fields)}.",
        ) from None


def make_jobqueue_cluster(cfg: ClusterConfig):
    try:
        import dask_jobqueue
    except ImportError:
        raise ToolInputError(
            "--cluster jobqueue:... needs dask-jobqueue.", hint="pip install 'triscale[cluster]'"
        ) from None
    cls = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[cfg.kind]
    return cls(**cfg.cluster_kwargs())


def _parse_cluster(spec: str) -> tuple[str, Any]:
    if spec.startswith("local:"):
        n = spec.split(":", 1)[1]
        if not n.isdigit() or not 1 <= int(n) <= 1024:
            raise ToolInputError(f"--cluster {spec!r}: N must be a whole number of workers, 1 to 1024.")
        return "local", int(n)
    if spec.startswith("tcp://") or spec.startswith("tls://"):
        return "address", spec
    if spec.startswith("jobqueue:"):
        return "jobqueue", spec.split(":", 1)[1]
    raise ToolInputError(
        f"Unknown cluster {spec!r}.",
        hint="Use local:N (N worker processes here), tcp://HOST:PORT (an existing Dask scheduler) "
        "or jobqueue:CONFIG.yaml (SLURM/PBS through dask-jobqueue).",
    )


def _dask_config(retries: int) -> dict[str, Any]:
    # Tools run heavy calculations in their own child processes, which daemonic workers may not start.
    # allowed-failures: a task whose worker dies is rescheduled this many times, then fails (KilledWorker).
    return {"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": retries}


def _connect(spec: str, retries: int):
    """A Dask client for ``spec`` and the cluster object to close after (None for an existing scheduler)."""
    import importlib.util
    import logging

    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ToolInputError("--cluster needs Dask.", hint="pip install 'triscale[cluster]'") from None
    kind, arg = _parse_cluster(spec)
    cluster = None
    if kind == "local":
        dashboard = ":0" if importlib.util.find_spec("bokeh") else None
        cluster = LocalCluster(
            n_workers=arg, threads_per_worker=1, processes=True, dashboard_address=dashboard,
            silence_logs=logging.ERROR,
        )  # fmt: skip
        client = Client(cluster)
    elif kind == "address":
        try:
            client = Client(arg, timeout="20s")
        except OSError as e:
            raise ToolInputError(
                f"Cannot reach the Dask scheduler at {arg!r} ({e}).",
                hint="Start one with `dask scheduler` and workers with "
                "`DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker ADDRESS --nthreads 1`.",
            ) from None
    else:
        cfg = load_cluster_config(arg)
        cluster = make_jobqueue_cluster(cfg)
        cluster.scale(jobs=cfg.jobs)
        client = Client(cluster)
    if kind == "address":
        import multiprocessing

        daemonic = client.run(lambda: multiprocessing.current_process().daemon)
        if any(daemonic.values()):
            client.close()
            raise ToolInputError(
                f"The workers of {arg!r} are daemonic processes: tools cannot start their calculation processes.",
                hint="Start the workers with DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment.",
            )
    return client, cluster


@contextlib.contextmanager
def cluster_client(spec: str, retries: int = 2):
    """A Dask client on ``spec`` (``local:N``, ``tcp://HOST:PORT`` or ``jobqueue:CONFIG.yaml``) for the block,
    with non-daemonic workers and ``retries`` as the bound on a task's worker deaths; closed (and a cluster it
    started shut down) on the way out. Used by campaigns and by ``triscale datagen --cluster``."""
    import dask

    _parse_cluster(spec)  # a bad spec is refused before Dask is imported
    try:
        import distributed  # noqa: F401  (loads its config: dask.config.set below restores it on exit)
    except ImportError:
        raise ToolInputError("--cluster needs Dask.", hint="pip install 'triscale[cluster]'") from None
    with dask.config.set(_dask_config(retries)):
        client, cl = _connect(spec, retries)
        try:
            yield client
        finally:
            client.close()
            if cl is not None:
                cl.close()


def _dashboard(client) -> str | None:
    """The dashboard's address when the scheduler runs one (it needs bokeh)."""
    try:
        if "dashboard" in client.scheduler_info().get("services", {}):
            return client.dashboard_link
    except Exception:  # informational only
        return None
    return None


# ---------------------------------------------------------------------------------------------------- the run
def run_campaign(
    source: Any,
    workspace: Workspace | str | None = None,
    *,
    cluster: str | None = None,
    items: str | Path | list[Any] | None = None,
    on_item: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[dict[str, Any]], None] | None = None,
) -> CampaignSummary:
    """Run a ``for_each`` workflow for every item not finished yet; return counts and write the results table.

    ``cluster``: None (sequentially, here), ``local:N``, ``tcp://HOST:PORT`` or ``jobqueue:CONFIG.yaml``.
    ``on_start(info)`` gets ``{"total", "pending", "already_done", "dashboard"}``; ``on_item(record)`` each record."""
    from triscale.tools.workflows import load_workflow, workflow_workspace

    wf = load_workflow(source)
    ws = workflow_workspace(wf, workspace)
    todo = load_items(wf, items)
    if cluster is not None:
        _parse_cluster(cluster)  # a bad spec is refused before anything runs
    fe = wf.for_each
    cdir = campaign_dir(ws, wf.name)
    (cdir / "items").mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(wf)
    steps = [s.model_dump(mode="json") for s in wf.steps]
    specs, done = [], []
    for it in todo:
        key = _item_key(fp, it)
        rec = _done_record(cdir / "items", it.index, key)
        if rec is not None:
            done.append(rec)
            continue
        specs.append({
            "root": str(ws.root), "isolate": ws.isolate, "timeout_s": ws.timeout_s, "dir": str(cdir),
            "steps": steps, "as": fe.as_, "index": it.index, "value": it.value, "label": it.label, "key": key,
        })  # fmt: skip
    t0 = time.monotonic()
    records: list[dict[str, Any]] = []
    info = {"total": len(todo), "pending": len(specs), "already_done": len(done), "dashboard": None}

    def finished(rec: dict[str, Any]) -> None:
        records.append(rec)
        if on_item is not None:
            on_item(rec)

    if cluster is None:
        if on_start is not None:
            on_start(info)
        for spec in specs:
            for attempt in range(fe.retries + 1):
                try:
                    rec = run_item(spec)
                    break
                except Exception as e:  # a crash, not a tool error: retried like a Dask task
                    if attempt == fe.retries:
                        rec = _failed_record(spec, f"{type(e).__name__}: {e}")
            finished(rec)
    elif specs:
        with cluster_client(cluster, fe.retries) as client:
            from distributed import as_completed

            info["dashboard"] = _dashboard(client)
            if on_start is not None:
                on_start(info)
            futures = {
                client.submit(
                    run_item, spec, key=f"triscale-{cdir.name}-{spec['index']}-{spec['key']}", retries=fe.retries
                ): spec
                for spec in specs
            }
            for fut in as_completed(list(futures)):
                spec = futures[fut]
                # result(), not status: a finished task whose worker is then killed before the result is fetched
                # reads "lost" (with no exception) while the scheduler recomputes it; result() waits for that.
                try:
                    rec = fut.result()
                except Exception as exc:  # the task's own error, or KilledWorker once retries are spent
                    rec = _failed_record(spec, "".join(traceback.format_exception_only(type(exc), exc)).strip())
                fut.release()
                finished(rec)
    elif on_start is not None:
        on_start(info)
    wall = time.monotonic() - t0
    csv_path, parquet_path = _write_table(cdir, todo)
    failures = [
        {"index": r["index"], "item": r["item"], "status": r["status"], "error": r["error"]}
        for r in sorted(records, key=lambda r: r["index"])
        if r["status"] != "ok"
    ]
    summary = CampaignSummary(
        name=wf.name,
        workspace=str(ws.root),
        directory=ws.relpath(cdir),
        cluster=cluster or "in-process",
        dashboard=info["dashboard"],
        total=len(todo),
        already_done=len(done),
        succeeded=sum(r["status"] == "ok" for r in records + done),
        failed=sum(r["status"] != "ok" for r in records + done),
        retried=sum(r.get("attempts", 1) > 1 for r in records),
        wall_time_s=round(wall, 3),
        results_csv=ws.relpath(csv_path),
        results_parquet=ws.relpath(parquet_path) if parquet_path else None,
        failures=failures[:100],
    )
    atomic_write_json(cdir / "summary.json", summary.model_dump(mode="json"))
    return summary


def _flat(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("tool", "call_id", "notes"):
                _flat(f"{prefix}.{k}", v, row)
    elif value is None or isinstance(value, str | int | float | bool):
        row[prefix] = value


def _write_table(cdir: Path, todo: list[CampaignItem]) -> tuple[Path, Path | None]:
    """``results.csv`` (and ``results.parquet`` with pyarrow): one row per item, scalar step results as
    ``step.field`` columns (nested mappings as ``step.field.sub``; lists are left in the item records)."""
    rows: list[dict[str, Any]] = []
    for it in todo:
        rec = _read_json(cdir / "items" / f"{it.index}.json")
        row: dict[str, Any] = {"index": it.index, "item": json.dumps(it.value) if not isinstance(it.value, str)
                               else it.value, "label": it.label}  # fmt: skip
        if rec is None:
            row.update(status="pending")
        else:
            row.update(status=rec["status"], attempts=rec.get("attempts"), error=rec.get("error"))
            for o in rec.get("steps", []):
                if o.get("result"):
                    _flat(o["id"], o["result"], row)
        rows.append(row)
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    fixed = ("index", "item", "label", "status")
    columns = [c for c in columns if c in fixed or any(r.get(c) not in (None, "") for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = atomic_write_text(cdir / "results.csv", buf.getvalue())
    parquet_path = None
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return csv_path, None
    tmp = cdir / f".results.{os.getpid()}.parquet"
    try:
        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
        pq.write_table(table, tmp)
        os.replace(tmp, cdir / "results.parquet")
        parquet_path = cdir / "results.parquet"
    except (pa.ArrowException, TypeError, ValueError):  # mixed column types: the CSV stands alone
        tmp.unlink(missing_ok=True)
    return csv_path, parquet_path


# ---------------------------------------------------------------------------------------------------- CLI
def print_campaign(
    wf: Any, ws: Workspace, *, cluster: str | None, items: str | None, as_json: bool, console: Any
) -> int:
    """``triscale run`` for a campaign: progress bar, dashboard link, summary; exit 0 when every item succeeded."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=as_json,
    )  # fmt: skip
    counts = {"ok": 0, "bad": 0, "retried": 0}
    task = None

    def desc() -> str:
        return (
            f"{wf.name}: [green]{counts['ok']} ok[/green] [red]{counts['bad']} failed[/red] {counts['retried']} retried"
        )

    def start(info: dict[str, Any]) -> None:
        nonlocal task
        if not as_json:
            where = cluster or "in-process"
            console.print(
                f"{info['total']} items, {info['already_done']} already done, {info['pending']} to run ({where})"
            )
            if info["dashboard"]:
                console.print(f"Dask dashboard: {info['dashboard']}")
        task = progress.add_task(desc(), total=info["pending"])

    def item(rec: dict[str, Any]) -> None:
        counts["ok" if rec["status"] == "ok" else "bad"] += 1
        counts["retried"] += rec.get("attempts", 1) > 1
        progress.update(task, advance=1, description=desc())

    try:
        with progress:
            summary = run_campaign(wf, ws, cluster=cluster, items=items, on_item=item, on_start=start)
    except ToolError as e:
        console.print(f"[red]{escape(str(e))}[/red]", highlight=False)
        return 2
    if as_json:
        print(json.dumps(summary.model_dump(mode="json"), indent=1))
        return 0 if summary.ok else 1
    console.print(
        f"{summary.name}: {summary.succeeded} succeeded, {summary.failed} failed, {summary.retried} retried "
        f"({summary.already_done} done before), {summary.wall_time_s:.1f} s"
    )
    for f in summary.failures[:10]:
        console.print(f"[red]item {f['index']} ({escape(str(f['item']))}): {escape(str(f['error']))}[/red]")
    console.print(
        f"results: {summary.results_csv}" + (f", {summary.results_parquet}" if summary.results_parquet else "")
    )
    return 0 if summary.ok else 1


def print_run(
    path: str | Path,
    workspace: str | None = None,
    *,
    as_json: bool = False,
    cluster: str | None = None,
    items: str | None = None,
) -> int:
    """CLI helper: run a workflow, print a table (or JSON) and return the exit code (0 ok, 1 failed).

    A ``for_each`` workflow (or any workflow given ``cluster``/``items``) runs as a campaign."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from triscale.tools.workflows import StepOutcome, load_workflow, run_workflow, workflow_workspace

    console = Console(stderr=as_json)
    try:
        wf = load_workflow(path)
        ws = workflow_workspace(wf, workspace)
    except ToolError as e:
        console.print(f"[red]{escape(str(e))}[/red]", highlight=False)
        return 2
    if wf.for_each is not None or cluster is not None or items is not None:
        return print_campaign(wf, ws, cluster=cluster, items=items, as_json=as_json, console=console)

    def show(step: StepOutcome) -> None:
        if not as_json:
            mark = "[green]ok[/green]" if step.status == "ok" else "[red]error[/red]"
            console.print(f"{mark} {step.id} ({step.tool}, {step.wall_time_s:.2f} s)")

    run = run_workflow(wf, ws, on_step=show)
    if as_json:
        print(json.dumps(run.model_dump(mode="json"), indent=1))
        return 0 if run.ok else 1
    table = Table(title=f"{run.name}  ({run.workspace})")
    table.add_column("step")
    table.add_column("tool")
    table.add_column("result")
    for s in run.steps:
        if s.status == "ok":
            keep = {
                k: v
                for k, v in (s.result or {}).items()
                if v not in (None, [], "")
                and k not in ("tool", "call_id", "notes")
                and not (isinstance(v, list) and len(v) > 6)
            }
            text = ", ".join(f"{k}={v}" for k, v in list(keep.items())[:8])
        else:
            text = f"[red]{s.error}[/red]"
        table.add_row(s.id, s.tool, text)
    console.print(table)
    console.print(f"results: {run.results_file}")
    return 0 if run.ok else 1
