"""From a robustness study's responses to verdicts a referee can sign (chapter 7).

One *cell* is a degradation × metric: the base's value and the value at each level of the
degradation. The question per level is "does the metric differ from the base?"; per cell, the
verdict summarises the levels. The decision rule, in full:

* **Paired test per level.** Replicate r of every level shares replicate r's noise draw with the
  base (:class:`helpers.pipeline.robustness.Study`), so the test is on the paired differences
  dᵣ = value(level, r) − value(base, r): Student's one-sample t-test of mean(d) = 0 with
  n_rep − 1 degrees of freedom (two-sided). At least :data:`MIN_REPLICATES` replicates are
  required: with one the spread is 0 and every change is "significant", with two the test has
  one degree of freedom. Metrics scored on one replicate with a paired standard error of the
  difference (column ``se_diff``: the image metrics, a bootstrap over the same images for the
  base and the level) use the normal test z = d / se_diff instead.
* **Holm over the levels of a cell**: the p-values of a cell's levels are Holm-adjusted, and a
  level is *detected* when its adjusted p ≤ ``alpha`` (0.05) **and** the mean change exceeds a
  floor, ``rtol`` × |base| or ``atol`` (a change of 0.1 % is rounding, not a defect). The chance
  that a cell whose levels all equal the base calls anything is then ≤ ``alpha``: on pure noise at
  most ~5 % of a table's cells read anything but *blind* / *invariant* (tested over 200 null
  tables).
* **Levels by severity** (:meth:`helpers.pipeline.robustness.Degradation.severity`), never by row order;
  the *threshold* is the least severe detected level.
* Verdicts: ``invariant`` / ``not invariant`` for changes that should not matter; otherwise
  ``blind`` (no level detected), ``underpowered`` (no level detected, and a metric with a power
  estimate — ``images_needed`` per level, the images needed to see that level's mean change at
  2 standard errors — was scored on fewer images than the easiest level needs), ``wrong way``
  (the least severe detected change makes the submission look better), ``saturates`` (the two
  most severe levels are both detected and the paired test between them, unadjusted, finds no
  difference) or ``detects``.

:func:`level_tests` returns the per-level statistics, including ``crit``: the |t| (or |z|) the
level needed at its Holm step; a figure that draws the statistic against ±crit draws the rule
that decides.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

ALPHA = 0.05
MIN_REPLICATES = 3
# metrics reported relative to the base (0 there), where a relative floor means nothing: the
# smallest difference that counts (a ten-thousandth of a nat per image is rounding)
ATOL = {"loglik_per_image": 1e-4}


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as ``p``): p_(j) · (m − j), made monotone."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adj
    return out


def _holm_crit(p: np.ndarray, df: np.ndarray, alpha: float) -> np.ndarray:
    """The |statistic| each level needed at its Holm step: α / (m − j) for the j-th smallest p."""
    m = len(p)
    rank = np.empty(m, int)
    rank[np.argsort(p, kind="stable")] = np.arange(m)
    a = alpha / (m - rank)
    return np.where(np.isfinite(df), special.stdtrit(np.where(np.isfinite(df), df, 1), 1 - a / 2),
                    special.ndtri(1 - a / 2))


def _paired_p(d: np.ndarray, cell: str):
    """Paired t-tests of mean(d) = 0 per row of d (L, n): (mean, se, df, p), vectorised."""
    L, n = d.shape
    if n < MIN_REPLICATES:
        raise ValueError(f"{cell}: {n} replicate(s) shared with the base; the paired test needs "
                         f"≥ {MIN_REPLICATES}. Fix: run the study with n_replicates ≥ {MIN_REPLICATES}.")
    mean = d.mean(1)
    se = d.std(1, ddof=1) / math.sqrt(n)
    moved = se > 1e-12 * np.maximum(np.abs(mean), 1e-300)   # else every replicate moved alike
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(moved, 2 * special.stdtr(n - 1, -np.abs(mean) / se), np.where(mean != 0, 0.0, 1.0))
    return mean, se, np.full(L, n - 1.0), p


def _normal_p(diff: np.ndarray, se: np.ndarray):
    """Two-sided normal test of diff = 0 with standard error se (se 0: any change is certain)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, 2 * special.ndtr(-np.abs(diff) / se), np.where(diff != 0, 0.0, 1.0))


LEVEL_COLUMNS = ["degradation", "metric", "level", "severity_rank", "diff", "worse", "se", "df", "stat", "p",
                 "p_holm", "p_vs_previous", "crit", "floor", "detected", "n_images", "images_needed"]


def level_tests(responses: pd.DataFrame, better: dict, degradations: dict, alpha: float = ALPHA,
                rtol: float = 1e-3, records: bool = False) -> pd.DataFrame:
    """Per degradation × metric × level: the test against the base (module docstring).

    responses: long table (degradation, level, replicate, metric, value[, se_diff, n_images,
    images_needed]); the base's rows have degradation ``"none"``. better: {metric: "low"|"high"}.
    degradations: {name: Degradation} (for the severity order). Returns one row per level with
    degradation, metric, level, severity_rank (0 = least severe), diff (mean change from the
    base), worse (the change makes the submission look worse), se, df (inf: normal test), stat
    (diff / se), p, p_holm, p_vs_previous (unadjusted test against the next less severe level),
    crit, floor, detected, n_images, images_needed.
    Raises ValueError (naming the cell) for a metric with fewer than 3 paired replicates and no
    ``se_diff``. ``records=True``: the rows as a list of dicts."""
    r = responses[responses.metric.isin(list(better)) & responses.value.notna()]
    col = {c: (r[c].to_numpy(float) if c in r else np.full(len(r), np.nan))
           for c in ("level", "replicate", "value", "se_diff", "n_images", "images_needed")}
    idx = r.groupby(["metric", "degradation"], sort=False).indices
    out = []
    for (metric, name), ix in idx.items():
        if name == "none" or name not in degradations or (metric, "none") not in idx:
            continue
        bx = idx[(metric, "none")]
        brep, bval = col["replicate"][bx], col["value"][bx]
        bmean = float(bval.mean())
        floor = max(rtol * abs(bmean), ATOL.get(metric, 1e-12))
        d = degradations[name]
        lev = col["level"][ix]
        levels = sorted(np.unique(lev), key=d.severity)
        paired = not np.isfinite(col["se_diff"][ix]).any()
        if paired:
            base_by_rep = dict(zip(brep, bval))
            rows = []
            for lv in levels:
                sel = ix[lev == lv]
                rows.append({rep: v for rep, v in zip(col["replicate"][sel], col["value"][sel]) if rep in base_by_rep})
            common = sorted(set.intersection(*(set(x) for x in rows)))
            diffs = np.array([[x[rep] - base_by_rep[rep] for rep in common] for x in rows]).reshape(len(rows), -1)
            diff, se, df, p = _paired_p(diffs, f"{name} × {metric}")
            p_prev = np.r_[np.nan, _paired_p(np.diff(diffs, axis=0), f"{name} × {metric}")[3]] if len(levels) > 1 \
                else np.array([np.nan])
        else:
            diff = np.array([col["value"][ix[lev == lv]].mean() - bmean for lv in levels])
            se = np.array([np.nanmean(col["se_diff"][ix[lev == lv]]) for lv in levels])
            df, p = np.full(len(levels), np.inf), _normal_p(diff, se)
            # neighbouring levels: their standard errors added as if independent (conservative)
            p_prev = np.r_[np.nan, _normal_p(np.diff(diff), np.hypot(se[1:], se[:-1]))]
        adj, crit = holm(p), _holm_crit(p, df, alpha)
        sign = 1.0 if better[metric] == "low" else -1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            stat = np.where(se > 0, diff / np.where(se > 0, se, 1), np.sign(diff) * np.inf)
        for i, lv in enumerate(levels):
            sel = ix[lev == lv]
            out.append(dict(degradation=name, metric=metric, level=lv, severity_rank=i, diff=diff[i],
                            worse=bool(sign * diff[i] > 0), se=se[i], df=df[i], stat=0.0 if stat[i] != stat[i] else stat[i],
                            p=p[i], p_holm=adj[i], p_vs_previous=p_prev[i], crit=crit[i], floor=floor,
                            detected=bool(adj[i] <= alpha and abs(diff[i]) > floor),
                            n_images=float(np.nanmean(col["n_images"][sel])) if np.isfinite(col["n_images"][sel]).any() else np.nan,
                            images_needed=float(np.nanmean(col["images_needed"][sel]))
                            if not np.isnan(col["images_needed"][sel]).all() else np.nan))
    return out if records else pd.DataFrame(out, columns=LEVEL_COLUMNS)


def classify(responses: pd.DataFrame, better: dict, degradations: dict, alpha: float = ALPHA,
             rtol: float = 1e-3) -> pd.DataFrame:
    """Verdict per degradation × metric (module docstring), one row per cell of ``degradations``
    × ``better``. Columns: degradation, metric, unit, expect, verdict, threshold (least severe
    detected level, NaN if none), threshold_index (its severity rank; −1 if none), base,
    base_noise (std of the base over replicates, or its se_diff), change_max (mean change at the
    most severe level, metric units), change_max_noise (that / base_noise), n_detected, n_levels,
    min_detectable (the smallest |mean change| the least severe level's test would have called:
    crit × se), n_images, images_needed (image metrics: the fewest images any level needs)."""
    cells: dict = {}
    for x in level_tests(responses, better, degradations, alpha, rtol, records=True):
        cells.setdefault((x["degradation"], x["metric"]), []).append(x)
    r = responses[responses.metric.isin(list(better))]
    base = r[r.degradation == "none"].groupby("metric").value.agg(["mean", "std"]).to_dict("index")
    rows = []
    for name, d in degradations.items():
        for metric in better:
            rec = {"degradation": name, "metric": metric, "unit": d.unit, "expect": d.expect}
            c = cells.get((name, metric))
            if c is None:
                rows.append({**rec, "verdict": "not measured", "threshold": np.nan, "threshold_index": -1})
                continue
            c.sort(key=lambda x: x["severity_rank"])
            det = np.array([x["detected"] for x in c])
            first = int(np.argmax(det)) if det.any() else None
            noise = float(base[metric]["std"])     # the metric's own spread at the base
            if not noise > 0:                          # one replicate: the paired standard error
                noise = float(c[0]["se"])
            need = np.array([x["images_needed"] for x in c], float)
            last = float(c[-1]["diff"])
            rec.update(base=float(base[metric]["mean"]), base_noise=noise, change_max=last,
                       change_max_noise=last / noise if noise > 0 else np.nan,
                       n_detected=int(det.sum()), n_levels=len(c),
                       threshold=c[first]["level"] if first is not None else np.nan,
                       threshold_index=first if first is not None else -1,
                       min_detectable=float(c[0]["crit"] * c[0]["se"]),
                       n_images=float(c[0]["n_images"]),
                       images_needed=float(np.nanmin(need)) if np.isfinite(need).any() else np.nan)
            if d.expect == "invariant":
                rec["verdict"] = "not invariant" if first is not None else "invariant"
            elif first is None:
                rec["verdict"] = ("underpowered" if rec["n_images"] < rec["images_needed"] else "blind")
            elif not c[first]["worse"]:
                rec["verdict"] = "wrong way"
            elif len(c) >= 2 and det[-1] and det[-2] and not c[-1]["p_vs_previous"] <= alpha:
                rec["verdict"] = "saturates"
            else:
                rec["verdict"] = "detects"
            rows.append(rec)
    return pd.DataFrame(rows)
