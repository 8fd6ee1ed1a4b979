"""Do the fine-tuning DEFAULTS learn? A development suite (to choose the defaults) and a separate test suite (never
tuned on) of small fine-tuning tasks labelled by real simulators at levels of theory the base model never saw
(its teachers: GFN2-xTB for molecules, CHGNet for materials).

Tasks (``TASKS``), each 40 test frames + a pool of 80 (training sets are nested prefixes: 20, 80):

    dev   ethanol       C2H6O     GFN1-xTB (tblite)
    dev   malonaldehyde C3H4O2    HF/3-21G (PySCF)
    dev   cu4           Cu fcc    EMT (ase), 4-atom cubic cell, periodic
    test  aspirin       C9H8O4    GFN1-xTB
    test  glycine       C2H5NO2   HF/3-21G
    test  cu3au         Cu3Au     EMT, L1_2 4-atom cubic cell, periodic

Frames: half rattles of the relaxed structure (Gaussian, sigma 0.03-0.12 Å), half snapshots of a short Langevin
MD (GFN1-xTB for the molecules, EMT for the crystals; 500 K), shuffled with a fixed seed; labels are energy (eV)
and forces (eV/Å). The data are cached as ``benchmarks/data/finetune_defaults/<task>.extxyz.gz`` (deterministic
given the seed).

    python benchmarks/finetune_defaults.py data                       # label (minutes, 1 thread)
    python benchmarks/finetune_defaults.py dev  [--sizes 20 80] [--candidates current new ...]
    python benchmarks/finetune_defaults.py test [--sizes 20 80]       # base vs the recipe's current defaults
    python benchmarks/finetune_defaults.py report                     # tables from the stored results

Every fine-tuning run is ``FinetuneRecipe(data=train file, method="lora", epochs=EPOCHS)`` plus the candidate's
overrides; the recipe's own random validation split is taken out of the training frames, as for a user. The score
is the force MAE on the task's 40 test frames, of the base model (E0 refit on nothing: forces do not depend on E0)
and of the exported adapter. ``dev`` runs ``CANDIDATES`` (the pre-2026-12 defaults ``OLD`` plus overrides:
selection on the validation force MAE, LoRA learning rate, EMA, no early stopping, a minimum validation size);
``test`` runs whatever the recipe's defaults are. Results: ``runs/finetune_defaults/<candidate>/<task>-<N>.json``
(cached; delete to rerun); the chosen defaults and the test table are in docs/finetuning.md §10.
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
DATA = ROOT / "benchmarks" / "data" / "finetune_defaults"
RUNS = ROOT / "runs" / "finetune_defaults"
SEED = 2026
N_TEST = 40
N_POOL = 80
EPOCHS = 60

# name: (suite, kind, builder argument, labeller)
TASKS = {
    "ethanol": ("dev", "molecule", "CCO", "gfn1"),
    "malonaldehyde": ("dev", "molecule", "OC=CC=O", "hf"),
    "cu4": ("dev", "crystal", "Cu", "emt"),
    "aspirin": ("test", "molecule", "CC(=O)Oc1ccccc1C(=O)O", "gfn1"),
    "glycine": ("test", "molecule", "NCC(=O)O", "hf"),
    "cu3au": ("test", "crystal", "Cu3Au", "emt"),
}
LEVELS = {"gfn1": "GFN1-xTB (tblite)", "hf": "HF/3-21G (PySCF)", "emt": "EMT (ase)"}


# ---------------------------------------------------------------------------------------------------------------
# data
def _molecule(smiles: str):
    from ase import Atoms
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=SEED)
    AllChem.MMFFOptimizeMolecule(mol)
    return Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], positions=mol.GetConformer().GetPositions())


def _crystal(formula: str):
    """The 4-atom cubic fcc cell (Cu) or its L1_2 ordering (Cu3Au); small cells keep the runs at a minute or so
    (at the 5 Å cutoff a 32-atom cell costs 13x an ethanol molecule)."""
    from ase.build import bulk

    if formula == "Cu3Au":
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True)
        atoms.numbers[0] = 79  # L1_2: Au on the corner site
        return atoms
    return bulk(formula, "fcc", cubic=True)


class _HF:
    """Energy (eV) and forces (eV/Å) from PySCF restricted Hartree-Fock, 3-21G basis."""

    def __call__(self, atoms):
        from ase.units import Bohr, Hartree
        from pyscf import gto, scf

        mol = gto.M(
            atom=[(int(z), tuple(p)) for z, p in zip(atoms.numbers, atoms.positions, strict=True)],
            basis="3-21g",
            unit="Angstrom",
            verbose=0,
        )
        mf = scf.RHF(mol)
        mf.conv_tol = 1e-8
        energy = mf.kernel()
        if not mf.converged:
            raise RuntimeError("SCF did not converge")
        grad = mf.nuc_grad_method().kernel()
        return energy * Hartree, -np.asarray(grad) * Hartree / Bohr


def _ase_calc(labeller: str):
    if labeller == "gfn1":
        from tblite.ase import TBLite

        return TBLite(method="GFN1-xTB", verbosity=0)
    from ase.calculators.emt import EMT

    return EMT()


def _label(atoms, labeller: str):
    if labeller == "hf":
        return _HF()(atoms)
    a = atoms.copy()
    a.calc = _ase_calc(labeller)
    return float(a.get_potential_energy()), np.asarray(a.get_forces())


def _geometries(kind: str, arg: str, labeller: str, n: int, seed: int):
    """n structures: half rattles of the relaxed structure, half Langevin MD snapshots (500 K)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.optimize import BFGS

    start = _molecule(arg) if kind == "molecule" else _crystal(arg)
    md_calc = "emt" if labeller == "emt" else "gfn1"  # HF tasks sample with GFN1-xTB, label with HF
    start.calc = _ase_calc(md_calc)
    if kind == "molecule":
        BFGS(start, logfile=None).run(fmax=0.02, steps=200)
    rng = np.random.default_rng(seed)
    frames = []
    n_rattle = n // 2
    for _ in range(n_rattle):
        a = start.copy()
        a.positions += rng.normal(0.0, rng.uniform(0.03, 0.12), size=a.positions.shape)
        frames.append(a)
    atoms = start.copy()
    atoms.calc = _ase_calc(md_calc)
    MaxwellBoltzmannDistribution(atoms, temperature_K=500, rng=rng)
    step = (0.5 if kind == "molecule" else 2.0) * units.fs
    dyn = Langevin(atoms, step, temperature_K=500, friction=0.02, rng=rng)
    dyn.run(40)
    while len(frames) < n:
        dyn.run(10)
        frames.append(atoms.copy())
    order = rng.permutation(len(frames))
    return [frames[i] for i in order]


def task_file(name: str) -> Path:
    return DATA / f"{name}.extxyz.gz"


def generate(name: str) -> Path:
    from ase import Atoms
    from ase.io import write

    path = task_file(name)
    if path.exists():
        return path
    suite, kind, arg, labeller = TASKS[name]
    t0 = time.process_time()
    seed = SEED + sorted(TASKS).index(name)
    out = []
    for i, a in enumerate(_geometries(kind, arg, labeller, N_TEST + N_POOL, seed)):
        energy, forces = _label(a, labeller)
        frame = Atoms(a.numbers, positions=np.round(a.positions, 8), cell=a.cell, pbc=a.pbc)
        frame.info["REF_energy"] = float(energy)
        frame.info["frame"] = i
        frame.arrays["REF_forces"] = np.asarray(forces)
        out.append(frame)
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gz")
    write(tmp, out, format="extxyz")
    os.replace(tmp, path)
    secs = time.process_time() - t0
    print(f"{name}: {len(out)} frames, {LEVELS[labeller]}, {secs:.0f} CPU-s", file=sys.stderr, flush=True)
    return path


def frames(name: str):
    from ase.io import read

    all_frames = read(generate(name), index=":", format="extxyz")
    return all_frames[:N_TEST], all_frames[N_TEST:]


def cmd_data(args) -> None:
    for name in args.tasks or TASKS:
        generate(name)


# ---------------------------------------------------------------------------------------------------------------
# runs
# The defaults before this benchmark (recipe of 2026-12): select on the weighted loss, lr 1e-2, patience 30, 10 %
# validation, no EMA, cosine schedule. Candidates override these explicitly so that "old" stays the old defaults.
OLD = {"lr": 1e-2, "select_on": "loss", "patience": 30, "min_val": 0, "ema_decay": None, "schedule": "cosine"}
CANDIDATES = {
    "old": {},
    "sel_forces": {"select_on": "forces"},
    "sel_forces_minval8": {"select_on": "forces", "min_val": 8},
    "sel_forces_lr3e-3": {"select_on": "forces", "lr": 3e-3},
    "sel_forces_lr1e-3": {"select_on": "forces", "lr": 1e-3},
    "sel_forces_lr3e-3_ema": {"select_on": "forces", "lr": 3e-3, "ema_decay": 0.99},
    "sel_forces_lr3e-3_nostop": {"select_on": "forces", "lr": 3e-3, "patience": None},
    "sel_forces_lr3e-3_nostop_ema_minval8": {
        "select_on": "forces",
        "lr": 3e-3,
        "patience": None,
        "ema_decay": 0.99,
        "min_val": 8,
    },
    "defaults": None,  # whatever the recipe's defaults are now (the test suite runs this)
}


def _graphs(frames_, base, domain: str):
    from triscale.finetune import data as D
    from triscale.foundation.training import record_to_graph

    tmp = RUNS / f"_eval-{os.getpid()}.extxyz"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    from ase.io import write

    write(tmp, frames_, format="extxyz")
    records = D.read_records(str(tmp))
    tmp.unlink()
    d = base.config.domains.index(domain)
    return [record_to_graph(r, base.config.cutoff, d) for r in records]


def force_mae(model, graphs) -> float:
    from triscale.finetune.trainer import errors, predict_graphs

    return errors(predict_graphs(model, graphs))["forces_mae_meV_per_A"]


def run_one(task: str, size: int, candidate: str, base_name: str = "triscale-base") -> dict:
    """Fine-tune on the first ``size`` pool frames with the candidate recipe; force MAE on the test frames."""
    import torch

    from triscale.finetune import FinetuneRecipe, attach_adapters, finetune
    from triscale.finetune.adapters import load_base

    torch.set_num_threads(1)
    tag = candidate if base_name == "triscale-base" else f"{candidate}@{base_name}"
    result_path = RUNS / tag / f"{task}-{size}.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    test, pool = frames(task)
    out = RUNS / tag / f"{task}-{size}"
    train_file = RUNS / "data" / f"{task}-{size}.extxyz"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    from ase.io import write

    write(train_file, pool[:size], format="extxyz")
    overrides = CANDIDATES[candidate]
    kw = {} if overrides is None else {**OLD, **overrides}
    recipe = FinetuneRecipe(
        data=str(train_file),
        out=str(out),
        base=base_name,
        method="lora",
        epochs=EPOCHS,
        progress=False,
        plots=False,
        **kw,
    )
    t0 = time.perf_counter()
    metrics = finetune(recipe, resume=False)
    seconds = time.perf_counter() - t0
    base, _ = load_base(base_name)
    domain = "material" if TASKS[task][1] == "crystal" else "molecule"
    graphs = _graphs(test, base, domain)
    base_mae = force_mae(base, graphs)
    tuned = attach_adapters(base, out)
    tuned_mae = force_mae(tuned, graphs)
    result = {
        "task": task,
        "suite": TASKS[task][0],
        "size": size,
        "candidate": candidate,
        "base": base_name,
        "recipe": {k: recipe.model_dump()[k] for k in OLD} | {"lr": recipe.learning_rate},
        "base_test_forces_mae": base_mae,
        "tuned_test_forces_mae": tuned_mae,
        "ratio": tuned_mae / base_mae,
        "best_epoch": metrics["best_epoch"],
        "epochs": metrics["epochs"],
        "stop_reason": metrics["stop_reason"],
        "exported": metrics.get("exported"),
        "verdict": metrics.get("verdict", {}).get("message"),
        "n_val": metrics.get("val", {}).get("n_structures", 0),
        "seconds": seconds,
    }
    result_path.write_text(json.dumps(result, indent=1))
    print(
        f"{candidate:38s} {task:14s} n={size:3d}  base {base_mae:6.1f}  tuned {tuned_mae:6.1f} meV/Å  "
        f"ratio {result['ratio']:.2f}  best {result['best_epoch']}/{result['epochs']}  {seconds:.0f}s",
        file=sys.stderr,
        flush=True,
    )
    return result


def _suite(name: str) -> list[str]:
    return [t for t, spec in TASKS.items() if spec[0] == name]


def cmd_dev(args) -> None:
    for candidate in args.candidates:
        for size in args.sizes:
            for task in args.tasks or _suite("dev"):
                run_one(task, size, candidate)


def cmd_test(args) -> None:
    for size in args.sizes:
        for task in args.tasks or _suite("test"):
            run_one(task, size, "defaults", args.base)


def cmd_report(args) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RUNS.glob("*/*.json"))]
    for suite in ("dev", "test"):
        sel = [r for r in rows if r["suite"] == suite and r.get("base", "triscale-base") == "triscale-base"]
        if not sel:
            continue
        tasks = sorted({(r["task"], r["size"]) for r in sel}, key=lambda x: (x[1], x[0]))
        cands = [c for c in CANDIDATES if any(r["candidate"] == c for r in sel)]
        head = "| candidate | " + " | ".join(f"{t} {n}" for t, n in tasks) + " | geo. mean |"
        print(f"\n{suite} suite: test force MAE ratio fine-tuned / base (lower is better)\n")
        print(head)
        print("|" + "---|" * (len(tasks) + 2))
        base_row = {(r["task"], r["size"]): r["base_test_forces_mae"] for r in sel}
        print("| base MAE (meV/Å) | " + " | ".join(f"{base_row[k]:.0f}" for k in tasks) + " | |")
        for c in cands:
            by = {(r["task"], r["size"]): r for r in sel if r["candidate"] == c}
            ratios = [by[k]["ratio"] if k in by else None for k in tasks]
            done = [x for x in ratios if x is not None]
            gm = float(np.exp(np.mean(np.log(done)))) if done else float("nan")
            cells = " | ".join("" if x is None else f"{x:.2f}" for x in ratios)
            print(f"| {c} | {cells} | {gm:.2f} |")

    for base in sorted({r.get("base", "triscale-base") for r in rows if r["candidate"] == "defaults"}):
        _report_defaults([r for r in rows if r["candidate"] == "defaults" and r.get("base", "triscale-base") == base],
                         base)  # fmt: skip


def _report_defaults(rows: list[dict], base: str) -> None:
    test_rows = [r for r in rows if r["suite"] == "test"]
    if test_rows:
        print(f"\ntest suite, the recipe's defaults (lora, epochs 60) on {base}: force MAE on 40 test frames\n")
        print("| task | level | N | base (meV/Å) | fine-tuned (meV/Å) | ratio | best epoch / run | exported |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(test_rows, key=lambda r: (r["size"], r["task"])):
            level = LEVELS[TASKS[r["task"]][3]]
            print(
                f"| {r['task']} | {level} | {r['size']} | {r['base_test_forces_mae']:.1f} | "
                f"{r['tuned_test_forces_mae']:.1f} | {r['ratio']:.2f} | {r['best_epoch']}/{r['epochs']} | "
                f"{r['exported']} |"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("--tasks", nargs="*")
    for name, help_ in (("dev", "candidates on the dev suite"), ("test", "the current defaults on the test suite")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--sizes", nargs="*", type=int, default=[20, 80])
        q.add_argument("--tasks", nargs="*")
        if name == "test":
            q.add_argument("--base", default="triscale-base", help="the base model fine-tuned (default triscale-base)")
        if name == "dev":
            q.add_argument("--candidates", nargs="*", default=[c for c in CANDIDATES if c != "defaults"])
    sub.add_parser("report")
    args = p.parse_args(argv)
    {"data": cmd_data, "dev": cmd_dev, "test": cmd_test, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
