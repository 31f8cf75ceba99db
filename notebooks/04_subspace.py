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
results_dir = "results/demo"  # reads preprocessed/, writes subspace/
voxel_size = 2.146  # Å
box_ds = 32  # PCA on maps Fourier-downsampled to this box (voxels)
rank = 5  # principal components kept per set
equalise = True  # equalise power spectra to the common (minimum) one before PCA
randomized_above = 2000  # use seeded randomised SVD for sets with more maps than this
n_bootstrap = 25  # resamples of each submission's maps for the PCV error bars (each redoes its PCA)

# %% [markdown]
# # 4. Subspaces: do the methods find the same motion?
#
# **Question.** Does each submission vary along the same directions as the GT and as each
# other? (The paper's Fig. 2A, 2B, 2D, 2G, S2, S3.)
#
# **What you will learn.**
#
# - whether each submission spans the GT's motion, and whether its own variability is real motion
#   (captured variance in both directions)
# - whether the submissions find the same directions of motion as each other
# - where each submission's maps and populations lie in a common subspace and along the GT's first
#   axis
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
# **Inputs.** this run's `preprocessed/<label>.npz` (listed in `manifest.json`), the GT stack, metadata and mask. **Outputs.**
# `subspace/pcv.csv` (PCV matrix in %: row = reference set, column = capturing set),
# `subspace/pcv_bootstrap.csv` (per submission: std of "GT captured" and "set in GT" PCV over
# `n_bootstrap` resamples of its maps, %),
# `subspace/embeddings.npz` (common-subspace coordinates `common_<label>` (n_maps, 2), GT-axis
# coordinates `gtaxes_<label>` (n_maps, 2; on the GT's first two axes, from the GT's mean), populations `pop_<label>`),
# `subspace/variance.csv` (variance fraction of each set's first components).
# **Run time.** Seconds.
#
# Each set is masked, downsampled, normalised to unit norm per map, power-spectrum equalised to
# the common (minimum) spectrum — so a blurrier submission is not penalised for its blur — and
# centred; PCA keeps `rank` components. PCV(i, j) = ‖V_jᵀ V_i S_i‖² / ‖S_i‖²: the share of set
# i's variance that set j's subspace captures.
# ```

# %%
from helpers.core.paths import resolve
from helpers.pipeline.chapters import subspace as ch4
from helpers.report import figures_volume as figs
from helpers.report import page, plots, story

page.setup()
data, out = resolve(data_dir), resolve(results_dir)
gt, mask, subs = ch4.load_inputs(data, out, voxel_size)  # the GT streamed below; this run's submissions (the manifest)

# %%
# sets with fewer than 2 maps are recorded as failures; every set masked and downsampled chunk by
# chunk (a memory-mapped GT is streamed once, never loaded whole), equalised, PCA, PCV; error bars:
# each submission's maps resampled with replacement, its PCA redone, both PCVs recomputed
res = ch4.analyse(out, gt, mask, subs, box_ds=box_ds, rank=rank, equalise=equalise,
                  randomized_above=randomized_above, n_bootstrap=n_bootstrap)
subs, sets, pcas, pcv = (res[k] for k in ("subs", "sets", "pcas", "pcv"))
res["failed"] if len(res["failed"]) else None

# %% [markdown]
# **Reading the demo.** The table puts every set against the GT in both directions:
# `GT captured by set` (row GT of the PCV matrix) asks whether the set spans the true motion;
# `set captured by GT` (column GT) asks whether the set's own variability is true motion.
# Populations do not change a subspace, so the mocks that share the Reconstructed maps
# (bimodal, middle mode, re-gridded, rotated and flipped once preprocessed) score alike; the
# numbers of this run are stated under the table, and the figures below show where they come from.

# %%
both = ch4.both_directions(pcv)
both.round(1)

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story.subspace_both(both))

# %% [markdown]
# ## Percentage of captured variance (Fig. 2B)
# Row i, column j: % of set i's variance captured by set j's top components. The GT row tells
# how much of the true motion each submission spans; the GT column how much of each
# submission's variability is real motion.

# %%
fig = figs.pcv_heatmap(pcv, rank)

# %% [markdown]
# How much of the GT's **first component** each set captures (the Averaged/Sampled GT
# controls should capture ≥ 90 %; units: % of the GT's PC1 variance):

# %%
first = ch4.gt_pc1_captured(out, pcas)
first.round(1).to_frame()

# %% tags=["remove-input"]
Markdown(story.subspace_first(first))

# %% [markdown]
# ## Common subspace (Fig. 2D)
# The weighted principal directions of all submissions define a common basis; every set's maps
# are embedded in its first two axes, dots sized by population, with a population-weighted KDE
# of all submissions underneath.

# %%
emb = ch4.embeddings(out, pcas, sets)
fig = figs.common_embeddings(emb["common"], emb["pops"], list(subs))

# %% [markdown]
# ## Population along the GT's first axis (Fig. S2)
# Each set's maps projected on the GT's PC1, measured from the GT's mean (every set shares that
# origin; centring each set on its own mean shifted a set with another population balance, e.g.
# the DIMS2 path), population scaled to its maximum. The GT shows three modes; a submission that
# recovers the distribution shows them too.

# %%
fig = figs.populations_on_gt_axis(emb["gtaxes"], emb["pops"])

# %% [markdown]
# ## Eigen-maps (Fig. 2A)
# The first principal direction of each set as a signed map (central z-section; red positive,
# blue negative). Similar patterns = the same motion found; the sign of a direction is
# arbitrary.

# %%
fig = figs.eigen_maps(pcas, box_ds)
