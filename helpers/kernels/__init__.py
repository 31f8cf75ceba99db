"""kernels — the numerics and the metrics, batched torch code that runs on CUDA when present and on
the CPU otherwise. Two tiers: the numerics (``fourier`` FFTs, shells, resampling; ``geometry``
Euler angles and rotations; ``projection`` the Fourier-slice projector and CTF; ``normalise``;
``nyquist``) and, above them, the metric kernels (``volume_metrics`` the GT × submission distance
matrices; ``fsc`` FSC curves, mask correction and resolution; ``gt_pass`` many submissions in one
pass over the GT; ``gt_cache`` the GT cache and chunk sizes; ``volume_input`` degenerate-map checks
and the solvent background; ``transport``; ``subspace``; ``distribution``;
``image_metrics``; ``verdicts``) with the preprocessing that brings a submission onto the GT grid
(``preprocess``, ``align``). Kernels take arrays, not files: ``io`` reads, ``pipeline`` orchestrates."""
