"""kernels — the numerics and the metrics, batched torch code that runs on CUDA when present and on
the CPU otherwise. Two tiers: the numerics (``fourier`` FFTs, shells, resampling; ``geometry``
Euler angles and rotations; ``projection`` the Fourier-slice projector and CTF; ``normalise``;
``nyquist``) and, above them, the metric kernels (``volume_metrics`` FSC, resolution and the
GT × submission distance matrices; ``transport``; ``subspace``; ``distribution``;
``image_metrics``; ``verdicts``) with the preprocessing that brings a submission onto the GT grid
(``preprocess``, ``align``). Kernels take arrays, not files: ``io`` reads, ``pipeline`` orchestrates."""
