"""Held-out accuracy, calibration and speed of a property-head committee (default: the shipped ``gfn2-gap``).

    python benchmarks/property_heads.py [--model gfn2-gap] [--data data/observables/observables.extxyz]
                                        [--split test] [--plot docs/img/gap_parity.png] [--timing 50]

Scores the committee mean against the GFN2-xTB labels of the chosen split (molecules neither the encoder nor the
heads trained on), next to the trivial baseline (the training mean); ranks errors by committee spread (Spearman);
checks the 90 % conformal interval's coverage overall and per molecule size (an out-of-distribution shift: the
heads were calibrated on the validation molecules, whose sizes match the test set's, not the bins'); and times the
committee against GFN2-xTB itself (tblite) on the same molecules, one thread, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def evaluate(model: str, data: str, split: str) -> dict:
    from ase.io import read

    from triscale.finetune.property import committee_errors, load_property_model

    committee = load_property_model(model)
    frames = read(data, ":")
    train_mean = float(np.mean([f.info[committee.name] for f in frames if f.info["split"] == "train"]))
    chosen = [f for f in frames if f.info["split"] == split]
    ref = np.array([f.info[committee.name] for f in chosen])
    mean, std = committee.predict(chosen, return_std=True)
    err = np.abs(mean - ref)
    lo, hi = committee.interval(mean, std)
    covered = (ref >= lo) & (ref <= hi)
    heavy = np.array([int((f.numbers > 1).sum()) for f in chosen])
    bins = {"1-9 heavy atoms": heavy < 10, "10-19": (heavy >= 10) & (heavy < 20), "20+": heavy >= 20}
    exp_lo, exp_hi = committee.conformal.expected_coverage(len(ref))
    return {
        "model": model,
        "split": split,
        "n_structures": len(ref),
        "n_molecules": len({f.info["group"] for f in chosen}),
        "unit": committee.unit,
        **committee_errors(ref, mean, std),  # mae, rmse, r2, mean_std, spearman_std_error
        "baseline_mae": float(np.abs(ref - train_mean).mean()),
        "coverage_90": float(covered.mean()),
        "coverage_expected_range_99": [exp_lo, exp_hi],
        "mean_interval_width": float((hi - lo).mean()),
        "by_size": {
            name: {
                "n": int(m.sum()),
                "mae": float(err[m].mean()),
                "mean_std": float(std[m].mean()),
                "coverage_90": float(covered[m].mean()),
            }
            for name, m in bins.items()
            if m.any()
        },
        "_pairs": (ref, mean, std),
    }


def timing(model: str, data: str, split: str, n: int) -> dict:
    """Seconds per molecule: the committee (batched and one at a time) against a GFN2-xTB calculation."""
    import torch
    from ase.io import read

    from triscale.finetune.property import load_property_model
    from triscale.quantum.electronic import electronic_structure

    torch.set_num_threads(1)
    committee = load_property_model(model)
    chosen = [f for f in read(data, ":") if f.info["split"] == split][:n]
    committee.predict(chosen[:2])  # warm-up
    t = time.perf_counter()
    committee.predict(chosen)
    batched = (time.perf_counter() - t) / len(chosen)
    t = time.perf_counter()
    for atoms in chosen:
        committee.predict([atoms])
    single = (time.perf_counter() - t) / len(chosen)
    t = time.perf_counter()
    for atoms in chosen:
        electronic_structure(atoms, "gfn2-xtb", use_cache=False)
    xtb = (time.perf_counter() - t) / len(chosen)
    return {
        "n_molecules": len(chosen),
        "committee_batched_s": batched,
        "committee_single_s": single,
        "gfn2_xtb_s": xtb,
        "speedup_batched": xtb / batched,
        "speedup_single": xtb / single,
    }


def parity_plot(ref, mean, std, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    sc = ax.scatter(ref, mean, c=std, s=8, cmap="viridis")
    lim = [min(ref.min(), mean.min()) - 0.2, max(ref.max(), mean.max()) + 0.2]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set(xlim=lim, ylim=lim, xlabel="GFN2-xTB gap (eV)", ylabel="predicted gap (eV)", title=title)
    fig.colorbar(sc, ax=ax, label="committee std (eV)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gfn2-gap")
    parser.add_argument("--data", default="data/observables/observables.extxyz")
    parser.add_argument("--split", default="test")
    parser.add_argument("--plot")
    parser.add_argument("--timing", type=int, default=50, help="molecules to time (0: skip)")
    args = parser.parse_args()
    result = evaluate(args.model, args.data, args.split)
    ref, mean, std = result.pop("_pairs")
    if args.plot:
        parity_plot(ref, mean, std, args.plot, f"{args.model}: {args.split} split, MAE {result['mae']:.2f} eV")
    if args.timing:
        result["timing"] = timing(args.model, args.data, args.split, args.timing)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
