"""Split-conformal prediction intervals for any predictor (atomistic committees, neural operators, ...).

Split conformal prediction (Vovk et al. 2005; Lei et al. 2018; tutorial: Angelopoulos & Bates 2021,
arXiv:2107.07511) turns the residuals of a model on a held-out *calibration* set into intervals with a
finite-sample guarantee: if the calibration and test pairs are exchangeable (drawn from the same distribution),
then for a fresh test pair

    P( |y - f(x)| <= q * s(x) ) >= 1 - alpha,

where the nonconformity score is ``r = |y - f(x)| / s(x)`` (``s = 1``: absolute residuals; ``s`` = committee or
ensemble standard deviation: normalised residuals, which give wider intervals where the committee disagrees) and
``q`` is the ``ceil((n + 1)(1 - alpha))``-th smallest of the ``n`` calibration scores (``inf`` when that index
exceeds ``n``). The guarantee is marginal (on average over inputs) and says nothing about inputs from another
distribution: that is what the out-of-distribution checks measure.

For fields (arrays per sample) the score can be reduced over a sample's points with ``max``: the interval is then
a *simultaneous* band that covers the whole field with probability >= 1 - alpha.

Only numpy is needed (scipy, for :func:`coverage_interval`, is imported inside that function).

>>> import numpy as np
>>> from triscale.uncertainty import SplitConformal
>>> rng = np.random.default_rng(0)
>>> pred, std = rng.normal(size=500), rng.uniform(0.5, 2.0, size=500)
>>> true = pred + std * rng.normal(size=500)
>>> cp = SplitConformal.calibrate(pred[:250], true[:250], scale=std[:250], alpha=0.1)
>>> lo, hi = cp.interval(pred[250:], scale=std[250:])
>>> 0.8 < cp.coverage(pred[250:], true[250:], scale=std[250:]) < 0.97
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "SplitConformal",
    "conformal_quantile",
    "conformal_pvalue",
    "nonconformity_scores",
    "coverage_interval",
    "calibrate_committee",
]

Reduce = Literal["none", "max"]


def conformal_quantile(scores: Any, alpha: float) -> float:
    """The split-conformal quantile: the ``ceil((n + 1)(1 - alpha))``-th smallest score (``inf`` if that exceeds
    ``n``, i.e. too few calibration points for this ``alpha``)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0:
        raise ValueError("no calibration scores")
    if not np.isfinite(s).all():
        raise ValueError("calibration scores must be finite")
    k = math.ceil((s.size + 1) * (1.0 - alpha) - 1e-12)
    return float("inf") if k > s.size else float(s[k - 1])


def conformal_pvalue(calibration_scores: Any, score: Any) -> np.ndarray:
    """Conformal p-values ``(1 + #{calibration >= score}) / (n + 1)`` of test scores: small values flag inputs
    unlike the calibration set (an out-of-distribution test with a valid false-alarm rate)."""
    s = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
    t = np.asarray(score, dtype=np.float64)
    n_ge = s.size - np.searchsorted(s, t, side="left")
    return (1.0 + n_ge) / (s.size + 1.0)


def nonconformity_scores(
    pred: Any, true: Any, scale: Any = None, *, eps: float = 1e-12, reduce: Reduce = "none"
) -> np.ndarray:
    """Scores ``|true - pred| / (scale + eps)`` per sample (axis 0). ``reduce='max'`` takes the maximum over a
    sample's remaining axes (a simultaneous band for fields); with ``'none'`` samples must be scalars. ``scale``
    broadcasts against ``pred`` (per sample ``(n,)`` is expanded over the field axes)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred and true have different shapes {p.shape} and {t.shape}")
    r = np.abs(t - p) / (_scale(scale, p.shape) + eps)
    if reduce == "max":
        return r.reshape(len(r), -1).max(axis=1) if r.ndim > 1 else r
    if reduce != "none":
        raise ValueError(f"reduce must be 'none' or 'max', got {reduce!r}")
    if r.ndim != 1:
        raise ValueError("per-sample scores need 1-D predictions; pass reduce='max' for fields")
    return r


def _scale(scale: Any, shape: tuple[int, ...]) -> np.ndarray:
    if scale is None:
        return np.ones(shape)
    s = np.asarray(scale, dtype=np.float64)
    if np.any(s < 0) or not np.isfinite(s).all():
        raise ValueError("scale must be finite and non-negative")
    if s.ndim == 1 and len(shape) > 1 and s.shape[0] == shape[0]:
        s = s.reshape((-1,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(s, shape)


@dataclass
class SplitConformal:
    """Calibrated split-conformal intervals ``pred ± q(alpha) * (scale + eps)``.

    ``scores`` are the calibration nonconformity scores (any kind: build one from residuals with
    :meth:`calibrate`, or pass precomputed scores such as per-sample relative errors and use :meth:`quantile` as
    an error bound). ``normalised`` records whether the scores were divided by a scale (then :meth:`interval`
    needs one). The object is JSON-serialisable with :meth:`to_dict` / :meth:`from_dict`.
    """

    scores: np.ndarray
    alpha: float = 0.1
    normalised: bool = False
    reduce: Reduce = "none"
    eps: float = 1e-12
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.sort(np.asarray(self.scores, dtype=np.float64).ravel())
        if self.scores.size == 0 or not np.isfinite(self.scores).all():
            raise ValueError("need at least one finite calibration score")
        conformal_quantile(self.scores, self.alpha)  # validates alpha

    @classmethod
    def calibrate(
        cls,
        pred: Any,
        true: Any,
        scale: Any = None,
        *,
        alpha: float = 0.1,
        eps: float = 1e-12,
        reduce: Reduce = "none",
        meta: dict[str, Any] | None = None,
    ) -> SplitConformal:
        """Calibrate on held-out predictions ``pred``, truths ``true`` (same shape, samples on axis 0) and an
        optional per-sample/per-point ``scale`` (e.g. committee std). Use data the model never trained on."""
        s = nonconformity_scores(pred, true, scale, eps=eps, reduce=reduce)
        return cls(s, alpha=alpha, normalised=scale is not None, reduce=reduce, eps=eps, meta=dict(meta or {}))

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def quantile(self, alpha: float | None = None) -> float:
        """The calibrated score quantile ``q`` at level ``1 - alpha`` (``inf`` if ``n`` is too small)."""
        return conformal_quantile(self.scores, self.alpha if alpha is None else alpha)

    def half_width(self, scale: Any = None, alpha: float | None = None, shape: tuple[int, ...] | None = None):
        """``q * (scale + eps)``, broadcast to ``shape`` if given."""
        if self.normalised and scale is None:
            raise ValueError("these scores were normalised by a scale: pass the test points' scale")
        q = self.quantile(alpha)
        if shape is None:
            return q * ((1.0 if scale is None else np.asarray(scale, dtype=np.float64)) + self.eps)
        return q * (_scale(scale, shape) + self.eps)

    def interval(self, pred: Any, scale: Any = None, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds ``pred ∓ q * (scale + eps)``."""
        p = np.asarray(pred, dtype=np.float64)
        h = self.half_width(scale, alpha, shape=p.shape)
        return p - h, p + h

    def covers(self, pred: Any, true: Any, scale: Any = None, alpha: float | None = None) -> np.ndarray:
        """Per sample: is the truth inside the interval (for ``reduce='max'``: everywhere in the field)?"""
        if self.normalised and scale is None:
            raise ValueError("these scores were normalised by a scale: pass the test points' scale")
        s = nonconformity_scores(pred, true, scale, eps=self.eps, reduce=self.reduce)
        return s <= self.quantile(alpha)

    def coverage(self, pred: Any, true: Any, scale: Any = None, alpha: float | None = None) -> float:
        """Fraction of test samples covered."""
        return float(self.covers(pred, true, scale, alpha).mean())

    def expected_coverage(
        self, n_test: int, alpha: float | None = None, confidence: float = 0.99
    ) -> tuple[float, float]:
        """Range of the empirical coverage of ``n_test`` exchangeable test samples, see
        :func:`coverage_interval`."""
        return coverage_interval(self.n, n_test, self.alpha if alpha is None else alpha, confidence)

    def coverage_report(self, pred: Any, true: Any, scale: Any = None, confidence: float = 0.99) -> dict[str, Any]:
        """Coverage on held-out samples next to the range split conformal allows for that many (at ``confidence``):
        ``alpha``, ``coverage``, ``expected_range_99`` (the key names the default confidence)."""
        n = int(np.asarray(true).shape[0])
        return {
            "alpha": self.alpha,
            "coverage": self.coverage(pred, true, scale),
            "expected_range_99": list(self.expected_coverage(n, confidence=confidence)),
        }

    def to_dict(self, digits: int = 7) -> dict[str, Any]:
        return {
            "method": "split-conformal",
            "alpha": self.alpha,
            "normalised": self.normalised,
            "reduce": self.reduce,
            "eps": self.eps,
            "n": self.n,
            "scores": [float(f"{v:.{digits}g}") for v in self.scores],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitConformal:
        return cls(
            np.asarray(d["scores"], dtype=np.float64),
            alpha=float(d.get("alpha", 0.1)),
            normalised=bool(d.get("normalised", False)),
            reduce=d.get("reduce", "none"),
            eps=float(d.get("eps", 1e-12)),
            meta=dict(d.get("meta", {})),
        )


def coverage_interval(n_cal: int, n_test: int, alpha: float, confidence: float = 0.99) -> tuple[float, float]:
    """Central ``confidence`` range of the empirical coverage of ``n_test`` fresh samples under split conformal
    with ``n_cal`` calibration points at level ``1 - alpha`` (exchangeable data, continuous scores).

    Given the calibration set the coverage is ``Beta(k, n_cal + 1 - k)`` with ``k = ceil((n_cal + 1)(1 - alpha))``
    (Vovk 2012; Angelopoulos & Bates 2021, Sec. 3.2), so the number of covered test samples is beta-binomial. This
    accounts for both the calibration and the test sampling, so a test that asserts the coverage lies in this range
    fails with probability ``1 - confidence`` when the method is right, and reliably when it is not.
    """
    from scipy.stats import betabinom

    k = math.ceil((n_cal + 1) * (1.0 - alpha) - 1e-12)
    if k > n_cal:
        return 1.0, 1.0
    dist = betabinom(n_test, k, n_cal + 1 - k)
    lo, hi = dist.ppf((1 - confidence) / 2), dist.ppf(1 - (1 - confidence) / 2)
    return float(lo) / n_test, float(hi) / n_test


def calibrate_committee(
    pred: Any,
    std: Any,
    true: Any,
    *,
    alpha: float = 0.1,
    per_atom: Any = None,
    eps: float = 1e-6,
    meta: dict[str, Any] | None = None,
) -> SplitConformal:
    """Conformal calibration of a committee's predictions (e.g. ``TriScaleCalculator`` energies and their
    ``energy_std``) on a held-out validation set: normalised scores ``|true - pred| / (std + eps)``, so the
    interval ``pred ± q (std + eps)`` is wide where the committee disagrees. ``per_atom`` (atom counts) divides
    energies, stds and truths first, so structures of different sizes share one score scale. For a single model
    (no committee) pass ``std=None``: plain absolute residuals."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    s = None if std is None else np.asarray(std, dtype=np.float64)
    if per_atom is not None:
        n = np.asarray(per_atom, dtype=np.float64)
        p, t = p / n, t / n
        s = None if s is None else s / n
    m = dict(meta or {})
    m.setdefault("per_atom", per_atom is not None)
    return SplitConformal.calibrate(p, t, s, alpha=alpha, eps=eps, meta=m)
