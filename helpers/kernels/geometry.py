"""Rotations: RELION/cisTEM ZYZ Euler angles, uniform and grid sampling of SO(3), rotating maps.

Conventions (``image-formation.md`` §3.1, checked against RELION and cisTEM):

* ``euler_to_matrix(rot, tilt, psi)`` = scipy ``Rotation.from_euler('ZYZ', [rot, tilt, psi])``
  (intrinsic, active) = Rz(rot) · Ry(tilt) · Rz(psi). A particle image is
  ``I(x, y) = ∫ V(M (x, y, t)ᵀ) dt``; RELION's own matrix is Mᵀ.
* Coordinates of a map (z, y, x) array: x = last axis, y = middle, z = first; the origin is
  voxel N//2 on each axis. Vectors are (x, y, z).
* ``rotate_volume(V, R)`` returns V'(r) = V(Rᵀ r): the object rotated *actively* by R about
  the box centre.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from helpers.kernels.fourier import as_tensor


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    z, o = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def euler_to_matrix(rot, tilt, psi, degrees: bool = True) -> np.ndarray:
    """ZYZ (RELION rot, tilt, psi) -> rotation matrices (..., 3, 3) float64."""
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (rot, tilt, psi))
    if degrees:
        a, b, c = np.deg2rad(a), np.deg2rad(b), np.deg2rad(c)
    return _rz(a) @ _ry(b) @ _rz(c)


def matrix_to_euler(R) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: (..., 3, 3) -> (..., 3) degrees, tilt in [0, 180]."""
    R = np.asarray(R, dtype=np.float64)
    tilt = np.arccos(np.clip(R[..., 2, 2], -1, 1))
    rot = np.arctan2(R[..., 1, 2], R[..., 0, 2])
    psi = np.arctan2(R[..., 2, 1], -R[..., 2, 0])
    gimbal = np.abs(np.sin(tilt)) < 1e-9  # tilt 0 or 180: put everything in rot
    rot = np.where(gimbal, np.arctan2(R[..., 1, 0], R[..., 0, 0]), rot)
    psi = np.where(gimbal, 0.0, psi)
    if np.any(gimbal):  # tilt = 180: Rz(a) Ry(pi) = [[-c, s..]] -> angle from R[1,0], R[1,1]
        flip = gimbal & (R[..., 2, 2] < 0)
        rot = np.where(flip, np.arctan2(R[..., 1, 0], -R[..., 1, 1]), rot)
    return np.rad2deg(np.stack([rot, tilt, psi], -1))


def random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """n Haar-uniform rotation matrices (n, 3, 3) from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return quaternion_to_matrix(q)


def quaternion_to_matrix(q) -> np.ndarray:
    """Unit quaternions (..., 4) as (w, x, y, z) -> rotation matrices (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def axis_angle_to_matrix(axis, angle_deg: float) -> np.ndarray:
    """Rotation by ``angle_deg`` about ``axis`` (x, y, z), right-handed."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    h = np.deg2rad(angle_deg) / 2
    return quaternion_to_matrix(np.concatenate([[np.cos(h)], np.sin(h) * axis]))


def rotvec_to_matrix(v) -> np.ndarray:
    """Rotation vectors (..., 3) (axis × angle in radians) -> matrices (..., 3, 3) (Rodrigues)."""
    v = np.asarray(v, dtype=np.float64)
    t = np.linalg.norm(v, axis=-1, keepdims=True)
    axis = np.where(t > 0, v / np.where(t > 0, t, 1.0), 0.0)
    return quaternion_to_matrix(np.concatenate([np.cos(t / 2), np.sin(t / 2) * axis], -1))


def rotation_angle(R1, R2=None) -> np.ndarray:
    """Geodesic angle (degrees) between rotations: angle of R1 R2ᵀ (of R1 if R2 is None)."""
    R = np.asarray(R1, dtype=np.float64)
    if R2 is not None:
        R = R @ np.swapaxes(np.asarray(R2, dtype=np.float64), -1, -2)
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.rad2deg(np.arccos(np.clip((tr - 1) / 2, -1, 1)))


def sphere_directions(n: int) -> np.ndarray:
    """n quasi-uniform unit vectors (Fibonacci lattice), (n, 3) as (x, y, z)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def pose_grid(n_directions: int, n_inplane: int):
    """A quasi-uniform grid of poses: ``n_directions`` viewing directions (Fibonacci sphere)
    × ``n_inplane`` equally spaced in-plane angles.

    Returns (euler (n, 3) degrees (rot, tilt, psi), matrices (n, 3, 3), weights (n,) summing
    to 1: equal, since the Fibonacci cells have equal area). ``n = n_directions * n_inplane``.
    The typical spacing is ``sqrt(4π/n_directions)`` rad between directions, 360/n_inplane°
    in plane.
    """
    d = sphere_directions(n_directions)
    tilt = np.rad2deg(np.arccos(np.clip(d[:, 2], -1, 1)))
    rot = np.rad2deg(np.arctan2(d[:, 1], d[:, 0]))
    psi = np.arange(n_inplane) * 360.0 / n_inplane
    eul = np.stack(np.broadcast_arrays(rot[:, None], tilt[:, None], psi[None, :]), -1).reshape(-1, 3)
    R = euler_to_matrix(eul[:, 0], eul[:, 1], eul[:, 2])
    w = np.full(len(eul), 1.0 / len(eul))
    return eul, R, w


def grid_spacing_deg(n_directions: int, n_inplane: int) -> float:
    """Nominal angular spacing of :func:`pose_grid` (degrees): the larger of the two spacings."""
    return max(np.rad2deg(math.sqrt(4 * math.pi / n_directions)), 360.0 / n_inplane)


def rotate_volume(maps, R, order: str = "bilinear", shift_in=None, shift_out=None,
                  chunk_bytes: int = 2 ** 28, out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate maps (..., N, N, N) actively by R (3×3, or (B,3,3) for B maps): V'(r) = V(Rᵀ r).

    With ``shift_in``/``shift_out`` ((x, y, z) voxels from the centre) a rigid motion:
    V'(r) = V(Rᵀ (r − shift_out) + shift_in) — the point ``shift_in`` of V lands on ``shift_out``.
    Trilinear interpolation about voxel N//2; voxels sampled from outside the box are 0.
    Memory: one 3×3 R builds one sampling grid (N³ × 3) shared by every map (the maps are the
    channels of one ``grid_sample``); a (B, 3, 3) stack builds one grid per map, ``chunk_bytes``
    of grids at a time — an 80-map submission at 224³ needed ~32 GB of grids built all at once.
    ``out`` (float32, the maps' shape; it may be the maps' own memory): written a few maps at a
    time and returned — each map is read before its rotated copy is written, so rotating a set
    in place holds one copy of it instead of two.
    """
    x = as_tensor(maps)
    n = x.shape[-1]
    lead = x.shape[:-3]
    x4 = x.reshape(-1, n, n, n)
    b = x4.shape[0]
    Rt = torch.as_tensor(np.asarray(R), dtype=torch.float32, device=x.device)
    c = torch.arange(n, dtype=torch.float32, device=x.device) - n // 2
    zz, yy, xx = torch.meshgrid(c, c, c, indexing="ij")
    r = torch.stack([xx, yy, zz], -1).reshape(-1, 3)  # (n³, 3) as (x, y, z)
    if shift_out is not None:
        r = r - torch.as_tensor(np.asarray(shift_out, dtype=np.float32), device=x.device)

    def grids(Rs):  # (k, 3, 3) -> (k, n, n, n, 3) grid_sample coordinates
        src = torch.einsum("pj,bji->bpi", r, Rs)  # Rᵀ r for row vectors: r @ R
        if shift_in is not None:
            src = src + torch.as_tensor(np.asarray(shift_in, dtype=np.float32), device=x.device)
        # align_corners=True: -1 -> voxel 0, 1 -> voxel n-1
        return ((src + n // 2) * (2 / (n - 1)) - 1).reshape(len(Rs), n, n, n, 3)

    if Rt.dim() == 2:  # one grid, the maps as channels
        grid = grids(Rt[None])
        if out is None:
            res = F.grid_sample(x4[None], grid, mode=order, padding_mode="zeros", align_corners=True)[0]
            return res.reshape(*lead, n, n, n)
        o4 = out.reshape(-1, n, n, n)
        step = max(1, chunk_bytes // (n ** 3 * 4 * 2))
        for a in range(0, b, step):
            o4[a:a + step] = F.grid_sample(x4[None, a:a + step], grid, mode=order, padding_mode="zeros",
                                           align_corners=True)[0]
        return out
    o4 = torch.empty_like(x4) if out is None else out.reshape(-1, n, n, n)
    step = max(1, chunk_bytes // (n ** 3 * 3 * 4 * 3))  # the grid and its two temporaries per map
    for a in range(0, b, step):
        o4[a:a + step] = F.grid_sample(x4[a:a + step, None], grids(Rt[a:a + step]), mode=order,
                                       padding_mode="zeros", align_corners=True)[:, 0]
    return o4.reshape(*lead, n, n, n) if out is None else out
