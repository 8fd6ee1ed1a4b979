"""Multi-domain pretraining of the foundation model (``triscale pretrain --config configs/pretrain/<name>.yaml``).

The loop runs under HF accelerate (one process, or ``accelerate launch`` for several GPUs or CPU processes: each
process takes its share of every global batch of ``batch_size`` structures, DDP averages the gradients weighted by
the shares, only the main process writes), fits per-domain reference energies by least squares before training,
minimises a weighted energy/force/stress/dipole loss, keeps an exponential moving average (EMA) of the weights, and
checkpoints every N steps so that a killed run resumes with nothing lost. The EMA weights are exported with
``save_pretrained`` at the end, with held-out metrics.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from triscale.common import atomic_write_json
from triscale.foundation import keys as K
from triscale.foundation.config import FoundationConfig
from triscale.foundation.graph import graph_to
from triscale.foundation.model import FoundationModel
from triscale.foundation.training import (
    evaluate,
    fit_reference_energies,
    force_rms,
    losses_and_errors,
    mean_num_neighbors,
    record_to_graph,
)


class LossWeights(BaseModel):
    """Weights of the squared errors: energy per atom (eV), forces (eV/Å), stress (eV/Å³), dipole (e·Å)."""

    model_config = ConfigDict(extra="forbid")
    energy: float = Field(10.0, ge=0)
    forces: float = Field(1.0, ge=0)
    stress: float = Field(1000.0, ge=0)
    dipole: float = Field(1.0, ge=0)


class PretrainRecipe(BaseModel):
    """A pretraining recipe, read from YAML (``configs/pretrain/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    data: list[str] = Field(description="extxyz files/dirs/globs, ASE dbs or saved HF datasets")
    out_dir: str = "runs/pretrain"
    model: dict[str, Any] = Field(default_factory=dict, description="FoundationConfig keyword arguments")
    loss_weights: dict[str, LossWeights] = Field(default_factory=dict, description="per domain")
    batch_size: int = Field(16, ge=1)
    max_steps: int = Field(10_000, ge=1)
    max_minutes: float | None = Field(None, gt=0, description="stop (and export) after this much training time")
    budget_clock: Literal["wall", "cpu"] = Field(
        "wall",
        description="what max_minutes counts: wall time, or this process's CPU time (fair budgets on a shared machine)",
    )
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.02, gt=0, le=1)
    warmup_steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(10.0, gt=0)
    ema_decay: float = Field(0.995, ge=0, lt=1)
    eval_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    max_eval_structures: int = Field(400, ge=1)
    seed: int = 0
    num_threads: int = Field(1, ge=1)
    limit_train: int | None = Field(None, ge=1, description="use only this many training structures")
    init_from: str | None = Field(
        None,
        description="start from this checkpoint's weights (name or directory; same architecture), fresh schedule; "
        "domains are matched by name and a domain the checkpoint lacks gets a new head (E0 is fitted anyway)",
    )
    init_new_domains_from: dict[str, str] = Field(
        default_factory=dict,
        description="new domain -> checkpoint domain whose energy head and domain embedding it starts from "
        "(e.g. molecule-dft: molecule); a new domain not listed starts from a freshly initialised head",
    )
    progress_dir: str | None = Field(
        None,
        description="small copy of the run to commit (EMA weights, progress.json, statistics.json; < 1 MB), "
        "rewritten at every checkpoint; a run whose out_dir has no checkpoint continues from it (step, time, "
        "LR schedule; optimizer moments restart)",
    )


def load_recipe(path: str | Path) -> PretrainRecipe:
    with open(path) as fh:
        return PretrainRecipe(**yaml.safe_load(fh))


def _load_graphs(recipe: PretrainRecipe, domains: list[str], cutoff: float):
    """Labelled graphs per split from the recipe's data sources."""
    from triscale.foundation.datasets import load_structure_dataset

    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for source in recipe.data:
        # frames without forces (an energy-only domain such as molecule-dft) load with NaN forces, which the loss
        # and the metrics mask; how many each source has is reported below
        dataset = load_structure_dataset(source, domains=domains, require_forces=False)
        for record in dataset:
            domain = record.get("domain") or "molecule"
            if domain not in domains:
                raise ValueError(f"{source}: domain {domain!r} is not one of the model's domains {domains}")
            split = record.get("split") or "train"
            splits.setdefault(split, []).append(record_to_graph(record, cutoff, domains.index(domain)))
    if recipe.limit_train is not None:
        rng = np.random.default_rng(recipe.seed)
        keep = rng.permutation(len(splits["train"]))[: recipe.limit_train]
        splits["train"] = [splits["train"][i] for i in sorted(keep)]
    if not splits["train"]:
        raise ValueError("the recipe's data has no training structures")
    return splits


def _keep_checkpoint_elements(model, config, start, new_from: dict[str, str], stats: dict[str, Any]) -> None:
    """A warm start keeps what the checkpoint knows: an element absent from this run's data for a domain keeps the
    checkpoint's E0 (a refit would give it 0) and stays in the element lists, so partial data (e.g. datagen still
    running) cannot make the model forget or refuse an element it was trained on."""
    old_domain_elements = start.config.domain_elements or {}
    for d, name in enumerate(config.domains):
        src = new_from.get(name, name)
        if src not in start.config.domains:
            continue
        seen = set(config.domain_elements.get(name, []))
        old_e0 = start.atomic_energies[start.config.domains.index(src)]
        kept = [z for z in old_domain_elements.get(src, []) if z not in seen]
        for z in kept:
            model.atomic_energies[d, z] = old_e0[z]
        config.domain_elements[name] = sorted(seen | set(kept))
    config.elements = sorted(set(config.elements) | set(start.config.elements or []))
    stats["elements"], stats["domain_elements"] = config.elements, config.domain_elements


def _fit_statistics(model: FoundationModel, train: list[dict]) -> dict[str, Any]:
    """E0 per domain by least squares, energy scale from force RMS; elements and neighbour count into config."""
    cfg = model.config
    stats: dict[str, Any] = {}
    for d, name in enumerate(cfg.domains):
        subset = [g for g in train if int(g[K.DOMAIN][0]) == d]
        if not subset:
            continue
        e0, residual = fit_reference_energies(subset, cfg.max_atomic_number)
        # an energy-only domain (no force labels) takes the scale of all the training forces, as its head's
        # outputs are per-atom energies like every other head's
        has_forces = any(bool(torch.isfinite(g[K.REF_FORCES]).any()) for g in subset)
        scale = force_rms(subset) if has_forces else force_rms(train)
        model.atomic_energies[d] = torch.as_tensor(e0)
        model.energy_scale[d] = scale
        stats[name] = {"n_train": len(subset), "e0_residual_rms_eV_per_atom": residual, "force_rms_eV_per_A": scale}
    elements = sorted({int(z) for g in train for z in g[K.ATOMIC_NUMBERS].tolist()})
    cfg.elements = elements
    cfg.domain_elements = {
        name: sorted({int(z) for g in train if int(g[K.DOMAIN][0]) == d for z in g[K.ATOMIC_NUMBERS].tolist()})
        for d, name in enumerate(cfg.domains)
    }
    stats["domain_elements"] = cfg.domain_elements
    cfg.avg_num_neighbors = mean_num_neighbors(train)
    stats["elements"] = elements
    stats["avg_num_neighbors"] = cfg.avg_num_neighbors
    return stats


_DOMAIN_ROWS = ("domain_embedding.weight", "atomic_energies", "energy_scale", "energy_shift")


def load_init_weights(model: FoundationModel, start: FoundationModel, name: str, copy_from: dict[str, str]) -> list:
    """Load ``start``'s weights into ``model``, matching domains by name; returns the domains ``start`` lacks.

    Everything but the per-domain parts (energy heads, domain-embedding rows, E0/scale/shift rows) must match
    exactly. A domain new to ``model`` keeps its fresh head and embedding row, or copies those of the checkpoint
    domain ``copy_from`` names for it. A checkpoint domain the model lacks is refused (its head would be lost).
    """
    old, new = list(start.config.domains), list(model.config.domains)
    dropped = [d for d in old if d not in new]
    if dropped:
        raise ValueError(f"init_from {name!r} has domain(s) {dropped} that the recipe's model lacks: {new}")
    fresh = [d for d in new if d not in old]
    for target, source in copy_from.items():
        if target not in fresh or source not in old:
            raise ValueError(
                f"init_new_domains_from: {target!r} <- {source!r} needs a new domain (one of {fresh}) and a domain "
                f"of the checkpoint (one of {old})"
            )
    state = start.state_dict()
    current = model.state_dict()
    remapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("energy_heads."):
            _, index, rest = key.split(".", 2)
            domain = old[int(index)]
            remapped[f"energy_heads.{new.index(domain)}.{rest}"] = value
            for target, source in copy_from.items():
                if source == domain:
                    remapped[f"energy_heads.{new.index(target)}.{rest}"] = value.clone()
        elif key in _DOMAIN_ROWS and key in current:
            rows = current[key].clone()
            for i, domain in enumerate(old):
                rows[new.index(domain)] = value[i]
            for target, source in copy_from.items():
                rows[new.index(target)] = value[old.index(source)]
            remapped[key] = rows
        else:
            remapped[key] = value
    try:
        missing, unexpected = model.load_state_dict(remapped, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"init_from {name!r}: architecture differs ({str(exc).splitlines()[-1].strip()})") from None
    new_heads = {f"energy_heads.{new.index(d)}." for d in fresh}
    missing = [k for k in missing if not any(k.startswith(prefix) for prefix in new_heads)]
    if missing or unexpected:
        raise ValueError(f"init_from {name!r}: architecture differs ({missing=}, {unexpected=})")
    return fresh


def lr_factor(recipe: PretrainRecipe, step: int, trained_seconds: float) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` over the budget.

    Progress is the larger of step/max_steps and time/max_minutes, so a wall-time-limited CPU run still ends its
    schedule (and its EMA) at a low learning rate instead of being cut off mid-decay.
    """
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.max_steps - recipe.warmup_steps)
    if recipe.max_minutes is not None:
        progress = max(progress, trained_seconds / (60.0 * recipe.max_minutes))
    progress = min(1.0, progress)
    return recipe.min_lr_ratio + (1 - recipe.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _weighted_loss(out, batch, weights: dict[int, LossWeights], n_domains: int) -> tuple[torch.Tensor, dict]:
    """Sum over domains present in the batch of weighted MSEs (each domain's errors averaged separately)."""
    total = torch.zeros((), dtype=torch.float64, device=batch[K.REF_ENERGY].device)
    logs: dict[str, float] = {}
    graph_domain = batch[K.DOMAIN]
    atom_domain = graph_domain[batch[K.BATCH]]
    for d in range(n_domains):
        gmask = graph_domain == d
        if not bool(gmask.any()):
            continue
        amask = atom_domain == d
        sub_out = {
            K.ENERGY: out[K.ENERGY][gmask],
            K.FORCES: out[K.FORCES][amask],
        }
        sub_batch = {
            K.NUM_ATOMS: batch[K.NUM_ATOMS][gmask],
            K.REF_ENERGY: batch[K.REF_ENERGY][gmask],
            K.REF_FORCES: batch[K.REF_FORCES][amask],
            K.REF_STRESS: batch[K.REF_STRESS][gmask],
            K.REF_DIPOLE: batch[K.REF_DIPOLE][gmask],
        }
        if K.STRESS in out:
            sub_out[K.STRESS] = out[K.STRESS][gmask]
        if K.DIPOLE in out:
            sub_out[K.DIPOLE] = out[K.DIPOLE][gmask]
        errors = losses_and_errors(sub_out, sub_batch)
        w = weights[d]
        for kind in ("energy", "forces", "stress", "dipole"):
            if f"mse_{kind}" in errors and int(errors[f"n_{kind}"]) > 0:
                total = total + getattr(w, kind) * errors[f"mse_{kind}"]
                logs[f"d{d}_mae_{kind}"] = float(errors[f"mae_{kind}"].detach())
    return total, logs


def pretrain(recipe: PretrainRecipe, resume: bool = True) -> Path:
    """Run (or resume) a pretraining recipe; returns the directory of the exported EMA model."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from rich.console import Console
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    console = Console(stderr=True, quiet=os.environ.get("RANK", "0") != "0")  # one process prints
    torch.set_num_threads(recipe.num_threads)
    out_dir = Path(recipe.out_dir)
    state_dir = out_dir / "state"
    out_dir.mkdir(parents=True, exist_ok=True)
    # unused parameters: a batch of one domain leaves the other domains' heads out of the graph
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    main = accelerator.is_main_process
    config = FoundationConfig(**recipe.model)
    with torch.random.fork_rng():  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(recipe.seed)
        model = FoundationModel(config)
    inherited: dict[str, Any] | None = None
    if recipe.init_from is not None:
        # Weights, the energy scales and the neighbour normalisation come from the checkpoint; E0 is refitted on
        # this recipe's data below; the schedule starts afresh.
        from triscale.foundation.checkpoints import load_checkpoint

        start = load_checkpoint(recipe.init_from)
        fresh = load_init_weights(model, start, recipe.init_from, recipe.init_new_domains_from)
        # what the trained network's function depends on besides its weights: kept, not refitted (a refit on other
        # data rescales every force the checkpoint predicts); E0 (a per-element constant) is refitted
        old_scales = dict(zip(start.config.domains, start.energy_scale.tolist(), strict=True))
        inherited = {
            "avg_num_neighbors": start.config.avg_num_neighbors,
            "energy_scale": {
                d: old_scales[recipe.init_new_domains_from.get(d, d)]
                for d in config.domains
                if recipe.init_new_domains_from.get(d, d) in old_scales
            },
        }
        note = ""
        if fresh:
            sources = {d: recipe.init_new_domains_from.get(d, "fresh") for d in fresh}
            note = " (new domain heads: " + ", ".join(f"{d} <- {src}" for d, src in sources.items()) + ")"
        console.print(f"[bold]initialised[/] from {recipe.init_from}{note}")
    t0 = time.perf_counter()
    splits = _load_graphs(recipe, config.domains, config.cutoff)
    energy_only = sum(1 for g in splits["train"] if not bool(torch.isfinite(g[K.REF_FORCES]).any()))
    console.print(
        "[bold]data[/]: "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + (f"; {energy_only} training structures energy-only (no forces)" if energy_only else "")
        + f" ({time.perf_counter() - t0:.0f} s)"
    )
    stats_path = out_dir / "statistics.json"
    progress_dir = Path(recipe.progress_dir) if recipe.progress_dir else None
    continue_from = None
    if (
        resume
        and progress_dir is not None
        and (progress_dir / "progress.json").exists()
        and not (state_dir.exists() and (out_dir / "progress.json").exists())
    ):
        # a new machine: no checkpoint in out_dir, a committed progress copy -> continue from it
        continue_from = json.loads((progress_dir / "progress.json").read_text())
        if (progress_dir / "statistics.json").exists() and not stats_path.exists():
            stats_path.write_text((progress_dir / "statistics.json").read_text())
    stats = json.loads(stats_path.read_text()) if resume and stats_path.exists() else None
    train_elements = sorted({int(z) for g in splits["train"] for z in g[K.ATOMIC_NUMBERS].tolist()})
    fitted_on = None if stats is None else stats.get("train_elements", stats["elements"])
    if stats is None or fitted_on != train_elements or len(splits["train"]) > 1.2 * stats["n_train"]:
        # First run, or resumed on grown data (e.g. datagen still running): refit E0/scale on all of it.
        # The network learns a residual on top of these, so refitting mid-run only nudges its targets.
        stats = _fit_statistics(model, splits["train"])
        if inherited is not None:
            stats["avg_num_neighbors"] = inherited["avg_num_neighbors"]
            for name, scale in inherited["energy_scale"].items():
                model.energy_scale[config.domains.index(name)] = scale
            stats["inherited_from_init"] = {"checkpoint": recipe.init_from, **inherited}
            _keep_checkpoint_elements(model, config, start, recipe.init_new_domains_from, stats)
        stats["train_elements"] = train_elements
        stats["n_train"] = len(splits["train"])
        stats["atomic_energies"] = model.atomic_energies.tolist()
        stats["energy_scale"] = model.energy_scale.tolist()
        if main:
            atomic_write_json(stats_path, stats, indent=1)
        console.print(f"[bold]statistics[/] fitted on {len(splits['train'])} structures")

    weights = {d: recipe.loss_weights.get(name, LossWeights()) for d, name in enumerate(config.domains)}
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=recipe.lr, weight_decay=recipe.weight_decay, amsgrad=True
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    ema = AveragedModel(
        accelerator.unwrap_model(model),
        device=device,
        multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay),
        use_buffers=True,
    )
    accelerator.register_for_checkpointing(ema)

    step, trained_seconds = 0, 0.0
    progress_path = out_dir / "progress.json"
    if resume and state_dir.exists() and progress_path.exists():
        accelerator.load_state(str(state_dir))
        progress = json.loads(progress_path.read_text())
        step, trained_seconds = progress["step"], progress.get("trained_seconds", 0.0)
        console.print(f"[bold]resumed[/] at step {step} ({trained_seconds / 60:.1f} min trained)")
    elif continue_from is not None:
        saved = FoundationModel.from_pretrained(str(progress_dir), local_files_only=True).state_dict()
        try:
            accelerator.unwrap_model(model).load_state_dict(saved)
            ema.module.load_state_dict(saved)
        except RuntimeError as exc:
            raise ValueError(
                f"progress_dir {progress_dir}: its weights do not fit the recipe's model "
                f"({str(exc).splitlines()[-1].strip()})"
            ) from None
        step, trained_seconds = continue_from["step"], continue_from["trained_seconds"]
        console.print(
            f"[bold]continued[/] from {progress_dir} at step {step} ({trained_seconds / 60:.1f} min trained; "
            "EMA weights, fresh optimizer moments)"
        )
    # The fitted statistics (possibly refitted above) win over what the checkpoint held.
    for target in (accelerator.unwrap_model(model), ema.module):
        target.config.elements = stats["elements"]
        target.config.domain_elements = stats.get("domain_elements")
        target.config.avg_num_neighbors = stats["avg_num_neighbors"]
        target.atomic_energies.copy_(torch.tensor(stats["atomic_energies"], dtype=torch.float64))
        target.energy_scale.copy_(torch.tensor(stats["energy_scale"], dtype=torch.float64))

    metrics_log = open(out_dir / "metrics.jsonl" if main else os.devnull, "a")
    # A fixed random subset of validation structures (both domains), restricted to elements seen in training.
    known = set(stats["elements"])
    val = [g for g in splits.get("val", []) if set(g[K.ATOMIC_NUMBERS].tolist()) <= known]
    order = np.random.default_rng(recipe.seed).permutation(len(val))[: recipe.max_eval_structures]
    val = [val[i] for i in sorted(order)]
    clock = time.process_time if recipe.budget_clock == "cpu" else time.perf_counter
    start = clock() - trained_seconds
    epoch_iter = _train_batches(splits["train"], recipe, step, accelerator.process_index, accelerator.num_processes)
    several = accelerator.num_processes > 1
    model.train()
    stop_reason = "max_steps"
    last_log = time.perf_counter()
    first_step = step  # logged whatever it is, so a resumed or continued run shows where it starts
    while step < recipe.max_steps:
        trained_seconds = clock() - start
        out_of_time = recipe.max_minutes is not None and trained_seconds / 60 > recipe.max_minutes
        if several:  # the main process's clock decides for all (they must take the same number of steps)
            out_of_time = bool(accelerator.reduce(torch.tensor([float(out_of_time and main)], device=device)).item())
        if out_of_time:
            stop_reason = "max_minutes"
            break
        batch, fraction = next(epoch_iter)
        batch = graph_to(batch, torch.float32, device)
        has_stress = bool(torch.isfinite(batch[K.REF_STRESS]).any())
        out = model(batch, compute_forces=True, compute_stress=has_stress, create_graph=True)
        loss, logs = _weighted_loss(out, batch, weights, len(config.domains))
        optimizer.zero_grad(set_to_none=True)
        # DDP averages the processes' gradients: scaled by its share of the batch times the number of processes,
        # each contributes in proportion to its structures, as one process on the whole batch would
        accelerator.backward(loss * (fraction * accelerator.num_processes) if several else loss)
        if several:
            loss = accelerator.reduce(loss.detach() * fraction, "sum")
        accelerator.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * lr_factor(recipe, step, trained_seconds)
        optimizer.step()
        ema.update_parameters(accelerator.unwrap_model(model))
        step += 1
        if time.perf_counter() - last_log > 30 or step == first_step + 1:
            last_log = time.perf_counter()
            rate = step / max(clock() - start, 1e-9)  # since the first run
            console.print(
                f"step {step:6d} loss {float(loss.detach()):.4g} lr {optimizer.param_groups[0]['lr']:.2e} "
                + " ".join(f"{k} {v:.3g}" for k, v in sorted(logs.items()))
                + f" ({rate:.2f} it/s)"
            )
            metrics_log.write(json.dumps({"step": step, "loss": float(loss.detach()), **logs}) + "\n")
            metrics_log.flush()
        if step % recipe.eval_every == 0 and val and main:
            metrics = {"step": step, **{f"val_{k}": v for k, v in evaluate(ema.module, val).items()}}
            console.print(f"[green]eval[/] {metrics}")
            # a usable snapshot while training continues (fine-tuning and tools can try it early)
            if main:
                ema.module.save_pretrained(str(out_dir / "latest"))
            metrics_log.write(json.dumps(metrics) + "\n")
            metrics_log.flush()
        if step % recipe.checkpoint_every == 0:
            _checkpoint(accelerator, state_dir, progress_path, step, clock() - start)
            _export_progress(progress_dir, ema.module, stats_path, recipe, step, clock() - start)
    _checkpoint(accelerator, state_dir, progress_path, step, clock() - start)
    _export_progress(progress_dir, ema.module, stats_path, recipe, step, clock() - start)
    metrics_log.close()
    if not main:  # the main process exports and evaluates the (identical) EMA weights
        accelerator.wait_for_everyone()
        return out_dir / "final"

    final_dir = out_dir / "final"
    final = ema.module
    final.config.pretraining = {
        "steps": step,
        "stop_reason": stop_reason,
        "recipe": recipe.model_dump(),
        "statistics": {k: v for k, v in stats.items() if k not in ("atomic_energies", "energy_scale")},
    }
    final.save_pretrained(str(final_dir))
    test_metrics = _split_metrics(final, splits)
    (out_dir / "test_metrics.json").write_text(json.dumps(test_metrics, indent=1))
    console.print(f"[bold]held-out metrics[/]: {json.dumps(test_metrics, indent=1)}")
    plot_learning_curve(out_dir / "metrics.jsonl", out_dir / "learning_curve.png")
    accelerator.wait_for_everyone()
    return final_dir


def _train_batches(train: list[dict], recipe: PretrainRecipe, step: int, rank: int = 0, world: int = 1):
    """Shuffled training batches from ``step`` on, forever, as ``(batch, share)``: this process's part of each
    global batch of ``batch_size`` structures (``rank::world``) and its share of the batch.

    Each epoch's order depends only on (seed, epoch), so a resumed run sees exactly the batches the killed run
    would have seen next, and every process draws the same global batches. A process left without structures
    (a last batch smaller than the number of processes) gets the batch's first structure with share 0: it must
    still run the step, and adds nothing.
    """
    from triscale.foundation.graph import collate

    per_epoch = math.ceil(len(train) / recipe.batch_size)
    epoch, skip = divmod(step, per_epoch)
    while True:
        generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train), generator=generator).tolist()
        for i, start in enumerate(range(0, len(order), recipe.batch_size)):
            if i < skip:
                continue
            graphs = [train[j] for j in order[start : start + recipe.batch_size]]
            if world == 1:
                yield collate(graphs), 1.0
                continue
            mine = graphs[rank::world]
            yield (collate(mine), len(mine) / len(graphs)) if mine else (collate(graphs[:1]), 0.0)
        epoch, skip = epoch + 1, 0


def _checkpoint(accelerator, state_dir: Path, progress_path: Path, step: int, trained_seconds: float) -> None:
    # Write the state first, then the step counter (atomically): a kill in between resumes from the older step
    # with newer weights at worst, never from a half-written state.
    accelerator.save_state(str(state_dir))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(progress_path, {"step": step, "trained_seconds": trained_seconds}, indent=None)


def _export_progress(
    progress_dir: Path | None, ema_model, stats_path: Path, recipe: PretrainRecipe, step: int, trained_seconds: float
) -> None:
    """The small, committable copy of the run: EMA weights, statistics and progress.json (written last)."""
    if progress_dir is None:
        return
    import os
    import shutil
    import tempfile

    progress_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=progress_dir, prefix=".tmp-") as tmp:
        ema_model.save_pretrained(tmp)
        for name in os.listdir(tmp):  # each file replaced atomically
            os.replace(os.path.join(tmp, name), progress_dir / name)
    if stats_path.exists():
        shutil.copyfile(stats_path, progress_dir / ".statistics.json.tmp")
        os.replace(progress_dir / ".statistics.json.tmp", progress_dir / "statistics.json")
    atomic_write_json(
        progress_dir / "progress.json",
        {
            "step": step,
            "trained_seconds": round(trained_seconds, 3),
            "weights": "EMA",
            "recipe": recipe.model_dump(mode="json"),
        },
        indent=1,
    )


def _split_metrics(model, splits) -> dict[str, dict[str, float]]:
    """Held-out metrics per split and domain, on structures whose elements all occur in training.

    A held-out prototype can bring an element no training structure has (its E0 is unknown); those structures are
    counted as ``n_excluded_unseen_element`` rather than silently scored.
    """
    model = model.eval()
    known = set(model.config.elements or [])
    result = {}
    for split in ("val", "test"):
        for d, name in enumerate(model.config.domains):
            subset = [g for g in splits.get(split, []) if int(g[K.DOMAIN][0]) == d]
            covered = [g for g in subset if set(g[K.ATOMIC_NUMBERS].tolist()) <= known]
            if covered:
                result[f"{split}/{name}"] = {
                    "n_structures": len(covered),
                    "n_excluded_unseen_element": len(subset) - len(covered),
                    **evaluate(model, covered),
                }
    return result


def plot_learning_curve(metrics_path: Path, png_path: Path) -> None:
    """Training MAEs and validation MAEs against step, one panel per label kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    kinds = ["energy", "forces", "stress", "dipole"]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.5))
    for ax, kind in zip(axes, kinds):
        for key in sorted({k for r in rows for k in r if k.endswith(f"mae_{kind}") or f"{kind}_mae" in k}):
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=key, marker="." if key.startswith("val") else None)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(kind)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
