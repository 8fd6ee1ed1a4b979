"""Train a neural operator on data from our own solvers; resumable, time-limited, exported as safetensors.

    python -m triscale.continuum.train --task ns2d --kind gfno --epochs 200 --max-minutes 4 \
        --out runs/continuum/ns2d-gfno --export triscale/continuum/checkpoints/ns2d-gfno

Data are generated once per (task, n, seed) and cached as safetensors under ``--data-dir`` (default
``data/continuum``). The training state (weights, optimiser, epoch, best weights, history) is written to
``<out>/train_state.pt`` every ``--save-every`` epochs and when the time limit is hit; a rerun resumes from it.
Loss: the mean per-sample relative L2 error; Adam with weight decay and a cosine learning-rate schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from triscale.continuum.data import MODEL_DEFAULTS, TASKS, generate, relative_l2
from triscale.continuum.operators import OperatorConfig, build_operator, save_operator

__all__ = ["load_or_generate", "train_operator", "main"]


def load_or_generate(
    task: str,
    n: int,
    seed: int,
    data_dir: str | Path | None = "data/continuum",
    device: str = "cpu",
    workers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """``(x, y, info)`` for a task, from the safetensors cache in ``data_dir`` or freshly solved (then cached)."""
    from safetensors.torch import load_file, save_file

    path = Path(data_dir) / f"{task}_n{n}_seed{seed}.safetensors" if data_dir else None
    if path is not None and path.is_file():
        d = load_file(str(path))
        info = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
        return d["x"], d["y"], info
    x, y, info = generate(task, n, seed, device=device, workers=workers)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"x": x.contiguous(), "y": y.contiguous()}, str(path))
        path.with_suffix(".json").write_text(json.dumps(info, indent=1))
    return x, y, info


def _evaluate(model, x: torch.Tensor, y: torch.Tensor, batch: int = 100) -> float:
    model.eval()
    errs = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            errs.append(relative_l2(model(x[i : i + batch]), y[i : i + batch]))
    model.train()
    return float(torch.cat(errs).mean())


def train_operator(
    task: str,
    kind: str,
    out_dir: str | Path,
    *,
    epochs: int = 200,
    n_train: int = 1000,
    n_val: int = 100,
    batch_size: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    data_seed: int = 1,
    device: str = "cpu",
    max_minutes: float | None = None,
    save_every: int = 10,
    export_dir: str | Path | None = None,
    data_dir: str | Path | None = "data/continuum",
    workers: int = 1,
    overrides: dict[str, Any] | None = None,
    log=print,
) -> dict[str, Any]:
    """Train (or resume) one operator and export the best-validation weights; returns a summary dict."""
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = TASKS[task]
    x, y, data_info = load_or_generate(task, n_train + n_val, data_seed, data_dir, device, workers)
    x, y = x.float(), y.float()
    xt, yt, xv, yv = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    params = {**MODEL_DEFAULTS[(task, kind)], **(overrides or {})}
    cfg = OperatorConfig(
        kind=kind,
        dim=spec.dim,
        domain=spec.domain,
        name=f"{task}-{kind}",
        in_mean=float(xt.mean()),
        in_std=float(xt.std()),
        out_mean=float(yt.mean()),
        out_std=float(yt.std()),
        task=spec.to_dict(),
        **params,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weight init without touching the caller's RNG state
        torch.manual_seed(seed)
        model = build_operator(cfg)
    model = model.to(device)
    xt, yt, xv, yv = (t.to(device) for t in (xt, yt, xv, yv))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    state_path = out / "train_state.pt"
    epoch, total_epochs, best, history = 0, epochs, math.inf, []
    best_state = None
    if state_path.is_file():
        st = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        epoch, total_epochs, best, history = st["epoch"], st["total_epochs"], st["best"], st["history"]
        best_state = st["best_model"]
        log(f"[{task}-{kind}] resumed at epoch {epoch}/{total_epochs} (best val {best:.4f})")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{task}-{kind}] {n_params} parameters, {n_train} train / {n_val} val samples, device {device}")

    def save_state() -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
                "total_epochs": total_epochs,
                "best": best,
                "history": history,
                "best_model": best_state,
            },
            state_path,
        )

    t_train = time.perf_counter()
    epochs_this_run = 0
    while epoch < total_epochs:
        t_ep = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / total_epochs))
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        perm = perm.to(device)
        tot = 0.0
        for i in range(0, n_train, batch_size):
            idx = perm[i : i + batch_size]
            loss = relative_l2(model(xt[idx]), yt[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        epoch += 1
        epochs_this_run += 1
        val = _evaluate(model, xv, yv)
        history.append({"epoch": epoch, "train": tot / n_train, "val": val})
        if val < best:
            best = val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        dt = time.perf_counter() - t_ep
        if epochs_this_run == 1 and max_minutes is not None:
            # fit the cosine schedule into the time budget, measured on the first epoch
            fit = epoch + int((max_minutes * 60 - (time.perf_counter() - t_start)) / max(dt, 1e-6))
            if fit < total_epochs:
                total_epochs = max(fit, epoch + 1)
                log(f"[{task}-{kind}] time budget: schedule shortened to {total_epochs} epochs")
        if epoch % max(1, total_epochs // 20) == 0 or epoch == total_epochs:
            log(
                f"[{task}-{kind}] epoch {epoch}/{total_epochs} train {tot / n_train:.4f} val {val:.4f} "
                f"({dt:.2f} s/epoch)"
            )
        if epoch % save_every == 0:
            save_state()
        if max_minutes is not None and time.perf_counter() - t_start > max_minutes * 60:
            log(f"[{task}-{kind}] time limit reached at epoch {epoch}")
            break
    save_state()
    wall = time.perf_counter() - t_train
    summary = {
        "task": task,
        "kind": kind,
        "epochs": epoch,
        "scheduled_epochs": total_epochs,
        "n_train": n_train,
        "n_val": n_val,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "seed": seed,
        "data_seed": data_seed,
        "best_val_rel_l2": best,
        "final_train_rel_l2": history[-1]["train"] if history else None,
        "train_seconds_this_run": wall,
        "cpu_seconds_this_run": time.process_time() - cpu_start,
        "device": str(device),
        "torch": torch.__version__,
        "n_parameters": n_params,
        "data_solver_seconds_per_sample": data_info.get("solver_seconds_per_sample"),
        "data_device": data_info.get("device"),
        "data_cpu_seconds": data_info.get("cpu_seconds"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "history.json").write_text(json.dumps(history))
    if export_dir is not None and best_state is not None:
        model.load_state_dict(best_state)
        model.cfg.training = summary
        save_operator(model.cpu(), export_dir)
        log(f"[{task}-{kind}] exported best (val {best:.4f}) to {export_dir}")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--kind", required=True, choices=["fno", "gfno"])
    p.add_argument("--out", required=True)
    p.add_argument("--export", default=None)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--save-every", type=int, default=10, help="epochs between training-state saves")
    p.add_argument("--data-dir", default="data/continuum")
    p.add_argument("--workers", type=int, default=1, help="processes for the Darcy reference solves")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    train_operator(
        a.task,
        a.kind,
        a.out,
        epochs=a.epochs,
        n_train=a.n_train,
        n_val=a.n_val,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        device=a.device,
        max_minutes=a.max_minutes,
        export_dir=a.export,
        data_dir=a.data_dir,
        workers=a.workers,
        save_every=a.save_every,
    )


if __name__ == "__main__":
    main()
