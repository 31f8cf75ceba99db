"""Image formation: Fourier-slice projection of maps and the CTF (``image-formation.md`` §3).

* Projection convention: ``I(x, y) = Σ_t V(M (x, y, t)ᵀ)`` — the **line sum** over voxels
  (multiply by the voxel size for a physical line integral), with M the ZYZ Euler matrix of
  :func:`helpers.kernels.geometry.euler_to_matrix`. Computed by the Fourier-slice theorem: the map is
  zero-padded by ``pad`` (default 3), pre-divided by the trilinear-interpolation kernel's
  transform (sinc² per axis, "gridding correction"), Fourier transformed once, and each
  image's central slice ``M (kx, ky, 0)`` is read by trilinear interpolation of the transform
  extended periodically by one plane (the DFT is periodic: the rfft grid's Nyquist column,
  +N/2, is the −N/2 plane; reading it as zero, as before, cost 3–6 % of the demo maps' images).
  Accuracy depends on how far the map extends from the box centre (the gridding correction
  grows towards the box edge). Relative error of the default (pad 3) against the exact line sum
  at the identity / a float64 direct Fourier sum at random poses, 32 px, maps of low-passed
  noise inside a sphere reaching a fraction of the half-box (``tests/test_geometry_projection.py``
  checks each point): 25 % 0.37 / 0.14 %, 50 % 1.45 / 0.62 %, 75 % 3.5 / 1.44 %, 90 % 5.1 / 1.9 %;
  pad 4 about halves these (75 %: 1.96 / 0.77 %), pad 2 doubles them (75 %: 8.2 / 3.2 %). The
  demo's AdK maps stay within 0.6 % at pad 3 (measured, same file). Only
  the half transform kx ≥ 0 is kept (real maps: F(−k) = conj F(k)), so a map costs one real FFT
  and (pad·N + 1)²·(pad·N/2 + 1) × 8 bytes.
* Images are (n, n) with the origin at pixel n//2; their transforms are on the rfft half grid
  (n, n//2+1) in unshifted order (:func:`image_freqs`).
* CTF, RELION sign: ``CTF = +sin χ · exp(-B k²/4)`` with
  ``χ = π λ Δf(θ) k² − (π/2) Cs λ³ k⁴ + φ + arcsin(A)``; ``Δf(θ) = ½[(dU+dV) + (dU−dV) cos 2(θ−θ_ast)]``;
  underfocus positive; k in Å⁻¹; CTF(0) = +A. Wavelength: RELION's formula.
* A shift (sx, sy) pixels moves the object by +sx columns, +sy rows: transform × exp(−2πi k·s/n).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from helpers.kernels.fourier import as_tensor, crop_or_pad


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å (RELION's constant)."""
    v = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(v * (1 + 0.978466e-6 * v))


def image_freqs(n: int, dev=None):
    """Integer frequency indices (kx, ky) of the (n, n//2+1) rfft2 grid, float64 tensors."""
    ky = torch.fft.fftfreq(n, d=1.0 / n, device=dev, dtype=torch.float64)
    kx = torch.arange(n // 2 + 1, device=dev, dtype=torch.float64)
    return kx[None, :].expand(n, -1), ky[:, None].expand(-1, n // 2 + 1)


def ctf(n: int, pixel_size: float, defocus_u, defocus_v, defocus_angle, voltage: float = 300.0,
        cs: float = 2.7, amplitude_contrast: float = 0.1, phase_shift: float = 0.0,
        bfactor: float = 0.0, dev=None) -> torch.Tensor:
    """CTF on the rfft2 grid: (B, n, n//2+1) float64 for B defocus triples (Å, Å, degrees).

    voltage kV, cs mm, amplitude contrast A in [0, 1), phase shift degrees, B-factor Å².
    RELION sign (+A at k = 0).
    """
    du = torch.as_tensor(np.atleast_1d(np.array(defocus_u, dtype=np.float64)), dtype=torch.float64, device=dev)[:, None, None]
    dv = torch.as_tensor(np.atleast_1d(np.array(defocus_v, dtype=np.float64)), dtype=torch.float64, device=dev)[:, None, None]
    ang = torch.deg2rad(torch.as_tensor(np.atleast_1d(np.array(defocus_angle, dtype=np.float64)), dtype=torch.float64, device=dev))[:, None, None]
    kx, ky = image_freqs(n, dev)
    kx, ky = kx / (n * pixel_size), ky / (n * pixel_size)
    k2 = kx ** 2 + ky ** 2
    theta = torch.atan2(ky, kx)
    lam = electron_wavelength(voltage)
    dfz = 0.5 * ((du + dv) + (du - dv) * torch.cos(2 * (theta - ang)))
    cs_a = cs * 1e7
    chi = (math.pi * lam * dfz * k2 - 0.5 * math.pi * cs_a * lam ** 3 * k2 ** 2
           + math.radians(phase_shift) + math.asin(amplitude_contrast))
    return torch.sin(chi) * torch.exp(-bfactor * k2 / 4.0)


def shift_phase(n: int, shifts, dev=None) -> torch.Tensor:
    """Phase factors (B, n, n//2+1) complex128 that move an image by ``shifts`` (B, 2) = (sx, sy) px."""
    s = torch.as_tensor(np.asarray(shifts, dtype=np.float64).reshape(-1, 2), device=dev)
    kx, ky = image_freqs(n, dev)
    ph = -2 * math.pi * (kx[None] * s[:, 0, None, None] + ky[None] * s[:, 1, None, None]) / n
    return torch.polar(torch.ones_like(ph), ph)


def image_rfft(images) -> torch.Tensor:
    """rfft2 of images (..., n, n) with pixel n//2 moved to the origin."""
    x = as_tensor(images, dtype=torch.float64) if not isinstance(images, torch.Tensor) else images
    return torch.fft.rfft2(torch.fft.ifftshift(x, dim=(-2, -1)))


def image_irfft(f: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`image_rfft`."""
    return torch.fft.fftshift(torch.fft.irfft2(f, s=(n, n)), dim=(-2, -1))


class FourierSliceProjector:
    """Project maps (M, N, N, N) at many poses by the Fourier-slice theorem.

    The padded half transforms (kx ≥ 0) of all maps are computed once at construction
    ((pad·N + 1)² × (pad·N/2 + 1) × 8 bytes per map). :meth:`project_ft` returns slice transforms on the rfft2 grid; :meth:`project`
    real-space line-sum projections.
    """

    def __init__(self, maps, pad: int = 3, gridding_correction: bool = True, dev=None):
        x = as_tensor(maps, dev)
        if x.dim() == 3:
            x = x[None]
        self.n = n = x.shape[-1]
        self.pad = pad
        self.P = P = pad * n
        self.device = x.device
        if gridding_correction:
            c = (torch.arange(n, device=x.device, dtype=torch.float32) - n // 2) / P
            s2 = torch.sinc(c) ** 2
            x = x / (s2[:, None, None] * s2[None, :, None] * s2[None, None, :])
        xp = crop_or_pad(x, P)
        # half spectrum (kx ≥ 0; the map is real, so F(−k) = conj F(k)): half the transform time
        # and memory of a full complex FFT
        f = torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(xp, dim=(-3, -2, -1)), dim=(-3, -2, -1)),
                               dim=(-3, -2))
        # periodic extension by one plane in z and y: index P (frequency +P/2) = index 0 (−P/2)
        f = torch.cat([f, f[:, :1]], 1)
        f = torch.cat([f, f[:, :, :1]], 2)
        self.ft = torch.stack([f.real, f.imag], 1).contiguous()  # (M, 2, P+1, P+1, P//2+1) float32
        self.n_maps = x.shape[0]
        kx, ky = image_freqs(n, x.device)
        self._k = torch.stack([kx, ky, torch.zeros_like(kx)], -1).to(torch.float32)  # (n, n/2+1, 3)

    def project_ft(self, rotations, maps=None, band=None) -> torch.Tensor:
        """Slice transforms for every selected map at every rotation.

        rotations: (B, 3, 3). maps: indices (default all). band: optional boolean mask of the
        n·(n//2+1) flattened rfft2 frequencies to compute (only those are interpolated).
        Returns complex64 (M_sel, B, n, n//2+1), or (M_sel, B, K) for K band frequencies.
        """
        R = torch.as_tensor(np.asarray(rotations), dtype=torch.float32, device=self.device).reshape(-1, 3, 3)
        idx = torch.arange(self.n_maps, device=self.device) if maps is None else torch.as_tensor(np.atleast_1d(maps), device=self.device)
        k = self._k if band is None else self._k.reshape(-1, 3)[torch.as_tensor(band, device=self.device)][:, None]
        q = torch.einsum("bij,hwj->bhwi", R, k) * self.pad  # (B, h, w, 3) padded-index units (x, y, z)
        neg = q[..., :1] < 0
        q = torch.where(neg, -q, q)  # read F(−q) = conj F(q) from the kx ≥ 0 half
        grid = torch.cat([2 * q[..., :1] / (self.P // 2) - 1,  # kx: P//2+1 samples, 0 ↔ −1
                          2 * (q[..., 1:] + self.P // 2) / self.P - 1], -1)  # ky, kz: P+1 samples
        vol = self.ft[idx]  # (M, 2, P+1, P+1, P//2+1)
        g = grid[None].expand(vol.shape[0], -1, -1, -1, -1)
        out = F.grid_sample(vol, g, mode="bilinear", padding_mode="zeros", align_corners=True)
        sign = torch.where(neg[..., 0], -1.0, 1.0)[None]
        out = torch.complex(out[:, 0], out[:, 1] * sign)  # (M, B, h, w)
        return out if band is None else out[..., 0]

    def project(self, rotations, maps=None) -> torch.Tensor:
        """Real-space line-sum projections (M_sel, B, n, n) float32."""
        return image_irfft(self.project_ft(rotations, maps), self.n).to(torch.float32)
