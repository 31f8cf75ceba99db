"""hetbook helpers: the kernels and I/O that the analysis notebooks call, in layers.

A module imports only from its own layer or the layers below it (function-local imports
included; ``pyproject.toml``'s import-linter contract, checked by ``tests/test_architecture.py``,
with no import cycle anywhere). Top to bottom:

**report** — what the book shows
``story``, ``story_scores``, ``story_images``, ``story_summary``  each chapter's result sentences, from its tables
``headline``         the front page's leaderboard sentence
``leaderboard``      ranks that respect error bars, family ranks with intervals, defect checks
``calibration``      GT-free scores against the GT-based ranking
``plots`` / ``widgets``  figures and kernel-free browsers (``widgets.map_frames``: the one map browser)

**pipeline** — running chapters
``run``              the papermill runner (``python -m helpers.run``: make-like reruns, ``--status``)
``fingerprint``      which chapters are done / stale / missing, and why
``demo_data``        the demo data set for a run (generation, matched control, cryoDRGN entry)
``distributed``      GT rows, transport pairs and pose searches on a Dask cluster
``robustness``       controlled degradations and every metric's response (chapter 7)
``matched``          the control with a real method's data budget

**methods** — ``adapters``: method outputs (cryoDRGN, volume series + labels) → MapSet

**datagen** — ``simulate`` (the AdK demo data set), ``reconstruct`` (Wiener direct Fourier reconstruction)

**metric kernels**
``volume_metrics``   batched FSC, resolution, GT × submission distance matrices (one GT pass)
``transport``        Gromov-/Procrustes-Wasserstein distances between top-k voxel clouds
``subspace``         PCA, percentage of captured variance, common subspace
``distribution``     EMD / KL between GT and submitted or optimised populations
``image_metrics``    pose search, image cross-correlation and marginal likelihood
``verdicts``         paired tests per level, Holm over a degradation's levels
``preprocess`` / ``align``  onto the GT grid and frame: crop/pad, resample, flip, rotational alignment

**numerics** — ``fourier`` (FFTs, shells, resampling, filters), ``geometry`` (Euler angles,
rotations), ``projection`` (Fourier-slice projector, CTF), ``normalise`` (median z-score, unit
norm, spectrum equalisation), ``nyquist`` (the Nyquist rule)

**io** — ``io`` (MRC, populations, configs, GT, STAR), ``mapset`` (:class:`MapSet`, the one data
model), ``schema`` (config schemas, notices), ``labels`` (per-particle labels), ``safe_pickle``,
``manifest`` (the run manifest, staged outputs, failures)

**core** — ``backend`` (device, memory-sized chunks, progress bars), ``errors`` (:class:`InputError`),
``paths`` (repository paths, atomic writes, staging, file-name slugs), ``catalogue`` (each
metric's family), ``dask_tasks`` (scatter-once Dask passes)
"""
__version__ = "0.1.0"
