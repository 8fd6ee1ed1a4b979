"""Hamiltonian-learning benchmark: QH9-style metrics of the shipped heads and the SCF acceleration they give.

    python benchmarks/hamiltonian.py                      # both parts, ~3 min on one core
    python benchmarks/hamiltonian.py --skip-scf --conformers 3 --json out.json

Part 1 (``gfn2-hcno``): fresh rattled/rotated conformers (a seed the training never used) of (a) the molecules the
head never saw (its molecule-wise test split) and (b) molecules it was trained on; labels from tblite GFN2-xTB.
Metrics as in QH9 (H MAE, occupied orbital-energy MAE and |cos| of occupied orbital coefficients from H C = S C ε
with the true S; plus the HOMO-LUMO gap error), next to an on-site-mean baseline and the published QHNet numbers on
QH9 — a different dataset (B3LYP/def2-SVP on QM9 molecules) and a harder target, so the rows are context, not a
like-for-like comparison.

Part 2 (``b3lyp-water``): PySCF B3LYP/6-31G SCF cycles on fresh water conformers from the default ``minao``,
``atom`` and ``huckel`` guesses and from the density of the predicted Fock matrix.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from ase import Atoms  # noqa: E402

EH_TO_MEV = 27211.386245988
# Yu et al., "QH9: A Quantum Hamiltonian Prediction Benchmark for QM9 Molecules", NeurIPS 2023 Datasets and
# Benchmarks (arXiv:2306.09549), QHNet rows of the main results table; H and eps in 1e-6 Eh, psi in %.
QH9_PUBLISHED = [
    ("QHNet, QH9-stable-id (B3LYP/def2-SVP, QM9 molecules)", 76.31, 798.51, 95.85),
    ("QHNet, QH9-stable-ood (larger molecules held out)", 72.11, 644.17, 93.68),
]


def _molecules(names: list[str]) -> dict[str, Atoms]:
    from ase.build import molecule

    from triscale.quantum.data import smiles_molecules

    out = {}
    for n in names:
        if n.startswith("smiles:"):
            out.update(smiles_molecules([n[len("smiles:") :]]))
        else:
            out[n] = molecule(n)
    return out


def qh9_part(model_name: str, n_conf: int, seed: int, n_train_mols: int) -> dict:
    import torch

    from triscale.quantum.data import generate
    from triscale.quantum.hamiltonian import load_hamiltonian_model
    from triscale.quantum.metrics import aggregate, qh9_metrics
    from triscale.quantum.train import onsite_mean_baseline

    torch.set_num_threads(1)
    model = load_hamiltonian_model(model_name)
    meta = model.config.metadata["metrics"]
    rng = np.random.default_rng(seed)
    seen = sorted(meta.get("train_molecules") or _train_names(meta))
    sets = {
        "unseen molecules": meta["test_molecules"],
        "unseen conformers of training molecules": sorted(rng.permutation(seen)[:n_train_mols].tolist()),
    }
    out = {"model": model_name, "method": model.config.method, "rows": {}}
    for label, names in sets.items():
        data = generate(
            _molecules(names), n_conf, model.config.basis, seed=seed, include_equilibrium=False, log=lambda *_: None
        )
        rows, base, t_pred = [], [], 0.0
        for z, pos, f, s, n_occ in zip(data.numbers, data.positions, data.fock, data.overlap, data.n_occ):
            atoms = Atoms(numbers=z, positions=pos)
            t0 = time.perf_counter()
            pred = model.fock(atoms)
            t_pred += time.perf_counter() - t0
            rows.append(qh9_metrics(pred, f, s, n_occ))
            base.append(qh9_metrics(onsite_mean_baseline(model, z, pos), f, s, n_occ))
        out["rows"][label] = aggregate(rows) | {
            "n_molecules": len(names),
            "ms_per_prediction": 1e3 * t_pred / len(rows),
        }
        out["rows"][f"{label}: on-site-mean baseline"] = aggregate(base)
    # reference cost for the speed column
    from triscale.quantum.electronic import electronic_structure

    atoms = _molecules(meta["test_molecules"][:5])
    t0 = time.perf_counter()
    for a in atoms.values():
        electronic_structure(a, "gfn2-xtb", use_cache=False)
    out["ms_per_tblite_call"] = 1e3 * (time.perf_counter() - t0) / len(atoms)
    return out


def _train_names(meta: dict) -> list[str]:
    from triscale.quantum.data import g2_molecules, smiles_molecules, unique_molecules

    every = unique_molecules(g2_molecules(max_atoms=18), smiles_molecules(max_atoms=18))
    held = set(meta["test_molecules"]) | set(meta["val_molecules"])
    return [n for n in every if n not in held]


def scf_part(model_name: str, n: int, seed: int) -> dict:
    from ase.build import molecule

    from triscale.quantum.data import rattled_conformers
    from triscale.quantum.hamiltonian import load_hamiltonian_model
    from triscale.quantum.scf import compare_guesses

    model = load_hamiltonian_model(model_name)
    basis = model.config.basis.split(":", 1)[1]
    functional = model.config.method.split("/")[1]
    mol_name = model.config.metadata["recipe"]["molecules"][0]
    confs = rattled_conformers(molecule(mol_name), n, np.random.default_rng(seed), (0.02, 0.15))
    runs = [compare_guesses(a, model.fock(a), basis, functional) for a in confs]
    guesses = list(runs[0])
    summary = {}
    for g in guesses:
        cyc = np.array([r[g]["cycles"] for r in runs])
        summary[g] = {
            "mean_cycles": float(cyc.mean()),
            "min": int(cyc.min()),
            "max": int(cyc.max()),
            "mean_seconds": float(np.mean([r[g]["seconds"] for r in runs])),
            "max_abs_dE_vs_minao_Eh": float(max(abs(r[g]["energy_Eh"] - r["minao"]["energy_Eh"]) for r in runs)),
            "all_converged": all(r[g]["converged"] for r in runs),
        }
    return {"model": model_name, "method": model.config.method, "molecule": mol_name, "n": n, "guesses": summary}


def _print_qh9(res: dict) -> None:
    print(f"\n## Hamiltonian prediction, {res['model']} (labels: {res['method']}; fresh conformers)\n")
    print("| rows | H MAE (meV) | H MAE (µEh) | ε_occ MAE (meV) | ε_occ MAE (µEh) | ψ_occ cos (%) | gap MAE (meV) |")
    print("|---|---|---|---|---|---|---|")
    for label, r in res["rows"].items():
        print(
            f"| ours: {label} ({r['n']} structures) | {r['h_mae'] * EH_TO_MEV:.1f} | {r['h_mae'] * 1e6:.0f} | "
            f"{r['eps_occ_mae'] * EH_TO_MEV:.0f} | {r['eps_occ_mae'] * 1e6:.0f} | {100 * r['psi_cos']:.2f} | "
            f"{r['gap_err'] * EH_TO_MEV:.0f} |"
        )
    for label, h, e, psi in QH9_PUBLISHED:
        print(
            f"| published: {label} | {h * 1e-6 * EH_TO_MEV:.2f} | {h:.2f} | {e * 1e-6 * EH_TO_MEV:.1f} | {e:.2f} | "
            f"{psi:.2f} | – |"
        )
    first = next(iter(res["rows"].values()))
    print(
        f"\nprediction {first['ms_per_prediction']:.1f} ms/structure (encoder + head, 1 thread) vs tblite GFN2-xTB "
        f"{res['ms_per_tblite_call']:.1f} ms/structure"
    )


def _print_scf(res: dict) -> None:
    print(f"\n## SCF acceleration, {res['model']} ({res['method']}, {res['n']} fresh {res['molecule']} conformers)\n")
    print("| initial guess | mean SCF cycles | min–max | mean wall (s) | max |ΔE| vs minao (Eh) | all converged |")
    print("|---|---|---|---|---|---|")
    base = res["guesses"]["minao"]["mean_cycles"]
    for g, r in res["guesses"].items():
        name = "predicted Fock (ours)" if g == "predicted" else g
        print(
            f"| {name} | {r['mean_cycles']:.1f} ({r['mean_cycles'] / base:.2f}× minao) | {r['min']}–{r['max']} | "
            f"{r['mean_seconds']:.2f} | {r['max_abs_dE_vs_minao_Eh']:.1e} | {r['all_converged']} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gfn2-hcno")
    ap.add_argument("--scf-model", default="b3lyp-water")
    ap.add_argument("--conformers", type=int, default=5, help="fresh conformers per molecule (part 1)")
    ap.add_argument("--train-molecules", type=int, default=20, help="training molecules re-sampled (part 1)")
    ap.add_argument("--scf-n", type=int, default=10, help="fresh conformers for the SCF part")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--skip-scf", action="store_true")
    ap.add_argument("--skip-qh9", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = {}
    if not args.skip_qh9:
        out["qh9"] = qh9_part(args.model, args.conformers, args.seed, args.train_molecules)
        _print_qh9(out["qh9"])
    if not args.skip_scf:
        out["scf"] = scf_part(args.scf_model, args.scf_n, args.seed)
        _print_scf(out["scf"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
