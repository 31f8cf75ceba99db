"""hetbook helpers: the kernels and I/O that the analysis notebooks call.

One module per concern (README "Layout" lists the rest of the repository):

``backend``          device choice (CUDA when present, else CPU), memory-sized chunks, progress bars
``paths``            repository-relative paths, atomic writes, result files
``errors``           :class:`InputError`, the one exception for bad user input
``catalogue``        which family of questions each metric answers (volume, transport, subspace, distribution, image)
``schema``           pydantic schemas of the challenge config; notices of automatic fixes
``manifest``         the run manifest, staged chapter outputs, per-submission failures
``mapset``           :class:`MapSet`, the one data model for a set of maps
``io``               readers for the challenge formats (MRC, populations, configs, GT, STAR)
``fourier``          centred FFTs, shells, power spectra, B-factors, resampling, filters
``geometry``         Euler angles (RELION ZYZ), rotation grids, rotating volumes
``preprocess``       crop/pad, resample, flip, normalise, equalise spectra
``align``            global rotational alignment of a submission to a reference
``nyquist``          the Nyquist rule: no resolution finer than 2 × a set's native voxel size
``volume_metrics``   batched FSC (mask-corrected too), resolution and GT x submission distance matrices
                     (one GT pass for all submissions: ``distance_matrices_many``)
``transport``        Gromov-/Procrustes-Wasserstein distances between top-k voxel clouds (CPU, POT)
``subspace``         PCA, percentage of captured variance, common subspace
``distribution``     EMD / KL between GT and submitted or optimised populations
``leaderboard``      ranks that respect error bars (ties within uncertainty), metrics that separate
``headline``         the front page's leaderboard sentence, written from chapter 8's tables
``calibration``      GT-free scores against the GT-based ranking: Spearman with a bootstrap interval, misordered pairs
``projection``       Fourier-slice projector and CTF
``reconstruct``      Wiener-filtered direct Fourier reconstruction from particle images (the demo's mocks)
``image_metrics``    pose search, image cross-correlation and marginal likelihood
``simulate``         the adenylate-kinase demo data set (STAR files RELION/cryoDRGN/cryoSPARC read)
``robustness``       controlled degradations of a submission and every metric's response (chapter 7)
``verdicts``         the robustness verdicts: paired tests per level, Holm over a degradation's levels
``adapters``         method outputs (cryoDRGN analyze, volume series + per-particle labels) → MapSet
``plots``/``widgets`` figures and kernel-free interactive widgets for the book
``distributed``      the volume metrics' GT chunks on a Dask cluster (scale-out)
``run``              the papermill runner (``python -m helpers.run``)
"""
__version__ = "0.1.0"
