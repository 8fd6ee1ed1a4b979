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

Task files: ``public.json`` (the documented examples), ``tuning.json`` (phrasings the agent may be tuned on) and
``heldout.json`` (phrasings written before the agent changes of issue 15, reported and never tuned on).

ChemGraph's evaluation set (``--chemgraph``; ChemGraph's own ``ground_truth.json``, read unchanged from
``shared/peer-evals/chemgraph/``): each query is asked through the same code path as ``triscale ask --json``
(:meth:`ScienceAgent.ask` then :meth:`AgentRun.as_json`); the ``{"answer", "results"}`` payload is turned into
ChemGraph's ``ResponseFormatter`` fields (smiles, scalar_answer, dipole, vibrational_answer) and judged as
ChemGraph's ``structured_output_judge.py`` does: only the non-null ground-truth fields, all must pass; numbers
within 5 % relative (a zero expects |x| < 1e-8); SMILES equal after RDKit canonicalisation; dipole vectors
component-wise (e·Å); frequencies with imaginary modes dropped, sorted and compared element-wise. The 16 MACE-MP
queries are skipped: ChemGraph's ``mace_mp`` downloads the ``medium-mpa-0`` weights at run time and nothing here
may use the network.

    python benchmarks/agent_eval.py --chemgraph --llm oracle     # ChemGraph's manual workflows through our tools
    python benchmarks/agent_eval.py --chemgraph --llm local
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


def _print_row(r: dict, width: int) -> None:
    """One progress line per task: id, status, latency, tool calls and what was missing."""
    print(
        f"{r['id']:24s} {r['status']:6s} {r.get('latency_s', 0):7.1f} s  calls={r.get('tool_calls', '-')}  "
        f"{'; '.join(r.get('missing', []))[:width]}",
        flush=True,
    )


def chemgraph_path() -> Path | None:
    """ChemGraph's ground_truth.json: $TRISCALE_CHEMGRAPH_EVAL, else ``shared/peer-evals/chemgraph/`` in a folder
    above this checkout (the layout of the project's work tree)."""
    env = os.environ.get("TRISCALE_CHEMGRAPH_EVAL")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        cand = parent / "shared" / "peer-evals" / "chemgraph" / "ground_truth.json"
        if cand.is_file():
            return cand
    return None


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def _requirements_met(task: dict[str, Any]) -> str | None:
    for req in task.get("requires", []):
        if req == "triscale-base":
            from triscale.tools.calculators import checkpoint_shipped

            if not checkpoint_shipped():
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
                if not exp.get("given"):  # a given value (e.g. a canonical SMILES) is not a tool field
                    exp["value"] = _get(by_step[exp["step"]], exp["field"])
            print(f"{task['id']}: {[(e['property'], e['value']) for e in task['answer']['results']]}")
    path.write_text(json.dumps(tasks, indent=1) + "\n")


def _norm(s: Any) -> str:
    return re.sub(r"\s+", "", str(s)).lower()


def canonical_smiles(s: str) -> str | None:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(str(s).strip())
    return Chem.MolToSmiles(mol) if mol is not None else None


def _close(got: float, want: float) -> bool:
    return abs(float(got) - float(want)) <= REL_TOL * max(abs(float(want)), 1e-6)


def value_matches(prop: str, got: Any, want: Any) -> bool:
    """One expected value against one result value: strings after normalising (SMILES after RDKit
    canonicalisation), lists element-wise (same length), numbers within 5 %."""
    if isinstance(want, list) or isinstance(got, list):
        if not (isinstance(want, list) and isinstance(got, list)) or len(want) != len(got):
            return False
        return all(_close(g, w) for g, w in zip(sorted(got), sorted(want), strict=True))
    if isinstance(want, str) or isinstance(got, str):
        if prop == "smiles":
            a, b = canonical_smiles(str(got)), canonical_smiles(str(want))
            return a is not None and a == b
        return _norm(got) == _norm(want)
    return _close(got, want)


def score(task: dict[str, Any], results: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Whether every expected result is in ``results`` (same property; value within 5 %). Each result answers
    at most one expectation, so "A, B and C" needs three values."""
    missing = []
    used: set[int] = set()
    for exp in task["answer"]["results"]:
        want = exp["value"]
        if want is None:
            missing.append(f"{exp['property']}: no ground truth")
            continue
        cands = [(i, r) for i, r in enumerate(results) if r["property"] == exp["property"] and i not in used]
        hits = [(i, r) for i, r in cands if value_matches(exp["property"], r["value"], want)]
        if hits:
            if not isinstance(want, str | list):  # the closest value answers it
                hits.sort(key=lambda ir: abs(float(ir[1]["value"]) - float(want)))
            used.add(hits[0][0])
        else:
            got = [r["value"] for _, r in cands] or "nothing"
            missing.append(f"{exp['property']}: want {str(want)[:60]}, got {str(got)[:120]}")
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


# --------------------------------------------------------------------------- ChemGraph's evaluation set

_DRIVERS = {
    "energy": "single_point",
    "dipole": "single_point",
    "opt": "optimize_geometry",
    "vib": "vibrational_analysis",
    "ir": "vibrational_analysis",
    "thermo": "thermochemistry",
}


def chemgraph_items(path: Path) -> list[dict[str, Any]]:
    """ChemGraph's items as read (unchanged), each with ``skip`` (why it cannot run here) or None."""
    items = json.loads(path.read_text())
    for it in items:
        calls = json.dumps(it["answer"]["tool_calls"]).lower()
        it["skip"] = (
            "MACE-MP medium-mpa-0 weights are downloaded at run time (no network here)" if "mace_mp" in calls else None
        )
    return items


def _chemgraph_species(item: dict[str, Any]) -> dict[str, str]:
    """name -> SMILES as ChemGraph's manual workflow resolved it (name look-up followed by the SMILES builder)."""
    out, name = {}, None
    for call in item["answer"]["tool_calls"]:
        ((tool, args),) = call.items()
        if tool == "molecule_name_to_smiles":
            name = args["name"]
        elif tool == "smiles_to_coordinate_file" and name is not None:
            out[name.lower()] = args["smiles"]
            name = None
    return out


def chemgraph_workflow(item: dict[str, Any]) -> list[dict[str, Any]]:
    """ChemGraph's manual workflow translated to TriScale tool calls (the oracle: no language model). Molecules
    are built from the SMILES ChemGraph used (RDKit embedding, as in its pipeline)."""
    calls = item["answer"]["tool_calls"]
    if item["category"] == "reaction_energy":
        # each species built from ChemGraph's SMILES, then the reaction of their structure ids (reaction_energy
        # reads '=' as an arrow, so a SMILES with a double bond cannot be written into the reaction itself)
        species = _chemgraph_species(item)
        text = item["query"].split("The balanced reaction is:")[1].strip().rstrip(".")
        steps, ref = [], {}
        for name, smi in species.items():
            steps.append({"id": f"s{len(steps) + 1}", "tool": "build_molecule", "args": {"smiles": smi}})
            ref[name] = f"${{s{len(steps)}.structure_id}}"
        sides = []
        for side in text.split("->"):
            terms = []
            for term in side.split(" + "):
                m = re.match(r"\s*(\d+(?:\.\d+)?)?\s*(.+?)\s*$", term)
                terms.append(f"{m.group(1) + ' ' if m.group(1) else ''}{ref[m.group(2).lower()]}")
            sides.append(" + ".join(terms))
        temp = next(c["run_ase"]["params"]["temperature"] for c in calls if "run_ase" in c)
        args = {"reaction": " -> ".join(sides), "calculator": "gfn2-xtb", "free_energy": True}
        steps.append({"id": f"s{len(steps) + 1}", "tool": "reaction_energy", "args": {**args, "temperature_K": temp}})
        return steps
    steps: list[dict[str, Any]] = []
    for call in calls:
        ((tool, args),) = call.items()
        if tool == "molecule_name_to_smiles" and item["category"] == "smiles_lookup":
            steps.append({"id": f"s{len(steps) + 1}", "tool": "build_molecule", "args": {"name": args["name"]}})
        elif tool == "smiles_to_coordinate_file":
            steps.append({"id": f"s{len(steps) + 1}", "tool": "build_molecule", "args": {"smiles": args["smiles"]}})
        elif tool == "run_ase":
            params = args["params"]
            extra = {"temperature_K": float(params["temperature"])} if params.get("temperature") else {}
            steps.append(
                {
                    "id": f"s{len(steps) + 1}",
                    "tool": _DRIVERS[params["driver"]],
                    "args": {"structure_id": f"${{s{len(steps)}.structure_id}}", "calculator": "gfn2-xtb", **extra},
                }
            )
    return steps


def _kind(query: str) -> str:
    """The scalar a ChemGraph query asks for (read from the query, not from the ground-truth label)."""
    q = query.lower()
    if "gibbs" in q:
        return "reaction_gibbs_energy" if "reaction" in q else "gibbs_free_energy"
    if "optimi" in q:
        return "energy_final"
    return "energy"


def to_response_formatter(query: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Our ``{"answer", "results"}`` as ChemGraph's ResponseFormatter fields (what its judge reads)."""
    res = payload.get("results", [])

    def first(*props: str) -> dict[str, Any] | None:
        for p in props:
            for r in res:
                if r["property"] == p:
                    return r
        return None

    out: dict[str, Any] = {"smiles": None, "scalar_answer": None, "dipole": None, "vibrational_answer": None}
    smiles = [r["value"] for r in res if r["property"] == "smiles"]
    out["smiles"] = smiles or None
    kind = _kind(query)
    scalar = first(kind, *(("energy_final", "energy") if kind.endswith("energy") else ()))
    if scalar is not None and not isinstance(scalar["value"], list | str):
        out["scalar_answer"] = {
            "value": scalar["value"],
            "property": scalar["property"].replace("_", " "),
            "unit": scalar["unit"],
        }
    dip = first("dipole")
    if dip is not None and isinstance(dip["value"], list):
        out["dipole"] = {"value": dip["value"], "unit": "e * Angstrom"}
    freqs = first("frequencies", "vibrational_frequencies")
    if freqs is not None and isinstance(freqs["value"], list):
        out["vibrational_answer"] = {"frequency_cm1": [f"{-x}i" if x < 0 else str(x) for x in freqs["value"]]}
    return out


def _num(v: Any) -> float | None:
    try:
        return float(str(v).strip().rstrip("i")) if not isinstance(v, int | float) else float(v)
    except ValueError:
        return None


def _rel_close(a: float, b: float, tol: float = REL_TOL) -> bool:
    return abs(a) < 1e-8 if b == 0 else abs(a - b) / max(abs(b), 1e-12) <= tol


def judge_chemgraph(expected: dict[str, Any], actual: dict[str, Any]) -> tuple[bool, list[str]]:
    """ChemGraph's deterministic structured-output judge: every non-null expected field must pass."""
    why = []
    for field in ("smiles", "scalar_answer", "dipole", "vibrational_answer"):
        exp, act = expected.get(field), actual.get(field)
        if exp is None:
            continue
        if act is None:
            why.append(f"{field}: missing")
            continue
        if field == "smiles":
            want = {canonical_smiles(x) or x.strip().lower() for x in exp}
            got = {canonical_smiles(x) or x.strip().lower() for x in act}
            if want - got:
                why.append(f"smiles: want {sorted(want)}, got {sorted(got)}")
        elif field == "scalar_answer":
            a, b = _num(act.get("value")), _num(exp.get("value"))
            eu, au = (exp.get("unit") or "").lower().strip(), (act.get("unit") or "").lower().strip()
            if a is None or b is None or not _rel_close(a, b):
                why.append(f"scalar: want {b} ({exp.get('property')}), got {a} ({act.get('property')})")
            elif eu and au and eu != au:
                why.append(f"scalar unit: want {eu}, got {au}")
        elif field == "dipole":
            ev, av = exp["value"], act["value"]
            if len(ev) != len(av) or not all(_rel_close(float(x), float(y)) for x, y in zip(av, ev, strict=True)):
                why.append(f"dipole: want {ev}, got {[round(float(x), 4) for x in av]}")
        else:
            ev = sorted(
                v for f in exp["frequency_cm1"] if not str(f).strip().endswith("i") and (v := _num(f)) is not None
            )
            av = sorted(
                v for f in act["frequency_cm1"] if not str(f).strip().endswith("i") and (v := _num(f)) is not None
            )
            if len(ev) != len(av):
                why.append(f"frequencies: want {len(ev)} real modes, got {len(av)}")
            elif not all(_rel_close(a, e) for a, e in zip(av, ev, strict=True)):
                bad = [(round(e, 1), round(a, 1)) for a, e in zip(av, ev, strict=True) if not _rel_close(a, e)]
                why.append(f"frequencies (want, got): {bad[:4]}")
    return not why, why


def run_chemgraph(
    items: list[dict[str, Any]],
    llm_spec: str,
    workspace: str | None,
    max_minutes: float | None = None,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Each runnable ChemGraph query through :meth:`ScienceAgent.ask` (the ``triscale ask --json`` path), judged
    as ChemGraph judges."""
    from triscale.agents import ScienceAgent
    from triscale.tools import Workspace

    rows = []
    start = time.monotonic()
    for it in items:
        base = {"id": f"chemgraph_{it['id']}", "category": it["category"]}
        if it["skip"] or (max_minutes is not None and time.monotonic() - start > 60 * max_minutes):
            rows.append({**base, "status": "skipped", "why": it["skip"] or "time cap"})
            continue
        root = Path(workspace or tempfile.mkdtemp(prefix="agent_eval_cg_")) / base["id"]
        ws = Workspace(root, isolate=True)
        llm = _oracle({"manual_workflow": {"tool_calls": chemgraph_workflow(it)}}) if llm_spec == "oracle" else llm_spec
        t0 = time.monotonic()
        try:
            agent = ScienceAgent(llm, ws, memory=False, **(settings or {}))
            run = agent.ask(it["query"])
            agent.close()
            payload = run.as_json()
            ok, why = judge_chemgraph(it["answer"]["structured_output"], to_response_formatter(it["query"], payload))
            rows.append(
                {
                    **base,
                    "status": "ok" if ok else "wrong",
                    "missing": why,
                    "tool_calls": run.n_tool_calls,
                    "latency_s": round(time.monotonic() - t0, 2),
                    "stop_reason": run.stop_reason,
                    "workspace": str(root),
                }
            )
        except Exception as e:
            rows.append(
                {
                    **base,
                    "status": "error",
                    "missing": [f"{type(e).__name__}: {e}"],
                    "latency_s": round(time.monotonic() - t0, 2),
                }
            )
        _print_row(rows[-1], 200)
    return rows


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
    tasks: list[dict[str, Any]],
    llm_spec: str,
    workspace: str | None,
    max_minutes: float | None = None,
    settings: dict[str, Any] | None = None,
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
            agent = ScienceAgent(llm, ws, memory=False, **(settings or {}))
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
        _print_row(rows[-1], 160)
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
    ap.add_argument(
        "--chemgraph",
        nargs="?",
        const="",
        default=None,
        help="run ChemGraph's evaluation set (default: shared/peer-evals/chemgraph/ground_truth.json)",
    )
    ap.add_argument("--only", default=None, help="comma-separated categories or task ids")
    ap.add_argument("--workspace", default=None, help="keep the task workspaces here")
    ap.add_argument("--out", type=Path, default=None, help="write the report as JSON")
    ap.add_argument(
        "--max-minutes", type=float, default=None, help="start no task after this many minutes (tasks interleaved)"
    )
    ap.add_argument("--route", choices=["keywords", "model", "both", "fallback"], default=None, help="tool selection")
    ap.add_argument(
        "--question-limit-s", type=float, default=300.0, help="start no model turn after this long (default 300)"
    )
    args = ap.parse_args(argv)
    settings: dict[str, Any] = {"max_wall_s": args.question_limit_s}
    if args.route:
        settings["route"] = args.route
    if args.chemgraph is not None:
        path = Path(args.chemgraph) if args.chemgraph else chemgraph_path()
        if path is None or not path.is_file():
            print("ChemGraph's ground_truth.json not found (set TRISCALE_CHEMGRAPH_EVAL).", file=sys.stderr)
            return 2
        items = chemgraph_items(path)
        if args.only:
            keep = set(args.only.split(","))
            items = [i for i in items if i["id"] in keep or i["category"] in keep]
        rows = run_chemgraph(items, args.llm, args.workspace, args.max_minutes, settings)
        rep = report(rows, f"{args.llm} on ChemGraph ({path.name})")
        skipped = sorted({r["why"] for r in rows if r["status"] == "skipped"})
        print("skipped because: " + "; ".join(skipped) if skipped else "")
        if args.out:
            args.out.write_text(json.dumps(rep, indent=1))
        return 0
    tasks = json.loads(args.tasks.read_text())
    if args.make_truth:
        make_truth(tasks, args.tasks)
        return 0
    if args.only:
        keep = set(args.only.split(","))
        tasks = [t for t in tasks if t["id"] in keep or t["category"] in keep]
    if args.max_minutes is not None:
        tasks = interleave(tasks)
    rows = run_tasks(tasks, args.llm, args.workspace, args.max_minutes, settings)
    rep = report(rows, args.llm)
    if args.out:
        args.out.write_text(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
