"""Provenance of agent runs: one JSONL log per run, ``triscale runs show``, and export to a replayable workflow.

Layout inside the workspace::

    agent_runs/<run_id>/provenance.jsonl   # run header, every model turn and tool call, the final answer
    agent_runs/<run_id>/answer.json        # the structured final answer
    agent_runs/<run_id>/workflow.yaml      # written by export_workflow: replays the tool calls without an LLM

Each tool-call entry carries the arguments, the full result, the wall time, the registry call id (the same id
as in the workspace's ``calls.jsonl``) and, for foundation-model calls, the SHA-256 of the checkpoint and adapter
weights that were used.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from triscale.common import file_sha256 as common_sha256

__all__ = [
    "RunLog",
    "new_run_id",
    "find_run",
    "load_run",
    "list_runs",
    "run_tool_records",
    "export_workflow",
    "show_run",
    "file_sha256",
    "weights_fingerprint",
]

RUNS_DIR = "agent_runs"
_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def new_run_id() -> str:
    return time.strftime("r%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file, cached by (path, size, mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = common_sha256(p, chunk)
    return _SHA_CACHE[key]


def weights_fingerprint(ref: str, workspace_root: str | Path | None = None) -> dict[str, str] | None:
    """``{file: sha256}`` of the weight files of a checkpoint name or a model/adapter directory, if found."""
    from triscale.foundation.checkpoints import CHECKPOINT_DIR

    candidates = [Path(ref).expanduser(), CHECKPOINT_DIR / ref]
    if workspace_root is not None:
        candidates.insert(0, Path(workspace_root) / ref)
    for d in candidates:
        if d.is_dir():
            files = sorted([*d.glob("*.safetensors"), *d.glob("*/*.safetensors")])
            if files:
                return {str(f.relative_to(d)): file_sha256(f) for f in files}
    return None


def _code_version() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"python": platform.python_version()}
    for pkg in ("triscale", "langchain", "langchain-core", "langgraph", "ase", "torch", "tblite", "pyscf"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    try:
        repo = Path(__file__).resolve().parents[2]
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
        if commit:
            out["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _triscale_refs(args: dict[str, Any], result: dict[str, Any], tool: str) -> list[str]:
    """Checkpoint and adapter references a foundation-model call used."""
    calc = args.get("calculator")
    spec = calc if isinstance(calc, dict) else {"method": calc} if isinstance(calc, str) else {}
    uses = tool in ("predict_properties", "plan_experiments") or str(result.get("method", "")).startswith("triscale")
    if not uses:
        return []
    src = args if tool in ("predict_properties", "plan_experiments") else spec
    models = src.get("model", "triscale-base") or "triscale-base"
    refs = list(models) if isinstance(models, list) else [models]
    return refs + list(src.get("adapters") or [])


class RunLog:
    """Appends provenance entries for one agent run (thread-safe)."""

    def __init__(self, workspace_root: str | Path, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.workspace_root = Path(workspace_root)
        self.dir = self.workspace_root / RUNS_DIR / self.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "provenance.jsonl"
        self._lock = threading.Lock()
        self._seq = 0

    def write(self, kind: str, **data: Any) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "kind": kind, "time": time.time(), **data}
            with open(self.path, "a") as f:
                f.write(json.dumps(entry, default=str) + "\n")
        return entry

    def start(self, question: str, *, thread_id: str, llm: dict[str, Any], tools: list[str], prompt: str) -> None:
        self.write(
            "run_start",
            run_id=self.run_id,
            question=question,
            thread_id=thread_id,
            workspace=str(self.workspace_root),
            llm=llm,
            tools=tools,
            system_prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
            versions=_code_version(),
        )

    def tool_call(
        self,
        *,
        name: str,
        args: dict[str, Any],
        lc_id: str,
        status: str,
        wall_time_s: float,
        result: dict[str, Any] | None = None,
        content: str = "",
        note: str | None = None,
    ) -> None:
        data: dict[str, Any] = {
            "name": name,
            "args": args,
            "lc_id": lc_id,
            "status": status,
            "wall_time_s": round(wall_time_s, 4),
        }
        if result is not None:
            data["result"] = result
            data["call_id"] = result.get("call_id", "")
            hashes = {}
            for ref in _triscale_refs(args, result, name):
                fp = weights_fingerprint(str(ref), self.workspace_root)
                if fp:
                    hashes[str(ref)] = fp
            if hashes:
                data["weights_sha256"] = hashes
        if content and result is None:
            data["content"] = content
        if note:
            data["note"] = note
        self.write("tool_call", **data)

    def answer(self, answer: dict[str, Any], wall_time_s: float, stop_reason: str) -> None:
        self.write("final_answer", answer=answer, wall_time_s=round(wall_time_s, 3), stop_reason=stop_reason)
        (self.dir / "answer.json").write_text(json.dumps(answer, indent=1))


# --------------------------------------------------------------------------- reading runs


def _runs_root(workspace: str | Path | None) -> list[Path]:
    roots = [Path(workspace)] if workspace else [Path("workspace"), Path("runs/agent"), Path(".")]
    return [r / RUNS_DIR for r in roots if (r / RUNS_DIR).is_dir()]


def find_run(run_id: str, workspace: str | Path | None = None) -> Path:
    """The provenance file of ``run_id`` (a unique prefix is enough)."""
    hits = []
    for root in _runs_root(workspace):
        hits += [d for d in root.iterdir() if d.is_dir() and d.name.startswith(run_id)]
    if len(hits) == 1 or (hits and hits[0].name == run_id):
        return hits[0] / "provenance.jsonl"
    where = ", ".join(str(r) for r in _runs_root(workspace)) or "no agent_runs/ folder found"
    if not hits:
        raise FileNotFoundError(f"No agent run {run_id!r} in {where}; pass --workspace DIR.")
    raise FileNotFoundError(f"Run id {run_id!r} is ambiguous: {', '.join(h.name for h in hits)}.")


def load_run(path_or_id: str | Path, workspace: str | Path | None = None) -> list[dict[str, Any]]:
    p = Path(path_or_id)
    if p.is_dir():
        p = p / "provenance.jsonl"
    if not p.is_file():
        p = find_run(str(path_or_id), workspace)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def list_runs(workspace: str | Path | None = None) -> list[dict[str, Any]]:
    out = []
    for root in _runs_root(workspace):
        for d in sorted(root.iterdir()):
            p = d / "provenance.jsonl"
            if not p.is_file():
                continue
            first = json.loads(p.read_text().splitlines()[0])
            out.append({"run_id": d.name, "question": first.get("question", ""), "path": str(p)})
    return out


def run_tool_records(entries: list[dict[str, Any]]):
    from triscale.agents.answer import ToolRecord

    return [
        ToolRecord(name=e["name"], args=e.get("args", {}), result=e["result"], lc_id=e.get("lc_id", ""))
        for e in entries
        if e["kind"] == "tool_call" and e.get("status") == "ok" and e.get("result") is not None
    ]


# --------------------------------------------------------------------------- export to a workflow


def _paths_to(value: str, obj: Any, prefix: str = "") -> list[str]:
    """Paths (``a.b.0``) inside ``obj`` whose value equals ``value``."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("call_id", "tool", "notes"):
                continue
            out += _paths_to(value, v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths_to(value, v, f"{prefix}.{i}")
    elif obj == value:
        out.append(prefix)
    return out


_SID = re.compile(r"^st\d+$")


def _rewrite(arg: Any, produced: dict[str, str]) -> Any:
    if isinstance(arg, str) and _SID.match(arg.strip()) and arg.strip() in produced:
        return produced[arg.strip()]
    if isinstance(arg, dict):
        return {k: _rewrite(v, produced) for k, v in arg.items()}
    if isinstance(arg, list):
        return [_rewrite(v, produced) for v in arg]
    return arg


def export_workflow(run: str | Path, workspace: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Write the run's successful tool calls as a workflow YAML that ``triscale run`` replays without an LLM.

    Structure ids produced by an earlier call become ``${step.field}`` references, so the replay builds its own
    structures in a fresh workspace. The original values are kept under ``expected`` in a comment block."""
    import yaml

    entries = load_run(run, workspace)
    head = next(e for e in entries if e["kind"] == "run_start")
    steps: list[dict[str, Any]] = []
    produced: dict[str, str] = {}
    expected: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e["kind"] != "tool_call" or e.get("status") != "ok" or e.get("result") is None:
            continue
        if e["name"] in ("submit_job", "job_status", "job_result", "cancel_job", "list_structures"):
            continue
        sid = f"s{len(steps) + 1}"
        steps.append({"id": sid, "tool": e["name"], "args": _rewrite(e.get("args", {}), produced)})
        result = e["result"]
        for value in {v for v in _all_strings(result) if _SID.match(v)}:
            if value in produced:
                continue
            paths = _paths_to(value, result)
            if paths:
                best = min(paths, key=lambda p: (p != "structure_id", len(p)))
                produced[value] = "${" + f"{sid}.{best}" + "}"
        expected[sid] = {k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if not steps:
        raise ValueError(f"Run {head['run_id']} has no successful tool call to export.")
    wf = {
        "name": f"agent-{head['run_id']}",
        "description": f"Replay of agent run {head['run_id']}: {head.get('question', '')}"[:500],
        "steps": steps,
    }
    path = Path(out) if out else Path(head["workspace"]) / RUNS_DIR / head["run_id"] / "workflow.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(wf, sort_keys=False, allow_unicode=True)
    text += "# expected (values of the original run):\n" + "".join(
        f"#   {sid}: {json.dumps(v)}\n" for sid, v in expected.items()
    )
    path.write_text(text)
    return path


def _all_strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _all_strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _all_strings(v)]
    return []


# --------------------------------------------------------------------------- printing


def show_run(run: str, workspace: str | Path | None = None, *, as_json: bool = False) -> int:
    """CLI helper for ``triscale runs show``."""
    from rich.console import Console
    from rich.panel import Panel

    try:
        entries = load_run(run, workspace)
    except FileNotFoundError as e:
        Console(stderr=True).print(f"[red]{e}[/red]")
        return 2
    if as_json:
        print(json.dumps(entries, indent=1, default=str))
        return 0
    c = Console()
    for e in entries:
        k = e["kind"]
        if k == "run_start":
            c.print(Panel(e["question"], title=f"run {e['run_id']}  thread {e['thread_id']}"))
            llm = e.get("llm", {})
            c.print(f"llm: {llm.get('backend')} {llm.get('model', '')}   versions: {e.get('versions')}")
        elif k == "model_turn":
            calls = ", ".join(f"{t['name']}({json.dumps(t['args'])})" for t in e.get("tool_calls", []))
            text = (e.get("content") or "").strip().replace("\n", " ")
            c.print(
                f"[cyan]model[/cyan] #{e.get('turn')} ({e.get('wall_time_s', 0):.2f} s): "
                f"{text[:300]}{' -> ' + calls if calls else ''}"
            )
        elif k == "tool_call":
            color = "green" if e["status"] == "ok" else "red"
            body = e.get("result") or e.get("content", "")
            if isinstance(body, dict):
                body = {
                    kk: v for kk, v in body.items() if kk not in ("notes",) and not (isinstance(v, list) and len(v) > 8)
                }
            c.print(
                f"[{color}]tool[/{color}] {e['name']} {e.get('call_id', '')} ({e['wall_time_s']:.2f} s) "
                f"args={json.dumps(e['args'])}\n      -> {str(body)[:600]}"
            )
            if e.get("weights_sha256"):
                c.print(f"      weights: {e['weights_sha256']}")
        elif k == "final_answer":
            c.print(Panel(e["answer"]["answer"], title=f"answer ({e['stop_reason']}, {e['wall_time_s']} s)"))
            for r in e["answer"]["results"]:
                unc = f" ± {r['uncertainty']}" if r.get("uncertainty") is not None else ""
                c.print(
                    f"  {r['property']} = {r['value']}{unc} {r['unit']}  [{r['method']}] "
                    f"{','.join(r['structure_ids'])}  calls={','.join(r['tool_calls'])}"
                )
        else:
            c.print(f"{k}: {json.dumps({kk: v for kk, v in e.items() if kk not in ('seq', 'kind', 'time')})[:300]}")
    return 0
