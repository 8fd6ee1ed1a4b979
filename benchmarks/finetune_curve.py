"""Fine-tuning learning curve: force/energy MAE against training-set size for lora, heads, full and from scratch.

The data: malonaldehyde (C3H4O2, enol form ``OC=CC=O``; in neither RDKit's NCI ``first_5K.smi`` nor ase's g2, so
not in the pretraining set), geometries from GFN2-xTB Langevin MD at 300-700 K (five independent trajectories,
one frame every 25 steps of 0.5 fs), labelled with PySCF B3LYP/6-31G* (density fitting, grid level 1: ~3.5 CPU-s a
frame): energy (eV) and forces (eV/Å). The pretraining labels are GFN2-xTB, so this is also a change of level of theory.

Frames are labelled in a fixed random order, one JSON line each (``data/finetune-bench/<name>/labels.jsonl``), so a
killed run resumes and any prefix is a random sample. The first ``n_test`` labelled frames are the test set, the next
``n_val`` the validation set (early stopping), and the training sets are nested prefixes of the rest. Every method
gets the same recipe (E0 refit, batch 8, default learning rate, at most ``max_steps`` optimizer steps, early stopping
with patience 40 epochs); "scratch" is method ``full`` on the same architecture with random weights.

    python benchmarks/finetune_curve.py data  [--minutes 30]     # generate/resume the DFT data (CPU-minutes, 1 thread)
    python benchmarks/finetune_curve.py sweep [--base triscale-base] [--sizes 25 50 100 200 400] [--max-steps 400]
    python benchmarks/finetune_curve.py sweep --methods scratch --sizes 400 --max-steps 1600 --label long
    python benchmarks/finetune_curve.py committee [--base triscale-base] [--size 100 -k 4]   # committee calibration
    python benchmarks/finetune_curve.py report                    # table + plot from the stored sweep results

``--base`` takes a shipped checkpoint name or a ``save_pretrained`` directory (``resolve_checkpoint``). Results are
cached per run directory and reused only when base (name and weight hash), max_steps and epochs match.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from triscale.common.files import read_jsonl_by  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMILES = "OC=CC=O"
NAME = "malonaldehyde"
LEVEL = {"xc": "b3lyp", "basis": "6-31g*", "density_fit": True, "grid_level": 1, "conv_tol": 1e-8}
N_FRAMES = 500
N_TRAJ = 5
STRIDE = 25
SEED = 2026


def data_dir() -> Path:
    return ROOT / "data" / "finetune-bench" / NAME


# ---------------------------------------------------------------------------------------------------------------
# data
def _initial_geometry():
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES))
    AllChem.EmbedMolecule(mol, randomSeed=SEED)
    AllChem.MMFFOptimizeMolecule(mol)
    return Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def sample_geometries() -> np.ndarray:
    """(N_FRAMES, n_atoms, 3) positions from GFN2-xTB Langevin MD (cached; deterministic given the seed)."""
    path = data_dir() / "geometries.npz"
    if path.exists():
        return np.load(path)["positions"]
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS
    from tblite.ase import TBLite

    start = _initial_geometry()
    start.calc = TBLite(method="GFN2-xTB", verbosity=0)
    BFGS(start, logfile=None).run(fmax=0.01, steps=200)
    frames = []
    per_traj = N_FRAMES // N_TRAJ
    for t, temperature in enumerate(np.linspace(300, 700, N_TRAJ)):
        atoms = start.copy()
        atoms.calc = TBLite(method="GFN2-xTB", verbosity=0)
        rng = np.random.default_rng(SEED + t)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
        dyn.run(200)  # equilibrate
        for _ in range(per_traj):
            dyn.run(STRIDE)
            frames.append(np.round(atoms.positions.copy(), 8))
        print(f"xTB MD trajectory {t + 1}/{N_TRAJ} at {temperature:.0f} K done", file=sys.stderr, flush=True)
    positions = np.stack(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, positions=positions, numbers=start.numbers)
    return positions


def _label(numbers, positions, dm0=None):
    from ase.units import Bohr, Hartree
    from pyscf import dft, gto

    mol = gto.M(
        atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions, strict=False)],
        basis=LEVEL["basis"],
        unit="Angstrom",
        verbose=0,
    )
    mf = dft.RKS(mol)
    if LEVEL["density_fit"]:
        mf = mf.density_fit()
    mf.xc = LEVEL["xc"]
    mf.grids.level = LEVEL["grid_level"]
    mf.conv_tol = LEVEL["conv_tol"]
    energy = mf.kernel(dm0=dm0)
    if not mf.converged:
        raise RuntimeError("SCF did not converge")
    grad = mf.nuc_grad_method().kernel()
    return energy * Hartree, -np.asarray(grad) * Hartree / Bohr, mf.make_rdm1()


def generate_data(minutes: float) -> Path:
    """Label frames with DFT until all are done or ``minutes`` of CPU time (this process) have been spent;
    resumes from labels.jsonl."""
    positions = sample_geometries()
    numbers = np.load(data_dir() / "geometries.npz")["numbers"]
    order = np.random.default_rng(SEED).permutation(len(positions))
    labels_path = data_dir() / "labels.jsonl"
    done = read_jsonl_by(labels_path, "index")
    t0 = time.process_time()
    dm = None
    with open(labels_path, "a") as fh:
        for rank, index in enumerate(order):
            if int(index) in done:
                continue
            if (time.process_time() - t0) / 60 > minutes:
                print(f"time budget reached: {len(done)}/{len(order)} frames labelled", file=sys.stderr)
                break
            t = time.process_time()
            try:
                energy, forces, dm = _label(numbers, positions[index], dm)
            except RuntimeError as err:
                print(f"frame {index}: {err}; skipped", file=sys.stderr)
                dm = None
                continue
            row = {
                "index": int(index),
                "rank": rank,
                "energy": energy,
                "forces": forces.tolist(),
                "seconds": time.process_time() - t,
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            done[int(index)] = row
            if len(done) % 10 == 0:
                print(
                    f"{len(done)}/{len(order)} frames ({row['seconds']:.1f} CPU-s/frame)",
                    file=sys.stderr,
                    flush=True,
                )
    return write_extxyz()


def write_extxyz() -> Path:
    """All labelled frames, in labelling order, as extxyz (REF_energy in info, REF_forces per atom)."""
    from ase import Atoms
    from ase.io import write

    geo = np.load(data_dir() / "geometries.npz")
    rows = sorted(read_jsonl_by(data_dir() / "labels.jsonl", "index").values(), key=lambda r: r["rank"])
    frames = []
    for row in rows:
        atoms = Atoms(geo["numbers"], positions=geo["positions"][row["index"]])
        atoms.info["REF_energy"] = row["energy"]
        atoms.info["frame"] = row["index"]
        atoms.arrays["REF_forces"] = np.asarray(row["forces"])
        frames.append(atoms)
    out = data_dir() / "frames.extxyz"
    tmp = out.with_suffix(f".tmp{os.getpid()}.extxyz")  # atomic: a sweep may read while the data step writes
    write(tmp, frames, format="extxyz")
    os.replace(tmp, out)
    mean_s = np.mean([r["seconds"] for r in rows]) if rows else float("nan")
    print(f"{len(frames)} frames in {out} (mean {mean_s:.2f} CPU-s/frame)", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------------------------
# sweep
METHODS = ("lora", "heads", "full", "scratch")
SIZES = (25, 50, 100, 200, 400)


def _split_frames(n_test: int, n_val: int):
    from ase.io import read

    frames = read(data_dir() / "frames.extxyz", index=":")
    if len(frames) < n_test + n_val + 10:
        raise SystemExit(f"only {len(frames)} labelled frames: run the 'data' step first")
    test, rest = frames[:n_test], frames[n_test:]
    val, pool = rest[:n_val], rest[n_val:]
    return test, val, pool


def _write_split(path: Path, train, val, test) -> Path:
    from ase.io import write

    frames = []
    for split, part in (("train", train), ("val", val), ("test", test)):
        for atoms in part:
            atoms = atoms.copy()
            atoms.info["split"] = split
            frames.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, frames, format="extxyz")
    return path


def _architecture(config_dict: dict) -> dict:
    skip = ("pretraining", "transformers_version", "scratch_of")
    return {k: v for k, v in config_dict.items() if k not in skip}


def _scratch_base(base: str, out: Path) -> str:
    """The base architecture with random weights (same config), saved once per base: the from-scratch baseline.

    Rebuilt when the stored one was made from a base with another config (e.g. an interim checkpoint)."""
    import torch

    from triscale.foundation import FoundationModel
    from triscale.foundation.checkpoints import load_checkpoint, resolve_checkpoint

    config = load_checkpoint(base).config
    wanted = _architecture(json.loads((resolve_checkpoint(base) / "config.json").read_text()))
    stored = out / "config.json"
    if stored.exists() and _architecture(json.loads(stored.read_text())) == wanted:
        return str(out)
    config.pretraining = None  # random weights: no pretraining metadata
    config.scratch_of = str(base)
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = FoundationModel(config)
    model.save_pretrained(str(out))
    return str(out)


def base_identity(base: str) -> dict:
    """The base checkpoint's name and the sha256 of its weights: cached runs are reused only for the same weights."""
    import hashlib

    from triscale.foundation.checkpoints import resolve_checkpoint

    path = resolve_checkpoint(base)
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    return {"base": str(base), "base_sha256": digest}


def snapshot_base(base: str, out: Path) -> tuple[str, dict]:
    """A copy of the base checkpoint under OUT/base-<sha256[:12]>, used by every run of the call, and its identity.

    The shipped checkpoint can be replaced while a sweep runs (it was, once); training from a snapshot keeps every
    run of a sweep on the weights its cache key names."""
    from triscale.foundation.checkpoints import resolve_checkpoint

    src = resolve_checkpoint(base)
    ident = base_identity(base)
    dst = out / f"base-{ident['base_sha256'][:12]}"
    if not (dst / "config.json").exists():
        tmp = out / f".base-{os.getpid()}"
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.replace(tmp, dst)
    if base_identity(str(dst))["base_sha256"] != ident["base_sha256"]:
        raise RuntimeError(f"{base} changed while it was being copied; run again")
    return str(dst), ident


def _cached(run_dir: Path, done: Path, key: dict) -> dict | None:
    """The stored result if it was made with ``key``; else prepares ``run_dir`` for a (resumed) run and returns None.

    A run directory left by an unfinished run with the same key is kept (the trainer resumes it); one made with
    another key (other base weights, other step budget) is removed."""
    cached = json.loads(done.read_text()) if done.exists() else {}
    if cached.get("bench_key") == key:
        return cached
    stamp = run_dir / "bench_key.json"
    if run_dir.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != key):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(key))
    return None


def sweep(
    base: str, sizes, methods, n_test: int, n_val: int, max_steps: int, epochs: int, out: Path, label: str = ""
) -> list[dict]:
    """Train every (method, size) once (cached in OUT/<method>[-label]-<size>/metrics.json); returns table rows.

    Rows are merged into OUT/results.json by (method, label, size), so several calls build one table."""
    import torch

    from triscale.finetune import FinetuneRecipe, finetune

    torch.set_num_threads(1)
    write_extxyz()  # whatever is labelled so far; the order is fixed, so test/val stay the same as data grows
    test, val, pool = _split_frames(n_test, n_val)
    sizes = [n for n in sizes if n <= len(pool)]
    print(f"frames: {len(test)} test, {len(val)} val, pool {len(pool)}; sizes {sizes}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    base_path, ident = snapshot_base(base, out)
    scratch = _scratch_base(base_path, out / "scratch-base") if "scratch" in methods else None
    key = {**ident, "max_steps": max_steps, "epochs": epochs}
    rows = []
    for size in sizes:
        data = _write_split(out / "data" / f"train-{size}.extxyz", pool[:size], val, test)
        for method in methods:
            name = f"{method}-{label}" if label else method
            run_dir = out / f"{name}-{size}"
            done = run_dir / "metrics.json"
            cached = _cached(run_dir, done, key)
            if cached is not None:
                metrics = cached
            else:
                recipe = FinetuneRecipe(
                    data=str(data),
                    out=str(run_dir),
                    base=scratch if method == "scratch" else base_path,
                    method="full" if method == "scratch" else method,
                    split="data",
                    epochs=epochs,
                    max_steps=max_steps,
                    batch_size=8,
                    patience=40,
                    progress=False,
                    plots=True,
                    seed=SEED,
                )
                t0 = time.perf_counter()
                metrics = finetune(recipe, resume=True)  # resumes a run killed mid-way (same recipe)
                metrics["bench_key"] = key
                metrics["wall_s"] = time.perf_counter() - t0
                done.write_text(json.dumps(metrics, indent=1))
            row = {
                "method": name,
                "max_steps": max_steps,
                "size": size,
                "epochs": metrics["epochs"],
                "steps": metrics["steps"],
                "stop": metrics["stop_reason"],
                "wall_s": metrics.get("wall_s"),
                "e_mae": metrics["test"]["energy_mae_meV_per_atom"],
                "e_mae_mol": metrics["test"]["energy_mae_meV"],
                "f_mae": metrics["test"]["forces_mae_meV_per_A"],
                "trainable": metrics["parameters"]["trainable"],
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    path = out / "results.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = {
        (r["method"], r["size"]): r for r in old.get("rows", []) if old.get("base_sha256") == ident["base_sha256"]
    }
    merged.update({(r["method"], r["size"]): r for r in rows})
    results = {**ident, "n_test": len(test), "n_val": len(val), "level": LEVEL, "molecule": NAME}
    results["rows"] = list(merged.values())
    path.write_text(json.dumps(results, indent=1))
    return rows


def committee_run(base: str, size: int, k: int, n_test: int, n_val: int, max_steps: int, out: Path) -> dict:
    """K LoRA adapters (seeds, bootstrap samples) on ``size`` frames: test errors of the mean and calibration."""
    from triscale.finetune import FinetuneRecipe, finetune

    test, val, pool = _split_frames(n_test, n_val)
    data = _write_split(out / "data" / f"train-{size}.extxyz", pool[:size], val, test)
    base_path, ident = snapshot_base(base, out)
    key = {**ident, "max_steps": max_steps, "k": k}
    run_dir = out / f"committee{k}-lora-{size}"
    summary_path = out / f"committee{k}-{size}.json"
    cached = _cached(run_dir, summary_path, key)
    if cached is not None:
        return cached
    recipe = FinetuneRecipe(
        data=str(data),
        out=str(run_dir),
        base=base_path,
        method="lora",
        split="data",
        committee=k,
        max_steps=max_steps,
        epochs=200,
        patience=40,
        progress=False,
        seed=SEED,
    )
    metrics = finetune(recipe, resume=True)
    summary = {k2: metrics[k2] for k2 in ("test", "test_calibration", "val", "val_calibration") if k2 in metrics}
    summary.update(bench_key=key, k=k, size=size, max_steps=max_steps)
    summary_path.write_text(json.dumps(summary, indent=1))
    return summary


def base_model_errors(base: str, out: Path, n_test: int, n_val: int) -> dict:
    """Test errors of the base model itself (after only the E0 refit on 100 training frames, and before it)."""
    from triscale.finetune import data as D
    from triscale.finetune.trainer import errors, load_base, predict_graphs
    from triscale.foundation.training import record_to_graph

    test, val, pool = _split_frames(n_test, n_val)
    model, _ = load_base(snapshot_base(base, out)[0])
    d = model.config.domain_index("molecule")

    def graphs(frames):
        return [record_to_graph(r, model.config.cutoff, d) for r in D.records_from_atoms(frames)]

    before = errors(predict_graphs(model, graphs(test)))
    e0, info = D.refit_reference_energies(model, graphs(pool[:100]), d)
    import torch

    with torch.no_grad():
        model.atomic_energies[d] = torch.as_tensor(e0)
    after = errors(predict_graphs(model, graphs(test)))
    return {"zero_shot": before, "e0_refit_only": after, "e0_fit": info}


def report(out: Path, png: Path | None = None) -> str:
    """Markdown table (test MAE: forces meV/Å, energy meV/atom) and a log-log plot of MAE against size."""
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    sizes = sorted({r["size"] for r in rows})
    names = list(dict.fromkeys(r["method"] for r in rows))
    methods = [m for m in METHODS if m in names] + [m for m in names if m not in METHODS]
    steps = {r["method"]: r.get("max_steps") for r in rows}
    cell = {(r["method"], r["size"]): r for r in rows}
    lines = ["| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for key, label in (("f_mae", "forces MAE (meV/Å)"), ("e_mae", "energy MAE (meV/atom)")):
        lines.append(f"| **{label}** |" + " |" * len(sizes))
        for m in methods:
            vals = [f"{cell[(m, n)][key]:.1f}" if (m, n) in cell else "-" for n in sizes]
            lines.append(f"| {m} ({steps[m]} steps) | " + " | ".join(vals) + " |")
    base_path = out / "base_model.json"
    if base_path.exists():  # the base model with only the E0 refit (on 100 frames): the starting point of every curve
        b = json.loads(base_path.read_text())["e0_refit_only"]
        lines.append(
            f"\nBase model without training (E0 refit only): forces {b['forces_mae_meV_per_A']:.1f} meV/Å, "
            f"energy {b['energy_mae_meV_per_atom']:.1f} meV/atom."
        )
    for path in sorted(out.glob("committee*-*.json")):
        c = json.loads(path.read_text())
        if c.get("bench_key", {}).get("base_sha256") != results.get("base_sha256") or "test_calibration" not in c:
            continue
        cal, t = c["test_calibration"], c["test"]
        lines.append(
            f"\nLoRA committee of {c['k']} at N={c['size']} ({c['max_steps']} steps each), {cal['n_structures']} test "
            f"structures: mean forces MAE {t['forces_mae_meV_per_A']:.1f} meV/Å, energy "
            f"{t['energy_mae_meV_per_atom']:.1f} meV/atom; Spearman(std, |error|) energy "
            f"{cal['energy_spearman']:.2f} (per structure), forces {cal['forces_spearman']:.2f} (per atom); mean std "
            f"{cal['forces_mean_std_meV_per_A']:.1f} vs mean error {cal['forces_mean_error_norm_meV_per_A']:.1f} "
            f"meV/Å (force vector norms), energy {cal['energy_mean_std_meV']:.1f} vs {cal['energy_mae_meV']:.1f} meV."
        )
    table = "\n".join(lines)
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in ((axes[0], "f_mae", "force MAE (meV/Å)"), (axes[1], "e_mae", "energy MAE (meV/atom)")):
            for m in methods:
                pts = sorted((n, cell[(m, n)][key]) for n in sizes if (m, n) in cell)
                style = {"marker": "o"} if m in METHODS else {"marker": "*", "markersize": 12, "linestyle": "none"}
                ax.plot(*zip(*pts), label=f"{m} ({steps[m]} steps)", **style)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("training structures")
            ax.set_ylabel(f"test {label}")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
        fig.suptitle(
            f"{NAME}, B3LYP/6-31G*, {results['n_test']} test frames; base: {results['base']} "
            f"(sha256 {results.get('base_sha256', '?')[:12]})",
            fontsize=9,
        )
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        fig.savefig(png, dpi=110)
        plt.close(fig)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_data = sub.add_parser("data")
    p_data.add_argument("--minutes", type=float, default=30.0, help="CPU-minute budget of this call")
    p_sweep = sub.add_parser("sweep")
    p_sweep.add_argument("--base", default="triscale-base")
    p_sweep.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p_sweep.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p_sweep.add_argument("--n-test", type=int, default=50)
    p_sweep.add_argument("--n-val", type=int, default=20)
    p_sweep.add_argument("--max-steps", type=int, default=400, help="optimizer steps per run (CPU budget)")
    p_sweep.add_argument("--epochs", type=int, default=200)
    p_sweep.add_argument("--label", default="", help="suffix of the run names, e.g. 'long' for a longer baseline")
    p_sweep.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_com = sub.add_parser("committee")
    p_com.add_argument("--base", default="triscale-base")
    p_com.add_argument("--size", type=int, default=100)
    p_com.add_argument("-k", type=int, default=4)
    p_com.add_argument("--n-test", type=int, default=50)
    p_com.add_argument("--n-val", type=int, default=20)
    p_com.add_argument("--max-steps", type=int, default=400)
    p_com.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_report = sub.add_parser("report")
    p_report.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_report.add_argument("--png", default=str(ROOT / "docs" / "img" / "finetune_curve.png"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.cmd == "data":
        generate_data(args.minutes)
    elif args.cmd == "sweep":
        out = Path(args.out)
        sweep(
            args.base, args.sizes, args.methods, args.n_test, args.n_val, args.max_steps, args.epochs, out, args.label
        )
        baseline = base_model_errors(args.base, out, args.n_test, args.n_val)
        (out / "base_model.json").write_text(json.dumps(baseline, indent=1))
        print(json.dumps({k: v for k, v in baseline.items() if k != "e0_fit"}, indent=1))
        print(report(out, None))
    elif args.cmd == "committee":
        summary = committee_run(args.base, args.size, args.k, args.n_test, args.n_val, args.max_steps, Path(args.out))
        print(json.dumps(summary, indent=1))
    else:
        print(report(Path(args.out), Path(args.png)))


if __name__ == "__main__":
    main()
