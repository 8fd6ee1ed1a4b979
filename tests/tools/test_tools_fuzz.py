"""Property-based fuzzing of every registered tool's schema (hypothesis).

Each example is a schema-valid argument object (hypothesis-jsonschema, from the tool's own JSON schema) with some
fields swapped for hostile values (path escapes, workspace-internal files, overflowing integers, NaN, huge SMILES,
impossible charges). Whatever the input, a tool must either return its result model or raise a ``ToolError`` (a
clear, typed error), must not hang, and must not touch anything outside its workspace. Examples are derandomised
(the same inputs on every run); ``TRISCALE_FUZZ_EXAMPLES`` sets how many per tool.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
hjs = pytest.importorskip("hypothesis_jsonschema")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from triscale.tools import ToolError, ToolResult, Workspace, call_tool, list_tools  # noqa: E402

EXAMPLES = int(os.environ.get("TRISCALE_FUZZ_EXAMPLES", "6"))
CALL_LIMIT_S = 6.0  # the workspace's wall-time limit for every call
HANG_S = 90  # a call still running this long after its limit counts as a hang

HOSTILE = [
    "",
    " ",
    "st1",
    "st2",
    "st999999",
    "water",
    "[C-]#[O+]",
    "C" * 400,
    "../outside/secret.txt",
    "../../etc/passwd",
    "/etc/passwd",
    "~/.bashrc",
    "job1/../../outside/fake",
    "structures.db",
    "calls.jsonl",
    "jobs",
    "\x00",
    "hf",
    "pbe",
    {"method": "gfn2-xtb", "charge": 10},
    {"method": "dft", "basis": "../outside/secret.txt"},
    -1,
    0,
    -(2**31),
    2**32,
    2**63,
    1e300,
    -1e300,
    float("nan"),
    float("inf"),
    [4294967296, 4294967296, 1],
    [0, 0, 0],
    [],
    {},
    None,
    True,
]


# Meaningful values per argument name, so that examples get past validation and reach the work itself.
POOLS = {
    "structure_id": ["st1", "st2", "water"],
    "calculator": ["emt", "gfn2-xtb", "triscale", "gfn1-xtb"],
    "name": ["Cu", "water", "Si", "NaCl"],
    "smiles": ["CCO", "O", "[C-]#[O+]"],
    "path": ["out.xyz", "st.cif", "sub/out.extxyz"],
    "format": ["xyz", "extxyz", "cif"],
    "job_id": ["job1", "job2"],
    "tool": ["single_point", "build_molecule"],
    "arguments": [{"structure_id": "st1", "calculator": "emt"}, {"name": "water"}],
    "reaction": ["2 H2 + O2 -> 2 H2O", "H2 + H2 -> H4"],
    "candidates": [["water", "methane"], ["st1", "st2"]],
    "method": ["gfn2-xtb", "gfn1-xtb", "dft", "hf"],
    "model": ["triscale-base"],
    "repeat": [[2, 2, 2], 2, [1, 1, 1]],
    "steps": [3, 10],
    "index": [0, -1, 1],
}

# Hostile values aimed at particular arguments (drawn as often as the general ones above).
HOSTILE_BY_FIELD = {
    "repeat": [[4294967296, 4294967296, 1], [0, 0, 0], [-1, 1, 1], [10**6, 10**6, 10**6], 10**9],
    "index": [-1000, 10**9, -(2**63)],
    "path": ["../outside/secret.txt", "/etc/passwd", "structures.db", "calls.jsonl", "jobs/job1.json", "."],
    "job_id": ["job1/../../outside/fake", "../outside/secret.txt", "job0", "job" + "9" * 40],
    "smiles": ["C" * 160, "C1" * 200, "[Xx]"],
    "name": ["C" * 160, "../outside/secret.txt"],
    "timeout_s": [0, -1, float("nan"), 1e300],
    "calculator": [
        {"method": "gfn2-xtb", "charge": 10},
        {"method": "gfn2-xtb", "spin": 20},
        {"method": "dft", "basis": "/etc/passwd"},
        {"method": "emt", "charge": 1},
        "hf",
        "pbe",
    ],
    "basis": ["/etc/passwd", "../outside/secret.txt", "no-such-basis"],
    "functional": ["no-such-functional", "hf"],
    "charge": [10, -10, 1],
    "spin": [20, 1],
    "steps": [10**9, -1],
    "temperature_K": [-1.0, 1e12, float("nan")],
    "out_dir": ["../outside", "/tmp", "structures.db"],
    "input_npz": ["../outside/secret.txt", "/etc/passwd"],
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _args_strategy(tool):
    schema = tool.input_schema()
    fields = list(schema.get("properties", {}))
    valid = hjs.from_schema(schema)

    @st.composite
    def strategy(draw):
        args = dict(draw(valid))
        for name in fields:
            if name in POOLS and draw(st.booleans()):
                args[name] = draw(st.sampled_from(POOLS[name]))
        if fields:  # one or two hostile values; the rest stay meaningful
            for name in draw(st.lists(st.sampled_from(fields), max_size=min(2, len(fields)), unique=True)):
                aimed = HOSTILE_BY_FIELD.get(name)
                pool = aimed if aimed and draw(st.booleans()) else HOSTILE
                args[name] = draw(st.sampled_from(pool))
        return args

    return strategy()


TOOLS = sorted(t.name for t in list_tools())


@pytest.mark.parametrize("name", TOOLS)
def test_tool_schema_fuzz(name, tmp_path, monkeypatch):
    tool = next(t for t in list_tools() if t.name == name)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not read me\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # relative paths that escape the workspace land here, where we can see them
    ws = Workspace(tmp_path / "ws", timeout_s=CALL_LIMIT_S)
    from ase.build import bulk, molecule

    ws.add(molecule("H2O"), label="water")  # st1
    ws.add(bulk("Cu", "fcc", a=3.61), label="Cu")  # st2
    before_outside = _snapshot(outside)
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(args=_args_strategy(tool))
    def run(args):
        # The call runs in a thread so that a hang is seen without signals (an alarm set here would survive the
        # exec of the worker server started during the call, and kill it later).
        outcome: list[str] = []

        def target():
            try:
                result = call_tool(name, args, ws)
                if not isinstance(result, ToolResult):
                    outcome.append(f"not a result: {name}({args!r}): {type(result).__name__}")
            except ToolError:
                pass
            except Exception as e:  # noqa: BLE001 - the point of the test
                outcome.append(f"raw {type(e).__name__}: {name}({args!r}): {e}")

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(CALL_LIMIT_S + HANG_S)
        if thread.is_alive():
            outcome.append(f"hang: {name}({args!r})")
        failures.extend(outcome)
        if _snapshot(outside) != before_outside:
            failures.append(f"touched outside the workspace: {name}({args!r})")
        if any(cwd.iterdir()):
            failures.append(f"wrote into the working directory: {name}({args!r}): {sorted(os.listdir(cwd))}")

    try:
        run()
    finally:
        ws.close()
    assert not failures, "\n".join(failures)
