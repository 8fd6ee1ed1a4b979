"""Fine-tuning learning curve: force/energy MAE against training-set size for lora, heads, full and from scratch.

The data: malonaldehyde (C3H4O2, enol form ``OC=CC=O``; in neither RDKit's NCI ``first_5K.smi`` nor ase's g2, so
not in the pretraining set), geometries from GFN2-xTB Langevin MD at 300-700 K (five independent trajectories,
one frame every 25 steps of 0.5 fs), labelled with PySCF B3LYP/6-31G* (density fitting, grid level 1: ~3.5 CPU-s a frame): energy
(eV) and forces (eV/Å). The pretraining labels are GFN2-xTB, so this is also a change of level of theory.

Frames are labelled in a fixed random order, one JSON line each (``data/finetune-bench/<name>/labels.jsonl``), so a
killed run resumes and any prefix is a random sample; the first ``n_test`` labelled frames are the test set, the
training sets are nested prefixes of the rest.

    python benchmarks/finetune_curve.py data  [--minutes 30]     # generate/resume the DFT data (CPU-minutes, 1 thread)
    python benchmarks/finetune_curve.py sweep --base runs/pretrain-base/latest [--sizes 25 50 100 200 400]
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_data = sub.add_parser("data")
    p_data.add_argument("--minutes", type=float, default=30.0, help="CPU-minute budget of this call")
    args = parser.parse_args(argv)
    if args.cmd == "data":
        import torch

        torch.set_num_threads(1)
        generate_data(args.minutes)


if __name__ == "__main__":
    main()
