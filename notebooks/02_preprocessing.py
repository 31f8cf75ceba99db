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
data_dir = "data/demo"  # folder with gt/ and submissions/ (repo-relative or absolute)
results_dir = "results/demo"  # this run's results
config = "submissions/submission_config.json"  # challenge config, relative to data_dir
align_box = 32  # box (voxels) the alignment search works at
align_directions = 300  # viewing directions of the coarse SO(3) grid
align_inplane = 24  # in-plane angles of the coarse grid

# %% [markdown]
# # 2. Preprocessing: onto the GT grid and frame
#
# **Question.** Are all submissions on the same grid, hand and orientation as the GT, so that
# map-to-map metrics compare like with like?
#
# **What you will learn.**
#
# - whether every submission ends up on the GT's box, voxel size, hand and orientation before any
#   metric compares maps
# - how accurately the global alignment recovers a known rotation, and which alignments are flagged
#   as doubtful
# - which submissions, if any, could not be preprocessed, and why
#
# ```{admonition} Method, inputs and outputs
# :class: dropdown
# **Inputs.** The challenge config (`gt` entry first, then one entry per submission: folder of
# MRC maps, `populations.txt`, box, pixel size, optional `native_pixel_size`, `flip`, `align`). **Outputs.**
# `preprocessed/<label>.npz` (a {class}`MapSet <helpers.io.mapset.MapSet>` per submission: maps on
# the GT grid, populations, voxel size, the native voxel size the method made them at (kept
# through the regridding: it bounds every resolution reported later), provenance) and
# `preprocessing_report.csv` (columns: label, input_box, input_voxel_A, native_voxel_A (Å; the
# config's `native_pixel_size` where the maps were resampled before submission, else
# input_voxel_A), flip, align, score, rotation_error_deg (against the mock's
# recorded truth), seconds). **Run time.** Seconds per aligned submission.
#
# Steps (each a tested function in `helpers.kernels.preprocess` / `helpers.kernels.align`): crop/pad to the GT's
# physical box, Fourier-resample to the GT box (odd sizes handled — the published code loses a
# voxel), flip the hand where the config says so, and align globally: one rotation for the whole
# series (found on the mean map, thresholded at the 93rd percentile, downsampled) by a
# coarse-to-fine SO(3) search.
# ```

# %%
from IPython.display import Markdown

from helpers.pipeline.chapters import preprocessing as ch
from helpers.report import figures_data, page, plots, story
from helpers.core.paths import resolve

page.setup()
entries, gt_box, gt_voxel, reference = ch.load_config(resolve(data_dir), config)
print(f"GT grid: {gt_box}³ at {gt_voxel} Å; {len(entries)} submissions")

# %%
report, raw, sets, failed = ch.preprocess_all(entries, gt_box, gt_voxel, reference, resolve(results_dir),
                                              dict(box_ds=align_box, n_directions=align_directions, n_inplane=align_inplane))
if len(failed):
    display(failed)  # noqa: F821 (IPython)
print(f"{len(sets)} of {len(entries)} submissions preprocessed" + (f"; {len(failed)} failed (listed above)" if len(failed) else ""))

# %% tags=["remove-input"]
Markdown(story.preprocessing(report, len(entries), gt_box, gt_voxel, len(failed), ch.rotation_angles(sets)))

# %%
plots.readable(report.drop(columns=["shift_in", "shift_out", "corr_with_reference"], errors="ignore").round(3))  # shifts: in the CSV

# %% [markdown]
# ## Before and after
# Central z-sections of the first map of the submissions that needed work (an alignment whose
# score is below 0.8 is flagged `alignment_doubtful` in the report and on the terminal: compare
# its two rows here before trusting its metrics). The "Rotated" mock
# was rotated by a known rotation when it was made; the recovered rotation composed with the
# true one should be close to the identity (`rotation_error_deg` above).

# %%
figures_data.before_after(ch.changed(sets, raw, gt_box, gt_voxel), raw, sets);

# %% [markdown]
# Alignment accuracy on the rotated mock (it must come within 3° of the recorded rotation) and
# its cost on this machine:

# %%
report[report["align"]][["label", "score", "rotation_error_deg", "seconds"]].round(3) if "rotation_error_deg" in report else report[report["align"]]
