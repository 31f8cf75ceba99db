"""The Nyquist rule: no reported resolution is finer than a submission's own Nyquist.

A map produced on a coarse grid (cryoDRGN trained at 32 px, voxel 4.29 Å) and Fourier-resampled
onto the GT grid (2.146 Å) carries no information beyond its native Nyquist, 2 × 4.29 = 8.58 Å;
an FSC crossing finer than that is noise or the GT's own structure leaking through the
interpolation. Resolutions are in Å, larger = coarser; the native voxel size is
:attr:`helpers.io.mapset.MapSet.native_voxel_size` (Å, set at ingestion, kept through regridding).
"""
from __future__ import annotations

import numpy as np

# relative slack: a resolution equal to the native Nyquist up to rounding is not flagged
RTOL = 1e-9


def native_nyquist(native_voxel_A: float) -> float:
    """The finest resolution (Å) a map produced at ``native_voxel_A`` Å per voxel can carry:
    2 × native voxel size."""
    v = float(native_voxel_A)
    if not v > 0:
        raise ValueError(f"native voxel size must be a positive number of Å, got {native_voxel_A!r}")
    return 2.0 * v


def clip_resolution(res_A, native_voxel_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Resolutions ``res_A`` (Å, any shape; larger = coarser) reported no finer than the native
    Nyquist 2 × ``native_voxel_A``. Returns (clipped float64 array, boolean array
    ``nyquist_limited``: True where the raw value was finer than the native Nyquist by more than
    a relative 1e-9, i.e. where it was replaced). NaN stays NaN and is not flagged."""
    res = np.asarray(res_A, dtype=np.float64)
    nyq = native_nyquist(native_voxel_A)
    limited = res < nyq * (1 - RTOL)
    return np.where(limited, nyq, res), limited


def resolution_columns(res_A, native_voxel_A: float, name: str = "resolution") -> dict:
    """CSV columns for resolutions ``res_A`` (Å): ``{name}_A`` (clipped, :func:`clip_resolution`),
    ``{name}_raw_A`` (as measured), ``nyquist_limited`` (bool) and ``native_nyquist_A``; arrays
    of ``res_A``'s shape, the Nyquist a scalar."""
    clipped, limited = clip_resolution(res_A, native_voxel_A)
    return {f"{name}_A": clipped, f"{name}_raw_A": np.asarray(res_A, dtype=np.float64),
            "nyquist_limited": limited, "native_nyquist_A": native_nyquist(native_voxel_A)}


def coarser_grid(native_voxel_A: float, voxel_A: float) -> bool:
    """True when a set made at ``native_voxel_A`` Å per voxel and resampled to ``voxel_A`` Å has a
    native Nyquist coarser than the working grid's (its FSC curves run past its information)."""
    return native_nyquist(native_voxel_A) > native_nyquist(voxel_A) * (1 + RTOL)
