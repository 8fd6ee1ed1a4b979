"""Data-parallel training on several processes (``accelerate launch``, torchrun): the few collective steps the
training loops need. In a single process every function is a no-op that returns the single-process answer.

The scheme (fine-tuning's :class:`~triscale.finetune.loop.TrainLoop` and pretraining): every process draws the same
global batch from the same seeded generator and keeps its share (:func:`shard`, graphs ``rank::world``); each
computes its loss on its share and the gradients are averaged weighted by the share's size
(:func:`reduce_gradients`), so the step equals one process on the whole batch for a loss that is a mean over
structures (exactly for per-structure terms, to within the atom-count weighting for per-atom ones). All processes
then take the same optimizer step; only the main process writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "Shard",
    "barrier",
    "broadcast_parameters",
    "gather_objects",
    "init_from_env",
    "is_main",
    "reduce_gradients",
    "shard",
    "world",
]


class Shard(NamedTuple):
    """This process's part of a global batch (``batch`` None when the part is empty) and its share of the batch."""

    batch: Any
    fraction: float


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def launched() -> bool:
    """Whether this process was started as one of several (``WORLD_SIZE`` > 1, as accelerate launch/torchrun set)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init_from_env(cpu: bool = True) -> None:
    """Join the process group that ``accelerate launch`` (or torchrun) describes in the environment; nothing when
    this is a single process or the group exists. ``cpu``: gloo (CPU tensors), as fine-tuning needs."""
    if not launched() or _active():
        return
    from accelerate import PartialState

    PartialState(cpu=cpu)


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a process group."""
    if not _active():
        return 0, 1
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if _active():
        torch.distributed.barrier()


def shard(items: Sequence[Any]) -> tuple[list[Any], float]:
    """This process's items of a global batch (``rank::world``) and their share of it."""
    rank, size = world()
    if size == 1:
        return list(items), 1.0
    mine = list(items[rank::size])
    return mine, len(mine) / max(1, len(items))


def reduce_gradients(params: Iterable[torch.nn.Parameter], fraction: float, loss: float | None) -> float:
    """Average the gradients of ``params`` over the processes, each weighted by its ``fraction`` of the batch, and
    return the batch's loss (the same weighting of each process's ``loss``; None: this process had no items).

    One all-reduce of a flat buffer; a missing gradient counts as zero. In a single process: ``loss`` unchanged."""
    params = list(params)
    if not _active():
        return float("nan") if loss is None else float(loss)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    weight = 0.0 if loss is None else float(fraction)
    flat = torch.cat([g.detach().reshape(-1).to(torch.float64) * weight for g in grads])
    value = 0.0 if loss is None else float(loss)
    tail = torch.tensor([weight * value, weight], dtype=torch.float64, device=flat.device)
    buf = torch.cat([flat, tail])
    torch.distributed.all_reduce(buf)
    total = float(buf[-1])
    if total <= 0:
        raise RuntimeError("no process had items in this batch")
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = (buf[offset : offset + n] / total).reshape(g.shape).to(p.dtype)
        offset += n
    return float(buf[-2]) / total


def broadcast_parameters(params: Iterable[torch.Tensor], src: int = 0) -> None:
    """Make every process's tensors equal to those of ``src`` (e.g. after initialisation or a resume)."""
    if not _active():
        return
    with torch.no_grad():
        for p in params:
            torch.distributed.broadcast(p.data, src)


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def any_true(flag: bool) -> bool:
    """Whether ``flag`` is set on any process (a stop decision all processes must share)."""
    if not _active():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0])
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)
