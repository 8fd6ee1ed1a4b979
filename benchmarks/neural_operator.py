"""Neural-operator benchmark: the shipped FNO / G-FNO checkpoints against our reference solvers, next to the
published figures.

For each shipped operator it draws a fresh held-out test set (seed 2; the training data used seed 1), solves it
with the reference solver, and prints side by side:

* relative L2 error on held-out inputs, on 90°-rotated inputs and on reflected inputs (the true solution of a
  transformed input is the transformed solution, because the PDE has that symmetry: NS with the symmetric
  forcing under rotations; Darcy under all eight symmetries of the square; Burgers under x -> -x, u -> -u);
* the equivariance error ``max ||M(T x) - T M(x)|| / ||M(x)||`` over the test inputs and the task's symmetries,
  in float64;
* CPU time per sample (single thread, process time, batched over the test set) of the solver and of the
  operator, and their ratio (speed-up);
* the published numbers: FNO paper (Li et al. 2021) Burgers ~1.5 %, Darcy ~1.1 %; G-FNO paper (Helwig et al.
  2023) on rotated NS test inputs FNO 129 % vs G-FNO 4.8 %.

    OMP_NUM_THREADS=1 python benchmarks/neural_operator.py [--n-test 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PUBLISHED = {
    ("burgers1d", "fno"): "FNO paper: 1.5 % (nu=0.1, s=256-8192)",
    ("darcy2d", "fno"): "FNO paper: 1.1 % (s=85)",
    ("ns2d", "fno"): "G-FNO paper, rotated NS test: FNO 129 %",
    ("ns2d", "gfno"): "G-FNO paper, rotated NS test: G-FNO 4.8 %",
    ("darcy2d", "gfno"): "-",
}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def evaluate(name: str, n_test: int, seed: int = 2, conformal: bool = False) -> dict:
    import torch

    from triscale.continuum.data import TASKS, draw_inputs, relative_l2, solve_task, symmetries, to_model_grid
    from triscale.continuum.operators import load_operator, transform_field

    model = load_operator(name, dtype=torch.float32)
    task = model.cfg.task["name"]
    u0 = draw_inputs(task, n_test, seed)
    c0 = time.process_time()
    u1 = solve_task(task, u0, batch_size=n_test)
    solver_cpu = (time.process_time() - c0) / n_test
    x = to_model_grid(task, u0).unsqueeze(1).float()
    y = to_model_grid(task, u1).unsqueeze(1).double()

    def predict(inp: torch.Tensor, m=model) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([m(inp[i : i + 50]) for i in range(0, len(inp), 50)]).double()

    predict(x[:2])  # warm-up
    c0 = time.process_time()
    pred = predict(x)
    model_cpu = (time.process_time() - c0) / n_test
    res = {
        "model": name,
        "task": task,
        "kind": model.cfg.kind,
        "group": model.cfg.group,
        "n_test": n_test,
        "held_out": float(relative_l2(pred, y).mean()),
        "mean_baseline": float(relative_l2(y.mean(0, keepdim=True).expand_as(y), y).mean()),
        "solver_cpu_s": solver_cpu,
        "model_cpu_s": model_cpu,
        "speedup": solver_cpu / model_cpu,
        "training": model.cfg.training,
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    rot, refl, equiv = [], [], []
    m64 = load_operator(name, dtype=torch.float64)
    x64 = x.double()[:20]
    p64 = predict(x64, m64)
    for label, r, s, sign in symmetries(task):
        if TASKS[task].dim == 1:
            xt = sign * torch.flip(x, dims=(-1,))
            yt = sign * torch.flip(y, dims=(-1,))
            e_in = sign * torch.flip(x64, dims=(-1,))
            e_out = sign * torch.flip(p64, dims=(-1,))
        else:
            xt, yt = sign * transform_field(x, r, s), sign * transform_field(y, r, s)
            e_in, e_out = sign * transform_field(x64, r, s), sign * transform_field(p64, r, s)
        err = float(relative_l2(predict(xt), yt).mean())
        (refl if s else rot).append((label, err))
        equiv.append(float(relative_l2(predict(e_in, m64), e_out).max()))
    res["transformed"] = dict(rot + refl)
    res["rot90"] = dict(rot).get("rot90")
    res["reflect"] = dict(refl).get("reflect")
    res["equivariance_error"] = max(equiv)
    if conformal:
        res["conformal"] = conformal_coverage(name, model, task, u0, u1, x, y, pred)
    return res


def conformal_coverage(name, model, task, u0, u1, x, y, pred, confidence: float = 0.9) -> dict:
    """Coverage of the shipped split-conformal error bound and band (calibrated on seed-3 solver data) on this
    test set, on its 90°-rotated inputs (2D) and on a finer grid (a resolution shift: 2x for the periodic tasks,
    Darcy on its 97x97 solver grid, 3x)."""

    from triscale.continuum.conformal import load_calibration, predict_batched
    from triscale.continuum.data import TASKS, fourier_resample
    from triscale.continuum.operators import transform_field

    cal = load_calibration(name)
    if cal is None:
        return {}
    spec = TASKS[task]
    out = {"in_distribution": cal.evaluate(x, pred, y, confidence)}
    if spec.dim == 2:
        xr, yr = transform_field(x, 1), transform_field(y, 1)
        out["rot90"] = cal.evaluate(xr, predict_batched(model, xr), yr, confidence)
    if spec.domain == "periodic":
        m = 2 * spec.resolution
        xf = fourier_resample(u0, m, spec.dim).unsqueeze(1)
        yf = fourier_resample(u1, m, spec.dim).unsqueeze(1)
    else:
        stride = (spec.solver_resolution - 1) // (2 * (spec.resolution - 1))
        xf, yf = u0[:, ::stride, ::stride].unsqueeze(1), u1[:, ::stride, ::stride].unsqueeze(1)
    r = cal.evaluate(xf, predict_batched(model, xf.float()), yf, confidence)
    r["grid"] = list(xf.shape[2:])
    out["finer_grid"] = r
    return out


def conformal_table(results: list[dict], confidence: float = 0.9) -> str:
    lines = [
        f"| operator | {confidence:.0%} error bound | coverage in distribution (expected range) | band coverage "
        "| rotated: mean error / bound coverage / band coverage | finer grid: grid, mean error / coverage / band "
        "| input alarms p<0.01: held-out / rotated / finer grid |",
        "|" + "---|" * 7,
    ]
    for r in results:
        c = r.get("conformal") or {}
        if not c:
            continue
        i, f, rot = c["in_distribution"], c["finer_grid"], c.get("rot90")
        rot_s = (
            f"{_pct(rot['mean_rel_l2'])} / {_pct(rot['coverage_error_bound'])} / {_pct(rot['coverage_band'])}"
            if rot
            else "n/a"
        )
        alarms = " / ".join(_pct(d["input_alarm_rate_p01"]) if d else "n/a" for d in (i, rot, f))
        lines.append(
            f"| {r['model']} | {_pct(i['error_bound'])} | {_pct(i['coverage_error_bound'])} "
            f"({_pct(i['coverage_expected_lo'])}-{_pct(i['coverage_expected_hi'])}) | {_pct(i['coverage_band'])} "
            f"| {rot_s} | {'x'.join(map(str, f['grid']))}, {_pct(f['mean_rel_l2'])} / "
            f"{_pct(f['coverage_error_bound'])} / {_pct(f['coverage_band'])} | {alarms} |"
        )
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    head = (
        "| operator | task | params | held-out rel. L2 | 90°-rotated inputs | reflected inputs | equivariance error "
        "| solver CPU s/sample | operator CPU s/sample | speed-up | published |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r['model']} | {r['task']} | {r['n_parameters']:,} | {_pct(r['held_out'])} | {_pct(r['rot90'])} "
            f"| {_pct(r['reflect'])} | {r['equivariance_error']:.1e} | {r['solver_cpu_s']:.3g} | "
            f"{r['model_cpu_s']:.2g} | {r['speedup']:.0f}x | {PUBLISHED.get((r['task'], r['kind']), '-')} |"
        )
    return "\n".join(lines)


def details(results: list[dict]) -> str:
    lines = ["| operator | all transformed-input errors | mean-output baseline | training |", "|---|---|---|---|"]
    for r in results:
        t = r["training"]
        tr = ", ".join(f"{k} {_pct(v)}" for k, v in r["transformed"].items())
        cpu = (t.get("cpu_seconds_this_run") or 0) + (t.get("data_cpu_seconds") or 0)
        lines.append(
            f"| {r['model']} | {tr} | {_pct(r['mean_baseline'])} | {t.get('epochs')} epochs, {t.get('n_train')} "
            f"samples, val {_pct(t.get('best_val_rel_l2'))}, ~{cpu / 60:.1f} CPU-min incl. data |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description="Neural operators vs reference solvers and published figures.")
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--models", nargs="*", default=None, help="Default: every shipped operator.")
    p.add_argument("--json", default=None, help="Also write the raw results here.")
    p.add_argument(
        "--conformal",
        action="store_true",
        help="Also measure the shipped conformal bounds' coverage (in/out of distribution).",
    )
    a = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from triscale.continuum.operators import shipped_operators

    names = a.models or shipped_operators()
    results = [evaluate(n, a.n_test, conformal=a.conformal) for n in names]
    print(f"Held-out test sets: {a.n_test} fresh inputs per task (seed 2), torch {torch.__version__}, 1 CPU thread.\n")
    print(table(results))
    print()
    print(details(results))
    if a.conformal:
        print()
        print("Split-conformal uncertainty (calibrated on 400 fresh seed-3 solver samples; 90 % level):\n")
        print(conformal_table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
