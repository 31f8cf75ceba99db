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
results_dir = "results/demo"  # reads preprocessed/ and volume_metrics/, writes distribution/
voxel_size = 2.146  # Å
metrics = ["l2", "corr", "fsc", "res", "sw"]  # cost matrices used (corr is turned into 1 − corr)
n_pool = 5  # GT maps per window (main setting)
n_pool_sweep = [4, 5, 6]  # window sizes for the error bars over pooling
fraction = 0.9  # fraction of GT maps per replicate
n_replicates = 10  # replicates (GT subsamples)
n_volumes_study = [8, 10, 16, 20, 40, 80]  # Averaged-GT mocks for the number-of-maps study
cost_scale = "distance"  # "distance": the metric itself, 0 for a perfect match; "rank": per-GT-map ranks from 0
mode = "default"  # "reference": the published pipeline (ranks from 1, summed windows, legacy RNG, published KL stop)

# %% [markdown]
# # 5. Distributions: EMD and KL between GT and submitted populations
#
# **Question.** Do a submission's maps *and populations* reproduce the GT distribution along
# the motion? And what would its best possible populations be? (The paper's Fig. 3B, 3C, S5.)
#
# **Inputs.** `volume_metrics/<label>.npz`, preprocessed populations, GT metadata. **Outputs.**
# `distribution/replicates.csv` (one row per submission × metric × window size × replicate:
# EMD_submitted, EMD_opt, KL_pq/qp_submitted, KL_pq/qp_opt, em_iterations),
# `distribution/summary.csv` (mean ± std over replicates and window sizes),
# `distribution/q_opt.npz` (`<label>__<metric>` = mean optimised populations (EMD) per
# submitted map). **Run time.** Seconds.
#
# Each replicate draws 90 % of the GT maps (seeded), orders them by MD-PC1 and pools neighbours
# into windows; the window cost is the mean cost over the window. The cost is the metric itself,
# zero for a perfect match (`cost_scale="distance"`: L2 per masked voxel of the z-scored maps,
# 1 − correlation, 1 − FSC area, resolution in Å above Nyquist, sliced-Wasserstein Å), so the
# EMD is the mean distance the GT mass has to travel, in the metric's units, and a submission
# whose maps and populations equal the GT's scores 0. The published code ranks each GT map's
# costs instead (`cost_scale="rank"`): ranks run 0 … n−1, so they reward submissions with
# fewer maps (the last section measures it). The EMD with optimised populations equals
# Σ_r P_r min_l D_rl (checked against the LP in the tests).
#
# **KL with the submitted populations.** The KL needs the submission's populations as a
# distribution over the same windows as the GT's. By default (`dist.assignment_matrix`) each
# submitted map's population is spread over the windows for which it is the cheapest map (its
# *territory*; a tie shares the window), and a map that is no window's cheapest puts its
# population on the window cheapest for it. The published definition instead gives each window
# to its cheapest map, the first one on a tie, and spreads the population of every map that is
# nobody's cheapest *uniformly over all windows*. That penalises complete submissions: the GT
# itself, 300 maps on one coordinate in windows of 5, scores KL 0.28 there because four maps in
# five are no window's cheapest, while a 1-in-5 subset of it scores 0.02; and it depends on
# which of two identical maps comes first. The default scores the GT itself 0.005, every subset
# of it worse, and is unchanged by the order of the maps or by splitting a map into identical
# copies (tested). Reference mode keeps the published definition.
#
# **Reference mode** (`mode="reference"`, or `dist.evaluate_published_pickle(pkl, metadata.csv)`
# on a published map-to-map pickle) reproduces the published pipeline: ranks from 1 (a perfect
# submission scores 1, or `n_pool` after summing), ranks *summed* over each window, replicates
# drawn by numpy's legacy RNG seeded with the replicate index, the published KL assignment and
# its stopping rule. It is tested against an independent transcription of that code on the challenge's own
# pickle. The last section compares both modes on the demo.

# %%
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.kernels import distribution as dist
from helpers import io
from helpers.io import manifest
from helpers.report import plots, story_scores
from helpers.datagen import mocks
from helpers.kernels import gt_pass
from helpers.io.mapset import MapSet, slug
from helpers.core.paths import resolve, save_csv, save_npz

plots.set_style()
data, out = resolve(data_dir), resolve(results_dir)
gt = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size, check_finite=False)  # rows matched to maps
p_gt, pc1 = gt.populations, gt.pc1
done = manifest.labels_done(out, "03_volume_metrics")  # scored by chapter 3 in this run
subs = {k: v for k, v in manifest.load_submissions(out, mmap=True).items() if k in done}
mats = {lab: dict(np.load(out / "volume_metrics" / f"{slug(lab)}.npz")) for lab in subs}

# %%
rows, qopt = [], {}
failures = manifest.Failures(out, "05_distribution")
for lab, s in subs.items():
    with failures.guard(lab):
        for metric in metrics:
            # reference mode ranks the matrix as the published code does (similarities not negated)
            if mode == "reference":
                cost = mats[lab][metric]
            elif cost_scale == "distance":
                cost = dist.distance_cost(mats[lab][metric], metric, int(mats[lab]["n_voxels"]), voxel_size)
            else:
                cost = dist.to_cost(mats[lab][metric], metric)
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
if len(failed):
    display(failed)
save_csv(out / "distribution" / "replicates.csv", rep)
save_npz(out / "distribution" / "q_opt.npz", **qopt)
cols = ["EMD_submitted", "EMD_opt", "KL_pq_submitted", "KL_pq_opt", "max_q_opt"]
summary = rep.groupby(["label", "metric"])[cols].agg(["mean", "std"])
summary.columns = [f"{a}_{b}" for a, b in summary.columns]
save_csv(out / "distribution" / "summary.csv", summary.reset_index().set_index("label"))
plots.readable(summary.xs("l2", level="metric")[["EMD_submitted_mean", "EMD_submitted_std", "EMD_opt_mean",
                                                  "KL_pq_submitted_mean", "KL_pq_opt_mean", "max_q_opt_mean"]].round(3))

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story_scores.distribution(summary.xs("l2", level="metric"),
                                   {lab: len(s.populations) for lab, s in subs.items()}))

# %% [markdown]
# ## EMD per submission (Fig. 3C)
# Mean EMD (lower is better; L2 cost per masked voxel of the z-scored maps) with error bars over
# GT subsamples and window sizes, with the submitted populations and with the optimised ones.

# %%
m = rep[rep.metric == "l2"].melt(id_vars=["label"], value_vars=["EMD_submitted", "EMD_opt"],
                                 var_name="populations", value_name="EMD")
m["populations"] = m["populations"].map({"EMD_submitted": "submitted", "EMD_opt": "optimised"})
fig, ax = plt.subplots(figsize=(7, 4.5))
sns.barplot(data=m, y="label", x="EMD", hue="populations", errorbar="sd", ax=ax, palette=plots.PALETTE)
ax.set_xlabel("EMD (L2 per masked voxel that the GT mass travels)")
ax.set_ylabel("")
ax.set_title("EMD between GT and submission distributions")
fig.tight_layout()

# %% [markdown]
# The same with every cost metric: the ranking of submissions depends on the metric.

# %%
piv = rep.groupby(["label", "metric"])["EMD_submitted"].mean().unstack()
fig, ax = plt.subplots(figsize=(6, 4.5))
sns.heatmap(piv.div(piv.max(axis=0), axis=1), annot=piv.round(2).values, fmt="", cmap="rocket_r", ax=ax,
            cbar_kws={"label": "EMD (submitted) / largest in its column"})
ax.set_title("EMD with submitted populations, per cost metric")
fig.tight_layout()

# %% [markdown]
# ## Optimised against submitted populations along the GT order (Fig. 3B)
# For each submitted map, its optimised population (EMD, mean over replicates) against the
# submitted one, maps ordered by the MD-PC1 of their best GT match. The bimodal mock's
# optimised populations fill in the missing middle mode.

# %%
labs = list(subs)
fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.3), sharex=True)
for lab, a in panels.items():
    where = pc1[np.argmin(mats[lab]["l2"], axis=0)]
    o = np.argsort(where)
    a.plot(where[o], subs[lab].populations[o], ".-", ms=3, label="submitted")
    a.plot(where[o], qopt[f"{slug(lab)}__l2"][o], ".-", ms=3, label="optimised (EMD)")
    a.set_title(lab, fontsize=9)
axes.flat[0].legend(fontsize=9)
for a in axes[-1]:
    a.set_xlabel("MD-PC1 of best GT match (Å)")
fig.suptitle("Submitted vs optimised populations (L2 cost)")
fig.tight_layout()

# %% [markdown]
# ## How many maps does a submission need? (Fig. S5)
# Averaged-GT mocks made from the GT with 8 … 80 maps; EMD with their own (correct) populations.

# %%
mask = io.read_mask(gtf["mask"], gt.box)
study = []
# the mocks for every k from one pass over the GT, then their L2 to the GT in one more pass; large
# mocks (174 maps at 224³: 7.8 GB) are memory maps in a scratch folder removed afterwards
with tempfile.TemporaryDirectory(prefix=".scratch-", dir=out) as scratch:
    mocks_k = mocks.averaged_gt_many(gt.maps, gt.populations, gt.pc1,
                                     [k for k in n_volumes_study if k <= gt.n_maps // 2], scratch=scratch)
    fused_k, _ = gt_pass.distance_matrices_many(gt.maps, {str(k): m for k, (m, _, _) in mocks_k.items()}, mask, ["l2"])
    mocks_k = {k: p_k for k, (_, p_k, _) in mocks_k.items()}  # (the maps are closed before the folder goes)
for k, pops_k in mocks_k.items():
    r_k = fused_k[str(k)]
    for cs in ("distance", "rank"):
        D = dist.distance_cost(r_k["l2"], "l2", r_k["n_voxels"]) if cs == "distance" else r_k["l2"]
        for r in dist.evaluate(D, p_gt, pc1, pops_k, n_pool=n_pool, fraction=fraction, n_replicates=n_replicates,
                               cost_scale=cs):
            study.append({"n_maps": k, "cost_scale": cs, "EMD_submitted": r["EMD_submitted"], "EMD_opt": r["EMD_opt"]})
study = pd.DataFrame(study)
save_csv(out / "distribution" / "n_volumes_study.csv", study)
fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
for a, cs, unit in zip(axes, ("distance", "rank"), ("L2 per voxel", "mean rank")):
    sns.pointplot(data=study[study.cost_scale == cs], x="n_maps", y="EMD_submitted", errorbar="sd", ax=a)
    a.set_xlabel("number of maps in the Averaged-GT mock")
    a.set_ylabel(f"EMD submitted ({unit})")
    a.set_title(f"cost scale: {cs}", fontsize=10)
fig.suptitle("EMD vs number of maps (same maps, two cost scales)")
fig.tight_layout()

# %% tags=["remove-input"]
trend = study.groupby(["cost_scale", "n_maps"]).EMD_submitted.mean().unstack(0)
lo_k, hi_k = trend.index.min(), trend.index.max()
Markdown(f"With the metric as cost the EMD falls as maps are added ({trend.loc[lo_k, 'distance']:.3f} with "
         f"{lo_k} maps, {trend.loc[hi_k, 'distance']:.3f} with {hi_k}): more maps describe the motion better. "
         f"With ranks it {'rises' if trend.loc[hi_k, 'rank'] > trend.loc[lo_k, 'rank'] else 'falls'} "
         f"({trend.loc[lo_k, 'rank']:.2f} → {trend.loc[hi_k, 'rank']:.2f}): ranks run 0 … n−1, so a submission "
         "with fewer maps gets smaller ranks for the same quality — why this book uses the metric itself.")

# %% [markdown]
# ## Default vs published (reference) conventions
# The same L2 matrices through the published pipeline (ranks from 1, summed over each window of
# `n_pool` maps, legacy replicate draws, published KL stop): the values are on another scale
# (ranks, about `n_pool` × (mean rank + 1)), so the ordering of the submissions is what to compare.

# %%
cmp_rows = []
for lab, s in subs.items():
    for m, kw in (("default", {}), ("reference", {"mode": "reference"})):
        c = mats[lab]["l2"] if m == "reference" else dist.distance_cost(mats[lab]["l2"], "l2", int(mats[lab]["n_voxels"]))
        r = dist.evaluate(c, p_gt, pc1, s.populations, n_pool=n_pool, fraction=fraction,
                          n_replicates=n_replicates, **kw)
        cmp_rows.append({"label": lab, "mode": m, "EMD_submitted": np.mean([x["EMD_submitted"] for x in r]),
                         "EMD_opt": np.mean([x["EMD_opt"] for x in r])})
modes = pd.DataFrame(cmp_rows).pivot(index="label", columns="mode")
modes.columns = [f"{a} ({b})" for a, b in modes.columns]
rank_default = modes["EMD_submitted (default)"].rank()
rank_ref = modes["EMD_submitted (reference)"].rank()
same = int((rank_default == rank_ref).sum())
print(f"{same} of {len(modes)} submissions keep their EMD-submitted rank under the published conventions.")
plots.readable(modes.round(3))
