"""Distribution metrics: how well a submission's maps *and populations* reproduce the GT
distribution along the motion (``challenge-metrics.md`` §7).

Inputs: a GT × submission **cost** matrix C (n_gt, n_sub) (similarities such as correlation
must be turned into costs first: :func:`to_cost`), GT populations p and pc1, submitted
populations q.

* Cost scale (``cost_scale``): ``"distance"`` (default) uses the metric itself, zero for a
  perfect match (:func:`distance_cost`: L2 per masked voxel, 1 − corr, 1 − FSC area, resolution
  in Å above Nyquist, sliced-Wasserstein Å), so the EMD is the mean distance the GT mass travels
  and does not depend on how many maps a submission has. ``"rank"`` (the published idea):
  per-row ranks **0**..n_sub−1 (ties averaged; most similar = rank 0). Ranks reward having
  fewer maps: with n maps they run 0..n−1, and a window's neighbours that are all "close" get
  ranks 1, 2, … among 80 maps but 0 among 20 (measured on the demo: an Averaged-GT mock of 20
  maps beat the exact 80-map control). With ranks from 1, as published, a perfect submission's
  EMD is 1, or n_pool with summed windows.
* Replicates (:func:`replicate_windows`): a seeded subsample of a fraction of the GT maps,
  ordered by pc1, pooled into windows of ``n_pool`` neighbouring maps (``array_split``).
  P_r = pooled GT population; D_rl = **mean** cost of window r to map l (the published code sums
  ranks; with equal windows only a scale, see ``pool="sum"``).
* EMD with submitted populations: exact OT between P and q (POT ``ot.emd2``).
* EMD with optimised populations: the LP min_{q∈Δ, T≥0, T1=P, Tᵀ1=q} ⟨D, T⟩ solved by cvxpy
  (solver HiGHS by default; explicit C-order layout), cross-checked with its closed form
  Σ_r P_r min_l D_rl (:func:`emd_optimised_closed_form`).
* KL: A (windows × maps) spreads each submitted map's population over the windows it is the
  cheapest map for (its territory; ties shared), or, for a map that is no window's cheapest,
  onto the window cheapest for it (:func:`assignment_matrix`); q* maximises F(q) = Σ_r P_r log (A q)_r by EM multiplicative updates
  q ← q ⊙ ∇F(q), stopped when the increase of F falls below ``tol`` (F increases monotonically).
  Reported: KL(P‖Aq) and KL(Aq‖P) for submitted q and for q*.

``mode="reference"`` (:func:`evaluate`) reproduces the published pipeline
(``challenge-metrics.md`` §7): GT rows ordered by pc1 (quicksort, as pandas), replicate rows drawn
by numpy's legacy RNG seeded with the replicate index (``RandomState(k).choice``, sorted), ranks
1..n, windows *summed*, and the KL iteration stopped when every gradient entry is within
``break_atol`` of 1 or 0 (q after that last update reported), and the published assignment
(window → its cheapest map, first index on ties, maps that are nobody's cheapest spread over
all windows). Costs are used as given (the
published code does not negate similarities). :func:`evaluate_published_pickle` runs it on a
published map-to-map pickle.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

SIMILARITIES = {"corr"}


def to_cost(matrix: np.ndarray, metric: str) -> np.ndarray:
    """Costs from a metric matrix: similarities (``corr``) become 1 − similarity (the published
    code ranks correlations ascending, putting the most similar map last — its defect §10.9)."""
    return 1.0 - matrix if metric in SIMILARITIES else np.asarray(matrix, dtype=np.float64)


def distance_cost(matrix: np.ndarray, metric: str, n_voxels: int | None = None,
                  voxel_size: float | None = None) -> np.ndarray:
    """A GT × submission metric matrix as a distance that is 0 for a perfect match.

    l2: per masked voxel (divided by ``n_voxels``: mean squared difference of the z-scored maps);
    corr: 1 − corr; fsc: 1 − FSC area (as computed); res: Å above Nyquist (− 2·``voxel_size``);
    sw and others: as given. Raises ValueError when l2/res lack the number they need."""
    m = np.asarray(matrix, dtype=np.float64)
    if metric == "l2":
        if not n_voxels:
            raise ValueError("distance_cost('l2') needs n_voxels (the 'n_voxels' entry of the volume metrics)")
        return m / n_voxels
    if metric == "res":
        if not voxel_size:
            raise ValueError("distance_cost('res') needs voxel_size (Å)")
        return np.maximum(m - 2.0 * voxel_size, 0.0)
    return to_cost(m, metric)


def rank_rows(cost: np.ndarray, start: int = 0) -> np.ndarray:
    """Per-row ranks ``start``..``start``+n−1 (ties averaged): the cheapest map of each GT row
    gets rank ``start`` (0 by default: a perfect match costs nothing; the published code uses 1)."""
    return rankdata(cost, axis=1) - 1 + start


def replicate_windows(n_gt: int, pc1: np.ndarray, fraction: float, n_pool: int, seed: int,
                      mode: str = "default"):
    """Sorted subsample of GT rows and its pooling windows.

    default: ``default_rng(seed)`` draws the rows, stable pc1 order. reference: the published
    draw — GT ordered by pc1 (quicksort), ``RandomState(seed).choice(m, m', replace=False)``
    positions in that order, sorted (identical to ``np.random.seed(seed)`` + ``np.random.choice``
    without touching the global RNG); m' = int(fraction·m).
    Returns (rows (m',) GT indices ordered by pc1, windows: list of arrays of positions in rows).
    """
    if mode == "reference":
        order = np.argsort(np.asarray(pc1), kind="quicksort")
        m = int(fraction * n_gt)
        pos = np.random.RandomState(seed).choice(np.arange(n_gt), size=m, replace=False)
        pos.sort()
        rows = order[pos]
    else:
        rng = np.random.default_rng(seed)
        m = max(1, int(np.floor(fraction * n_gt)))
        rows = rng.choice(n_gt, size=m, replace=False)
        rows = rows[np.argsort(pc1[rows], kind="stable")]
    n_win = max(1, m // n_pool)
    return rows, np.array_split(np.arange(m), n_win)


def pool(cost: np.ndarray, p: np.ndarray, rows, windows, how: str = "mean"):
    """Pooled GT distribution P (n_win,) (renormalised) and window cost D (n_win, n_sub)."""
    c, pr = cost[rows], p[rows]
    D = np.stack([c[w].mean(0) if how == "mean" else c[w].sum(0) for w in windows])
    P = np.array([pr[w].sum() for w in windows])
    return P / P.sum(), D


def emd_submitted(P: np.ndarray, q: np.ndarray, D: np.ndarray):
    """Exact EMD between window distribution P and submitted q with cost D. Returns (value, plan)."""
    import ot  # POT, imported when used: ~1 s at import time otherwise
    T = ot.emd(P, q, D, numItermax=1_000_000)
    return float((T * D).sum()), T


def emd_optimised_closed_form(P: np.ndarray, D: np.ndarray):
    """Closed form of the EMD with free populations: Σ_r P_r min_l D_rl; q puts each window's
    mass on its cheapest map. Returns (value, q)."""
    best = D.argmin(1)
    q = np.bincount(best, weights=P, minlength=D.shape[1])
    return float((P * D.min(1)).sum()), q


def emd_optimised_lp(P: np.ndarray, D: np.ndarray, solver: str = "HIGHS"):
    """The LP for the EMD with optimised populations (cvxpy). Returns (value, q, plan)."""
    import cvxpy as cp

    m, n = D.shape
    T = cp.Variable((m, n), nonneg=True)
    q = cp.Variable(n, nonneg=True)
    cons = [cp.sum(T, axis=1) == P, cp.sum(T, axis=0) == q, cp.sum(q) == 1]
    prob = cp.Problem(cp.Minimize(cp.sum(cp.multiply(D, T))), cons)
    prob.solve(solver=solver)
    return float(prob.value), np.asarray(q.value).clip(0), np.asarray(T.value)


def assignment_matrix(D: np.ndarray, mode: str = "default", rtol: float = 1e-12) -> np.ndarray:
    """A (n_win, n_sub), columns summing to 1: where each submitted map's population goes among
    the windows, so that A q is the submission's distribution over the windows.

    default: map l's *territory* is the set of windows for which it is the cheapest map (every
    map within ``rtol`` of a window's minimum counts: ties are shared, never decided by map
    order); its population is spread uniformly over its territory. A map that is no window's
    cheapest goes to the window(s) cheapest for it. So A q does not depend on the order of the
    maps, and splitting a map into identical copies (any split of its population) leaves A q
    unchanged: identical columns of D give identical columns of A.

    reference (``challenge-metrics.md`` §7.6): window r → argmin_l D_rl (first index wins ties),
    columns normalised, and every map that is no window's cheapest spread uniformly over *all*
    windows — which penalises a complete submission (most of its maps are nobody's cheapest)
    and makes the result depend on which of two identical maps comes first."""
    D = np.asarray(D, dtype=np.float64)
    m, n = D.shape
    if mode == "reference":
        A = np.zeros((m, n))
        A[np.arange(m), D.argmin(1)] = 1.0
        s = A.sum(0)
        A[:, s == 0] = 1.0 / m
        return A / A.sum(0, keepdims=True)
    if mode != "default":
        raise ValueError(f"unknown mode {mode!r}: 'default' or 'reference'")
    row_min = D.min(1, keepdims=True)
    A = (D <= row_min + rtol * np.abs(row_min) + 1e-300).astype(np.float64)   # territories
    orphan = A.sum(0) == 0
    if orphan.any():                                  # nobody's cheapest: to its own cheapest window(s)
        Do = D[:, orphan]
        col_min = Do.min(0, keepdims=True)
        A[:, orphan] = Do <= col_min + rtol * np.abs(col_min) + 1e-300
    return A / A.sum(0, keepdims=True)


def kl(p: np.ndarray, q: np.ndarray, eps: float = 1e-300) -> float:
    """KL(p‖q) = Σ p log(p/q) (0 log 0 = 0)."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    nz = p > 0
    return float(np.sum(p[nz] * (np.log(p[nz]) - np.log(np.maximum(q[nz], eps)))))


def em_weights(P: np.ndarray, A: np.ndarray, q0=None, max_iter: int = 100_000, tol: float = 1e-12,
               return_trace: bool = False):
    """Maximise F(q) = Σ_r P_r log (A q)_r over the simplex by EM (multiplicative) updates
    q ← q ⊙ Aᵀ(P / A q). Stops when F increases by less than ``tol``. Works for any non-negative
    A with normalised columns (window assignment here; the likelihood matrix in image metrics).
    Returns (q, n_iter[, trace of F])."""
    n = A.shape[1]
    q = np.full(n, 1.0 / n) if q0 is None else np.asarray(q0, float).copy()
    f_old = -np.inf
    trace = []
    for it in range(max_iter):
        Aq = np.maximum(A @ q, 1e-300)
        f = float(P @ np.log(Aq))
        trace.append(f)
        if f - f_old < tol:
            break
        f_old = f
        q = q * (A.T @ (P / Aq))
        q /= q.sum()
    return (q, it, np.array(trace)) if return_trace else (q, it)


def em_weights_published(P: np.ndarray, A: np.ndarray, n_iter: int = 100_000, break_atol: float = 1e-4):
    """The published KL optimisation (``challenge-metrics.md`` §7.6): from uniform q, update
    q ← q ⊙ ∇F(q) and stop after the first update where every entry of ∇F (at the old q) is within
    ``break_atol`` of 1 or of 0. Returns (q after that update, iter_stop (0-based), eps_stop =
    ‖q_new − q_old‖)."""
    n = A.shape[1]
    q = np.full(n, 1.0 / n)
    eps, it = 0.0, 0
    for it in range(n_iter):
        grad = ((P[:, None] * A) / (A @ q)[:, None]).sum(0)
        new = grad * q
        eps = float(np.linalg.norm(new - q))
        q = new
        if np.all(np.isclose(grad, 1.0, atol=break_atol) | np.isclose(grad, 0.0, atol=break_atol)):
            break
    return q, it, eps


def evaluate(cost: np.ndarray, p_gt: np.ndarray, pc1: np.ndarray, q_sub: np.ndarray, n_pool: int = 5,
             fraction: float = 0.9, n_replicates: int = 10, cost_scale: str = "distance", seed: int = 0,
             lp_check: bool = False, pool_how: str = "mean", mode: str = "default",
             break_atol: float = 1e-4) -> list[dict]:
    """All distribution metrics for one submission and one cost matrix, per replicate.

    cost (n_gt, n_sub) (a cost: similarities turned by :func:`to_cost`, except in reference
    mode, which takes the matrix as the published pickle stores it), p_gt, pc1 (n_gt,), q_sub
    (n_sub,). Default: the cost as given (``cost_scale="distance"``: pass :func:`distance_cost`;
    ``"rank"``: per-row ranks from 0), windows averaged, ``default_rng`` replicates, EM to
    convergence. ``mode="reference"``: the published pipeline (module docstring; ranks from 1,
    windows summed, ``seed`` ignored: replicate k uses seed k, published KL stopping rule with
    ``break_atol``; ``cost_scale`` and ``pool_how`` ignored).

    Returns a list of dicts (one per replicate) with EMD_submitted, EMD_opt (closed form; LP
    value too when ``lp_check``), KL_pq/KL_qp submitted and optimised, q_opt_emd, q_opt_kl (per
    submitted map), ``max_q_opt`` (the largest share of the optimised mass on one map: a "hub"
    map that is the cheapest for many windows, e.g. a blurred average), P and window pc1 (mean
    pc1 of each window); reference mode adds
    ``kl_iter_stop`` and ``kl_eps_stop``.
    """
    ref = mode == "reference"
    if mode not in ("default", "reference"):
        raise ValueError(f"unknown mode {mode!r}: 'default' or 'reference'")
    if ref:
        C, pool_how = rank_rows(cost, start=1), "sum"
    else:
        if cost_scale not in ("distance", "rank"):
            raise ValueError(f"unknown cost_scale {cost_scale!r}: 'distance' or 'rank'")
        C = rank_rows(cost) if cost_scale == "rank" else np.asarray(cost, float)
    out = []
    for k in range(n_replicates):
        rows, wins = replicate_windows(len(p_gt), pc1, fraction, n_pool, k if ref else seed + k, mode)
        P, D = pool(C, p_gt, rows, wins, pool_how)
        e_sub, _ = emd_submitted(P, q_sub, D)
        e_opt, q_emd = emd_optimised_closed_form(P, D)
        A = assignment_matrix(D, mode)
        if ref:
            q_kl, it, eps = em_weights_published(P, A, break_atol=break_atol)
        else:
            q_kl, it = em_weights(P, A)
        rec = dict(replicate=k, EMD_submitted=e_sub, EMD_opt=e_opt, KL_pq_submitted=kl(P, A @ q_sub),
                   KL_qp_submitted=kl(A @ q_sub, P), KL_pq_opt=kl(P, A @ q_kl), KL_qp_opt=kl(A @ q_kl, P),
                   em_iterations=it, max_q_opt=float(q_emd.max()), q_opt_emd=q_emd, q_opt_kl=q_kl, P=P,
                   window_pc1=np.array([pc1[rows][w].mean() for w in wins]), n_windows=len(wins))
        if ref:
            rec.update(kl_iter_stop=it, kl_eps_stop=eps)
        if lp_check:
            rec["EMD_opt_lp"] = emd_optimised_lp(P, D)[0]
        out.append(rec)
    return out


def evaluate_published_pickle(pkl_path, metadata_csv, metrics=None, n_replicates: int = 30, n_pool: int = 5,
                              fraction: float = 0.9, break_atol: float = 1e-4, trusted: bool = False) -> dict:
    """Reference-mode EMD/KL on a published map-to-map result pickle (``challenge-metrics.md``
    §1.4: per metric a ``cost_matrix`` DataFrame, rows in GT file order; and
    ``user_submitted_populations``) with the GT ``metadata.csv`` (``pc1``, ``populations``).
    Defaults are the published config's (30 replicates, windows of 5, 90 % subsamples).
    Returns {metric: list of per-replicate dicts as :func:`evaluate`}. The pickle is read with
    :func:`helpers.io.safe_pickle.load` (numpy and pandas data only) unless ``trusted``."""
    import pandas as pd

    from helpers.core.errors import InputError
    from helpers.io.safe_pickle import load

    data = load(pkl_path, "tables", trusted=trusted)
    meta = pd.read_csv(metadata_csv)
    for col in ("pc1", "populations"):
        if col not in meta:
            raise InputError(metadata_csv, f"no '{col}' column.", "Use the challenge's GT metadata.csv.")
    q = np.asarray(data["user_submitted_populations"], dtype=np.float64)
    metrics = metrics or [k for k, v in data.items() if isinstance(v, dict) and "cost_matrix" in v]
    out = {}
    for m in metrics:
        cost = np.asarray(data[m]["cost_matrix"], dtype=np.float64)
        if cost.shape[0] != len(meta):
            raise InputError(pkl_path, f"metric {m!r}: {cost.shape[0]} GT rows but {len(meta)} metadata rows.",
                             "Use the metadata.csv of the GT the pickle was computed against.")
        out[m] = evaluate(cost, meta["populations"].to_numpy(float), meta["pc1"].to_numpy(float), q,
                          n_pool=n_pool, fraction=fraction, n_replicates=n_replicates, mode="reference",
                          break_atol=break_atol)
    return out
