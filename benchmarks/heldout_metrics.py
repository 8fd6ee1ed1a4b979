"""Held-out accuracy of a pretrained model per domain, with parity plots (for the model card).

    python benchmarks/heldout_metrics.py [--model triscale-base] [--data data/pretrain] [--split test]
                                         [--plots docs/img]

Structures whose elements do not all occur in the model's training set are counted and left out (their reference
energies are unknown to the model), never silently scored.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def collect(model, graphs, batch_size: int = 32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(predicted, reference) arrays: energy per atom (eV), force components (eV/Å), stress (eV/Å³), dipole (e·Å)."""
    import torch

    from triscale.foundation import keys as K
    from triscale.foundation.graph import graph_to
    from triscale.foundation.training import batches, voigt_to_3x3

    pairs: dict[str, list] = {"energy": [], "forces": [], "stress": [], "dipole": []}
    for batch in batches(graphs, batch_size, None, shuffle=False):
        batch = graph_to(batch, torch.float32)
        has_stress = bool(torch.isfinite(batch[K.REF_STRESS]).any())
        out = model(batch, compute_forces=True, compute_stress=has_stress, create_graph=False)
        n = batch[K.NUM_ATOMS].double()
        pairs["energy"].append((out[K.ENERGY].detach() / n, batch[K.REF_ENERGY] / n))
        pairs["forces"].append((out[K.FORCES].detach().double().flatten(), batch[K.REF_FORCES].flatten()))
        if has_stress:
            pairs["stress"].append(
                (out[K.STRESS].detach().double().flatten(), voigt_to_3x3(batch[K.REF_STRESS]).flatten())
            )
        if K.DIPOLE in out:
            pairs["dipole"].append((out[K.DIPOLE].detach().double().flatten(), batch[K.REF_DIPOLE].flatten()))
    result = {}
    for kind, items in pairs.items():
        if not items:
            continue
        pred = torch.cat([p for p, _ in items]).numpy()
        ref = torch.cat([r for _, r in items]).numpy()
        keep = np.isfinite(ref)
        if keep.any():
            result[kind] = (pred[keep], ref[keep])
    return result


def parity_plot(pairs, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = {"energy": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³", "dipole": "e·Å"}
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 4))
    axes = np.atleast_1d(axes)
    for ax, (kind, (pred, ref)) in zip(axes, pairs.items()):
        ax.scatter(ref, pred, s=3, alpha=0.4)
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = np.mean(np.abs(pred - ref))
        ax.set_title(f"{kind}: MAE {mae:.3g} {units[kind]}")
        ax.set_xlabel(f"reference ({units[kind]})")
        ax.set_ylabel(f"TriScale ({units[kind]})")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mae(pairs, kind: str, scale: float = 1000.0) -> str:
    return f"{scale * np.mean(np.abs(pairs[kind][0] - pairs[kind][1])):.1f}" if kind in pairs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="triscale-base")
    parser.add_argument("--data", default="data/pretrain")
    parser.add_argument("--split", default="test")
    parser.add_argument("--plots", type=Path, default=None)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    import triscale
    from triscale.foundation import load_structure_dataset
    from triscale.foundation.training import record_to_graph

    model = triscale.load(args.model)
    known = set(model.config.elements or [])
    domains = model.config.domains
    by_domain: dict[str, list] = {d: [] for d in domains}
    excluded = {d: 0 for d in domains}
    # the model's own domains (a domain it lacks is refused by name); an energy-only domain (QM9's B3LYP
    # energies) has no force labels, which load as NaN and are left out of the force columns
    for record in load_structure_dataset(args.data, domains=domains, require_forces=False):
        if record.get("split") != args.split:
            continue
        domain = record["domain"]
        if not set(record["numbers"]) <= known:
            excluded[domain] += 1
            continue
        by_domain[domain].append(record_to_graph(record, model.config.cutoff, domains.index(domain)))

    print(f"\nHeld-out '{args.split}' split of {args.data} (groups never seen in training)\n")
    print(
        "| domain | structures | energy MAE (meV/atom) | force MAE (meV/Å) | force RMSE (meV/Å) "
        "| stress MAE (meV/Å³) | dipole MAE (e·Å) | excluded (unseen element) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for domain, graphs in by_domain.items():
        if not graphs:
            continue
        pairs = collect(model, graphs)

        rmse = (
            f"{1000 * np.sqrt(np.mean((pairs['forces'][0] - pairs['forces'][1]) ** 2)):.1f}"
            if "forces" in pairs
            else "-"
        )
        dip = f"{np.mean(np.abs(pairs['dipole'][0] - pairs['dipole'][1])):.3f}" if "dipole" in pairs else "-"
        print(
            f"| {domain} | {len(graphs)} | {_mae(pairs, 'energy')} | {_mae(pairs, 'forces')} | {rmse} "
            f"| {_mae(pairs, 'stress')} "
            f"| {dip} | {excluded[domain]} |"
        )
        if args.plots:
            args.plots.mkdir(parents=True, exist_ok=True)
            parity_plot(
                pairs, f"{args.model}: {domain} domain, {args.split} split", args.plots / f"parity_{domain}.png"
            )


if __name__ == "__main__":
    main()
