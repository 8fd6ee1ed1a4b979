"""Inference throughput (atoms/s, energy + forces, float32) of TriScale against peers, in one run.

    python benchmarks/inference_speed.py [--peer-python /path/to/venv/bin/python] [--threads 2] [--repeats 5]

TriScale and CHGNet run in this process; MACE (random weights, MACE-MP-0 small/medium sizes) and SevenNet-0 run
in a subprocess of a separate venv (mace-torch pins e3nn 0.4.4 and disables torch's safe loading process-wide, so it
stays out of the project's environment): create it with
``python -m venv V && V/bin/pip install torch==2.13.0 mace-torch sevenn`` and pass ``--peer-python V/bin/python``.
Also reports TriScale's peak RSS for a ~5000-atom cell (measured in a fresh subprocess).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _structures import benchmark_structures  # noqa: E402
from _timing import time_energy_forces  # noqa: E402


def triscale_model(name: str):
    import triscale
    from triscale.foundation import FoundationConfig, FoundationModel
    from triscale.foundation.checkpoints import available_checkpoints

    if name in available_checkpoints() or Path(name).is_dir():
        return triscale.load(name), name
    return FoundationModel(FoundationConfig()).eval(), "default config (random weights)"


def peak_rss_subprocess(model: str, n_atoms: int, threads: int) -> dict:
    """Peak resident memory of a fresh process that loads the model and evaluates a ~n_atoms cell."""
    code = f"""
import sys, time, torch
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
torch.set_num_threads({threads})
from _structures import big_cell
from inference_speed import triscale_model
from triscale.foundation import TriScaleCalculator
model, _ = triscale_model({model!r})
atoms = big_cell({n_atoms})
atoms.calc = TriScaleCalculator(model, dtype="float32")
t = time.perf_counter(); atoms.get_forces(); dt = time.perf_counter() - t
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of a large parent (the
# benchmark after CHGNet on Cu500) would report the parent's RSS - the source of an earlier "9.3 GiB" figure.
hwm_kB = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(len(atoms), hwm_kB / 1024**2, dt)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"n_atoms": int(out[0]), "peak_rss_GiB": float(out[1]), "seconds": float(out[2])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="triscale-base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-python", default=os.environ.get("TRISCALE_BENCH_PEER_PYTHON"))
    parser.add_argument("--no-chgnet", action="store_true")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--omp-wait-policy",
        choices=["active", "passive"],
        default=os.environ.get("OMP_WAIT_POLICY", "active").lower(),
        help="OpenMP threads spin (active: right on an idle machine, as a benchmark wants) or sleep (passive: right "
        "when other jobs share the cores; it costs small structures up to 4x with 2 threads). Applies to every model.",
    )
    args = parser.parse_args()
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()  # before torch starts OpenMP; peers inherit it

    import torch

    torch.set_num_threads(args.threads)
    from triscale.foundation import TriScaleCalculator

    structures = benchmark_structures()
    rows: list[dict] = []
    model, label = triscale_model(args.model)
    ours = f"TriScale ({label})"
    calc = TriScaleCalculator(model, dtype="float32")
    # The water box is periodic but molecular: its H has labels only in the molecule domain.
    water_calc = TriScaleCalculator(model, dtype="float32", domain="molecule")
    for name, atoms in structures.items():
        rows.append(
            {
                "model": ours,
                "structure": name,
                "n_atoms": len(atoms),
                "seconds": time_energy_forces(water_calc if name.startswith("water") else calc, atoms, args.repeats),
            }
        )

    if not args.no_chgnet:
        try:
            from chgnet.model.dynamics import CHGNetCalculator

            chg = CHGNetCalculator(use_device="cpu")
            for name, atoms in structures.items():
                if not atoms.pbc.any():  # CHGNet needs a cell: a 30 Å periodic box, far beyond its cutoff
                    atoms = atoms.copy()
                    atoms.set_cell([30.0] * 3)
                    atoms.center()
                    atoms.pbc = True
                rows.append(
                    {
                        "model": "CHGNet 0.3.0",
                        "structure": name,
                        "n_atoms": len(atoms),
                        "seconds": time_energy_forces(chg, atoms, args.repeats),
                    }
                )
        except ImportError:
            print("CHGNet not installed (pip install 'triscale[chgnet]'): skipped", file=sys.stderr)

    if args.peer_python:
        from ase.io import write

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "structures.extxyz"
            frames = []
            for name, atoms in structures.items():
                atoms = atoms.copy()
                atoms.info["label"] = name
                frames.append(atoms)
            write(path, frames)
            proc = subprocess.run(
                [
                    args.peer_python,
                    str(Path(__file__).with_name("_peer_e3nn.py")),
                    str(path),
                    str(args.repeats),
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
            )
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    rows.append(json.loads(line))
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
    else:
        print("no --peer-python: MACE and SevenNet skipped", file=sys.stderr)

    memory = peak_rss_subprocess(args.model, 5000, args.threads)
    report(rows, ours, memory, args.threads, args.omp_wait_policy)
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "memory": memory}, indent=1))


def report(rows: list[dict], ours: str, memory: dict, threads: int, wait_policy: str) -> None:
    structures = list(dict.fromkeys(r["structure"] for r in rows if "seconds" in r))
    models = list(dict.fromkeys(r["model"] for r in rows))
    table = {(r["model"], r["structure"]): r for r in rows}
    print(
        f"\nEnergy + forces, float32, {threads} threads, OMP_WAIT_POLICY={wait_policy}; atoms/s (higher is better); "
        "ratio = TriScale / peer\n"
    )
    header = "| model | " + " | ".join(structures) + " |"
    print(header)
    print("|" + "---|" * (len(structures) + 1))
    for model in models:
        cells = []
        for s in structures:
            r = table.get((model, s))
            if r is None or "seconds" not in r:
                cells.append("n/a" if r is None else "error")
                continue
            rate = r["n_atoms"] / r["seconds"]
            cell = f"{rate:,.0f}"
            ref = table.get((ours, s))
            if model != ours and ref and "seconds" in ref:
                cell += f" (x{r['seconds'] / ref['seconds']:.1f})"
            cells.append(cell)
        print(f"| {model} | " + " | ".join(cells) + " |")
    for r in rows:
        if "error" in r:
            print(f"note: {r['model']} {r.get('structure', '')}: {r['error'][:200]}")
    print(
        f"\nTriScale peak RSS for a {memory['n_atoms']}-atom cell: {memory['peak_rss_GiB']:.2f} GiB "
        f"({memory['seconds']:.2f} s for energy + forces)"
    )


if __name__ == "__main__":
    main()
