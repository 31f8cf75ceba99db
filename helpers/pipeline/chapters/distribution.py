"""Chapter 5 (``notebooks/05_distribution.py``): EMD and KL between the GT distribution and each
submission's, per cost metric, window size and GT replicate; the number-of-maps study (Fig. S5);
the default and the published (reference) conventions side by side.

Costs and EMDs are in the metric's own units with ``cost_scale="distance"`` (L2 per masked
voxel of the z-scored maps, 1 − correlation, 1 − FSC area, Å above Nyquist, sliced-Wasserstein
Å), in ranks with ``"rank"`` or ``mode="reference"``; KLs in nats; populations are fractions."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.paths import save_csv, save_npz
from helpers.datagen import mocks
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import distribution as dist
from helpers.kernels import gt_pass

SUMMARY_COLUMNS = ["EMD_submitted", "EMD_opt", "KL_pq_submitted", "KL_pq_opt", "max_q_opt"]


def load_inputs(data_dir, results_dir, voxel_size: float):
    """The chapter's inputs: the GT (rows matched to its maps, not checked for finite values),
    this run's preprocessed submissions that chapter 3 scored (memory-mapped) and their chapter-3
    matrices. Returns (gt MapSet-like GT, gt files {maps, metadata, mask, …} of ``io.find_gt``,
    subs {label: MapSet}, mats {label: {metric: (n_gt, n_maps) matrix, "n_voxels": …}}).
    Writes nothing."""
    data, out = Path(data_dir), Path(results_dir)
    gtf = io.find_gt(data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size, check_finite=False)
    done = manifest.labels_done(out, "03_volume_metrics")  # scored by chapter 3 in this run
    subs = {k: v for k, v in manifest.load_submissions(out, mmap=True).items() if k in done}
    mats = {lab: dict(np.load(out / "volume_metrics" / f"{slug(lab)}.npz")) for lab in subs}
    return gt, gtf, subs, mats


def map_counts(subs: dict) -> dict:
    """{label: number of submitted maps}."""
    return {lab: len(s.populations) for lab, s in subs.items()}


def cost_matrix(mat: dict, metric: str, voxel_size: float, cost_scale: str = "distance",
                mode: str = "default") -> np.ndarray:
    """The (n_gt, n_maps) cost of one chapter-3 matrix: as stored in reference mode (the published
    code ranks it, similarities not negated), :func:`dist.distance_cost` with ``cost_scale=
    "distance"`` (0 for a perfect match, the metric's units), else :func:`dist.to_cost`."""
    if mode == "reference":
        return mat[metric]
    if cost_scale == "distance":
        return dist.distance_cost(mat[metric], metric, int(mat["n_voxels"]), voxel_size)
    return dist.to_cost(mat[metric], metric)


def summarise(rep: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over replicates and window sizes per (label, metric) of
    :data:`SUMMARY_COLUMNS`: columns ``<column>_mean``, ``<column>_std``."""
    summary = rep.groupby(["label", "metric"])[SUMMARY_COLUMNS].agg(["mean", "std"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    return summary


def replicates(results_dir, subs: dict, mats: dict, p_gt, pc1, *, metrics, n_pool: int, n_pool_sweep,
               fraction: float, n_replicates: int, cost_scale: str, mode: str, voxel_size: float):
    """Every submission × metric × window size (``n_pool_sweep``) × replicate through
    :func:`dist.evaluate` (GT populations ``p_gt``, order ``pc1``); a submission that fails is
    recorded in the manifest and left out entirely.

    Writes ``distribution/replicates.csv`` (label, metric, n_pool, replicate, EMD_submitted,
    EMD_opt (cost units), KL_pq/KL_qp_submitted, KL_pq/KL_qp_opt (nats), em_iterations,
    max_q_opt, n_windows; reference mode adds kl_iter_stop, kl_eps_stop),
    ``distribution/q_opt.npz`` (``<slug>__<metric>``: mean over replicates of the EMD-optimised
    populations per submitted map, at ``n_pool``) and ``distribution/summary.csv``
    (:func:`summarise`, one row per label and metric).
    Returns (replicates table, summary indexed by (label, metric), q_opt dict, failure table)."""
    out = Path(results_dir)
    rows, qopt = [], {}
    failures = manifest.Failures(out, "05_distribution")
    for lab, s in subs.items():
        with failures.guard(lab):
            for metric in metrics:
                cost = cost_matrix(mats[lab], metric, voxel_size, cost_scale, mode)
                for npool in n_pool_sweep:
                    reps = dist.evaluate(cost, p_gt, pc1, s.populations, n_pool=npool, fraction=fraction,
                                         n_replicates=n_replicates, mode=mode, cost_scale=cost_scale)
                    for r in reps:
                        rows.append({"label": lab, "metric": metric, "n_pool": npool,
                                     **{k: v for k, v in r.items() if np.isscalar(v)}})
                    if npool == n_pool:
                        qopt[f"{slug(lab)}__{metric}"] = np.mean([r["q_opt_emd"] for r in reps], 0)
    rep = pd.DataFrame(rows)
    rep = rep[rep.label.isin(failures.ok)]  # a submission that failed half-way is left out entirely
    failed = failures.save()
    save_csv(out / "distribution" / "replicates.csv", rep)
    save_npz(out / "distribution" / "q_opt.npz", **qopt)
    summary = summarise(rep)
    save_csv(out / "distribution" / "summary.csv", summary.reset_index().set_index("label"))
    return rep, summary, qopt, failed


def n_volumes_study(results_dir, gt, mask_path, *, n_volumes, n_pool: int, fraction: float,
                    n_replicates: int) -> pd.DataFrame:
    """Fig. S5: Averaged-GT mocks with k maps (each k of ``n_volumes`` up to half the GT's maps)
    scored against the GT with their own populations, L2 cost as distance and as ranks.

    The mocks for every k come from one pass over the GT, their L2 to the GT from one more; large
    mocks are memory maps in a scratch folder under ``results_dir``, removed afterwards.
    Writes ``distribution/n_volumes_study.csv`` and returns it: one row per k × cost_scale
    ("distance", "rank") × replicate: n_maps, cost_scale, EMD_submitted, EMD_opt (L2 per masked
    voxel, or mean rank)."""
    out = Path(results_dir)
    p_gt, pc1 = gt.populations, gt.pc1
    mask = io.read_mask(mask_path, gt.box)
    study = []
    with tempfile.TemporaryDirectory(prefix=".scratch-", dir=out) as scratch:
        mocks_k = mocks.averaged_gt_many(gt.maps, gt.populations, gt.pc1,
                                         [k for k in n_volumes if k <= gt.n_maps // 2], scratch=scratch)
        fused_k, _ = gt_pass.distance_matrices_many(gt.maps, {str(k): m for k, (m, _, _) in mocks_k.items()},
                                                    mask, ["l2"])
        mocks_k = {k: p_k for k, (_, p_k, _) in mocks_k.items()}  # (the maps are closed before the folder goes)
    for k, pops_k in mocks_k.items():
        r_k = fused_k[str(k)]
        for cs in ("distance", "rank"):
            D = dist.distance_cost(r_k["l2"], "l2", r_k["n_voxels"]) if cs == "distance" else r_k["l2"]
            for r in dist.evaluate(D, p_gt, pc1, pops_k, n_pool=n_pool, fraction=fraction,
                                   n_replicates=n_replicates, cost_scale=cs):
                study.append({"n_maps": k, "cost_scale": cs, "EMD_submitted": r["EMD_submitted"],
                              "EMD_opt": r["EMD_opt"]})
    study = pd.DataFrame(study)
    save_csv(out / "distribution" / "n_volumes_study.csv", study)
    return study


def compare_modes(subs: dict, mats: dict, p_gt, pc1, *, n_pool: int, fraction: float,
                  n_replicates: int, rep: pd.DataFrame | None = None) -> pd.DataFrame:
    """The L2 matrices through the default conventions (distance cost) and the published ones
    (``mode="reference"``: ranks from 1 summed over windows). ``rep``: this chapter's
    :func:`replicates` table when it ran with the default conventions (``mode="default"``,
    ``cost_scale="distance"``): its ``l2`` rows at ``n_pool`` are the default column (the same
    computation; only the reference one is run). Writes nothing. Returns one row per label:
    ``EMD_submitted (default)``, ``EMD_submitted (reference)``, ``EMD_opt (default)``,
    ``EMD_opt (reference)`` (means over replicates; L2 per masked voxel, or summed ranks)."""
    cmp_rows = []
    for lab, s in subs.items():
        for m, kw in (("default", {}), ("reference", {"mode": "reference"})):
            if m == "default" and rep is not None:
                r = rep[(rep.label == lab) & (rep.metric == "l2") & (rep.n_pool == n_pool)]
                cmp_rows.append({"label": lab, "mode": m, "EMD_submitted": r.EMD_submitted.mean(),
                                 "EMD_opt": r.EMD_opt.mean()})
                continue
            c = mats[lab]["l2"] if m == "reference" else dist.distance_cost(mats[lab]["l2"], "l2",
                                                                             int(mats[lab]["n_voxels"]))
            r = dist.evaluate(c, p_gt, pc1, s.populations, n_pool=n_pool, fraction=fraction,
                              n_replicates=n_replicates, **kw)
            cmp_rows.append({"label": lab, "mode": m, "EMD_submitted": np.mean([x["EMD_submitted"] for x in r]),
                             "EMD_opt": np.mean([x["EMD_opt"] for x in r])})
    modes = pd.DataFrame(cmp_rows).pivot(index="label", columns="mode")
    modes.columns = [f"{a} ({b})" for a, b in modes.columns]
    return modes


def rank_agreement(modes: pd.DataFrame) -> int:
    """How many submissions keep their EMD-submitted rank under the published conventions."""
    return int((modes["EMD_submitted (default)"].rank() == modes["EMD_submitted (reference)"].rank()).sum())
