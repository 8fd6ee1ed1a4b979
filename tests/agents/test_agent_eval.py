"""The evaluation harness: task file integrity, scoring within 5 %, and one oracle task end to end."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("agent_eval", ROOT / "benchmarks" / "agent_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_task_file(ev):
    tasks = json.loads(ev.TASKS.read_text())
    assert len(tasks) >= 20 and len({t["id"] for t in tasks}) == len(tasks)
    cats = {t["category"] for t in tasks}
    assert {
        "name_to_structure",
        "single_point",
        "optimisation",
        "vibrations",
        "thermochemistry",
        "dipole",
        "reaction_energy",
        "lattice_constant",
        "md_summary",
        "prediction_uncertainty",
    } <= cats
    from triscale.tools.workflows import load_workflow

    for t in tasks:
        load_workflow({"steps": t["manual_workflow"]["tool_calls"]})  # valid tools and references
        assert all(r["value"] is not None or t.get("requires") for r in t["answer"]["results"]), t["id"]


def test_scoring(ev):
    task = {"answer": {"results": [{"property": "energy", "value": -100.0}, {"property": "formula", "value": "H2O"}]}}
    good = [{"property": "energy", "value": -104.9}, {"property": "formula", "value": "h2o"}]
    assert ev.score(task, good)[0]
    ok, missing = ev.score(task, [{"property": "energy", "value": -105.1}, {"property": "formula", "value": "H2O"}])
    assert not ok and "energy" in missing[0]
    assert not ev.score(task, [{"property": "enthalpy", "value": -100.0}, good[1]])[0]


def test_oracle_run_of_one_task(ev, tmp_path):
    tasks = [t for t in json.loads(ev.TASKS.read_text()) if t["id"] == "lattice_constant_1"]
    rows = ev.run_tasks(tasks, "oracle", str(tmp_path))
    assert rows[0]["status"] == "ok" and rows[0]["tool_calls"] == 2
    # a wrong ground truth must fail
    tasks[0]["answer"]["results"][0]["value"] *= 1.1
    assert ev.run_tasks(tasks, "oracle", str(tmp_path / "b"))[0]["status"] == "wrong"
