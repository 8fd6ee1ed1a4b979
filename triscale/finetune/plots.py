"""PNG plots of a fine-tuning run: energy and force parity, learning curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def parity_plot(predictions: dict[str, dict[str, np.ndarray]], png_path: str | Path, title: str = "") -> Path:
    """Energy (per atom, relative to the reference mean) and force-component parity, one colour per split.

    ``predictions[split]`` holds ``energy``, ``ref_energy``, ``n_atoms`` (per structure) and ``forces``,
    ``ref_forces`` (flattened components); optional ``energy_std`` draws error bars (committees).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    all_ref = np.concatenate([p["ref_energy"] / p["n_atoms"] for p in predictions.values()])
    offset = float(np.nanmean(all_ref)) if all_ref.size else 0.0
    for split, p in predictions.items():
        e_ref = p["ref_energy"] / p["n_atoms"] - offset
        e_pred = p["energy"] / p["n_atoms"] - offset
        mae_e = 1000 * np.nanmean(np.abs(e_pred - e_ref))
        yerr = p["energy_std"] / p["n_atoms"] if "energy_std" in p else None
        axes[0].errorbar(e_ref, e_pred, yerr=yerr, fmt=".", ms=4, alpha=0.7, label=f"{split} ({mae_e:.1f} meV/atom)")
        if p["forces"].size:
            ref_f, pred_f = np.ravel(p["ref_forces"]), np.ravel(p["forces"])
            mae_f = 1000 * np.nanmean(np.abs(pred_f - ref_f))
            axes[1].plot(ref_f, pred_f, ".", ms=2, alpha=0.5, label=f"{split} ({mae_f:.0f} meV/Å)")
    for ax, label in zip(axes, ["energy - mean (eV/atom)", "force component (eV/Å)"], strict=False):
        lo, hi = ax.get_xlim()
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.legend(fontsize=7, title="MAE", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def learning_curve(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Train and validation MAE (energy, forces) and the loss against epoch, from ``metrics.jsonl``."""
    import json

    plt = _pyplot()
    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    panels = [("energy", "meV/atom"), ("forces", "meV/Å"), ("loss", "")]
    for ax, (kind, unit) in zip(axes, panels, strict=False):
        keys = sorted({k for r in rows for k in r if (kind in k and ("mae" in k or kind == "loss"))})
        if kind == "energy":  # per atom only (the per-structure MAE has another scale)
            keys = [k for k in keys if k.endswith("per_atom")]
        for key in keys:
            pts = [(r["epoch"], r[key]) for r in rows if key in r and r[key] is not None]
            if pts:
                xs, ys = zip(*pts, strict=False)
                ax.plot(xs, ys, label=key, marker="." if key.startswith("val") else None)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{kind} {unit}".strip())
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def property_parity_plot(
    predictions: dict[str, tuple[np.ndarray, np.ndarray]], png_path: str | Path, name: str, unit: str
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for split, (ref, pred) in predictions.items():
        ax.plot(ref, pred, ".", label=f"{split} (MAE {np.mean(np.abs(pred - ref)):.3g} {unit})")
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel(f"reference {name} {unit}")
    ax.set_ylabel(f"predicted {name} {unit}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)
