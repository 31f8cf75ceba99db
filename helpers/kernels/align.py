"""Global rotational alignment of a submission to a reference map (one rotation for the series).

Method: the submission's maps are averaged (one rotation for all of them preserves the motion),
both maps are Fourier-downsampled to ``box_ds`` voxels, thresholded at a percentile (voxels below
set to 0, as the challenge does for its alignment) and normalised. The score of a rotation R is
the correlation Σ_r ref(r)·sub(Rᵀ r) over the reference's support, evaluated for all candidate
rotations at once by trilinear sampling (torch). Search: a quasi-uniform SO(3) grid
(``n_directions`` × ``n_inplane``), then local refinement around the best candidates with
shrinking random perturbations. Optionally the mirror image is searched too (hand test) and an
integer translation is found by FFT cross-correlation.

Translation: the rotation is searched twice — about the box centre, and with both prepared maps
first centred on their centres of mass, so a submission that is also shifted (by any amount,
sub-voxel included) is found — and the better-scoring motion kept; the result is a rigid motion ``rotate_volume(sub, R, shift_in=c_sub, shift_out=c_ref)`` ≈ ``ref``
(c = centres of mass, (x, y, z) voxels from the box centre, at full size).

Score: the correlation (≤ 1) of the prepared maps after the motion. Below ``MIN_SCORE`` the
alignment is called doubtful (:func:`helpers.kernels.preprocess.preprocess_submission` says so).

Result convention: ``rotate_volume(sub, R)`` ≈ ``ref`` (see :mod:`helpers.kernels.geometry`).
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from helpers.kernels.fourier import as_tensor, fourier_resample
from helpers.kernels.geometry import axis_angle_to_matrix, pose_grid, sphere_directions


def _prepare(vol, box_ds: int, percentile: float) -> torch.Tensor:
    v = fourier_resample(as_tensor(vol)[None], box_ds)[0] if vol.shape[-1] != box_ds else as_tensor(vol).clone()
    thr = torch.quantile(v.flatten().double(), percentile / 100).float()
    v = torch.where(v >= thr, v, torch.zeros_like(v))
    return v / v.norm().clamp_min(1e-30)


def _scores(sub: torch.Tensor, ref: torch.Tensor, R: np.ndarray, chunk: int = 2048) -> torch.Tensor:
    """Σ_r ref(r) sub(Rᵀ r) for each rotation in R (B, 3, 3)."""
    n = ref.shape[-1]
    idx = torch.nonzero(ref > 0)  # (K, 3) as (z, y, x)
    w = ref[idx[:, 0], idx[:, 1], idx[:, 2]]
    r = idx.flip(1).to(torch.float32) - n // 2  # (x, y, z) about the centre
    Rt = torch.as_tensor(R, dtype=torch.float32)
    out = []
    vol = sub[None, None]
    for s in range(0, len(Rt), chunk):
        src = torch.einsum("kj,bji->bki", r, Rt[s:s + chunk]) + n // 2  # r @ R = (Rᵀ r)ᵀ
        grid = (2 * src / (n - 1) - 1)[None, :, :, None, :]  # (1, B, K, 1, 3)
        val = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append((val[0, 0, :, :, 0] * w).sum(1))
    return torch.cat(out)


def _local(R0: np.ndarray, n: int, step_deg: float, rng: np.random.Generator) -> np.ndarray:
    axes = sphere_directions(n) if n > 1 else np.array([[0, 0, 1.0]])
    angles = rng.uniform(-step_deg, step_deg, n)
    dR = np.stack([axis_angle_to_matrix(a, t) for a, t in zip(axes, angles)])
    return np.concatenate([R0[None], dR @ R0])


def search_rotation(sub, ref, n_directions: int = 300, n_inplane: int = 24, n_refine: int = 5,
                    refine_rounds: int = 6, refine_samples: int = 120, seed: int = 0):
    """Best rotation of ``sub`` onto ``ref`` (both prepared (n, n, n) tensors). Returns (R, score)."""
    rng = np.random.default_rng(seed)
    _, R, _ = pose_grid(n_directions, n_inplane)
    s = _scores(sub, ref, R)
    top = torch.topk(s, min(n_refine, len(s))).indices.numpy()
    best_R, best_s = R[top[0]], float(s[top[0]])
    step = 360.0 / n_inplane
    for start in R[top]:
        cur, cur_s = start, None
        st = step
        for _ in range(refine_rounds):
            cand = _local(cur, refine_samples, st, rng)
            sc = _scores(sub, ref, cand)
            k = int(torch.argmax(sc))
            cur, cur_s = cand[k], float(sc[k])
            st /= 2
        if cur_s > best_s:
            best_R, best_s = cur, cur_s
    return best_R, best_s


def fft_translation(moving, ref) -> np.ndarray:
    """Integer shift (dz, dy, dx) that maximises the cross-correlation of ``moving`` with ``ref``."""
    a, b = as_tensor(moving), as_tensor(ref)
    cc = torch.fft.ifftn(torch.fft.fftn(b) * torch.conj(torch.fft.fftn(a))).real
    k = np.unravel_index(int(torch.argmax(cc)), cc.shape)
    n = np.array(cc.shape)
    return np.where(np.array(k) > n // 2, np.array(k) - n, np.array(k))


MIN_SCORE = 0.8  # measured: correct alignments of the demo's mocks score 0.85–0.99


def centre_of_mass(vol: torch.Tensor) -> np.ndarray:
    """(x, y, z) centre of mass of a non-negative map, voxels from the box centre N//2."""
    n = vol.shape[-1]
    w = vol.clamp_min(0).double()
    c = torch.arange(n, dtype=torch.float64) - n // 2
    tot = w.sum().clamp_min(1e-300)
    return np.array([float((w.sum((0, 1)) * c).sum() / tot), float((w.sum((0, 2)) * c).sum() / tot),
                     float((w.sum((1, 2)) * c).sum() / tot)])


def align_to_reference(maps, reference, box_ds: int = 32, percentile: float = 93.0,
                       test_hand: bool = False, translate: bool = False, seed: int = 0, **search):
    """Estimate one rotation that brings the series ``maps`` (n, N, N, N) onto ``reference``.

    Returns a dict: rotation (3×3, apply with ``rotate_volume``), score (correlation of the
    prepared maps, ≤ 1), flipped (True if the mirror image fits better; only with test_hand —
    then flip the maps before rotating), shift (integer voxels (dz, dy, dx) at full size, with
    translate), seconds.
    """
    t0 = time.time()
    mean = as_tensor(maps).mean(0)
    n_full = mean.shape[-1]
    box_ds = min(box_ds, n_full)
    from helpers.kernels.geometry import rotate_volume

    sub = _prepare(mean, box_ds, percentile)
    ref = _prepare(as_tensor(reference), box_ds, percentile)
    scale = n_full / box_ds
    c_ref = centre_of_mass(ref)

    def solve(s):
        """Best of two searches: about the box centre (maps already centred), and with both maps
        centred on their centres of mass first (a shifted submission)."""
        best = None
        c_s = centre_of_mass(s)
        for cs, cr in ((np.zeros(3), np.zeros(3)), (c_s, c_ref)):
            s_c = rotate_volume(s, np.eye(3), shift_in=cs)
            r_c = rotate_volume(ref, np.eye(3), shift_in=cr)
            R, _ = search_rotation(s_c / s_c.norm().clamp_min(1e-30), r_c / r_c.norm().clamp_min(1e-30),
                                   seed=seed, **search)
            moved = rotate_volume(s, R, shift_in=cs, shift_out=cr)
            score = float((moved * ref).sum() / (moved.norm() * ref.norm()).clamp_min(1e-30))
            if best is None or score > best[1]:
                best = (R, score, cs, cr)
        return best

    R, score, c_s, c_r = solve(sub)
    out = {"rotation": R, "score": score, "flipped": False,
           "shift_in": (c_s * scale).tolist(), "shift_out": (c_r * scale).tolist()}
    if test_hand:
        Rm, score_m, c_m, c_rm = solve(sub.flip(-1))
        out["score_mirror"] = score_m
        if score_m > score:
            out.update(rotation=Rm, score=score_m, flipped=True, shift_in=(c_m * scale).tolist(),
                       shift_out=(c_rm * scale).tolist())
    if translate:
        from helpers.kernels.geometry import rotate_volume

        m = mean.flip(-1) if out["flipped"] else mean
        out["shift"] = fft_translation(rotate_volume(m, out["rotation"]), as_tensor(reference)).tolist()
    out["seconds"] = time.time() - t0
    return out
