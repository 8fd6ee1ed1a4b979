"""Split-conformal intervals: exact quantile rule, nominal coverage on held-out data within the beta-binomial
sampling range (so the assertions can fail but are not flaky: each fails with probability 1e-3 when the method is
right), adaptivity of normalised scores, loss of coverage under a distribution shift, serialisation."""

import json
import math

import numpy as np
import pytest

from triscale.uncertainty import (
    SplitConformal,
    calibrate_committee,
    conformal_pvalue,
    conformal_quantile,
    coverage_interval,
    nonconformity_scores,
)

CONF = 0.999  # each coverage assertion fails with probability <= 1e-3 when the method is right


def _data(rng, n, noise=1.0):
    """Heteroscedastic regression: a 'committee std' s(x) that is proportional to the true noise level."""
    pred = rng.normal(size=n)
    std = rng.uniform(0.2, 3.0, size=n)
    true = pred + noise * std * rng.standard_t(df=5, size=n)  # heavy-ish tails: no Gaussian assumption
    return pred, std, true


def test_quantile_rule_exact():
    s = np.arange(1.0, 10.0)  # n = 9
    assert conformal_quantile(s, 0.1) == 9.0  # ceil(10 * 0.9) = 9
    assert conformal_quantile(s, 0.2) == 8.0  # ceil(10 * 0.8) = 8
    assert conformal_quantile(s[::-1], 0.5) == 5.0  # order does not matter
    assert math.isinf(conformal_quantile(s, 0.05))  # ceil(9.5) = 10 > 9: no finite interval
    with pytest.raises(ValueError):
        conformal_quantile(s, 1.0)
    with pytest.raises(ValueError):
        conformal_quantile([1.0, float("nan")], 0.1)


def test_coverage_interval_matches_simulation():
    """The beta-binomial range really is the spread of the empirical coverage over calibration+test draws."""
    rng = np.random.default_rng(7)
    n_cal, n_test, alpha = 50, 40, 0.2
    lo, hi = coverage_interval(n_cal, n_test, alpha, confidence=0.9)
    inside = 0
    n_rep = 1000
    for _ in range(n_rep):
        cal, test = rng.normal(size=n_cal), rng.normal(size=n_test)
        cov = np.mean(np.abs(test) <= conformal_quantile(np.abs(cal), alpha))
        inside += lo <= cov <= hi
    # the discrete range holds >= 90 %; binomial 4-sigma band around it
    assert 0.9 - 4 * math.sqrt(0.09 / n_rep) <= inside / n_rep <= 1.0
    # and a plain Binomial(n_test, 1 - alpha) range would be too narrow (this is why the test uses the beta part)
    from scipy.stats import binom

    b_lo, b_hi = binom(n_test, 1 - alpha).ppf([0.05, 0.95]) / n_test
    assert (hi - lo) > (b_hi - b_lo)


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.32])
@pytest.mark.parametrize("normalised", [False, True])
def test_nominal_coverage_on_held_out_data(alpha, normalised):
    rng = np.random.default_rng(int(100 * alpha) + 10 * normalised)
    pred, std, true = _data(rng, 3000)
    n_cal = 1000
    cp = SplitConformal.calibrate(pred[:n_cal], true[:n_cal], std[:n_cal] if normalised else None, alpha=alpha)
    test_scale = std[n_cal:] if normalised else None
    cov = cp.coverage(pred[n_cal:], true[n_cal:], test_scale)
    lo, hi = cp.expected_coverage(len(pred) - n_cal, confidence=CONF)
    assert lo <= cov <= hi, (cov, lo, hi)
    # the intervals are the ones covers() checks
    a, b = cp.interval(pred[n_cal:], test_scale)
    np.testing.assert_array_equal(
        (a <= true[n_cal:]) & (true[n_cal:] <= b), cp.covers(pred[n_cal:], true[n_cal:], test_scale)
    )


def test_miscalibrated_intervals_fail_the_same_check():
    """The assertion used above rejects a wrong method: Gaussian intervals from an under-estimated std."""
    rng = np.random.default_rng(3)
    pred, std, true = _data(rng, 3000)
    z = 1.6448536  # 90 % two-sided Gaussian
    cov = np.mean(np.abs(true - pred) <= z * 0.7 * std)  # std under-estimated by 30 %
    lo, _ = coverage_interval(1000, 3000, 0.1, confidence=CONF)
    assert cov < lo


def test_normalised_scores_adapt_to_committee_std():
    """Marginal coverage is guaranteed either way; normalising by the committee std also keeps the coverage where
    the committee disagrees most, where absolute-residual intervals under-cover."""
    rng = np.random.default_rng(11)
    pred, std, true = _data(rng, 6000)
    cal, test = slice(0, 2000), slice(2000, None)
    plain = SplitConformal.calibrate(pred[cal], true[cal], alpha=0.1)
    norm = SplitConformal.calibrate(pred[cal], true[cal], std[cal], alpha=0.1)
    hi_std = std[test] > np.quantile(std[test], 0.8)
    cov_plain = plain.covers(pred[test], true[test])[hi_std].mean()
    cov_norm = norm.covers(pred[test], true[test], std[test])[hi_std].mean()
    assert cov_plain < 0.8 < cov_norm
    # and the normalised intervals are narrower where the committee agrees
    lo_std = std[test] < np.quantile(std[test], 0.2)
    assert np.mean(norm.half_width(std[test][lo_std])) < plain.half_width()


def test_shifted_distribution_loses_coverage():
    """Calibrated on one distribution, tested on a noisier one (an out-of-distribution shift the model's std does
    not see): coverage drops below the exchangeable range, and conformal p-values of the scores flag it."""
    rng = np.random.default_rng(5)
    pred, std, true = _data(rng, 1000)
    cp = SplitConformal.calibrate(pred, true, std, alpha=0.1)
    p2, s2, t2 = _data(rng, 1000, noise=2.0)
    lo, _ = cp.expected_coverage(1000, confidence=CONF)
    assert cp.coverage(p2, t2, s2) < lo
    # p-values: super-uniform on exchangeable data, small under the shift
    p3, s3, t3 = _data(rng, 1000)
    pv_in = conformal_pvalue(cp.scores, nonconformity_scores(p3, t3, s3))
    pv_out = conformal_pvalue(cp.scores, nonconformity_scores(p2, t2, s2))
    from scipy.stats import binom

    assert np.sum(pv_in <= 0.1) <= binom(1000, 0.1).ppf(CONF)
    assert np.mean(pv_out <= 0.1) > 0.3


def test_field_band_is_simultaneous():
    rng = np.random.default_rng(2)
    n, m = 2000, 64
    pred = rng.normal(size=(n, m))
    true = pred + 0.1 * rng.normal(size=(n, m)).cumsum(axis=1) / np.sqrt(m)  # correlated residual fields
    scale = np.sqrt(np.mean(pred**2, axis=1))  # per-sample scale, a function of the prediction only
    cp = SplitConformal.calibrate(pred[:800], true[:800], scale[:800], alpha=0.1, reduce="max")
    lo, hi = cp.interval(pred[800:], scale[800:])
    assert lo.shape == pred[800:].shape
    whole = np.all((lo <= true[800:]) & (true[800:] <= hi), axis=1)
    a, b = cp.expected_coverage(1200, confidence=CONF)
    assert a <= whole.mean() <= b
    np.testing.assert_array_equal(whole, cp.covers(pred[800:], true[800:], scale[800:]))
    with pytest.raises(ValueError):
        nonconformity_scores(pred, true)  # fields need reduce='max'


def test_round_trip_and_input_errors():
    rng = np.random.default_rng(0)
    pred, std, true = _data(rng, 100)
    cp = SplitConformal.calibrate(pred, true, std, alpha=0.2, meta={"model": "x"})
    cp2 = SplitConformal.from_dict(json.loads(json.dumps(cp.to_dict())))
    assert cp2.n == 100 and cp2.normalised and cp2.meta == {"model": "x"}
    assert cp2.quantile() == pytest.approx(cp.quantile(), rel=1e-6)
    with pytest.raises(ValueError, match="scale"):
        cp.interval(pred)  # normalised scores need the test scale
    with pytest.raises(ValueError):
        SplitConformal.calibrate(pred, true[:50])
    with pytest.raises(ValueError):
        SplitConformal.calibrate(pred, true, -std)


def test_calibrate_committee_per_atom():
    """Energies of structures of different sizes: per-atom normalisation puts them on one score scale."""
    rng = np.random.default_rng(4)
    n_atoms = rng.integers(3, 60, size=1500)
    e_pred = -3.0 * n_atoms + rng.normal(size=1500)
    std = 0.01 * n_atoms * rng.uniform(0.5, 2.0, size=1500)  # extensive committee std (eV)
    e_true = e_pred + std * rng.normal(size=1500)
    cp = calibrate_committee(e_pred[:500], std[:500], e_true[:500], per_atom=n_atoms[:500], alpha=0.1)
    assert cp.meta["per_atom"] and cp.normalised
    lo, hi = cp.interval(e_pred[500:] / n_atoms[500:], std[500:] / n_atoms[500:])
    cov = np.mean((lo <= e_true[500:] / n_atoms[500:]) & (e_true[500:] / n_atoms[500:] <= hi))
    a, b = cp.expected_coverage(1000, confidence=CONF)
    assert a <= cov <= b
