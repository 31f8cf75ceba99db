"""The GT ensemble: adenylate-kinase (AdK) conformations along one motion, their populations and maps.

Source: three closed->open paths of AdK shipped by ``MDAnalysisTests`` (LGPL), stored as
heavy-atom coordinates in ``data/adk/adk_paths.npz`` (see ``data/README.md``).

Coordinates are in Å, float64, shaped (frames, atoms, 3) per path (row vectors x, y, z). The motion
coordinate "MD-PC1" is PC1 of the GT path's frames (DIMS, one coherent motion), in Å: the projection
of the centred coordinate vector onto the unit PC1 vector, i.e. the displacement along PC1 summed over
atoms (divide by √(number of atoms) for an RMSD-like per-atom scale), its sign chosen so that closed is
negative.

* :func:`superpose`: every frame of every path onto the first DIMS frame (Kabsch, all heavy atoms,
  two rounds against the mean structure), centred at the origin.
* :func:`motion_pca` / :func:`project_pc1`: the MD-PC1 axis and coordinates.
* :func:`sample_conformations`: conformations evenly spaced in PC1, each interpolated linearly between
  the two DIMS frames that bracket it, plus isotropic Gaussian coordinate noise, so other degrees of
  freedom remain.
* :func:`three_gaussian_populations`: populations ∝ a 3-Gaussian mixture along PC1 with a
  less-populated middle mode (the challenge's design N(−m, s) + ½ N(0, s_mid) + N(+m, s)).
* :func:`render_maps`: maps (n, box, box, box) float32, origin at voxel box//2, a Gaussian per heavy
  atom, weight = atomic number, σ² = σ_atom² + B/(8π²); :func:`soft_mask` (values 0…1) around their mean.
"""
from __future__ import annotations

import numpy as np
import torch

from helpers.core.backend import progress

ATOMIC_NUMBER = {"C": 6, "N": 7, "O": 8, "S": 16, "P": 15, "H": 1}
GT_PATHS = ("dims",)  # one coherent motion; DIMS2 is the "other path" mock, TMD is unused


def load_adk(path) -> dict:
    """Coordinates (Å, float64) of each path ``{name: (frames, atoms, 3)}`` and ``elements``."""
    with np.load(path) as z:
        out = {k.replace("_milliangstrom", ""): z[k].astype(np.float64) / 1000.0
               for k in z.files if k.endswith("_milliangstrom")}
        out["elements"] = z["element"].astype(str)
    return out


def kabsch(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Rotation R (3×3) minimising ‖(P − p̄) R − (Q − q̄)‖ for row-vector point sets (A, 3)."""
    p, q = P - P.mean(0), Q - Q.mean(0)
    U, _, Vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(U @ Vt))
    return U @ np.diag([1, 1, d]) @ Vt


def superpose(paths: dict[str, np.ndarray], rounds: int = 2) -> dict[str, np.ndarray]:
    """Superpose all frames of all paths (Kabsch on all atoms); result centred at the origin."""
    ref = paths["dims"][0] - paths["dims"][0].mean(0)
    out = {}
    for _ in range(rounds):
        for k, X in paths.items():
            out[k] = np.stack([(x - x.mean(0)) @ kabsch(x, ref) for x in X])
        ref = np.concatenate([out[k] for k in GT_PATHS if k in out]).mean(0)
        ref -= ref.mean(0)
    return out


def motion_pca(frames: np.ndarray, closed_frame: np.ndarray):
    """PC1 of frames (F, A, 3): returns (mean (A, 3), unit vector (A, 3), fraction of variance).

    Coordinates along PC1 are ``((X − mean) · v).sum()`` in Å; the sign makes ``closed_frame``
    negative.
    """
    F_ = frames.reshape(len(frames), -1)
    mean = F_.mean(0)
    _, s, Vt = np.linalg.svd(F_ - mean, full_matrices=False)
    v = Vt[0]
    if (closed_frame.ravel() - mean) @ v > 0:
        v = -v
    return mean.reshape(-1, 3), v.reshape(-1, 3), float(s[0] ** 2 / (s ** 2).sum())


def project_pc1(X: np.ndarray, mean: np.ndarray, v: np.ndarray) -> np.ndarray:
    """PC1 coordinate (Å) of conformations X (..., A, 3)."""
    return ((X - mean) * v).sum(axis=(-1, -2))


def sample_conformations(paths: dict, mean, v, n: int, rng: np.random.Generator,
                         coord_noise: float = 0.3, use_paths=GT_PATHS):
    """``n`` conformations evenly spaced along PC1 by interpolating path frames (see module doc).

    Returns (coords (n, A, 3), pc1 (n,) of the generated conformations, path name per conformation).
    """
    proj = {k: project_pc1(paths[k], mean, v) for k in use_paths}
    lo = max(min(p.min() for p in proj.values()), max(p.min() for p in proj.values()))
    hi = min(max(p.max() for p in proj.values()), min(p.max() for p in proj.values()))
    targets = np.linspace(lo, hi, n)
    coords, names = [], []
    for i, t in enumerate(targets):
        name = use_paths[i % len(use_paths)]
        p = proj[name]
        order = np.argsort(p)  # paths are near-monotone; sort to bracket robustly
        ps = p[order]
        j = int(np.clip(np.searchsorted(ps, t) - 1, 0, len(ps) - 2))
        a, b = order[j], order[j + 1]
        w = 0.0 if ps[j + 1] == ps[j] else (t - ps[j]) / (ps[j + 1] - ps[j])
        x = (1 - w) * paths[name][a] + w * paths[name][b]
        coords.append(x + rng.normal(0, coord_noise, x.shape))
        names.append(name)
    coords = np.stack(coords)
    return coords, project_pc1(coords, mean, v), np.array(names)


def three_gaussian_populations(pc1: np.ndarray, lo: float, hi: float, modes=(1.0, 0.5, 1.0),
                               rel_pos: float = 0.62, rel_sd: float = 0.115, rel_sd_mid: float = 0.095):
    """Populations ∝ Σ_m w_m N(pc1; μ_m, σ_m) (normalised to sum 1) for the three modes at
    −rel_pos, 0, +rel_pos of the half-range around the centre of [lo, hi] (defaults mirror the
    challenge's design: modes at ±150 of ±240, σ 27 and 22, middle weight ½). ``modes`` sets the
    three weights (e.g. (1, 0, 1) = missing middle mode)."""
    c, h = (lo + hi) / 2, (hi - lo) / 2
    mus = [c - rel_pos * h, c, c + rel_pos * h]
    sds = [rel_sd * h, rel_sd_mid * h, rel_sd * h]
    dens = sum(w * np.exp(-0.5 * ((pc1 - m) / s) ** 2) / s for w, m, s in zip(modes, mus, sds))
    return dens / dens.sum()


def render_maps(coords: np.ndarray, elements, box: int, voxel_size: float, sigma_atom: float = 1.0,
                bfactor: float = 30.0, chunk: int = 8) -> np.ndarray:
    """Density maps (n, box, box, box) float32 from conformations (n, A, 3) in Å (origin at voxel
    box//2): a Gaussian per atom, weight Z, σ² = σ_atom² + B/(8π²), normalised to integrate to Z
    (values in electrons/Å³ × voxel³ = per-voxel mass). Separable: one matrix product per map."""
    coords = np.atleast_3d(coords)
    if coords.ndim == 2:
        coords = coords[None]
    w = torch.tensor([ATOMIC_NUMBER.get(e, 6) for e in elements], dtype=torch.float32)
    sig = np.sqrt(sigma_atom ** 2 + bfactor / (8 * np.pi ** 2)) / voxel_size  # voxels
    g = torch.arange(box, dtype=torch.float32) - box // 2
    norm = 1.0 / (np.sqrt(2 * np.pi) * sig)
    out = np.empty((len(coords), box, box, box), dtype=np.float32)
    for s in progress(range(0, len(coords), chunk), desc="render maps"):
        x = torch.as_tensor(coords[s:s + chunk] / voxel_size, dtype=torch.float32)  # (b, A, 3)
        gx = torch.exp(-0.5 * ((g - x[..., 0, None]) / sig) ** 2) * norm  # (b, A, box)
        gy = torch.exp(-0.5 * ((g - x[..., 1, None]) / sig) ** 2) * norm
        gz = torch.exp(-0.5 * ((g - x[..., 2, None]) / sig) ** 2) * norm * w[:, None]
        gyx = (gy[..., :, None] * gx[..., None, :]).reshape(len(x), -1, box * box)
        out[s:s + chunk] = torch.bmm(gz.transpose(1, 2), gyx).reshape(-1, box, box, box).numpy()
    return out


def soft_mask(mean_map: np.ndarray, voxel_size: float, threshold: float = 0.05,
              dilate_A: float = 6.0, edge_A: float = 10.0) -> np.ndarray:
    """Soft mask (values 0..1): voxels of ``mean_map`` above ``threshold``·max, dilated by
    ``dilate_A`` Å, with a Gaussian soft edge of ``edge_A`` Å."""
    from scipy import ndimage

    binary = mean_map > threshold * mean_map.max()
    r = max(1, int(round(dilate_A / voxel_size)))
    ball = np.add.outer(np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2), np.arange(-r, r + 1) ** 2) <= r * r
    binary = ndimage.binary_dilation(binary, structure=ball)
    soft = ndimage.gaussian_filter(binary.astype(np.float32), edge_A / voxel_size / 2)
    return np.clip(2 * soft, 0, 1).astype(np.float32)
