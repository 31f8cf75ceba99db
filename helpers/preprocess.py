"""Bring submissions onto the GT grid and frame, and normalise them. Each step is a function
taking and returning a :class:`~helpers.mapset.MapSet` (or arrays), recorded in the provenance.

Order used by :func:`preprocess_submission`: crop/pad to the GT's physical box → Fourier
resample to the GT box → optional handedness flip → optional global rotational alignment
(:mod:`helpers.align`). Normalisations (z-score, unit norm, B-factor, spectrum equalisation)
are applied by the metric chapters, which state which they use.
"""
from __future__ import annotations


import math

import numpy as np
import torch

from .errors import InputError
from .fourier import (apply_bfactor, apply_radial_filter, as_tensor, crop_or_pad, radial_power_spectrum,
                      resample_stack)
from .mapset import MapSet


def to_gt_grid(ms: MapSet, gt_box: int, gt_voxel: float, allow_coarser: bool = True,
               tolerance: float = 0.01, chunk_bytes: int = 2 ** 30) -> MapSet:
    """Crop/pad to the GT's physical box, then Fourier-resample to ``gt_box``.

    With the submission's voxel p and box N: target box T = round(gt_box · gt_voxel / p);
    centre-crop or zero-pad N → T (voxel N//2 → T//2; odd differences handled), then
    Fourier-resample T → gt_box (values preserved). A coarser submission (p > gt_voxel) is
    upsampled (no information is invented: frequencies beyond its Nyquist stay 0) with a warning,
    or refused with ``allow_coarser=False``. Refuses if the box lengths still differ by more
    than ``tolerance`` (relative) after rounding T. The maps are resampled a few at a time
    (``chunk_bytes`` of float64 spectra): one 80-map set at 256³ is 21 GB of them at once.
    The result's ``voxel_size`` is ``gt_voxel``; its ``native_voxel_size`` stays the input's.
    """
    p, n = ms.voxel_size, ms.box
    if abs(p - gt_voxel) <= 1e-6 * gt_voxel and n == gt_box:
        return ms
    where = ms.provenance.get("source", ms.label)
    if p > gt_voxel * (1 + 1e-6):
        if not allow_coarser:
            raise InputError(where, f"voxel {p:.4f} Å is coarser than the GT's {gt_voxel:.4f} Å.",
                             "Resample the maps to the GT voxel size, or allow upsampling (allow_coarser=True).")
        from .schema import notice
        notice(ms.label, f"voxel {p:.4f} Å coarser than GT {gt_voxel:.4f} Å; Fourier-upsampled "
                         "(its resolution cannot exceed its own Nyquist).")
    T = int(round(gt_box * gt_voxel / p))
    if abs(T * p - gt_box * gt_voxel) > tolerance * gt_box * gt_voxel:
        raise InputError(where, f"box {T}×{p:.4f} Å cannot match the GT box {gt_box}×{gt_voxel} Å.",
                         "Check the voxel sizes in the config.")
    step = max(1, chunk_bytes // (max(n, T, gt_box) ** 3 * 16 * 3))  # a spectrum, its crop/pad, the inverse
    out = resample_stack(ms.maps, gt_box, chunk=step, prep=lambda x: crop_or_pad(x, T))
    return ms.with_maps(out, step=f"crop/pad {n}->{T} at {p:.4f} Å, Fourier-resample {T}->{gt_box}",
                        voxel_size=gt_voxel)


def flip_hand(ms: MapSet) -> MapSet:
    """Mirror every map by reversing the last array axis (x), the challenge's ``flip``."""
    return ms.with_maps(np.ascontiguousarray(np.asarray(ms.maps)[..., ::-1]), step="flip hand (reverse x)")


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


def preprocess_submission(ms: MapSet, gt_box: int, gt_voxel: float, flip: bool = False,
                          align: bool = False, reference=None, align_kwargs: dict | None = None):
    """Grid → flip → align. Returns (MapSet on the GT grid and frame, report dict).

    With ``align_kwargs={"test_hand": True}`` the alignment also tries the mirror image; when it
    fits better the maps are mirrored before its rotation is applied, and the report says so
    (``hand_flipped_by_alignment``; ``flip`` then records the hand finally applied)."""
    from .align import align_to_reference

    report = {"label": ms.label, "input_box": ms.box, "input_voxel_A": ms.voxel_size,
              "native_voxel_A": ms.native_voxel_size,
              "flip": bool(flip), "align": bool(align)}
    out = to_gt_grid(ms, gt_box, gt_voxel)
    if flip:
        out = flip_hand(out)
    if align:
        if reference is None:
            raise InputError(ms.label, "alignment asked for but no reference map given.",
                             "Set ref_align_fname in the GT entry of the config.")
        from .align import MIN_SCORE
        from .geometry import rotate_volume
        from .schema import notice

        res = align_to_reference(out.maps, reference, **(align_kwargs or {}))
        if res["flipped"]:  # the mirror image fits better (test_hand): its rotation is for the mirrored maps
            out = flip_hand(out)
            report["flip"] = not report["flip"]
            report["hand_flipped_by_alignment"] = True
        # a set this function made (flipped or regridded: not the caller's) is rotated in place,
        # a few maps at a time: one copy of a 3.6 GB set at 224³ instead of two
        own = out is not ms and isinstance(out.maps, np.ndarray) and out.maps.flags.writeable \
            and out.maps.dtype == np.float32 and out.maps.flags.c_contiguous
        moved = rotate_volume(out.maps, res["rotation"], shift_in=res["shift_in"], shift_out=res["shift_out"],
                              out=torch.from_numpy(out.maps) if own else None)
        out = out.with_maps(moved.numpy(),
                            step=f"rigid alignment: rotation + centre-of-mass translation (score {res['score']:.4f})")
        report["alignment_doubtful"] = bool(res["score"] < MIN_SCORE)
        if report["alignment_doubtful"]:
            notice(ms.label, f"alignment doubtful: score {res['score']:.3f} < {MIN_SCORE} (correlation with the "
                             "reference after the best rotation and translation); check the maps side by side "
                             "in the preprocessing chapter before trusting its metrics.")
        out.provenance["rotation_matrix"] = np.asarray(res["rotation"]).tolist()
        report.update({k: v for k, v in res.items() if k != "rotation"})
        report["rotation_matrix"] = np.asarray(res["rotation"]).tolist()
    if reference is not None and np.shape(reference)[-1] == out.box:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        mean = np.asarray(out.maps, dtype=np.float64).mean(0).ravel()
        r = float(np.corrcoef(mean, ref)[0, 1]) if mean.std() > 0 and ref.std() > 0 else float("nan")
        report["corr_with_reference"] = r
        if r < 0:  # density maps share the GT's positive blob: a negative correlation means dark protein
            from .schema import notice

            notice(ms.label, f"its mean map correlates negatively with the GT reference (r = {r:.2f}): inverted "
                             "contrast (protein dark)? Its scores compare it as it is; multiply the maps by −1 "
                             "(e.g. relion_image_handler --multiply_constant -1) if the method writes protein dark.")
    return out, report
