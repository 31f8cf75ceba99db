"""Bring submissions onto the GT grid and frame, and normalise them. Each step is a function
taking and returning a :class:`~helpers.io.mapset.MapSet` (or arrays), recorded in the provenance.

Order used by :func:`preprocess_submission`: crop/pad to the GT's physical box → Fourier
resample to the GT box → optional handedness flip → optional global rotational alignment
(:mod:`helpers.kernels.align`). Normalisations (z-score, unit norm, B-factor, spectrum equalisation)
live in :mod:`helpers.kernels.normalise`; the metric chapters apply them and state which they use.
"""
from __future__ import annotations


import numpy as np
import torch

from helpers.core.errors import InputError
from helpers.kernels.fourier import crop_or_pad, resample_stack
from helpers.io.mapset import MapSet


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
        from helpers.io.schema import notice
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


def preprocess_submission(ms: MapSet, gt_box: int, gt_voxel: float, flip: bool = False,
                          align: bool = False, reference=None, align_kwargs: dict | None = None):
    """Grid → flip → align. Returns (MapSet on the GT grid and frame, report dict).

    With ``align_kwargs={"test_hand": True}`` the alignment also tries the mirror image; when it
    fits better the maps are mirrored before its rotation is applied, and the report says so
    (``hand_flipped_by_alignment``; ``flip`` then records the hand finally applied)."""
    from helpers.kernels.align import align_to_reference

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
        from helpers.kernels.align import MIN_SCORE
        from helpers.kernels.geometry import rotate_volume
        from helpers.io.schema import notice

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
            report.update(voxel_size_check(ms, gt_box, gt_voxel, bool(flip), reference, align_kwargs, res["score"]))
        out.provenance["rotation_matrix"] = np.asarray(res["rotation"]).tolist()
        report.update({k: v for k, v in res.items() if k != "rotation"})
        report["rotation_matrix"] = np.asarray(res["rotation"]).tolist()
    if reference is not None and np.shape(reference)[-1] == out.box:
        ref = np.asarray(reference, dtype=np.float64).ravel()
        mean = np.asarray(out.maps, dtype=np.float64).mean(0).ravel()
        r = float(np.corrcoef(mean, ref)[0, 1]) if mean.std() > 0 and ref.std() > 0 else float("nan")
        report["corr_with_reference"] = r
        if r < 0:  # density maps share the GT's positive blob: a negative correlation means dark protein
            from helpers.io.schema import notice

            notice(ms.label, f"its mean map correlates negatively with the GT reference (r = {r:.2f}): inverted "
                             "contrast (protein dark)? Its scores compare it as it is; multiply the maps by −1 "
                             "(e.g. relion_image_handler --multiply_constant -1) if the method writes protein dark.")
    return out, report


VOXEL_FACTORS = {"half": 0.5, "double": 2.0}


def voxel_size_check(ms: MapSet, gt_box: int, gt_voxel: float, flip: bool, reference, align_kwargs, score: float,
                     margin: float = 0.1) -> dict:
    """After a doubtful alignment: align the set again as if its voxel size were half and twice
    the stated one (a wrong pixel size in a header or config is a common slip; RECOVAR 1.0.5 wrote
    maps at half their header's). Returns ``{"score_at_half_voxel", "score_at_double_voxel",
    "voxel_size_suggested_A"}``: the size (Å) whose score reaches
    :data:`~helpers.kernels.align.MIN_SCORE` and beats ``score`` by ``margin`` (NaN when neither
    does), which is also named in a warning; the metrics still use the stated size."""
    import dataclasses
    import warnings

    from helpers.io.schema import notice
    from helpers.kernels.align import MIN_SCORE, align_to_reference

    out = {}
    for name, f in VOXEL_FACTORS.items():
        try:
            with warnings.catch_warnings():  # its "coarser than the GT" notice is about a trial size
                warnings.simplefilter("ignore")
                grid = to_gt_grid(dataclasses.replace(ms, voxel_size=ms.voxel_size * f), gt_box, gt_voxel)
        except InputError:  # that box cannot match the GT's
            out[f"score_at_{name}_voxel"] = float("nan")
            continue
        maps = np.ascontiguousarray(np.asarray(grid.maps)[..., ::-1]) if flip else grid.maps
        out[f"score_at_{name}_voxel"] = float(align_to_reference(maps, reference, **(align_kwargs or {}))["score"])
    best = max(out, key=lambda k: -1 if out[k] != out[k] else out[k])
    out["voxel_size_suggested_A"] = float("nan")
    if out[best] >= MIN_SCORE and out[best] > score + margin:
        size = out["voxel_size_suggested_A"] = ms.voxel_size * VOXEL_FACTORS[best.split("_")[2]]
        notice(ms.label, f"at {size:.4f} Å per voxel ({best.split('_')[2]} the stated {ms.voxel_size:.4f} Å) its "
                         f"maps align at score {out[best]:.3f} instead of {score:.3f}: the voxel size in its header "
                         "or config is probably wrong. Its metrics use the stated size; correct pixel_size in the "
                         "submission config (or the adapter's voxel size) and run again.")
    return out
