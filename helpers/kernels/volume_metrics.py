"""Volume distances at GEMM speed: GT × submission matrices of L2, correlation, BioEM, FSC
distance, resolution and sliced Wasserstein.

gt_maps (n_gt, N, N, N), sub_maps (n_sub, N, N, N) on one grid (``voxel_size`` Å/voxel), mask
(N, N, N) real-space weights or None; every matrix is (n_gt, n_sub) float64. The FSC curves and
resolutions come from :mod:`helpers.kernels.fsc`, the input checks and the solvent background
from :mod:`helpers.kernels.volume_input`, the GT cache and chunk sizes from
:mod:`helpers.kernels.gt_cache`; :mod:`helpers.kernels.gt_pass` scores many submissions in one
pass over the GT.

* **Distances** from the *centred* sufficient statistics of each pair over the N voxels with
  mask weight > 0.5: the mean μ, V = Σ(x − μ)² (two passes, float64) and the cross products
  Σ(g − μ_g)(s − μ_s) (one GEMM). ``l2`` = V_g + V_s − 2·Cov + N(μ_g − μ_s)²: no cancellation
  between uncentred sums of squares (Σg² + Σs² − 2Σgs lost all digits for near-identical maps
  with a +1000 offset); the remaining rounding error is ≤ ~1e-15·(V_g + V_s), and values below
  it are clamped at 0. All after per-map median z-scoring of *both* sets:
  ``l2`` = Σ(g − s)²; ``corr`` = Pearson correlation (a similarity; cost = 1 − corr);
  ``bioem`` = −log P(g | s) (Cossio & Hummer 2013: g = a s + b + noise, a, b, σ marginalised;
  constant + ½ ln π; asymmetric); ``fsc`` = 1 − mean FSC over shells (optionally only shells up
  to ``fsc_cutoff_A``); ``res`` = resolution at FSC 0.5.
* **Sliced Wasserstein** (``sw``): maps as mass distributions over voxel positions (with a
  mask, the solvent background subtracted first, so an intensity offset adds no mass; negative
  values clipped to 0, each normalised to unit mass, so the scale does not matter either); for L random directions the mass is
  histogrammed along the direction (bins of one voxel) and W1 of the two 1-D distributions is
  Σ|CDF_g − CDF_s|·Δ (Å). Averaged over directions. Cost: O((n_gt + n_sub)·N³·L) to project and
  O(n_gt·n_sub·L·B) for the pairwise L1 between CDFs (B bins). Tolerant to small misalignments
  and deformations (mass moved a little costs a little); not rotation invariant.

``mode="reference"`` reproduces the published code (``challenge-metrics.md`` §6): mask
``!= 0``, torch lower median, ``corr`` = Σ g·s (a similarity), BioEM constant +π/2, resolution
by the first failing shell, no background subtraction.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from helpers.core.backend import available_bytes, device, progress, sub_step
from helpers.kernels.fourier import as_tensor
from helpers.kernels.fsc import fsc_distance, fsc_matrix, resolution
from helpers.kernels.gt_cache import _as_cache, _fingerprint, gt_step
from helpers.kernels.normalise import median_zscore
from helpers.kernels.volume_input import (DegenerateMapError, _check_finite, _check_nonconstant, solvent_index,
                                          subtract_background)

METRICS = ("l2", "corr", "bioem", "fsc", "res")
COST_METRICS = {"l2": "l2", "corr": "1 - corr", "bioem": "bioem", "fsc": "fsc", "res": "res", "sw": "sw"}


def _stats(maps, sel, normalise: str | None, convention: str, dev, dtype, label="maps", first_index=0):
    """Masked (normalised) vectors of a chunk of maps, centred: (v − μ (n, V), μ (n,), Σ(v − μ)² (n,)).
    ``sel``: the masked voxels, a boolean (N³,) selection or (faster, for many chunks) its
    ascending flat indices.

    The median z-score z = (x − median)/std is affine, so it is applied to the centred statistics
    of the raw masked voxels (v/std, (μ − median)/std, V/std²) instead of to the whole maps: the
    same numbers (std with n − 1 from the float64 V; the published convention's lower median
    with ``convention="published"``) from one selection of the masked voxels.
    Raises :class:`DegenerateMapError` for non-finite maps and maps constant inside the mask."""
    from helpers.kernels.normalise import _numpy_median

    x = as_tensor(maps, dev)
    _check_finite(x, label, first_index)
    picked = x.reshape(x.shape[0], -1)[:, sel]
    v = picked.to(dtype)
    mu = v.mean(1)
    v -= mu[:, None]
    V = (v * v).sum(1)
    N = v.shape[1]
    _check_nonconstant(V, label, first_index, scale=V + N * mu ** 2)  # Σ x² = V + N μ²
    if normalise == "median_zscore":
        if convention == "published":
            med = picked.median(dim=1).values.to(dtype)
        elif convention == "numpy":
            med = _numpy_median(picked).to(dtype)
        else:
            raise ValueError(f"unknown convention {convention!r}")
        sd = torch.sqrt(V / max(N - 1, 1))
        v /= sd[:, None]
        mu = (mu - med) / sd
        V = V / sd ** 2
    elif normalise is not None:
        raise ValueError(f"unknown normalisation {normalise!r}")
    return v, mu, V


RESIDUAL_FLOOR = 1e-12  # BioEM's T2/T3 relative to N·Ccc·Coo (N·Ccc): float64 rounding of the sums is ~1e-14


def bioem_logp(N, Co, Cc, Coo, Ccc, Coc, constant: str = "correct"):
    """BioEM log P(g | s) with g observed (Co, Coo), s calculated (Cc, Ccc), Coc = Σ g s over N
    voxels (Cossio & Hummer 2013). constant "correct" = +½ ln π; "published" = +π/2."""
    T2 = N * (Ccc * Coo - Coc ** 2) + 2 * Co * Coc * Cc - Ccc * Co ** 2 - Coo * Cc ** 2
    T3 = (N - 2) * (N * Ccc - Cc ** 2)
    tiny = torch.finfo(torch.float64).tiny
    # below 1e-12 of its terms' scale a T2 (T3) is zero within float64 rounding (an exact copy,
    # an affine copy): floored there, so such a pair scores the same however the sums were blocked
    T2 = torch.maximum(T2, RESIDUAL_FLOOR * N * Ccc * Coo).clamp_min(tiny)
    T3 = torch.maximum(T3, RESIDUAL_FLOOR * (N - 2) * N * Ccc).clamp_min(tiny)
    c = 0.5 * math.log(math.pi) if constant == "correct" else math.pi / 2
    return (c + (1 - N / 2) * math.log(2 * math.pi * math.e) + (1.5 - N / 2) * torch.log(T2)
            + (N / 2 - 2) * torch.log(T3))


def _stat_scores(gt_stats, sub_stats, N: int, want, ref: bool = False) -> dict:
    """l2 / corr / bioem blocks (n_g, n_s) from two sets of :func:`_stats` over N voxels."""
    (g, mu_g, Vg), (s, mu_s, Vs) = gt_stats, sub_stats
    cov = g @ s.T  # Σ (g − μg)(s − μs)
    out = {}
    if "l2" in want:
        # centred form: no cancellation between large uncentred sums of squares; the rounding
        # error is ~1e-15·(Vg + Vs), so tiny negative values are clamped to 0
        l2 = Vg[:, None] + Vs[None] - 2 * cov + N * (mu_g[:, None] - mu_s[None]) ** 2
        out["l2"] = l2.clamp_min(0).cpu().numpy()
    if "corr" in want:
        c = cov + N * mu_g[:, None] * mu_s[None] if ref else cov / torch.sqrt(Vg[:, None] * Vs[None]).clamp_min(1e-300)
        out["corr"] = c.cpu().numpy()  # reference mode: Σ g·s
    if "bioem" in want:
        # T2 and T3 are invariant to centring both maps: evaluate them centred (better conditioned)
        zero = torch.zeros((), dtype=cov.dtype, device=cov.device)
        lp = bioem_logp(N, zero, zero, Vg[:, None], Vs[None], cov, constant="published" if ref else "correct")
        out["bioem"] = (-lp).cpu().numpy()
    return out


def _stats_chunked(maps, sel, normalise, convention, dev, dtype, label, step: int | None = None):
    """:func:`_stats` of a whole set, ``step`` maps at a time (default :func:`sub_step`), into
    preallocated (n, V), (n,), (n,) arrays (``sel``: ascending flat indices)."""
    n_s, n = maps.shape[0], maps.shape[-1]
    v = torch.empty((n_s, sel.numel()), dtype=dtype, device=dev)
    mu, V = (torch.empty(n_s, dtype=dtype, device=dev) for _ in range(2))
    step = step or sub_step(n)
    for a in range(0, n_s, step):
        b = min(n_s, a + step)
        v[a:b], mu[a:b], V[a:b] = _stats(maps[a:b], sel, normalise, convention, dev, dtype, label, a)
    return v, mu, V


def distance_matrices(gt_maps, sub_maps, mask=None, metrics=METRICS, mode: str = "default",
                      voxel_size: float = 1.0, fsc_cutoff_A: float | None = None,
                      normalise: str | None = "median_zscore", dev=None, gt_chunk: int | None = None,
                      sw_directions: int = 64, seed: int = 0, cache=None, background: bool = True,
                      label: str = "submission", gt_label: str = "GT") -> dict:
    """GT × submission matrices for ``metrics`` (subset of l2, corr, bioem, fsc, res, sw).

    Returns {metric: (n_gt, n_sub) float64 array, "fsc_curves": (n_gt, n_sub, N//2) if fsc/res
    asked, "n_voxels": N}. ``corr`` is a similarity (use ``1 − corr`` as cost; in reference mode
    it is Σ g·s). Both sets are normalised the same way (the published code forgets the GT in
    its default mode).

    ``cache``: pass the same :class:`GTCache` (or dict) for every submission scored against
    one GT and the GT's statistics (normalised masked vectors, FSC spectra when they fit in a
    quarter of free memory, sliced-Wasserstein CDFs) are computed once, not once per
    submission; a different GT, mask or option set rebuilds them. ``background``: subtract each
    map's solvent background before masking for the FSC (default; never in reference mode).
    ``label``/``gt_label`` name the two sets in the error raised for a degenerate map.
    """
    dev = dev or device()
    n = sub_maps.shape[-1]
    ref = mode == "reference"
    sel_mask = _selection(mask, n, ref, dev)
    out: dict = {}
    want = set(metrics)
    gcache = _as_cache(cache)
    mask_print = _fingerprint(mask) if gcache is not None else None
    if want & {"l2", "corr", "bioem"}:
        out.update(_stat_matrices(gt_maps, sub_maps, sel_mask, want, mode, normalise, dev, gt_chunk,
                                  gcache, mask_print, (gt_label, label)))
    if want & {"fsc", "res"}:
        prep, use_bg = _fsc_prep(mask, sel_mask, n, ref, normalise, background, dev)
        curves = fsc_matrix(gt_maps, sub_maps, dev=dev, gt_chunk=gt_chunk, prep=prep, cache=gcache,
                            key=("fsc", mode, normalise, use_bg, mask_print), labels=(gt_label, label))
        out["fsc_curves"] = curves
        if "fsc" in want:
            out["fsc"] = fsc_distance(curves, n, voxel_size, fsc_cutoff_A)  # shells without signal count as 0
        if "res" in want:
            out["res"] = resolution(curves, voxel_size, 0.5, "published" if ref else "interpolated")
    if "sw" in want:
        out["sw"] = sliced_wasserstein(gt_maps, sub_maps, voxel_size, sw_directions, seed, mask, dev, cache)
    return out


def _selection(mask, n: int, ref: bool, dev) -> torch.Tensor:
    """(N³,) bool: the voxels the statistics use (weight > 0.5; ``!= 0`` in reference mode; all
    without a mask)."""
    if mask is None:
        return torch.ones(n ** 3, dtype=torch.bool, device=dev)
    m = as_tensor(mask, dev).flatten()
    return (m != 0) if ref else (m > 0.5)


def _stat_matrices(gt_maps, sub_maps, sel_mask, want, mode, normalise, dev, gt_chunk, gcache, mask_print,
                   labels: tuple) -> dict:
    """The l2 / corr / bioem part of :func:`distance_matrices`: {"n_voxels": N, metric: (n_gt, n_sub)}.
    The GT's statistics are taken from (or stored in) ``gcache`` when they fit in a quarter of
    free memory; ``labels``: (GT, submission) names for the errors."""
    ref = mode == "reference"
    convention = "published" if ref else "numpy"
    n, n_gt = sub_maps.shape[-1], gt_maps.shape[0]
    dtype = torch.float64
    sel_idx = torch.nonzero(sel_mask).flatten()  # (an index list: one count of the mask, not one per chunk)
    s, mu_s, Vs = _stats_chunked(sub_maps, sel_idx, normalise, convention, dev, dtype, labels[1])
    N = sel_idx.numel()
    res = {k: np.empty((n_gt, s.shape[0])) for k in want & {"l2", "corr", "bioem"}}
    gt_print = _fingerprint(gt_maps) if gcache is not None else None
    sig = (gt_print, mask_print, n, mode, normalise, str(dev))
    entry = gcache.lookup("stats", sig) if gcache is not None else None
    if entry is None:
        step = gt_chunk or gt_step(n ** 3 * 8 * 3, dev)
        bounds = [(a, min(n_gt, a + step)) for a in range(0, n_gt, step)]
        if gcache is not None and n_gt * N * 8 < 0.25 * available_bytes(dev):
            entry = gcache.store("stats", sig, bounds, [
                _stats(gt_maps[a:b], sel_idx, normalise, convention, dev, dtype, labels[0], a) for a, b in bounds])
    else:
        bounds = entry.bounds
    for ci, (a, b) in enumerate(progress(bounds, desc="distances (GT chunks)")):
        g, mu_g, Vg = entry.parts[ci] if entry is not None else _stats(
            gt_maps[a:b], sel_idx, normalise, convention, dev, dtype, labels[0], a)
        for m, v in _stat_scores((g, mu_g, Vg), (s, mu_s, Vs), N, want, ref).items():
            res[m][a:b] = v
    return {"n_voxels": N, **res}


def _fsc_prep(mask, sel_mask, n: int, ref: bool, normalise, background: bool, dev):
    """(prep, use_bg): what :func:`distance_matrices` does to a chunk of maps before its FSC, and
    whether that subtracts the solvent background."""
    sel3 = sel_mask.reshape(n, n, n).float()
    # real-space mask: soft weights by default, the binary selection in reference mode
    weight = sel3 if (ref or mask is None) else as_tensor(mask, dev).clamp(0, 1)
    convention = "published" if ref else "numpy"
    use_bg = background and not ref and mask is not None
    solvent = solvent_index(weight, dev) if use_bg else None

    def prep(x):
        # The FSC is scale invariant but not offset invariant under a mask: the solvent
        # background is subtracted before masking (see helpers.kernels.volume_input); the
        # published code z-scores before masking instead (reference mode only).
        x = as_tensor(x, dev)
        if ref and normalise == "median_zscore":
            x = median_zscore(x, sel3, convention)
        if use_bg:
            x = subtract_background(x, weight, dev, solvent)
        return x * weight
    return prep, use_bg


def sliced_wasserstein(gt_maps, sub_maps, voxel_size: float = 1.0, n_directions: int = 64,
                       seed: int = 0, mask=None, dev=None, cache=None, background: bool = True,
                       chunk: int | None = None) -> np.ndarray:
    """Sliced W1 distance (Å) between every GT and submitted map (see module docstring).
    ``background=False``: the submitted maps' solvent background is already subtracted.
    GT and submitted maps are binned ``chunk`` maps at a time (default :func:`gt_step`: ≤ ~1 GiB
    of work on a CPU): an 80-map set at 224³ binned at once held ~9 GB of copies.

    Only voxels with mask weight > 0 enter (all voxels without a mask), weighted by it; each
    voxel's mass goes to its nearest bin along each direction (one scatter-add per direction:
    ~18× faster than a sparse binning matrix at 224³, whose ~10⁸ entries took ~8 GB to build);
    GT CDFs are cached in ``cache``."""
    dev = dev or device()
    n = sub_maps.shape[-1]
    gcache = _as_cache(cache)
    binning = _sw_binning(n, n_directions, seed, mask, dev, gcache)
    step = chunk or gt_step(n ** 3 * 4 * 3, dev)  # maps per chunk: ≤ ~1 GiB of work (CPU)
    sig = (n_directions, seed, _fingerprint(gt_maps), _fingerprint(mask), n, str(dev))
    entry = gcache.lookup("sw", sig) if gcache is not None else None
    if entry is not None:
        cg_all = entry.parts[0]
    else:
        cg_all = torch.cat([_mass_cdfs(gt_maps[a:a + step], "GT", a, True, mask, binning, dev)
                            for a in range(0, gt_maps.shape[0], step)])
        if gcache is not None:
            gcache.store("sw", sig, [(0, gt_maps.shape[0])], [cg_all])
    cs = torch.cat([_mass_cdfs(sub_maps[a:a + step], "submission", a, background, mask, binning, dev)
                    for a in range(0, sub_maps.shape[0], step)])
    out = np.empty((gt_maps.shape[0], sub_maps.shape[0]))
    for a in range(0, len(cg_all), 64):
        dist = torch.cdist(cg_all[a:a + 64].permute(1, 0, 2), cs.permute(1, 0, 2), p=1)  # (L, g, s)
        out[a:a + 64] = (dist.mean(0) * voxel_size).cpu().numpy()
    return out


def _sw_binning(n: int, n_directions: int, seed: int, mask, dev, gcache) -> list:
    """[sel, ws, bins, B]: the voxels with mask weight > 0 (flat indices), their weights, the
    (L, V) bin of each along each of the L random directions (seeded by ``seed``) and the number
    of bins B. They depend on the mask and directions only: cached in ``gcache``."""
    bsig = (n_directions, seed, _fingerprint(mask) if mask is not None else None, n, str(dev))
    bentry = gcache.lookup("sw_binning", bsig) if gcache is not None else None
    if bentry is not None:
        return bentry.parts
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_directions, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    w = torch.ones(n ** 3, device=dev) if mask is None else as_tensor(mask, dev).flatten().clamp(0, 1)
    sel = torch.nonzero(w > 0).flatten()
    ws = w[sel]
    # positions (x, y, z) of the selected voxels only, from their flat index (z slowest)
    r = torch.stack([sel % n, (sel // n) % n, sel // (n * n)], -1).to(torch.float32) - n // 2
    half = math.ceil(math.sqrt(3) * n / 2) + 1
    B = 2 * half + 1  # bins per direction: every |r·d| ≤ √3·n/2 fits
    # (L, V) bin of every voxel along every direction, int16 (B < 32768 up to n = 18000):
    # 2 bytes per voxel and direction, ~190 MB at 224³ with 32 directions
    bins = (torch.as_tensor(d, dtype=torch.float32, device=dev) @ r.T).round_().add_(half).to(torch.int16 if B < 2 ** 15 else torch.int32)
    del r
    parts = [sel, ws, bins, B]
    if gcache is not None:
        gcache.store("sw_binning", bsig, [], parts)
    return parts


def _mass_cdfs(maps, label: str, first: int, subtract: bool, mask, binning: list, dev) -> torch.Tensor:
    """(n, L, B) CDFs of the maps' mass along each direction of ``binning`` (:func:`_sw_binning`):
    solvent background subtracted (with a mask and ``subtract``), negative values clipped to 0,
    weighted by the mask, normalised to unit mass. ``first``: index of maps[0] in its set."""
    sel, ws, bins, B = binning
    x = as_tensor(maps, dev)
    _check_finite(x, label, first)
    if mask is not None and subtract:  # an intensity offset would add uniform mass: the solvent level is 0 mass
        x = subtract_background(x, mask, dev)
    x = x.reshape(maps.shape[0], -1)[:, sel].clamp_min_(0).mul_(ws)
    h = torch.zeros(x.shape[0], len(bins), B, device=dev)  # mass per direction and bin
    for i in range(len(bins)):  # a scatter-add per direction: no (maps, V, L) copy
        h[:, i].index_add_(1, bins[i].long(), x)
    mass = h.sum(-1, keepdim=True)
    if bool((mass[:, 0, 0] <= 0).any()):
        idx = (torch.nonzero(mass[:, 0, 0] <= 0).flatten() + first).tolist()
        raise DegenerateMapError(label, f"map(s) {idx[:10]} have no positive density inside the mask: "
                                 "the sliced Wasserstein distance treats a map as a mass distribution.",
                                 "Check the maps' sign convention (protein positive) and the mask.")
    return torch.cumsum(h / mass, -1)
