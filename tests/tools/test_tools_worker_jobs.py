"""Worker processes with wall-time limits, crash isolation, and the job API."""

import os
import time

import pytest

from triscale.tools import CalculationError, ToolInputError, ToolTimeoutError, call_tool
from triscale.tools import worker as probes
from triscale.tools.jobs import job_manager
from triscale.tools.worker import run_in_worker


def test_worker_returns_results_and_runs_elsewhere():
    pid = run_in_worker(os.getpid, timeout_s=30)
    assert isinstance(pid, int) and pid != os.getpid()


def test_hung_worker_is_killed_and_caller_survives():
    t0 = time.monotonic()
    with pytest.raises(ToolTimeoutError, match="exceeded its 1 s wall-time limit"):
        run_in_worker(probes.sleep_forever, timeout_s=1.0, label="test sleep")
    assert time.monotonic() - t0 < 15
    assert run_in_worker(os.getpid, timeout_s=30) != os.getpid()  # the machinery still works


def test_crashing_worker_becomes_an_error():
    with pytest.raises(CalculationError, match="crashed.*signal 9"):
        run_in_worker(probes.crash_hard, timeout_s=30)


def test_slow_scf_hits_the_tool_time_limit_and_store_is_intact(ws, call):
    benzene = call("build_molecule", name="benzene")
    n = ws.count()
    t0 = time.monotonic()
    with pytest.raises(ToolTimeoutError, match="exceeded its 2 s wall-time limit"):
        call_tool(
            "single_point",
            {"structure_id": benzene.structure_id, "calculator": {"method": "dft", "basis": "def2-tzvp"}},
            ws,
            timeout_s=2,
        )
    assert time.monotonic() - t0 < 20
    assert ws.count() == n and ws.get(benzene.structure_id).get_chemical_formula() == "C6H6"
    # the next call in the same workspace works
    assert call("single_point", structure_id=benzene.structure_id, calculator="gfn2-xtb").energy_eV < 0


def test_job_submit_status_result(ws, call):
    cu = call("build_bulk", name="Cu", cubic=True)
    job = call(
        "submit_job",
        tool="molecular_dynamics",
        arguments={"structure_id": cu.structure_id, "calculator": "emt", "steps": 20, "ensemble": "nve"},
    )
    assert job.job_id == "job1" and job.status in ("queued", "running", "done")
    res = call("job_result", job_id=job.job_id, wait_s=60)
    assert res.status == "done" and res.result["tool"] == "molecular_dynamics"
    assert ws.has(res.result["structure_id"])
    assert call("job_status", job_id="job1").status == "done"
    # bad arguments are rejected at submission, not later
    with pytest.raises(ToolInputError, match="unknown argument 'stepz'"):
        call("submit_job", tool="molecular_dynamics", arguments={"structure_id": "st1", "stepz": 3})
    with pytest.raises(ToolInputError, match="Unknown tool"):
        call("submit_job", tool="nope")


def test_job_cancel_kills_the_worker(ws, call):
    benzene = call("build_molecule", name="benzene")
    job = call(
        "submit_job",
        tool="single_point",
        arguments={
            "structure_id": benzene.structure_id,
            "calculator": {"method": "dft", "basis": "def2-tzvp"},
        },
    )
    for _ in range(100):
        if call("job_status", job_id=job.job_id).status == "running":
            break
        time.sleep(0.1)
    time.sleep(0.5)
    t0 = time.monotonic()
    st = call("cancel_job", job_id=job.job_id)
    assert st.status == "cancelled" and time.monotonic() - t0 < 15
    assert "cancelled" in (call("job_result", job_id=job.job_id).error or "")


def test_failed_job_reports_the_error(ws, call):
    job = call("submit_job", tool="single_point", arguments={"structure_id": "st5"})
    res = call("job_result", job_id=job.job_id, wait_s=30)
    assert res.status == "failed" and "Unknown structure 'st5'" in res.error


_UNGUARDED_SCRIPT = """
import math
from triscale.tools.worker import run_in_worker
print("TOP-LEVEL RAN")
print("RESULT", run_in_worker(math.sqrt, 16.0, timeout_s=120))
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_scripts_without_main_guard_run_once(tmp_path, how):
    """Workers must not re-import the user's script: no __main__ guard is needed, piped scripts work."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED_SCRIPT)
    cmd = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    proc = subprocess.run(
        cmd,
        input=None if how == "file" else _UNGUARDED_SCRIPT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TRISCALE_WORKER_PRELOAD": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("TOP-LEVEL RAN") == 1
    assert "RESULT 4.0" in proc.stdout


# --------------------------------------------------------------------------- concurrency, confinement, lifetimes

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

_REPO = Path(__file__).resolve().parents[2]

_SUBMITTER = """
import json, os, sys, time
from triscale.tools import Workspace
from triscale.tools.jobs import job_manager
root, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
ws = Workspace(root)
while not os.path.exists(go):
    time.sleep(0.01)
ids = [job_manager(ws).submit("build_molecule", {"name": name}) for _ in range(6)]
out = []
for i in ids:
    rec = job_manager(ws).result(i, wait_s=120)
    out.append([i, rec["status"], (rec.get("result") or {}).get("formula")])
ws.close()
print("OUT" + json.dumps(out))
"""


def _env():
    return {**os.environ, "PYTHONPATH": str(_REPO), "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def test_two_processes_submitting_jobs_get_unique_ids_and_their_own_results(tmp_path):
    root, go = tmp_path / "ws", tmp_path / "go"
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", _SUBMITTER, str(root), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for name in ("water", "methane")
    }
    time.sleep(1.0)
    go.touch()  # both start submitting together
    outs = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        outs[name] = json.loads(stdout.split("OUT", 1)[1])
    ids = [i for out in outs.values() for i, _, _ in out]
    assert len(ids) == 12 and len(set(ids)) == 12, ids
    formula = {"water": "H2O", "methane": "CH4"}
    for name, out in outs.items():
        assert all(status == "done" and f == formula[name] for _, status, f in out), out
    # every record on disk is the job its submitter got back
    for name, out in outs.items():
        for i, _, _ in out:
            rec = json.loads((root / "jobs" / f"{i}.json").read_text())
            assert rec["args"] == {"name": name} and rec["result"]["formula"] == formula[name]


@pytest.mark.parametrize(
    "bad",
    ["job/../../outside/fake", "job1/../../../outside/fake", "../outside/fake", "job1.json", "job 1", "jobx", "job0"],
)
def test_job_ids_are_validated_before_any_path_is_built(tmp_path, ws, call, bad):
    outside = tmp_path / "outside"
    outside.mkdir()
    fake = {"job_id": "fake", "tool": "x", "args": {}, "status": "running", "started": 1.0, "error": None}
    (outside / "fake.json").write_text(json.dumps(fake))
    before = (outside / "fake.json").read_bytes()
    messages = []
    for tool, args in [("job_result", {}), ("job_status", {}), ("cancel_job", {})]:
        for job_id in (bad, "job987"):
            with pytest.raises(ToolInputError) as err:
                call(tool, job_id=job_id, **args)
            messages.append(str(err.value).replace(repr(job_id), "ID"))
    # one answer for a file that exists outside and for one that exists nowhere: no oracle, nothing leaked
    assert len(set(messages)) == 1 and str(tmp_path) not in messages[0], messages
    assert "Unknown job ID" in messages[0]
    assert (outside / "fake.json").read_bytes() == before and sorted(os.listdir(outside)) == ["fake.json"]


_KILLED_PARENT = """
import sys, time
from triscale.tools import Workspace, call_tool
from triscale.tools.jobs import job_manager
ws = Workspace(sys.argv[1])
cu = call_tool("build_bulk", {"name": "Cu", "cubic": True}, ws)
sc = call_tool("make_supercell", {"structure_id": cu.structure_id, "repeat": [3, 3, 3]}, ws)
args = {"structure_id": sc.structure_id, "calculator": "emt", "steps": 200000, "ensemble": "nve", "interval": 1000}
job = job_manager(ws).submit("molecular_dynamics", args, timeout_s=3600)
while job_manager(ws).status(job)["status"] != "running":
    time.sleep(0.05)
print(job, flush=True)
time.sleep(3600)
"""


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                text = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(text[text.rfind(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _running(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_parent_takes_its_worker_along_and_the_job_reads_failed(tmp_path):
    from triscale.tools import Workspace

    root = tmp_path / "ws"
    parent = subprocess.Popen(
        [sys.executable, "-c", _KILLED_PARENT, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(), "TRISCALE_WORKER_PRELOAD": ""},
    )
    try:
        job_id = parent.stdout.readline().strip()
        assert job_id.startswith("job"), parent.stderr.read()[-2000:]
        # the worker is a grandchild (caller -> forkserver -> worker) burning CPU on the MD
        workers: set[int] = set()
        for _ in range(300):
            workers = _descendants(parent.pid) - _children_of(parent.pid)
            if workers:
                break
            time.sleep(0.1)
        assert workers, "no worker process appeared"
        assert job_manager(Workspace(root)).status(job_id)["status"] == "running"
        everything = _descendants(parent.pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
    for _ in range(150):  # ~15 s at most; normally well under a second
        if not any(_running(p) for p in everything):
            break
        time.sleep(0.1)
    assert not [p for p in everything if _running(p)], "processes outlived their killed parent"
    st = job_manager(Workspace(root)).status(job_id)
    assert st["status"] == "failed" and "process running it ended" in st["error"]
    # recorded, not only computed: the record on disk now says failed
    assert json.loads((root / "jobs" / f"{job_id}.json").read_text())["status"] == "failed"


def _children_of(pid: int) -> set[int]:
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                text = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(text[text.rfind(")") + 2 :].split()[1]) == pid:
                out.add(int(d))
    return out


def test_worker_slots_cap_concurrency_and_waiting_honours_cancel_and_limit(monkeypatch):
    from triscale.tools import worker
    from triscale.tools.worker import CancelToken

    monkeypatch.setenv("TRISCALE_MAX_WORKERS", "2")
    monkeypatch.setattr(worker, "_slots", None)
    assert worker.max_workers() == 2
    assert run_in_worker(os.getpid, timeout_s=600) != os.getpid()  # the forkserver is up before we time anything
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], worker._active)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    hold = [CancelToken() for _ in range(2)]  # two workers that keep their slots until cancelled
    errors: list[str] = []

    def holder(tok):
        try:
            run_in_worker(probes.sleep_forever, timeout_s=600, cancel=tok)
        except CalculationError as e:
            errors.append(e.message)

    sleepers = [threading.Thread(target=holder, args=(tok,)) for tok in hold]
    for t in sleepers:
        t.start()
    for _ in range(3000):
        if worker._active == 2:
            break
        time.sleep(0.02)
    assert worker._active == 2
    # both slots busy: a third call waits, and its wall-time limit still applies while it waits ...
    with pytest.raises(ToolTimeoutError, match="waiting for one of the 2 worker slots"):
        run_in_worker(os.getpid, timeout_s=0.3, label="third")
    # ... and so does its cancel token
    token = CancelToken()
    threading.Timer(0.3, token.cancel).start()
    with pytest.raises(CalculationError, match="cancelled while waiting"):
        run_in_worker(os.getpid, timeout_s=600, cancel=token)
    assert worker._active == 2
    # more callers than slots: they queue and all finish once the holders go, never more than 2 workers at once
    extra = [
        threading.Thread(target=run_in_worker, args=(time.sleep, 0.3), kwargs={"timeout_s": 600}) for _ in range(3)
    ]
    for t in extra:
        t.start()
    for tok in hold:
        tok.cancel()
    for t in sleepers + extra:
        t.join(120)
    stop.set()
    sampler.join()
    assert peak[0] == 2 and worker._active == 0
    assert errors == ["The calculation was cancelled."] * 2
    assert run_in_worker(os.getpid, timeout_s=60) != os.getpid()
    monkeypatch.setenv("TRISCALE_MAX_WORKERS", "0")
    with pytest.raises(ValueError, match="positive integer"):
        worker.max_workers()


@pytest.mark.parametrize("bad", [0, -1, 0.0, float("nan")])
def test_non_positive_timeouts_are_refused(ws, call, bad):
    with pytest.raises(ToolInputError, match="timeout_s must be a positive number"):
        call_tool("list_structures", {}, ws, timeout_s=bad)
    with pytest.raises(ToolInputError, match="timeout_s must be a positive number"):
        job_manager(ws).submit("list_structures", {}, timeout_s=bad)
    with pytest.raises(ToolInputError, match="timeout_s"):
        call("submit_job", tool="list_structures", timeout_s=bad)
    with pytest.raises(ToolInputError, match="timeout_s must be a positive number"):
        run_in_worker(os.getpid, timeout_s=bad)
    assert not list((ws.root / "jobs").glob("job*.json"))
