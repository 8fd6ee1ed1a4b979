"""Split-conformal intervals on an adapter committee: the atomistic path of ``triscale.uncertainty``.

Data: the fine-tuning benchmark's malonaldehyde frames (GFN2-xTB MD geometries labelled with B3LYP/6-31G*; made by
``benchmarks/finetune_curve.py data``, in ``data/finetune-bench/malonaldehyde/frames.extxyz``). The first 50
frames are that benchmark's test set and the next 20 its validation set (early stopping); the committee (K LoRA
adapters, bootstrap samples, different seeds) trains on the next ``--size`` frames. The frames after those were
never seen by the fine-tuning: they are shuffled (seed 0) and split in half into a conformal **calibration** set
and a **test** set; the 50 benchmark test frames join the test set.

Scores: energy ``|E - E_ref| / (energy_std + eps)`` per structure, and force components
``|F - F_ref| / (forces_std + eps)`` (every atom and component pooled, so the force coverage is marginal over
components, and the printed sampling range, which treats components as independent, is too narrow), and per frame
the maximum of that force score over atoms and components (``forces_frame_max``: a band that holds for every
component of a frame at once; frames are exchangeable, so its range is right), each compared with plain absolute
residuals. Prints the coverage at 80/90/95 % with its beta-binomial
range, the mean interval widths, and the Spearman correlation of std and error.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/committee_conformal.py [--size 50 -k 4 --max-steps 150]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAMES = ROOT / "data" / "finetune-bench" / "malonaldehyde" / "frames.extxyz"
N_TEST, N_VAL = 50, 20


def train_committee(base: str, size: int, k: int, max_steps: int, out: Path) -> Path:
    from ase.io import read, write

    from triscale.finetune import FinetuneRecipe, finetune

    adapter = out / f"committee{k}-lora-{size}"
    if (adapter / "metrics.json").exists():
        return adapter
    frames = read(FRAMES, index=":")
    test, val, train = frames[:N_TEST], frames[N_TEST : N_TEST + N_VAL], frames[N_TEST + N_VAL : N_TEST + N_VAL + size]
    split = []
    for name, part in (("train", train), ("val", val), ("test", test)):
        for a in part:
            a = a.copy()
            a.info["split"] = name
            split.append(a)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"train-{size}.extxyz"
    write(data, split, format="extxyz")
    recipe = FinetuneRecipe(
        data=str(data),
        out=str(adapter),
        base=base,
        method="lora",
        split="data",
        committee=k,
        max_steps=max_steps,
        epochs=200,
        patience=40,
        progress=False,
        seed=2026,
    )
    finetune(recipe, resume=False)
    return adapter


def committee_predictions(base: str, adapter: Path, frames) -> dict[str, np.ndarray]:
    import triscale

    calc = triscale.calculator(base, domain="molecule", adapters=[str(adapter)], dtype="float64")
    e, es, f, fs, e_ref, f_ref = [], [], [], [], [], []
    for a in frames:
        a = a.copy()
        a.calc = calc
        e.append(a.get_potential_energy())
        f.append(a.get_forces())
        es.append(calc.results["energy_std"])
        fs.append(calc.results["forces_std"])
    for a in frames:
        e_ref.append(a.info["REF_energy"])
        f_ref.append(a.arrays["REF_forces"])
    return {
        "energy": np.array(e),
        "energy_std": np.array(es),
        "energy_ref": np.array(e_ref),
        "forces": np.stack(f),
        "forces_std": np.stack(fs),
        "forces_ref": np.stack(f_ref),
    }


def evaluate(cal: dict, test: dict) -> dict:
    from scipy.stats import spearmanr

    from triscale.uncertainty import SplitConformal, calibrate_committee, coverage_interval

    rows = {}
    for key in ("energy", "forces", "forces_frame_max"):
        base = key.removesuffix("_frame_max")
        if key == "forces_frame_max":  # one score per frame: max over atoms and components (exchangeable frames)
            p_c, s_c, t_c = cal[base], cal[base + "_std"], cal[base + "_ref"]
            p_t, s_t, t_t = test[base], test[base + "_std"], test[base + "_ref"]
            norm = SplitConformal.calibrate(p_c, t_c, s_c, reduce="max", eps=1e-6)
            plain = SplitConformal.calibrate(p_c, t_c, reduce="max")
            rows[key] = {"n_cal": len(p_c), "n_test": len(p_t), "levels": {}}
            for level in (0.8, 0.9, 0.95):
                alpha = 1 - level
                lo, hi = coverage_interval(len(p_c), len(p_t), alpha, 0.99)
                rows[key]["levels"][level] = {
                    "normalised_coverage": float(norm.covers(p_t, t_t, s_t, alpha).mean()),
                    "normalised_mean_width": float(2 * np.mean(norm.half_width(s_t, alpha, shape=p_t.shape))),
                    "plain_coverage": float(plain.covers(p_t, t_t, alpha=alpha).mean()),
                    "plain_width": float(2 * plain.half_width(alpha=alpha)),
                    "expected_range": [lo, hi],
                }
            continue
        p_c, s_c, t_c = (cal[key].ravel(), cal[key + "_std"].ravel(), cal[key + "_ref"].ravel())
        p_t, s_t, t_t = (test[key].ravel(), test[key + "_std"].ravel(), test[key + "_ref"].ravel())
        err = np.abs(p_t - t_t)
        rows[key] = {
            "n_cal": len(p_c),
            "n_test": len(p_t),
            "mae": float(err.mean()),
            "mean_std": float(s_t.mean()),
            "spearman_std_error": float(spearmanr(s_t, err).statistic),
            "levels": {},
        }
        norm = calibrate_committee(p_c, s_c, t_c)
        plain = SplitConformal.calibrate(p_c, t_c)
        for level in (0.8, 0.9, 0.95):
            alpha = 1 - level
            lo, hi = coverage_interval(len(p_c), len(p_t), alpha, 0.99)
            rows[key]["levels"][level] = {
                "normalised_coverage": float(norm.covers(p_t, t_t, s_t, alpha).mean()),
                "normalised_mean_width": float(2 * np.mean(norm.half_width(s_t, alpha))),
                "plain_coverage": float(plain.covers(p_t, t_t, alpha=alpha).mean()),
                "plain_width": float(2 * plain.half_width(alpha=alpha)),
                "expected_range": [lo, hi],
                "coverage_of_mean_pm_2std": float(np.mean(err <= 2 * s_t)) if level == 0.95 else None,
            }
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="triscale-base")
    p.add_argument("--size", type=int, default=50)
    p.add_argument("-k", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=150)
    p.add_argument("--out", default=str(ROOT / "runs" / "uq-committee"))
    a = p.parse_args()
    import torch
    from ase.io import read

    torch.set_num_threads(1)
    out = Path(a.out)
    adapter = train_committee(a.base, a.size, a.k, a.max_steps, out)
    frames = read(FRAMES, index=":")
    unseen = frames[N_TEST + N_VAL + a.size :]
    order = np.random.default_rng(0).permutation(len(unseen))
    half = len(unseen) // 2
    cal_frames = [unseen[i] for i in order[:half]]
    test_frames = [unseen[i] for i in order[half:]] + frames[:N_TEST]
    res = evaluate(
        committee_predictions(a.base, adapter, cal_frames), committee_predictions(a.base, adapter, test_frames)
    )
    (out / "conformal.json").write_text(json.dumps(res, indent=1))
    print(f"{a.k}-adapter LoRA committee on {a.size} malonaldehyde frames (B3LYP/6-31G*), base {a.base}")
    print(
        "| target | level | normalised (std) coverage | mean width | plain coverage | width | expected range (99 %) |"
    )
    print("|---|---|---|---|---|---|---|")
    for key, unit in (("energy", "eV"), ("forces", "eV/Å"), ("forces_frame_max", "eV/Å")):
        r = res[key]
        for level, v in r["levels"].items():
            print(
                f"| {key} ({r['n_cal']} cal / {r['n_test']} test) | {level:.0%} | {v['normalised_coverage']:.1%} | "
                f"{v['normalised_mean_width']:.3g} {unit} | {v['plain_coverage']:.1%} | "
                f"{v['plain_width']:.3g} {unit} | "
                f"{v['expected_range'][0]:.1%}-{v['expected_range'][1]:.1%} |"
            )
        if "mae" not in r:
            continue
        print(
            f"  {key}: MAE {r['mae']:.3g} {unit}, mean committee std {r['mean_std']:.3g} {unit}, "
            f"Spearman(std, |error|) {r['spearman_std_error']:.2f}; "
            f"|error| <= 2 std for {r['levels'][0.95]['coverage_of_mean_pm_2std']:.1%}"
        )


if __name__ == "__main__":
    main()
