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

# %%
import hashlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.kernels import image_metrics as im
from helpers.pipeline import distributed
from helpers import io
from helpers.io import manifest
from helpers.report import plots, story_images
from helpers.io.mapset import MapSet, slug
from helpers.core.paths import resolve, save_csv, save_json, save_npz

plots.set_style()
data, out = resolve(data_dir), resolve(results_dir)
parts = io.read_particles(data / particles)
tab = parts.table.iloc[:n_images]
imgs = im.downsample_images(parts.images[:n_images], box_ds)
px = parts.pixel_size * parts.images.shape[-1] / box_ds
ctf_params = dict(defocus_u=tab.rlnDefocusU.to_numpy(), defocus_v=tab.rlnDefocusV.to_numpy(),
                  defocus_angle=tab.rlnDefocusAngle.to_numpy(), **parts.optics)
search = im.ImageSearch(imgs, px, ctf_params, n_directions=n_directions, n_inplane=n_inplane, max_shift=max_shift,
                        shift_step=shift_step, refine_levels=refine_levels, refine_top=refine_top)
print(f"{search.M} images of {box_ds}² px at {px:.2f} Å, {search.n_poses} grid poses "
      f"+ {search.n_evaluated - search.n_poses} refinement poses per image and map")

gt = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size)
mask = io.read_mask(gtf["mask"], gt.box)  # each map's solvent background is subtracted before projection
if 0 < n_gt_maps < gt.n_maps:
    gt = gt.subset(np.argsort(gt.pc1)[np.linspace(0, gt.n_maps - 1, n_gt_maps).astype(int)])
sets = {"GT ensemble": gt}
sets.update(manifest.load_submissions(out, mmap=True))  # this run's submissions (the manifest)
n_stack = len(parts.images)  # images the stack holds: the most a larger run could score
save_json(out / "image_metrics" / "images.json", {"particles": str(particles), "n_images": len(tab), "n_stack": n_stack})

# %%
res, rows, seen = {}, [], {}
failures = manifest.Failures(out, "06_image_metrics")
client = distributed.make_client(dask_scheduler, dask_workers)  # None: in-process
if client is not None:  # blocks of maps as Dask tasks (helpers.pipeline.distributed.image_search_dask)
    on_dask = distributed.image_search_dask(
        client, imgs, px, ctf_params, {lab: im.maps_to_image_grid(s.maps, box_ds, mask) for lab, s in sets.items()},
        n_directions=n_directions, n_inplane=n_inplane, max_shift=max_shift, shift_step=shift_step,
        refine_levels=refine_levels, refine_top=refine_top)
for lab, s in sets.items():
    with failures.guard(lab):
        if client is not None:
            r = on_dask[lab]
            if isinstance(r, Exception):
                raise r
        else:  # a set whose maps are identical on the image grid to one searched already reuses its search
            grid = im.maps_to_image_grid(s.maps, box_ds, mask)
            key = hashlib.sha1(grid.numpy().tobytes()).hexdigest()
            r = dict(res[seen[key]], seconds=0.0, same_as=seen[key]) if key in seen else search.search(grid, lab)
            seen.setdefault(key, lab)
        res[lab] = r
        save_npz(out / "image_metrics" / f"{slug(lab)}.npz", **{k: v for k, v in r.items() if k not in ("seconds", "same_as", "w_opt")},
                 populations=s.populations)
        w_opt = im.optimise_weights(r["logp_integrated"])
        rows.append({"label": lab, "n_maps": s.n_maps,
                     "loglik_submitted": im.ensemble_loglik(r["logp_integrated"], s.populations),
                     "loglik_optimised": im.ensemble_loglik(r["logp_integrated"], w_opt),
                     "loglik_best_pose_submitted": im.ensemble_loglik(r["logp_best"], s.populations),
                     "median_best_cc": float(np.median(r["best_cc"].max(1))), "seconds": r["seconds"]})
        res[lab]["w_opt"] = w_opt
failed = failures.save([k for k in failures.ok if k != "GT ensemble"])
for lab, r in res.items():
    if "same_as" in r:
        print(f"{lab}: maps identical to {r['same_as']}'s on the {box_ds}³ image grid, its search reused")
if len(failed):
    display(failed)
summary = pd.DataFrame(rows).set_index("label")
ref = summary.loc["GT ensemble", "loglik_submitted"]
summary["delta_per_image_vs_gt"] = (summary["loglik_submitted"] - ref) / search.M
summary = summary.sort_values("loglik_submitted", ascending=False)
summary["rank"] = np.arange(1, len(summary) + 1)
save_csv(out / "image_metrics" / "summary.csv", summary)
plots.readable(summary.round(3))

# %% [markdown]
# ## Ranking by ensemble log-likelihood (Fig. 3D)
# Per image, relative to the true GT ensemble (0); higher is better. The GT ensemble should
# rank first: it generated the images. Read the margins with the search's limits in mind:
# images downsampled to `box_ds` pixels carry nothing beyond their Nyquist frequency (printed
# below), so the low-pass mock's 14–22 Å filters are only partly visible at 24 px; noise in the
# maps and wrong populations (middle mode, bimodal) show clearly. The Sampled GT control *is*
# made of GT maps (80 of them, with their groups' populations), so it should come close to the
# full GT ensemble; the Reconstructed mock and the mocks made from it (other grid, flipped
# hand: identical after preprocessing) should trail the controls. The numbers of this run are
# stated under the figure.

# %%
print(f"image Nyquist after downsampling: {2 * px:.1f} Å")
gt_rank = summary.loc["GT ensemble", "rank"]
above = [f"{k} ({d:+.3f} nat)" for k, d in summary["delta_per_image_vs_gt"].items() if summary.loc[k, "rank"] < gt_rank]
print(f"GT ensemble: rank {gt_rank} of {len(summary)}" + ("; above it: " + ", ".join(above) if above else ""))
fig, ax = plt.subplots(figsize=(6.5, 4))
d = summary["delta_per_image_vs_gt"].sort_values()
ax.barh(d.index, d.values, color=[plots.colors(list(sets))[k] for k in d.index])
ax.axvline(0, c="k", lw=0.8)
ax.set_xscale("symlog", linthresh=0.1)  # linear within ±0.1 nat, logarithmic beyond
for y, v in enumerate(d.values):
    ax.text(v, y, f" {v:+.3f} ", va="center", ha="right" if v < 0 else "left", fontsize=9)
ax.set_xlim(min(d.min() * 8, -1), 0.3)
ax.set_xlabel("ensemble log-likelihood per image, relative to the GT ensemble (nats, symlog)")
ax.set_title("Image likelihood (submitted populations)")
fig.tight_layout()

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story_images.likelihood(summary, search.M))

# %% [markdown]
# ## Best cross-correlation per image (Fig. 2C/2F)
# For each image, the best normalised cross-correlation over all maps and poses of a set.

# %%
long = pd.concat([pd.DataFrame({"set": lab, "best CC": r["best_cc"].max(1)}) for lab, r in res.items()])
fig, ax = plt.subplots(figsize=(7, 4.5))
sns.violinplot(data=long, y="set", x="best CC", ax=ax, color="0.85", inner="quartile", cut=0)
ax.set_title("Best cross-correlation of each particle image")
fig.tight_layout()

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
ref_ll = im.per_image_loglik(res["GT ensemble"]["logp_integrated"], sets["GT ensemble"].populations)
ref_cc = res["GT ensemble"]["best_cc"].max(1)  # per image: best over maps and poses
prow = []
for lab, r in res.items():
    if lab != "GT ensemble":
        for metric, d, tol in (("loglik", ref_ll - im.per_image_loglik(r["logp_integrated"], sets[lab].populations), 1e-4),
                               ("best_cc", ref_cc - r["best_cc"].max(1), 1e-6)):  # tol: float noise
            prow.append({"label": lab, "metric": metric, **im.paired_power(d, 2.0, n_stack, tol), "n_stack": n_stack})
power = pd.DataFrame(prow).set_index(["label", "metric"])
save_csv(out / "image_metrics" / "power.csv", power.reset_index())
wide = power[["mean", "z", "images_needed", "verdict"]].unstack("metric").swaplevel(axis=1).sort_index(axis=1, level=0)
display(wide.style.format({c: "{:.3g}" for c in wide.columns if c[1] != "verdict"}))
fig, ax = plt.subplots(figsize=(6.5, 4))
zt = power.z.unstack("metric").reindex(columns=["loglik", "best_cc"])
y = np.arange(len(zt))
for j, (metric, name) in enumerate((("loglik", "log-likelihood"), ("best_cc", "best CC"))):
    ax.barh(y + (j - 0.5) * 0.4, zt[metric].clip(-1e3, 1e3), height=0.4, label=name)
for x in (-2, 2):
    ax.axvline(x, c="k", ls="--", lw=0.8)
ax.set_yticks(y, zt.index)
ax.set_xscale("symlog", linthresh=5)
ax.set_xlabel("z = mean Δ / standard error (GT ensemble − submission; symlog, ±2 dashed)")
ax.set_title(f"Does the GT ensemble beat each submission on {search.M} images?", fontsize=10)
ax.legend(fontsize=9)
fig.tight_layout()

# %% tags=["remove-input"]
reused = {lab: r["same_as"] for lab, r in res.items() if "same_as" in r}
same = {k for k, v in reused.items() if np.array_equal(sets[k].populations, sets[v].populations)}  # maps and populations
Markdown(story_images.power_verdicts(power.reset_index(), search.M, n_stack, reused, same, box_ds))

# %% [markdown]
# ## Likelihood-optimised populations (Fig. S6)
# Weights that maximise the ensemble likelihood (EM) against the submitted populations, maps in
# their submitted order. With a few dozen images the maximum-likelihood weights are sparse: EM
# concentrates mass on the maps that best explain individual images, so read the optimised
# curve for *where* mass goes (e.g. the middle-mode mock's images are explained by maps at both
# ends), not for its exact shape.

# %%
labs = list(sets)
fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.2))
for lab, a in panels.items():
    a.plot(sets[lab].populations, ".-", ms=3, label="submitted")
    a.plot(res[lab]["w_opt"], ".-", ms=3, label="likelihood-optimised")
    a.set_title(lab, fontsize=9)
for a in axes[-1]:
    a.set_xlabel("map index")
for a in axes[:, 0]:
    a.set_ylabel("population")
axes.flat[0].legend(fontsize=9)
fig.suptitle("Populations: submitted vs optimised on the images")
fig.tight_layout()

# %% [markdown]
# ## What the full setting costs
# This run compared every image with every map at every grid pose plus the refinement's
# poses; the rate below (images × maps × poses per second on this machine) gives the cost of a
# larger run: all images of the stack, and at the full box (the band, hence the cost per pose,
# grows with the box², and a finer box needs a finer grid — a lower bound).

# %%
total = sum(r["seconds"] for r in res.values())
n_comp = search.M * sum(sets[k].n_maps for k, r in res.items() if "same_as" not in r) * search.n_evaluated
rate = n_comp / total
per_sub = len(parts.images) * 80 * search.n_evaluated / rate
print(f"{n_comp:.3g} image-map-pose comparisons in {total:.0f} s = {rate:.3g} per second")
print(f"one 80-map submission against all {len(parts.images)} images, these settings: ~{per_sub / 60:.0f} min; "
      f"at the full {parts.images.shape[-1]}² px box: ≥ ~{per_sub * (parts.images.shape[-1] / box_ds) ** 2 / 3600:.1f} h")
