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
    python benchmarks/finetune_curve.py sweep --base runs/pretrain-base/latest [--sizes 25 50 100 200 400]
    python benchmarks/finetune_curve.py committee --base ... [--size 100 -k 4]   # calibration of a committee
    python benchmarks/finetune_curve.py report                    # table + plot from the stored sweep results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

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
    done = _read_labels(labels_path)
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


def _read_labels(path: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            rows[int(row["index"])] = row
    return rows


def write_extxyz() -> Path:
    """All labelled frames, in labelling order, as extxyz (REF_energy in info, REF_forces per atom)."""
    from ase import Atoms
    from ase.io import write

    geo = np.load(data_dir() / "geometries.npz")
    rows = sorted(_read_labels(data_dir() / "labels.jsonl").values(), key=lambda r: r["rank"])
    frames = []
    for row in rows:
        atoms = Atoms(geo["numbers"], positions=geo["positions"][row["index"]])
        atoms.info["REF_energy"] = row["energy"]
        atoms.info["frame"] = row["index"]
        atoms.arrays["REF_forces"] = np.asarray(row["forces"])
        frames.append(atoms)
    out = data_dir() / "frames.extxyz"
    write(out, frames, format="extxyz")
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


def _scratch_base(base: str, out: Path) -> str:
    """The base architecture with random weights (same config), saved once: the from-scratch baseline."""
    import torch

    from triscale.foundation import FoundationModel
    from triscale.foundation.checkpoints import load_checkpoint

    if (out / "config.json").exists():
        return str(out)
    config = load_checkpoint(base).config
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = FoundationModel(config)
    model.save_pretrained(str(out))
    return str(out)


def sweep(base: str, sizes, methods, n_test: int, n_val: int, max_steps: int, epochs: int, out: Path) -> list[dict]:
    """Train every (method, size) once (cached in OUT/<method>-<size>/metrics.json); returns rows for the table."""
    import torch

    from triscale.finetune import FinetuneRecipe, finetune

    torch.set_num_threads(1)
    write_extxyz()  # whatever is labelled so far; the order is fixed, so test/val stay the same as data grows
    test, val, pool = _split_frames(n_test, n_val)
    sizes = [n for n in sizes if n <= len(pool)]
    print(f"frames: {len(test)} test, {len(val)} val, pool {len(pool)}; sizes {sizes}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    scratch = _scratch_base(base, out / "scratch-base")
    rows = []
    for size in sizes:
        data = _write_split(out / "data" / f"train-{size}.extxyz", pool[:size], val, test)
        for method in methods:
            run_dir = out / f"{method}-{size}"
            done = run_dir / "metrics.json"
            if done.exists() and json.loads(done.read_text()).get("base") == base:
                metrics = json.loads(done.read_text())
            else:
                recipe = FinetuneRecipe(
                    data=str(data),
                    out=str(run_dir),
                    base=scratch if method == "scratch" else base,
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
                metrics = finetune(recipe, resume=False)
                metrics["base"] = base
                metrics["wall_s"] = time.perf_counter() - t0
                done.write_text(json.dumps(metrics, indent=1))
            row = {
                "method": method,
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
    (out / "results.json").write_text(
        json.dumps(
            {"base": base, "n_test": len(test), "n_val": len(val), "level": LEVEL, "molecule": NAME, "rows": rows},
            indent=1,
        )
    )
    return rows


def committee_run(base: str, size: int, k: int, n_test: int, n_val: int, max_steps: int, out: Path) -> dict:
    """K LoRA adapters (seeds, bootstrap samples) on ``size`` frames: test errors of the mean and calibration."""
    from triscale.finetune import FinetuneRecipe, finetune

    test, val, pool = _split_frames(n_test, n_val)
    data = _write_split(out / "data" / f"train-{size}.extxyz", pool[:size], val, test)
    recipe = FinetuneRecipe(
        data=str(data),
        out=str(out / f"committee{k}-lora-{size}"),
        base=base,
        method="lora",
        split="data",
        committee=k,
        max_steps=max_steps,
        epochs=200,
        patience=40,
        progress=False,
        seed=SEED,
    )
    metrics = finetune(recipe, resume=False)
    summary = {k2: metrics[k2] for k2 in ("test", "test_calibration", "val", "val_calibration") if k2 in metrics}
    (out / f"committee{k}-{size}.json").write_text(json.dumps(summary, indent=1))
    return summary


def base_model_errors(base: str, out: Path, n_test: int, n_val: int) -> dict:
    """Test errors of the base model itself (after only the E0 refit on 100 training frames, and before it)."""
    from triscale.finetune import data as D
    from triscale.finetune.trainer import errors, load_base, predict_graphs
    from triscale.foundation.training import record_to_graph

    test, val, pool = _split_frames(n_test, n_val)
    model, _ = load_base(base)
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
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    cell = {(r["method"], r["size"]): r for r in rows}
    lines = ["| method | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for key, label in (("f_mae", "forces MAE (meV/Å)"), ("e_mae", "energy MAE (meV/atom)")):
        lines.append(f"| **{label}** |" + " |" * len(sizes))
        for m in methods:
            vals = [f"{cell[(m, n)][key]:.1f}" if (m, n) in cell else "-" for n in sizes]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
    base_path = out / "base_model.json"
    if base_path.exists():  # the base model with only the E0 refit (on 100 frames): the starting point of every curve
        b = json.loads(base_path.read_text())["e0_refit_only"]
        lines.append(
            f"\nBase model without training (E0 refit only): forces {b['forces_mae_meV_per_A']:.1f} meV/Å, "
            f"energy {b['energy_mae_meV_per_atom']:.1f} meV/atom."
        )
    table = "\n".join(lines)
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key, label in ((axes[0], "f_mae", "force MAE (meV/Å)"), (axes[1], "e_mae", "energy MAE (meV/atom)")):
            for m in methods:
                pts = sorted((n, cell[(m, n)][key]) for n in sizes if (m, n) in cell)
                ax.plot(*zip(*pts), marker="o", label=m)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training structures")
            ax.set_ylabel(f"test {label}")
            ax.legend()
        fig.suptitle(f"{NAME}, B3LYP/6-31G*, {results['n_test']} test frames; base: {results['base']}", fontsize=9)
        fig.tight_layout()
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
    p_sweep.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_com = sub.add_parser("committee")
    p_com.add_argument("--base", default="triscale-base")
    p_com.add_argument("--size", type=int, default=100)
    p_com.add_argument("-k", type=int, default=4)
    p_com.add_argument("--n-test", type=int, default=50)
    p_com.add_argument("--n-val", type=int, default=20)
    p_com.add_argument("--max-steps", type=int, default=300)
    p_com.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_report = sub.add_parser("report")
    p_report.add_argument("--out", default=str(ROOT / "runs" / "finetune-bench"))
    p_report.add_argument("--png", default=str(ROOT / "docs" / "finetune_curve.png"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.cmd == "data":
        generate_data(args.minutes)
    elif args.cmd == "sweep":
        out = Path(args.out)
        sweep(args.base, args.sizes, args.methods, args.n_test, args.n_val, args.max_steps, args.epochs, out)
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
