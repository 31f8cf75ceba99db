"""Chapter 6 (``notebooks/06_image_metrics.py``): every set (the GT ensemble and this run's
submissions) searched against the particle images, the ensemble log-likelihood table, the paired
power of each comparison with the GT ensemble, and the cost of the search.

Log-likelihoods are in nats, cross-correlations unitless, times in seconds, pixel sizes in Å."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.paths import save_csv, save_json, save_npz
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import image_metrics as im
from helpers.pipeline import distributed

GT = "GT ensemble"
NOT_SAVED = ("seconds", "same_as", "w_opt")  # search results kept in memory only


@dataclasses.dataclass
class Stack:
    """The particle images scored: ``parts`` (the stack as read, :func:`io.read_particles`),
    ``images`` (M, box, box) downsampled, ``pixel_size`` (Å at that box), ``ctf`` (per-image
    defocus arrays + optics), ``grid`` (the pose-grid keywords) and the ``search``
    (:class:`im.ImageSearch`)."""
    parts: object
    images: object
    pixel_size: float
    ctf: dict
    grid: dict
    search: im.ImageSearch

    @property
    def n_stack(self) -> int:
        """Images the stack holds: the most a larger run could score."""
        return len(self.parts.images)


def particle_stack(data_dir, results_dir, particles: str, n_images: int, box_ds: int, **grid) -> Stack:
    """The first ``n_images`` of ``data_dir/particles`` (STAR + .mrcs) Fourier-downsampled to
    ``box_ds`` px, their CTFs and the pose search over them (``grid``: n_directions, n_inplane,
    max_shift, shift_step (px at ``box_ds``), refine_levels, refine_top).
    Writes ``image_metrics/images.json`` (particles as given, n_images scored, n_stack)."""
    parts = io.read_particles(Path(data_dir) / particles)
    tab = parts.table.iloc[:n_images]
    imgs = im.downsample_images(parts.images[:n_images], box_ds)
    px = parts.pixel_size * parts.images.shape[-1] / box_ds
    ctf_params = dict(defocus_u=tab.rlnDefocusU.to_numpy(), defocus_v=tab.rlnDefocusV.to_numpy(),
                      defocus_angle=tab.rlnDefocusAngle.to_numpy(), **parts.optics)
    search = im.ImageSearch(imgs, px, ctf_params, **grid)
    st = Stack(parts, imgs, px, ctf_params, dict(grid), search)
    save_json(Path(results_dir) / "image_metrics" / "images.json",
              {"particles": str(particles), "n_images": len(tab), "n_stack": st.n_stack})
    return st


def thin_gt(gt, n_maps: int):
    """The GT ensemble on ``n_maps`` of its maps: the maps in MD-PC1 order cut into ``n_maps``
    runs of consecutive maps; each run is represented by its middle map, which carries the run's
    summed population (so the ensemble keeps the GT's distribution along the motion). Returns a
    MapSet (``gt`` itself when ``n_maps`` is 0 or not smaller)."""
    if not 0 < n_maps < gt.n_maps:
        return gt
    runs = np.array_split(np.argsort(gt.pc1, kind="stable"), n_maps)
    keep = np.array([r[len(r) // 2] for r in runs])
    thin = gt.subset(keep)
    pops = np.array([gt.populations[r].sum() for r in runs])
    return dataclasses.replace(thin, populations=pops / pops.sum())


def load_sets(data_dir, results_dir, voxel_size: float, n_gt_maps: int = 0):
    """The sets scored: {"GT ensemble": the GT (all maps, or ``n_gt_maps`` of them with their
    neighbours' populations, :func:`thin_gt`), then this run's preprocessed submissions
    (memory-mapped, manifest order)} and the GT mask (each map's solvent background is subtracted
    before projection). Writes nothing."""
    gtf = io.find_gt(Path(data_dir))
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size)
    mask = io.read_mask(gtf["mask"], gt.box)
    gt = thin_gt(gt, n_gt_maps)
    sets = {GT: gt}
    sets.update(manifest.load_submissions(results_dir, mmap=True))  # this run's submissions (the manifest)
    return sets, mask


def search_sets(results_dir, sets: dict, st: Stack, mask, box_ds: int, dask_scheduler: str = "",
                dask_workers: int = 0):
    """Every set's maps (resampled to ``box_ds``) searched against the images: in-process (a set
    whose maps are identical on the image grid to one searched already reuses that search, its
    result marked ``same_as``) or as Dask tasks (``dask_scheduler`` address or ``dask_workers``
    local processes). A failing submission is recorded in the manifest; the others go on.

    Writes ``image_metrics/<slug>.npz`` per set (``logp_integrated``, ``logp_best`` (nats),
    ``best_cc``, … each (n_images, n_maps), ``populations``) and ``image_metrics/summary.csv``
    (label; n_maps; loglik_submitted, loglik_optimised (EM weights), loglik_best_pose_submitted:
    ensemble log-likelihoods over the images (nats); median_best_cc; seconds;
    delta_per_image_vs_gt (nats per image, the GT ensemble 0); rank (1 = highest likelihood)).
    Returns (res {label: search result + ``w_opt``}, summary sorted by rank, failure table)."""
    out = Path(results_dir)
    res, rows, seen = {}, [], {}
    failures = manifest.Failures(out, "06_image_metrics")
    client = distributed.make_client(dask_scheduler, dask_workers)  # None: in-process
    if client is not None:  # blocks of maps as Dask tasks (helpers.pipeline.distributed.image_search_dask)
        on_dask = distributed.image_search_dask(
            client, st.images, st.pixel_size, st.ctf,
            {lab: im.maps_to_image_grid(s.maps, box_ds, mask) for lab, s in sets.items()}, **st.grid)
    for lab, s in sets.items():
        with failures.guard(lab):
            if client is not None:
                r = on_dask[lab]
                if isinstance(r, Exception):
                    raise r
            else:  # a set whose maps are identical on the image grid to one searched already reuses its search
                grid = im.maps_to_image_grid(s.maps, box_ds, mask)
                key = hashlib.sha1(grid.numpy().tobytes()).hexdigest()
                r = dict(res[seen[key]], seconds=0.0, same_as=seen[key]) if key in seen else st.search.search(grid, lab)
                seen.setdefault(key, lab)
            res[lab] = r
            save_npz(out / "image_metrics" / f"{slug(lab)}.npz", **{k: v for k, v in r.items() if k not in NOT_SAVED},
                     populations=s.populations)
            w_opt = im.optimise_weights(r["logp_integrated"])
            rows.append({"label": lab, "n_maps": s.n_maps,
                         "loglik_submitted": im.ensemble_loglik(r["logp_integrated"], s.populations),
                         "loglik_optimised": im.ensemble_loglik(r["logp_integrated"], w_opt),
                         "loglik_best_pose_submitted": im.ensemble_loglik(r["logp_best"], s.populations),
                         "median_best_cc": float(np.median(r["best_cc"].max(1))), "seconds": r["seconds"]})
            res[lab]["w_opt"] = w_opt
    failed = failures.save([k for k in failures.ok if k != GT])
    for lab, src in reused_searches(res).items():
        print(f"{lab}: maps identical to {src}'s on the {box_ds}³ image grid, its search reused")
    summary = pd.DataFrame(rows).set_index("label")
    ref = summary.loc[GT, "loglik_submitted"]
    summary["delta_per_image_vs_gt"] = (summary["loglik_submitted"] - ref) / st.search.M
    summary = summary.sort_values("loglik_submitted", ascending=False)
    summary["rank"] = np.arange(1, len(summary) + 1)
    save_csv(out / "image_metrics" / "summary.csv", summary)
    return res, summary, failed


def reused_searches(res: dict) -> dict:
    """{label: label whose search it reused} (maps identical on the image grid)."""
    return {lab: r["same_as"] for lab, r in res.items() if "same_as" in r}


def same_ensembles(res: dict, sets: dict) -> set:
    """Labels that reused another set's search *and* have its populations (the same ensemble)."""
    return {k for k, v in reused_searches(res).items() if np.array_equal(sets[k].populations, sets[v].populations)}


def above_gt(summary: pd.DataFrame) -> tuple[int, dict]:
    """The GT ensemble's rank in ``summary`` and {label: delta_per_image_vs_gt (nats)} of the
    sets ranked above it."""
    gt_rank = summary.loc[GT, "rank"]
    return gt_rank, {k: d for k, d in summary["delta_per_image_vs_gt"].items() if summary.loc[k, "rank"] < gt_rank}


def power_table(results_dir, res: dict, sets: dict, n_stack: int) -> pd.DataFrame:
    """Paired comparison of the GT ensemble with each submission over the same images
    (:func:`im.paired_power` at 2σ; float-noise tolerance 1e-4 nat, 1e-6 CC): per image Δ = GT
    ensemble − submission of the ensemble log-likelihood (``loglik``, nats, submitted
    populations) and of the best cross-correlation over maps and poses (``best_cc``).
    Writes ``image_metrics/power.csv`` (label, metric, n_images, mean, sd, z, images_needed,
    verdict, n_stack) and returns it indexed by (label, metric)."""
    ref_ll = im.per_image_loglik(res[GT]["logp_integrated"], sets[GT].populations)
    ref_cc = res[GT]["best_cc"].max(1)  # per image: best over maps and poses
    prow = []
    for lab, r in res.items():
        if lab != GT:
            for metric, d, tol in (("loglik", ref_ll - im.per_image_loglik(r["logp_integrated"], sets[lab].populations), 1e-4),
                                   ("best_cc", ref_cc - r["best_cc"].max(1), 1e-6)):  # tol: float noise
                prow.append({"label": lab, "metric": metric, **im.paired_power(d, 2.0, n_stack, tol), "n_stack": n_stack})
    power = pd.DataFrame(prow).set_index(["label", "metric"])
    save_csv(Path(results_dir) / "image_metrics" / "power.csv", power.reset_index())
    return power


def search_cost(res: dict, sets: dict, st: Stack, n_maps: int = 80) -> dict:
    """What the search cost and what a larger run would: ``comparisons`` (image × map × pose
    evaluations of the searches run, reused ones not counted), ``seconds`` (their time), ``rate``
    (per second), ``per_submission_s`` (one ``n_maps``-map submission against the whole stack at
    these settings) and ``full_box_s`` (the same at the stack's full box: cost per pose ∝ box²,
    a lower bound). Writes nothing."""
    search = st.search
    total = sum(r["seconds"] for r in res.values())
    n_comp = search.M * sum(sets[k].n_maps for k, r in res.items() if "same_as" not in r) * search.n_evaluated
    rate = n_comp / total
    per_sub = st.n_stack * n_maps * search.n_evaluated / rate
    box = st.parts.images.shape[-1]
    return {"comparisons": n_comp, "seconds": total, "rate": rate, "per_submission_s": per_sub,
            "full_box_s": per_sub * (box / st.images.shape[-1]) ** 2, "box": box}
