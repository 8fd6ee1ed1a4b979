"""Train a Hamiltonian head on self-generated data: ``python -m triscale.quantum.train configs/quantum/<name>.yaml``.

The pretrained encoder is frozen, so its features are computed once per structure and the head trains on cached
features (minutes on one CPU thread). Molecules (not conformers) are split into train/validation/test, so the test
numbers are for molecules the head has never seen. The run keeps ``last.pt`` (resumable), ``best/`` (the head with
the lowest validation H MAE), ``log.jsonl`` and, at the end, ``metrics.json`` with QH9-style test metrics; with
``ship_to`` set, ``best/`` plus the metrics are copied there.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triscale.quantum.data import (
    HamiltonianData,
    g2_molecules,
    generate,
    load_dataset,
    save_dataset,
    smiles_molecules,
    unique_molecules,
)
from triscale.quantum.hamiltonian import HamiltonianConfig, HamiltonianModel, collate_samples, prepare_sample
from triscale.quantum.metrics import aggregate, qh9_metrics

__all__ = ["TrainRecipe", "train", "split_molecules", "evaluate", "calibrate_gap"]


@dataclass
class TrainRecipe:
    name: str = "gfn2-hcno"
    method: str = "gfn2-xtb"  # label method: gfn2-xtb | dft | hf
    basis: str = "gfn2-xtb"  # layout: gfn2-xtb | pyscf:<basis>
    functional: str = "b3lyp"
    elements: list[int] = field(default_factory=lambda: [1, 6, 7, 8])
    molecules: list[str] | None = None  # g2 names; None = every closed-shell g2 molecule of these elements
    max_atoms: int = 14
    extra_smiles: bool = False  # add data.EXTRA_SMILES (RDKit ETKDG) to the g2 molecules, duplicates dropped
    data: str = "data/quantum/gfn2-g2.npz"
    n_conformers: int = 24
    sigma_range: list[float] = field(default_factory=lambda: [0.02, 0.12])
    split: str = "molecules"  # molecules: n_test/n_val whole molecules held out; conformers: n_test/n_val structures
    test_molecules: list[str] | None = None  # None: n_test drawn with the seed
    n_test: int = 10
    n_val: int = 6
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_ratio: float = 0.02
    weight_decay: float = 0.0
    max_epochs: int = 400
    max_minutes: float = 30.0
    eval_every: int = 1
    out_dir: str = "runs/quantum/gfn2-hcno"
    ship_to: str | None = None
    num_threads: int = 1

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainRecipe:
        import yaml

        with open(path) as fh:
            return cls(**yaml.safe_load(fh))


def split_molecules(names: list[str], recipe: TrainRecipe) -> tuple[list[str], list[str], list[str]]:
    uniq = sorted(set(names))
    rng = np.random.default_rng(recipe.seed)
    if recipe.test_molecules:
        test = [n for n in recipe.test_molecules if n in uniq]
    else:
        test = sorted(rng.permutation(uniq)[: recipe.n_test].tolist())
    rest = [n for n in uniq if n not in test]
    val = sorted(rng.permutation(rest)[: recipe.n_val].tolist())
    train = [n for n in rest if n not in val]
    return train, val, test


def _samples(data: HamiltonianData, model: HamiltonianModel, log) -> list[dict[str, Any]]:
    """Prepared samples with cached encoder features and flat targets."""
    from ase import Atoms

    layout, cutoff = model.layout, model.config.pair_cutoff
    out = []
    t0 = time.monotonic()
    with torch.no_grad():
        for z, pos, f in zip(data.numbers, data.positions, data.fock):
            s = prepare_sample(z, pos, layout, cutoff)
            feats = model.encode(Atoms(numbers=z, positions=pos))
            s.update(s=feats[0].numpy(), v=feats[1].numpy(), target=f.reshape(-1).astype(np.float32))
            out.append(s)
    log(f"encoded {len(out)} structures in {time.monotonic() - t0:.1f} s")
    return out


@torch.no_grad()
def fit_statistics(model: HamiltonianModel, data: HamiltonianData) -> None:
    """On-site mean blocks per element (isotropic part: s-s entries, p-p trace/3 times I) and the target scale."""
    head, layout = model.head, model.layout
    b, ns = head.block, head.n_s
    acc = np.zeros((head.n_el, b, b))
    cnt = np.zeros(head.n_el)
    for z, f in zip(data.numbers, data.fock):
        ao_atom, ao_can = layout.canonical(z)
        for i, zi in enumerate(z):
            t = model.config.elements.index(int(zi))
            idx = np.nonzero(ao_atom == i)[0]
            blk = np.zeros((b, b))
            blk[np.ix_(ao_can[idx], ao_can[idx])] = f[np.ix_(idx, idx)]
            acc[t] += blk
            cnt[t] += 1
    mean = acc / np.maximum(cnt, 1)[:, None, None]
    pp = np.zeros((head.n_el, head.n_p, head.n_p))
    for t1 in range(head.n_p):
        for t2 in range(head.n_p):
            sl1, sl2 = slice(ns + 3 * t1, ns + 3 * t1 + 3), slice(ns + 3 * t2, ns + 3 * t2 + 3)
            pp[:, t1, t2] = np.trace(mean[:, sl1, sl2], axis1=1, axis2=2) / 3
    head.onsite_ss.copy_(torch.as_tensor(mean[:, :ns, :ns]))
    head.onsite_pp.copy_(torch.as_tensor(pp))
    # scale: RMS of the targets minus the on-site baseline
    model.head.scale.fill_(1.0)
    resid = []
    for z, pos, f in zip(data.numbers, data.positions, data.fock):
        base = onsite_mean_baseline(model, z, pos)
        resid.append((f - base).ravel())
    head.scale.fill_(float(np.sqrt(np.mean(np.concatenate(resid) ** 2))))


def onsite_mean_baseline(model: HamiltonianModel, numbers, positions) -> np.ndarray:
    """The on-site-mean-only prediction (what the head starts from; a reference in the metrics)."""
    layout, head = model.layout, model.head
    ao_atom, ao_can = layout.canonical(numbers)
    n = len(ao_atom)
    out = np.zeros((n, n))
    mean = head.onsite_mean().double().numpy()
    for i, zi in enumerate(numbers):
        idx = np.nonzero(ao_atom == i)[0]
        t = model.config.elements.index(int(zi))
        out[np.ix_(idx, idx)] = mean[t][np.ix_(ao_can[idx], ao_can[idx])]
    return out


@torch.no_grad()
def evaluate(
    model: HamiltonianModel, samples: list[dict[str, Any]], data: HamiltonianData, full: bool = True
) -> dict[str, float]:
    """H MAE (fast) or the full QH9 metric set over ``samples`` (aligned with ``data``)."""
    model.eval()
    rows, maes = [], []
    for k in range(0, len(samples), 32):
        chunk = samples[k : k + 32]
        batch = collate_samples(chunk, model.layout.block_size)
        flat = model(batch).double().numpy()
        off = 0
        for j, s in enumerate(chunk):
            n = int(s["n_ao"])
            pred = flat[off : off + n * n].reshape(n, n)
            off += n * n
            true = data.fock[k + j]
            maes.append(np.abs(pred - true).mean())
            if full:
                rows.append(qh9_metrics(pred, true, data.overlap[k + j], data.n_occ[k + j]))
    if full:
        return aggregate(rows)
    return {"h_mae": float(np.mean(maes)), "n": len(maes)}


def load_or_generate(recipe: TrainRecipe, log=print) -> HamiltonianData:
    """The recipe's data set: loaded from ``recipe.data``, or generated (seeded, so the same again) and saved."""
    if Path(recipe.data).exists():
        data = load_dataset(recipe.data)
        log(f"loaded {len(data)} structures from {recipe.data}")
        return data
    mols = g2_molecules(recipe.elements, recipe.max_atoms)
    if recipe.molecules:
        mols = {k: mols[k] for k in recipe.molecules}
    if recipe.extra_smiles:
        mols = unique_molecules(mols, smiles_molecules(seed=recipe.seed, max_atoms=recipe.max_atoms))
    basis = recipe.basis.split(":", 1)[1] if recipe.basis.startswith("pyscf:") else "def2-svp"
    data = generate(
        mols,
        recipe.n_conformers,
        recipe.method,
        recipe.seed,
        tuple(recipe.sigma_range),
        functional=recipe.functional,
        basis=basis,
        log=log,
    )
    save_dataset(data, recipe.data)
    return data


def split_indices(recipe: TrainRecipe, data: HamiltonianData, log=print) -> tuple[list[int], list[int], list[int]]:
    """Train/validation/test structure indices: whole molecules held out, or conformers for a one-molecule set."""
    if recipe.split == "conformers":
        perm = np.random.default_rng(recipe.seed).permutation(len(data)).tolist()
        idx_test, idx_val = sorted(perm[: recipe.n_test]), sorted(perm[recipe.n_test : recipe.n_test + recipe.n_val])
        idx_train = sorted(perm[recipe.n_test + recipe.n_val :])
        names = sorted(set(data.names))
        log(f"conformer split of {names}: {len(idx_train)} train, {len(idx_val)} val, {len(idx_test)} test")
        return idx_train, idx_val, idx_test
    train_m, val_m, test_m = split_molecules(data.names, recipe)
    log(f"molecules: {len(train_m)} train, {len(val_m)} val {val_m}, {len(test_m)} test {test_m}")
    pick = lambda ms: [i for i, n in enumerate(data.names) if n in ms]  # noqa: E731
    return pick(train_m), pick(val_m), pick(test_m)


def calibrate_gap(recipe: TrainRecipe, head: str | Path | None = None, alpha: float = 0.1, log=print) -> dict:
    """Split-conformal interval for the HOMO-LUMO gap a head's predicted Hamiltonian gives: absolute gap residuals
    on the recipe's validation structures (never trained on), checked on its test structures; written to
    ``HEAD/conformal.json`` where :func:`triscale.quantum.hamiltonian.gap_conformal` finds it."""
    from ase import Atoms, units

    from triscale.quantum.hamiltonian import CONFORMAL_FILE, load_hamiltonian_model, predict_hamiltonian
    from triscale.uncertainty import SplitConformal

    head = Path(head or recipe.ship_to)
    model = load_hamiltonian_model(head)
    data = load_or_generate(recipe, log)
    _, idx_val, idx_test = split_indices(recipe, data, log)

    def gaps(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        pred, ref = [], []
        for i in indices:
            p = predict_hamiltonian(Atoms(numbers=data.numbers[i], positions=data.positions[i]), model)
            n = data.n_occ[i]
            pred.append(p.gap_eV)
            ref.append((data.orbital_energies[i][n] - data.orbital_energies[i][n - 1]) * units.Hartree)
        return np.array(pred), np.array(ref)

    val_pred, val_ref = gaps(idx_val)
    test_pred, test_ref = gaps(idx_test)
    conformal = SplitConformal.calibrate(val_pred, val_ref, alpha=alpha, meta={"quantity": "gap_eV"})
    report = conformal.coverage_report(test_pred, test_ref)
    conformal.meta.update(
        calibrated_on=f"{len(idx_val)} validation structures ({recipe.split} split of {recipe.data})",
        val_gap_mae_eV=float(np.abs(val_pred - val_ref).mean()),
        test_gap_mae_eV=float(np.abs(test_pred - test_ref).mean()),
        test_coverage=report["coverage"],
        test_coverage_expected_range_99=report["expected_range_99"],
        n_test=len(idx_test),
    )
    (head / CONFORMAL_FILE).write_text(json.dumps(conformal.to_dict(), indent=1) + "\n")
    log(json.dumps({k: v for k, v in conformal.to_dict().items() if k != "scores"}))
    return conformal.to_dict()


def train(recipe: TrainRecipe, log=print) -> dict[str, Any]:
    torch.set_num_threads(recipe.num_threads)
    out = Path(recipe.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # ---- data
    data = load_or_generate(recipe, log)
    idx_train, idx_val, idx_test = split_indices(recipe, data, log)
    train_m, val_m, test_m = (sorted({data.names[i] for i in idx}) for idx in (idx_train, idx_val, idx_test))
    d_train, d_val, d_test = data.subset(idx_train), data.subset(idx_val), data.subset(idx_test)
    # ---- model
    cfg = HamiltonianConfig(basis=recipe.basis, elements=list(recipe.elements), method=data.method, **recipe.model)
    gen = torch.Generator().manual_seed(recipe.seed)
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        model = HamiltonianModel(cfg)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    fit_statistics(model, d_train)
    log(f"target scale {float(model.head.scale):.4f} Eh")
    s_train, s_val, s_test = (_samples(d, model, log) for d in (d_train, d_val, d_test))
    params = [p for p in model.head.parameters() if p.requires_grad]
    log(f"head parameters: {sum(p.numel() for p in params)}")
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    state = {"epoch": 0, "elapsed_s": 0.0, "best_val": math.inf, "history": []}
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.head.load_state_dict(ck["head"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        gen.set_state(ck["gen"])
        log(f"resumed at epoch {state['epoch']} ({state['elapsed_s'] / 60:.1f} min)")
    budget = recipe.max_minutes * 60
    t_start = time.monotonic() - state["elapsed_s"]
    scale = float(model.head.scale)
    while state["epoch"] < recipe.max_epochs and time.monotonic() - t_start < budget:
        model.train()
        frac = max((time.monotonic() - t_start) / budget, state["epoch"] / recipe.max_epochs)
        lr = recipe.lr * (recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        order = torch.randperm(len(s_train), generator=gen).tolist()
        losses = []
        for k in range(0, len(order), recipe.batch_size):
            batch = collate_samples([s_train[i] for i in order[k : k + recipe.batch_size]], model.layout.block_size)
            pred = model(batch)
            diff = (pred - batch["target"]) / scale
            loss = (diff**2).mean() + diff.abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            losses.append(loss.item())
        state["epoch"] += 1
        state["elapsed_s"] = time.monotonic() - t_start
        row = {"epoch": state["epoch"], "lr": lr, "loss": float(np.mean(losses)), "minutes": state["elapsed_s"] / 60}
        if state["epoch"] % recipe.eval_every == 0:
            val = evaluate(model, s_val, d_val, full=False)["h_mae"]
            row["val_h_mae_meV"] = val * 27211.386
            if val < state["best_val"]:
                state["best_val"] = val
                model.save(out / "best")
        state["history"].append(row)
        with open(out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        if state["epoch"] % 5 == 0 or state["epoch"] == 1:
            log(json.dumps(row))
        torch.save(
            {"head": model.head.state_dict(), "opt": opt.state_dict(), "state": state, "gen": gen.get_state()},
            out / "last.tmp",
        )
        (out / "last.tmp").replace(last)
    # ---- final evaluation with the best head
    from safetensors.torch import load_file

    model.head.load_state_dict(load_file(str(out / "best" / "head.safetensors")))
    t0 = time.monotonic()
    test = evaluate(model, s_test, d_test, full=True)
    t_pred = (time.monotonic() - t0) / max(len(s_test), 1)
    baseline_rows = [
        qh9_metrics(onsite_mean_baseline(model, z, p), f, s, n)
        for z, p, f, s, n in zip(d_test.numbers, d_test.positions, d_test.fock, d_test.overlap, d_test.n_occ)
    ]
    metrics = {
        "method": data.method,
        "basis": recipe.basis,
        "split": recipe.split,
        "test_indices": idx_test,
        "train_molecules": train_m,
        "val_molecules": val_m,
        "test_molecules": test_m,
        "n_train": len(d_train),
        "n_val": len(d_val),
        "n_test": len(d_test),
        "epochs": state["epoch"],
        "train_minutes": state["elapsed_s"] / 60,
        "best_val_h_mae_meV": state["best_val"] * 27211.386,
        "test": test,
        "test_onsite_mean_baseline": aggregate(baseline_rows),
        "seconds_per_test_structure_incl_metrics": t_pred,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    cfg.metadata = {"recipe": recipe.__dict__, "metrics": {k: v for k, v in metrics.items() if k != "test_indices"}}
    model.config = cfg
    model.save(out / "best")
    if recipe.ship_to:
        dst = Path(recipe.ship_to)
        dst.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "head.safetensors"):
            shutil.copy(out / "best" / f, dst / f)
        shutil.copytree(out / "best" / "encoder", dst / "encoder", dirs_exist_ok=True)
        calibrate_gap(recipe, dst, log=log)  # a shipped head carries its calibrated gap interval
    log(json.dumps(metrics["test"]))
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    calibrate = "--calibrate" in argv
    argv = [a for a in argv if a != "--calibrate"]
    if not argv:
        raise SystemExit("usage: python -m triscale.quantum.train [--calibrate] configs/quantum/<name>.yaml")
    recipe = TrainRecipe.from_yaml(argv[0])

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    if calibrate:  # only the gap interval of the shipped head (recipe.ship_to)
        calibrate_gap(recipe, log=log)
        return
    train(recipe, log)


if __name__ == "__main__":
    main()
