"""Chapter 3 (``notebooks/03_volume_metrics.py``): every GT × submitted-map distance matrix, the
FSC mask check, the Nyquist rule, the per-submission resolution tables, the point-cloud transport
distances (GW, PW) on subsets, and the default vs published conventions.

Units: resolutions in Å (no finer than the submission's native Nyquist, 2 × its native voxel
size; the measured values kept as ``res_raw`` / ``*_raw_A``), ``l2`` summed over the masked
voxels of the median-z-scored maps, ``corr`` a similarity, ``bioem`` in nat, ``fsc`` 1 − FSC
area, ``sw``, ``gw``, ``pw`` in Å. Everything is written under ``<results_dir>/volume_metrics``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.paths import save_csv, save_npz
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import fsc, gt_pass, nyquist, transport, volume_input
from helpers.kernels import volume_metrics as vm
from helpers.pipeline import distributed

CHAPTER = "03_volume_metrics"


def load_inputs(data_dir, results_dir, voxel_size: float):
    """The chapter's inputs: the GT (not checked for finite values; streamed where used), its files
    (``io.find_gt``: maps, metadata, mask, …), the soft mask on the GT box and this run's
    preprocessed submissions {label: MapSet} from the manifest (memory-mapped, never a folder glob).
    Returns (gt, gtf, mask, subs). Writes nothing."""
    data, out = Path(data_dir), Path(results_dir)
    gtf = io.find_gt(data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size, check_finite=False)
    mask = io.read_mask(gtf["mask"], gt.box)
    subs = manifest.load_submissions(out, mmap=True)
    return gt, gtf, mask, subs


def fused_pass(gt, gtf, mask, subs: dict, metrics, *, voxel_size: float, memory_gib: float = 0.0, client=None):
    """Every metric of ``metrics`` but ``sw`` for every submission in one pass over the GT
    (:func:`gt_pass.distance_matrices_many`; on the Dask ``client`` when given, the workers reading
    their GT rows from ``gtf["maps"]``). ``memory_gib``: memory for the submissions' statistics
    (0: 40 % of free memory). Returns (results {label: {metric: (n_gt, n_sub), "fsc_curves",
    "n_voxels"}}, failures {label: exception or message}). Writes nothing."""
    fused_metrics = [m for m in metrics if m != "sw"]
    maps = {lab: s.maps for lab, s in subs.items()}
    if not fused_metrics:
        return {}, {}
    if client is None:
        return gt_pass.distance_matrices_many(gt.maps, maps, mask, fused_metrics, voxel_size=voxel_size,
                                              sub_memory=int(memory_gib * 2 ** 30) if memory_gib else None)
    print(f"Dask: {client}")
    return distributed.distance_matrices_dask(client, gtf["maps"], maps, mask, fused_metrics, voxel_size=voxel_size)


def score_one(label, s, fused: dict, fused_failed: dict, gt, mask, *, metrics, voxel_size: float,
              sw_directions: int, gt_cache: dict):
    """One submission's matrices: its fused-pass results, the sliced Wasserstein matrix (Å; the
    GT's projections cached in ``gt_cache``), the mask-corrected FSC of each submitted map against
    its best GT match (largest FSC area) and the Nyquist rule on ``res``. Raises the fused pass's
    failure for this label. Returns (r, mc): r {metric: (n_gt, n_sub), "res_raw",
    "res_nyquist_limited", "best_gt_index" (n_sub,), "fsc_best_corrected" / "_unmasked" /
    "_randomised" (n_sub, N/2), …}, mc the :func:`fsc.mask_corrected_fsc` dict. Writes nothing."""
    if label in fused_failed:
        f = fused_failed[label]
        raise f if isinstance(f, Exception) else volume_input.DegenerateMapError(None, f)
    r = dict(fused.get(label, {}))
    if "sw" in metrics:
        r["sw"] = vm.sliced_wasserstein(gt.maps, s.maps, voxel_size, sw_directions, mask=mask, cache=gt_cache)
    best_gt = fsc.best_match(r["fsc_curves"])
    mc = fsc.mask_corrected_fsc(gt.maps, s.maps, mask, a_index=best_gt)
    r.update(best_gt_index=best_gt, fsc_best_corrected=mc["corrected"], fsc_best_unmasked=mc["unmasked"],
             fsc_best_randomised=mc["randomised"])
    r["res_raw"] = r["res"]
    r["res"], r["res_nyquist_limited"] = nyquist.clip_resolution(r["res_raw"], s.native_voxel_size)
    return r, mc


def save_matrices(results_dir, label, r: dict, gt_pc1, mask, native_voxel_size: float) -> Path:
    """Writes ``volume_metrics/<slug>.npz``: every array of ``r``, ``gt_pc1``, ``n_voxels`` (masked
    voxels summed in ``l2``; from the mask when the fused pass did not run) and
    ``native_voxel_size`` (Å). Returns its path."""
    arrays = {k: v for k, v in r.items() if isinstance(v, np.ndarray)}
    n_vox = r.get("n_voxels", int((np.asarray(mask) > 0.5).sum()))
    path = Path(results_dir) / "volume_metrics" / f"{slug(label)}.npz"
    save_npz(path, gt_pc1=gt_pc1, n_voxels=np.int64(n_vox), native_voxel_size=np.float64(native_voxel_size),
             **arrays)
    return path


def summary_row(label, s, r: dict, mc: dict, voxel_size: float):
    """One submission's rows: (summary dict, per-map DataFrame). The per-map table (one row per
    submitted map: label, map (0-based), best_res_A, best_res_raw_A (Å), nyquist_limited,
    native_nyquist_A) takes each map's best resolution over the GT; the summary dict: label,
    n_maps, best_res_median_A / _p10_A / _min_A, best_fsc_area_median (median over maps of the
    best match's FSC area), best_res_corrected_median_A / best_res_unmasked_median_A (best-match
    pairs with the mask correction / without a mask), best_res_median_raw_A, native_voxel_A,
    native_nyquist_A (all Å), nyquist_limited (any reported resolution raised),
    n_maps_nyquist_limited. Writes nothing."""
    nat = s.native_voxel_size
    cols = nyquist.resolution_columns(r["res_raw"].min(0), nat, "best_res")
    per_map = pd.DataFrame({"label": label, "map": np.arange(s.n_maps), **cols})
    best, limited = cols["best_res_A"], cols["nyquist_limited"]
    res_c, lim_c = nyquist.clip_resolution(fsc.resolution(mc["corrected"], voxel_size), nat)
    res_u, lim_u = nyquist.clip_resolution(fsc.resolution(mc["unmasked"], voxel_size), nat)
    row = {"label": label, "n_maps": s.n_maps, "best_res_median_A": np.median(best),
           "best_res_p10_A": np.percentile(best, 10), "best_res_min_A": best.min(),
           "best_fsc_area_median": np.median(fsc.fsc_area(r["fsc_curves"][r["best_gt_index"], np.arange(s.n_maps)])),
           "best_res_corrected_median_A": np.median(res_c), "best_res_unmasked_median_A": np.median(res_u),
           "best_res_median_raw_A": np.median(cols["best_res_raw_A"]), "native_voxel_A": nat,
           "native_nyquist_A": cols["native_nyquist_A"],
           "nyquist_limited": bool(limited.any() or lim_c.any() or lim_u.any()),
           "n_maps_nyquist_limited": int(limited.sum())}
    return row, per_map


def score_submissions(results_dir, gt, gtf, mask, subs: dict, *, metrics, voxel_size: float, sw_directions: int,
                      memory_gib: float = 0.0, client=None) -> dict:
    """Chapter 3's scores: :func:`fused_pass`, then per submission :func:`score_one`,
    :func:`save_matrices` and :func:`summary_row`; a submission that fails is recorded in the
    manifest (chapter ``03_volume_metrics``) and left out.

    Writes ``volume_metrics/<slug>.npz`` per submission, ``volume_metrics/summary.csv`` (the
    summary rows) and ``volume_metrics/best_resolution.csv`` (the per-map rows, when any).
    Returns {"results": {label: r}, "mask_fix": {label: mc}, "subs": the submissions scored,
    "summary": DataFrame, "best_res": per-map DataFrame or None, "failed": failure table}."""
    out = Path(results_dir)
    results, mask_fix, rows, per_map, gt_cache = {}, {}, [], [], {}
    failures = manifest.Failures(out, CHAPTER)
    fused, fused_failed = fused_pass(gt, gtf, mask, subs, metrics, voxel_size=voxel_size, memory_gib=memory_gib,
                                     client=client)
    for label, s in subs.items():
        with failures.guard(label):
            r, mc = score_one(label, s, fused, fused_failed, gt, mask, metrics=metrics, voxel_size=voxel_size,
                              sw_directions=sw_directions, gt_cache=gt_cache)
            results[label], mask_fix[label] = r, mc
            save_matrices(out, label, r, gt.pc1, mask, s.native_voxel_size)
            row, table = summary_row(label, s, r, mc, voxel_size)
            per_map.append(table)
            rows.append(row)
    summary = pd.DataFrame(rows)
    save_csv(out / "volume_metrics" / "summary.csv", summary)
    best_res = pd.concat(per_map, ignore_index=True) if per_map else None
    if best_res is not None:
        save_csv(out / "volume_metrics" / "best_resolution.csv", best_res)
    failed = failures.save()
    ok = failures.ok
    return {"results": {k: v for k, v in results.items() if k in ok},
            "mask_fix": {k: v for k, v in mask_fix.items() if k in ok},
            "subs": {k: v for k, v in subs.items() if k in ok},
            "summary": summary, "best_res": best_res, "failed": failed}


def spaced(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` indices evenly spaced over 0..n−1 (rounded, ends included)."""
    return np.linspace(0, n - 1, min(k, n)).round().astype(int)


def transport_scores(results_dir, gt, mask, subs: dict, *, metrics, gt_maps: int, sub_maps: int, top_k: int,
                     box: int, n_jobs: int, voxel_size: float, client=None) -> dict | None:
    """GW / PW (:func:`transport.transport_matrices`, Å) on subsets: ``gt_maps`` GT maps evenly
    spaced along MD-PC1 against ``sub_maps`` submitted maps evenly spaced in submission order;
    clouds of the ``top_k`` largest voxels after Fourier resampling to ``box``³; the GT subset's
    clouds made once. None when ``metrics`` is empty.

    Writes ``volume_metrics/transport/<slug>.npz`` (``gw``, ``pw``: rows ``gt_index``, columns
    ``sub_index``) and ``volume_metrics/transport.csv`` (label, ``<metric>_coverage_A``: mean over
    the GT subset of the distance to the closest submitted map, Å). Returns {"gt_sel": GT indices,
    "gt_self": the GT subset against itself, "results": {label: matrices}, "summary": DataFrame}."""
    if not metrics:
        return None
    out = Path(results_dir)
    gt_sel = np.argsort(gt.pc1)[spaced(gt.n_maps, gt_maps)]
    tkw = dict(metrics=metrics, top_k=top_k, voxel_size=voxel_size, mask=mask, downsample=box, n_jobs=n_jobs,
               client=client)
    gt_self = transport.transport_matrices(gt.maps, gt.maps, gt_index=gt_sel, sub_index=gt_sel, **tkw)
    tres, trows, gt_clouds = {}, [], {}
    for label, s in subs.items():
        r = transport.transport_matrices(gt.maps, s.maps, gt_index=gt_sel, sub_index=spaced(s.n_maps, sub_maps),
                                         cache=gt_clouds, **tkw)
        tres[label] = r
        save_npz(out / "volume_metrics" / "transport" / f"{slug(label)}.npz", **r)
        trows.append({"label": label, **{f"{m}_coverage_A": r[m].min(1).mean() for m in metrics}})
    summary = pd.DataFrame(trows)
    save_csv(out / "volume_metrics" / "transport.csv", summary)
    return {"gt_sel": gt_sel, "gt_self": gt_self, "results": tres, "summary": summary}


def compare_modes(gt, sub, result: dict, mask, voxel_size: float) -> pd.DataFrame:
    """One submission's BioEM and resolution matrices again with the published conventions
    (``mode="reference"``) beside this chapter's ``result`` (its :func:`score_one` dict). Rows:
    median best resolution (Å), maps "never failing" (best resolution at Nyquist: 2 × voxel size
    by default, N × voxel size in reference mode), mean BioEM cost (nat); columns quantity,
    default, reference-compatible. Writes nothing."""
    ref = vm.distance_matrices(gt.maps, sub.maps, mask, metrics=["bioem", "res"], mode="reference",
                               voxel_size=voxel_size)
    best, best_ref = result["res"].min(0), ref["res"].min(0)
    return pd.DataFrame({
        "quantity": ["median best resolution (Å)", "maps 'never failing' (best res = Nyquist)", "mean BioEM cost"],
        "default": [np.median(best), int((best <= 2 * voxel_size + 1e-9).sum()), result["bioem"].mean()],
        "reference-compatible": [np.median(ref["res"].min(0)), int((best_ref >= gt.box * voxel_size - 1e-9).sum()),
                                 ref["bioem"].mean()],
    })
