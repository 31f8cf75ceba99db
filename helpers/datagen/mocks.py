"""The demo's mock submissions: noise-free controls, "Reconstructed" and its degradations.

Every mock is a dict(label, maps (K, N, N, N) float32, populations (K,) summing to 1, voxel_size Å,
truth (what it is, for the report)[, flip, align]); maps sit on the GT grid (origin at voxel N//2)
except "Other grid". Groups are contiguous runs of GT maps sorted by MD-PC1 (:func:`group_by_pc1`).

* Controls made from the GT alone: "Averaged GT" (mean map of each group, :func:`averaged_gt`) and
  "Sampled GT" (the most populated map of each group, :func:`sampled_gt`).
* "Reconstructed": a method with perfect classification and poses (:func:`reconstruct_groups`):
  ``n_recon_images`` simulated particle images, independent of ``particles/`` so that the image
  metrics never score a map on the images it was made from, one Wiener-filtered reconstruction per
  group (:mod:`helpers.datagen.reconstruct`).
* One degradation of "Reconstructed" per metric family (resolution, populations, a missing end,
  grid, pose, hand, noise, number of maps) and one other motion (the DIMS2 path), :func:`build_mocks`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from helpers.core.backend import progress
from helpers.datagen.ensemble import project_pc1, render_maps, three_gaussian_populations
from helpers.datagen.particles import simulate_particles
from helpers.datagen.reconstruct import reconstruct
from helpers.kernels.fourier import crop_or_pad, fourier_resample, lowpass
from helpers.kernels.geometry import axis_angle_to_matrix, euler_to_matrix, rotate_volume


def group_by_pc1(pc1: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Indices of maps sorted by pc1, split into ``n_groups`` contiguous near-equal groups."""
    return np.array_split(np.argsort(pc1, kind="stable"), n_groups)


def averaged_gt(maps, pops, pc1, n_groups: int):
    """The paper's "Averaged GT" control: mean map of each pc1 group, summed populations.
    Returns (maps (n_groups, N, N, N) float32, populations (n_groups,), mean pc1 (n_groups,))."""
    return averaged_gt_many(maps, pops, pc1, [n_groups])[n_groups]


SCRATCH_BYTES = 2 ** 30  # averaged maps beyond this are written to memory maps in ``scratch``


def averaged_gt_many(maps, pops, pc1, counts, scratch=None, chunk: int | None = None) -> dict:
    """:func:`averaged_gt` for several group counts in **one pass over the GT** (``maps`` may be a
    memory map or a lazy stack; read ``chunk`` maps at a time, default ~0.5 GiB of work).

    Each chunk is added to its groups' sums for every count (float32, one scatter-add per count);
    the sums are divided by the group sizes at the end. When all averaged maps together exceed
    :data:`SCRATCH_BYTES` and a ``scratch`` folder is given, they are memory maps there (174 maps
    at 224³, chapter 5's study: 7.8 GB on disk instead of in memory); the caller removes the folder.
    Returns {count: (maps (count, N, N, N) float32, populations (count,), mean pc1 (count,))}."""
    from helpers.core.backend import sub_step

    pops, pc1 = np.asarray(pops, dtype=np.float64), np.asarray(pc1, dtype=np.float64)
    n_gt, n = maps.shape[0], maps.shape[-1]
    counts = [int(k) for k in counts]
    if any(not 1 <= k <= n_gt for k in counts):
        raise ValueError(f"group counts {counts} must lie in 1 … {n_gt} (the number of GT maps)")
    on_disk = scratch is not None and sum(counts) * n ** 3 * 4 > SCRATCH_BYTES
    sums, member = {}, {}
    for k in dict.fromkeys(counts):
        groups = group_by_pc1(pc1, k)
        which = np.empty(n_gt, dtype=np.int64)
        for g, idx in enumerate(groups):
            which[idx] = g
        member[k] = (groups, torch.from_numpy(which))
        if on_disk:
            arr = np.lib.format.open_memmap(Path(scratch) / f"averaged_gt_{k}.npy", mode="w+",
                                            dtype=np.float32, shape=(k, n, n, n))
        else:
            arr = np.zeros((k, n, n, n), dtype=np.float32)
        sums[k] = arr
    step = chunk or sub_step(n, copies=2)
    for a in progress(range(0, n_gt, step), desc="Averaged-GT maps (GT chunks)"):
        x = torch.from_numpy(np.array(maps[a:a + step], dtype=np.float32)).reshape(-1, n ** 3)  # (a writable copy)
        for k, (_, which) in member.items():
            torch.from_numpy(sums[k]).reshape(k, -1).index_add_(0, which[a:a + len(x)], x)
    out = {}
    for k, (groups, _) in member.items():
        size = np.array([len(g) for g in groups], dtype=np.float32)
        m = sums[k]
        for g in range(k):  # in place, map by map (a memory map stays on disk)
            m[g] /= size[g]
        p = np.array([pops[g].sum() for g in groups])
        out[k] = (m, p / p.sum(), np.array([pc1[g].mean() for g in groups]))
    return out


def sampled_gt(maps, pops, pc1, n_groups: int):
    """The paper's "Sampled GT" control: the most populated map of each pc1 group."""
    groups = group_by_pc1(pc1, n_groups)
    pick = np.array([g[np.argmax(pops[g])] for g in groups])
    p = np.array([pops[g].sum() for g in groups])
    return np.asarray(maps[pick]).astype(np.float32), p / p.sum(), pc1[pick]


def reconstruct_groups(images, table, group_of_map, n_groups: int, pixel_size: float,
                       min_images: int = 10) -> dict:
    """A method with perfect classification and poses: each particle assigned to the group of
    the map it was made from (``group_of_map[hetbookTrueMapIndex]``), one Wiener-filtered
    reconstruction per group (:func:`helpers.datagen.reconstruct.reconstruct`). Groups with fewer than
    ``min_images`` particles give no map (a real method reports no empty class).

    Returns dict(maps (K', N, N, N), populations (K',) = fractions of the kept particles, groups
    (K',) kept group numbers, n_images (K',), fsc_half (K', N//2), left_out {group: fraction of
    all particles} for the groups with too few images).
    """
    cls = np.asarray(group_of_map)[table["hetbookTrueMapIndex"].to_numpy()]
    R = euler_to_matrix(table["rlnAngleRot"], table["rlnAngleTilt"], table["rlnAnglePsi"])
    r = reconstruct(images, pixel_size, R, table[["hetbookShiftXPx", "hetbookShiftYPx"]].to_numpy(),
                    table["rlnDefocusU"], table["rlnDefocusV"], table["rlnDefocusAngle"],
                    classes=cls, n_classes=n_groups)
    keep = np.flatnonzero(r["n_images"] >= min_images)
    counts = r["n_images"][keep]
    dropped = np.flatnonzero((r["n_images"] > 0) & (r["n_images"] < min_images))
    return {"maps": r["maps"][keep], "populations": counts / counts.sum(), "groups": keep,
            "n_images": counts, "fsc_half": r["fsc_half"][keep],
            "left_out": {int(g): float(r["n_images"][g] / len(table)) for g in dropped}}


def group_of_map(pc1, n_groups: int) -> np.ndarray:
    """(n_maps,) the MD-PC1 group (0 … n_groups − 1, :func:`group_by_pc1`) of each GT map."""
    g = np.empty(len(pc1), dtype=int)
    for k, idx in enumerate(group_by_pc1(pc1, n_groups)):
        g[idx] = k
    return g


def build_mocks(maps, pops, pc1, sup, mean, v, elements, lo, hi, p, rng) -> dict:
    """The mock submissions, each a dict(label, maps, populations, voxel_size, truth[, flip, align]).

    Two noise-free controls made from the GT (Averaged / Sampled GT); "Reconstructed": what a
    method with perfect classification and poses would deliver from ``n_recon_images`` particle
    images (simulated like ``particles/`` but independent of them, so the image metrics never
    score a map on the images it was made from); every other mock degrades "Reconstructed" in
    one way aimed at one metric family. ``sup``: the superposed paths, ``mean``/``v`` the MD-PC1
    axis, ``lo``/``hi`` the GT path's PC1 range, ``p`` the data set's parameters; ``rng`` is drawn
    from in a fixed order (the mocks' images, their low-pass resolutions and noise, the DIMS2 images).
    """
    K, vs = p["n_maps"], p["voxel_size"]
    mocks, avg_pc1 = _gt_controls(maps, pops, pc1, K, vs)
    mocks.update(_reconstructed_mocks(maps, pops, pc1, avg_pc1, lo, hi, p, rng))
    mocks["dims2_path"] = _other_path_mock(sup, mean, v, elements, lo, hi, p, rng)
    return mocks


def _gt_controls(maps, pops, pc1, K: int, vs: float) -> tuple[dict, np.ndarray]:
    """The noise-free controls {averaged_gt, sampled_gt} and the mean pc1 (K,) of each group."""
    avg, avg_p, avg_pc1 = averaged_gt(maps, pops, pc1, K)
    samp, samp_p, _ = sampled_gt(maps, pops, pc1, K)
    mocks = {}
    mocks["averaged_gt"] = dict(label="Averaged GT", maps=avg, populations=avg_p, voxel_size=vs,
                                truth={"what": f"control: GT sorted by pc1, {K} equal groups, mean map, summed populations"})
    mocks["sampled_gt"] = dict(label="Sampled GT", maps=samp, populations=samp_p, voxel_size=vs,
                               truth={"what": f"control: GT sorted by pc1, {K} groups, most populated map of each"})
    return mocks, avg_pc1


def _reconstructed_mocks(maps, pops, pc1, avg_pc1, lo, hi, p, rng) -> dict:
    """"Reconstructed" from ``n_recon_images`` new particle images, its degradations, and the same
    particles in ``n_small`` groups ("few_maps"). The images are freed on return."""
    K, vs, n_img = p["n_maps"], p["voxel_size"], p["n_recon_images"]
    images, _clean, table, _sigma = simulate_particles(maps, pops, n_img, vs, rng, p["snr"], p["max_shift"])
    del _clean
    rec = reconstruct_groups(images, table, group_of_map(pc1, K), K, vs)
    from helpers.kernels.fsc import resolution
    res_half = [float(x) for x in resolution(rec["fsc_half"], vs, 0.143)]
    recon_truth = {"n_images": int(n_img), "images_per_map": rec["n_images"].tolist(),
                   "groups_left_out_population": rec["left_out"],
                   "half_set_resolution_A_0.143": [round(x, 2) for x in res_half]}
    mocks = {"reconstructed": dict(
        label="Reconstructed", maps=rec["maps"], populations=rec["populations"], voxel_size=vs,
        truth={"what": f"{n_img} particle images (SNR {p['snr']}) assigned to the pc1 group of their GT map, "
                       f"{K} groups, one Wiener-filtered reconstruction per group; populations = particle "
                       "fractions", **recon_truth})}
    mocks.update(_degraded_mocks(rec["maps"], rec["populations"], avg_pc1[rec["groups"]], lo, hi, p, rng))
    # fewer, larger classes from the same particles: better resolution, each map a blend of more states
    few = reconstruct_groups(images, table, group_of_map(pc1, p["n_small"]), p["n_small"], vs)
    mocks["few_maps"] = dict(label=f"{p['n_small']} maps", maps=few["maps"], populations=few["populations"],
                             voxel_size=vs,
                             truth={"what": f"the same particles in {p['n_small']} pc1 groups instead of {K}",
                                    "images_per_map": few["n_images"].tolist()})
    return mocks


def _degraded_mocks(rmaps, rpops, rpc1, lo, hi, p, rng) -> dict:
    """"Reconstructed" (maps ``rmaps``, populations ``rpops``, group pc1 ``rpc1``) degraded one way
    each: resolution, populations (bimodal, middle mode, open end missing), grid, pose, hand, noise."""
    vs = p["voxel_size"]
    res = rng.uniform(*p["lowpass_range"], len(rmaps))
    lp = np.stack([lowpass(m, r, vs, width=0.01).numpy() for m, r in zip(rmaps, res)])
    mocks = {}
    mocks["lowpass"] = dict(label="Low-pass", maps=lp, populations=rpops, voxel_size=vs,
                            truth={"what": "Reconstructed, low-passed per map (raised-cosine edge 0.01/Å)",
                                   "resolution_A": res.round(2).tolist()})
    mocks.update(_population_mocks(rmaps, rpops, rpc1, lo, hi, p))
    mocks["other_grid"] = _other_grid_mock(rmaps, rpops, p)
    R = axis_angle_to_matrix(p["rotation_axis"], p["rotation_deg"])
    rot = rotate_volume(rmaps, R).numpy()
    mocks["rotated"] = dict(label="Rotated", maps=rot, populations=rpops, voxel_size=vs, align=1,
                            truth={"what": "Reconstructed, rotated actively by R about the box centre: V'(r) = V(Rᵀr)",
                                   "rotation_matrix": R.tolist(), "axis": list(p["rotation_axis"]),
                                   "angle_deg": p["rotation_deg"]})
    mocks["flipped"] = dict(label="Flipped hand", maps=np.ascontiguousarray(rmaps[..., ::-1]), populations=rpops,
                            voxel_size=vs, flip=1,
                            truth={"what": "Reconstructed, mirrored: last array axis (x) reversed", "flipped": True})
    sd = p["noise_fraction"] * rmaps.std(axis=(1, 2, 3), keepdims=True)
    mocks["noisy"] = dict(label="Noisy", maps=(rmaps + rng.normal(size=rmaps.shape) * sd).astype(np.float32),
                          populations=rpops, voxel_size=vs,
                          truth={"what": f"Reconstructed + white Gaussian noise, σ = {p['noise_fraction']} × map std"})
    return mocks


def _population_mocks(rmaps, rpops, rpc1, lo, hi, p) -> dict:
    """The "Reconstructed" maps with other populations: {bimodal, middle_mode, missing_open}."""
    vs = p["voxel_size"]
    bi = three_gaussian_populations(rpc1, lo, hi, modes=(1.0, 0.0, 1.0))
    mid = three_gaussian_populations(rpc1, lo, hi, modes=(0.0, 1.0, 0.0))
    cut = lo + p["missing_above"] * (hi - lo)
    part = rpc1 <= cut
    return {
        "bimodal": dict(label="Bimodal", maps=rmaps, populations=bi, voxel_size=vs,
                        truth={"what": "Reconstructed maps, populations without the middle mode"}),
        "middle_mode": dict(label="Middle mode", maps=rmaps, populations=mid, voxel_size=vs,
                            truth={"what": "Reconstructed maps, populations of the middle mode only"}),
        "missing_open": dict(
            label="Missing open", maps=rmaps[part], populations=rpops[part] / rpops[part].sum(), voxel_size=vs,
            truth={"what": f"Reconstructed maps with MD-PC1 ≤ {cut:.1f} Å only (the open end of the motion, "
                           f"{100 * (1 - p['missing_above']):.0f} % of its range, missing); populations renormalised"}),
    }


def _other_grid_mock(rmaps, rpops, p) -> dict:
    """"Reconstructed" on another grid: finer voxels (voxel_size / other_voxel_factor), a larger odd box."""
    vs, factor = p["voxel_size"], p["other_voxel_factor"]
    n_fine = int(round(p["box"] * factor))
    fine = fourier_resample(rmaps, n_fine)
    n_big = n_fine + 5
    big = crop_or_pad(fine, n_big).numpy()
    return dict(label="Other grid", maps=big, populations=rpops, voxel_size=vs / factor,
                truth={"what": f"Reconstructed, Fourier-upsampled to {n_fine}³ at {vs / factor:.4f} Å, "
                               f"zero-padded to {n_big}³"})


def _other_path_mock(sup, mean, v, elements, lo, hi, p, rng) -> dict:
    """A method that found a slightly different motion: ``n_maps`` frames of the DIMS2 path, populations
    from the GT mixture at their pc1, reconstructed from ``n_recon_images`` images like "Reconstructed"."""
    K, vs, n_img = p["n_maps"], p["voxel_size"], p["n_recon_images"]
    d2 = sup["dims2"]
    d2_pc1 = project_pc1(d2, mean, v)
    pick = np.round(np.linspace(0, len(d2) - 1, K)).astype(int)
    d2_maps = render_maps(d2[pick], elements, p["box"], vs, bfactor=p["bfactor"])
    d2_p = three_gaussian_populations(d2_pc1[pick], lo, hi)
    d2_img, _clean, d2_tab, _ = simulate_particles(d2_maps, d2_p, n_img, vs, rng, p["snr"], p["max_shift"])
    del _clean
    d2_rec = reconstruct_groups(d2_img, d2_tab, np.arange(K), K, vs)
    return dict(label="DIMS2 path", maps=d2_rec["maps"], populations=d2_rec["populations"], voxel_size=vs,
                truth={"what": f"{K} frames of the second DIMS path (not the GT's), populations from "
                               f"the GT mixture at their pc1, {n_img} particle images, reconstructed "
                               "like Reconstructed"})
