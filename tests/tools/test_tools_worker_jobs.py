"""Worker processes with wall-time limits, crash isolation, and the job API."""

import os
import time

import pytest

from triscale.tools import CalculationError, ToolInputError, ToolTimeoutError, call_tool
from triscale.tools import compute as compute_mod
from triscale.tools.worker import run_in_worker


def test_worker_returns_results_and_runs_elsewhere():
    pid = run_in_worker(os.getpid, timeout_s=30)
    assert isinstance(pid, int) and pid != os.getpid()


def test_hung_worker_is_killed_and_caller_survives():
    t0 = time.monotonic()
    with pytest.raises(ToolTimeoutError, match="exceeded its 1 s wall-time limit"):
        run_in_worker(compute_mod.sleep_forever, timeout_s=1.0, label="test sleep")
    assert time.monotonic() - t0 < 15
    assert run_in_worker(os.getpid, timeout_s=30) != os.getpid()  # the machinery still works


def test_crashing_worker_becomes_an_error():
    with pytest.raises(CalculationError, match="crashed.*signal 9"):
        run_in_worker(compute_mod.crash_hard, timeout_s=30)


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
