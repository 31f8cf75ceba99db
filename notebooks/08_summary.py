# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters", "hide-input"]
data_dir = "data/demo"  # folder with gt/
results_dir = "results/demo"  # reads every chapter's results, writes summary/
voxel_size = 2.146  # Å
distance_metric = "l2"  # cost metric whose EMD/KL enter the leaderboard
n_browse = 16  # maps per submission in the map browser
n_bootstrap = 200  # bootstrap resamples of the particle images for likelihood error bars
seed = 0  # seed of the bootstraps
n_rank_draws = 1000  # parametric bootstrap draws for the overall rank's interval

# %% [markdown]
# # 8. Summary: a leaderboard across metrics
#
# **Question.** How does each submission fare on every metric family at once, and do the
# metrics agree?
#
# **Inputs.** The result files of chapters 3–6. **Outputs.** `summary/leaderboard.csv`, one row
# per submission (`label`), sorted by overall rank: `mean_rank` (the mean of the family ranks,
# 1 = best), `mean_rank_lo`, `mean_rank_hi` (its 95 % interval, a parametric bootstrap over the
# error bars), `family_rank_<family>` for volume, transport, subspace, distribution and image
# (the mean rank over the family's separating metrics; families left out of `mean_rank` are
# still shown), then per metric its value, `<metric>_err`, `rank_<metric>` and
# `rank_<metric>_interval` (empty / "—" where unranked), then `unranked` (metrics it has no rank
# on: unmeasured, or error unknown), `tied_with` (submissions whose mean-rank interval overlaps
# its own), `resolution_p10_A`, `nyquist_limited`, `native_nyquist_A`;
# `summary/families.csv` (per family: its `metrics`, the ones `used`, `in_mean_rank`, `reason`
# when left out), `summary/rank_correlation.csv` (Spearman correlation between the metrics'
# rankings), `summary/defects.csv` (is each degraded demo mock caught by the metric aimed at it?),
# `summary/metrics.csv` (per metric: `family`, `separates`, `separated_pairs`, `unranked`
# submissions, `n_images` and `images_needed` for the image metrics, `underpowered`,
# `in_mean_rank`),
# `summary/image_power_pairs.csv` (per image metric and adjacent pair of submissions in its order:
# the paired per-image difference's `mean`, `sd`, `z`, `images_needed`, `verdict` as in chapter 6),
# `summary/calibration.csv` (per image metric: Spearman `rho` with the GT-based family rank, its
# bootstrap interval `lo`–`hi` over submissions, `n` submissions, `misordered` and
# `misordered_significant` pair counts), `summary/misordered.csv` (those pairs) and
# `summary/headline.md` (the sentence the book's front page shows).
# **Run time.** Seconds.
#
# | column | chapter | better | error bar |
# |---|---|---|---|
# | `resolution_A` — median over submitted maps of the best FSC=0.5 resolution against the GT (Å) | 3 | lower | std over bootstrap resamples of the submitted maps (10th percentile in its own column) |
# | `pw_coverage_A` — mean over a GT subset of the Procrustes–Wasserstein distance to the closest submitted map (Å; only when chapter 3 computed it) | 3 | lower | std over bootstrap resamples of the GT subset |
# | `pcv_gt_captured` — % of the GT's variance captured by the submission's subspace | 4 | higher | std over bootstrap resamples of the submission's maps (PCA redone) |
# | `pcv_set_in_gt` — % of the submission's variance lying in the GT's subspace | 4 | higher | the same bootstrap |
# | `emd_submitted`, `emd_optimised` — EMD with submitted / optimised populations (L2 per masked voxel the GT mass travels) | 5 | lower | std over GT subsamples and window sizes |
# | `kl_submitted` — KL(P‖A q_sub) | 5 | lower | std over replicates |
# | `loglik_per_image` — ensemble log-likelihood per image relative to the GT ensemble (nats) | 6 | higher | std over bootstrap resamples of the images |
# | `best_cc` — median best cross-correlation of the images | 6 | higher | — |

# %% tags=["hide-input"]
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.report import calibration, headline, leaderboard, plots, widgets
from helpers.kernels import image_metrics
from helpers import io
from helpers.io import manifest
from helpers.pipeline import robustness
from helpers.core import catalogue
from helpers.pipeline import matched
from helpers.report import story_summary as story
from helpers.kernels import volume_metrics as vm
from helpers.io.mapset import MapSet, slug
from helpers.core.paths import atomic_write, resolve, save_csv

plots.set_style()
data, out = resolve(data_dir), resolve(results_dir)
subs = manifest.load_submissions(out, mmap=True)  # this run's submissions (the manifest)
done = {ch: set(manifest.labels_done(out, ch)) for ch in
        ("03_volume_metrics", "04_subspace", "05_distribution", "06_image_metrics")}
labels = [lab for lab in subs if all(lab in d for d in done.values())]  # scored by every chapter
missing = {lab: [ch for ch, d in done.items() if lab not in d] for lab in subs if lab not in labels}

vol = pd.read_csv(out / "volume_metrics/summary.csv", index_col="label")
pcv = pd.read_csv(out / "subspace/pcv.csv", index_col=0)
bfile = out / "subspace/pcv_bootstrap.csv"
pcv_boot = pd.read_csv(bfile, index_col="label") if bfile.exists() else pd.DataFrame()
rep = pd.read_csv(out / "distribution/replicates.csv")
rep = rep[rep.metric == distance_metric]
img = pd.read_csv(out / "image_metrics/summary.csv", index_col="label")
tfile = out / "volume_metrics/transport.csv"
transport = pd.read_csv(tfile, index_col="label") if tfile.exists() else pd.DataFrame()

rng = np.random.default_rng(seed)
gt_ll = np.load(out / "image_metrics" / "gt_ensemble.npz")


def per_image_ll(z):
    return image_metrics.per_image_loglik(z["logp_integrated"], z["populations"])


def resamples(n):
    """Bootstrap indices (n_bootstrap, n), the same for every submission of n maps (common random
    numbers): identical submissions get identical error bars, so they can never rank apart."""
    return np.random.default_rng([seed, n]).integers(0, n, (n_bootstrap, n))


def pw_err(lab):
    """Bootstrap over the GT subset: std of the mean distance to the closest submitted map (Å)."""
    f = out / "volume_metrics" / "transport" / f"{slug(lab)}.npz"
    if not f.exists():
        return np.nan
    closest = np.load(f)["pw"].min(1)
    return closest[resamples(len(closest))].mean(1).std()


ref_ll = per_image_ll(gt_ll)
boot = rng.integers(0, len(ref_ll), (n_bootstrap, len(ref_ll)))
rows, per_image = [], {"loglik_per_image": {}, "best_cc": {}}  # per-image scores over the same images
for lab in labels:
    d = rep[rep.label == lab]
    z = np.load(out / "image_metrics" / f"{slug(lab)}.npz")
    diff = per_image_ll(z) - ref_ll
    best_res = np.load(out / "volume_metrics" / f"{slug(lab)}.npz")["res"].min(0)  # no finer than its own Nyquist
    bres = resamples(len(best_res))
    cc = z["best_cc"].max(1)  # per image: best over maps and poses
    per_image["loglik_per_image"][lab], per_image["best_cc"][lab] = diff, cc
    rows.append({
        "label": lab,
        "resolution_A": vol.loc[lab, "best_res_median_A"], "resolution_A_err": np.median(best_res[bres], 1).std(),
        "resolution_p10_A": vol.loc[lab, "best_res_p10_A"],
        **({"pw_coverage_A": transport.loc[lab, "pw_coverage_A"], "pw_coverage_A_err": pw_err(lab)}
           if "pw_coverage_A" in transport and lab in transport.index else {}),
        "pcv_gt_captured": pcv.loc["GT", lab], "pcv_set_in_gt": pcv.loc[lab, "GT"],
        **({"pcv_gt_captured_err": pcv_boot.loc[lab, "gt_captured_std"],
            "pcv_set_in_gt_err": pcv_boot.loc[lab, "set_in_gt_std"]} if lab in pcv_boot.index else {}),
        "emd_submitted": d.EMD_submitted.mean(), "emd_submitted_err": d.EMD_submitted.std(),
        "emd_optimised": d.EMD_opt.mean(), "emd_optimised_err": d.EMD_opt.std(),
        "kl_submitted": d.KL_pq_submitted.mean(), "kl_submitted_err": d.KL_pq_submitted.std(),
        "loglik_per_image": diff.mean(), "loglik_per_image_err": diff[boot].mean(1).std(),
        "best_cc": img.loc[lab, "median_best_cc"], "best_cc_err": np.median(cc[boot], 1).std(),
    })
board = pd.DataFrame(rows).set_index("label")
better = catalogue.directions([m for m in ("resolution_A", "pw_coverage_A", "pcv_gt_captured", "pcv_set_in_gt",
                                            "emd_submitted", "emd_optimised", "kl_submitted", "loglik_per_image",
                                            "best_cc") if m in board])
# images an image metric needs to order the submissions: the median over adjacent pairs (in the
# metric's order) of the paired images_needed, over the pairs the whole stack could separate
# and that differ by more than float noise (helpers.kernels.image_metrics.images_to_order); fewer
# images scored than that: underpowered
n_stack = int(pd.read_csv(out / "image_metrics/power.csv").n_stack.iloc[0])
tol = {"loglik_per_image": 1e-4, "best_cc": 1e-6}  # mean paired differences this small are float noise: ties
power, power_pairs = {}, []
for m in per_image:
    need, pairs = image_metrics.images_to_order(per_image[m], board[m].to_dict(), better[m], n_available=n_stack,
                                                tol=tol[m])
    power[m] = (len(ref_ll), need)
    power_pairs.append(pairs.assign(metric=m))
power_pairs = pd.concat(power_pairs, ignore_index=True)
power_pairs = power_pairs[["metric"] + [c for c in power_pairs if c != "metric"]]
save_csv(out / "summary" / "image_power_pairs.csv", power_pairs)
# ranks that respect each metric's error bar (helpers.report.leaderboard): values within uncertainty
# (2 σ, or 0.1 % relative where a metric has no error bar) share a rank; metrics that separate
# fewer than a quarter of the pairs, or image metrics with fewer images than needed, are shown
# but left out; the overall rank is the mean of the family ranks, with a bootstrap interval
extra = board[["resolution_p10_A"]].join(vol[["nyquist_limited", "native_nyquist_A"]]
                                        if "nyquist_limited" in vol else pd.DataFrame(index=board.index))
board, metric_info, families = leaderboard.board(
    board[list(better)], board[[c for c in board if c.endswith("_err")]].rename(columns=lambda c: c[:-4]), better,
    power=power, n_draws=n_rank_draws, seed=seed)
board = board.join(extra)
ranks = board[[f"rank_{m}" for m in better]].rename(columns=lambda c: c[5:])
save_csv(out / "summary" / "leaderboard.csv", board)
save_csv(out / "summary" / "metrics.csv", metric_info)
save_csv(out / "summary" / "families.csv", families)
errs = board[[c for c in board if c.endswith("_err")]].rename(columns=lambda c: c[:-4])
checks = leaderboard.defect_checks(board[list(better)], errs, better)
save_csv(out / "summary" / "defects.csv", checks)
winner = board.index[0]
ties = leaderboard.overall_ties(board)  # {label: labels whose mean-rank interval overlaps its own}
fam_in = list(families.index[families.in_mean_rank])
fam_out = families[~families.in_mean_rank]
left_out = [m for m in better if not metric_info.loc[m, "in_mean_rank"]]
weak = [m for m in left_out if not metric_info.loc[m, "separates"]]
underpowered = [m for m in left_out if metric_info.loc[m, "underpowered"] and m not in weak]


# %% tags=["remove-input"]
from IPython.display import Markdown

# the headline for the book's front page (book/intro.md includes it), written from the tables
ctrl = [k for k in leaderboard.DEMO_CONTROLS if k in board.index]
methods = [k for k in board.index if subs[k].provenance.get("method")]  # real methods' entries
with atomic_write(out / "summary" / "headline.md", "w") as fh:
    fh.write(headline.front_page(board, checks, methods, matched=matched.matched_label_in(data)) + "\n")
Markdown(story.verdict(board, families, metric_info, n_rank_draws))

# %% [markdown]
# ## Submissions that could not be scored
# A submission that fails in a chapter (unreadable maps, a degenerate map, too few maps for a
# subspace, …) is listed here with the reason; every other submission is still scored.

# %%
fails = pd.DataFrame(manifest.read(out).get("failures", []), columns=["chapter", "label", "message"])
if len(fails):
    display(fails.style.set_properties(subset=["message"], **{"white-space": "pre-wrap", "text-align": "left"}))
print(f"{len(labels)} of {len(subs)} preprocessed submissions are on the leaderboard"
      + (f"; left out: {', '.join(f'{k} (failed in {v})' for k, v in missing.items())}" if missing else "")
      + (f"; {fails.label.nunique()} submission(s) failed somewhere (table above)" if len(fails) else ""))

# %% [markdown]
# ## The leaderboard by family
# Each family of questions — is each map right (volume), is the motion covered (transport), is
# the subspace right (subspace), are the populations right (distribution), do the maps explain
# the images (image) — counts once: its rank is the mean of its separating metrics' ranks, and
# the overall rank is the mean of the family ranks (five population-blind map metrics no longer
# outvote the three that see populations). The interval is the 2.5–97.5 % range of the overall
# rank when every value is redrawn within its error bar (`helpers.report.leaderboard`); two submissions
# whose intervals overlap are *tied* and the text does not order them. Families marked † are shown
# but left out (no separating metric, or underpowered); "—" = no rank (unmeasured, or error
# unknown: `unranked`).

# %%
fam_cols = [c for c in board if c.startswith("family_rank_")]
fam_show = pd.DataFrame({
    "mean rank": board["mean_rank"],
    "interval": [f"{a:.2f}–{b:.2f}" for a, b in zip(board.mean_rank_lo, board.mean_rank_hi)],
    **{c[12:] + ("" if c[12:] in fam_in else " †"): board[c] for c in fam_cols},
    "unranked": board["unranked"], "tied with (intervals overlap)": board["tied_with"].str.replace("; ", ", ")},
    index=board.index)
if not board["unranked"].fillna("").astype(bool).any():
    fam_show = fam_show.drop(columns="unranked")  # every submission has every metric
fam_show.style.background_gradient(cmap="cividis", subset=[c for c in fam_show if c not in
                                                            ("interval", "unranked",
                                                             "tied with (intervals overlap)")]) \
    .format(precision=2, na_rep="—").set_properties(subset=["tied with (intervals overlap)"], **{"text-align": "left"})

# %% tags=["remove-input"]
if ctrl:
    degraded = list(dict.fromkeys([d[0] for d in leaderboard.DEMO_DEFECTS] + [u[0] for u in leaderboard.DEMO_UNDONE]))
    display(Markdown(story.sanity(board, ctrl, degraded, metric_info.loc["resolution_A", "separated_pairs"],
                                  ranks["resolution_A"].nunique(), methods)))

# %% [markdown]
# ## Every metric's rank
# Colour = rank on each metric (dark = best), the overall mean rank first. Values within each
# other's uncertainty share a rank (the midpoint of their rank interval, in `leaderboard.csv` as
# `rank_<metric>_interval`); metrics marked † separate too few pairs, or (image metrics) scored
# fewer images than they need to order the submissions (*underpowered*, in `metrics.csv`), and
# stay out of their family's rank. A submission can lead on one family and trail on another — that is the point of scoring
# on all of them.

# %%
shown = {m: leaderboard.name(m) + (" †" if m in left_out else "") for m in ["mean_rank"] + list(better)}
show = board[list(shown)].rename(columns=shown)
back = {v: k for k, v in shown.items()}
pal = sns.color_palette("cividis", len(board)).as_hex()  # colour-blind safe; dark = rank 1


def by_rank(col):
    r = ranks.loc[col.index, back[col.name]]
    return ["" if np.isnan(k) else f"background-color: {pal[int(k) - 1]}; color: "
            f"{'white' if k <= len(board) / 2 else 'black'}" for k in r]


limited = board.index[board.get("nyquist_limited", pd.Series(False, index=board.index)).fillna(False).astype(bool)]
res_col = shown["resolution_A"]
show[res_col] = [f"{v:.2f}" + (" ‡" if k in limited else "") if v == v else "—"
                 for k, v in show[res_col].items()]
if len(limited):  # a resolution at a submission's own Nyquist: its grid, not its maps, sets the value
    display(Markdown("‡ Resolution reported as *Nyquist-limited*: its FSC crossed finer than twice the voxel size "
                     "the maps were made at, which resampling cannot improve; the value shown is that limit ("
                     + ", ".join(f"{k}: {board.loc[k, 'native_nyquist_A']:.2f} Å" for k in limited) + ")."))
show.style.apply(by_rank, subset=[c for c in show.columns if c != "mean rank"]).background_gradient(
    cmap="cividis", subset=["mean rank"]).format(precision=2, na_rep="—").set_table_styles(
    [{"selector": "th.row_heading", "props": "white-space: normal; max-width: 7.5em;"}])  # long labels wrap

# %% [markdown]
# Each metric with its error bar (std over replicates for EMD/KL, bootstrap over images for the
# likelihood):

# %%
panels_m = ["resolution_A", "pcv_gt_captured", "emd_submitted", "emd_optimised", "kl_submitted", "loglik_per_image"]
fig, panels, _ = plots.panel_grid(panels_m, ncols=3, panel=(4, 3.6))
col = plots.colors(labels)
for m, a in panels.items():
    err = board.get(f"{m}_err")
    a.barh(board.index, board[m], xerr=None if err is None else err, color=[col[k] for k in board.index])
    a.set_title(leaderboard.name(m), fontsize=10)
    a.set_xlabel(plots.metric_axis(m), fontsize=9)
    a.tick_params(labelsize=9)
fig.tight_layout()

# %% [markdown]
# ## Where a real method lands
# Every other entry is a mock that hetbook made from the GT. An entry made by a real
# heterogeneity method from the particle images (on the demo: cryoDRGN, trained on the 2 000
# simulated particles at 32 px — see {doc}`../data`, step 7) is placed here among them, metric by
# metric, against two ideal reconstructions with the true poses and each image's true state:
# the control made from **exactly its images at its box** (`helpers.pipeline.matched`; the fair
# comparison: what is left is what the method had to learn) and the realistic *Reconstructed*
# mock (12 times the images at twice the box). "Better"/"worse" only beyond both error bars; the
# image metrics score held-out images that no method trained on.

# %% tags=["remove-input"]
matched_lab = matched.matched_label_in(data)
matched_lab = matched_lab if matched_lab in board.index else None
base = leaderboard.DEMO_BASE if leaderboard.DEMO_BASE in board.index else None
ifile = out / "image_metrics" / "images.json"
scored = json.loads(ifile.read_text()) if ifile.is_file() else {}
images = {"n": scored["n_images"], "stack": scored["n_stack"],
          "heldout": scored["particles"] != "particles/particles.star"} if scored else None  # the methods' training stack
for lab in methods:
    rec = data / "cryodrgn" / "run.json"  # the demo's record of its cryoDRGN training (adapters.add_cryodrgn_entry)
    run = json.loads(rec.read_text()) if rec.is_file() else {}
    run = run if run.get("label") == lab else {}
    vs = {k: leaderboard.placement(board, lab, better, compare=k)["metrics"] for k in (matched_lab, base) if k}
    verdict_cols = {"compare_value": "value", "vs_compare": f"{lab} is"}
    tab = pd.concat({lab: vs[next(iter(vs))][["value", "rank"]],
                     **{k: v[["compare_value", "vs_compare"]].rename(columns=verdict_cols) for k, v in vs.items()}},
                    axis=1) if vs else None
    if tab is not None:
        display(tab.rename(index=leaderboard.name).rename_axis("metric").style.format("{:.3g}", subset=[
            c for c in tab.columns if c[1] in ("value", "rank")], na_rep="")
                .set_caption(f"{lab} against the ideal reconstructions (verdict: beyond both error bars)"))
    pl = leaderboard.placement(board, lab, better)
    display(Markdown("**What the demo shows.** " + story.method_placement(lab, subs[lab].provenance["method"], board, pl)
                     + ". " + story.method_nyquist(lab, run, board, vol) + "\n\n"
                     + story.like_with_like(lab, matched.budgets(data), vs.get(matched_lab), matched_lab,
                                            vs.get(base), base, run, images)))
if not methods:
    print("no real method's entry in this run (the demo adds cryoDRGN when `make cryodrgn` has installed it)")

# %% [markdown]
# ## How far to trust each metric
# Chapter 7 ({doc}`07_robustness`) damages one GT-derived submission in one known way at a time
# and records which metric notices. For each leaderboard metric: how many of the defects it
# detects, what it is blind to, and what it wrongly responds to (a change that should not
# matter). Read a rank with its metric's blind spots in mind.

# %% tags=["remove-input"]
rfile = out / "robustness" / "summary.csv"
if rfile.is_file():
    rob = pd.read_csv(rfile)
    rob = rob[rob.verdict != "not measured"]
    title = {r.name: r.title for r in robustness.DEGRADATIONS.values()}
    n_def = rob[rob.expect == "detect"].degradation.nunique()
    rows_t = []
    for m in better:
        r = rob[rob.metric == m]
        if r.empty:
            continue
        det = r[r.verdict.isin(["detects", "saturates"])]
        rows_t.append({
            "metric": f'<a href="07_robustness.html#which-metric-to-trust-for-what">{leaderboard.name(m)}</a>',
            "detects": f"{len(det)} of {n_def}",
            "first sees (threshold)": ", ".join(f"{title[d]} ({robustness.DEGRADATIONS[d].format(t)})"
                                                for d, t in zip(det.degradation, det.threshold)) or "—",
            "blind to / wrong way": ", ".join(title[d] for d in r[r.verdict.isin(["blind", "wrong way"])].degradation) or "—",
            "underpowered for": ", ".join(title[d] for d in r[r.verdict == "underpowered"].degradation) or "—",
            "not invariant to": ", ".join(title[d] for d in r[r.verdict == "not invariant"].degradation) or "—"})
    display(pd.DataFrame(rows_t).set_index("metric").style.set_properties(**{"text-align": "left"}))
else:
    print("chapter 7 (robustness) has not been run for these results")

# %% [markdown]
# ## Does each metric family catch the defect aimed at it?
# Every degraded mock is "Reconstructed" with one defect (the demo data page lists them). A
# defect is *caught* when the metric aimed at it is worse than for "Reconstructed" beyond both
# error bars (the same rule as the ranks); preprocessing defects (hand, grid, rotation) must be
# *undone*: no metric may tell the mock from "Reconstructed" afterwards. Written to
# `summary/defects.csv` (columns mock, family, metric, value, base_value, verdict).

# %%
if len(checks):
    display(checks.assign(metric=checks.metric.map(leaderboard.name))
            .style.format({"value": "{:.3f}", "base_value": "{:.3f}"}, na_rep="").hide(axis="index"))

# %% tags=["remove-input"]
if len(checks):
    display(Markdown(story.defects(checks, board, ctrl)))

# %% [markdown]
# ## Do the metrics agree?
# Spearman correlation between the rankings the metrics induce (1 = same order; metrics that
# tie every submission are left out). Map-level
# metrics (resolution, PW coverage, subspace) ignore populations; distribution and image metrics see them —
# so a submission with perfect maps but wrong populations splits the families.

# %%
varying = [m for m in ranks if ranks[m].nunique() > 1]  # a metric that ties everyone has no ranking to compare
rc = ranks[varying].corr(method="spearman")
save_csv(out / "summary" / "rank_correlation.csv", rc.rename_axis("metric"))
fig, ax = plt.subplots(figsize=(8, 6.5))
sns.heatmap(rc.rename(index=leaderboard.name, columns=leaderboard.name), annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, ax=ax, annot_kws={"fontsize": 9},
            cbar_kws={"label": "Spearman rank correlation"})
ax.set_title("Agreement between metric rankings")
fig.tight_layout()

# %% [markdown]
# ## Can the GT-free scores be trusted? (calibration on the demo)
# The image metrics exist because real data has no GT. Here the GT is known, so their ranking
# can be checked against the *GT-based ranking*: the mean of the family ranks of the GT-based
# families that enter the leaderboard's overall rank (volume, transport, subspace, distribution). Per image metric:
# Spearman's rank correlation with it (+1 = same order), a 95 % percentile bootstrap interval
# over submissions (2000 resamples with replacement, `helpers.report.calibration`), and the pairs it
# orders opposite to the GT ranking — all of them, and those where both sides are significant
# (the image metric beyond 2σ of its bootstrap error; the GT side when more than half of the
# GT-based metrics call the pair significant in that direction). First, which metrics entered
# the mean rank and why (`summary/metrics.csv`):

# %%
display(plots.readable(metric_info.drop(columns=["has_error_bar", "unranked"], errors="ignore")
                      .rename(index=leaderboard.name)).style.format(
    {"separated pairs": "{:.2f}", "n images": "{:.0f}", "images needed": "{:.0f}"}, na_rep="—"))  # all in metrics.csv
image_m = [m for m in per_image if m in better]
gt_m = [m for m in better if m not in image_m and metric_info.loc[m, "in_mean_rank"]]
labs = list(board.index)
gt_rank = board.loc[labs, [f"family_rank_{f}" for f in fam_in if f != "image"]].mean(axis=1)
votes = sum(leaderboard.significance(board.loc[labs, m], errs.loc[labs, m] if m in errs else None, better[m])
            .astype(int) for m in gt_m)
gt_sig = votes > len(gt_m) / 2  # [i, j]: most GT-based metrics call i significantly better than j
cal_rows, mis_rows = [], []
for m in image_m:
    c = calibration.calibrate(gt_rank, board.loc[labs, m], better[m], n_boot=2000, seed=seed, gt_sig=gt_sig,
                              metric_sig=leaderboard.significance(board.loc[labs, m], errs.loc[labs, m], better[m]))
    cal_rows.append({"metric": m, "rho": c["rho"], "lo": c["lo"], "hi": c["hi"], "n": c["n"],
                     "misordered": len(c["misordered"]), "misordered_significant": len(c["misordered_significant"]),
                     "pairs": c["n"] * (c["n"] - 1) // 2})
    sig_pairs = set(zip(c["misordered_significant"].gt_better, c["misordered_significant"].gt_worse))
    mis_rows.append(c["misordered"].assign(metric=m, significant=[(a, b) in sig_pairs for a, b in
                                                                  zip(c["misordered"].gt_better, c["misordered"].gt_worse)]))
cal = pd.DataFrame(cal_rows).set_index("metric")
mis = pd.concat(mis_rows, ignore_index=True).set_index("metric")
save_csv(out / "summary" / "calibration.csv", cal)
save_csv(out / "summary" / "misordered.csv", mis)
display(cal.rename(index=leaderboard.name).style.format({"rho": "{:.2f}", "lo": "{:.2f}", "hi": "{:.2f}"}))
fig, axes = plt.subplots(1, len(image_m), figsize=(4.2 * len(image_m), 3.8), squeeze=False)
for a, m in zip(axes[0], image_m):
    a.errorbar(gt_rank, board.loc[labs, m], yerr=errs.loc[labs, m], fmt="o", ms=4, color="0.3", lw=1)
    for lab in labs:
        a.annotate(lab, (gt_rank[lab], board.loc[lab, m]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    a.set_xlabel("GT-based family rank (1 = best)")
    a.set_ylabel(plots.metric_axis(m, with_label=True))
    a.set_title(f"ρ = {cal.loc[m, 'rho']:.2f} [{cal.loc[m, 'lo']:.2f}, {cal.loc[m, 'hi']:.2f}]", fontsize=10)
fig.tight_layout()

# %% tags=["remove-input"]
Markdown(story.calibration(cal, mis, image_m))

# %% [markdown]
# ## Browse any submission's maps
# Pick a submission, then move along its series (central z-section and z-projection of
# `n_browse` evenly spaced maps, on the GT grid after preprocessing).

# %%
def map_frames(s):
    idx = np.linspace(0, s.n_maps - 1, min(n_browse, s.n_maps)).astype(int)
    return widgets.map_frames(s.maps, s.voxel_size, idx, lambda k: f"{s.label}: map {idx[k] + 1}/{s.n_maps}, "
                              f"population {s.populations[idx[k]]:.3f}", figsize=(4.4, 2.3), small=True)


widgets.nested_browser(labels, [map_frames(subs[lab]) for lab in labels])

# %% [markdown]
# ## Browse any submission's population profile
# Each submitted map placed at the MD-PC1 of its closest GT map (L2), its population against the
# GT's population along MD-PC1 (both per unit PC1, so they are comparable).

# %%
gt_set = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size, check_finite=False)  # rows matched to maps
gpc, gp = gt_set.pc1, gt_set.populations
go = np.argsort(gpc)
bins = np.linspace(gpc.min(), gpc.max(), 25)
gt_hist = np.histogram(gpc, bins, weights=gp)[0]


def profile(lab):
    where = gpc[np.argmin(np.load(out / "volume_metrics" / f"{slug(lab)}.npz")["l2"], axis=0)]
    fig, ax = plt.subplots(figsize=(5, 2.8))
    ax.stairs(gt_hist, bins, color="0.5", fill=True, alpha=0.4, label="GT")
    ax.stairs(np.histogram(where, bins, weights=subs[lab].populations)[0], bins, color=col[lab], lw=2, label=lab)
    ax.set_xlabel("MD-PC1 (Å)")
    ax.set_ylabel("population per bin")
    ax.legend(fontsize=9)
    ax.set_title(f"{lab}: population along the motion", fontsize=9)
    return widgets.fig_to_png(fig, dpi=80)


widgets.dropdown_browser(labels, [profile(lab) for lab in labels], "submission")
