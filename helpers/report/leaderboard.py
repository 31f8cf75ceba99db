"""Ranks that respect uncertainty, averaged over families of questions, with an interval.

**Per metric.** Submission i is *significantly better* than j when its value is better by more
than ``max(k·sqrt(e_i² + e_j²), rtol·max(|v_i|, |v_j|), atol)`` (e = the metric's error bar: std
over replicates or bootstrap resamples; a metric absent from ``errors`` has none, and then only
the relative tolerance, 0.1 % by default, separates: on the demo the Other-grid mock, Reconstructed
on another grid, differs from it by 0.007 % in PW coverage, an optimisation's noise). Each ranked
submission gets a rank interval [1 + #significantly better, n − #significantly worse] and its
midpoint as its rank, so values within uncertainty share a rank.

**Unknown is not exact.** A NaN value is *unmeasured*; a NaN error (inside a metric that has an
error column) is *unknown*. Either way the pair cannot be called significantly different, the
submission gets no rank on that metric (a rank is a significance claim, which needs the error),
the others are ranked among the n measured, and the submission's overall rank is over what it
has, flagged in ``unranked``.

**Families.** A metric *separates* when at least ``min_fraction`` of its pairs are significantly
different; an image metric is *underpowered* when it scored fewer images than it needs to order
the submissions (``power``; :func:`helpers.kernels.image_metrics.images_to_order`). A family's rank is
the mean of its separating, adequately powered metrics' ranks; the overall ``mean_rank`` is the
mean of the family ranks (:data:`helpers.core.catalogue.FAMILIES`), so a family with five metrics
outvotes none. A family with no such metric is shown (mean of its separating metrics, else of
all) and left out.

**Partial metrics.** A metric measured for fewer than half of the submissions (chapter 9's
per-image AU-FSC, which needs per-particle output) ranks those few among themselves: it is shown
with its ranks but left out of the mean rank, which would otherwise mix a rank among 3 with ranks
among 15.

**Interval.** ``mean_rank_lo``–``mean_rank_hi``: a seeded parametric bootstrap. Each draw
replaces every value by N(value, error²) (independently per submission and metric; exact values
stay), re-ranks each metric (the rtol/atol ties only: the draw already carries the error), and
recomputes the family and mean ranks; the interval is the 2.5–97.5 % percentiles of each
submission's draws, widened to contain its point ``mean_rank``. Draws are keyed by label, so the
submissions' row order changes nothing. Two submissions whose intervals overlap are *tied overall*.
"""
from __future__ import annotations

import warnings
import zlib

import numpy as np
import pandas as pd

from helpers.core import catalogue
from helpers.core.catalogue import DIRECTIONS, FAMILIES, FAMILY


def _check_better(better, what="better"):
    if better not in DIRECTIONS:
        raise ValueError(f"{what} must be 'low' or 'high', got {better!r}")


def _same_labels(want, got, what):
    """Raise naming the labels that ``got`` lacks or adds (or repeats) relative to ``want``."""
    want, got = list(want), list(got)
    missing = [k for k in want if k not in set(got)]
    extra = [k for k in got if k not in set(want)]
    dup = sorted({k for k in got if got.count(k) > 1}, key=str)
    if missing or extra or dup:
        raise ValueError(f"{what} do not match the values': missing {missing}, unexpected {extra}, repeated {dup}")


def _arrays(values, errors):
    """(values, errors) as float arrays; two Series are aligned by label (mismatched labels raise)."""
    if isinstance(values, pd.Series) and isinstance(errors, pd.Series):
        _same_labels(values.index, errors.index, "errors' labels")
        errors = errors.loc[values.index]
    v = np.asarray(values, dtype=np.float64)
    e = np.zeros_like(v) if errors is None else np.asarray(errors, dtype=np.float64)
    if e.shape != v.shape:
        raise ValueError(f"errors have shape {e.shape}, values {v.shape}")
    return v, e


def significance(values, errors=None, better: str = "low", k: float = 2.0, rtol: float = 1e-3,
                 atol: float = 1e-12) -> np.ndarray:
    """(n, n) bool: [i, j] True when i is significantly better than j (module docstring). A pair
    with a NaN value or a NaN (unknown) error is never significant."""
    _check_better(better)
    v, e = _arrays(values, errors)
    gap = (v[None, :] - v[:, None]) if better == "low" else (v[:, None] - v[None, :])  # > 0: i better than j
    tol = np.maximum.reduce([k * np.sqrt(e[:, None] ** 2 + e[None, :] ** 2),  # NaN where an error is unknown
                             rtol * np.maximum(np.abs(v[:, None]), np.abs(v[None, :])), np.full(gap.shape, atol)])
    out = gap > tol
    out[np.isnan(gap) | np.isnan(tol)] = False
    return out


def tied_ranks(values, errors=None, better: str = "low", **kw) -> pd.DataFrame:
    """rank (midpoint of the interval), rank_lo, rank_hi per submission (1 = best), among the n
    submissions with a value and a known error; NaN for the others."""
    v, e = _arrays(values, errors)
    ok = ~(np.isnan(v) | np.isnan(e))
    sig = significance(v, e, better, **kw)
    lo = np.where(ok, 1.0 + sig.sum(0), np.nan)         # 1 + how many are significantly better than me
    hi = np.where(ok, ok.sum() - sig.sum(1), np.nan)    # n minus how many I am significantly better than
    index = values.index if isinstance(values, pd.Series) else None
    return pd.DataFrame({"rank": (lo + hi) / 2.0, "rank_lo": lo, "rank_hi": hi}, index=index)


def separates(values, errors=None, better: str = "low", min_fraction: float = 0.25, **kw) -> tuple[bool, float]:
    """(whether the metric separates the submissions, fraction of significantly different pairs
    among those with a value and a known error)."""
    v, e = _arrays(values, errors)
    ok = ~(np.isnan(v) | np.isnan(e))
    sig = significance(v[ok], e[ok], better, **kw)
    n = len(sig)
    if n < 2:
        return False, 0.0
    frac = float((sig | sig.T)[np.triu_indices(n, 1)].mean())
    return frac >= min_fraction, frac


def _tol_ranks(d: np.ndarray, better: str, rtol: float, atol: float) -> np.ndarray:
    """Tied ranks of draws d (n_draws, n) with the rtol/atol tolerance only; NaN stays unranked."""
    gap = (d[:, None, :] - d[:, :, None]) if better == "low" else (d[:, :, None] - d[:, None, :])
    tol = np.maximum(rtol * np.maximum(np.abs(d[:, :, None]), np.abs(d[:, None, :])), atol)
    sig = np.nan_to_num(gap, nan=0.0) > tol
    ok = ~np.isnan(d)
    lo, hi = 1.0 + sig.sum(1), ok.sum(1, keepdims=True) - sig.sum(2)
    return np.where(ok, (lo + hi) / 2.0, np.nan)


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a submission with nothing ranked: NaN
        return np.nanmean(a, axis=axis)


def _mean_rank(r: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    """Mean over families of the mean over each family's metrics; r (..., n, n_metrics)."""
    return _nanmean(np.stack([_nanmean(r[..., g], -1) for g in groups], -1), -1)


def _draws(label, metric, seed: int, n: int) -> np.ndarray:
    """Standard normal draws keyed by (seed, label, metric): independent of row order."""
    key = [seed, zlib.crc32(str(label).encode()), zlib.crc32(str(metric).encode())]
    return np.random.default_rng(key).standard_normal(n)


def overall_ties(board: pd.DataFrame) -> dict:
    """{label: [labels whose mean-rank interval overlaps its own, in board order]}."""
    lo, hi = board["mean_rank_lo"], board["mean_rank_hi"]
    return {a: [b for b in board.index if b != a and lo[a] <= hi[b] and lo[b] <= hi[a]] for a in board.index}


def _fmt(board: pd.DataFrame, k) -> str:
    return (f"{k} ({board.loc[k, 'mean_rank']:.2f}, interval {board.loc[k, 'mean_rank_lo']:.2f}–"
            f"{board.loc[k, 'mean_rank_hi']:.2f})")


def ends_text(board: pd.DataFrame) -> str:
    """Who holds first and last place, never ordering two submissions whose mean-rank intervals
    overlap: a place is held alone only when no other interval overlaps its holder's."""
    ties, ranked = overall_ties(board), board.index[board["mean_rank"].notna()]
    out = []
    for k, place in ((ranked[0], "the lead"), (ranked[-1], "last place")):
        group = [k] + [j for j in ties[k] if j in ranked]
        out.append(f"{_fmt(board, k)} holds {place} alone (no other interval overlaps its own)" if len(group) == 1
                   else f"{place} is shared by " + ", ".join(_fmt(board, j) for j in group)
                   + f" (their intervals overlap {k}'s)")
    return "; ".join(out)


def _checked(values: pd.DataFrame, errors: pd.DataFrame | None, better: dict, family: dict):
    """(labels sorted, values V and errors E on them) after refusing what :func:`board` cannot rank."""
    for m, b in better.items():
        _check_better(b, f"better[{m!r}]")
    absent = [m for m in better if m not in values.columns]
    if absent:
        raise ValueError(f"metrics in better without a values column: {absent}")
    no_family = [m for m in better if m not in family]
    if no_family:
        raise ValueError(f"metrics without a family: {no_family}")
    errors = pd.DataFrame(index=values.index) if errors is None else errors
    _same_labels(values.index, errors.index, "errors' rows")
    _same_labels(values.index, values.index, "values' rows")
    stray = [c for c in errors.columns if c not in better]
    if stray:
        raise ValueError(f"errors' columns not in better: {stray}")
    labels = sorted(values.index, key=str)  # row order never matters
    return labels, values.loc[labels, list(better)].astype(float), errors.loc[labels].astype(float)


def _interval_text(lo, hi) -> list[str]:
    """Rank intervals as "lo–hi" ("lo" when they agree, "—" unranked)."""
    return ["—" if np.isnan(a) else f"{a:g}–{c:g}" if a != c else f"{a:g}" for a, c in zip(lo, hi)]


def _per_metric(V: pd.DataFrame, E: pd.DataFrame, better: dict, family: dict, power: dict, min_fraction: float,
                min_measured: float = 0.5, **kw):
    """Each metric's tied ranks and whether it separates: (board columns, metric table, {metric: ranks},
    {label: [(metric, why unranked)]})."""
    cols, info, ranks, why = {}, [], {}, {lab: [] for lab in V.index}
    for m, b in better.items():
        err = E[m] if m in E else None
        tr = tied_ranks(V[m], err, b, **kw)
        ok, frac = separates(V[m], err, b, min_fraction, **kw)
        n_img, need = power.get(m, (np.nan, np.nan))
        info.append({"metric": m, "family": family[m], "better": b, "separates": ok, "separated_pairs": frac,
                     "has_error_bar": err is not None and bool(np.nan_to_num(err.to_numpy()).any()),
                     "unranked": int(tr["rank"].isna().sum()), "n_images": n_img, "images_needed": need,
                     "underpowered": bool(n_img < need), "measured": int(V[m].notna().sum())})
        for lab in tr.index[tr["rank"].isna()]:
            why[lab].append((m, "unmeasured" if np.isnan(V.loc[lab, m]) else "error unknown"))
        ranks[m] = tr["rank"]
        cols[m] = V[m]
        if err is not None:
            cols[f"{m}_err"] = err
        cols[f"rank_{m}"] = tr["rank"]
        cols[f"rank_{m}_interval"] = _interval_text(tr.rank_lo, tr.rank_hi)
    info = pd.DataFrame(info).set_index("metric")
    # a metric measured for too few submissions (chapter 9's, for methods with per-particle output)
    # ranks them among themselves only: shown, not averaged with ranks among all
    info["partial"] = info.measured < min_measured * len(V)
    info["in_mean_rank"] = info.separates & ~info.underpowered & ~info.partial
    return cols, info, ranks, why


def _per_family(info: pd.DataFrame, R: pd.DataFrame, better: dict, family: dict):
    """(family table, ``family_rank_<f>`` columns, metric-index groups of the mean rank)."""
    fams = [f for f in FAMILIES if f in info.family.values] + list(dict.fromkeys(
        f for f in info.family if f not in FAMILIES))
    rows, cols, groups = [], {}, []
    for f in fams:
        ms = [m for m in better if family[m] == f]
        sep = [m for m in ms if info.loc[m, "separates"]]
        use = [m for m in ms if info.loc[m, "in_mean_rank"]]
        partial = [m for m in sep if info.loc[m, "partial"]]
        reason = "" if use else "underpowered" if any(info.loc[m, "underpowered"] for m in sep) else \
            f"measured for {int(info.loc[partial[0], 'measured'])} of {len(R)} submissions" if partial else \
            "no separating metric"
        rows.append({"family": f, "metrics": ", ".join(ms), "used": ", ".join(use), "in_mean_rank": bool(use),
                     "reason": reason})
        cols[f"family_rank_{f}"] = R[use or sep or ms].mean(axis=1)
        if use:
            groups.append([list(better).index(m) for m in use])
    return pd.DataFrame(rows).set_index("family"), cols, groups


def _mean_rank_interval(V, E, better: dict, used, groups, point: pd.Series, n_draws: int, seed: int,
                        rtol: float, atol: float):
    """(lo, hi) of the mean rank: percentiles 2.5–97.5 of the parametric bootstrap (module docstring)."""
    labels = list(V.index)
    z = np.stack([np.stack([_draws(lab, m, seed, n_draws) for lab in labels], 1) for m in better], -1)
    e = np.stack([E[m].to_numpy() if m in E else np.zeros(len(labels)) for m in better], -1)
    d = V.to_numpy()[None] + z * e[None]  # (n_draws, n, n_metrics); NaN where unmeasured or unknown
    dr = np.full_like(d, np.nan)
    for j, m in enumerate(better):
        if m in used:
            dr[..., j] = _tol_ranks(d[..., j], better[m], rtol, atol)
    M = _mean_rank(dr, groups)
    return (pd.Series(np.fmin(np.nanpercentile(M, 2.5, axis=0), point), index=labels),
            pd.Series(np.fmax(np.nanpercentile(M, 97.5, axis=0), point), index=labels))


def board(values: pd.DataFrame, errors: pd.DataFrame | None, better: dict, power: dict | None = None,
          family: dict | None = None, k: float = 2.0, rtol: float = 1e-3, atol: float = 1e-12,
          min_fraction: float = 0.25, n_draws: int = 1000, seed: int = 0, min_measured: float = 0.5,
          ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Leaderboard from per-submission metric values and errors, matched by row and column label.

    ``better`` {metric: "low" | "high"} (:func:`helpers.core.catalogue.directions`); ``errors``
    has the values' rows (any order) and a column per metric with an error bar (none: exact up
    to rtol); ``family`` {metric: family} (default :data:`helpers.core.catalogue.FAMILY`);
    ``power`` {metric: (n_images, images_needed)}; a metric measured for fewer than
    ``min_measured`` of the submissions is *partial*: ranked and shown, not averaged (its ranks
    are among the few it measured). Returns (board, metrics, families).
    ``board``, sorted by ``mean_rank`` (ties by label): ``mean_rank``, ``mean_rank_lo``,
    ``mean_rank_hi``, ``family_rank_<f>`` per family, then per metric its value, ``<m>_err``,
    ``rank_<m>`` and ``rank_<m>_interval`` ("lo–hi", "—" unranked), then ``unranked`` (the
    entering metrics it has no rank on, and why) and ``tied_with`` (overlapping intervals,
    "; "-separated). ``metrics``: per metric its family, ``separates``, ``separated_pairs``,
    ``has_error_bar``, ``unranked`` (count), ``n_images``, ``images_needed``, ``underpowered``,
    ``measured`` (count), ``partial``, ``in_mean_rank``. ``families``: per family its ``metrics``, ``used`` (those averaged),
    ``in_mean_rank`` and ``reason`` when left out."""
    family = FAMILY if family is None else family
    labels, V, E = _checked(values, errors, better, family)
    cols, info, ranks, why = _per_metric(V, E, better, family, power or {}, min_fraction, min_measured,
                                         k=k, rtol=rtol, atol=atol)
    used = list(info.index[info.in_mean_rank])
    families, fam_cols, groups = _per_family(info, pd.DataFrame(ranks), better, family)
    point = pd.Series(_mean_rank(pd.DataFrame(ranks).to_numpy(), groups) if groups else np.nan, index=labels)
    lo = hi = point
    if groups and n_draws:
        lo, hi = _mean_rank_interval(V, E, better, used, groups, point, n_draws, seed, rtol, atol)
    out = pd.DataFrame({"mean_rank": point, "mean_rank_lo": lo, "mean_rank_hi": hi, **fam_cols, **cols}, index=labels)
    out["unranked"] = ["; ".join(f"{m} ({w})" for m, w in why[lab] if m in used) for lab in labels]
    out = out.sort_values("mean_rank", kind="stable", na_position="last")
    out.index.name = values.index.name
    ties = overall_ties(out)
    out["tied_with"] = ["; ".join(map(str, ties[lab])) for lab in out.index]
    return out, info, families


def name(key) -> str:
    """A leaderboard row's or column's readable name (tables, widgets, figure titles): "mean
    rank", a metric's label with its unit from :mod:`helpers.core.catalogue`, any other key
    (e.g. "all" in the defect checks) as it is."""
    return "mean rank" if key == "mean_rank" else catalogue.label(key) if key in catalogue.METRICS else key


# The demo's degraded mocks (helpers.datagen.mocks.build_mocks), each made from "Reconstructed" by one
# defect, and the metric meant to catch it: (mock, family, metric). "undone" rows are defects
# that preprocessing must remove (the mock must then tie with its base on every map metric).
DEMO_BASE = "Reconstructed"
DEMO_CONTROLS = ("Averaged GT", "Sampled GT")  # noise-free, made from the GT
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
    "caught" (significantly worse), "missed" (not), "wrong way" (significantly better),
    "unmeasured" / "error unknown" (a NaN value / error: no call). For ``undone`` mocks, one row:
    "undone" when no metric separates the mock from its base, else "left a difference in …".
    Missing mocks or metrics are skipped."""
    rows = []
    if base not in values.index:
        return pd.DataFrame(rows)

    def verdict(mock, m):
        v = values.loc[[mock, base], m].to_numpy(dtype=float)
        e = errors.loc[[mock, base], m].to_numpy(dtype=float) if m in errors else np.zeros(2)
        if np.isnan(v).any() or np.isnan(e).any():
            return v, "unmeasured" if np.isnan(v).any() else "error unknown"
        sig = significance(v, e, better[m], **kw)
        return v, ("wrong way" if sig[0, 1] else "caught" if sig[1, 0] else "missed")

    for mock, family, m in defects:
        if mock in values.index and m in values:
            v, what = verdict(mock, m)
            rows.append({"mock": mock, "family": family, "metric": m, "value": v[0], "base_value": v[1],
                         "verdict": what})
    for mock, family in undone:
        if mock in values.index:
            diff = [m for m in better if verdict(mock, m)[1] in ("caught", "wrong way")]
            rows.append({"mock": mock, "family": family, "metric": "all", "value": np.nan, "base_value": np.nan,
                         "verdict": "undone" if not diff else "left a difference in " + ", ".join(diff)})
    return pd.DataFrame(rows)


def placement(board: pd.DataFrame, label: str, better: dict, compare: str | None = DEMO_BASE,
              errors: pd.DataFrame | None = None, **kw) -> dict:
    """Where one submission lands on a leaderboard from :func:`board` (sorted by mean rank).

    Returns ``position`` (1-based place in the mean-rank order) of ``n``, ``above`` / ``below``
    (the neighbours' labels, None at the ends); with mean-rank intervals on the board, ``tied``
    (intervals overlap), ``ahead_of`` / ``behind`` (intervals apart; board order); ``metrics``
    — one row per metric: its value and rank (NaN: unranked), and, when ``compare`` is on the
    board, the comparison's value and the :func:`significance` verdict between the two
    ("better", "worse", "tied", "unknown" with a NaN value or error) — and ``best`` / ``worst``:
    the metrics of its lowest and highest rank."""
    order = list(board.index)
    i = order.index(label)
    rows = []
    for m, b in better.items():
        row = {"metric": m, "value": board.loc[label, m], "rank": board.loc[label, f"rank_{m}"]}
        if compare in board.index and compare != label:
            v = board.loc[[label, compare], m].to_numpy(dtype=float)
            e = None
            if errors is not None and m in errors:
                e = errors.loc[[label, compare], m].to_numpy(dtype=float)
            elif f"{m}_err" in board:
                e = board.loc[[label, compare], f"{m}_err"].to_numpy(dtype=float)
            sig = significance(v, e, b, **kw)
            unknown = np.isnan(v).any() or (e is not None and np.isnan(e).any())
            row.update(compare_value=v[1], vs_compare="unknown" if unknown else "better" if sig[0, 1]
                       else "worse" if sig[1, 0] else "tied")
        rows.append(row)
    metrics = pd.DataFrame(rows).set_index("metric")
    r = metrics["rank"].dropna()
    out = {"position": i + 1, "n": len(order), "above": order[i - 1] if i > 0 else None,
           "below": order[i + 1] if i + 1 < len(order) else None, "metrics": metrics,
           "best": list(r[r == r.min()].index), "worst": list(r[r == r.max()].index)}
    if {"mean_rank_lo", "mean_rank_hi"} <= set(board.columns):
        lo, hi = board["mean_rank_lo"], board["mean_rank_hi"]
        out["tied"] = overall_ties(board)[label]
        out["ahead_of"] = [k for k in order if lo[k] > hi[label]]
        out["behind"] = [k for k in order if hi[k] < lo[label]]
    return out
