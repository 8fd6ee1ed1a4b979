"""Jobs for long work: submit → id → status → result → cancel.

A job runs one registry tool on a background thread of the calling process; the tool's heavy part runs in a
worker process (so cancelling kills the worker). Job records are written to ``<workspace>/jobs/<id>.json`` at
every transition, so the status and result of finished jobs survive the process.

Job ids (``job<n>``) come from the workspace's SQLite counter and each record file is created exclusively, so
two processes submitting to one workspace never share an id. An id is checked against ``job<n>`` before any path
is built from it; every unknown or malformed id gets the same answer. A record names the process that runs the
job (pid and start time): a queued or running job whose process has ended reads as failed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import Field

from triscale.common import atomic_write_json
from triscale.tools.base import ToolContext, ToolInput, ToolResult, register
from triscale.tools.errors import ToolError, ToolInputError
from triscale.tools.worker import CancelToken, process_alive, process_start

__all__ = ["JobManager", "job_manager"]

JobState = Literal["queued", "running", "done", "failed", "cancelled"]

_JOB_ID_RE = re.compile(r"job[1-9]\d{0,11}")
_FINAL = ("done", "failed", "cancelled")
_OWNER_GONE = "The process running it ended before the job finished (killed or exited); submit it again."


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "start": process_start(os.getpid())}


def _owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the process that owns a job record still runs (a reused pid with another start time does not)."""
    return process_alive(owner.get("pid"), owner.get("start"))


def job_manager(workspace) -> JobManager:
    """The workspace's job manager (one per workspace, created on first use, shut down with the workspace)."""
    return workspace.service("jobs", JobManager)


class JobManager:
    """Runs tools as background jobs in one workspace (``max_concurrent`` at a time; the machine is small)."""

    def __init__(self, workspace, max_concurrent: int = 1):
        self.workspace = workspace
        self.dir = workspace.root / "jobs"
        self.dir.mkdir(exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="triscale-job")
        self._lock = threading.Lock()
        self._tokens: dict[str, CancelToken] = {}
        self._futures: dict[str, Any] = {}

    def _path(self, job_id: str):
        # only ever called with an id that matched _JOB_ID_RE: no separators, no dots
        return self.dir / f"{job_id}.json"

    def _known(self) -> list[str]:
        ids = [p.stem for p in self.dir.glob("job*.json") if _JOB_ID_RE.fullmatch(p.stem)]
        return sorted(ids, key=lambda s: int(s[3:]))

    def _unknown(self, job_id: Any) -> ToolInputError:
        text = str(job_id)
        shown = text if len(text) <= 40 else text[:40] + "..."
        known = self._known()
        return ToolInputError(
            f"Unknown job {shown!r}.",
            hint=f"Job ids look like 'job3'. Known jobs: {', '.join(known[-20:]) or 'none'}.",
        )

    def _write(self, rec: dict[str, Any]) -> None:
        atomic_write_json(self._path(rec["job_id"]), rec, indent=1, default=str)

    def _read(self, job_id: Any) -> dict[str, Any]:
        text = str(job_id).strip() if isinstance(job_id, str) else ""
        if not _JOB_ID_RE.fullmatch(text):
            raise self._unknown(job_id)
        try:
            rec = json.loads(self._path(text).read_text())
        except (OSError, ValueError):
            raise self._unknown(job_id) from None
        if not isinstance(rec, dict) or rec.get("job_id") != text:
            raise self._unknown(job_id)
        return self._reconcile(rec)

    def _reconcile(self, rec: dict[str, Any]) -> dict[str, Any]:
        """A queued/running job whose owning process has ended is failed, and is recorded as such."""
        owner = rec.get("owner")
        if rec.get("status") in _FINAL or not isinstance(owner, dict) or rec["job_id"] in self._tokens:
            return rec
        if not _owner_alive(owner):
            rec.update(status="failed", error=_OWNER_GONE, finished=time.time())
            self._write(rec)
        return rec

    def submit(self, tool: str, args: dict[str, Any] | None = None, timeout_s: float | None = None) -> str:
        """Validate the call now (so argument errors surface immediately) and queue it. Returns the job id."""
        from triscale.tools.calls import format_validation_error, get_tool

        t = get_tool(tool)
        from pydantic import ValidationError

        try:
            t.input_model.model_validate(args or {})
        except ValidationError as e:
            raise ToolInputError(format_validation_error(e, t.input_model, tool)) from None
        if t.name in ("submit_job", "job_status", "job_result", "cancel_job", "list_jobs"):
            raise ToolInputError("Jobs cannot run job tools.")
        if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ToolInputError(
                f"timeout_s must be a positive number of seconds, got {timeout_s!r}.",
                hint="Leave it unset for the tool's default limit.",
            )
        with self._lock:
            while True:  # the counter is shared by every process; skip ids left by older versions
                job_id = f"job{self.workspace.next_id('job')}"
                try:
                    os.close(os.open(self._path(job_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                    break
                except FileExistsError:
                    continue
            rec = {
                "job_id": job_id,
                "tool": tool,
                "args": args or {},
                "status": "queued",
                "submitted": time.time(),
                "started": None,
                "finished": None,
                "result": None,
                "error": None,
                "timeout_s": timeout_s,
                "owner": _owner(),
            }
            self._tokens[job_id] = CancelToken()
            self._write(rec)
            token = self._tokens[job_id]
            self._futures[job_id] = self._pool.submit(self._run, job_id, token)
        return job_id

    def _run(self, job_id: str, token: CancelToken) -> None:
        from triscale.tools.calls import call_tool

        rec = self._read(job_id)
        if token.cancelled:
            return
        rec.update(status="running", started=time.time())
        self._write(rec)
        try:
            result = call_tool(rec["tool"], rec["args"], self.workspace, timeout_s=rec.get("timeout_s"), cancel=token)
            rec.update(status="done", result=result.model_dump(mode="json"))
        except ToolError as e:
            rec.update(status="cancelled" if token.cancelled else "failed", error=str(e))
        except Exception as e:  # noqa: BLE001 - a job never takes the process down
            rec.update(status="failed", error=f"{type(e).__name__}: {e}")
        rec["finished"] = time.time()
        self._write(rec)

    def status(self, job_id: str) -> dict[str, Any]:
        rec = self._read(job_id)
        out = {k: rec[k] for k in ("job_id", "tool", "status", "error")}
        now = time.time()
        if rec.get("started"):
            out["elapsed_s"] = round((rec.get("finished") or now) - rec["started"], 3)
        return out

    def result(self, job_id: str, wait_s: float = 0.0) -> dict[str, Any]:
        """The job record; waits up to ``wait_s`` seconds for it to finish."""
        t0 = time.monotonic()
        while True:
            rec = self._read(job_id)
            if rec["status"] in _FINAL or time.monotonic() - t0 >= wait_s:
                return rec
            time.sleep(0.1)

    def cancel(self, job_id: str) -> dict[str, Any]:
        rec = self._read(job_id)
        job_id = rec["job_id"]
        if rec["status"] in _FINAL:
            return self.status(job_id)
        token = self._tokens.get(job_id)
        owner = rec.get("owner")
        if token is None and isinstance(owner, dict) and _owner_alive(owner):
            raise ToolInputError(
                f"Job {job_id!r} was submitted by another process or workspace object (pid {owner.get('pid')}), "
                "which alone can stop its worker.",
                hint="Cancel it where it was submitted, or wait for it with job_result.",
            )
        if token is None:  # a job of an earlier process that never finished
            rec.update(status="cancelled", finished=time.time(), error="cancelled (orphaned job)")
            self._write(rec)
            return self.status(job_id)
        token.cancel()
        fut = self._futures.get(job_id)
        if fut is not None and fut.cancel():  # still queued
            rec.update(status="cancelled", finished=time.time(), error="cancelled before it started")
            self._write(rec)
        else:
            self.result(job_id, wait_s=10.0)
        return self.status(job_id)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for i in self._known():
            try:
                out.append(self.status(i))
            except ToolInputError:  # a record still being created by another process
                continue
        return out

    def shutdown(self) -> None:
        for t in self._tokens.values():
            t.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- job tools


class SubmitJobInput(ToolInput):
    tool: str = Field(description="Name of the tool to run as a job, e.g. 'molecular_dynamics'.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="That tool's arguments.")
    timeout_s: float | None = Field(None, gt=0, le=86400, description="Wall-time limit (default: the tool's).")


class JobIdInput(ToolInput):
    job_id: str = Field(description="Job id such as 'job3'.")


class JobResultInput(JobIdInput):
    wait_s: float = Field(0.0, ge=0, le=600, description="Wait up to this long for the job to finish.")


class JobStatusResult(ToolResult):
    job_id: str
    job_tool: str
    status: str
    elapsed_s: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None


def _status_result(d: dict[str, Any], result: dict[str, Any] | None = None) -> JobStatusResult:
    return JobStatusResult(
        job_id=d["job_id"],
        job_tool=d["tool"],
        status=d["status"],
        error=d.get("error"),
        elapsed_s=d.get("elapsed_s"),
        result=result,
    )


@register(
    "submit_job",
    input=SubmitJobInput,
    result=JobStatusResult,
    cost="instant",
    category="jobs",
    needs_approval="submitted_tool",
    answer_fields=("job_id", "status"),
)
def submit_job(ctx: ToolContext, a: SubmitJobInput) -> JobStatusResult:
    """Run another tool in the background; returns a job id to poll with job_status / job_result."""
    jm = job_manager(ctx.workspace)
    job_id = jm.submit(a.tool, a.arguments, timeout_s=a.timeout_s)
    return _status_result(jm.status(job_id))


@register(
    "job_status", input=JobIdInput, result=JobStatusResult, cost="instant", category="jobs", answer_fields=("status",)
)
def job_status(ctx: ToolContext, a: JobIdInput) -> JobStatusResult:
    """Status of a job: queued, running, done, failed or cancelled."""
    return _status_result(job_manager(ctx.workspace).status(a.job_id))


@register(
    "job_result",
    input=JobResultInput,
    result=JobStatusResult,
    cost="instant",
    category="jobs",
    answer_fields=("status",),
)
def job_result(ctx: ToolContext, a: JobResultInput) -> JobStatusResult:
    """The result of a finished job (optionally waiting up to wait_s seconds)."""
    jm = job_manager(ctx.workspace)
    rec = jm.result(a.job_id, wait_s=a.wait_s)
    return _status_result(jm.status(a.job_id), rec.get("result"))


@register(
    "cancel_job", input=JobIdInput, result=JobStatusResult, cost="instant", category="jobs", answer_fields=("status",)
)
def cancel_job(ctx: ToolContext, a: JobIdInput) -> JobStatusResult:
    """Cancel a queued or running job (its worker process is killed)."""
    return _status_result(job_manager(ctx.workspace).cancel(a.job_id))
