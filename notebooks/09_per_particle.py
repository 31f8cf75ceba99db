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
data_dir = "data/demo"  # folder with gt/, particles/, submissions/ (and cryodrgn/, recovar/ when they ran)
results_dir = "results/demo"  # reads preprocessed/ and preprocessing_report.csv, writes per_particle/
voxel_size = 2.146  # Å
particles = "particles/particles.star"  # the particles the methods were trained on (with hetbookTrueMapIndex)
n_particles = 100  # particles scored by per-image FSC, every (N // n_particles)-th as CryoBench does (its default n)
n_bins = 8  # MD-PC1 bins for the AU-FSC along the motion
ks = [5, 10, 20, 50, 100, 200]  # neighbourhood sizes (particles) for the latent scores, each < n_particles_total / 5
batch = 32  # maps transformed at once

# %% [markdown]
# # 9. Per-particle scores: does the method get each particle right?
#
# **Question.** The other chapters score a method's *set* of maps and populations. CryoBench
# (Jeon et al. 2024) asks what the method says about **each particle**: is the map it gives a
# particle that particle's true conformation, and does its latent space order the particles by
# conformation rather than by defocus or view?
#
# **What you will learn.**
#
# - how close each particle's map is to its own GT map (per-image FSC and its area, the AU-FSC),
#   beside two references: the GT map itself (the ceiling) and one noise-free average map for every
#   particle (what a homogeneous reconstruction scores)
# - whether cryoDRGN's decoder, evaluated at each particle's latent, beats its own 40-map series
#   and a perfect classifier into 40 maps (Reconstructed)
# - where RECOVAR's k-means maps (each particle given its cluster's centre map) land, when RECOVAR ran
# - whether each method's latent follows the conformation or a nuisance (neighbourhood similarity,
#   information imbalance)
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
# **Inputs.** the particles' STAR file (`hetbookTrueMapIndex`: each particle's GT map; defocus,
# angles), the GT maps, metadata (MD-PC1) and mask, chapter 2's preprocessed submissions and report
# (the frame cryoDRGN's maps were put in), cryoDRGN's training folder (`cryodrgn/run.json`),
# RECOVAR's run (`recovar/run.json`: its latents `model/zdim_<d>/latent_coords.npy` and k-means
# labels `analysis_<d>/data/kmeans_result.pkl`) when it ran.
# **Outputs** (`per_particle/`): `per_image.csv` (entry, particle, gt_index, pc1 (Å), au_fsc,
# au_fsc_cryobench, res_0143_A, res_05_A), `curves.npz` (per-image FSC curves per entry, `freq` in
# cycles/px), `summary.csv` (per entry: n, mean / sd / standard error of the AU-FSC, median
# resolutions in Å, the CryoBench-convention AU-FSC), `by_state.csv` (AU-FSC per MD-PC1 bin),
# `pairs.csv` (paired t-tests, Holm-adjusted, with the smallest difference each detects at 80 %
# power), `latent.csv` (neighbourhood similarity per k with its standard error over interleaved
# subsets, information imbalance both ways, for each latent against the conformation, defocus and
# viewing direction).
#
# **Per-image FSC** of particle i: the FSC of the method's map for i with i's GT map, under the GT
# mask; the **AU-FSC** is the area under |FSC| from 0 to 0.5 cycles/px (FSC(0) = 1; shells without
# signal count 0), 0.5 for a perfect map. CryoBench's convention (integer shells up to N/2 − 1, no
# mask, first shell below the threshold) is reported beside it (`au_fsc_cryobench`).
# **Neighbourhood similarity** at k: the fraction of each particle's k nearest neighbours in the
# latent that are also among its k nearest in the GT conformation (1: same neighbourhoods; chance
# k/(n − 1)). **Information imbalance** Δ(A → B) (Glielmo et al. 2022): how well neighbours in A
# predict neighbours in B (0: fully, 1: not at all).
# ```

# %%
from helpers.core.paths import resolve
from helpers.io.mapset import slug
from helpers.pipeline.chapters import per_particle as ch9
from helpers.report import figures_per_particle as figs
from helpers.report import page, plots, story_per_particle as story

page.setup()
data, out = resolve(data_dir), resolve(results_dir)
inp = ch9.load_inputs(data, out, voxel_size, particles)
_ = plots.colors(list(inp["subs"]))  # one colour per submission, as in every chapter

# %%
# each entry's map for every chosen particle (the bounds, the submissions with per-particle labels,
# RECOVAR's k-means clusters, cryoDRGN's decoder at each particle's latent: one `cryodrgn eval_vol`,
# then chapter 2's frame),
# the per-image FSCs, the paired tests and the latent scores
res = ch9.analyse(out, inp, n_particles=n_particles, n_bins=n_bins, ks=ks, batch=batch)
summary, pairs, lat, latents = res["summary"], res["pairs"], res["latent"], res["latents"]

# %% [markdown]
# ## What the demo shows

# %% tags=["remove-input"]
from IPython.display import Markdown

k_story = 20 if 20 in ks else ks[len(ks) // 2]
text = story.chapter(summary, pairs, lat, k_story, inp["why_not"])
ch9.write_story(out, text)
Markdown(text)

# %% [markdown]
# ## Per-image AU-FSC
# One point per particle; the box spans the middle half, the line is the median. The GT map is
# the ceiling (0.5 up to rounding); one average map for all particles is what a noise-free
# homogeneous reconstruction scores. It is not a floor: a method's noise or coarser grid can cost
# more than the heterogeneity it resolves.

# %%
story.summary_table(summary)

# %%
fig = figs.au_fsc_by_entry(res["per_image"], list(summary.index))

# %% [markdown]
# Paired tests over the same particles (Holm-adjusted over this table; `mde`: the smallest mean
# difference each comparison detects with 80 % power, in the same units as the AU-FSC):

# %%
pairs.round(4)

# %% [markdown]
# ## Mean per-image FSC curves
# Shells where a map has no signal count as 0, and so do the shells beyond a map's own Nyquist
# (cryoDRGN, and RECOVAR when it ran, on 32-px images, 4.29 Å per pixel: nothing beyond 1/8.6 Å⁻¹,
# the vertical dotted line; what their maps hold there is interpolation from putting them on the GT
# grid), so their curves fall to 0 there; the horizontal dotted lines mark FSC = 0.5 and 0.143.

# %%
nyq = ch9.nyquist_lines(summary.index, inp["subs"], inp["gt"].voxel_size)
fig = figs.mean_curves(res["curves"], {slug(e): e for e in summary.index}, ch9.frequencies(inp["gt"].box),
                       inp["gt"].voxel_size, nyq)

# %% [markdown]
# ## AU-FSC along the motion
# Particles binned by their GT map's MD-PC1 (Å); a method that resolves only part of the motion
# drops at the other end.

# %%
fig = figs.au_fsc_along_pc1(res["by_state"], list(summary.index))

# %% [markdown]
# ## The latent space
# Each particle's latent coordinate (each method's, when several ran) coloured by the variable
# chosen (the conformation it should follow; defocus and viewing direction it should ignore).

# %%
figs.latent_browser(*ch9.colour_by(inp, latents)) if latents else None

# %%
fig = figs.neighbourhood(lat) if len(lat) else None

# %% [markdown]
# Every latent against the conformation and each nuisance: neighbourhood similarity (NS) at one k
# with its standard error over interleaved subsets, its chance level and its ceiling (below 1 where
# particles share a GT map: ties), and the information imbalance both ways (every k:
# `per_particle/latent.csv`):

# %%
ch9.latent_summary(lat, k_story).round(3) if len(lat) else None
