"""Normalising maps before they are compared: the median z-score (the challenge's, with numpy's
or torch's median), unit norm, a B-factor, and power-spectrum equalisation. Arrays in, tensors
out; maps (n, N, N, N), masks (N, N, N) weights in [0, 1]."""
from __future__ import annotations

import math

import numpy as np
import torch

from helpers.kernels.fourier import apply_bfactor, apply_radial_filter, as_tensor, radial_power_spectrum


BRACKET_MIN = 1 << 16  # rows at least this long take the bracketing path of _numpy_median on a CPU


def _numpy_median(x: torch.Tensor) -> torch.Tensor:
    """Row medians of (n, m) with numpy's convention (mean of the two middle values for even m),
    exact. Long rows on a CPU (m ≥ ``BRACKET_MIN``, e.g. the solvent of a 128³ map) are bracketed
    first (:func:`_bracketed_median`, 2–4× faster than a full selection); others by selection."""
    if x.device.type == "cpu" and x.shape[1] >= BRACKET_MIN:
        return _bracketed_median(x)
    return _selected_median(x)


def _selected_median(x: torch.Tensor) -> torch.Tensor:
    """:func:`_numpy_median` by selection rather than sorting: torch's lower median, then the
    next value up."""
    lo = x.median(dim=1).values
    if x.shape[1] % 2:
        return lo
    n_le = (x <= lo[:, None]).sum(1)
    nxt = x.masked_fill(x <= lo[:, None], float("inf")).min(1).values
    hi = torch.where(n_le > x.shape[1] // 2, lo, nxt)  # a tie at the lower middle: both middles equal
    return ((lo.double() + hi.double()) / 2).to(x.dtype)


def _bracketed_median(x: torch.Tensor, sample: int = 1 << 14, seed: int = 0) -> torch.Tensor:
    """Exact numpy-convention row medians of a long (n, m) CPU tensor: the two middle order
    statistics k_lo = (m−1)//2 and k_hi = m//2 are bracketed by the sample quantiles ±4σ of a
    random sample of ``sample`` values per row, the values in the bracket are counted and
    selected (~3 % of the row), and the middle ones found among them. A row whose bracket
    misses the middle (probability ~1e-4) falls back to :func:`_selected_median`; a bracket of
    one repeated value (a solvent of exact zeros) is that value."""
    n, m = x.shape
    k_lo, k_hi = (m - 1) // 2, m // 2
    gen = torch.Generator().manual_seed(seed)
    picks = x[:, torch.randint(m, (sample,), generator=gen)].sort(1).values
    centre = int((k_lo + 0.5) * sample / m)
    half = 2 * int(math.sqrt(sample)) + 2  # 4σ of a sample rank: σ = √(s·½·½)
    lo = picks[:, max(0, centre - half)].contiguous()
    hi = picks[:, min(sample - 1, centre + half)].contiguous()
    below = (x < lo[:, None]).sum(1, dtype=torch.int32)  # (an int32 count of a bool is ~8× faster)
    inside = (x >= lo[:, None]) & (x <= hi[:, None])
    count = inside.sum(1, dtype=torch.int32)
    ok = (below <= k_lo) & (below + count > k_hi)
    out = torch.empty(n, dtype=x.dtype)
    for i in range(n):
        if not bool(ok[i]):
            out[i] = _selected_median(x[i:i + 1])[0]
        elif bool(lo[i] == hi[i]):
            out[i] = lo[i]
        else:
            v = x[i][inside[i]]
            a = v.kthvalue(k_lo - int(below[i]) + 1).values
            b = a if k_hi == k_lo else v.kthvalue(k_hi - int(below[i]) + 1).values
            out[i] = ((a.double() + b.double()) / 2).to(x.dtype)
    return out


def median_zscore(maps, mask=None, convention: str = "numpy") -> torch.Tensor:
    """Per-map (x − median)/std over the voxels with mask > 0.5 (all voxels if no mask).

    ``convention="numpy"``: median averages the two middle values, std with n−1;
    ``"published"``: torch's lower median (the challenge code), std with n−1. Voxels outside
    the mask are returned unchanged.
    """
    x = as_tensor(maps)
    flat = x.reshape(x.shape[0], -1)
    sel = flat if mask is None else flat[:, as_tensor(mask).flatten() > 0.5]
    if convention == "published":
        med = sel.median(dim=1).values
    elif convention == "numpy":
        med = _numpy_median(sel)
    else:
        raise ValueError(f"unknown convention {convention!r}")
    # std of the maps scaled to max |x| = 1: CUDA reduces float32 in float32, and x² of maps in
    # other units (1e30) overflows there (the CPU accumulates in float64 and would not notice)
    scale = sel.abs().amax(1).clamp_min(torch.finfo(sel.dtype).tiny)
    sd = (sel / scale[:, None]).std(dim=1, unbiased=True) * scale
    return ((flat - med[:, None]) / sd[:, None]).reshape(x.shape)


def unit_norm(maps, mask=None) -> torch.Tensor:
    """Multiply by the mask weights (if given) and scale each map to unit L2 norm."""
    x = as_tensor(maps)
    if mask is not None:
        x = x * as_tensor(mask)
    n = x.reshape(x.shape[0], -1).norm(dim=1).clamp_min(1e-30)
    return x / n.reshape(-1, *([1] * (x.dim() - 1)))


def bfactor(maps, b: float, voxel_size: float) -> torch.Tensor:
    """B-factor filter ``exp(−B k²/4)``, B in Å² (B > 0 blurs, B < 0 sharpens)."""
    return apply_bfactor(maps, b, voxel_size)


def mean_power_spectrum(maps) -> np.ndarray:
    """Mean over maps of their radially averaged power spectra, shells 0 .. N//2."""
    return radial_power_spectrum(maps)[1].mean(0)


def equalise_spectra(map_sets: dict, floor: float = 1e-12) -> tuple[dict, np.ndarray]:
    """Equalise power spectra to a common shape (the paper's fix for resolution differences).

    ``map_sets``: {label: maps (n, N, N, N)}. Each set's mean radial power spectrum P_i is
    computed and divided by its total power (its *shape* S_i, summing to 1 over shells 0 … N//2);
    the common shape is the element-wise **minimum** over sets (the most pessimistic, as in the
    challenge's dev branch); every map of set i is filtered by sqrt(S_common / S_i) per shell.
    Comparing shapes, not raw spectra, makes the result independent of each set's intensity
    units: a set multiplied by 100 comes out multiplied by 100 and changes no other set (with raw
    spectra, a set in smaller units *was* the minimum and imposed its spectrum on every set —
    found by the robustness chapter). Returns ({label: filtered maps}, S_common).
    """
    spectra = {k: mean_power_spectrum(v) for k, v in map_sets.items()}
    shapes = {k: s / max(float(s.sum()), floor) for k, s in spectra.items()}
    common = np.min(np.stack(list(shapes.values())), axis=0)
    out = {}
    for k, v in map_sets.items():
        prof = np.sqrt(common / np.maximum(shapes[k], floor))
        prof = np.append(prof, 0.0)  # corners beyond Nyquist
        out[k] = apply_radial_filter(v, torch.as_tensor(prof))
    return out, common
