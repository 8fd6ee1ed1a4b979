"""The tool layer tried as a hostile user would: a catalogue of bad (and a few good) inputs against the tool API,
``triscale run`` and ``triscale predict``, each classified as

    clear    a ToolError (or a CLI exit code != 0 with a one-line message): what we want for bad input
    correct  a result, and the number checked against a direct reference where the input is good
    wrong    a result where an error was due, or a number that is not what the input asked for ("silent wrong")
    crash    a raw exception, a traceback, a signal, a hang past the limit
    hole     anything read or written outside the workspace (a sentinel folder beside it is watched)

    python benchmarks/hostile_catalogue.py            # prints the table and the counts

Every case runs in a fresh workspace inside a temporary folder; the folder beside the workspace holds a
"secret" file that no case may read (its text must never appear in an error) or change.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

SECRET = "s3cr3t-token-do-not-leak"
HANG_S = 120.0

# (name, tool, arguments, expectation). Expectation: "error" | "ok" | ("value", field, reference, tolerance).
# Structures: st1 water, st2 fcc Cu (4 atoms), st3 H2. Files written into the workspace before the cases run:
# two.xyz (2 frames), zero.cif (cell lengths 0), tiny.xyz (1 atom in a 0.01 Å cell), close.xyz (atoms 0.1 Å apart).
H2_STO3G = {"hf": -30.392412, "pbe": -31.350029, "b3lyp": -31.714004}  # PySCF, eV (tests/tools/test_tools_methods)
CASES: list[tuple[str, str, dict, object]] = [
    # --- methods compute what they name
    *[
        (
            f"H2 {m}/sto-3g",
            "single_point",
            {"structure_id": "st3", "calculator": {"method": m, "basis": "sto-3g"}},
            ("value", "energy_eV", ref, 1e-4),
        )
        for m, ref in H2_STO3G.items()
    ],
    (
        "unknown functional",
        "single_point",
        {"structure_id": "st3", "calculator": {"method": "dft", "functional": "xyz"}},
        "error",
    ),
    (
        "conflicting functional",
        "single_point",
        {"structure_id": "st3", "calculator": {"method": "pbe", "functional": "b3lyp"}},
        "error",
    ),
    (
        "unknown basis",
        "single_point",
        {"structure_id": "st3", "calculator": {"method": "hf", "basis": "no-such"}},
        "error",
    ),
    (
        "basis as a path outside",
        "single_point",
        {"structure_id": "st3", "calculator": {"method": "hf", "basis": "../outside/secret.txt"}},
        "error",
    ),
    (
        "basis as an absolute path",
        "single_point",
        {"structure_id": "st3", "calculator": {"method": "hf", "basis": "/etc/passwd"}},
        "error",
    ),
    (
        "functional for xTB",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "gfn2-xtb", "functional": "pbe"}},
        "error",
    ),
    # --- impossible electron counts
    (
        "water charge +10 xTB",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "gfn2-xtb", "charge": 10}},
        "error",
    ),
    (
        "water spin 20 xTB",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "gfn2-xtb", "spin": 20}},
        "error",
    ),
    (
        "water spin parity xTB",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "gfn2-xtb", "spin": 1}},
        "error",
    ),
    (
        "water charge +10 HF",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "hf", "charge": 10}},
        "error",
    ),
    ("H2 spin parity HF", "single_point", {"structure_id": "st3", "calculator": {"method": "hf", "spin": 1}}, "error"),
    (
        "EMT with a charge",
        "single_point",
        {"structure_id": "st2", "calculator": {"method": "emt", "charge": 1}},
        "error",
    ),
    (
        "foundation model with spin",
        "single_point",
        {"structure_id": "st1", "calculator": {"method": "triscale", "spin": 2}},
        "error",
    ),
    (
        "orbitals charge +10",
        "electronic_structure",
        {"structure_id": "st1", "method": "gfn2-xtb", "charge": 10},
        "error",
    ),
    (
        "OH radical spin 1 (valid)",
        "single_point",
        {"structure_id": "[OH]", "calculator": {"method": "gfn2-xtb", "spin": 1}},
        "ok",
    ),
    # --- structures and files
    ("CIF with zero cell", "import_structure", {"path": "zero.cif"}, "error"),
    ("frame index -1000", "import_structure", {"path": "two.xyz", "index": -1000}, "error"),
    ("frame index 2 of 2", "import_structure", {"path": "two.xyz", "index": 2}, "error"),
    ("frame index -1 (valid)", "import_structure", {"path": "two.xyz", "index": -1}, "ok"),
    ("1 atom in a 0.01 Å cell", "import_structure", {"path": "tiny.xyz"}, "error"),
    ("atoms 0.1 Å apart", "import_structure", {"path": "close.xyz"}, "error"),
    ("import from outside", "import_structure", {"path": "../outside/secret.txt"}, "error"),
    ("import absolute path", "import_structure", {"path": "/etc/passwd"}, "error"),
    ("import the store itself", "import_structure", {"path": "structures.db"}, "error"),
    ("import the store as extxyz", "import_structure", {"path": "structures.db", "format": "extxyz"}, "error"),
    ("repeat overflow", "build_bulk", {"name": "Cu", "repeat": [4294967296, 4294967296, 1]}, "error"),
    ("repeat zero", "build_bulk", {"name": "Cu", "repeat": [0, 1, 1]}, "error"),
    ("repeat negative", "make_supercell", {"structure_id": "st2", "repeat": [-1, 1, 1]}, "error"),
    ("supercell too big", "make_supercell", {"structure_id": "st2", "repeat": [100, 100, 100]}, "error"),
    ("160-carbon SMILES", "build_molecule", {"smiles": "C" * 160}, "error"),
    ("bad SMILES", "build_molecule", {"smiles": "C1CC("}, "error"),
    ("[C-]#[O+] (valid)", "build_molecule", {"smiles": "[C-]#[O+]"}, "ok"),
    ("surface Miller 1e6", "build_surface", {"structure_id": "st2", "miller": [1000000, 0, 0]}, "error"),
    ("vacancy index out of range", "make_vacancy", {"structure_id": "st2", "index": 99}, "error"),
    (
        "substitute unknown element",
        "substitute_atoms",
        {"structure_id": "st2", "new_element": "Xx", "indices": [0]},
        "error",
    ),
    ("analysis index out of range", "analyze_structure", {"structure_id": "st1", "distances": [[0, 9]]}, "error"),
    ("O-H distance of water (valid)", "analyze_structure", {"structure_id": "st1", "distances": [[0, 1]]}, "ok"),
    # --- the workspace's own files and paths outside it
    ("export onto structures.db", "export_structure", {"structure_id": "st1", "path": "structures.db"}, "error"),
    (
        "export onto calls.jsonl",
        "export_structure",
        {"structure_id": "st1", "path": "calls.jsonl", "format": "xyz"},
        "error",
    ),
    (
        "export into jobs/",
        "export_structure",
        {"structure_id": "st1", "path": "jobs/job1.json", "format": "xyz"},
        "error",
    ),
    ("export outside", "export_structure", {"structure_id": "st1", "path": "../outside/x.xyz"}, "error"),
    ("export absolute", "export_structure", {"structure_id": "st1", "path": "/tmp/triscale-hostile.xyz"}, "error"),
    ("export (valid)", "export_structure", {"structure_id": "st1", "path": "out/water.xyz"}, "ok"),
    ("job id traversal (result)", "job_result", {"job_id": "job1/../../../outside/fake"}, "error"),
    ("job id traversal (cancel)", "cancel_job", {"job_id": "../outside/secret"}, "error"),
    ("unknown job", "job_status", {"job_id": "job999"}, "error"),
    (
        "job with timeout 0",
        "submit_job",
        {"tool": "single_point", "arguments": {"structure_id": "st2", "calculator": "emt"}, "timeout_s": 0},
        "error",
    ),
    (
        "job with negative timeout",
        "submit_job",
        {"tool": "single_point", "arguments": {"structure_id": "st2", "calculator": "emt"}, "timeout_s": -5},
        "error",
    ),
    ("PDE output outside", "simulate_pde", {"pde": "burgers", "resolution": 32, "out_dir": "../outside"}, "error"),
    (
        "PDE input from outside",
        "predict_pde",
        {"model_name": "ns2d-fno", "input_npz": "../outside/secret.txt"},
        "error",
    ),
    # --- limits and numbers
    ("MD of one atom", "molecular_dynamics", {"structure_id": "[Cu]", "calculator": "emt", "steps": 5}, "error"),
    ("MD 1e9 steps", "molecular_dynamics", {"structure_id": "st2", "calculator": "emt", "steps": 10**9}, "error"),
    (
        "MD negative temperature",
        "molecular_dynamics",
        {"structure_id": "st2", "calculator": "emt", "temperature_K": -5},
        "error",
    ),
    (
        "MD NaN timestep",
        "molecular_dynamics",
        {"structure_id": "st2", "calculator": "emt", "timestep_fs": math.nan},
        "error",
    ),
    ("DFT on 62 atoms", "single_point", {"structure_id": "C" * 20, "calculator": "b3lyp"}, "error"),
    ("unknown calculator", "single_point", {"structure_id": "st1", "calculator": "mace"}, "error"),
    ("unknown tool argument", "single_point", {"structure_id": "st1", "calculator": "emt", "foo": 1}, "error"),
    ("EOS with 1 point", "equation_of_state", {"structure_id": "st2", "calculator": "emt", "n_points": 1}, "error"),
    ("EOS of a molecule", "equation_of_state", {"structure_id": "st1", "calculator": "emt"}, "error"),
    (
        "reaction that does not balance",
        "reaction_energy",
        {"reaction": "H2 + O2 -> H2O", "calculator": "gfn2-xtb"},
        "error",
    ),
    ("Cu EMT energy (valid)", "single_point", {"structure_id": "st2", "calculator": "emt"}, "ok"),
]

# CLI cases: (name, argv after 'triscale', files to write {name: text or bytes}, expectation "error"|"ok")
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)
CLI_CASES: list[tuple[str, list[str], dict[str, str | bytes], str]] = [
    ("workflow: YAML alias bomb", ["run", "bomb.yaml"], {"bomb.yaml": BOMB}, "error"),
    ("workflow: binary file", ["run", "bin.yaml"], {"bin.yaml": bytes(range(256)) * 8}, "error"),
    (
        "workflow: workspace outside",
        ["run", "escape.yaml"],
        {
            "escape.yaml": textwrap.dedent("""
        workspace: ../outside
        steps:
          - id: w
            tool: build_molecule
            args: {name: water}
        """)
        },
        "error",
    ),
    (
        "workflow: absolute workspace",
        ["run", "abs.yaml"],
        {"abs.yaml": "workspace: /tmp\nsteps:\n  - id: ls\n    tool: list_structures\n"},
        "error",
    ),
    (
        "workflow: import a credentials file",
        ["run", "cred.yaml", "--workspace", "ws"],
        {
            "cred.yaml": textwrap.dedent("""
        steps:
          - id: leak
            tool: import_structure
            args: {path: ../outside/secret.txt, format: xyz}
        """)
        },
        "error",
    ),
    (
        "predict: coincident atoms",
        ["predict", "coincident.xyz"],
        {"coincident.xyz": "2\n\nH 0 0 0\nH 0 0 0\n"},
        "error",
    ),
    ("predict: atoms 0.1 Å apart", ["predict", "close.xyz"], {"close.xyz": "2\n\nH 0 0 0\nH 0 0 0.1\n"}, "error"),
    ("predict: atoms 1e12 Å apart", ["predict", "far.xyz"], {"far.xyz": "2\n\nH 0 0 0\nH 0 0 1e12\n"}, "error"),
    (
        "predict: 0.01 Å cell",
        ["predict", "cell.extxyz"],
        {
            "cell.extxyz": '1\nLattice="0.01 0 0 0 0.01 0 0 0 0.01" Properties=species:S:1:pos:R:3 '
            'pbc="T T T"\nCu 0 0 0\n'
        },
        "error",
    ),
    (
        "predict: water (valid)",
        ["predict", "water.xyz"],
        {"water.xyz": "3\n\nO 0 0 0.119\nH 0 0.763 -0.477\nH 0 -0.763 -0.477\n"},
        "ok",
    ),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _prepare(base: Path):
    from ase.build import bulk, molecule
    from ase.io import write

    from triscale.tools import Workspace

    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET + "\n")
    ws = Workspace(base / "ws", timeout_s=HANG_S)
    ws.add(molecule("H2O"), label="water")
    ws.add(bulk("Cu", "fcc", a=3.61, cubic=True), label="Cu")
    ws.add(molecule("H2"), label="H2")
    write(ws.root / "two.xyz", [molecule("H2O"), molecule("CH4")])
    (ws.root / "zero.cif").write_text(
        "data_x\n_cell_length_a 0\n_cell_length_b 0\n_cell_length_c 0\n_cell_angle_alpha 90\n_cell_angle_beta 90\n"
        "_cell_angle_gamma 90\nloop_\n_atom_site_label\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
        "Cu 0 0 0\n"
    )
    (ws.root / "tiny.xyz").write_text(
        '1\nLattice="0.01 0 0 0 0.01 0 0 0 0.01" Properties=species:S:1:pos:R:3 pbc="T T T"\nCu 0 0 0\n'
    )
    (ws.root / "close.xyz").write_text("2\n\nH 0 0 0\nH 0 0 0.1\n")
    return ws, outside


def run_tool_case(name, tool, args, expect) -> tuple[str, str]:
    from triscale.tools import ToolError, call_tool

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ws, outside = _prepare(base)
        cwd = base / "cwd"
        cwd.mkdir()
        here = os.getcwd()
        os.chdir(cwd)
        before = _snapshot(outside)
        t0 = time.monotonic()
        try:
            result = call_tool(tool, args, ws)
            outcome = "correct" if expect != "error" else "wrong"
            detail = "returned a result"
            if isinstance(expect, tuple):
                _, field, ref, tol = expect
                got = getattr(result, field)
                ok = abs(got - ref) <= tol
                outcome, detail = ("correct" if ok else "wrong"), f"{field}={got:.6f} (reference {ref:.6f})"
        except ToolError as e:
            text = str(e)
            outcome = "clear" if expect == "error" else "wrong"
            detail = text.splitlines()[0][:110]
            if SECRET in text:
                outcome, detail = "hole", "error text leaks the file outside the workspace"
        except Exception as e:  # noqa: BLE001 - the point of the catalogue
            outcome, detail = "crash", f"{type(e).__name__}: {str(e)[:100]}"
        finally:
            os.chdir(here)
            ws.close()
        if time.monotonic() - t0 > HANG_S + 30:
            outcome, detail = "crash", f"hung for {time.monotonic() - t0:.0f} s"
        if _snapshot(outside) != before or any(cwd.iterdir()):
            outcome, detail = "hole", "touched files outside the workspace"
    return outcome, detail


def run_cli_case(name, argv, files, expect) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        run_dir = base / "run"
        run_dir.mkdir()
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text(SECRET + "\n")
        for fname, content in files.items():
            p = run_dir / fname
            p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        before = _snapshot(outside)
        listing = set(os.listdir(run_dir))
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "triscale.cli", *argv],
                cwd=run_dir,
                capture_output=True,
                text=True,
                timeout=HANG_S,
            )
        except subprocess.TimeoutExpired:
            return "crash", f"hung for {time.monotonic() - t0:.0f} s"
        err = proc.stderr + proc.stdout
        if SECRET in err:
            return "hole", "output leaks the file outside the workspace"
        if _snapshot(outside) != before:
            return "hole", "touched files outside the run folder"
        if "Traceback" in err or proc.returncode < 0:
            return "crash", (err.strip().splitlines() or ["?"])[-1][:110]
        if expect == "error":
            if proc.returncode == 0:
                return "wrong", "exit 0" + (" and printed NaN" if "nan" in proc.stdout.lower() else "")
            return "clear", (err.strip().splitlines() or ["?"])[-1][:110]
        del listing
        return ("correct", "exit 0") if proc.returncode == 0 else ("wrong", err.strip()[-110:])


def main() -> None:
    rows = []
    for name, tool, args, expect in CASES:
        rows.append((f"{tool}: {name}", *run_tool_case(name, tool, args, expect)))
        print(f"{rows[-1][1]:8s} {rows[-1][0]:55s} {rows[-1][2]}", flush=True)
    for name, argv, files, expect in CLI_CASES:
        rows.append((name, *run_cli_case(name, argv, files, expect)))
        print(f"{rows[-1][1]:8s} {rows[-1][0]:55s} {rows[-1][2]}", flush=True)
    counts = Counter(r[1] for r in rows)
    print()
    print(
        json.dumps(
            {"inputs": len(rows), **{k: counts.get(k, 0) for k in ("clear", "correct", "wrong", "crash", "hole")}}
        )
    )


if __name__ == "__main__":
    main()
