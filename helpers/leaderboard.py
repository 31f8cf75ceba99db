"""Ranks that respect uncertainty: no rank is decided by float noise.

For one metric, submission i is *significantly better* than j when its value is better by more
than ``max(k·sqrt(e_i² + e_j²), rtol·max(|v_i|, |v_j|), atol)`` (e = the metric's error bar:
std over replicates or bootstrap resamples; 0 where none exists, and then only the relative
tolerance, 0.1 % by default, separates: on the demo the Other-grid mock — the Averaged GT on
another grid — differs from it by 0.02 % in PW coverage, an optimisation's noise). Each submission gets a rank interval [1 + #significantly better,
n − #significantly worse] and the midpoint of that interval as its rank, so submissions whose
values are within uncertainty share a rank (two mocks differing by 1e-7 tie instead of ranking
5th and 1st).

A metric *separates* the submissions when at least ``min_fraction`` of the pairs are
significantly different; metrics that do not are reported but left out of the mean rank. An
image metric is *underpowered* when it scored fewer images than it needs to order the
submissions (``power``; :func:`helpers.image_metrics.images_to_order` defines the figure): it is
reported but left out of the mean rank too.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def significance(values, errors=None, better: str = "low", k: float = 2.0, rtol: float = 1e-3,
                 atol: float = 1e-12) -> np.ndarray:
    """(n, n) bool: entry [i, j] is True when i is significantly better than j (module docstring).
    NaN values are never significantly better or worse."""
    v = np.asarray(values, dtype=np.float64)
    e = np.zeros_like(v) if errors is None else np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)
    gap = (v[None, :] - v[:, None]) if better == "low" else (v[:, None] - v[None, :])  # > 0: i better than j
    tol = np.maximum.reduce([k * np.sqrt(e[:, None] ** 2 + e[None, :] ** 2),
                             rtol * np.maximum(np.abs(v[:, None]), np.abs(v[None, :])), np.full(gap.shape, atol)])
    out = gap > tol
    out[np.isnan(gap)] = False
    return out


def tied_ranks(values, errors=None, better: str = "low", **kw) -> pd.DataFrame:
    """Rank (midpoint of the interval), rank_lo, rank_hi for each submission (1 = best)."""
    sig = significance(values, errors, better, **kw)
    n = len(sig)
    lo = 1 + sig.sum(0)       # how many are significantly better than me
    hi = n - sig.sum(1)       # minus how many I am significantly better than
    return pd.DataFrame({"rank": (lo + hi) / 2.0, "rank_lo": lo, "rank_hi": hi})


def separates(values, errors=None, better: str = "low", min_fraction: float = 0.25, **kw) -> tuple[bool, float]:
    """(whether the metric separates the submissions, fraction of significantly different pairs)."""
    sig = significance(values, errors, better, **kw)
    n = len(sig)
    if n < 2:
        return False, 0.0
    frac = float((sig | sig.T)[np.triu_indices(n, 1)].mean())
    return frac >= min_fraction, frac


def board(values: pd.DataFrame, errors: pd.DataFrame, better: dict, power: dict | None = None,
          **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leaderboard from per-submission metric values and errors (same index and columns).

    ``power`` {metric: (n_images, images_needed)} for metrics scored on a sample of images
    (images_needed: the images needed to order the submissions at 2 σ, e.g. the median over
    adjacent pairs of :func:`helpers.image_metrics.images_to_order`); a metric with n_images <
    images_needed is *underpowered*. Returns (board, metrics): ``board`` has ``mean_rank`` first
    (over the metrics that separate and are not underpowered), then per metric its value,
    ``<m>_err``, ``rank_<m>`` and ``rank_<m>_interval`` ("lo–hi"); ``metrics`` has, per metric,
    whether it separates, the fraction of separated pairs, ``n_images``, ``images_needed`` (NaN
    without ``power``), ``underpowered`` and whether it enters the mean rank."""
    power = power or {}
    cols, info = {}, []
    ranks = {}
    for m, b in better.items():
        err = errors[m] if m in errors else None
        tr = tied_ranks(values[m].to_numpy(), None if err is None else err.to_numpy(), b, **kw)
        tr.index = values.index
        ok, frac = separates(values[m].to_numpy(), None if err is None else err.to_numpy(), b, **kw)
        n_img, need = power.get(m, (np.nan, np.nan))
        info.append({"metric": m, "better": b, "separates": ok, "separated_pairs": frac,
                     "has_error_bar": err is not None and bool(np.nan_to_num(err.to_numpy()).any()),
                     "n_images": n_img, "images_needed": need, "underpowered": bool(n_img < need)})
        ranks[m] = tr["rank"]
        cols[m] = values[m]
        if err is not None:
            cols[f"{m}_err"] = err
        cols[f"rank_{m}"] = tr["rank"]
        cols[f"rank_{m}_interval"] = [f"{a}–{c}" if a != c else f"{a}" for a, c in zip(tr.rank_lo, tr.rank_hi)]
    info = pd.DataFrame(info).set_index("metric")
    used = [m for m in better if info.loc[m, "separates"] and not info.loc[m, "underpowered"]]
    info["in_mean_rank"] = info.index.isin(used)
    out = pd.DataFrame(cols, index=values.index)
    out.insert(0, "mean_rank", pd.DataFrame(ranks)[used].mean(axis=1) if used else np.nan)
    return out.sort_values("mean_rank"), info


# Human-readable names of the leaderboard's metric columns (tables, widgets, figure titles).
NAMES = {"mean_rank": "mean rank", "resolution_A": "resolution (Å)", "pw_coverage_A": "PW coverage (Å)",
         "pcv_gt_captured": "GT captured (PCV %)", "pcv_set_in_gt": "set in GT (PCV %)",
         "emd_submitted": "EMD submitted", "emd_optimised": "EMD optimised", "kl_submitted": "KL submitted",
         "loglik_per_image": "log-lik. / image (nat)", "best_cc": "best CC"}


# The demo's degraded mocks (helpers.simulate.build_mocks), each made from "Reconstructed" by one
# defect, and the metric meant to catch it: (mock, family, metric). "undone" rows are defects
# that preprocessing must remove (the mock must then tie with its base on every map metric).
DEMO_BASE = "Reconstructed"
DEMO_DEFECTS = (
    ("Low-pass", "volume (blur)", "resolution_A"),
    ("Noisy", "volume (noise)", "resolution_A"),
    ("Noisy", "image (noise)", "loglik_per_image"),
    ("Bimodal", "distribution (populations)", "emd_submitted"),
    ("Bimodal", "distribution (populations)", "kl_submitted"),
    ("Middle mode", "distribution (populations)", "emd_submitted"),
    ("Middle mode", "distribution (populations)", "kl_submitted"),
    ("Missing open", "distribution (coverage)", "emd_optimised"),
    ("Missing open", "subspace (coverage)", "pcv_gt_captured"),
    ("DIMS2 path", "subspace (another motion)", "pcv_gt_captured"),
    ("DIMS2 path", "volume (another motion)", "pw_coverage_A"),
    ("DIMS2 path", "distribution (another motion)", "emd_optimised"),
)
DEMO_UNDONE = (("Flipped hand", "preprocessing (hand)"), ("Other grid", "preprocessing (grid)"),
               ("Rotated", "preprocessing (alignment)"))


def defect_checks(values: pd.DataFrame, errors: pd.DataFrame, better: dict, base: str = DEMO_BASE,
                  defects=DEMO_DEFECTS, undone=DEMO_UNDONE, **kw) -> pd.DataFrame:
    """Is each defect caught by the metric aimed at it? One row per (mock, metric) present:
    value, base value, tolerance-aware verdict from :func:`significance` against ``base``:
    "caught" (significantly worse), "missed" (not), "wrong way" (significantly better). For
    ``undone`` mocks, one row per metric: "undone" when no metric separates the mock from its
    base, else "left a difference". Missing mocks or metrics are skipped."""
    rows = []
    if base not in values.index:
        return pd.DataFrame(rows)

    def verdict(mock, m):
        v = values.loc[[mock, base], m].to_numpy()
        e = errors.loc[[mock, base], m].to_numpy() if m in errors else None
        sig = significance(v, e, better[m], **kw)
        return v, ("wrong way" if sig[0, 1] else "caught" if sig[1, 0] else "missed")

    for mock, family, m in defects:
        if mock in values.index and m in values:
            v, what = verdict(mock, m)
            rows.append({"mock": mock, "family": family, "metric": m, "value": v[0], "base_value": v[1],
                         "verdict": what})
    for mock, family in undone:
        if mock in values.index:
            diff = [m for m in better if verdict(mock, m)[1] != "missed"]
            rows.append({"mock": mock, "family": family, "metric": "all", "value": np.nan, "base_value": np.nan,
                         "verdict": "undone" if not diff else "left a difference in " + ", ".join(diff)})
    return pd.DataFrame(rows)


def placement(board: pd.DataFrame, label: str, better: dict, compare: str | None = DEMO_BASE,
              errors: pd.DataFrame | None = None, **kw) -> dict:
    """Where one submission lands on a leaderboard from :func:`board` (sorted by mean rank).

    Returns ``position`` (1-based place in the mean-rank order) of ``n``, ``above`` / ``below``
    (the neighbours' labels, None at the ends), ``metrics`` — a frame with one row per metric:
    its value and rank, and, when ``compare`` is on the board, the comparison's value and the
    verdict of :func:`significance` between the two ("better", "worse", "tied") — and ``best``
    / ``worst``: the metrics of its lowest and highest rank."""
    order = list(board.index)
    i = order.index(label)
    rows = []
    for m, b in better.items():
        row = {"metric": m, "value": board.loc[label, m], "rank": board.loc[label, f"rank_{m}"]}
        if compare in board.index and compare != label:
            v = board.loc[[label, compare], m].to_numpy()
            e = None
            if errors is not None and m in errors:
                e = errors.loc[[label, compare], m].to_numpy()
            elif f"{m}_err" in board:
                e = board.loc[[label, compare], f"{m}_err"].to_numpy()
            sig = significance(v, e, b, **kw)
            row.update(compare_value=v[1], vs_compare="better" if sig[0, 1] else "worse" if sig[1, 0] else "tied")
        rows.append(row)
    metrics = pd.DataFrame(rows).set_index("metric")
    r = metrics["rank"]
    return {"position": i + 1, "n": len(order), "above": order[i - 1] if i > 0 else None,
            "below": order[i + 1] if i + 1 < len(order) else None, "metrics": metrics,
            "best": list(r[r == r.min()].index), "worst": list(r[r == r.max()].index)}
