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
data_dir = "data/demo"  # folder with gt/ and particles/
results_dir = "results/demo"  # reads preprocessed/, writes image_metrics/
voxel_size = 2.146  # Å
particles = "particles/particles.star"  # the stack scored (relative to data_dir); the demo scores its held-out stack
n_images = 80  # particle images used (the first n of the stack)
box_ds = 24  # images and maps Fourier-downsampled to this box (pixels)
n_directions = 100  # viewing directions of the pose grid
n_inplane = 12  # in-plane angles of the pose grid
max_shift = 1  # translations searched: ±max_shift pixels (at the downsampled size)
shift_step = 0.5  # spacing of the shift grid (pixels at the downsampled size)
refine_levels = 2  # adaptive refinement of the pose integral (0: grid only)
refine_top = 2  # grid rotations per image refined at each level
n_gt_maps = 0  # GT maps in the reference ensemble (0: all, the true ensemble; else evenly spaced along MD-PC1)
dask_scheduler = ""  # address of a Dask scheduler, e.g. tcp://host:8786, to run the pose searches there; empty: none
dask_workers = 0  # worker processes of a local Dask cluster for the pose searches; 0: in-process

# %% [markdown]
# # 6. Image metrics: do the maps explain the particle images?
#
# **Question.** Without any ground truth, how well does a submission's ensemble (maps + populations)
# explain the particle images? (The paper's Fig. 2C/2F, 3D, S6.)
#
# **What you will learn.**
#
# - how well each submission's ensemble (maps + populations) explains the particle images, relative
#   to the GT ensemble that generated them
# - whether enough images were scored to separate each submission from the GT ensemble, or the
#   comparison is underpowered
# - where likelihood-optimised populations put the mass, and what a search at full size would cost
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
# **Inputs.** the particle stack `particles` (STAR + `.mrcs`; the demo scores `particles/heldout.star`, images
# that no submission was made from and no method trained on), this run's `preprocessed/<label>.npz` (listed in `manifest.json`), the GT. **Outputs.**
# `image_metrics/<label>.npz` (`logp_integrated`, `logp_best`, `best_cc` — each (n_images, n_maps)),
# `image_metrics/images.json` (`particles`: the stack scored, relative to `data_dir`; `n_images` scored of its
# `n_stack`), `image_metrics/summary.csv` (per set: ensemble log-likelihood with submitted and with
# EM-optimised weights, per image relative to the GT ensemble; median best CC; rank),
# `image_metrics/power.csv` (one row per submission and metric — `loglik`: per-image ensemble
# log-likelihood, `best_cc`: per-image best cross-correlation — comparing the GT ensemble with
# the submission over the same images: `n_images`, `mean` and `sd` of the per-image difference
# GT ensemble − submission (nats, or CC units), `z` = mean / (sd/√n_images), `images_needed` =
# (2·sd/|mean|)², `verdict`: `separated` (GT ensemble better at ≥ 2σ, i.e. n_images ≥
# images_needed), `wrong way` (the submission better at ≥ 2σ), `underpowered` (n_images <
# images_needed ≤ the stack's image count: scoring more of the stack's images would decide it),
# `no difference` (images_needed beyond the whole stack, or infinite: identical scores or a mean
# difference within float noise, 1e-4 nat / 1e-6 CC),
# `n_stack`: the images the particle stack holds).
# **Run time.** Printed at the end of the chapter (measured in the run itself).
#
# For each image and map a grid of poses (Fibonacci viewing directions × in-plane angles ×
# shifts every half pixel) is searched with the image's own CTF; the log-likelihood integrates
# the image's scale, offset and noise level analytically (white noise) and is integrated over
# poses, or taken at the best pose. The pose integral is refined adaptively: around each image's
# `refine_top` best grid rotations (1 in the demo book, 2 by default) the cell is cut into 27
# smaller ones, `refine_levels` times (twice). Without this refinement (and
# with whole-pixel shifts) the true pose lies up to half a grid cell from every grid pose, and
# maps that are *smoother* than the truth lose less at the wrong pose: on this demo the low-pass
# and the re-aligned rotated mocks then outscore the GT ensemble (see `helpers/kernels/image_metrics.py`
# for the measurements). The ensemble log-likelihood is Σ_i log Σ_l w_l P(y_i | V_l).
# The demo uses a subset of the images and a coarse, downsampled grid to fit the book's
# time budget; the benchmark (`benchmarks/bench_image_search.py`) reports the search rate, from
# which the cost of the full setting follows (see the end).
# ```

# %%
from helpers.core.paths import resolve
from helpers.pipeline.chapters import images as chapter
from helpers.report import page, plots, story_images

page.setup()
data, out = resolve(data_dir), resolve(results_dir)
st = chapter.particle_stack(data, out, particles, n_images, box_ds, n_directions=n_directions, n_inplane=n_inplane,
                            max_shift=max_shift, shift_step=shift_step, refine_levels=refine_levels,
                            refine_top=refine_top)
search = st.search
print(f"{search.M} images of {box_ds}² px at {st.pixel_size:.2f} Å, {search.n_poses} grid poses "
      f"+ {search.n_evaluated - search.n_poses} refinement poses per image and map")
sets, mask = chapter.load_sets(data, out, voxel_size, n_gt_maps)  # the GT ensemble, then this run's submissions

# %%
res, summary, failed = chapter.search_sets(out, sets, st, mask, box_ds, dask_scheduler, dask_workers)
if len(failed):
    display(failed)
plots.readable(summary.round(3))

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story_images.likelihood(summary, search.M))

# %% [markdown]
# ## Ranking by ensemble log-likelihood (Fig. 3D)
# Per image, relative to the true GT ensemble (0); higher is better. The GT ensemble should
# rank first: it generated the images. Read the margins with the search's limits in mind:
# images downsampled to `box_ds` pixels carry nothing beyond their Nyquist frequency (printed
# below), so the low-pass mock's 14–22 Å filters are only partly visible at 24 px; noise in the
# maps and wrong populations (middle mode, bimodal) show clearly. The Sampled GT control *is*
# made of GT maps (one per group, with its group's population), so it should come close to the
# full GT ensemble; the Reconstructed mock and the mocks made from it (other grid, flipped
# hand: identical after preprocessing) should trail the controls. The numbers of this run are
# stated above.

# %%
print(f"image Nyquist after downsampling: {2 * st.pixel_size:.1f} Å")
print(story_images.gt_rank_line(*chapter.above_gt(summary), len(summary)))
fig = plots.loglik_bars(summary, sets)


# %% [markdown]
# ## Best cross-correlation per image (Fig. 2C/2F)
# For each image, the best normalised cross-correlation over all maps and poses of a set.

# %%
fig = plots.best_cc_violins(res)

# %% [markdown]
# ## Are there enough images to judge?
# Every set is scored on the same images, so each comparison with the GT ensemble is paired:
# per image, Δᵢ = score under the GT ensemble − score under the submission (ensemble
# log-likelihood in nats; best cross-correlation). The mean of Δ is resolved at 2 standard
# errors once n ≥ (2·sd/|mean|)² images (normal approximation, `images_needed`;
# `helpers.kernels.image_metrics.paired_power`). With fewer images the verdict is *underpowered*, not a
# tie — unless even the whole particle stack would not suffice (*no difference*). *Wrong way*:
# the submission explains the images better than the GT ensemble, at ≥ 2σ.

# %%
power = chapter.power_table(out, res, sets, st.n_stack)
wide = power[["mean", "z", "images_needed", "verdict"]].unstack("metric").swaplevel(axis=1).sort_index(axis=1, level=0)
display(wide.style.format({c: "{:.3g}" for c in wide.columns if c[1] != "verdict"}))
fig = plots.power_z(power, search.M)

# %% tags=["remove-input"]
Markdown(story_images.power_verdicts(power.reset_index(), search.M, st.n_stack, chapter.reused_searches(res),
                                     chapter.same_ensembles(res, sets), box_ds))  # same: maps and populations

# %% [markdown]
# ## Likelihood-optimised populations (Fig. S6)
# Weights that maximise the ensemble likelihood (EM) against the submitted populations, maps in
# their submitted order. With a few dozen images the maximum-likelihood weights are sparse: EM
# concentrates mass on the maps that best explain individual images, so read the optimised
# curve for *where* mass goes (e.g. the middle-mode mock's images are explained by maps at both
# ends), not for its exact shape.

# %%
fig = plots.likelihood_populations(sets, res)

# %% [markdown]
# ## What the full setting costs
# This run compared every image with every map at every grid pose plus the refinement's
# poses; the rate below (images × maps × poses per second on this machine) gives the cost of a
# larger run: all images of the stack, and at the full box (the band, hence the cost per pose,
# grows with the box², and a finer box needs a finer grid — a lower bound).

# %%
cost = chapter.search_cost(res, sets, st)
print(f"{cost['comparisons']:.3g} image-map-pose comparisons in {cost['seconds']:.0f} s = {cost['rate']:.3g} per second")
print(f"one 80-map submission against all {st.n_stack} images, these settings: ~{cost['per_submission_s'] / 60:.0f} min; "
      f"at the full {cost['box']}² px box: ≥ ~{cost['full_box_s'] / 3600:.1f} h")
