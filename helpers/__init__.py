"""hetbook helpers: everything the analysis notebooks call, in seven layers.

A subpackage imports only from itself or the layers below it (function-local imports included;
``pyproject.toml``'s import-linter contracts, checked by ``tests/test_architecture.py``, with no
import cycle anywhere). Where to find things, top to bottom:

**report** — what the book shows: ``story``, ``story_scores``, ``story_images``, ``story_summary``
(each chapter's result sentences, from its tables), ``headline`` (the front page), ``leaderboard``
(ranks that respect error bars, family ranks, defect checks), ``calibration`` (GT-free scores
against the GT ranking), ``plots``, ``widgets`` (kernel-free browsers), ``figures_data``,
``figures_volume``, ``figures_robustness``, ``figures_summary`` (each chapter's figures), ``page``
(a chapter's set-up: figure style, warnings as notes).

**pipeline** — running chapters: ``run`` (the papermill runner: make-like reruns, ``--status``),
``cli`` (the ``hetbook`` command), ``params`` (the run parameters' model), ``fingerprint`` (which
chapters are stale, and why), ``demo_data``, ``distributed`` (Dask), ``robustness`` (chapter 7's
study), ``matched`` (the data-budget-matched control), ``chapters`` (one function per chapter's
computation: the notebook calls it, the tests call it without the notebook).

**methods** — ``adapters``: a method's native output (cryoDRGN, volume series + labels) → MapSet.

**datagen** — the AdK demo data set: ``simulate`` (``make_dataset``), ``ensemble`` (GT conformations,
populations, maps), ``mocks`` (the mock submissions), ``particles`` (simulated images, STAR),
``reconstruct`` (Wiener direct Fourier reconstruction).

**kernels** — batched torch numerics, CUDA when present: ``volume_metrics`` (GT × submission
distance matrices: L2, correlation, BioEM, FSC distance, resolution, sliced Wasserstein), ``fsc``
(FSC curves, mask correction, resolution), ``gt_pass`` (every submission in one GT pass),
``gt_cache`` (GT cache, chunk sizes), ``volume_input`` (degenerate maps, solvent background),
``transport`` (Gromov / Procrustes Wasserstein), ``subspace`` (PCA, PCV), ``distribution`` (EMD,
KL, optimised populations), ``image_metrics`` (pose search, likelihood, best CC), ``verdicts``
(paired tests, Holm),
``preprocess`` / ``align`` (onto the GT grid and frame); beneath them ``fourier``, ``geometry``,
``projection``, ``normalise``, ``nyquist``.

**io** — the challenge's formats (``mrc``, ``submission``, ``gt``, ``particles``), ``mapset``
(:class:`~helpers.io.mapset.MapSet`, the one data model: maps, populations, voxel size, label),
``schema``, ``labels``, ``safe_pickle``, ``manifest``.

**core** — ``catalogue`` (every metric's key, label, unit, direction, family and meaning, defined
once), ``backend`` (device, memory-sized chunks, progress bars), ``errors``, ``paths``, ``dask_tasks``.
"""
__version__ = "0.1.0"
