"""Retrospective active-learning benchmark on QM9 (B3LYP/6-31G(2df,p) HOMO-LUMO gaps as the "experiment").

For each seed a pool of ``--pool`` molecules (QM9 B3LYP geometries, from ``qm9pack``; not re-embedded) is drawn;
the goal is the largest gap. Labelling is a lookup of the precomputed B3LYP gap. Each molecule is encoded once with
the frozen ``triscale-base`` encoder and the features are shared by every acquisition function of that seed.

Compared, at 50/100/150/200 labels: the campaign engine (:mod:`triscale.tools.active_learning`, a 4-head committee
warm-started from the shipped ``gfn2-gap`` heads, fine-tuned each round) with UCB, EI, greedy and max-variance;
random selection; and greedy on the base model (the un-fine-tuned ``gfn2-gap`` committee's top B, no loop).
Reported: the fraction of the pool's top 1 % found and the best gap found. Also a prospective run with GFN2-xTB
as the live reference (``--prospective``).

    PYTHONPATH=. python benchmarks/active_learning.py --seeds 5 --out runs/al_bench

``qm9pack`` imports ``pkg_resources`` (gone from new setuptools), so its CSV files are read directly from the
installed package folder (``pip install triscale[qm9]``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HARTREE_EV = 27.211386245988
CHECKPOINTS = (50, 100, 150, 200)


def qm9_frame(n_rows: int | None = None):
    """The first part of QM9 from qm9pack's data folder (about 44k molecules; enough to draw pools from)."""
    import pandas as pd

    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("qm9pack is not installed: pip install 'triscale[qm9]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    cols = ["Index", "SMILES", "Elements", "XYZ_Ang", "HOMO_LUMO_gap_au"]
    return pd.read_csv(folder / "qm9_part1.csv", usecols=cols, nrows=n_rows)


def to_atoms(row):
    from ase import Atoms

    # a few rows write "0." (valid Python, not JSON): parse as a Python literal
    return Atoms(symbols=ast.literal_eval(row.Elements), positions=ast.literal_eval(row.XYZ_Ang))


def recovery(picked: list[int], gaps: np.ndarray, top: set[int]) -> float:
    return len(top.intersection(picked)) / len(top)


def run_seed(df, seed: int, pool: int, budget: int, batch: int, acqs: list[str], steps: int, workdir: Path) -> dict:
    from triscale.finetune.property import load_property_model
    from triscale.tools.active_learning import Campaign, CampaignRecipe, encode_pool

    rng = np.random.default_rng(seed)
    rows = df.iloc[np.sort(rng.choice(len(df), size=pool, replace=False))]
    structures = [to_atoms(r) for r in rows.itertuples()]
    names = [f"qm9_{i}" for i in rows.Index]
    gaps = rows.HOMO_LUMO_gap_au.to_numpy() * HARTREE_EV
    n_top = max(1, int(round(0.01 * pool)))
    top = set(np.argsort(-gaps)[:n_top].tolist())
    t0 = time.perf_counter()
    feats = encode_pool(structures)
    t_encode = time.perf_counter() - t0
    out: dict = {"seed": seed, "pool": pool, "top_threshold_eV": float(np.sort(gaps)[-n_top]), "encode_s": t_encode}
    out["pool_best_eV"] = float(gaps.max())
    # greedy on the base model: the shipped committee's top B, no labels used to re-rank
    base = load_property_model("gfn2-gap")
    from triscale.tools.active_learning import HeadCommittee

    committee = HeadCommittee(
        CampaignRecipe(warm_start="gfn2-gap", committee=len(base.members), budget=1, batch_size=1)
    )
    mu, _ = committee.predict(feats)
    order = np.argsort(-mu, kind="stable")
    out["base_greedy"] = {
        str(b): {"recovery": recovery(order[:b].tolist(), gaps, top), "best": float(gaps[order[:b]].max())}
        for b in CHECKPOINTS
        if b <= budget
    }
    out["base_spearman"] = float(__import__("scipy.stats").stats.spearmanr(mu, gaps).statistic)
    for acq in acqs:
        t0 = time.perf_counter()
        recipe = CampaignRecipe(
            name=f"qm9-{acq}-{seed}",
            out=str(workdir / f"seed{seed}-{acq}"),
            objective="gap_eV",
            goal="maximize",
            reference="lookup:qm9-b3lyp",
            budget=budget,
            batch_size=batch,
            acquisition=acq,
            committee=4,
            warm_start=None if acq == "random" else "gfn2-gap",
            steps=steps,
            seed=seed,
        )
        camp = Campaign(recipe, structures, names, labeller=lambda i, _a: float(gaps[i]), features=feats)
        camp.run()
        labelled = camp.labels()
        index_of = {int(rec["index"]): k for k, rec in enumerate(_order(camp))}
        seq = sorted(labelled, key=lambda i: index_of[i])  # in labelling order
        row = {}
        for b in CHECKPOINTS:
            if b <= budget:
                row[str(b)] = {"recovery": recovery(seq[:b], gaps, top), "best": float(gaps[seq[:b]].max())}
        rounds = camp.state["history"]
        maes = [(h["labels_spent"], h["mae_before"]) for h in rounds if h.get("mae_before") is not None]
        cov = [h["coverage90_before"] for h in rounds if h.get("coverage90_before") is not None]
        row["mae_before"] = maes
        row["coverage90_mean"] = float(np.mean(cov)) if cov else None
        row["best_curve"] = [(h["labels_spent"], h["best_value"]) for h in rounds]
        row["seconds"] = time.perf_counter() - t0
        out[acq] = row
        print(
            f"  seed {seed} {acq:12s} "
            + "  ".join(f"{b}: {row[str(b)]['recovery']:.2f}" for b in CHECKPOINTS if str(b) in row),
            flush=True,
        )
    return out


def _order(camp) -> list[dict]:
    from triscale.common.files import read_jsonl

    return read_jsonl(camp.out / "labels.jsonl")


def prospective(df, workdir: Path, n: int = 100, budget: int = 20, batch: int = 5) -> dict:
    """GFN2-xTB as the live reference on ``n`` small QM9 molecules (B3LYP geometries); afterwards every molecule's
    GFN2 gap is computed once to say where the campaign's best ranks."""
    from triscale.tools.active_learning import Campaign, CampaignRecipe, reference_value

    rng = np.random.default_rng(123)
    small = df[df.Elements.str.count("'") // 2 <= 14]
    rows = small.iloc[np.sort(rng.choice(len(small), size=n, replace=False))]
    structures = [to_atoms(r) for r in rows.itertuples()]
    names = [f"qm9_{i}" for i in rows.Index]
    recipe = CampaignRecipe(
        name="qm9-gfn2-prospective",
        out=str(workdir / "prospective"),
        objective="gap_eV",
        goal="maximize",
        reference="gfn2-xtb",
        budget=budget,
        batch_size=batch,
        acquisition="ucb",
        warm_start="gfn2-gap",
        steps=100,
    )
    t0 = time.perf_counter()
    camp = Campaign(recipe, structures, names)
    rep = camp.run()
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    truth = np.array([reference_value(a, "gap_eV", "gfn2-xtb") for a in structures])
    t_all = time.perf_counter() - t1
    labelled = camp.labels()
    found = sorted(labelled, key=lambda i: -labelled[i])
    rank_of = {int(i): r for r, i in enumerate(np.argsort(-truth))}
    top5 = set(np.argsort(-truth)[:5].tolist())
    return {
        "pool": n,
        "budget": budget,
        "campaign_wall_s": wall,
        "all_labels_s": t_all,
        "best_found_eV": labelled[found[0]],
        "best_found_rank_in_pool": rank_of[found[0]] + 1,
        "pool_best_eV": float(truth.max()),
        "top5_found": len(top5.intersection(labelled)),
        "rounds": [
            {k: h.get(k) for k in ("labels_spent", "best_value", "mae_before", "coverage90_before")}
            for h in rep["rounds"]
        ],
        "report": str(camp.out / "report.md"),
    }


def summarise(results: list[dict], acqs: list[str]) -> str:
    methods = ["random", "base_greedy"] + [a for a in acqs if a != "random"]
    lines = ["| method | " + " | ".join(f"top-1% @ {b}" for b in CHECKPOINTS) + " | best gap @ 100 (eV) |"]
    lines.append("|---|" + "---:|" * (len(CHECKPOINTS) + 1))
    for m in methods:
        cells = []
        for b in CHECKPOINTS:
            v = [r[m][str(b)]["recovery"] for r in results if m in r and str(b) in r[m]]
            cells.append(f"{np.mean(v):.2f} ± {np.std(v):.2f}" if v else "–")
        best = [r[m]["100"]["best"] for r in results if m in r and "100" in r[m]]
        cells.append(f"{np.mean(best):.3f}" if best else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_table(results: list[dict], acqs: list[str]) -> str:
    """Best gap found (mean over seeds, eV) and the model's error on new labels before training."""
    methods = ["random", "base_greedy"] + [a for a in acqs if a != "random"]
    lines = ["| method | " + " | ".join(f"best @ {b}" for b in CHECKPOINTS) + " | MAE before training (eV) |"]
    lines.append("|---|" + "---:|" * (len(CHECKPOINTS) + 1))
    for m in methods:
        cells = [f"{np.mean([r[m][str(b)]['best'] for r in results]):.3f}" for b in CHECKPOINTS]
        maes = [e for r in results for _, e in r[m].get("mae_before", [])] if m != "base_greedy" else []
        cells.append(f"{np.mean(maes):.3f}" if maes else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    pool_best = np.mean([r["pool_best_eV"] for r in results])
    lines.append(f"| (pool best) | {pool_best:.3f} |" + " |" * len(CHECKPOINTS))
    return "\n".join(lines)


def plot(results: list[dict], acqs: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for m in ["random"] + [a for a in acqs if a != "random"]:
        rec = [np.mean([r[m][str(b)]["recovery"] for r in results]) for b in CHECKPOINTS]
        a1.plot(CHECKPOINTS, rec, "o-", label=m)
        curves = [dict(r[m]["best_curve"]) for r in results]
        xs = sorted(curves[0])
        a2.plot(xs, [np.mean([c[x] for c in curves]) for x in xs], "-", label=m)
    rec = [np.mean([r["base_greedy"][str(b)]["recovery"] for r in results]) for b in CHECKPOINTS]
    a1.plot(CHECKPOINTS, rec, "k--", label="greedy, base model")
    a1.set_xlabel("labels spent")
    a1.set_ylabel("fraction of the pool's top 1 % found")
    a1.legend(fontsize=7)
    a2.axhline(np.mean([r["pool_best_eV"] for r in results]), color="k", lw=0.8, ls=":", label="pool best (mean)")
    a2.set_xlabel("labels spent")
    a2.set_ylabel("best B3LYP gap found (eV)")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0, help="Start at this seed (to continue a run).")
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--budget", type=int, default=200)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--acq", default="ucb,ei,greedy,max_variance,random")
    p.add_argument("--out", default=None, help="Write results.json (and the plot) here.")
    p.add_argument("--plot", default=None, help="PNG path for the recovery/best-found plot.")
    p.add_argument("--prospective", action="store_true", help="Also the GFN2-xTB live run (100 molecules, 20 labels).")
    p.add_argument("--from-results", default=None, help="Only print the tables and draw the plot of a results.json.")
    a = p.parse_args()
    acqs = a.acq.split(",")
    if a.from_results:
        saved = json.loads(Path(a.from_results).read_text())
        print(f"{len(saved['seeds'])} seeds; {saved['meta']}")
        print(summarise(saved["seeds"], acqs))
        print(best_table(saved["seeds"], acqs))
        if a.plot:
            plot(saved["seeds"], acqs, Path(a.plot))
        return
    t0 = time.perf_counter()
    df = qm9_frame()
    print(f"QM9 part 1: {len(df)} molecules ({time.perf_counter() - t0:.1f} s)", flush=True)
    results: list[dict] = []
    pro = None
    meta = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "date": time.strftime("%Y-%m-%d"),
    }

    def save() -> None:  # after every seed: a long run interrupted keeps what it measured
        if a.out:
            out = Path(a.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(
                json.dumps({"meta": meta, "seeds": results, "prospective": pro}, indent=1)
            )

    with tempfile.TemporaryDirectory() as tmp:
        if a.prospective:
            pro = prospective(df, Path(tmp))
            print(json.dumps(pro, indent=1), flush=True)
        for seed in range(a.first_seed, a.seeds):
            results.append(run_seed(df, seed, a.pool, a.budget, a.batch, acqs, a.steps, Path(tmp)))
            save()
            print(summarise(results, acqs), flush=True)
    save()
    if a.plot:
        plot(results, acqs, Path(a.plot))
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
