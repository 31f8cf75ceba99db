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

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from helpers import io
from helpers.io import manifest
from helpers.kernels import normalise, subspace
from helpers.report import plots, story
from helpers.io.mapset import MapSet, slug
from helpers.core.paths import resolve, save_csv, save_npz

plots.set_style()
data, out = resolve(data_dir), resolve(results_dir)
gt = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size, check_finite=False)  # streamed below
mask = io.read_mask(gtf["mask"], gt.box)
subs = manifest.load_submissions(out, mmap=True)  # this run's submissions (the manifest)
failures = manifest.Failures(out, "04_subspace")
for lab, s in list(subs.items()):
    with failures.guard(lab):
        if s.n_maps < 2:
            from helpers.core.errors import InputError
            raise InputError(lab, f"{s.n_maps} map: a subspace (PCA) needs at least 2 maps.",
                             "Submit at least two maps to be scored in this chapter.")
    if lab not in failures.ok:
        del subs[lab]
sets = {"GT": gt, **subs}

# %%
# masked and downsampled chunk by chunk: a memory-mapped GT is streamed once, never loaded whole
prepared = {lab: subspace.masked_downsample(s.maps, mask, box_ds, label=lab) for lab, s in sets.items()}
if equalise:
    prepared, common_ps = normalise.equalise_spectra(prepared)
pcas = {lab: subspace.pca(subspace.prepare(x), rank, randomized=len(x) > randomized_above)
        for lab, x in prepared.items()}
var = pd.DataFrame({lab: pd.Series(p.variance_fraction[:rank]) for lab, p in pcas.items()}).T
var.columns = [f"PC{i + 1}" for i in range(var.shape[1])]
save_csv(out / "subspace" / "variance.csv", var.rename_axis("label"))
M, labels = subspace.pcv_matrix(pcas)
pcv = pd.DataFrame(100 * M, index=labels, columns=labels)
save_csv(out / "subspace" / "pcv.csv", pcv.rename_axis("reference"))
# error bars: resample each submission's maps with replacement, redo its PCA, recompute both PCVs
boot = []
for lab in subs:
    X = subspace.prepare(prepared[lab])
    v = []
    rng_boot = np.random.default_rng(len(X))  # the same resamples for every set of this size: twins tie
    for _ in range(n_bootstrap):
        pb = subspace.pca(X[rng_boot.integers(0, len(X), len(X))], rank)
        v.append((subspace.pcv(pcas["GT"], pb), subspace.pcv(pb, pcas["GT"])))
    v = 100 * np.array(v)
    boot.append({"label": lab, "gt_captured_std": v[:, 0].std(), "set_in_gt_std": v[:, 1].std()})
save_csv(out / "subspace" / "pcv_bootstrap.csv", pd.DataFrame(boot))
failed = failures.save()
failed if len(failed) else None

# %% [markdown]
# ## Percentage of captured variance (Fig. 2B)
# Row i, column j: % of set i's variance captured by set j's top components. The GT row tells
# how much of the true motion each submission spans; the GT column how much of each
# submission's variability is real motion.

# %%
fig, ax = plt.subplots(figsize=(8, 6.5))
sns.heatmap(pcv, annot=True, fmt=".0f", cmap="mako", vmin=0, vmax=100, ax=ax, cbar_kws={"label": "PCV (%)"},
            annot_kws={"fontsize": 9})
ax.set_xlabel("capturing set j")
ax.set_ylabel("reference set i")
ax.set_title(f"PCV(i, j), rank {rank}")
fig.tight_layout()

# %% [markdown]
# How much of the GT's **first component** each set captures (the Averaged/Sampled GT
# controls should capture ≥ 90 %; units: % of the GT's PC1 variance):

# %%
v1 = pcas["GT"].V[:, :1] * pcas["GT"].S[:1]
first = pd.Series({lab: float(((p.V.T @ v1) ** 2).sum() / (v1 ** 2).sum()) * 100 for lab, p in pcas.items()},
                  name="% of GT PC1 variance captured").sort_values(ascending=False)
save_csv(out / "subspace" / "gt_pc1_captured.csv", first.rename_axis("label").to_frame())
first.round(1).to_frame()

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story.subspace_first(first))

# %% [markdown]
# ## Common subspace (Fig. 2D)
# The weighted principal directions of all submissions define a common basis; every set's maps
# are embedded in its first two axes, dots sized by population, with a population-weighted KDE
# of all submissions underneath.

# %%
basis, _ = subspace.common_subspace({k: v for k, v in pcas.items() if k != "GT"}, 2)
emb = {lab: subspace.embed(p, basis) for lab, p in pcas.items()}
gtax = {lab: subspace.project_on(p, pcas["GT"], 2) for lab, p in pcas.items()}  # from the GT's mean, for every set
pops = {lab: s.populations for lab, s in sets.items()}
save_npz(out / "subspace" / "embeddings.npz",
         **{f"common_{slug(k)}": v for k, v in emb.items()}, **{f"gtaxes_{slug(k)}": v for k, v in gtax.items()},
         **{f"pop_{slug(k)}": v for k, v in pops.items()})
allz = np.concatenate([emb[k] for k in subs])
allw = np.concatenate([pops[k] for k in subs])
col = plots.colors(list(sets))
labs = list(sets)
fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.8), sharex=True, sharey=True)
for lab, a in panels.items():
    sns.kdeplot(x=allz[:, 0], y=allz[:, 1], weights=allw, ax=a, fill=True, cmap="Greys", levels=6, thresh=0.05)
    a.scatter(emb[lab][:, 0], emb[lab][:, 1], s=4 + 800 * pops[lab], color=col[lab], edgecolor="k", lw=0.3)
    a.set_title(lab, fontsize=9)
for a in axes[-1]:
    a.set_xlabel("Z1")
for a in axes[:, 0]:
    a.set_ylabel("Z2")
fig.suptitle("Embeddings in the common subspace (size = population)")
fig.tight_layout()

# %% [markdown]
# ## Population along the GT's first axis (Fig. S2)
# Each set's maps projected on the GT's PC1, measured from the GT's mean (every set shares that
# origin; centring each set on its own mean shifted a set with another population balance, e.g.
# the DIMS2 path), population scaled to its maximum. The GT shows three modes; a submission that
# recovers the distribution shows them too.

# %%
fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.2), sharex=True)
g = gtax["GT"][:, 0]
go = np.argsort(g)
for lab, a in panels.items():
    a.plot(g[go], pops["GT"][go] / pops["GT"].max(), c="0.6", lw=1)
    z = gtax[lab][:, 0]
    o = np.argsort(z)
    a.plot(z[o], pops[lab][o] / pops[lab].max(), ".-", color=col[lab], ms=3)
    a.set_title(lab, fontsize=9)
for a in axes[-1]:
    a.set_xlabel("GT PC1 coordinate")
fig.suptitle("Population (scaled) along the GT's first principal axis; grey = GT")
fig.tight_layout()

# %% [markdown]
# ## Eigen-maps (Fig. 2A)
# The first principal direction of each set as a signed map (central z-section; red positive,
# blue negative). Similar patterns = the same motion found; the sign of a direction is
# arbitrary.

# %%
fig, panels, _ = plots.panel_grid(labs, panel=(2.4, 2.4))
for lab, a in panels.items():
    v = pcas[lab].V[:, 0].reshape(box_ds, box_ds, box_ds).numpy()
    lim = np.abs(v).max()
    a.imshow(v[box_ds // 2], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
    a.set_title(lab, fontsize=9)
    a.set_xticks([]), a.set_yticks([])
fig.suptitle("First eigen-map of each set (central z-section)")
fig.tight_layout()

# %% [markdown]
# **Reading the demo.** The table puts every set against the GT in both directions:
# `GT captured by set` (row GT of the PCV matrix) asks whether the set spans the true motion;
# `set captured by GT` (column GT) asks whether the set's own variability is true motion.
# Populations do not change a subspace, so the mocks that share the Reconstructed maps
# (bimodal, middle mode, re-gridded, rotated and flipped once preprocessed) score alike. The
# numbers of this run are stated under the table.

# %%
both = pd.DataFrame({"GT captured by set (%)": pcv.loc["GT"], "set captured by GT (%)": pcv["GT"]}).drop("GT")
both.round(1)

# %% tags=["remove-input"]
Markdown(story.subspace_both(both))
