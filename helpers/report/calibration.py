"""How well a GT-free score agrees with a GT-based ranking of the same submissions.

Given per-submission GT-based ranks (1 = best; e.g. the mean rank over the GT-based metrics)
and a GT-free metric's values: Spearman's rank correlation (Pearson correlation of average
ranks, ties share the mean rank), a percentile bootstrap interval over submissions (resampled
with replacement; a resample where either ranking is constant has no correlation and is
dropped), and the pairs the metric orders opposite to the GT ranking.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from helpers.report import leaderboard


def spearman(x, y) -> float:
    """Spearman's rank correlation of two (n,) arrays (average ranks for ties); NaN when either
    is constant or n < 2."""
    a, b = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else np.nan


def spearman_interval(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (``level``) of :func:`spearman` over the n pairs (x_i, y_i),
    resampled with replacement (seeded); degenerate resamples (a constant ranking) are dropped."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    r = np.array([spearman(x[i], y[i]) for i in idx])
    r = r[np.isfinite(r)]
    if not len(r):
        return np.nan, np.nan
    q = 100 * (1 - level) / 2
    return float(np.percentile(r, q)), float(np.percentile(r, 100 - q))


def misordered(gt_rank: pd.Series, values: pd.Series, better: str = "high", gt_sig=None,
               metric_sig=None) -> pd.DataFrame:
    """Pairs the metric orders opposite to the GT ranking: gt_rank (1 = best) and values, same
    index of n submissions. A pair (a, b) with gt_rank[a] < gt_rank[b] is misordered when the
    metric puts b strictly ahead of a. With ``gt_sig`` / ``metric_sig`` ((n, n) bool, [i, j] =
    i significantly better than j, e.g. :func:`helpers.report.leaderboard.significance`), only pairs
    that both call significant (a over b by the GT, b over a by the metric) are kept. Columns:
    gt_better, gt_worse, their gt ranks and metric values."""
    labs = list(gt_rank.index)
    g = gt_rank.to_numpy(float)
    v = values.loc[labs].to_numpy(float)
    s = 1.0 if better == "high" else -1.0
    rows = []
    for i in range(len(labs)):
        for j in range(len(labs)):
            if g[i] < g[j] and s * (v[j] - v[i]) > 0:
                if gt_sig is not None and not gt_sig[i, j]:
                    continue
                if metric_sig is not None and not metric_sig[j, i]:
                    continue
                rows.append({"gt_better": labs[i], "gt_worse": labs[j], "gt_rank_better": g[i],
                             "gt_rank_worse": g[j], "value_better": v[i], "value_worse": v[j]})
    return pd.DataFrame(rows, columns=["gt_better", "gt_worse", "gt_rank_better", "gt_rank_worse",
                                       "value_better", "value_worse"])


def calibrate(gt_rank: pd.Series, values: pd.Series, better: str = "high", n_boot: int = 2000,
              level: float = 0.95, seed: int = 0, gt_sig=None, metric_sig=None) -> dict:
    """Agreement of a GT-free metric with a GT-based ranking (module docstring): ``rho``
    (Spearman between −gt_rank and the metric's values, sign-flipped when lower is better, so
    +1 = same order), ``lo``/``hi`` (bootstrap interval over submissions), ``n`` submissions,
    ``misordered`` (all pairs the metric orders opposite) and ``misordered_significant`` (only
    pairs both call significant; equal to ``misordered`` without ``gt_sig``/``metric_sig``)."""
    labs = list(gt_rank.index)
    g = -gt_rank.to_numpy(float)
    v = values.loc[labs].to_numpy(float) * (1.0 if better == "high" else -1.0)
    lo, hi = spearman_interval(g, v, n_boot, level, seed)
    return {"rho": spearman(g, v), "lo": lo, "hi": hi, "n": len(labs),
            "misordered": misordered(gt_rank, values, better),
            "misordered_significant": misordered(gt_rank, values, better, gt_sig, metric_sig)}


def against_gt(board: pd.DataFrame, errors: pd.DataFrame, better: dict, metric_info: pd.DataFrame,
               families: pd.DataFrame, metrics, n_boot: int = 2000, seed: int = 0):
    """Chapter 8's calibration of the GT-free ``metrics`` (those of them on the board) against the
    GT-based rank: the mean of the family ranks of the families in the overall rank other than
    "image". A pair is GT-significant when more than half of the GT-based metrics in the mean
    rank call it significant in that direction (:func:`helpers.report.leaderboard.significance`);
    the metric side uses the metric's own error bar.

    Returns (cal indexed by ``metric``: rho, lo, hi (Spearman and its bootstrap interval over
    submissions), n submissions, misordered and misordered_significant pair counts, pairs;
    mis indexed by ``metric``: the misordered pairs of :func:`misordered` and ``significant``;
    gt_rank per label). Writes nothing."""
    image_m = [m for m in metrics if m in better]
    gt_m = [m for m in better if m not in image_m and metric_info.loc[m, "in_mean_rank"]]
    labs = list(board.index)
    fam_in = list(families.index[families.in_mean_rank])
    gt_rank = board.loc[labs, [f"family_rank_{f}" for f in fam_in if f != "image"]].mean(axis=1)
    votes = sum(leaderboard.significance(board.loc[labs, m], errors.loc[labs, m] if m in errors else None, better[m])
                .astype(int) for m in gt_m)
    gt_sig = votes > len(gt_m) / 2  # [i, j]: most GT-based metrics call i significantly better than j
    cal_rows, mis_rows = [], []
    for m in image_m:
        c = calibrate(gt_rank, board.loc[labs, m], better[m], n_boot=n_boot, seed=seed, gt_sig=gt_sig,
                      metric_sig=leaderboard.significance(board.loc[labs, m], errors.loc[labs, m], better[m]))
        cal_rows.append({"metric": m, "rho": c["rho"], "lo": c["lo"], "hi": c["hi"], "n": c["n"],
                         "misordered": len(c["misordered"]), "misordered_significant": len(c["misordered_significant"]),
                         "pairs": c["n"] * (c["n"] - 1) // 2})
        sig_pairs = set(zip(c["misordered_significant"].gt_better, c["misordered_significant"].gt_worse))
        mis_rows.append(c["misordered"].assign(metric=m, significant=[(a, b) in sig_pairs for a, b in
                                                                      zip(c["misordered"].gt_better,
                                                                          c["misordered"].gt_worse)]))
    cal = pd.DataFrame(cal_rows).set_index("metric")
    mis = pd.concat(mis_rows, ignore_index=True).set_index("metric")
    return cal, mis, gt_rank
