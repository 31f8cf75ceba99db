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
# **What you will learn.**
#
# - how each submission ranks on each metric family and overall, and which submissions are tied
#   within their error bars
# - whether the metrics agree, and whether the GT-free image metrics reproduce the GT-based ranking
# - whether each degraded mock is caught by the metric aimed at it, and where a real method lands
#   among the mocks
# - how far to trust each metric, given what chapter 7 found it blind to
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
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
# | `au_fsc` — mean per-image AU-FSC of the map the method gives each particle (only submissions with per-particle output) | 9 | higher | standard error over the particles |
# ```

# %% tags=["hide-input"]
from IPython.display import Markdown

from helpers.core.paths import resolve
from helpers.pipeline.chapters import summary
from helpers.report import calibration, headline, leaderboard, page, plots
from helpers.report import figures_summary as figs
from helpers.report import story_summary as story

page.setup()
data, out = resolve(data_dir), resolve(results_dir)
# this run's submissions (the manifest), those every chapter 3–6 scored, and their result tables
inp = summary.load_inputs(out, distance_metric)
subs, labels = inp.subs, inp.labels
# values and error bars per submission (bootstraps over maps, GT subset and images; std over replicates)
table, per_image, n_images = summary.metric_table(out, inp, n_bootstrap, seed)
better = summary.directions(table)
# images an image metric needs to order the submissions: the median over adjacent pairs (in the
# metric's order) of the paired images_needed, over the pairs the whole stack could separate
# and that differ by more than float noise (helpers.kernels.image_metrics.images_to_order); fewer
# images scored than that: underpowered
power = summary.image_power(out, table, per_image, better, n_images)
# ranks that respect each metric's error bar (helpers.report.leaderboard): values within uncertainty
# (2 σ, or 0.1 % relative where a metric has no error bar) share a rank; metrics that separate
# fewer than a quarter of the pairs, or image metrics with fewer images than needed, are shown
# but left out; the overall rank is the mean of the family ranks, with a bootstrap interval
values, errors, extra = summary.rank_inputs(table, better, inp.vol)
board, metric_info, families = leaderboard.board(values, errors, better, power=power, n_draws=n_rank_draws, seed=seed)
board = board.join(extra)
ranks, errs = summary.ranks_and_errors(board, better)
checks = leaderboard.defect_checks(board[list(better)], errs, better)
summary.write_tables(out, leaderboard=board, metrics=metric_info, families=families, defects=checks)

# %% tags=["remove-input"]
# the headline for the book's front page (book/intro.md includes it), written from the tables
ctrl = [k for k in leaderboard.DEMO_CONTROLS if k in board.index]
methods = summary.method_entries(board, subs)  # real methods' entries
ctx = summary.method_context(data, out, methods)
summary.write_headline(out, headline.front_page(board, checks, methods, matched=ctx["matched"]))
Markdown(story.verdict(board, families, metric_info, n_rank_draws))

# %% [markdown]
# ## The leaderboard by family
# Each family of questions — is each map right (volume), is the motion covered (transport), is
# the subspace right (subspace), are the populations right (distribution), do the maps explain
# the images (image) — counts once: its rank is the mean of its separating metrics' ranks, and
# the overall rank is the mean of the family ranks (five population-blind map metrics no longer
# outvote the three that see populations). The interval is the 2.5–97.5 % range of the overall
# rank when every value is redrawn within its error bar (`helpers.report.leaderboard`); two submissions
# whose intervals overlap are *tied* and the text does not order them. Families marked † are shown
# but left out (no separating metric, underpowered, or measured for fewer than half of the
# submissions, as chapter 9's per-particle AU-FSC); "—" = no rank (unmeasured, or error
# unknown: `unranked`).

# %%
figs.family_table(board, families)

# %% tags=["remove-input"]
if ctrl:
    degraded = list(dict.fromkeys([d[0] for d in leaderboard.DEMO_DEFECTS] + [u[0] for u in leaderboard.DEMO_UNDONE]))
    display(Markdown(story.sanity(board, ctrl, degraded, metric_info.loc["resolution_A", "separated_pairs"],
                                  ranks["resolution_A"].nunique(), methods)))

# %% [markdown]
# ## Submissions that could not be scored
# A submission that fails in a chapter (unreadable maps, a degenerate map, too few maps for a
# subspace, …) is listed here with the reason; every other submission is still scored.

# %%
fails = summary.failures(out)
if len(fails):
    display(fails.style.set_properties(subset=["message"], **{"white-space": "pre-wrap", "text-align": "left"}))
print(f"{len(labels)} of {len(subs)} preprocessed submissions are on the leaderboard"
      + (f"; left out: {', '.join(f'{k} (failed in {v})' for k, v in inp.missing.items())}" if inp.missing else "")
      + (f"; {fails.label.nunique()} submission(s) failed somewhere (table above)" if len(fails) else ""))

# %% [markdown]
# ## Every metric's rank
# Colour = rank on each metric (dark = best), the overall mean rank first. Values within each
# other's uncertainty share a rank (the midpoint of their rank interval, in `leaderboard.csv` as
# `rank_<metric>_interval`); metrics marked † separate too few pairs, or (image metrics) scored
# fewer images than they need to order the submissions (*underpowered*, in `metrics.csv`), and
# stay out of their family's rank. A submission can lead on one family and trail on another — that is the point of scoring
# on all of them.

# %%
rank_tab, nyquist_note = figs.rank_table(board, ranks, better, metric_info)
if nyquist_note:
    display(Markdown(nyquist_note))
rank_tab

# %% [markdown]
# Each metric with its error bar (std over replicates for EMD/KL, bootstrap over images for the
# likelihood):

# %%
figs.metric_bars(board, labels);

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
display(*figs.method_sections(board, subs, methods, better, ctx, inp.vol))
if not methods:
    print("no real method's entry in this run (the demo adds cryoDRGN when `make cryodrgn` has installed it)")

# %% [markdown]
# ## How far to trust each metric
# Chapter 7 ({doc}`07_robustness`) damages one GT-derived submission in one known way at a time
# and records which metric notices. For each leaderboard metric: how many of the defects it
# detects, what it is blind to, and what it wrongly responds to (a change that should not
# matter). Read a rank with its metric's blind spots in mind.

# %% tags=["remove-input"]
trust = summary.trust_table(out, better)
if trust is not None:
    display(trust.style.set_properties(**{"text-align": "left"}))
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
rc = summary.rank_correlation(out, ranks)
figs.rank_heatmap(rc);

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
cal, mis, gt_rank = calibration.against_gt(board, errs, better, metric_info, families, per_image, seed=seed)
image_m = list(cal.index)
summary.write_tables(out, calibration=cal, misordered=mis)
display(cal.rename(index=leaderboard.name).style.format({"rho": "{:.2f}", "lo": "{:.2f}", "hi": "{:.2f}"}))
figs.calibration_scatter(gt_rank, board, errs, cal);

# %% tags=["remove-input"]
Markdown(story.calibration(cal, mis, image_m))

# %% [markdown]
# ## Browse any submission's maps
# Pick a submission, then move along its series (central z-section and z-projection of
# `n_browse` evenly spaced maps, on the GT grid after preprocessing).

# %%
figs.map_browser(subs, labels, n_browse)

# %% [markdown]
# ## Browse any submission's population profile
# Each submitted map placed at the MD-PC1 of its closest GT map (L2), its population against the
# GT's population along MD-PC1 (both per unit PC1, so they are comparable).

# %%
bins, gt_hist, hists = summary.population_profiles(data, out, subs, labels, voxel_size)
figs.profile_browser(bins, gt_hist, hists, labels)
