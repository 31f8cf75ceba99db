# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters", "hide-input"]
data_dir = "data/demo"  # folder with gt/, submissions/, particles/ (repo-relative or absolute)
results_dir = "results/demo"  # where this run's result files go
voxel_size = 2.146  # Å; the GT's voxel size
n_browse = 24  # number of GT maps in the slice browser

# %% [markdown]
# # 1. The demo data set: adenylate kinase opening
#
# **Question.** What does the ground truth (GT) look like — the motion, its population, the
# particle images — that every later chapter scores submissions against?
#
# **What you will learn.**
#
# - what the GT motion looks like: how adenylate kinase's maps change from the closed to the open
#   end along MD-PC1
# - how the GT population is spread along the motion — the distribution that the distribution
#   metrics (chapter 5) ask submissions to reproduce
# - what the particle images look like at the simulated signal-to-noise ratio: the data the image
#   metrics (chapter 6) score submissions against
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
# **Inputs.** `gt/maps_gt.npy`, `gt/metadata.csv`, `gt/mask.mrc`, `particles/particles.star`
# (made by `helpers.datagen.simulate` from real AdK transition paths; see {doc}`../data`).
# **Outputs.** `results/…/data_summary.json`. **Run time.** Seconds.
# ```

# %%
import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers import io
from helpers.report import figures_data, page, plots, story, widgets
from helpers.io.labels import count_particles
from helpers.core.paths import resolve, save_json

page.setup()
data = resolve(data_dir)
out = resolve(results_dir)
gt = io.read_gt((gtf := io.find_gt(data))["maps"], gtf["metadata"], voxel_size)
mask = io.read_mask(gtf["mask"], gt.box)
manifest = json.loads((data / "manifest.json").read_text()) if (data / "manifest.json").exists() else {}
print(gt, "| mask voxels with weight > 0.5:", int((mask > 0.5).sum()))

# %%
parts = io.read_particles(data / "particles/particles.star")
# the demo also ships the noise-free images and its simulation settings; real data has neither
cfile, sfile = data / "particles/clean_examples.mrcs", data / "particles/simulation.json"
clean = io.read_mrc(cfile, allow_2d=True)[0] if cfile.is_file() else None
sim = json.loads(sfile.read_text()) if sfile.is_file() else {}

tab = parts.table
summary = {
    "n_gt_maps": gt.n_maps, "box": gt.box, "voxel_size_A": gt.voxel_size,
    "pc1_range_A": [float(gt.pc1.min()), float(gt.pc1.max())],
    "n_particles": int(len(tab)), "snr": sim.get("snr"),
    "n_heldout": count_particles(data / "particles/heldout.star") if (data / "particles/heldout.star").is_file() else None,
    "defocus_range_A": [float(tab.rlnDefocusU.min()), float(tab.rlnDefocusU.max())],
    "md_pc1_variance_fraction": manifest.get("md_pc1_variance_fraction"),
}
save_json(out / "data_summary.json", summary)
pd.Series(summary)

# %% tags=["remove-input"]
from IPython.display import Markdown

Markdown(story.data_summary(summary, gt.pc1, gt.populations))

# %% [markdown]
# ## The motion along MD-PC1
# The GT maps are ordered by their coordinate on the first principal component of the atomic
# motion (MD-PC1, Å). Closed AdK is at negative PC1, open at positive PC1.

# %%
order = np.argsort(gt.pc1)
picks = order[[0, len(order) // 2, -1]]
fig, axes = plt.subplots(2, 3, figsize=(9, 6))
for j, i in enumerate(picks):
    plots.show_map(np.asarray(gt.maps[i]), gt.voxel_size, f"PC1={gt.pc1[i]:.0f} Å", axes=axes[:, j])
fig.suptitle("GT maps at the closed end, the middle and the open end of the motion")
fig.tight_layout()

# %% [markdown]
# Move the slider to browse GT maps along MD-PC1 (central z-section and z-projection).

# %%
browse = order[np.linspace(0, len(order) - 1, min(n_browse, len(order))).astype(int)]


widgets.slider_browser(widgets.map_frames(gt.maps, gt.voxel_size, browse, lambda k: f"GT map {browse[k]}: PC1 = "
                                          f"{gt.pc1[browse[k]]:.1f} Å, population = {gt.populations[browse[k]]:.4f}"),
                       description="along PC1")

# %% [markdown]
# ## The population along the motion
# Three Gaussian modes along MD-PC1, the middle one less populated — the challenge's design.

# %%
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(gt.pc1[order], gt.populations[order], ".-")
ax.set_xlabel("MD-PC1 (Å)")
ax.set_ylabel("population per GT map")
ax.set_title(f"GT population ({gt.n_maps} maps)")
fig.tight_layout()

# %% [markdown]
# ## Particle images
# Projections of GT maps drawn by population, with random (Haar) orientations, a CTF (RELION
# sign) and white noise at the stated SNR.

# %%
shown = ([("clean", clean)] if clean is not None else []) + [(f"SNR {sim['snr']}" if "snr" in sim else "particles", parts.images)]
figures_data.particle_rows(shown, len(parts.images), parts.images.shape[-1], parts.pixel_size);
