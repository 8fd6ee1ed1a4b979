"""Split-conformal uncertainty for the neural operators, calibrated on held-out solver data.

Each shipped operator carries a ``conformal.json`` next to its weights, written by this module from ``n`` fresh
inputs (seed 3; training used seed 1, the benchmark's test set seed 2) solved by the reference solver. It holds
three sets of calibration scores (:class:`triscale.uncertainty.SplitConformal`):

* ``rel_l2``: the per-sample relative L2 error. Its conformal quantile is an **error bound**: for an input from
  the training distribution, ``P(||M(x) - y|| / ||y|| <= bound) >= 1 - alpha``.
* ``band``: ``max_x |M(x) - y| / rms(M(x))`` per sample, so ``M(x) ± q * rms(M(x))`` is a **simultaneous band**
  that contains the whole true field with probability ``>= 1 - alpha`` (``rms`` is the prediction's root mean
  square over the grid, a function of the prediction only, so the band scales with the field).
* ``input``: a Mahalanobis distance of a few input statistics (mean, log std, log spectral centroid and, in 2D,
  the log ratio of x- to y-gradient energy) from the calibration inputs; its conformal p-value flags inputs unlike
  the training law **without a solver run** (p < 0.01 happens for 1 % of in-distribution inputs). The statistics'
  mean and covariance come from the first half of the calibration inputs, the scores from the second half, so
  the p-values stay valid. For a group-equivariant operator the statistic is the minimum over the input's
  rotations (and reflections for p4m): the model's error is the same on every member of an input's orbit, so an
  input is only unusual *for it* if its whole orbit is.

The guarantees hold for inputs drawn like the training inputs. The benchmark (``benchmarks/neural_operator.py
--conformal``) measures what happens under a shift: 90°-rotated inputs (the NS training law is anisotropic, so
the rotations are out of distribution; the G-FNO's errors and coverage do not change, the FNO's do) and a finer
grid.

    python -m triscale.continuum.conformal [--models ns2d-fno ...] [--n 400] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from triscale.uncertainty import SplitConformal, conformal_pvalue

__all__ = [
    "CALIBRATION_FILE",
    "CALIBRATION_SEED",
    "OperatorCalibration",
    "calibrate_operator",
    "load_calibration",
    "input_features",
    "field_rms",
    "predict_batched",
]

CALIBRATION_FILE = "conformal.json"
CALIBRATION_SEED = 3


def field_rms(pred: Any) -> np.ndarray:
    """Root mean square of each sample's field over its grid (``(B, ...)`` -> ``(B,)``)."""
    p = np.asarray(pred, dtype=np.float64)
    return np.sqrt(np.mean(p.reshape(len(p), -1) ** 2, axis=1))


def input_features(x: Any, dim: int) -> np.ndarray:
    """Per-sample input statistics ``(B, 3 or 4)``: mean, log std, log spectral centroid ``sum |k| P / sum P``
    and (2D) ``log(sum kx^2 P / sum ky^2 P)`` (an orientation statistic). ``x``: ``(B, 1, *grid)`` or
    ``(B, *grid)``."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == dim + 2:
        a = a[:, 0]
    axes = tuple(range(1, dim + 1))
    mean = a.mean(axis=axes)
    std = a.std(axis=axes)
    c = a - mean.reshape((-1,) + (1,) * dim)
    power = np.abs(np.fft.fftn(c, axes=axes)) ** 2
    ks = np.meshgrid(*[np.fft.fftfreq(n, d=1.0 / n) for n in a.shape[1:]], indexing="ij")
    kabs = np.sqrt(sum(k**2 for k in ks))
    tot = power.sum(axis=axes) + 1e-300
    feats = [mean, np.log(std + 1e-300), np.log((kabs * power).sum(axis=axes) / tot + 1e-300)]
    if dim == 2:
        px = (ks[0] ** 2 * power).sum(axis=axes) + 1e-300
        py = (ks[1] ** 2 * power).sum(axis=axes) + 1e-300
        feats.append(np.log(px / py))
    return np.stack(feats, axis=1)


def predict_batched(model: torch.nn.Module, x: torch.Tensor, batch: int = 50) -> torch.Tensor:
    """The operator on ``x`` (``(B, 1, *grid)``) in batches, no grad, returned as float64."""
    dtype = next(model.parameters()).dtype
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch].to(dtype)) for i in range(0, len(x), batch)]).double()


@dataclass
class OperatorCalibration:
    """The conformal calibration of one operator (see the module docstring)."""

    rel_l2: SplitConformal
    band: SplitConformal
    input_scores: np.ndarray
    feature_mean: np.ndarray
    feature_cov_inv: np.ndarray
    dim: int
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- uncertainty of a prediction

    def error_bound(self, confidence: float = 0.9) -> float:
        """Relative L2 error not exceeded with probability ``>= confidence`` (in distribution)."""
        return self.rel_l2.quantile(1.0 - confidence)

    def band_interval(self, pred: Any, confidence: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Simultaneous band ``pred ∓ q * rms(pred)`` around predictions ``(B, ...)``."""
        return self.band.interval(pred, field_rms(pred), alpha=1.0 - confidence)

    def band_half_width(self, pred: Any, confidence: float = 0.9) -> np.ndarray:
        return self.band.quantile(1.0 - confidence) * field_rms(pred)

    def input_pvalue(self, x: Any) -> np.ndarray:
        """Conformal p-values of inputs ``(B, 1, *grid)`` against the calibration inputs (small: unusual)."""
        return conformal_pvalue(
            self.input_scores,
            _input_scores(x, self.dim, self.group, self.feature_mean, self.feature_cov_inv),
        )

    # ---- evaluation on labelled data

    def evaluate(self, x: Any, pred: Any, true: Any, confidence: float = 0.9) -> dict[str, float]:
        """Coverage of the error bound and of the band on labelled data, and the input-p-value alarm rate."""
        from triscale.uncertainty import nonconformity_scores

        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(true, dtype=np.float64)
        rel = np.linalg.norm((p - t).reshape(len(p), -1), axis=1) / np.linalg.norm(t.reshape(len(t), -1), axis=1)
        s_band = nonconformity_scores(p, t, field_rms(p), reduce="max")
        alpha = 1.0 - confidence
        lo, hi = self.rel_l2.expected_coverage(len(p), alpha=alpha, confidence=0.99)
        return {
            "n": len(p),
            "mean_rel_l2": float(rel.mean()),
            "error_bound": self.error_bound(confidence),
            "coverage_error_bound": float(np.mean(rel <= self.error_bound(confidence))),
            "coverage_band": float(np.mean(s_band <= self.band.quantile(alpha))),
            "coverage_expected_lo": lo,
            "coverage_expected_hi": hi,
            "input_alarm_rate_p01": float(np.mean(self.input_pvalue(x) < 0.01)),
        }

    # ---- (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "rel_l2": self.rel_l2.to_dict(),
            "band": self.band.to_dict(),
            "input": {
                "scores": [float(f"{v:.7g}") for v in np.sort(self.input_scores)],
                "feature_mean": self.feature_mean.tolist(),
                "feature_cov_inv": self.feature_cov_inv.tolist(),
                "dim": self.dim,
                "group": self.group,
            },
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OperatorCalibration:
        inp = d["input"]
        return cls(
            SplitConformal.from_dict(d["rel_l2"]),
            SplitConformal.from_dict(d["band"]),
            np.asarray(inp["scores"], dtype=np.float64),
            np.asarray(inp["feature_mean"], dtype=np.float64),
            np.asarray(inp["feature_cov_inv"], dtype=np.float64),
            int(inp["dim"]),
            inp.get("group"),
            dict(d.get("meta", {})),
        )

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        if p.is_dir():
            p = p / CALIBRATION_FILE
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return p


def _orbit(x: np.ndarray, dim: int, group: str | None) -> list[np.ndarray]:
    if dim != 2 or not group:
        return [x]
    out = [np.rot90(x, k, axes=(-2, -1)) for k in range(4)]
    if group == "p4m":
        out += [np.flip(o, axis=-1) for o in out]
    return out


def _input_scores(x: Any, dim: int, group: str | None, mu: np.ndarray, cov_inv: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of the input statistics, minimised over the group orbit for equivariant models."""
    a = np.asarray(x, dtype=np.float64)
    best = None
    for xo in _orbit(a, dim, group):
        d = input_features(xo, dim) - mu
        s = np.sqrt(np.einsum("bi,ij,bj->b", d, cov_inv, d))
        best = s if best is None else np.minimum(best, s)
    return best


def calibrate_operator(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, meta: dict[str, Any] | None = None
) -> OperatorCalibration:
    """Calibrate ``model`` on held-out inputs ``x`` and solver outputs ``y`` (``(B, 1, *grid)``; data the model
    never trained on). ``B`` >= 20; 200-500 give stable bounds at 90 %."""
    if len(x) < 20:
        raise ValueError("need at least 20 calibration samples")
    pred = predict_batched(model, x).numpy()
    true = y.double().numpy()
    rel = np.linalg.norm((pred - true).reshape(len(x), -1), axis=1) / np.linalg.norm(true.reshape(len(x), -1), axis=1)
    dim = x.dim() - 2
    group = getattr(getattr(model, "cfg", None), "group", None) if dim == 2 else None
    xa = x.double().numpy()
    half = len(x) // 2
    feats = input_features(xa[:half], dim)  # statistics' mean/covariance from the first half
    mu = feats.mean(axis=0)
    cov_inv = np.linalg.inv(np.cov(feats, rowvar=False) + 1e-9 * np.eye(feats.shape[1]))
    in_scores = _input_scores(xa[half:], dim, group, mu, cov_inv)
    m = dict(meta or {})
    return OperatorCalibration(
        rel_l2=SplitConformal(rel, alpha=0.1, meta={"score": "per-sample relative L2 error"}),
        band=SplitConformal.calibrate(
            pred, true, field_rms(pred), alpha=0.1, reduce="max", meta={"score": "max |pred - true| / rms(pred)"}
        ),
        input_scores=in_scores,
        feature_mean=mu,
        feature_cov_inv=cov_inv,
        dim=dim,
        group=group,
        meta=m,
    )


def _model_dir(name_or_dir: str | Path) -> Path:
    from triscale.common import find_checkpoint
    from triscale.continuum.operators import CHECKPOINT_DIR, CONFIG_NAME

    return find_checkpoint(name_or_dir, CHECKPOINT_DIR, CONFIG_NAME)


def load_calibration(name_or_dir: str | Path) -> OperatorCalibration | None:
    """The calibration shipped with an operator (by name or checkpoint directory); ``None`` if it has none."""
    p = _model_dir(name_or_dir) / CALIBRATION_FILE
    if not p.is_file():
        return None
    return OperatorCalibration.from_dict(json.loads(p.read_text()))


def main(argv: list[str] | None = None) -> None:
    from triscale.continuum.data import generate
    from triscale.continuum.operators import load_operator, shipped_operators

    ap = argparse.ArgumentParser(description="Write conformal.json for operator checkpoints from fresh solver data.")
    ap.add_argument("--models", nargs="*", default=None, help="Default: every shipped operator.")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for name in a.models or shipped_operators():
        model = load_operator(name)
        task = model.cfg.task["name"]
        if task not in cache:
            c0 = time.process_time()
            x, y, _ = generate(task, a.n, a.seed)
            cache[task] = (x, y, time.process_time() - c0)
        x, y, cpu = cache[task]
        cal = calibrate_operator(
            model,
            x,
            y,
            meta={
                "model": name,
                "task": task,
                "n": a.n,
                "seed": a.seed,
                "data": "fresh inputs from the training law, solved by the reference solver",
                "data_cpu_seconds": round(cpu, 1),
                "torch": torch.__version__,
            },
        )
        path = cal.save(_model_dir(name))
        print(
            f"{name}: n={a.n}, 90 % error bound {cal.error_bound(0.9):.2%}, 95 % {cal.error_bound(0.95):.2%}, "
            f"band q90 {cal.band.quantile(0.1):.3f} x rms -> {path}"
        )
        if not math.isfinite(cal.error_bound(0.99)):
            print(f"  (n={a.n} is too small for a finite 99 % bound)")


if __name__ == "__main__":
    main()
