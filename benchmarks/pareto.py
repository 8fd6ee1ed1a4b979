"""Capacity grid and MACE-small trained on the same data with the same CPU budget (issue 14, sections 2 and 3).

    python benchmarks/pareto.py --data data/pretrain/molecule data/pretrain/material --shards 30 57 \\
        --minutes 5 --out runs/pareto [--peer-python /work/venvs/mace/bin/python] [--points c64-l3-r5 ...]

Data: the shards written by ``triscale datagen`` (only finished ones: an extxyz with its summary json), the first
``--shards`` of each ``--data`` directory in index order. Training frames are their ``split=train`` frames; held-out
frames their ``split=test`` frames (groups never seen in training, as datagen's split records them), kept only where
every element has a training frame in the same domain (the others are counted, not scored). Both are written once to
``OUT/data/{train,heldout}.extxyz``, which every model then reads.

Each grid point is trained from scratch by ``triscale pretrain``'s own loop (a temporary recipe derived from
``configs/pretrain/base.yaml``: same loss weights, batch, learning rate, EMA) for ``--minutes`` of its process's CPU
time on one thread (``budget_clock: cpu``, so that other jobs on a shared machine do not shrink one point's budget);
MACE-small gets the same frames and the same CPU budget in its own venv (``_peer_mace_train.py``). Then every model is
scored on the held-out frames (force MAE meV/Å, energy MAE meV/atom, per domain) and timed on ``--threads`` threads
(energy + forces, median of ``--repeats``) on a ~100-atom cell (Cu108; ``--cell-element``) and a ~20-atom
molecule (aspirin).
With ``--jobs N`` the trainings run N at a time (each one thread, each stopped by its own CPU time).

The winner by the issue's rule is the point with >= 10x MACE-small's throughput (both structures) at <= 1.1x its
held-out force MAE (both domains); otherwise "none at this budget". A rerun into the same ``OUT`` reuses the frames
when ``--shards`` are the same, and each model trained after them with the same recipe (budget included). The ``-t16``
point adds 16 channels of TensorNet-style symmetric traceless rank-2 features (``tensor_channels``) to l <= 1.

Writes ``OUT/pareto.json`` and ``OUT/pareto.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _structures import aspirin  # noqa: E402
from _timing import time_energy_forces  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_RECIPE = ROOT / "configs" / "pretrain" / "base.yaml"
DOMAINS = ("molecule", "material")
# name -> (hidden_channels, num_layers, cutoff Å); the default size is c64-l3-r5.
# name -> (channels, layers, cutoff Å, rank-2 tensor channels)
GRID = {
    "c64-l3-r5": (64, 3, 5.0, 0),
    "c96-l3-r5": (96, 3, 5.0, 0),
    "c128-l3-r5": (128, 3, 5.0, 0),
    "c64-l2-r5": (64, 2, 5.0, 0),
    "c64-l3-r4": (64, 3, 4.0, 0),
    "c96-l2-r4": (96, 2, 4.0, 0),
    "c64-l3-r4-t16": (64, 3, 4.0, 16),  # + TensorNet-style rank-2 features (configs/model/rank2.yaml)
}
SPEED_RULE, ERROR_RULE = 10.0, 1.1


# ------------------------------------------------------------------------------------------------------- data
def finished_shards(directory: Path) -> list[Path]:
    """The shard files of a datagen output directory that are finished (summary json written after the extxyz)."""
    if not directory.is_dir():
        raise SystemExit(f"--data {directory}: not a directory")
    shards = sorted(p for p in directory.glob("shard-*.extxyz") if p.with_suffix(".json").exists())
    if not shards:
        raise SystemExit(f"--data {directory}: no finished shard-*.extxyz (with its .json summary)")
    return shards


def select_frames(data: list[Path], shards: list[int], out: Path) -> dict:
    """Write the training and held-out frames of the first shards of each directory; returns a summary."""
    from ase.data import chemical_symbols
    from ase.io import read, write

    train, heldout = [], []
    used = {}
    for directory, k in zip(data, shards):
        files = finished_shards(directory)[:k]
        used[str(directory)] = [f.name for f in files]
        for f in files:
            if f.stat().st_size == 0:
                continue
            for atoms in read(f, index=":", format="extxyz"):
                split = atoms.info.get("split")
                if split == "train":
                    train.append(atoms)
                elif split == "test":
                    heldout.append(atoms)
    if not train:
        raise SystemExit("the selected shards have no split=train frames")
    seen = {d: set() for d in DOMAINS}
    for atoms in train:
        seen[str(atoms.info["domain"])].update(int(z) for z in atoms.numbers)
    kept = [a for a in heldout if set(a.numbers.tolist()) <= seen[str(a.info["domain"])]]
    out.mkdir(parents=True, exist_ok=True)
    write(out / "train.extxyz", train, format="extxyz")
    write(out / "heldout.extxyz", kept, format="extxyz")
    summary = {"requested": {str(d): k for d, k in zip(data, shards)}, "shards": used, "train": {}, "heldout": {}}
    for name, frames in (("train", train), ("heldout", kept)):
        for d in DOMAINS:
            sub = [a for a in frames if a.info["domain"] == d]
            summary[name][d] = {
                "frames": len(sub),
                "atoms": int(sum(len(a) for a in sub)),
                "groups": len({a.info["group"] for a in sub}),
            }
    summary["elements"] = {d: sorted(chemical_symbols[z] for z in seen[d]) for d in DOMAINS}
    summary["heldout_excluded_unseen_element"] = len(heldout) - len(kept)
    if not kept:
        raise SystemExit("the selected shards have no split=test frames whose elements training covers")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# --------------------------------------------------------------------------------------------------- training
def point_recipe(name: str, data_dir: Path, out_dir: Path, minutes: float, seed: int) -> dict:
    """base.yaml's recipe with this point's size, the benchmark's data and a CPU-time budget."""
    import yaml

    channels, layers, cutoff, tensors = GRID[name]
    recipe = yaml.safe_load(BASE_RECIPE.read_text())
    recipe["model"].update(hidden_channels=channels, num_layers=layers, cutoff=cutoff)
    if tensors:  # only then: the recipes of the l <= 1 points stay as they were (their trained runs are reused)
        recipe["model"]["tensor_channels"] = tensors
    recipe.update(
        data=[str(data_dir / "train.extxyz"), str(data_dir / "heldout.extxyz")],
        out_dir=str(out_dir),
        max_minutes=minutes,
        budget_clock="cpu",
        max_steps=1_000_000,
        warmup_steps=100,  # base.yaml's 300 is 1 % of its steps; a few-minute run would spend a third warming up
        eval_every=1_000_000,  # no periodic validation (it would eat the budget); held-out scored at the end
        checkpoint_every=1_000_000,
        num_threads=1,
        seed=seed,
    )
    return recipe


def point_job(name: str, data_dir: Path, out: Path, minutes: float, seed: int) -> dict | None:
    """The training subprocess of one grid point, or None when it is already trained."""
    import yaml

    point_dir = out / "points" / name
    recipe = point_recipe(name, data_dir, point_dir, minutes, seed)
    recipe_path = point_dir / "recipe.yaml"
    done = point_dir / "test_metrics.json"
    if _newer(done, data_dir / "train.extxyz") and yaml.safe_load(recipe_path.read_text()) == recipe:
        return None  # trained with this very recipe (budget included): reuse
    point_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("test_metrics.json", "progress.json", "statistics.json", "metrics.jsonl"):
        (point_dir / stale).unlink(missing_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe))
    code = (
        "import sys; from triscale.foundation.pretrain import load_recipe, pretrain; "
        "pretrain(load_recipe(sys.argv[1]), resume=False)"
    )
    return {"name": name, "argv": [sys.executable, "-c", code, str(recipe_path)], "dir": point_dir, "env": _env(1)}


def _newer(result: Path, data: Path) -> bool:
    """``result`` exists and was written after ``data`` (a model trained on the current frames)."""
    return result.exists() and result.stat().st_mtime_ns > data.stat().st_mtime_ns


def point_result(name: str, out: Path) -> dict:
    point_dir = out / "points" / name
    config = json.loads((point_dir / "final" / "config.json").read_text())
    progress = json.loads((point_dir / "progress.json").read_text())
    metrics = json.loads((point_dir / "test_metrics.json").read_text())
    return {
        "steps": config["pretraining"]["steps"],
        "trained_cpu_seconds": progress["trained_seconds"],
        "heldout": {d: _pick(metrics[f"test/{d}"]) for d in DOMAINS if f"test/{d}" in metrics},
    }


def _pick(m: dict) -> dict:
    return {
        "n_structures": m["n_structures"],
        "energy_mae_meV_per_atom": m["energy_mae_meV_per_atom"],
        "forces_mae_meV_per_A": m["forces_mae_meV_per_A"],
    }


def _env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=env.get("OMP_WAIT_POLICY", "PASSIVE"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def mace_job(peer_python: str, data_dir: Path, out: Path, minutes: float, seed: int) -> dict | None:
    mace_dir = out / "mace-small"
    done = mace_dir / "metrics.json"
    if _newer(done, data_dir / "train.extxyz") and json.loads(done.read_text()).get("budget_cpu_minutes") == minutes:
        return None
    done.unlink(missing_ok=True)
    mace_dir.mkdir(parents=True, exist_ok=True)
    script = str(Path(__file__).with_name("_peer_mace_train.py"))
    argv = [peer_python, script, "train", str(data_dir / "train.extxyz"), str(data_dir / "heldout.extxyz")]
    argv += [str(mace_dir), str(minutes), str(seed)]
    return {"name": "MACE-small", "argv": argv, "dir": mace_dir, "env": {**os.environ, "OMP_NUM_THREADS": "1"}}


def run_jobs(jobs: list[dict], parallel: int) -> None:
    """Run the training subprocesses, ``parallel`` at a time (each one thread; budgets count each one's CPU time)."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            log = open(job["dir"] / "train.log", "w")
            print(f"training {job['name']} ...", flush=True)
            running.append((job, log, subprocess.Popen(job["argv"], stdout=log, stderr=log, env=job["env"])))
        time.sleep(0.5)
        for item in list(running):
            job, log, proc = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            if proc.returncode != 0:
                for _, other_log, other in running:
                    other.kill()
                    other.wait()
                    other_log.close()
                raise SystemExit(f"{job['name']}: training failed (see {job['dir'] / 'train.log'})")
            print(f"trained {job['name']}", flush=True)


# ----------------------------------------------------------------------------------------------------- timing
def timing_structures(cell_element: str = "Cu") -> dict:
    """A rattled 108-atom fcc cell (Cu: a = 3.61 Å, as benchmarks/_structures.py; else ASE's reference lattice
    constant) and aspirin (21 atoms)."""
    from ase.build import bulk

    a = 3.61 if cell_element == "Cu" else None
    cell = bulk(cell_element, "fcc", a=a, cubic=True) * (3, 3, 3)
    cell.rattle(0.02, seed=1)
    cell.info.update(label=f"{cell_element}108 (fcc)", domain="material")
    mol = aspirin()
    mol.info.update(label="aspirin (21 atoms)", domain="molecule")
    return {"cell": cell, "molecule": mol}


def check_coverage(structures: dict, summary: dict) -> None:
    """Refuse before training if a timed structure has an element the training frames of its domain lack."""
    for atoms in structures.values():
        domain = atoms.info["domain"]
        missing = sorted(set(atoms.get_chemical_symbols()) - set(summary["elements"][domain]))
        if missing:
            raise SystemExit(
                f"the training frames have no {domain} frame with {missing} (needed to time {atoms.info['label']}): "
                "take more shards (--shards) or another --cell-element"
            )


def time_triscale(model_dir: Path, structures: dict, repeats: int) -> dict:
    from triscale.foundation import TriScaleCalculator
    from triscale.foundation.model import FoundationModel

    model = FoundationModel.from_pretrained(str(model_dir)).eval()
    rates = {}
    for key, atoms in structures.items():
        calc = TriScaleCalculator(model, domain=atoms.info["domain"], dtype="float32")
        rates[key] = len(atoms) / time_energy_forces(calc, atoms, repeats)
    return rates


def time_mace(peer_python: str, model_path: Path, structures: dict, repeats: int, threads: int) -> dict:
    from ase.io import write

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "structures.extxyz"
        write(path, list(structures.values()), format="extxyz")
        proc = subprocess.run(
            [
                peer_python,
                str(Path(__file__).with_name("_peer_mace_train.py")),
                "time",
                str(model_path),
                str(path),
                str(repeats),
                str(threads),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)},
        )
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    by_label = {r["structure"]: r for r in rows}
    rates = {}
    for key, atoms in structures.items():
        row = by_label.get(atoms.info["label"], {})
        if "seconds" not in row:
            raise SystemExit(f"MACE timing failed for {key}: {row.get('error') or proc.stderr[-2000:]}")
        rates[key] = row["n_atoms"] / row["seconds"]
    return rates


# ------------------------------------------------------------------------------------------------------ table
def winner(rows: list[dict], mace: dict | None) -> str:
    """The issue's rule: >= 10x MACE-small's atoms/s on both structures at <= 1.1x its force MAE in both domains."""
    if mace is None:
        return "not decided (MACE-small not run)"
    wins = []
    for r in rows:
        fast = all(r["atoms_per_s"][k] >= SPEED_RULE * mace["atoms_per_s"][k] for k in mace["atoms_per_s"])
        accurate = all(
            r["heldout"][d]["forces_mae_meV_per_A"] <= ERROR_RULE * mace["heldout"][d]["forces_mae_meV_per_A"]
            for d in mace["heldout"]
            if d in r["heldout"]
        )
        if fast and accurate:
            wins.append(r)
    if not wins:
        return "none at this budget"
    best = min(wins, key=lambda r: max(r["heldout"][d]["forces_mae_meV_per_A"] for d in r["heldout"]))
    return best["name"]


def markdown(result: dict) -> str:
    domains = [d for d in DOMAINS if d in result["data"]["heldout"] and result["data"]["heldout"][d]["frames"]]
    head = ["model", "params", "CPU budget (min)", "steps"]
    for d in domains:
        head += [f"{d} F MAE (meV/Å)", f"{d} E MAE (meV/atom)"]
    head += [f"atoms/s {result['timed']['cell']}", f"atoms/s {result['timed']['molecule']}"]
    head += ["× MACE speed (cell / mol)", "× MACE force MAE"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mace = result.get("mace")
    for r in result["rows"] + ([mace] if mace else []):
        cells = [r["name"], f"{r['params'] / 1000:.0f} k", f"{result['minutes']:g}", str(r["steps"])]
        for d in domains:
            m = r["heldout"].get(d)
            cells += [f"{m['forces_mae_meV_per_A']:.0f}", f"{m['energy_mae_meV_per_atom']:.0f}"] if m else ["–", "–"]
        cells += [f"{r['atoms_per_s']['cell']:,.0f}", f"{r['atoms_per_s']['molecule']:,.0f}"]
        if mace and r is not mace:
            speed = [r["atoms_per_s"][k] / mace["atoms_per_s"][k] for k in ("cell", "molecule")]
            err = [
                r["heldout"][d]["forces_mae_meV_per_A"] / mace["heldout"][d]["forces_mae_meV_per_A"]
                for d in domains
                if d in r["heldout"] and d in mace["heldout"]
            ]
            cells += [f"{speed[0]:.1f} / {speed[1]:.1f}", " / ".join(f"{e:.2f}" for e in err)]
        else:
            cells += ["1", "1"] if mace else ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Winner (≥ {SPEED_RULE:g}× MACE-small's atoms/s at ≤ {ERROR_RULE:g}× its force MAE): {result['winner']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="datagen output directories (per domain)")
    parser.add_argument("--shards", nargs="+", type=int, default=[30], help="first K shards of each --data directory")
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU-minutes of training per model (one thread)")
    parser.add_argument("--points", nargs="+", default=list(GRID), choices=list(GRID))
    parser.add_argument("--peer-python", default=os.environ.get("TRISCALE_MACE_PYTHON"), help="the MACE venv's python")
    parser.add_argument("--threads", type=int, default=2, help="threads for the atoms/s measurement")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model and structure (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (each on one thread)")
    parser.add_argument("--cell-element", default="Cu", help="element of the 108-atom fcc cell timed (default Cu)")
    parser.add_argument("--out", type=Path, default=Path("runs/pareto"))
    args = parser.parse_args(argv)
    shards = args.shards * len(args.data) if len(args.shards) == 1 else args.shards
    if len(shards) != len(args.data):
        parser.error("--shards takes one number, or one per --data directory")
    if args.peer_python and not Path(args.peer_python).exists():
        parser.error(f"--peer-python {args.peer_python}: no such file")

    data_dir = args.out / "data"
    summary_path = data_dir / "summary.json"
    requested = {str(d): k for d, k in zip(args.data, shards)}
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if summary is None or summary.get("requested") != requested:
        summary = select_frames(args.data, shards, data_dir)
    # else: a rerun with the same arguments scores the same frames even if datagen has written more shards since
    print(json.dumps(summary), flush=True)
    structures = timing_structures(args.cell_element)
    check_coverage(structures, summary)

    jobs = [point_job(name, data_dir, args.out, args.minutes, args.seed) for name in args.points]
    if args.peer_python:
        jobs.append(mace_job(args.peer_python, data_dir, args.out, args.minutes, args.seed))
    jobs = [j for j in jobs if j is not None]
    if jobs:
        # Build the Arrow cache of the two files once here, so that parallel trainings do not race to write it.
        from triscale.foundation.datasets import load_structure_dataset

        for name in ("train.extxyz", "heldout.extxyz"):
            load_structure_dataset(str(data_dir / name))
    run_jobs(jobs, args.jobs)
    trained = {name: point_result(name, args.out) for name in args.points}
    mace = None
    if args.peer_python:
        mace = json.loads((args.out / "mace-small" / "metrics.json").read_text())

    # Timing last, all models back to back on the same threads, so that they see the same machine load.
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.points:
        from triscale.foundation.model import FoundationModel

        final = args.out / "points" / name / "final"
        params = sum(p.numel() for p in FoundationModel.from_pretrained(str(final)).parameters())
        channels, layers, cutoff, tensors = GRID[name]
        rows.append(
            {
                "name": name,
                "hidden_channels": channels,
                "num_layers": layers,
                "cutoff_A": cutoff,
                "tensor_channels": tensors,
                "params": int(params),
                **trained[name],
                "atoms_per_s": time_triscale(final, structures, args.repeats),
            }
        )
    if mace is not None:
        mace = {
            "name": "MACE-small",
            **mace,
            "atoms_per_s": time_mace(
                args.peer_python, args.out / "mace-small" / "mace_small.model", structures, args.repeats, args.threads
            ),
        }
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "minutes": args.minutes,
        "budget": f"{args.minutes:g} CPU-minutes of training per model, one thread (process CPU time)",
        "timing": f"energy + forces, median of {args.repeats}, {args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}",
        "timed": {key: atoms.info["label"] for key, atoms in structures.items()},
        "data": summary,
        "rows": rows,
        "mace": mace,
    }
    result["winner"] = winner(rows, mace)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pareto.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    (args.out / "pareto.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
