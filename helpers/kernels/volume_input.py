"""What the volume metrics ask of their input maps, and the solvent background they remove.

Maps are (n, N, N, N) stacks (real space, any intensity unit), masks (N, N, N) real-space weights
in [0, 1]; the checks and backgrounds are computed on the torch device the caller picks.

**Degenerate maps** (constant inside the mask, or with non-finite voxels) raise
:class:`DegenerateMapError` naming the set and the map indices; no NaN reaches a result.

**Solvent background**: with a mask, each map's background (:func:`background_level`: the
median over the voxels where the mask weight is ≤ ``BACKGROUND_WEIGHT`` = 0.01) is subtracted
before it is multiplied by the mask weights. An offset b left in a map would be multiplied by the
mask and stamp the mask's own shape into the map, which changes every shell's FSC (a submission
``5·s + 3`` lost 20 Å of resolution on the demo, a small positive offset *gained* some).
Subtracting the background makes the FSC, FSC distance and resolution invariant to a per-map
affine change a·s + b (a > 0) of either map, and leaves a map that is zero in its solvent
unchanged. The median of the solvent (not the mean under the mask) is used because the mean under
the mask includes the molecule's own density (its removal would change the FSC of an offset-free
map) and the median is robust to noise and stray density outside the mask. z-scoring before
masking is not a fix: the subtracted median is a protein-dependent value, again stamped by the
mask.
"""
from __future__ import annotations

import torch

from helpers.core.backend import device
from helpers.core.errors import InputError
from helpers.kernels.fourier import as_tensor

BACKGROUND_WEIGHT = 0.01  # mask weights at or below this are solvent, where the background is estimated


class DegenerateMapError(InputError):
    """A map that no metric can score (constant inside the mask, or non-finite values)."""


def _check_finite(x: torch.Tensor, label: str, first_index: int = 0):
    flat = x.reshape(x.shape[0], -1)
    if bool(torch.isfinite(flat.sum(1)).all()):  # NaN and ±inf survive a sum: one cheap pass
        return                                  # (a finite sum that overflowed is checked in full)
    bad = ~torch.isfinite(flat).all(1)
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten() + first_index).tolist()
        raise DegenerateMapError(label, f"map(s) {idx[:10]} contain NaN or infinite voxels.",
                                 "Replace or drop these maps (check the file they came from).")


def _check_nonconstant(var: torch.Tensor, label: str, first_index: int = 0, scale=None):
    """var (n,): a variance-like statistic per map; zero (or ≤ 1e-12 of ``scale``) = constant."""
    lim = 0.0 if scale is None else 1e-12 * scale
    bad = var <= lim
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten() + first_index).tolist()
        raise DegenerateMapError(label, f"map(s) {idx[:10]} are constant inside the mask (no contrast to compare).",
                                 "Drop these maps, or check that the mask and the maps are on the same grid.")


def solvent_index(mask, dev=None) -> torch.Tensor | None:
    """Flat indices (int64, ascending) of the solvent voxels — mask weight ≤ ``BACKGROUND_WEIGHT``
    — where :func:`background_level` takes its median; None when there are fewer than 8 (a mask
    that covers the box). Computed once per mask by the streaming kernels and passed on as
    ``solvent=``: a boolean selection recounts its mask on every call (at 224³ on 2 CPU cores,
    ~60 ms per chunk to count and select, before the median)."""
    dev = dev or device()
    idx = torch.nonzero(as_tensor(mask, dev).flatten() <= BACKGROUND_WEIGHT).flatten()
    return idx if idx.numel() >= 8 else None


def background_level(maps, mask, dev=None, solvent: torch.Tensor | None = None) -> torch.Tensor:
    """Per-map solvent background (n,): the median of each map over the voxels whose mask
    weight is ≤ ``BACKGROUND_WEIGHT`` (numpy's median convention). With fewer than 8 such voxels
    (a mask that covers the box) the mask-weighted mean Σ w x / Σ w is used instead (still
    exact for an offset: a·s + b → a·level(s) + b). maps (n, N, N, N), mask (N, N, N);
    ``solvent``: :func:`solvent_index` of ``mask``, when the caller has it."""
    from helpers.kernels.normalise import _numpy_median

    dev = dev or device()
    x = as_tensor(maps, dev)
    flat = x.reshape(x.shape[0], -1)
    if solvent is None:
        solvent = solvent_index(mask, dev)
    if solvent is not None:
        return _numpy_median(flat[:, solvent]).float()  # a selection: float32 gives the same values as float64
    wf = as_tensor(mask, dev).clamp(0, 1).flatten().double()
    return ((flat.double() @ wf) / wf.sum().clamp_min(1e-300)).float()


def subtract_background(maps, mask, dev=None, solvent: torch.Tensor | None = None) -> torch.Tensor:
    """maps − :func:`background_level` (per map), float32 on ``dev`` (``solvent``: see there)."""
    x = as_tensor(maps, dev or device())
    return x - background_level(x, mask, x.device, solvent).reshape(-1, *([1] * (x.dim() - 1)))

