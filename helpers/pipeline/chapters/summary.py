"""Chapter 8 (``notebooks/08_summary.py``): the leaderboard's inputs, gathered from the result
files of chapters 3–6, with their error bars; the images each image metric needs to order the
submissions; the GT-based rank correlation; chapter 7's trust table; the population profiles
of the map browser. Writes under ``<results_dir>/summary/``.

The ranking itself (ranks that respect the error bars, family ranks, the overall rank's
interval, defect checks, calibration) is :mod:`helpers.report.leaderboard` and
:mod:`helpers.report.calibration`, called by the notebook between these functions; the tables
they return are written here (:func:`write_tables`).

Units as the metric catalogue (:mod:`helpers.core.catalogue`) states them: Å for resolution and
PW coverage, % for PCV, the cost metric's units for the EMDs, nats for KL and the per-image
log-likelihood, none for the cross-correlation."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core import catalogue
from helpers.core.paths import atomic_write, save_csv
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import image_metrics
from helpers.pipeline import matched, robustness

CHAPTERS = ("03_volume_metrics", "04_subspace", "05_distribution", "06_image_metrics")
# the leaderboard's metrics, in column order (those a run measured enter the board)
METRICS = ("resolution_A", "pw_coverage_A", "pcv_gt_captured", "pcv_set_in_gt", "emd_submitted", "emd_optimised",
           "kl_submitted", "loglik_per_image", "best_cc", "au_fsc")
# mean paired per-image differences this small are float noise: ties (images_to_order's tol)
IMAGE_TOL = {"loglik_per_image": 1e-4, "best_cc": 1e-6}


@dataclass
class Inputs:
    """The chapter's inputs: ``subs`` {label: MapSet} (this run's manifest, memory-mapped),
    ``labels`` (those every chapter of :data:`CHAPTERS` scored, manifest order), ``missing``
    {label: [chapters that did not score it]}, and the tables read from chapters 3–6: ``vol``
    (volume_metrics/summary.csv), ``pcv`` (subspace/pcv.csv, %), ``pcv_boot``
    (subspace/pcv_bootstrap.csv or empty), ``rep`` (distribution/replicates.csv, rows of the
    distance metric), ``img`` (image_metrics/summary.csv), ``transport``
    (volume_metrics/transport.csv or empty), ``per_particle`` (chapter 9's per_particle/summary.csv
    or empty)."""
    subs: dict
    labels: list
    missing: dict
    vol: pd.DataFrame
    pcv: pd.DataFrame
    pcv_boot: pd.DataFrame
    rep: pd.DataFrame
    img: pd.DataFrame
    transport: pd.DataFrame
    per_particle: pd.DataFrame = field(default_factory=pd.DataFrame)


def _optional(path: Path, **kw) -> pd.DataFrame:
    return pd.read_csv(path, **kw) if path.exists() else pd.DataFrame()


def load_inputs(results_dir, distance_metric: str = "l2") -> Inputs:
    """Read the manifest and chapters 3–6's summary tables (:class:`Inputs`); ``distance_metric``
    selects the chapter-5 replicates whose EMD/KL enter the leaderboard. Writes nothing."""
    out = Path(results_dir)
    subs = manifest.load_submissions(out, mmap=True)
    done = {ch: set(manifest.labels_done(out, ch)) for ch in CHAPTERS}
    labels = [lab for lab in subs if all(lab in d for d in done.values())]
    missing = {lab: [ch for ch, d in done.items() if lab not in d] for lab in subs if lab not in labels}
    rep = pd.read_csv(out / "distribution/replicates.csv")
    return Inputs(subs=subs, labels=labels, missing=missing,
                  vol=pd.read_csv(out / "volume_metrics/summary.csv", index_col="label"),
                  pcv=pd.read_csv(out / "subspace/pcv.csv", index_col=0),
                  pcv_boot=_optional(out / "subspace/pcv_bootstrap.csv", index_col="label"),
                  rep=rep[rep.metric == distance_metric],
                  img=pd.read_csv(out / "image_metrics/summary.csv", index_col="label"),
                  transport=_optional(out / "volume_metrics/transport.csv", index_col="label"),
                  per_particle=_optional(out / "per_particle/summary.csv"))


def per_image_ll(z) -> np.ndarray:
    """Per-image log-likelihood (nats) of an ensemble from its saved chapter-6 arrays
    (``logp_integrated`` (n_images, n_maps), ``populations``)."""
    return image_metrics.per_image_loglik(z["logp_integrated"], z["populations"])


def resamples(n: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Bootstrap indices (n_bootstrap, n), the same for every submission of n maps (common random
    numbers, seeded by ``[seed, n]``): identical submissions get identical error bars, so they can
    never rank apart."""
    return np.random.default_rng([seed, n]).integers(0, n, (n_bootstrap, n))


def pw_error(results_dir, label: str, n_bootstrap: int, seed: int) -> float:
    """Error bar of the PW coverage (Å): std over bootstrap resamples of the GT subset of the mean
    distance to the closest submitted map (volume_metrics/transport/<slug>.npz ``pw``, (n_gt,
    n_maps)); NaN when the file is absent."""
    f = Path(results_dir) / "volume_metrics" / "transport" / f"{slug(label)}.npz"
    if not f.exists():
        return np.nan
    closest = np.load(f)["pw"].min(1)
    return closest[resamples(len(closest), n_bootstrap, seed)].mean(1).std()


def metric_table(results_dir, inp: Inputs, n_bootstrap: int, seed: int):
    """One row per scored submission (index ``label``): each leaderboard metric of :data:`METRICS`
    that the run measured and its ``<metric>_err``, plus ``resolution_p10_A``. Error bars:
    resolution — std of the median best resolution over map resamples (:func:`resamples`); PW —
    :func:`pw_error`; PCV — chapter 4's bootstrap; EMD/KL — std over replicates; likelihood and
    best CC — std of the mean (median) over bootstrap resamples of the images, drawn once from
    ``default_rng(seed)`` and shared by every submission.

    Returns (table, per_image {metric: {label: per-image scores (n_images,)}}, n_images): the
    per-image log-likelihood relative to the GT ensemble (nats) and the best cross-correlation.
    Writes nothing."""
    out = Path(results_dir)
    rng = np.random.default_rng(seed)
    ref_ll = per_image_ll(np.load(out / "image_metrics" / "gt_ensemble.npz"))
    boot = rng.integers(0, len(ref_ll), (n_bootstrap, len(ref_ll)))
    rows, per_image = [], {"loglik_per_image": {}, "best_cc": {}}  # per-image scores over the same images
    for lab in inp.labels:
        d = inp.rep[inp.rep.label == lab]
        z = np.load(out / "image_metrics" / f"{slug(lab)}.npz")
        diff = per_image_ll(z) - ref_ll
        best_res = np.load(out / "volume_metrics" / f"{slug(lab)}.npz")["res"].min(0)  # no finer than its own Nyquist
        bres = resamples(len(best_res), n_bootstrap, seed)
        cc = z["best_cc"].max(1)  # per image: best over maps and poses
        per_image["loglik_per_image"][lab], per_image["best_cc"][lab] = diff, cc
        vol, pcv, pcv_boot, transport = inp.vol, inp.pcv, inp.pcv_boot, inp.transport
        rows.append({
            "label": lab,
            "resolution_A": vol.loc[lab, "best_res_median_A"], "resolution_A_err": np.median(best_res[bres], 1).std(),
            "resolution_p10_A": vol.loc[lab, "best_res_p10_A"],
            **({"pw_coverage_A": transport.loc[lab, "pw_coverage_A"],
                "pw_coverage_A_err": pw_error(out, lab, n_bootstrap, seed)}
               if "pw_coverage_A" in transport and lab in transport.index else {}),
            "pcv_gt_captured": pcv.loc["GT", lab], "pcv_set_in_gt": pcv.loc[lab, "GT"],
            **({"pcv_gt_captured_err": pcv_boot.loc[lab, "gt_captured_std"],
                "pcv_set_in_gt_err": pcv_boot.loc[lab, "set_in_gt_std"]} if lab in pcv_boot.index else {}),
            "emd_submitted": d.EMD_submitted.mean(), "emd_submitted_err": d.EMD_submitted.std(),
            "emd_optimised": d.EMD_opt.mean(), "emd_optimised_err": d.EMD_opt.std(),
            "kl_submitted": d.KL_pq_submitted.mean(), "kl_submitted_err": d.KL_pq_submitted.std(),
            "loglik_per_image": diff.mean(), "loglik_per_image_err": diff[boot].mean(1).std(),
            "best_cc": inp.img.loc[lab, "median_best_cc"], "best_cc_err": np.median(cc[boot], 1).std(),
            **per_particle_score(inp.per_particle, lab),
        })
    return pd.DataFrame(rows).set_index("label"), per_image, len(ref_ll)


def per_particle_score(pp: pd.DataFrame, label: str) -> dict:
    """Chapter 9's per-image AU-FSC of a submission (mean over particles; error: its standard
    error), from the entry that stands for it (``submission`` column); {} when it has none."""
    if pp.empty or "submission" not in pp:
        return {}
    row = pp[pp.submission == label]
    return {"au_fsc": float(row.au_fsc_mean.iloc[0]), "au_fsc_err": float(row.au_fsc_sem.iloc[0])} if len(row) else {}


def directions(table: pd.DataFrame) -> dict:
    """{metric: "low" | "high"} for the metrics of :data:`METRICS` present in ``table``, in that
    order (the catalogue's directions)."""
    return catalogue.directions([m for m in METRICS if m in table])


def image_power(results_dir, table: pd.DataFrame, per_image: dict, better: dict, n_images: int) -> dict:
    """Images each image metric needs to order the submissions: the median over adjacent pairs (in
    the metric's order) of the paired ``images_needed``
    (:func:`helpers.kernels.image_metrics.images_to_order`, up to chapter 6's stack size from
    image_metrics/power.csv, ties below :data:`IMAGE_TOL`). Returns {metric: (n_images scored,
    images needed)}. Writes ``summary/image_power_pairs.csv`` (metric, then the pair table:
    mean, sd, z, images_needed, verdict per adjacent pair)."""
    out = Path(results_dir)
    n_stack = int(pd.read_csv(out / "image_metrics/power.csv").n_stack.iloc[0])
    power, pairs_all = {}, []
    for m in per_image:
        need, pairs = image_metrics.images_to_order(per_image[m], table[m].to_dict(), better[m], n_available=n_stack,
                                                    tol=IMAGE_TOL[m])
        power[m] = (n_images, need)
        pairs_all.append(pairs.assign(metric=m))
    pairs_all = pd.concat(pairs_all, ignore_index=True)
    save_csv(out / "summary" / "image_power_pairs.csv", pairs_all[["metric"] + [c for c in pairs_all if c != "metric"]])
    return power


def rank_inputs(table: pd.DataFrame, better: dict, vol: pd.DataFrame):
    """What :func:`helpers.report.leaderboard.board` ranks: (values (label × metric), errors
    (label × metric, from the ``_err`` columns), extra columns joined to the board afterwards:
    ``resolution_p10_A`` (Å) and, when chapter 3 wrote them, ``nyquist_limited``,
    ``native_nyquist_A`` (Å))."""
    extra = table[["resolution_p10_A"]].join(vol[["nyquist_limited", "native_nyquist_A"]]
                                             if "nyquist_limited" in vol else pd.DataFrame(index=table.index))
    errors = table[[c for c in table if c.endswith("_err")]].rename(columns=lambda c: c[:-4])
    return table[list(better)], errors, extra


def ranks_and_errors(board: pd.DataFrame, better: dict):
    """From the ranked board: (ranks (label × metric, ``rank_<metric>`` without the prefix),
    errors (label × metric, the ``_err`` columns without the suffix))."""
    ranks = board[[f"rank_{m}" for m in better]].rename(columns=lambda c: c[5:])
    errs = board[[c for c in board if c.endswith("_err")]].rename(columns=lambda c: c[:-4])
    return ranks, errs


def write_tables(results_dir, **tables: pd.DataFrame) -> None:
    """Write each table as ``summary/<name>.csv`` (atomic; index included)."""
    for name, table in tables.items():
        save_csv(Path(results_dir) / "summary" / f"{name}.csv", table)


def write_headline(results_dir, text: str) -> None:
    """Write ``summary/headline.md`` (the front page's sentence, one line)."""
    with atomic_write(Path(results_dir) / "summary" / "headline.md", "w") as fh:
        fh.write(text + "\n")


def method_entries(board: pd.DataFrame, subs: dict) -> list:
    """Labels on the board made by a real method (a ``method`` in their provenance), board order."""
    return [k for k in board.index if subs[k].provenance.get("method")]


def failures(results_dir) -> pd.DataFrame:
    """The manifest's failures: one row per (chapter, label, message)."""
    return pd.DataFrame(manifest.read(Path(results_dir)).get("failures", []), columns=["chapter", "label", "message"])


def rank_correlation(results_dir, ranks: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation (metric × metric) between the rankings of the metrics that do not tie
    every submission. Writes ``summary/rank_correlation.csv`` (index ``metric``)."""
    varying = [m for m in ranks if ranks[m].nunique() > 1]  # a metric that ties everyone has no ranking to compare
    rc = ranks[varying].corr(method="spearman")
    save_csv(Path(results_dir) / "summary" / "rank_correlation.csv", rc.rename_axis("metric"))
    return rc


def method_context(data_dir, results_dir, methods) -> dict:
    """What the real-method section needs besides the board: ``matched`` (the label of the
    data-budget-matched control, or None), ``budgets`` (:func:`matched.budgets`), ``images``
    (chapter 6's scored images: n, stack size, held out from the methods' training stack; None
    when image_metrics/images.json is absent) and ``runs`` {label: the demo's record of that
    method's run (data/cryodrgn/run.json, data/recovar/run.json) when one is that label's, else {}}."""
    data, out = Path(data_dir), Path(results_dir)
    ifile = out / "image_metrics" / "images.json"
    scored = json.loads(ifile.read_text()) if ifile.is_file() else {}
    images = {"n": scored["n_images"], "stack": scored["n_stack"],
              "heldout": scored["particles"] != "particles/particles.star"} if scored else None
    # the demo's records of its real methods' runs (adapters.add_cryodrgn_entry, recovar.add_recovar_entry)
    recs = [json.loads(f.read_text()) for f in (data / "cryodrgn" / "run.json", data / "recovar" / "run.json")
            if f.is_file()]
    return {"matched": matched.matched_label_in(data), "budgets": matched.budgets(data), "images": images,
            "runs": {lab: next((r for r in recs if r.get("label") == lab), {}) for lab in methods}}


def trust_table(results_dir, better: dict, link: str = "07_robustness.html#what-the-demo-shows-which-metric-to-trust-for-what"):
    """Chapter 7's verdicts per leaderboard metric (robustness/summary.csv; None when absent):
    index ``metric`` (a link to chapter 7's table), ``detects`` ("k of n" defects), ``first sees
    (threshold)``, ``blind to / wrong way``, ``underpowered for``, ``not invariant to``."""
    rfile = Path(results_dir) / "robustness" / "summary.csv"
    if not rfile.is_file():
        return None
    rob = pd.read_csv(rfile)
    rob = rob[rob.verdict != "not measured"]
    title = {r.name: r.title for r in robustness.DEGRADATIONS.values()}
    n_def = rob[rob.expect == "detect"].degradation.nunique()
    rows = []
    for m in better:
        r = rob[rob.metric == m]
        if r.empty:
            continue
        det = r[r.verdict.isin(["detects", "saturates"])]
        rows.append({
            "metric": f'<a href="{link}">{catalogue.label(m)}</a>',
            "detects": f"{len(det)} of {n_def}",
            "first sees (threshold)": ", ".join(f"{title[d]} ({robustness.DEGRADATIONS[d].format(t)})"
                                                for d, t in zip(det.degradation, det.threshold)) or "—",
            "blind to / wrong way": ", ".join(title[d] for d in r[r.verdict.isin(["blind", "wrong way"])].degradation)
            or "—",
            "underpowered for": ", ".join(title[d] for d in r[r.verdict == "underpowered"].degradation) or "—",
            "not invariant to": ", ".join(title[d] for d in r[r.verdict == "not invariant"].degradation) or "—"})
    return pd.DataFrame(rows).set_index("metric")


def population_profiles(data_dir, results_dir, subs: dict, labels, voxel_size: float, n_bins: int = 24):
    """Populations along the GT's MD-PC1 (Å): each submitted map placed at the PC1 of its closest
    GT map (minimum of chapter 3's ``l2`` matrix), its population summed per bin. Returns (bins
    (n_bins + 1,) Å, GT population per bin, {label: population per bin}). Writes nothing."""
    gtf = io.find_gt(Path(data_dir))
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size, check_finite=False)  # rows matched to maps
    gpc, gp = gt.pc1, gt.populations
    bins = np.linspace(gpc.min(), gpc.max(), n_bins + 1)
    hists = {}
    for lab in labels:
        where = gpc[np.argmin(np.load(Path(results_dir) / "volume_metrics" / f"{slug(lab)}.npz")["l2"], axis=0)]
        hists[lab] = np.histogram(where, bins, weights=subs[lab].populations)[0]
    return bins, np.histogram(gpc, bins, weights=gp)[0], hists
