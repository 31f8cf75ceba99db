"""GT-free scores against a GT ranking: Spearman's correlation, its bootstrap interval over
submissions, and the pairs a metric misorders."""
import math

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from helpers.report import calibration as cal


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 6, 30).astype(float)  # many ties
    y = x + rng.normal(0, 2, 30)
    assert math.isclose(cal.spearman(x, y), spearmanr(x, y).statistic, rel_tol=1e-12)
    assert math.isclose(cal.spearman(x, -y), -spearmanr(x, y).statistic, rel_tol=1e-12)
    assert np.isnan(cal.spearman(np.ones(5), np.arange(5)))


def _bivariate(n, r, seed):
    z = np.random.default_rng(seed).normal(size=(n, 2))
    return z[:, 0], r * z[:, 0] + math.sqrt(1 - r * r) * z[:, 1]


def test_bootstrap_interval_covers_the_population_value_and_shrinks():
    """Bivariate normal with correlation r: population Spearman (6/π)·asin(r/2) (Pearson 1907)."""
    r = 0.7
    true = 6 / math.pi * math.asin(r / 2)
    widths = []
    for n in (12, 200):
        x, y = _bivariate(n, r, seed=n)
        lo, hi = cal.spearman_interval(x, y, n_boot=1000, seed=0)
        assert lo < cal.spearman(x, y) < hi and lo < true < hi
        widths.append(hi - lo)
    # the interval's width falls like 1/√n: 200 vs 12 submissions → about 4× narrower
    assert widths[1] < widths[0] / 2.5


def test_misordered_pairs_hand_built():
    gt = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    v = pd.Series({"a": 0.9, "b": 0.2, "c": 0.5, "d": 0.1})  # higher better: c ahead of b, wrong
    got = cal.misordered(gt, v, "high")
    assert list(zip(got.gt_better, got.gt_worse)) == [("b", "c")]
    low = cal.misordered(gt, -v, "low")  # the same order written as "lower is better"
    assert list(zip(low.gt_better, low.gt_worse)) == [("b", "c")]
    w = pd.Series({"a": 0.1, "b": 0.2, "c": 0.5, "d": 0.9})  # exactly reversed: all 6 pairs
    assert len(cal.misordered(gt, w, "high")) == 6
    sig = np.zeros((4, 4), bool)
    sig[3, 0] = True  # the metric calls only d over a significant
    kept = cal.misordered(gt, w, "high", metric_sig=sig)
    assert list(zip(kept.gt_better, kept.gt_worse)) == [("a", "d")]


def test_calibrate_sign_convention():
    gt = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0], index=list("abcde"))
    v = pd.Series([5.0, 4.0, 3.0, 2.0, 1.0], index=list("abcde"))
    assert cal.calibrate(gt, v, "high", n_boot=50)["rho"] == 1.0
    assert cal.calibrate(gt, -v, "low", n_boot=50)["rho"] == 1.0
    out = cal.calibrate(gt, -v, "high", n_boot=50)
    assert out["rho"] == -1.0 and len(out["misordered"]) == 10
