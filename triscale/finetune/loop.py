"""The one training loop of fine-tuning, used by energy adapters, property heads and their committee members.

A task supplies its batches, its loss and its evaluation; :class:`TrainLoop` owns the rest: AdamW with gradient
clipping, the warmup + cosine (or constant) schedule, an optional EMA of the trainable weights, best-epoch selection
on the validation loss, early stopping, ``max_steps``, checkpoint/resume (bit-exact) and ``metrics.jsonl``.

Layout of ``out``::

    out/metrics.jsonl                one line per epoch: epoch, step, train_loss, lr, seconds, train_*, val_*, val_loss
    out/state/weights.safetensors    trainable tensors at the last checkpoint
    out/state/best.safetensors       trainable tensors of the best epoch so far
    out/state/ema.safetensors        EMA of the trainable tensors (``ema_decay`` set)
    out/state/optimizer.pt           optimizer, scheduler and data-order RNG
    out/state/progress.json          epoch, step, best epoch, stop reason and the training data's sha256

Several processes (``accelerate launch --num_processes N``, gloo on CPU): every process runs the same loop on the
same seeded batch order; a task's ``batches`` yields :meth:`TrainLoop.shard` of each global batch (this process's
graphs and their share), gradients are averaged weighted by the shares (:mod:`triscale.common.distributed`), and
only the main process writes ``metrics.jsonl`` and checkpoints; all of them read a checkpoint to resume.

Resuming refuses, with a message that says what to do, a checkpoint written for other training data (a different
``--data``, split or bootstrap sample), other trainable tensors, or one that cannot be read (corrupt, truncated).

The loop imports only torch/numpy/safetensors/rich, nothing of triscale, so it could move below ``finetune`` (e.g. to
``triscale/foundation/loop.py``) for pretraining to use, without breaking the layering ``finetune -> foundation``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triscale.common import atomic_write_bytes, atomic_write_json
from triscale.common import distributed as dist

#: keys of every training row of ``metrics.jsonl`` (a task adds its own ``train_*`` and ``val_*`` keys)
ROW_KEYS = ("epoch", "step", "train_loss", "lr", "seconds", "val_loss")
PROGRESS_KEYS = ("epoch", "step", "best_val_loss", "best_epoch", "bad_epochs", "stopped")
STOP_REASONS = ("epochs", "max_steps", "early_stopping")


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the run stops with a message instead of training on garbage."""


class ResumeError(ValueError):
    """A run's saved state cannot be resumed (other data, other trainable tensors, unreadable files)."""


class LaunchError(ValueError):
    """The run cannot go the way it was launched (e.g. a property head under ``accelerate launch``)."""


@dataclass(frozen=True)
class LoopSettings:
    """The optimisation settings of one run (a :class:`~triscale.finetune.recipe.FinetuneRecipe` gives them)."""

    epochs: int
    learning_rate: float
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    schedule: str = "cosine"
    patience: int = 30
    max_steps: int | None = None
    checkpoint_every: int = 1
    ema_decay: float | None = None
    progress: bool = False

    @classmethod
    def from_recipe(cls, recipe) -> LoopSettings:
        return cls(
            epochs=recipe.epochs,
            learning_rate=recipe.learning_rate,
            weight_decay=recipe.weight_decay,
            grad_clip=recipe.grad_clip,
            schedule=recipe.schedule,
            patience=recipe.patience,
            max_steps=recipe.max_steps,
            checkpoint_every=recipe.checkpoint_every,
            ema_decay=recipe.ema_decay,
            progress=recipe.progress,
        )


def lr_lambda(total_steps: int, schedule: str) -> Callable[[int], float]:
    """Learning-rate factor per step: ``constant``, or ``cosine`` (linear warmup, cosine decay to 5 %)."""
    warmup = max(1, min(50, total_steps // 20))

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def named_trainable(model) -> dict[str, torch.Tensor]:
    """The model's parameters that require gradients, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (by name) into the model's trainable parameters."""
    params = named_trainable(model)
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in named_trainable(model).items()}


def atomic_json(path: Path, data: dict) -> None:
    """Write JSON so that a reader sees the old or the new file, never half of one."""
    atomic_write_json(path, data, indent=1)


def graphs_sha256(*graph_sets: Sequence[dict[str, torch.Tensor]]) -> str:
    """sha256 of sets of labelled graphs in order (keys, dtypes, shapes and values): the identity of the data a run
    trains and selects on (e.g. its training and validation sets)."""
    h = hashlib.sha256()
    for graphs in graph_sets:
        h.update(f"set:{len(graphs)};".encode())
        for g in graphs:
            for key in sorted(g):
                t = g[key]
                if not isinstance(t, torch.Tensor):
                    continue
                t = t.detach().cpu().contiguous()
                h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
                h.update(t.numpy().tobytes() if t.numel() else b"")
            h.update(b"|")
    return h.hexdigest()


class TrainLoop:
    """Train ``model``'s trainable parameters for one run directory ``out``.

    ``data_sha256`` identifies the training data (e.g. :func:`graphs_sha256` of the training and validation sets);
    it is stored in the checkpoint and a resume with other data is refused.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        out: str | Path,
        settings: LoopSettings,
        *,
        seed: int,
        steps_per_epoch: int,
        data_sha256: str,
        console=None,
    ):
        self.model = model
        self.out = Path(out)
        self.settings = settings
        self.data_sha256 = data_sha256
        self.console = console
        self.state_dir = self.out / "state"
        self.metrics_path = self.out / "metrics.jsonl"
        self.params = [p for p in model.parameters() if p.requires_grad]
        total_steps = settings.epochs * steps_per_epoch
        if settings.max_steps is not None:
            total_steps = min(total_steps, settings.max_steps)
        self.total_steps = total_steps
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(total_steps, settings.schedule))
        #: the one source of randomness of the data order (and of anything else a task draws per batch)
        self.generator = torch.Generator().manual_seed(seed)
        self.progress: dict[str, Any] = {
            "epoch": 0,
            "step": 0,
            "best_val_loss": None,
            "best_epoch": 0,
            "bad_epochs": 0,
            "stopped": None,
            "data_sha256": data_sha256,
        }
        self.best: dict[str, torch.Tensor] | None = None
        self.ema: dict[str, torch.Tensor] | None = snapshot(model) if settings.ema_decay is not None else None
        self.resumed = False
        self.t0 = time.perf_counter()
        self.rank, self.world = dist.world()

    @property
    def is_main(self) -> bool:
        """Whether this process writes (the only one, or rank 0 of several)."""
        return self.rank == 0

    def shard(self, graphs: list, collate: Callable[[list], Any]) -> dist.Shard:
        """This process's part of a global batch of ``graphs``, collated (None when empty), with its share."""
        mine, fraction = dist.shard(graphs)
        return dist.Shard(collate(mine) if mine else None, fraction)

    # -----------------------------------------------------------------------------------------------------------
    # checkpoints
    def save(self) -> None:
        """Trainable weights, best and EMA (safetensors), optimizer/scheduler/RNG (torch.save), then the progress
        counter atomically: a kill in between resumes from the previous counter with at worst newer weights."""
        from safetensors.torch import save_file

        if not self.is_main:  # one writer; the others wait until the checkpoint is complete
            dist.barrier()
            return
        state_dir = self.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        save_file(
            {n: p.detach().cpu().contiguous() for n, p in named_trainable(self.model).items()},
            str(state_dir / "weights.safetensors"),
        )
        if self.best is not None:
            save_file({n: t.contiguous() for n, t in self.best.items()}, str(state_dir / "best.safetensors"))
        if self.ema is not None:
            save_file({n: t.contiguous() for n, t in self.ema.items()}, str(state_dir / "ema.safetensors"))
        buffer = io.BytesIO()
        torch.save(
            {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
            },
            buffer,
        )
        atomic_write_bytes(state_dir / "optimizer.pt", buffer.getvalue())
        atomic_json(state_dir / "progress.json", self.progress)
        dist.barrier()

    def _refuse(self, why: str) -> ResumeError:
        return ResumeError(
            f"cannot resume from {self.state_dir}: {why}; start over with --fresh (resume=False) or use a new --out"
        )

    def _read_progress(self) -> dict:
        path = self.state_dir / "progress.json"
        try:
            progress = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self._refuse(f"progress.json is unreadable ({type(err).__name__}: {err})") from None
        if not isinstance(progress, dict) or any(k not in progress for k in PROGRESS_KEYS):
            missing = [k for k in PROGRESS_KEYS if not isinstance(progress, dict) or k not in progress]
            raise self._refuse(f"progress.json is corrupt (missing {', '.join(missing)})")
        ok = (
            isinstance(progress["epoch"], int)
            and isinstance(progress["step"], int)
            and progress["epoch"] >= 0
            and progress["step"] >= 0
            and isinstance(progress["best_epoch"], int)
            and isinstance(progress["bad_epochs"], int)
            and (progress["best_val_loss"] is None or isinstance(progress["best_val_loss"], int | float))
            and (progress["stopped"] is None or progress["stopped"] in STOP_REASONS)
        )
        if not ok:
            raise self._refuse("progress.json is corrupt (a counter has a wrong type or value)")
        return progress

    def load(self) -> None:
        """Restore the state saved by :meth:`save`; :class:`ResumeError` if it is not this run's or unreadable."""
        from safetensors.torch import load_file

        progress = self._read_progress()
        saved = progress.get("data_sha256")
        if saved is not None and saved != self.data_sha256:
            raise self._refuse(
                f"it was trained on other data (sha256 {str(saved)[:12]}..., this run's training data has "
                f"{self.data_sha256[:12]}...): a different --data, split or seed would silently mix datasets"
            )
        try:
            weights = load_file(str(self.state_dir / "weights.safetensors"))
            best_path, ema_path = self.state_dir / "best.safetensors", self.state_dir / "ema.safetensors"
            best = load_file(str(best_path)) if best_path.exists() else None
            ema = load_file(str(ema_path)) if ema_path.exists() else None
            extra = torch.load(self.state_dir / "optimizer.pt", weights_only=True)
        except Exception as err:  # safetensors, pickle and zip errors of truncated or corrupt files
            raise self._refuse(f"the checkpoint is unreadable ({type(err).__name__}: {err})") from None
        params = named_trainable(self.model)
        for name, tensors in (("weights", weights), ("best", best), ("ema", ema)):
            if tensors is not None and set(tensors) != set(params):
                raise self._refuse(f"the checkpoint's {name} do not match this recipe's trainable tensors")
        if (self.ema is None) != (ema is None):
            raise self._refuse("the checkpoint was written with a different ema_decay setting")
        try:
            restore_trainable(self.model, weights)
            self.optimizer.load_state_dict(extra["optimizer"])
            self.scheduler.load_state_dict(extra["scheduler"])
            self.generator.set_state(extra["generator"])
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            raise self._refuse(f"the optimizer state does not fit ({type(err).__name__}: {err})") from None
        if saved is None and self.console is not None:
            self.console.print(f"[yellow]note[/]: {self.state_dir} records no data hash (older run); not checked")
        progress["data_sha256"] = self.data_sha256
        if progress["stopped"] in ("epochs", "max_steps"):  # limits may have been raised since; checked again
            progress["stopped"] = None
        self.progress, self.best, self.ema = progress, best, ema
        self.resumed = True

    def _open_log(self, resume: bool):
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (self.state_dir / "progress.json").exists():
            self.load()
            if not self.is_main:
                return open(os.devnull, "w")
            if self.console is not None:
                self.console.print(
                    f"[bold]resumed[/] {self.out} at epoch {self.progress['epoch']} (step {self.progress['step']})"
                )
            kept = []  # rows up to the checkpoint's epoch; later (or half-written) rows are trained again
            if self.metrics_path.exists():
                for line in self.metrics_path.read_text().splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                        if row["epoch"] <= self.progress["epoch"]:
                            kept.append(line + "\n")
            self.metrics_path.write_text("".join(kept))
        elif not self.is_main:
            return open(os.devnull, "w")
        elif self.metrics_path.exists():
            self.metrics_path.unlink()
        return open(self.metrics_path, "a")

    # -----------------------------------------------------------------------------------------------------------
    # EMA
    def _update_ema(self) -> None:
        decay = self.settings.ema_decay
        with torch.no_grad():
            for name, p in named_trainable(self.model).items():
                self.ema[name].mul_(decay).add_(p.detach().cpu(), alpha=1 - decay)

    def _evaluate(self, evaluate: Callable[[], dict | None]) -> tuple[dict | None, dict[str, torch.Tensor] | None]:
        """The task's evaluation (on the EMA weights if any) and those weights' snapshot when an EMA is kept."""
        if self.ema is None:
            return evaluate(), None
        raw = snapshot(self.model)
        restore_trainable(self.model, self.ema)
        try:
            return evaluate(), {n: t.clone() for n, t in self.ema.items()}
        finally:
            restore_trainable(self.model, raw)

    # -----------------------------------------------------------------------------------------------------------
    # the loop
    def fit(
        self,
        batches: Callable[[torch.Generator], Iterable[Any]],
        loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
        evaluate: Callable[[], dict | None],
        *,
        resume: bool = True,
        evaluate_start: bool = True,
        train_logs: Callable[[dict[str, list[float]]], dict] | None = None,
        describe: Callable[[dict], str] | None = None,
    ) -> dict:
        """Train until ``epochs``, ``max_steps`` or early stopping; leave the best epoch's weights in the model
        (eval mode) and return the progress (epoch, step, best_epoch, stopped, ...).

        ``batches(generator)``: one epoch of batches, every random draw from ``generator``; ``loss(batch)``: the
        scalar loss and per-batch logs (averaged over the epoch by ``train_logs``, default ``train_<key>``);
        ``evaluate()``: ``{"val_loss": ..., "val_...": ...}`` on the validation set, or None without one (then the
        training loss selects the best epoch); ``evaluate_start``: a row ``epoch 0`` before the first step.
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        log = self._open_log(resume)  # may load a checkpoint: self.progress is then the saved one
        dist.barrier()  # the main process has rewritten metrics.jsonl before anyone goes on
        dist.broadcast_parameters(self.params)  # one starting point for all processes
        settings, progress = self.settings, self.progress
        self.t0 = time.perf_counter()
        try:
            if evaluate_start and progress["epoch"] == 0:
                start, _ = self._evaluate(evaluate)
                if start is not None:
                    log.write(json.dumps({"epoch": 0, "step": 0, **start}) + "\n")
            bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
                disable=not settings.progress or self.console is None or not self.is_main,
            )
            with bar:
                task = bar.add_task("epochs", total=settings.epochs, completed=progress["epoch"], info="")
                while progress["epoch"] < settings.epochs and progress["stopped"] is None:
                    if settings.max_steps is not None and progress["step"] >= settings.max_steps:
                        progress["stopped"] = "max_steps"
                        break
                    row = self._train_epoch(batches, loss, train_logs)
                    val, weights = self._evaluate(evaluate)
                    row.update(val if val is not None else {"val_loss": row["train_loss"]})
                    if progress["best_val_loss"] is None or row["val_loss"] < progress["best_val_loss"]:
                        progress.update(best_val_loss=row["val_loss"], best_epoch=progress["epoch"], bad_epochs=0)
                        self.best = weights if weights is not None else snapshot(self.model)
                    else:
                        progress["bad_epochs"] += 1
                        if progress["bad_epochs"] >= settings.patience:
                            progress["stopped"] = "early_stopping"
                    if progress["stopped"] is None and settings.max_steps is not None:
                        if progress["step"] >= settings.max_steps:
                            progress["stopped"] = "max_steps"
                    if progress["epoch"] >= settings.epochs and progress["stopped"] is None:
                        progress["stopped"] = "epochs"
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.update(task, completed=progress["epoch"], info=describe(row) if describe else "")
                    if progress["epoch"] % settings.checkpoint_every == 0 or progress["stopped"]:
                        self.save()
        finally:
            log.close()
        if progress["stopped"] is None:
            progress["stopped"] = "max_steps" if settings.max_steps is not None else "epochs"
        if self.best is not None:
            restore_trainable(self.model, self.best)
        self.model.eval()
        return progress

    def _train_epoch(self, batches, loss, train_logs) -> dict:
        settings, progress = self.settings, self.progress
        self.model.train()
        losses: list[float] = []
        sums: dict[str, list[float]] = {}
        shares: list[dict[str, tuple[float, float]]] = []  # several processes: per step, key -> (share * value, share)
        for item in batches(self.generator):
            batch, fraction = item if isinstance(item, dist.Shard) else (item, 1.0)
            value, logs = loss(batch) if batch is not None else (None, {})
            self.optimizer.zero_grad(set_to_none=True)
            if self.world == 1:
                step_loss = float(value.detach())
                if math.isfinite(step_loss):
                    value.backward()
            else:  # every process reaches the all-reduce, also with a non-finite loss, so that all stop together
                if value is not None:
                    value.backward()
                step_loss = dist.reduce_gradients(self.params, fraction, None if value is None else value.detach())
                shares.append({k: (fraction * v, fraction) for k, v in logs.items()})
            if not math.isfinite(step_loss):
                raise TrainingDiverged(
                    f"The training loss became {step_loss} at step {progress['step'] + 1}: training "
                    f"diverged (learning rate {self.optimizer.param_groups[0]['lr']:.3g}). Lower lr (e.g. 10x), or "
                    "check the data for unphysical labels."
                )
            torch.nn.utils.clip_grad_norm_(self.params, settings.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if self.ema is not None:
                self._update_ema()
            progress["step"] += 1
            losses.append(step_loss)
            if self.world == 1:
                for k, v in logs.items():
                    sums.setdefault(k, []).append(v)
            if settings.max_steps is not None and progress["step"] >= settings.max_steps:
                break
        if self.world > 1:  # the batch's logs: share-weighted over the processes that had the key, step by step
            per_rank = dist.gather_objects(shares)
            for step in range(len(losses)):
                num: dict[str, list[float]] = {}
                for rank_steps in per_rank:
                    for k, (v, w) in rank_steps[step].items():
                        num.setdefault(k, [0.0, 0.0])
                        num[k][0] += v
                        num[k][1] += w
                for k, (v, w) in sorted(num.items()):
                    sums.setdefault(k, []).append(v / w if w > 0 else float("nan"))
        progress["epoch"] += 1
        row = {
            "epoch": progress["epoch"],
            "step": progress["step"],
            "train_loss": float(np.mean(losses)),
            "lr": self.scheduler.get_last_lr()[0],
            "seconds": time.perf_counter() - self.t0,
        }
        if train_logs is not None:
            row.update(train_logs(sums))
        else:
            row.update({f"train_{k}": float(np.mean(v)) for k, v in sums.items()})
        return row
