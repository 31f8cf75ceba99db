"""Chapter 7 (``notebooks/07_robustness.py``): the controlled-degradation study of every metric.

:func:`prepare` reads the GT and builds the base submission (:class:`helpers.pipeline.robustness.Study`)
and the scorer (:class:`helpers.pipeline.robustness_scores.Scorer`); :func:`score_sets` scores the
base and every degraded set over the replicates; :func:`image_responses` runs the image metrics
(replicate 0); :func:`write_responses` assembles the response table and its verdicts;
:func:`image_count` the particle images the likelihood needs; :func:`write_headline` the front
page's sentence. Levels are in each degradation's own unit (:data:`helpers.pipeline.robustness.DEGRADATIONS`),
metric values in the metric's unit (:data:`helpers.core.catalogue.METRICS`), log-likelihoods in nats."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core import catalogue
from helpers.core.backend import progress
from helpers.core.paths import atomic_write, load_json, save_csv
from helpers.kernels import fourier
from helpers.kernels import image_metrics as im
from helpers.pipeline import robustness as rb
from helpers.pipeline import robustness_scores as rs


def key(name: str, level: float) -> str:
    """A set's label: "none" for the base, else "<degradation>|<level:g>"."""
    return "none" if name == "none" else f"{name}|{level:g}"


@dataclasses.dataclass
class Setup:
    """What the study runs on. ``G`` the GT maps (possibly a memory map of the GT resampled to the
    study box, in ``scratch``), ``mask`` and ``voxel_size`` (Å) on that grid, ``study`` the base and
    its degradations, ``scored`` the indices of the GT maps scored against, ``scorer`` their
    metrics, ``names`` the degradations run, ``sweep`` {degradation: levels}, ``batch`` degraded
    sets per pass over the GT, ``notes`` lines for the reader."""
    gt: object
    G: object
    mask: object
    voxel_size: float
    study: rb.Study
    scored: np.ndarray
    scorer: rs.Scorer
    names: list
    sweep: dict
    batch: int
    notes: list
    scratch: tempfile.TemporaryDirectory | None = None

    @property
    def jobs(self) -> list:
        """[(degradation, level)]: the base ("none", nan) first, then every level of the sweep."""
        return [("none", np.nan)] + [(n, lv) for n, lvs in self.sweep.items() for lv in lvs]

    def close(self) -> None:
        """Drop the memory maps of the resampled GT and remove the scratch folder (if any)."""
        if self.scratch is not None:
            self.G = self.study = self.scorer = None
            self.scratch.cleanup()
            self.scratch = None


def prepare(data_dir, results_dir, voxel_size: float, *, n_maps: int = 80, base_snr: float = 2.0,
            seed: int = 0, gt_stride: int = 4, study_box: int = 0, batch: int = 0, degradations=(),
            levels=None, sw_directions: int = 16, transport_gt_maps: int = 4, transport_sub_maps: int = 8,
            transport_top_k: int = 100, box_ds: int = 24, rank: int = 5, n_pool: int = 5) -> Setup:
    """Read the GT (``data_dir``/gt, voxel size Å) and its mask; with 0 < ``study_box`` < the GT's
    box, resample both to ``study_box`` (a scratch memory map under ``results_dir``, removed by
    :meth:`Setup.close`; the voxel size grows accordingly). Build the base (``n_maps`` Averaged-GT
    maps, noise at ``base_snr``), the scorer against every ``gt_stride``-th GT map along MD-PC1
    (its populations renormalised) and the sweep (``degradations``, default all; ``levels``
    overriding the defaults). Writes nothing but the scratch map."""
    names = list(degradations) or list(rb.DEGRADATIONS)
    unknown = sorted(set(names) - set(rb.DEGRADATIONS))
    if unknown:
        raise ValueError(f"unknown degradation(s) {unknown}; choose from {list(rb.DEGRADATIONS)}")
    data, out = Path(data_dir), Path(results_dir)
    gt = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size, check_finite=False)
    mask = io.read_mask(gtf["mask"], gt.box)
    G, scratch, notes = gt.maps, None, []
    if 0 < study_box < gt.box:  # the metrics' responses need no fine grid: a challenge-size study at 224³ held > 20 GB
        scratch = tempfile.TemporaryDirectory(prefix=".scratch-", dir=out)
        # the GT resampled once, chunk by chunk, into a memory map (read again for each base and n_maps level)
        G = fourier.resample_stack(gt.maps, study_box, Path(scratch.name) / "gt.npy")
        mask = np.clip(fourier.resample_stack(mask[None], study_box)[0], 0, 1)
        voxel_size = voxel_size * gt.box / study_box
        notes.append(f"study at {study_box}³ ({voxel_size:.3f} Å voxels, Nyquist {2 * voxel_size:.1f} Å) "
                     f"instead of {gt.box}³")
    info = data / "manifest.json"  # the demo's own record of the MD-PC1 range (three population modes)
    pc1_range = tuple(load_json(info)["pc1_range"]) if info.is_file() and "pc1_range" in load_json(info) else None
    study = rb.Study(G, gt.populations, gt.pc1, mask, voxel_size, n_maps=n_maps, base_snr=base_snr, seed=seed,
                     pc1_range=pc1_range)
    scored = np.sort(np.argsort(gt.pc1)[::gt_stride])  # the GT maps scored against
    scorer = rs.Scorer(G[scored], gt.populations[scored] / gt.populations[scored].sum(), gt.pc1[scored], mask,
                       voxel_size, sw_directions=sw_directions, transport_gt_maps=transport_gt_maps,
                       transport_sub_maps=transport_sub_maps, transport_top_k=transport_top_k, box_ds=box_ds,
                       rank=rank, n_pool=n_pool)
    batch = batch if batch > 0 else rs.batch_for(n_maps, G.shape[-1])
    sweep = {n: tuple((levels or {}).get(n, rb.DEGRADATIONS[n].levels)) for n in names}
    return Setup(gt, G, mask, voxel_size, study, scored, scorer, names, sweep, batch, notes, scratch)


def describe(setup: Setup, n_replicates: int) -> str:
    """The run in a few lines: the study box (if resampled), the base, the GT maps scored against,
    the number of degraded sets."""
    s = setup
    return "\n".join(s.notes + [
        f"base: {s.study.n_maps} maps, SNR {s.study.base_snr}; scored against {len(s.scored)} of {s.gt.n_maps} GT "
        f"maps; the base and {sum(len(v) for v in s.sweep.values())} degraded sets × {n_replicates} replicates"])


@dataclasses.dataclass
class Scores:
    """:func:`score_sets`' result. ``rows``: one dict per set × replicate × metric (degradation,
    level, replicate, metric, value, kl_true (nats; population defects, else nan)); ``kl_true``
    {set key: KL(p‖q) nats}; ``image_sets`` {set key: (maps on the image grid, populations) or
    ("none", populations) for a population defect, which reuses the base's pose search};
    ``jobs`` [(degradation, level)], the base first."""
    rows: list
    kl_true: dict
    image_sets: dict
    jobs: list


def score_sets(setup: Setup, n_replicates: int, image_metrics: bool = True, image_box: int = 24) -> Scores:
    """Every map, subspace and distribution metric of the base and every degraded set, replicate by
    replicate, ``setup.batch`` sets per pass over the GT. Population defects keep the base's maps:
    their map metrics are the base's (copied) and only the distribution metrics are recomputed.
    With ``image_metrics``, replicate 0's sets are kept on the ``image_box`` grid for
    :func:`image_responses`. Writes nothing."""
    study, scorer, mask, batch = setup.study, setup.scorer, setup.mask, setup.batch
    jobs = setup.jobs
    map_jobs = [(n, lv) for n, lv in jobs if n == "none" or rb.DEGRADATIONS[n].stage != "populations"]
    pop_jobs = [(n, lv) for n, lv in jobs if n != "none" and rb.DEGRADATIONS[n].stage == "populations"]
    rows, kl_true, image_sets = [], {}, {}
    bar = progress(total=n_replicates * len(map_jobs), desc="degraded sets scored")
    for r in range(n_replicates):
        scores = {}
        for a in range(0, len(map_jobs), batch):
            part = {}
            for name, lv in map_jobs[a:a + batch]:
                maps, q, _pc, _extra = (*study.base(r), {}) if name == "none" else study.make(name, lv, r)
                part[key(name, lv)] = (maps, q)
                if r == 0 and image_metrics:  # kept on the images' grid only (MB, not GB)
                    image_sets[key(name, lv)] = (im.maps_to_image_grid(maps, image_box, mask), q)
            scores.update(scorer.score(part))
            bar.update(len(part))
        study.base(r)  # this replicate's base (cached): the population defects reuse its maps
        for name, lv in pop_jobs:  # the base's maps (the same array), other populations
            _, q, _, extra = study.make(name, lv, r)
            kl_true[key(name, lv)] = extra["kl_true"]
            scores[key(name, lv)] = {**scores["none"], **scorer.distribution(scorer.l2["none"], q)}
            if r == 0 and image_metrics:
                image_sets[key(name, lv)] = ("none", q)  # the base's pose search, other populations
        for name, lv in jobs:
            rows += [{"degradation": name, "level": lv, "replicate": r, "metric": m, "value": v,
                      "kl_true": kl_true.get(key(name, lv), np.nan)} for m, v in scores[key(name, lv)].items()]
    bar.close()
    return Scores(rows, kl_true, image_sets, jobs)


def image_responses(data_dir, scores: Scores, n_images: int = 60, image_box: int = 24, n_directions: int = 50,
                    n_inplane: int = 8, seed: int = 0):
    """Chapter 6's pose search of the first ``n_images`` particle images (``data_dir``/particles,
    Fourier-cropped to ``image_box`` pixels; ``n_directions`` × ``n_inplane`` poses, no refinement)
    against every set of ``scores.image_sets`` (replicate 0), and :func:`rs.image_scores` against
    the base with 200 bootstrap resamples of the images (``np.random.default_rng([seed, 4])``, the
    same for every set). Returns (rows, deltas): rows, one dict per set × metric
    (``loglik_per_image`` (nats, relative to the base), ``best_cc``) with value, err (bootstrap
    std), se_diff (paired bootstrap std of the change), n_images, images_needed (nan for the
    base), kl_true; deltas {set key: per-image log-likelihood change from the base (M,) nats}.
    Nothing when ``scores.image_sets`` is empty. Writes nothing."""
    img_rows, deltas = [], {}
    image_sets, jobs, kl_true = scores.image_sets, scores.jobs, scores.kl_true
    if not image_sets:
        return img_rows, deltas
    parts = io.read_particles(Path(data_dir) / "particles/particles.star")
    tab = parts.table.iloc[:n_images]
    px = parts.pixel_size * parts.images.shape[-1] / image_box
    ctf_params = dict(defocus_u=tab.rlnDefocusU.to_numpy(), defocus_v=tab.rlnDefocusV.to_numpy(),
                      defocus_angle=tab.rlnDefocusAngle.to_numpy(), **parts.optics)
    search = im.ImageSearch(im.downsample_images(parts.images[:n_images], image_box), px, ctf_params,
                            n_directions=n_directions, n_inplane=n_inplane, refine_levels=0)
    boot = np.random.default_rng([seed, 4]).integers(0, search.M, (200, search.M))
    found = {}
    for k in progress(list(image_sets), desc="pose search of the degraded sets"):
        maps, q = image_sets[k]
        if isinstance(maps, str):
            continue
        found[k] = search.search(maps)
    base_ll = im.per_image_loglik(found["none"]["logp_integrated"], image_sets["none"][1])
    base_cc = found["none"]["best_cc"].max(1)
    for name, lv in jobs:
        k = key(name, lv)
        maps, q = image_sets[k]
        f = found[maps if isinstance(maps, str) else k]
        s_ = rs.image_scores(f["logp_integrated"], f["best_cc"], q, base_ll, boot, base_cc)
        deltas[k] = s_.pop("per_image_delta")
        for m in ("loglik_per_image", "best_cc"):
            img_rows.append({"degradation": name, "level": lv, "replicate": 0, "metric": m, "value": s_[m],
                             "err": s_[f"{m}_err"], "se_diff": s_[f"{m}_se_diff"], "n_images": s_["n_images"],
                             "images_needed": s_[f"{m}_images_needed"] if name != "none" else np.nan,
                             "kl_true": kl_true.get(k, np.nan)})
    return img_rows, deltas


def write_responses(results_dir, rows: list, img_rows: list):
    """The response table and its verdicts. Writes ``robustness/responses.csv`` (the rows of
    :func:`score_sets` then :func:`image_responses`; ``err`` nan throughout without image rows),
    ``robustness/levels.csv`` (:func:`rb.level_tests`: degradation, metric, level, diff (metric
    unit), se, df, stat, p, p_holm, crit, detected, severity_rank) and ``robustness/summary.csv``
    (:func:`rb.classify`: one row per degradation × metric, verdict, threshold (level unit), …,
    plus ``family`` from the catalogue). Returns (responses, levels, summary)."""
    out = Path(results_dir)
    responses = pd.concat([pd.DataFrame(rows), pd.DataFrame(img_rows)], ignore_index=True)
    if "err" not in responses:  # no image metrics: no bootstrap errors anywhere
        responses["err"] = np.nan
    save_csv(out / "robustness" / "responses.csv", responses)
    levels_tested = rb.level_tests(responses, catalogue.directions(rb.STUDY_METRICS))
    save_csv(out / "robustness" / "levels.csv", levels_tested)
    summary = rb.classify(responses, catalogue.directions(rb.STUDY_METRICS))
    summary["family"] = summary.metric.map(catalogue.FAMILY)
    save_csv(out / "robustness" / "summary.csv", summary)
    return responses, levels_tested, summary


def shown_metrics(summary: pd.DataFrame) -> list:
    """The metric keys measured in this run (some verdict other than "not measured"), in the
    catalogue's order."""
    return [m for m in catalogue.METRICS if m in set(summary.metric[summary.verdict != "not measured"])]


def verdict_grid(summary: pd.DataFrame, names, metrics):
    """(verdicts, thresholds): degradation (rows, ``names`` order) × metric (columns, ``metrics``
    order) tables of ``summary``'s verdict and threshold (the degradation's level unit)."""
    mat = summary.pivot(index="degradation", columns="metric", values="verdict").reindex(index=names, columns=metrics)
    thr = summary.pivot(index="degradation", columns="metric", values="threshold").reindex(index=names, columns=metrics)
    return mat, thr


def image_count(results_dir, deltas: dict, seed: int = 0):
    """Per degraded set (not the base): ``mean_loss_per_image`` (nats, −mean of its per-image
    change), ``sd`` (nats, ddof 1), ``images_needed`` (:func:`rs.images_to_separate`) and
    ``check_fraction`` (:func:`rs.separation_curve` at that many images, between 2 and the run's
    count, ``seed``; nan where none suffice), with columns set, degradation, level. Writes
    ``robustness/image_count.csv``; returns the table, or None (nothing written) without image
    metrics."""
    if not deltas:
        return None
    ic = pd.DataFrame([{"set": k, "degradation": k.split("|")[0], "level": float(k.split("|")[1]),
                        "mean_loss_per_image": -float(np.mean(v)), "sd": float(np.std(v, ddof=1)),
                        "images_needed": rs.images_to_separate(v)}
                       for k, v in deltas.items() if k != "none"])
    M = len(deltas["none"])
    ic["check_fraction"] = [rs.separation_curve(deltas[k], [int(min(max(n, 2), M))], seed=seed)[0]
                            if np.isfinite(n) else np.nan for k, n in zip(ic.set, ic.images_needed)]
    save_csv(Path(results_dir) / "robustness" / "image_count.csv", ic)
    return ic


def worst_levels(ic: pd.DataFrame, names) -> pd.DataFrame:
    """The most severe (last) level of each degradation of ``names`` that a metric should detect,
    indexed by degradation (rows of :func:`image_count`)."""
    worst = ic.groupby("degradation", sort=False).tail(1).set_index("degradation")
    return worst[worst.index.isin([d for d in names if rb.DEGRADATIONS[d].expect == "detect"])]


def write_headline(results_dir, summary: pd.DataFrame, per_metric: pd.DataFrame, names) -> str:
    """The front page's sentence (book/intro.md includes it) from the measured verdicts ``summary``
    (without "not measured" rows) and the per-metric table ``per_metric`` (metric, detects):
    which metrics detect the most and the fewest of the defects, and whether any responds to a
    change it should ignore. Writes ``robustness/headline.md``; returns the sentence."""
    n_detect = sum(rb.DEGRADATIONS[d].expect == "detect" for d in names)
    broad = per_metric[per_metric.detects == per_metric.detects.max()].metric.tolist()
    narrow = per_metric[per_metric.detects == per_metric.detects.min()].metric.tolist()
    inv_bad = summary[(summary.expect == "invariant") & (summary.verdict != "invariant")]
    text = (f"Damaging one GT-derived submission in {len(names)} controlled ways (chapter 7): "
            f"{' and '.join(broad)} {'detects' if len(broad) == 1 else 'detect'} the most defects "
            f"({per_metric.detects.max()} of {n_detect}), {' and '.join(narrow)} the fewest ({per_metric.detects.min()}); "
            + ("every metric ignores the intensity scale, offset and map order"
               if inv_bad.empty else f"{len(inv_bad)} metric × change pairs respond to a change that should not matter")
            + ".\n")
    with atomic_write(Path(results_dir) / "robustness" / "headline.md", "w") as fh:
        fh.write(text)
    return text
