"""Optimal-transport distances between maps seen as weighted point clouds of their top-k voxels.

The published analysis (``challenge-metrics.md`` §6.7–6.8) compares two maps by the
*Gromov–Wasserstein* (GW) and *Procrustes–Wasserstein* (PW) distances between small point
clouds: the ``k`` highest-valued voxels of each map, weighted by their values.

* **Point clouds** (:func:`top_k_clouds`): the maps (and mask) are first Fourier-resampled to
  a coarse box (``downsample``, 16 by default: 8.6 Å voxels on the demo) so that k points
  cover the whole molecule — on the full grid the top 50 of 64³ voxels are a few density peaks:
  demo GT maps 5 steps apart (of 400) come out 5.3 Å apart by GW, the two ends 6.4 Å. Then the ``k``
  largest voxels of each map (mask weights applied); weights = their values, shifted by −min
  when any is negative, normalised to sum 1; positions in Å, centred on the weighted centroid.
* **GW** (:func:`gromov_wasserstein`): with intra-map costs C = (pairwise distance in Å)^p,
  ``gw`` = sqrt(min_T Σ_{i,j,k,l} (C1_ik − C2_jl)² T_ij T_kl), T coupling the two weight vectors:
  the root-mean-square distortion of intra-map distances under the best coupling (Å^p). It only
  sees distances within each map, so it is invariant to rotation, translation **and
  reflection** (it cannot see a handedness flip). POT's conditional gradient finds a local
  optimum of this non-convex problem, started from the W2 (Wasserstein) plan between the two
  aligned clouds. The published start, the product coupling, is trapped often: for 10 demo
  GT maps evenly spaced along the motion (k = 100, 16³), it puts the 4th map 5.2 Å from the
  first and the last 6.1 Å, where the W2 start finds 2.9 and 5.7 Å and distances that grow
  steadily along the motion; it is also 2–3× slower. ``make bench`` (synthetic motion, 240
  pairs): the product start ends worse on 145 pairs (by up to 2.3 Å), better on 40 (by at
  most 0.011 Å); on the demo, adding it (``product_start=True``) lowers ~10 % of the pairs by
  ≤ 0.013 Å and changes no coverage value.
  ``mirror_starts=True`` adds the W2 plans with the second cloud mirrored along each axis, so
  that a mirror image is found at distance ≈ 0 as GW's invariance says (4× the cost).
* **PW** (:func:`procrustes_wasserstein`): ``pw`` = sqrt(min_{R, t, Π} Σ_ij Π_ij ‖x_i − (R y_j + t)‖²)
  over proper rotations R (det +1, so a mirror image is *not* matched), translations t and
  couplings Π: the root-mean-square displacement (Å) after the best rigid superposition.
  Alternating minimisation (Adamo et al. 2025): exact OT plan for fixed R (POT ``ot.emd``), then
  the Kabsch rotation for fixed Π; centring both clouds on their weighted centroids solves t
  exactly, since the centroids are fixed by the marginals. Local optimum from R = I (maps are
  aligned by preprocessing), or the best of the 24 cube rotations with ``starts=24``.

``mode="reference"`` reproduces the published numbers: unmasked full-grid maps, integer voxel
coordinates (not centred, so PW rotates about the box corner and no translation is optimised),
the product start for GW, the objectives without square root, and PW's cost taken before the
last rotation update.

Runs on the CPU (POT's exact solvers, float64), whatever device the other kernels use.
Cost: each pair is one small optimisation, so GT × submission matrices loop over pairs. At
``k = 100`` on one CPU core: GW ~7 ms per start (the W2 start; the product start alone
~21 ms) and PW ~5 ms per pair; 13.5 ms per pair for both together on the demo. A 400 × 80
matrix thus costs ~7 min per submission on one core; ``n_jobs`` worker processes share the
pairs (2 workers on 2 cores: ~1.5× faster), and a book uses subsets of GT and submitted maps
(``gt_index``, ``sub_index``).
"""
from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch

from helpers.core.backend import progress
from helpers.kernels.fourier import as_tensor, fourier_resample

TRANSPORT_METRICS = ("gw", "pw")


def top_k_clouds(maps, k: int, voxel_size: float = 1.0, mask=None, centre: bool = True,
                 mode: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` voxel point clouds of a map stack.

    maps: (n, N, N, N). With a mask, each map's solvent background
    (:func:`helpers.kernels.volume_input.background_level`) is subtracted before the mask weights are
    applied, so an intensity offset does not change the cloud. Returns positions (n, k, 3) float64 — Å relative to the weighted
    centroid (``centre``) or to the box centre N//2 — and weights (n, k) summing to 1. In
    reference mode: no mask, integer voxel indices (z, y, x), no centring.
    """
    x = torch.from_numpy(np.asarray(maps, np.float64)) if isinstance(maps, np.ndarray) else maps.cpu().double()
    n, N = x.shape[0], x.shape[-1]
    if k > N ** 3:
        raise ValueError(f"top_k={k} exceeds the {N ** 3} voxels of a {N}³ map; choose a smaller top_k")
    ref = mode == "reference"
    if mask is not None and not ref:
        from helpers.kernels.volume_input import background_level  # solvent level → weight 0: offsets change nothing
        m = as_tensor(mask, torch.device("cpu"), torch.float64).clamp(0, 1)
        x = (x - background_level(x, m, torch.device("cpu")).double().reshape(-1, 1, 1, 1)) * m
    vals, idx = torch.topk(x.reshape(n, -1), k, dim=1)
    vals, idx = vals.numpy(), idx.numpy()
    vals = vals - np.minimum(vals.min(1, keepdims=True), 0)       # shift by −min if any is negative
    tot = vals.sum(1, keepdims=True)
    w = np.where(tot > 0, vals / np.where(tot > 0, tot, 1), 1.0 / k)  # an all-zero map: uniform weights
    pos = np.stack(np.unravel_index(idx, (N, N, N)), -1).astype(np.float64)  # (n, k, 3) voxel (z, y, x)
    if ref:
        return pos, w
    pos = (pos - N // 2) * voxel_size
    if centre:
        pos = pos - np.einsum("nk,nkd->nd", w, pos)[:, None]
    return pos, w


def _intra_costs(pos: np.ndarray, exponent: float) -> np.ndarray:
    """(n, k, k) intra-cloud costs, pairwise Euclidean distance ** exponent."""
    d = np.sqrt(np.maximum(((pos[:, :, None] - pos[:, None]) ** 2).sum(-1), 0))
    return d ** exponent


def gw_objective(C1: np.ndarray, C2: np.ndarray, T: np.ndarray) -> float:
    """Σ_{i,j,k,l} (C1_ik − C2_jl)² T_ij T_kl, expanded into matrix products (a check on POT)."""
    p, q = T.sum(1), T.sum(0)
    return float(p @ (C1 ** 2) @ p + q @ (C2 ** 2) @ q - 2 * np.sum(T * (C1 @ T @ C2.T)))


def gw_starts(X, p, Y, q, mirror: bool = False) -> list:
    """Initial couplings for GW between aligned clouds (k1, 3), (k2, 3): the W2 plan of X with Y
    and, with ``mirror``, with Y mirrored along each axis (GW cannot tell a mirror image, so its
    optimum may sit near one of those plans)."""
    import ot  # POT, imported when used: ~1 s at import time otherwise
    flips = [(1, 1, 1)] + ([(-1, 1, 1), (1, -1, 1), (1, 1, -1)] if mirror else [])
    return [ot.emd(p, q, ot.dist(X, Y * np.array(f)), numItermax=1_000_000) for f in flips]


def gromov_wasserstein(C1, p, C2, q, mode: str = "default", starts=(), product_start: bool = False) -> float:
    """GW between two clouds given their intra-costs (k1, k1), (k2, k2) and weights.

    The conditional-gradient solver finds a local optimum; the best over the couplings in
    ``starts`` (see :func:`gw_starts`), plus the product coupling when ``product_start`` or
    when no start is given, is kept. Default: the square root of the objective. Reference
    mode: the objective itself, product start only, the published tolerances."""
    import ot  # POT, imported when used: ~1 s at import time otherwise
    ref = mode == "reference"
    tol = 1e-18 if ref else 1e-9
    inits = [None] if (ref or product_start or not len(starts)) else []
    inits += [] if ref else list(starts)
    best = np.inf
    for G0 in inits:
        val = ot.gromov.gromov_wasserstein2(C1, C2, p, q, loss_fun="square_loss", symmetric=True,
                                            G0=G0, max_iter=10_000, tol_rel=tol, tol_abs=tol)
        best = min(best, max(float(val), 0.0))
    return best if ref else float(np.sqrt(best))


def cube_rotations() -> np.ndarray:
    """The 24 proper rotations of the cube (signed permutation matrices with det +1), (24, 3, 3)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            R = np.zeros((3, 3))
            R[range(3), perm] = signs
            if np.linalg.det(R) > 0:
                out.append(R)
    return np.array(out)


def procrustes_wasserstein(X, p, Y, q, max_iter: int = 100, tol: float = 1e-10, starts: int = 1,
                           mode: str = "default", return_rotation: bool = False):
    """PW between clouds X (k1, 3), weights p and Y (k2, 3), weights q (row-vector convention:
    Y is rotated as Y R). Returns the distance (and R, (3, 3), with ``return_rotation``).

    Default: sqrt of the cost at the final rotation, best over ``starts`` initial rotations
    (1: identity; 24: the cube rotations). Clouds are used as given: :func:`top_k_clouds`
    centres them, which optimises the translation. Reference mode: one start, the squared
    cost of the last iteration computed before the final rotation update.
    """
    import ot  # POT, imported when used: ~1 s at import time otherwise
    ref = mode == "reference"
    inits = [np.eye(3)] if (starts == 1 or ref) else list(cube_rotations()[:starts])
    best, best_R = np.inf, np.eye(3)
    for R in inits:
        prev = np.inf
        for _ in range(max_iter):
            C = ot.dist(X, Y @ R)  # squared Euclidean
            P = ot.emd(p, q, C, numItermax=1_000_000)
            cost = float(np.sum(P * C))
            converged = abs(prev - cost) < tol
            if converged and not ref:
                break  # the cost belongs to the current R
            prev = cost
            U, _, Vt = np.linalg.svd(Y.T @ P.T @ X)
            D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
            R = U @ D @ Vt
            if converged:
                break  # published order: cost from before this update
        if cost < best:
            best, best_R = cost, R
    best = max(best, 0.0)
    val = best if ref else float(np.sqrt(best))
    return (val, best_R) if return_rotation else val


def transport_matrices(gt_maps, sub_maps, metrics=TRANSPORT_METRICS, top_k: int = 100,
                       voxel_size: float = 1.0, mask=None, exponent: float = 1.0, downsample: int | None = 16,
                       gt_index=None, sub_index=None, mode: str = "default", starts: int = 1,
                       mirror_starts: bool = False, product_start: bool = False, n_jobs: int = 1,
                       cache: dict | None = None, client=None) -> dict:
    """GT × submission GW and/or PW matrices on top-``k`` clouds.

    gt_maps (n_gt, N, N, N), sub_maps (n_sub, N, N, N), voxel_size in Å. ``gt_index`` /
    ``sub_index``: the maps to use (all by default). ``starts``: PW initial rotations (1 or
    24); ``mirror_starts`` / ``product_start``: extra GW starts (see module docstring).
    ``n_jobs``: worker processes, one GT map's row of pairs per task (0 or None: one per
    available core). ``cache``: pass the same dict for every submission scored against one GT
    subset with the same options and the GT clouds (read, downsampled, intra-costs) are made
    once. ``client``: a ``distributed.Client``: the rows of pairs are Dask tasks instead
    (the clouds scattered to the workers once; a task whose worker dies is rerun, and each row
    is written once). ``downsample``: box the maps (and mask) are
    Fourier-resampled to before the top-k voxels are taken, so that k points cover the whole
    molecule rather than its densest few voxels (the published code computes this copy but
    never uses it; reference mode keeps the full grid). Returns {"gw": (len(gt_index),
    len(sub_index)), "pw": ..., "gt_index", "sub_index"}: Å^exponent for gw and Å for pw by
    default (objectives in voxel units, unrooted, in reference mode).
    """
    unknown = set(metrics) - set(TRANSPORT_METRICS)
    if unknown:
        raise ValueError(f"unknown transport metric(s) {sorted(unknown)}; choose from {TRANSPORT_METRICS}")
    ref = mode == "reference"
    gt_index = np.arange(gt_maps.shape[0]) if gt_index is None else np.asarray(gt_index)
    sub_index = np.arange(sub_maps.shape[0]) if sub_index is None else np.asarray(sub_index)
    cpu = torch.device("cpu")
    N = sub_maps.shape[-1]
    small = bool(downsample) and downsample < N and not ref
    vs = 1.0 if ref else (voxel_size * N / downsample if small else voxel_size)
    if small and mask is not None:
        mask = fourier_resample(as_tensor(mask, cpu, torch.float64)[None], downsample)[0].clamp(0, 1)
    box = downsample if small else None
    key = ("gt clouds", tuple(gt_index.tolist()), top_k, vs, small and downsample, mode, exponent)
    if cache is not None and key in cache:
        Xg, pg, Cg = cache[key]
    else:
        Xg, pg = _clouds(gt_maps, gt_index, top_k, vs, mask, mode, box)
        Cg = _intra_costs(Xg, exponent)
        if cache is not None:
            cache[key] = (Xg, pg, Cg)
    Xs, ps = _clouds(sub_maps, sub_index, top_k, vs, mask, mode, box)
    work = dict(Xg=Xg, pg=pg, Xs=Xs, ps=ps, metrics=tuple(metrics), mode=mode, starts=starts,
                mirror_starts=mirror_starts, product_start=product_start)
    if "gw" in metrics:
        work.update(Cg=Cg, Cs=_intra_costs(Xs, exponent))
    out = _fill_rows(work, min(n_jobs or available_cores(), len(Xg)), client)
    out["gt_index"], out["sub_index"] = gt_index, sub_index
    return out


def _clouds(maps, index, top_k: int, vs: float, mask, mode: str, downsample: int | None, chunk: int = 32):
    """:func:`top_k_clouds` of maps[index] (positions in Å of voxels of ``vs`` Å), read (a memory
    map too) and Fourier-resampled to a ``downsample`` box (None: as they are) a chunk at a time."""
    X, p = [], []
    for a in range(0, len(index), chunk):
        i = index[a:a + chunk]
        x = (torch.from_numpy(np.asarray(maps[i], np.float64)) if isinstance(maps, np.ndarray)
             else maps[torch.as_tensor(i, device=maps.device)].cpu().double())
        if downsample:
            x = fourier_resample(x, downsample)
        Xc, pc = top_k_clouds(x, top_k, vs, mask, mode=mode)
        X.append(Xc), p.append(pc)
    return np.concatenate(X), np.concatenate(p)


def _row_source(work: dict, n_jobs: int, client):
    """(iterator of (i, row) over the GT clouds of ``work``, process pool to shut down or None):
    Dask tasks with a ``client``, this process with ``n_jobs`` ≤ 1, else worker processes."""
    n_rows = len(work["Xg"])
    if client is not None:  # the work dict scattered as one object under a fresh key, rescattered on loss
        from helpers.core.dask_tasks import run_tasks

        return (r for _, r in run_tasks(client, _row_of, work, [(i,) for i in range(n_rows)],
                                        "transport rows on Dask")), None
    if n_jobs <= 1:
        _init_worker(work)
        return map(_row, range(n_rows)), None
    # one GT map (a row of pairs) per task; the clouds are sent once per worker
    # fork is quick and safe on Linux (the workers use only numpy and POT); elsewhere spawn
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    pool = ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init_worker, initargs=(work, True))
    return (f.result() for f in as_completed([pool.submit(_row, i) for i in range(n_rows)])), pool


def _fill_rows(work: dict, n_jobs: int, client) -> dict:
    """{metric: (n_gt, n_sub)} from the rows of pairs (see :func:`_row_source`), each row written
    exactly once (a lost or duplicated row raises)."""
    n_rows, n_cols = len(work["Xg"]), len(work["Xs"])
    out = {m: np.empty((n_rows, n_cols)) for m in work["metrics"]}
    bar = progress(total=n_rows * n_cols, desc="transport distances (pairs)")
    rows, pool = _row_source(work, n_jobs, client)
    filled = np.zeros(n_rows, dtype=int)
    try:
        for i, row in rows:
            for m in work["metrics"]:
                out[m][i] = row[m]
            filled[i] += 1
            bar.update(n_cols)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if not (filled == 1).all():
        raise RuntimeError(f"transport rows computed {filled.min()}–{filled.max()} times: a row was lost or duplicated")
    return out


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_WORK: dict = {}


def _init_worker(work: dict, single_thread: bool = False) -> None:
    """Hand the clouds to a worker; in a worker, BLAS is limited to one thread (the problems
    are small, and several BLAS threads per worker process oversubscribe the cores: 2 workers
    on 2 cores ran 3× slower than with one thread each)."""
    global _WORK
    _WORK = work
    if single_thread:
        from threadpoolctl import threadpool_limits
        _WORK["_limits"] = threadpool_limits(limits=1)


def _row(i: int):
    """Distances of GT cloud i to every submitted cloud (runs in a worker process)."""
    return _row_of(_WORK, i)


def _row_of(w: dict, i: int):
    """Distances of GT cloud i to every submitted cloud of the work dict ``w`` (a pure function:
    also a Dask task)."""
    ref = w["mode"] == "reference"
    row = {m: np.empty(len(w["Xs"])) for m in w["metrics"]}
    for j in range(len(w["Xs"])):
        if "gw" in row:
            s0 = () if ref else gw_starts(w["Xg"][i], w["pg"][i], w["Xs"][j], w["ps"][j], w["mirror_starts"])
            row["gw"][j] = gromov_wasserstein(w["Cg"][i], w["pg"][i], w["Cs"][j], w["ps"][j], w["mode"], s0,
                                              w["product_start"])
        if "pw" in row:
            row["pw"][j] = procrustes_wasserstein(w["Xg"][i], w["pg"][i], w["Xs"][j], w["ps"][j],
                                                  starts=w["starts"], mode=w["mode"])
    return i, row
