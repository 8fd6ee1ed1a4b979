"""Agent evaluation: task success per category and backend, tool-call counts and latency.

Task file (``benchmarks/agent_tasks/public.json``; ChemGraph-style: id, category, query, a manual workflow of
tool calls and the expected structured answer)::

    {"id": "single_point_1", "category": "single_point", "query": "What is the GFN2-xTB energy of water?",
     "manual_workflow": {"tool_calls": [{"id": "s1", "tool": "build_molecule", "args": {"name": "water"}},
                                        {"id": "s2", "tool": "single_point",
                                         "args": {"structure_id": "${s1.structure_id}", "calculator": "gfn2-xtb"}}]},
     "answer": {"results": [{"step": "s2", "field": "energy_eV", "property": "energy", "unit": "eV",
                             "value": -137.97}]}}

Ground truths are computed by running the manual workflow through the tools directly (``--make-truth``).
A task succeeds when every expected result appears in the agent's structured results with the same property
and a value within 5 % (strings: equal after normalising; formulas in Hill order).

    python benchmarks/agent_eval.py --make-truth            # compute and store the expected values
    python benchmarks/agent_eval.py --llm oracle            # scripted oracle: checks the harness end to end
    python benchmarks/agent_eval.py --llm local             # the offline 1.5B model (slow on 2 cores)
    python benchmarks/agent_eval.py --llm openai:MODEL@http://host:8000/v1 --only single_point

The ``oracle`` backend replays each task's manual workflow as scripted tool calls and ends with an empty turn,
so its score measures the harness, the tools and the answer assembly, not a language model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

TASKS = Path(__file__).parent / "agent_tasks" / "public.json"
REL_TOL = 0.05


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def _requirements_met(task: dict[str, Any]) -> str | None:
    for req in task.get("requires", []):
        if req == "triscale-base":
            from triscale.tools.calculators import _checkpoint_shipped

            if not _checkpoint_shipped():
                return "triscale-base checkpoint not shipped"
    return None


def make_truth(tasks: list[dict[str, Any]], path: Path) -> None:
    from triscale.tools import Workspace
    from triscale.tools.workflows import run_workflow

    for task in tasks:
        why = _requirements_met(task)
        if why:
            print(f"{task['id']}: skipped ({why})")
            continue
        with tempfile.TemporaryDirectory() as d:
            ws = Workspace(d, isolate=False)
            run = run_workflow({"name": task["id"], "steps": task["manual_workflow"]["tool_calls"]}, ws)
            if not run.ok:
                print(f"{task['id']}: FAILED {[s.error for s in run.steps if s.error]}")
                continue
            by_step = {s.id: s.result for s in run.steps}
            for exp in task["answer"]["results"]:
                exp["value"] = _get(by_step[exp["step"]], exp["field"])
            print(f"{task['id']}: {[(e['property'], e['value']) for e in task['answer']['results']]}")
    path.write_text(json.dumps(tasks, indent=1) + "\n")


def _norm(s: Any) -> str:
    return re.sub(r"\s+", "", str(s)).lower()


def score(task: dict[str, Any], results: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Whether every expected result is in ``results`` (same property; value within 5 %)."""
    missing = []
    for exp in task["answer"]["results"]:
        want = exp["value"]
        if want is None:
            missing.append(f"{exp['property']}: no ground truth")
            continue
        cands = [r for r in results if r["property"] == exp["property"]]
        ok = False
        for r in cands:
            got = r["value"]
            if isinstance(want, str) or isinstance(got, str):
                ok = _norm(got) == _norm(want)
            else:
                ok = abs(float(got) - float(want)) <= REL_TOL * max(abs(float(want)), 1e-6)
            if ok:
                break
        if not ok:
            missing.append(f"{exp['property']}: want {want}, got {[r['value'] for r in cands] or 'nothing'}")
    return not missing, missing


def _oracle(task: dict[str, Any]):
    from triscale.agents import ScriptedChatModel

    steps = task["manual_workflow"]["tool_calls"]
    index = {s["id"]: i + 1 for i, s in enumerate(steps)}

    def ref(v: Any) -> Any:
        if isinstance(v, str):
            return re.sub(r"\$\{(s\d+)\.", lambda m: "${" + str(index[m.group(1)]) + ".", v)
        if isinstance(v, dict):
            return {k: ref(x) for k, x in v.items()}
        if isinstance(v, list):
            return [ref(x) for x in v]
        return v

    turns: list[Any] = [{"tool": s["tool"], "args": ref(s["args"])} for s in steps] + [""]
    return ScriptedChatModel(messages=iter(turns))


def interleave(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks round-robin over categories, so that a run cut short by ``--max-minutes`` covers every category."""
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tasks:
        by_cat[t["category"]].append(t)
    out: list[dict[str, Any]] = []
    while any(by_cat.values()):
        for cat in list(by_cat):
            if by_cat[cat]:
                out.append(by_cat[cat].pop(0))
    return out


def run_tasks(
    tasks: list[dict[str, Any]], llm_spec: str, workspace: str | None, max_minutes: float | None = None
) -> list[dict[str, Any]]:
    from triscale.agents import ScienceAgent
    from triscale.tools import Workspace

    rows = []
    start = time.monotonic()
    for task in tasks:
        if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
            rows.append({"id": task["id"], "category": task["category"], "status": "skipped", "why": "time cap"})
            continue
        why = _requirements_met(task)
        if why:
            rows.append({"id": task["id"], "category": task["category"], "status": "skipped", "why": why})
            continue
        root = Path(workspace or tempfile.mkdtemp(prefix="agent_eval_")) / task["id"]
        ws = Workspace(root, isolate=True)
        llm = _oracle(task) if llm_spec == "oracle" else llm_spec
        t0 = time.monotonic()
        try:
            agent = ScienceAgent(llm, ws, memory=False)
            run = agent.ask(task["query"])
            agent.close()
            ok, missing = score(task, run.as_json()["results"])
            rows.append(
                {
                    "id": task["id"],
                    "category": task["category"],
                    "status": "ok" if ok else "wrong",
                    "missing": missing,
                    "tool_calls": run.n_tool_calls,
                    "model_calls": run.n_model_calls,
                    "latency_s": round(time.monotonic() - t0, 2),
                    "stop_reason": run.stop_reason,
                    "run_id": run.run_id,
                    "workspace": str(root),
                }
            )
        except Exception as e:  # a backend failure counts as a failed task, the benchmark goes on
            rows.append(
                {
                    "id": task["id"],
                    "category": task["category"],
                    "status": "error",
                    "missing": [f"{type(e).__name__}: {e}"],
                    "latency_s": round(time.monotonic() - t0, 2),
                }
            )
        r = rows[-1]
        print(
            f"{r['id']:24s} {r['status']:6s} {r.get('latency_s', 0):7.1f} s  calls={r.get('tool_calls', '-')}  "
            f"{'; '.join(r.get('missing', []))[:160]}",
            flush=True,
        )
    return rows


def report(rows: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    cats: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["status"] != "skipped":
            cats[r["category"]].append(r)
    print(f"\nbackend: {backend}")
    print(f"{'category':24s} {'success':>9s} {'tool calls':>11s} {'latency s':>10s}")
    summary = {}
    for cat, rs in sorted(cats.items()):
        n_ok = sum(r["status"] == "ok" for r in rs)
        calls = [r.get("tool_calls", 0) or 0 for r in rs]
        lat = [r["latency_s"] for r in rs]
        summary[cat] = {
            "success": n_ok,
            "n": len(rs),
            "mean_tool_calls": sum(calls) / len(rs),
            "mean_latency_s": sum(lat) / len(rs),
        }
        print(f"{cat:24s} {n_ok:>4d}/{len(rs):<4d} {sum(calls) / len(rs):>11.1f} {sum(lat) / len(rs):>10.1f}")
    done = [r for r in rows if r["status"] != "skipped"]
    n_ok = sum(r["status"] == "ok" for r in done)
    skipped = [r["id"] for r in rows if r["status"] == "skipped"]
    print(f"{'total':24s} {n_ok:>4d}/{len(done):<4d}" + (f"   skipped: {', '.join(skipped)}" if skipped else ""))
    return {
        "backend": backend,
        "success": n_ok,
        "n": len(done),
        "skipped": skipped,
        "per_category": summary,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=Path, default=TASKS)
    ap.add_argument("--llm", default="oracle", help="oracle | local | gguf:PATH | openai:MODEL@URL | ollama:MODEL")
    ap.add_argument("--make-truth", action="store_true", help="compute the expected values with the tools")
    ap.add_argument("--only", default=None, help="comma-separated categories or task ids")
    ap.add_argument("--workspace", default=None, help="keep the task workspaces here")
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    ap.add_argument(
        "--max-minutes", type=float, default=None, help="start no task after this many minutes (tasks interleaved)"
    )
    args = ap.parse_args(argv)
    tasks = json.loads(args.tasks.read_text())
    if args.make_truth:
        make_truth(tasks, args.tasks)
        return 0
    if args.only:
        keep = set(args.only.split(","))
        tasks = [t for t in tasks if t["id"] in keep or t["category"] in keep]
    if args.max_minutes is not None:
        tasks = interleave(tasks)
    rows = run_tasks(tasks, args.llm, args.workspace, args.max_minutes)
    rep = report(rows, args.llm)
    if args.out:
        args.out.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
