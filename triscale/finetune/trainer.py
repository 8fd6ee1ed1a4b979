"""Energy fine-tuning (``triscale finetune``): data checks, E0 refit, replay, the energy/force loss and metrics,
plots, adapter export, committees with calibration. Training itself (optimiser, schedule, early stopping,
checkpoint/resume, ``metrics.jsonl``) is the shared :class:`triscale.finetune.loop.TrainLoop`; property heads
(:mod:`triscale.finetune.property`) use the same loop.

Layout of ``recipe.out``::

    OUT/adapter_config.json, adapter_model.safetensors    PEFT LoRA adapter (method lora)
    OUT/triscale_weights.safetensors                      E0/statistics buffers (+ trained tensors for heads/full)
    OUT/triscale_adapter.json                             metadata: base hash, domain, E0, data summary, metrics
    OUT/metrics.json, metrics.jsonl                       final metrics; one line per epoch
    OUT/parity.png, learning_curve.png                    plots
    OUT/state/                                            checkpoint for resume (deleted by nothing; small)

With ``committee: K`` each member is such a directory ``OUT/member-k`` and ``OUT`` holds the committee metadata,
its metrics (with calibration) and plots.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from triscale.finetune import adapters as A
from triscale.finetune import data as D
from triscale.finetune.adapters import load_base
from triscale.finetune.loop import LoopSettings, TrainLoop, graphs_sha256, restore_trainable, snapshot
from triscale.finetune.recipe import FinetuneRecipe
from triscale.foundation import keys as K

REF_WEIGHT = "REF_weight"  # (B,) float64: loss weight of each structure (1 for the user's data, replay weight else)


# ---------------------------------------------------------------------------------------------------------------
# loss
def weighted_loss(out: dict, batch: dict, weights) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-structure-weighted MSE of energy per atom, force components and stress (labels that are present)."""
    from triscale.foundation.training import voigt_to_3x3

    gw = batch[REF_WEIGHT]
    aw = gw[batch[K.BATCH]]
    total = torch.zeros((), dtype=torch.float64)
    logs: dict[str, float] = {}
    # A missing label is NaN in the batch and is masked out; a non-finite *prediction* is not masked: it makes the
    # loss NaN, which the training loop reports as divergence.
    e = (out[K.ENERGY] - batch[K.REF_ENERGY]) / batch[K.NUM_ATOMS].to(torch.float64)
    terms = [("energy", e, torch.isfinite(batch[K.REF_ENERGY]), gw, weights.energy)]
    f = out[K.FORCES].to(torch.float64) - batch[K.REF_FORCES]
    terms.append(("forces", f, torch.isfinite(batch[K.REF_FORCES]), aw.unsqueeze(-1).expand_as(f), weights.forces))
    if K.STRESS in out:
        ref_s = voigt_to_3x3(batch[K.REF_STRESS])
        s = out[K.STRESS].to(torch.float64) - ref_s
        terms.append(("stress", s, torch.isfinite(ref_s), gw.view(-1, 1, 1).expand_as(s), weights.stress))
    for name, diff, mask, w, factor in terms:
        if not bool(mask.any()):
            continue
        d = torch.where(mask, diff, torch.zeros_like(diff))
        wm = torch.where(mask, w, torch.zeros_like(w))
        mse = (wm * d**2).sum() / wm.sum().clamp(min=1e-12)
        if factor > 0:
            total = total + factor * mse
        user = mask & (w == 1.0)
        if bool(user.any()):
            logs[name] = float(d.detach().abs()[user].mean())
    return total, logs


def _with_weight(graph: dict, weight: float) -> dict:
    g = dict(graph)
    g[REF_WEIGHT] = torch.tensor([weight], dtype=torch.float64)
    return g


# ---------------------------------------------------------------------------------------------------------------
# predictions and metrics
@torch.no_grad()
def predict_graphs(model, graphs: list[dict], batch_size: int = 32) -> dict[str, np.ndarray]:
    """Energies (B,), forces (N, 3) (and the labels) of labelled graphs, model in eval mode."""
    from triscale.foundation.graph import graph_to
    from triscale.foundation.training import batches

    was_training = model.training
    model.eval()
    dtype = next(model.parameters()).dtype
    energy, forces, ref_e, ref_f, n_atoms = [], [], [], [], []
    for batch in batches(graphs, batch_size, None, shuffle=False):
        out = model(graph_to(batch, dtype), compute_forces=True, compute_stress=False, create_graph=False)
        energy.append(out[K.ENERGY].to(torch.float64).numpy())
        forces.append(out[K.FORCES].to(torch.float64).numpy())
        ref_e.append(batch[K.REF_ENERGY].numpy())
        ref_f.append(batch[K.REF_FORCES].numpy())
        n_atoms.append(batch[K.NUM_ATOMS].numpy())
    model.train(was_training)
    return {
        "energy": np.concatenate(energy),
        "forces": np.concatenate(forces),
        "ref_energy": np.concatenate(ref_e),
        "ref_forces": np.concatenate(ref_f),
        "n_atoms": np.concatenate(n_atoms).astype(np.float64),
    }


def errors(pred: dict[str, np.ndarray]) -> dict[str, float]:
    """MAE/RMSE of energy (meV/atom and meV per structure) and forces (meV/Å per component)."""
    e = pred["energy"] - pred["ref_energy"]
    e_atom = e / pred["n_atoms"]
    f = (pred["forces"] - pred["ref_forces"]).ravel()
    out = {"n_structures": int(len(e))}
    if np.isfinite(e).any():
        out.update(
            {
                "energy_mae_meV_per_atom": 1000 * float(np.nanmean(np.abs(e_atom))),
                "energy_rmse_meV_per_atom": 1000 * float(np.sqrt(np.nanmean(e_atom**2))),
                "energy_mae_meV": 1000 * float(np.nanmean(np.abs(e))),
            }
        )
    if np.isfinite(f).any():
        out.update(
            {
                "forces_mae_meV_per_A": 1000 * float(np.nanmean(np.abs(f))),
                "forces_rmse_meV_per_A": 1000 * float(np.sqrt(np.nanmean(f**2))),
            }
        )
    return out


def val_loss(metrics: dict, weights) -> float:
    """The validation loss that selects the best epoch: the loss weights times the squared RMSEs (eV units)."""
    loss = 0.0
    if "energy_rmse_meV_per_atom" in metrics:
        loss += weights.energy * (metrics["energy_rmse_meV_per_atom"] / 1000) ** 2
    if "forces_rmse_meV_per_A" in metrics:
        loss += weights.forces * (metrics["forces_rmse_meV_per_A"] / 1000) ** 2
    return loss


def selection_score(metrics: dict, recipe: FinetuneRecipe) -> float:
    """The validation number that picks the exported epoch (lower is better), per ``recipe.select_on``: the force MAE
    (eV/Å; the energy MAE where there are no force labels), the energy-per-atom MAE (eV/atom) or :func:`val_loss`;
    infinite where the model predicts no finite value."""
    forces, energy = metrics.get("forces_mae_meV_per_A"), metrics.get("energy_mae_meV_per_atom")
    if forces is None and energy is None:  # no finite prediction at all (a diverged run): worst possible
        return math.inf
    if recipe.select_on == "forces" and forces is not None:
        return forces / 1000
    if recipe.select_on in ("forces", "energy") and energy is not None:
        return energy / 1000
    return val_loss(metrics, recipe.loss)


def _selection_name(recipe: FinetuneRecipe, metrics: dict) -> tuple[str, str, float]:
    """(label, unit, scale to the unit) of the selection score for messages."""
    if recipe.select_on == "forces" and "forces_mae_meV_per_A" in metrics:
        return "force MAE", "meV/Å", 1000.0
    if recipe.select_on in ("forces", "energy") and "energy_mae_meV_per_atom" in metrics:
        return "energy MAE", "meV/atom", 1000.0
    return "weighted loss", "", 1.0


def verdict(base_val: dict | None, tuned_val: dict | None, recipe: FinetuneRecipe) -> dict:
    """Did fine-tuning beat the base model (with the refitted E0) on the validation structures? A dict with
    ``improved`` (True/False/None where there is no validation set), the base and fine-tuned validation errors, the
    ratio of the selection score and a plain-words ``message``."""
    if not base_val or not tuned_val:
        return {
            "improved": None,
            "message": "no validation structures: nothing tells whether fine-tuning beat the base model "
            "(use val_fraction > 0 or a 'val' split)",
        }
    label, unit, scale = _selection_name(recipe, tuned_val)
    before, after = selection_score(base_val, recipe), selection_score(tuned_val, recipe)
    ratio = after / before if before > 0 else float("nan")
    improved = bool(after < before)
    n = tuned_val.get("n_structures", 0)
    out = {
        "improved": improved,
        "selected_on": label,
        "base_val": base_val,
        "finetuned_val": tuned_val,
        "ratio": ratio,
    }
    numbers = f"validation {label} {scale * before:.4g} -> {scale * after:.4g} {unit}".rstrip()
    if improved:
        out["message"] = f"fine-tuning beat the base model: {numbers} ({ratio:.2f}x the base model, {n} structures)"
    else:
        out["message"] = (
            f"fine-tuning did NOT beat the base model: {numbers} ({n} structures); the exported adapter is the base "
            "model with the refitted E0 and no learned change. More or more varied data, another method or "
            "learning rate may help"
        )
    if n < 8:
        out["message"] += f"; only {n} validation structures: this verdict is noisy"
    return out


def _committee_arrays(member_preds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Committee mean, std and labels: energies per atom (B,) and force components (3N,)."""
    energies = np.stack([p["energy"] for p in member_preds])
    forces = np.stack([p["forces"] for p in member_preds])
    ref, n = member_preds[0], member_preds[0]["n_atoms"]
    return {
        "energy_per_atom": (energies.mean(0) / n, energies.std(0) / n, ref["ref_energy"] / n),
        "forces": (forces.mean(0).ravel(), forces.std(0).ravel(), ref["ref_forces"].ravel()),
    }


def committee_conformal(member_preds: list[dict[str, np.ndarray]], alpha: float = 0.1) -> dict:
    """Split-conformal calibration of a committee's spread on held-out (validation) structures: normalised scores
    ``|error| / (std + eps)`` for the energy per atom and for force components. ``TriScaleCalculator(conformal=...)``
    turns them into calibrated half-widths (``energy_uncertainty``, ``forces_uncertainty``)."""
    from triscale.uncertainty import SplitConformal

    out = {}
    for key, (mean, std, ref) in _committee_arrays(member_preds).items():
        ok = np.isfinite(ref)
        if ok.any():
            out[key] = SplitConformal.calibrate(mean[ok], ref[ok], std[ok], alpha=alpha, eps=1e-6).to_dict()
    return out


def conformal_coverage(conformal: dict, member_preds: list[dict[str, np.ndarray]]) -> dict:
    """Coverage of the calibrated intervals on other structures (e.g. the test split), with the range split
    conformal allows (energy: structures are exchangeable; forces: components are not independent, so their range
    is only indicative)."""
    from triscale.uncertainty import SplitConformal

    out = {}
    for key, (mean, std, ref) in _committee_arrays(member_preds).items():
        if key in conformal:
            ok = np.isfinite(ref)
            out[key] = SplitConformal.from_dict(conformal[key]).coverage_report(mean[ok], ref[ok], std[ok])
    return out


def calibration(member_preds: list[dict[str, np.ndarray]]) -> dict:
    """Committee mean errors and the Spearman rank correlation between the committee's standard deviation and the
    actual error of its mean: per structure (energy) and per atom (force vector norm)."""
    from scipy.stats import spearmanr

    energies = np.stack([p["energy"] for p in member_preds])
    forces = np.stack([p["forces"] for p in member_preds])
    ref = member_preds[0]
    e_err = np.abs(energies.mean(0) - ref["ref_energy"])
    e_std = energies.std(0)
    f_err = np.linalg.norm(forces.mean(0) - ref["ref_forces"], axis=-1)
    f_std = np.sqrt((forces.std(0) ** 2).sum(-1))
    out = {
        "n_structures": int(len(e_err)),
        "energy_spearman": float(spearmanr(e_std, e_err).statistic) if len(e_err) > 2 else None,
        "forces_spearman": float(spearmanr(f_std, f_err).statistic) if len(f_err) > 2 else None,
        "energy_mean_std_meV": 1000 * float(e_std.mean()),
        "energy_mae_meV": 1000 * float(e_err.mean()),
        "forces_mean_std_meV_per_A": 1000 * float(f_std.mean()),
        "forces_mean_error_norm_meV_per_A": 1000 * float(f_err.mean()),
    }
    return out


# ---------------------------------------------------------------------------------------------------------------
# the run
def _console(enabled: bool):
    from rich.console import Console

    return Console(stderr=True, quiet=not enabled)


def _domain_of(recipe: FinetuneRecipe, records: list[dict], domains: list[str]) -> str:
    if recipe.domain is not None:
        if recipe.domain not in domains:
            raise ValueError(f"unknown domain {recipe.domain!r}; the base model has {domains}")
        return recipe.domain
    periodic = [bool(np.any(r["pbc"])) for r in records]
    if all(periodic):
        return "material"
    if not any(periodic):
        return "molecule"
    raise D.DatasetError("the data mixes periodic and non-periodic structures; choose the domain with --domain")


def prepare_data(recipe: FinetuneRecipe, base) -> dict:
    """Read, validate, convert and split the user's data; labelled graphs per split and a summary."""
    from triscale.foundation.training import record_to_graph

    prop = recipe.property.key if recipe.property else None
    records = D.read_records(recipe.data, property_key=prop)
    D.validate_records(
        records,
        base.config.supported_elements,
        source=recipe.data,
        need_energy=prop is None,
        need_forces=prop is None and recipe.loss.forces > 0,
        property_key=prop,
        min_structures=recipe.min_structures,
    )
    records = D.convert_units(records, recipe.energy_unit, recipe.length_unit)
    domain = _domain_of(recipe, records, base.config.domains)
    d = base.config.domains.index(domain)
    graphs = []
    for row in records:
        g = record_to_graph(row, base.config.cutoff, d)
        if prop is not None:
            g[D.PROPERTY] = torch.tensor([float(row[D.PROPERTY])], dtype=torch.float64)
        graphs.append(_with_weight(g, 1.0))
    split = D.split_indices(
        records, _val_fraction(recipe, len(records)), recipe.seed, use_data_split=recipe.split == "data"
    )
    if len(split["train"]) < 1:
        raise D.DatasetError(f"{recipe.data}: no training structures left after the validation split")
    summary = D.summarize(records, recipe.data)
    summary.update({f"n_{k}": len(v) for k, v in split.items()})
    return {"graphs": graphs, "split": split, "domain": domain, "domain_index": d, "summary": summary}


def _val_fraction(recipe: FinetuneRecipe, n: int) -> float:
    """The validation share of a random split: ``val_fraction``, raised to keep ``min_val`` structures (at most a
    quarter of the data)."""
    if recipe.val_fraction <= 0 or recipe.min_val <= 0 or n <= 0:
        return recipe.val_fraction
    n_val = max(int(round(recipe.val_fraction * n)), min(recipe.min_val, n // 4))
    return n_val / n


def finetune(recipe: FinetuneRecipe, resume: bool = True) -> dict:
    """Run a fine-tuning recipe; returns the final metrics (also written to ``OUT/metrics.json``).

    Under ``accelerate launch --num_processes N`` (or torchrun) the N processes share each batch (data parallel,
    gloo); only the main process writes the adapter, metrics and plots, and only it returns the full metrics (the
    others return ``{"rank": r}``)."""
    from triscale.common import distributed as dist

    torch.set_num_threads(recipe.num_threads)  # a CLI entry point: the process is ours
    dist.init_from_env(cpu=True)
    if dist.world()[1] > 1 and recipe.property is not None:
        from triscale.finetune.loop import LaunchError

        raise LaunchError(
            "property heads train in one process (they are small and cache the encoder's features): run "
            "`triscale finetune` without accelerate launch for --property-key"
        )
    console = _console(recipe.progress and dist.is_main())
    out = Path(recipe.out)
    out.mkdir(parents=True, exist_ok=True)
    base, base_dir = load_base(recipe.base)
    data = prepare_data(recipe, base)
    console.print(
        f"[bold]data[/]: {data['summary']['n_structures']} structures "
        f"({', '.join(f'{k} {len(v)}' for k, v in data['split'].items())}), domain {data['domain']}"
    )
    if recipe.property is not None:
        from triscale.finetune.property import train_property, train_property_committee

        if recipe.committee > 1:
            return train_property_committee(recipe, base, base_dir, data, console, resume)
        return train_property(recipe, base, base_dir, data, console, resume)

    d = data["domain_index"]
    graphs = data["graphs"]
    train = [graphs[i] for i in data["split"]["train"]]
    adapted_base = copy.deepcopy(base)
    if recipe.e0 == "refit":
        e0, e0_info = D.refit_reference_energies(base, train, d)
        with torch.no_grad():
            adapted_base.atomic_energies[d] = torch.as_tensor(e0, dtype=torch.float64)
        console.print(
            f"[bold]E0 refit[/] ({e0_info['mode']}): energy MAE "
            f"{1000 * e0_info['mae_before_eV_per_atom']:.1f} -> {1000 * e0_info['mae_after_eV_per_atom']:.1f} "
            "meV/atom on the training set"
        )
    else:
        e0_info = {"mode": "keep"}
    replay, replay_info = [], {"enabled": False}
    if recipe.replay.enabled:
        replay, replay_info = D.build_replay(adapted_base, recipe.replay, base.config.domains, recipe.seed)
        replay = [_with_weight(g, recipe.replay.weight) for g in replay]
        replay_info["enabled"] = True
        console.print(f"[bold]replay[/]: {len(replay)} structures labelled by the base model")
    common = {
        "method": recipe.method,
        "domain": data["domain"],
        "base": {
            "name": recipe.base,
            "path": str(base_dir),
            "sha256": A.checkpoint_sha256(base_dir),
            "fingerprint": A.state_fingerprint(base),
        },
        "e0_fit": e0_info,
        "data": data["summary"],
        "replay": replay_info,
        "recipe": recipe.model_dump(),
    }
    if recipe.committee == 1:
        return train_member(recipe, base, adapted_base, data, replay, out, recipe.seed, common, console, resume)
    members = []
    for k in range(recipe.committee):
        console.print(f"[bold]committee member {k + 1}/{recipe.committee}[/]")
        member_seed = recipe.seed + 1000 * (k + 1)
        members.append(
            train_member(
                recipe,
                base,
                adapted_base,
                data,
                replay,
                out / f"member-{k}",
                member_seed,
                common,
                console,
                resume,
                bootstrap=recipe.bootstrap,
            )
        )
    if not dist.is_main():
        return members[0]
    return finish_committee(recipe, base, data, out, common, members, console)


def train_member(
    recipe,
    base,
    adapted_base,
    data,
    replay,
    out: Path,
    seed: int,
    common: dict,
    console,
    resume: bool,
    bootstrap: bool = False,
) -> dict:
    """Train one adapter into ``out`` with the shared :class:`~triscale.finetune.loop.TrainLoop`; returns its
    metrics."""
    from triscale.foundation.graph import collate, graph_to

    out.mkdir(parents=True, exist_ok=True)
    d = data["domain_index"]
    graphs = data["graphs"]
    train_idx = data["split"]["train"]
    if bootstrap:
        train_idx = D.bootstrap(train_idx, seed)
    train = [graphs[i] for i in train_idx]
    val = [graphs[i] for i in data["split"]["val"]]
    test = [graphs[i] for i in data["split"]["test"]]
    # Seeded locally: LoRA init with nonzero weights (none by default) and dropout use torch's global RNG, so the
    # member's setup runs under a forked RNG with its own seed.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = A.prepare_model(adapted_base, recipe.method, d, recipe.lora)
    counts = A.count_parameters(model)
    settings = LoopSettings.from_recipe(recipe)
    if recipe.patience is None:  # no early stopping: the whole schedule runs
        settings = dataclasses.replace(settings, patience=recipe.epochs + 1)
    loop = TrainLoop(
        model,
        out,
        settings,
        seed=seed,
        steps_per_epoch=math.ceil(len(train) / recipe.batch_size),
        data_sha256=graphs_sha256(train, val),
        console=console,
    )
    console.print(
        f"[bold]{recipe.method}[/]: {counts['trainable']:,} of {counts['total']:,} parameters trainable, "
        f"{len(train)} train / {len(val)} val structures, lr {recipe.learning_rate:g}"
    )
    dtype = next(model.parameters()).dtype

    def batches(generator: torch.Generator):
        # the global batch is drawn alike in every process; each trains on its shard (all of it in one process)
        for batch_graphs in _epoch(train, recipe.batch_size, generator):
            if replay:
                pick = torch.randint(len(replay), (recipe.replay.per_batch,), generator=generator).tolist()
                batch_graphs = batch_graphs + [replay[i] for i in pick]
            yield loop.shard(batch_graphs, lambda graphs: graph_to(collate(graphs), dtype))

    def loss(batch):
        has_stress = bool(torch.isfinite(batch[K.REF_STRESS]).any())
        out_b = model(batch, compute_forces=True, compute_stress=has_stress, create_graph=True)
        return weighted_loss(out_b, batch, recipe.loss)

    def evaluate() -> dict | None:
        if not val:
            return None
        vm = errors(predict_graphs(model, val))
        row = {f"val_{k}": v for k, v in vm.items() if k != "n_structures"}
        row["val_weighted_loss"] = val_loss(vm, recipe.loss)
        row["val_loss"] = selection_score(vm, recipe)  # what the loop selects the best epoch on
        return row

    def train_logs(sums: dict[str, list[float]]) -> dict:
        return {
            f"train_{k}_mae_{'meV_per_atom' if k == 'energy' else 'meV_per_A'}": 1000 * float(np.mean(v))
            for k, v in sums.items()
            if k in ("energy", "forces")
        }

    def describe(row: dict) -> str:
        if not val:
            return ""
        return (
            f"val E {row.get('val_energy_mae_meV_per_atom', float('nan')):.2f} meV/at "
            f"F {row.get('val_forces_mae_meV_per_A', float('nan')):.1f} meV/Å"
        )

    # the starting point (LoRA's B = 0, heads/full untouched): the base model with the refitted E0
    start_state = snapshot(model)
    base_val = errors(predict_graphs(model, val)) if val else None
    progress = loop.fit(batches, loss, evaluate, resume=resume, train_logs=train_logs, describe=describe)
    if not loop.is_main:  # the main process evaluates and writes; it holds the same weights
        return {"rank": loop.rank, "steps": progress["step"], "epochs": progress["epoch"]}
    metrics_path = loop.metrics_path
    tuned_val = errors(predict_graphs(model, val)) if val else None
    judged = verdict(base_val, tuned_val, recipe)
    if judged["improved"] is False:  # never export something worse than the base model
        restore_trainable(model, start_state)
        model.eval()
    preds = {"train": predict_graphs(model, [graphs[i] for i in data["split"]["train"]])}
    if val:
        preds["val"] = predict_graphs(model, val)
    if test:
        preds["test"] = predict_graphs(model, test)
    metrics = {
        "method": recipe.method,
        "seed": seed,
        "parameters": counts,
        "epochs": progress["epoch"],
        "steps": progress["step"],
        "best_epoch": progress["best_epoch"],
        "stop_reason": progress["stopped"],
        "exported": "finetuned" if judged["improved"] is not False else "base (fine-tuning did not beat it)",
        "verdict": judged,
        "train_seconds": time.perf_counter() - loop.t0,
        **{split: errors(p) for split, p in preds.items()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    meta = {**common, "metrics": metrics, "bootstrap": bootstrap, "seed": seed}
    A.save_adapter(model, out, meta)
    if recipe.plots:
        from triscale.finetune.plots import learning_curve, parity_plot

        parity_plot(preds, out / "parity.png", title=f"{recipe.method} fine-tuning, {out.name}")
        learning_curve(metrics_path, out / "learning_curve.png")
    console.print(
        f"[green]done[/] {out}: "
        + ", ".join(
            f"{s} E {m.get('energy_mae_meV_per_atom', float('nan')):.2f} meV/atom F "
            f"{m.get('forces_mae_meV_per_A', float('nan')):.1f} meV/Å"
            for s, m in metrics.items()
            if isinstance(m, dict) and "n_structures" in m and s in ("train", "val", "test")
        )
    )
    style = {True: "green", False: "bold red", None: "yellow"}[judged["improved"]]
    console.print(f"[{style}]verdict[/]: {judged['message']}")
    return metrics


def _epoch(graphs: list[dict], batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(graphs), generator=generator).tolist()
    for start in range(0, len(order), batch_size):
        yield [graphs[i] for i in order[start : start + batch_size]]


def finish_committee(recipe, base, data, out: Path, common: dict, members: list[dict], console) -> dict:
    """Committee metadata, mean-prediction metrics and calibration on validation (and test) structures."""
    names = [f"member-{k}" for k in range(len(members))]
    meta = {"format": A.FORMAT, "format_version": A.FORMAT_VERSION, **common, "committee": names}
    (out / A.META_FILE).write_text(json.dumps(meta, indent=1))
    models = A.attach_adapters(base, out)
    graphs = data["graphs"]
    metrics: dict = {"method": recipe.method, "committee": len(members), "members": members}
    judged = [m.get("verdict", {}).get("improved") for m in members]
    if any(j is None for j in judged):
        metrics["verdict"] = {"improved": None, "message": members[0]["verdict"]["message"]}
    else:
        k = sum(judged)
        metrics["verdict"] = {
            "improved": k == len(members),
            "members_improved": k,
            "message": f"{k} of {len(members)} committee members beat the base model on validation"
            + ("" if k == len(members) else "; the others were exported as the base model (no learned change)"),
        }
    preds_for_plot = {}
    for split in ("val", "test"):
        subset = [graphs[i] for i in data["split"][split]]
        if not subset:
            continue
        member_preds = [predict_graphs(m, subset) for m in models]
        mean = dict(member_preds[0])
        mean["energy"] = np.mean([p["energy"] for p in member_preds], axis=0)
        mean["forces"] = np.mean([p["forces"] for p in member_preds], axis=0)
        mean["energy_std"] = np.std([p["energy"] for p in member_preds], axis=0)
        metrics[split] = errors(mean)
        metrics[f"{split}_calibration"] = calibration(member_preds)
        preds_for_plot[split] = mean
        if split == "val":
            meta["conformal"] = committee_conformal(member_preds)
        elif "conformal" in meta:
            metrics["test_conformal_coverage"] = conformal_coverage(meta["conformal"], member_preds)
    meta["metrics"] = {k: v for k, v in metrics.items() if k != "members"}
    (out / A.META_FILE).write_text(json.dumps(meta, indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if recipe.plots and preds_for_plot:
        from triscale.finetune.plots import parity_plot

        parity_plot(preds_for_plot, out / "parity.png", title=f"{recipe.method} committee of {len(members)}")
    cal = metrics.get("val_calibration", {})
    console.print(f"verdict: {metrics['verdict']['message']}")
    console.print(
        f"[green]committee[/] {out}: val Spearman(std, error) energy {cal.get('energy_spearman')}, "
        f"forces {cal.get('forces_spearman')}"
    )
    return metrics
