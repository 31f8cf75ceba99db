"""Per-image FSC and AU-FSC: CryoBench's score of what a method says about each particle.

For particle i a method gives a map (a decoder evaluated at the particle's latent, or the map of
its class / state in a volume series) and the data set knows the particle's GT map. The per-image
FSC is the FSC of those two maps; its summary is the **AU-FSC**, the area under |FSC| against
spatial frequency (cycles/pixel) from 0 to the last shell, with FSC(0) = 1 (Jeon et al. 2024).

Shapes: maps (M, N, N, N) real space; ``gt_index`` (n,) the GT map of each particle; ``map_index``
(n,) the method's map of each particle (None: one map per particle, M = n). Curves (n, S) over
shells 1..S; frequencies in cycles/pixel (Å⁻¹ = cycles/pixel / voxel size).

Conventions (``convention=``):

* ``"hetbook"`` (default): shells round(|k|) = 1..N/2 (:mod:`helpers.kernels.fsc`), the mask
  applied after each map's solvent background is removed, a shell where either map has no power
  is NaN (no signal) and counts as 0 in the AU-FSC; the area runs over 0–0.5 cycles/px (a perfect
  map scores 0.5); resolution with the crossing interpolated (:func:`helpers.kernels.fsc.resolution`).
* ``"cryobench"`` (their ``metrics/fsc/utils/volumes.py`` and ``imgfsc_cryodrgn.py``): integer
  shells i − 1 ≤ |k| < i for i = 1..N/2 − 1, shell i placed at frequency i/N, so the area runs
  over 0 … (N/2 − 1)/N (a perfect map scores 0.5 − 1/N); |FSC| of every shell; resolution = 1 /
  the frequency of the first shell below the threshold (no interpolation), 2 voxels when none is.
  One difference is kept: CryoBench's code sets FSC = 1 in a shell where a map has exactly zero
  power; here such a shell (no signal) counts 0, as in hetbook's convention.

Each map is Fourier transformed once: the GT maps the particles use once, the method's maps once
(a volume series' used maps, or each per-particle map in streamed batches of ``batch``); the pairs'
curves are one elementwise product and per-shell sums of the shell-sorted spectra.
"""
from __future__ import annotations

import numpy as np
import torch

from helpers.core.backend import device, progress
from helpers.kernels.fourier import radius_grid
from helpers.kernels.fsc import ShellLayout, _paired, _spectra, resolution
from helpers.kernels.volume_input import subtract_background

CONVENTIONS = ("hetbook", "cryobench")


def shell_layout(n: int, convention: str = "hetbook", dev=None) -> ShellLayout:
    """The FSC shells of a box ``n`` under ``convention`` (see the module docstring)."""
    if convention == "hetbook":
        return ShellLayout.make(n, dev)
    if convention == "cryobench":
        return ShellLayout.make(n, dev, shells=torch.floor(radius_grid(n, dev)).long() + 1, last=n // 2 - 1)
    raise ValueError(f"convention must be one of {CONVENTIONS}, not {convention!r}")


def frequencies(n: int, convention: str = "hetbook") -> np.ndarray:
    """(S + 1,) cycles/pixel of FSC(0) = 1 and of shells 1..S."""
    last = n // 2 if convention == "hetbook" else n // 2 - 1
    return np.arange(last + 1) / n


def _spectra_of(maps, mask, layout: ShellLayout, background: bool, dev):
    if mask is not None and background:
        maps = subtract_background(maps, mask, dev)
    return _spectra(maps, mask, layout, dev)


def per_image_fsc(maps, gt_maps, gt_index, map_index=None, mask=None, convention: str = "hetbook",
                  batch: int = 64, background: bool = True, dev=None, desc: str = "per-image FSC",
                  gt_cache: dict | None = None) -> np.ndarray:
    """FSC curves (n, S) float64 of each particle's map against its GT map (see the module
    docstring). ``maps`` and ``gt_maps`` are indexable stacks (arrays, memory maps, or anything
    whose slices are arrays: per-particle maps are read ``batch`` at a time); ``mask`` (N, N, N)
    real-space weights applied to both maps (None: no mask, as CryoBench's image FSC).
    ``gt_cache``: a dict shared by calls that score several methods on the same particles and GT,
    so that each GT map is transformed once per convention and mask, not once per method."""
    dev = dev or device()
    gt_index = np.asarray(gt_index, dtype=np.int64)
    n = len(gt_index)
    box = int(np.shape(gt_maps[0])[-1])
    layout = shell_layout(box, convention, dev)
    if np.shape(maps[0])[-1] != box:
        raise ValueError(f"the method's maps are {np.shape(maps[0])[-1]}³ and the GT maps {box}³: resample one first")
    # each GT map the particles use, transformed once
    used_g, g_of = np.unique(gt_index, return_inverse=True)
    key = (convention, None if mask is None else id(mask), background, used_g.tobytes())
    if gt_cache is not None and key in gt_cache:
        fg, pg = gt_cache[key]
    else:
        fg, pg = _stack_spectra(gt_maps, used_g, mask, layout, background, dev, batch)
        if gt_cache is not None:
            gt_cache[key] = (fg, pg)
    out = np.empty((n, len(layout.bounds)))
    if map_index is not None:  # a volume series: each used map once, then the distinct (map, GT) pairs
        map_index = np.asarray(map_index, dtype=np.int64)
        if len(map_index) != n:
            raise ValueError(f"map_index has {len(map_index)} entries for {n} particles")
        used_m, m_of = np.unique(map_index, return_inverse=True)
        fm, pm = _stack_spectra(maps, used_m, mask, layout, background, dev, batch)
        pairs, pair_of = np.unique(np.stack([m_of, g_of], 1), axis=0, return_inverse=True)
        curves = np.empty((len(pairs), out.shape[1]))
        for a in range(0, len(pairs), batch):
            m, g = (torch.as_tensor(pairs[a:a + batch, j], device=dev) for j in (0, 1))
            curves[a:a + batch] = _paired((fm[m], pm[m]), (fg[g], pg[g]), layout)
        return curves[pair_of.reshape(-1)]
    if len(maps) != n:
        raise ValueError(f"{len(maps)} maps for {n} particles: give one map per particle or a map_index")
    for a in progress(range(0, n, batch), desc=desc, unit="batch"):
        g = torch.as_tensor(g_of[a:a + batch], device=dev)
        sm = _spectra_of(np.asarray(maps[a:a + batch]), mask, layout, background, dev)
        out[a:a + batch] = _paired(sm, (fg[g], pg[g]), layout)
    return out


def _stack_spectra(maps, idx, mask, layout, background, dev, batch):
    """Shell-sorted spectra and shell powers of maps[idx], transformed ``batch`` at a time."""
    parts = [_spectra_of(np.stack([np.asarray(maps[int(i)]) for i in idx[a:a + batch]]), mask, layout, background, dev)
             for a in range(0, len(idx), batch)]
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])


def au_fsc(curves, convention: str = "hetbook") -> np.ndarray:
    """Area under |FSC| (trapezoid rule) against cycles/pixel, FSC(0) = 1 prepended; NaN shells
    (no signal) count as 0. curves (..., S) → (...); a perfect map: 0.5 (hetbook), 0.5 − 1/N
    (cryobench)."""
    c = np.abs(np.nan_to_num(np.asarray(curves, dtype=np.float64), nan=0.0))
    n = 2 * c.shape[-1] if convention == "hetbook" else 2 * (c.shape[-1] + 1)
    c = np.concatenate([np.ones(c.shape[:-1] + (1,)), c], -1)
    f = frequencies(n, convention)
    return ((c[..., 1:] + c[..., :-1]) * np.diff(f) / 2).sum(-1)


def image_resolution(curves, voxel_size: float, threshold: float, convention: str = "hetbook",
                     native_voxel_size: float | None = None) -> np.ndarray:
    """Resolution (Å) of per-image FSC curves at ``threshold`` under ``convention``;
    ``native_voxel_size`` (hetbook's convention): no finer than twice it (the maps' own Nyquist)."""
    c = np.asarray(curves, dtype=np.float64)
    if convention == "hetbook":
        return resolution(c, voxel_size, threshold, native_voxel_size=native_voxel_size)
    f = frequencies(2 * (c.shape[-1] + 1), "cryobench")[1:]
    below = np.nan_to_num(c, nan=0.0) < threshold
    first = np.argmax(below, -1)
    return np.where(below.any(-1), voxel_size / f[first], 2.0 * voxel_size)
