"""Maps from particle images with known poses and CTFs: direct Fourier inversion, Wiener-filtered.

Used to make the demo's realistic mock submissions (a method with perfect classification and
poses, whose maps still carry the noise and resolution limit of the images it used) and to check
other programs' conventions against ours.

Conventions are those of :mod:`helpers.kernels.projection`: an image's rfft2 (pixel n//2 at the origin,
:func:`~helpers.kernels.projection.image_rfft`) at pose R is the central slice F(R (kx, ky, 0)) of the
map's DFT (``rfftn(ifftshift(map))``, array axes (z, y, x) = frequencies (kz, ky, kx)); a shift
(sx, sy) px is undone by the conjugate of :func:`~helpers.kernels.projection.shift_phase`.

Estimator, per Fourier voxel k and per class (RELION's, without its iterative refinement):

    F̂(k) = Σ_i c_i(k) Y_i(k) / (Σ_i c_i(k)² + τ⁻²(|k|))

with every image's half-plane and its Friedel mate inserted by trilinear weights into a centred
N³ grid (frequencies up to N/2 − 1 in radius), c the CTF, and the regulariser from half sets
(particles split even/odd): SSNR(k) = 2 FSC_half / (1 − FSC_half) (the full set's), τ⁻² =
mean_shell(Σ c²) / SSNR, and no signal (F̂ = 0) in shells where FSC_half ≤ 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from helpers.core.backend import device, progress
from helpers.kernels.fourier import shell_index
from helpers.kernels.projection import ctf, image_freqs, image_rfft, shift_phase


def _slice_points(n: int, R: torch.Tensor, dev):
    """3D frequency (index units, x y z) of each rfft2 image frequency with |k| < n/2 − 1, per
    pose: (B, K, 3) float64, and the flat index (K,) of those frequencies in the (n, n//2+1) grid."""
    kx, ky = image_freqs(n, dev)
    keep = (kx ** 2 + ky ** 2).flatten() < (n / 2 - 1) ** 2
    k = torch.stack([kx.flatten(), ky.flatten(), torch.zeros_like(kx.flatten())], -1)[keep]
    return torch.einsum("bij,kj->bki", R, k), torch.nonzero(keep)[:, 0]


def _insert(num: torch.Tensor, wgt: torch.Tensor, q: torch.Tensor, val: torch.Tensor, w2: torch.Tensor, n: int):
    """Trilinear insertion of values ``val`` (P,) complex and weights ``w2`` (P,) at points q
    (P, 3) (x, y, z index units, centred, |q| < n/2 − 1) into flat grids num, wgt (n³,). The
    Friedel mates are added once per grid afterwards (:func:`_friedel`)."""
    c = n // 2
    p0 = torch.floor(q)
    f = q - p0
    i0 = p0.long() + c
    off = torch.tensor([[dx, dy, dz] for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)], device=q.device)
    idx = i0[None] + off[:, None]  # (8, P, 3), inside the grid for |q| < n/2 − 1
    frac = torch.where(off[:, None].bool(), f[None], 1 - f[None]).prod(-1).to(wgt.dtype)  # (8, P)
    flat = ((idx[..., 2] * n + idx[..., 1]) * n + idx[..., 0]).reshape(-1)
    num.index_add_(0, flat, (val[None] * frac).reshape(-1))
    wgt.index_add_(0, flat, (w2[None] * frac).reshape(-1))


def _friedel(x: torch.Tensor, n: int, conj: bool) -> torch.Tensor:
    """x (…, n³) on the centred grid plus its value at −k (conjugated for ``conj``): the
    insertion of every image's mirrored half-plane, done once. Index j ↔ frequency j − n//2, so
    −k is index 2·(n//2) − j: n − j for even n (index 0, frequency −n/2, is never filled:
    |k| < n/2 − 1), n − 1 − j for odd n (a flip alone)."""
    g = x.reshape(*x.shape[:-1], n, n, n)
    s = 1 - n % 2
    m = torch.roll(torch.flip(g, (-3, -2, -1)), (s, s, s), (-3, -2, -1))
    return (g + (m.conj() if conj else m)).reshape(x.shape)


def _shell_sum(x: torch.Tensor, shells: torch.Tensor, n_shells: int) -> torch.Tensor:
    return torch.zeros(n_shells, dtype=x.dtype, device=x.device).index_add_(0, shells, x)


@dataclasses.dataclass
class _Images:
    """Particle images (P, n, n) with, per image, the pose R (P, 3, 3) float64 on the device, the
    shift (P, 2) px and defocus U, V (Å) and angle (°), and the optics shared by all."""
    images: np.ndarray
    R: torch.Tensor
    shifts: np.ndarray
    du: np.ndarray
    dv: np.ndarray
    ang: np.ndarray
    pixel_size: float
    voltage: float
    cs: float
    amplitude_contrast: float


def reconstruct(images, pixel_size: float, rotations, shifts, defocus_u, defocus_v, defocus_angle,
                classes=None, n_classes: int | None = None, voltage: float = 300.0, cs: float = 2.7,
                amplitude_contrast: float = 0.1, chunk: int = 256, gridding_correction: bool = False,
                dev=None) -> dict:
    """Wiener-filtered reconstructions of the particle ``images`` (P, n, n), one per class.

    rotations (P, 3, 3) (the poses the images were made at: image = projection at R), shifts
    (P, 2) px (sx, sy: the object moved by +sx columns, +sy rows), defocus in Å / degrees;
    classes (P,) int in [0, n_classes) (default: one class). ``gridding_correction`` divides
    the map by the trilinear kernel's transform (sinc² per axis): right amplitudes for clean
    data (noiseless 24³ test: scale 0.97 instead of 0.77), but without oversampling it
    multiplies the noise near the box corners up to 15×, so it is off by default (the metrics
    normalise the maps; the amplitude loss is a smooth fall-off towards the box edge). Returns dict(maps (n_classes, n, n,
    n) float32 in the projector's units (line sums of the map give the clean image),
    fsc_half (n_classes, n//2) the half-set FSC per shell 1..n//2 (NaN beyond the inserted
    radius), n_images (n_classes,), reconstructed (n_classes,) bool: False for a class with fewer
    than 2 images, whose map is left all-zero with a warning).
    """
    dev = dev or device()
    imgs = np.asarray(images)
    P, n = imgs.shape[0], imgs.shape[-1]
    cls = np.zeros(P, dtype=int) if classes is None else np.asarray(classes, dtype=int)
    K = int(n_classes if n_classes is not None else cls.max() + 1)
    du, dv, ang = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (defocus_u, defocus_v, defocus_angle))
    stack = _Images(imgs, torch.as_tensor(np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3), device=dev),
                    np.asarray(shifts, dtype=np.float64).reshape(-1, 2), du, dv, ang,
                    pixel_size, voltage, cs, amplitude_contrast)
    shells = torch.fft.fftshift(shell_index(n, dev, half=False)).flatten()  # centred grid, as inserted
    n_sh = int(shells.max()) + 1  # the cube's corners too
    maps = np.zeros((K, n, n, n), dtype=np.float32)
    fsc_half = np.full((K, n // 2), np.nan)
    counts = np.bincount(cls, minlength=K)
    _warn_single_image_classes(counts, P)
    for k in progress(range(K), desc="reconstruct"):
        members = np.flatnonzero(cls == k)
        if members.size < 2:
            continue
        num, wgt = _insert_half_sets(stack, members, chunk, dev)
        vol, fsc_half[k] = _wiener_map(num, wgt, shells, n_sh, n)
        if gridding_correction:
            vol = _gridding_corrected(vol, n, dev)
        maps[k] = vol.to(torch.float32).cpu().numpy()
    return {"maps": maps, "fsc_half": fsc_half, "n_images": counts, "reconstructed": counts >= 2}


def _warn_single_image_classes(counts: np.ndarray, P: int) -> None:
    """Warn about classes holding one image: no half sets, so no map (left all-zero)."""
    few = np.flatnonzero((counts > 0) & (counts < 2))
    if len(few):
        import warnings

        warnings.warn(f"reconstruct: class(es) {few.tolist()} hold a single image: no map can be reconstructed "
                      f"from it (no half-sets, no Wiener filter); left out (all-zero map, reconstructed=False): "
                      f"{int(counts[few].sum())} of {P} images, {counts[few].sum() / P:.2%} of the particles.",
                      stacklevel=3)


def _insert_half_sets(stack: _Images, members: np.ndarray, chunk: int, dev):
    """Sums over the images ``members`` (split even/odd into two half sets) of c·Y (complex64) and
    c² (float32) on the centred grid, (2, n³) each, Friedel mates not yet added."""
    n = stack.images.shape[-1]
    num = torch.zeros((2, n ** 3), dtype=torch.complex64, device=dev)  # sums of ≤ 10⁴ images: float32 is enough
    wgt = torch.zeros((2, n ** 3), dtype=torch.float32, device=dev)
    for s in range(0, members.size, chunk):
        b = members[s:s + chunk]
        half = torch.as_tensor(np.searchsorted(members, b) % 2, device=dev)
        Y = image_rfft(torch.as_tensor(stack.images[b], dtype=torch.float64, device=dev))
        Y = Y * shift_phase(n, stack.shifts[b], dev).conj()
        C = ctf(n, stack.pixel_size, stack.du[b], stack.dv[b], stack.ang[b], stack.voltage, stack.cs,
                stack.amplitude_contrast, dev=dev)
        q, flat = _slice_points(n, stack.R[b], dev)
        cy = (C * Y).reshape(len(b), -1)[:, flat].to(torch.complex64)
        c2 = (C ** 2).reshape(len(b), -1)[:, flat].to(torch.float32)
        for h in (0, 1):
            sel = half == h
            if sel.any():
                _insert(num[h], wgt[h], q[sel].reshape(-1, 3).float(), cy[sel].reshape(-1), c2[sel].reshape(-1), n)
    return num, wgt


def _wiener_map(num: torch.Tensor, wgt: torch.Tensor, shells: torch.Tensor, n_sh: int, n: int):
    """The map (n, n, n) float64 from the half-set sums (:func:`_insert_half_sets`), Wiener-filtered
    with the SSNR from their FSC, and that FSC at shells 1..n//2 (NaN where a half map is empty)."""
    num, wgt = _friedel(num, n, True).to(torch.complex128), _friedel(wgt, n, False).to(torch.float64)
    # half-set FSC per shell, from half maps with a tiny regulariser (only their ratio matters)
    eps = 1e-3 * wgt.mean(1, keepdim=True).clamp_min(1e-30)
    Fh = num / (wgt + eps)
    cross = _shell_sum((Fh[0] * Fh[1].conj()).real, shells, n_sh)
    pa, pb = _shell_sum(Fh[0].abs() ** 2, shells, n_sh), _shell_sum(Fh[1].abs() ** 2, shells, n_sh)
    fsc = cross / torch.sqrt(pa * pb).clamp_min(1e-300)
    fsc_half = np.where((pa * pb).cpu().numpy()[1:n // 2 + 1] > 0, fsc.cpu().numpy()[1:n // 2 + 1], np.nan)
    ssnr = (2 * fsc / (1 - fsc).clamp_min(1e-6)).clamp_min(0)
    W = wgt.sum(0)
    nvox = _shell_sum(torch.ones_like(W), shells, n_sh)
    w_mean = _shell_sum(W, shells, n_sh) / nvox.clamp_min(1)
    reg = torch.where(ssnr > 0, w_mean / ssnr.clamp_min(1e-12), torch.full_like(ssnr, float("inf")))
    F = num.sum(0) / (W + reg[shells])
    F = torch.where(torch.isfinite(F.real), F, torch.zeros_like(F))
    vol = torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(F.reshape(n, n, n))).real)
    return vol, fsc_half


def _gridding_corrected(vol: torch.Tensor, n: int, dev) -> torch.Tensor:
    """``vol`` divided by the trilinear insertion's transform, sinc² per axis."""
    s2 = torch.sinc((torch.arange(n, device=dev, dtype=torch.float64) - n // 2) / n) ** 2
    return vol / s2[:, None, None] / s2[None, :, None] / s2[None, None, :]
