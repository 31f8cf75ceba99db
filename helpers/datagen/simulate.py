"""The demo data set: real adenylate-kinase (AdK) transition paths -> challenge-format files.

Source: three closed->open paths of AdK shipped by ``MDAnalysisTests`` (LGPL), stored as
heavy-atom coordinates in ``data/adk/adk_paths.npz`` (see ``data/README.md``).

Pipeline (:func:`make_dataset`), each step a function:

1. :func:`superpose` every frame of every path onto the first DIMS frame (Kabsch, all heavy
   atoms, two rounds against the mean structure), centred at the origin.
2. :func:`motion_pca`: PC1 of the frames of the GT path (DIMS, one coherent motion) =
   "MD-PC1", in Å (projection of the centred coordinate vector onto the unit PC1 vector, i.e. the
   displacement along PC1 summed over atoms; divide by √(number of atoms) for an RMSD-like
   per-atom scale), sign chosen so that closed is negative.
3. :func:`sample_conformations`: ``n_gt`` PC1 targets evenly spaced over the path's range; each
   conformation interpolates linearly between the two DIMS frames that bracket the target, plus
   isotropic Gaussian coordinate noise (``coord_noise`` Å), so other degrees of freedom remain.
4. :func:`three_gaussian_populations`: populations ∝ a 3-Gaussian mixture along PC1 with a
   less-populated middle mode (the challenge's design N(−m, s) + ½ N(0, s_mid) + N(+m, s)).
5. :func:`render_maps`: a Gaussian per heavy atom, weight = atomic number, σ² = σ_atom² + B/(8π²).
6. GT written as the challenge does (``gt/maps_gt.npy``, ``gt/metadata.csv``, ``gt/mask.mrc``,
   ``gt/reference.mrc``); mock submissions as folders of MRC maps + ``populations.txt`` and one
   ``submissions/submission_config.json``; particle images as ``particles/particles.mrcs`` +
   ``particles.star`` (the images methods train on) and, with ``n_heldout`` > 0,
   ``particles/heldout.mrcs`` + ``heldout.star``: an independent draw no method sees, for the
   image metrics (chapter 6) to score every submission on images none was made from.
7. :func:`build_mocks`: the noise-free controls (Averaged / Sampled GT), "Reconstructed" (a
   method with perfect classification and poses: ``n_recon_images`` simulated particle images,
   one Wiener-filtered reconstruction per PC1 group, :mod:`helpers.datagen.reconstruct`) and one
   degradation of it per metric family.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.core.backend import progress
from helpers.kernels.fourier import fourier_resample, crop_or_pad, lowpass
from helpers.kernels.geometry import axis_angle_to_matrix, euler_to_matrix, random_rotations, rotate_volume, matrix_to_euler
from helpers.io.mrc import write_mrc
from helpers.core.paths import save_json
from helpers.kernels.projection import FourierSliceProjector, ctf, image_irfft, shift_phase
from helpers.datagen.reconstruct import reconstruct

ATOMIC_NUMBER = {"C": 6, "N": 7, "O": 8, "S": 16, "P": 15, "H": 1}
# Bumped whenever the generated data change meaning; a data folder of another version is refused
# (helpers.pipeline.run.ensure_data) rather than silently mixed with new results.
DATA_VERSION = 4  # 4: a held-out particle stack (particles/heldout.star) no method trains on
GT_PATHS = ("dims",)  # one coherent motion; DIMS2 is the "other path" mock, TMD is unused


# ---------------------------------------------------------------------------- molecules
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


# ----------------------------------------------------------------------------- mocks
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


# ---------------------------------------------------------------------------- particles
def simulate_particles(maps, pops, n_images: int, pixel_size: float, rng: np.random.Generator,
                       snr: float = 0.05, max_shift: float = 2.0, defocus_range=(10000.0, 25000.0),
                       astigmatism: float = 300.0, voltage: float = 300.0, cs: float = 2.7,
                       amplitude_contrast: float = 0.1, chunk: int = 64, pad: int = 2):
    """Particle images from GT maps (``image-formation.md`` §3).

    Map indices ~ populations; Haar rotations; shifts uniform in ±max_shift px; defocus U uniform
    in ``defocus_range`` Å, V = U − ``astigmatism``, angle uniform; CTF (RELION sign) on the
    line-sum projection; white Gaussian noise with σ² = Var(clean images over the whole box)/snr.
    ``pad`` 2 (the projector's own default is 3): 0.5–1.2 % relative error instead of 0.2–0.6 %,
    far below the noise at any usable SNR, and 3× less time per map (one padded FFT per map).
    Returns (noisy (n, N, N) float32, clean (n, N, N) float32, table DataFrame, noise σ).
    """
    n = maps.shape[-1]
    idx = rng.choice(len(pops), size=n_images, p=pops)
    R = random_rotations(n_images, rng)
    shifts = rng.uniform(-max_shift, max_shift, (n_images, 2))
    du = rng.uniform(*defocus_range, n_images)
    dv = du - astigmatism
    ang = rng.uniform(0, 180, n_images)
    clean = np.empty((n_images, n, n), dtype=np.float32)
    for m in progress(np.unique(idx), desc="project particles"):
        sel = np.flatnonzero(idx == m)
        proj = FourierSliceProjector(np.asarray(maps[m])[None], pad=pad)
        for s in range(0, len(sel), chunk):
            b = sel[s:s + chunk]
            f = proj.project_ft(R[b])[0].to(torch.complex128)
            c = ctf(n, pixel_size, du[b], dv[b], ang[b], voltage, cs, amplitude_contrast)
            f = f * c * shift_phase(n, shifts[b])
            clean[b] = image_irfft(f, n).numpy()
    sigma = float(np.sqrt(clean.var(axis=(1, 2)).mean() / snr))
    noisy = (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)
    eul = matrix_to_euler(R)
    table = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@particles.mrcs" for i in range(n_images)],
        "rlnOpticsGroup": 1,
        "rlnDefocusU": du, "rlnDefocusV": dv, "rlnDefocusAngle": ang,
        "rlnAngleRot": eul[:, 0], "rlnAngleTilt": eul[:, 1], "rlnAnglePsi": eul[:, 2],
        "rlnOriginXAngst": -shifts[:, 0] * pixel_size, "rlnOriginYAngst": -shifts[:, 1] * pixel_size,
        "hetbookTrueMapIndex": idx, "hetbookShiftXPx": shifts[:, 0], "hetbookShiftYPx": shifts[:, 1],
    })
    return noisy, clean, table, sigma


STAR_OPTICS = ("rlnOpticsGroup", "rlnOpticsGroupName", "rlnMicrographOriginalPixelSize", "rlnVoltage",
               "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImagePixelSize", "rlnImageSize",
               "rlnImageDimensionality", "rlnCtfDataAreCtfPremultiplied")
STAR_PARTICLES = ("rlnImageName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnOpticsGroup",
                  "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", "rlnPhaseShift", "rlnCtfBFactor",
                  "rlnCtfScalefactor", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
                  "rlnOriginYAngst", "rlnRandomSubset")


def star_tables(table: pd.DataFrame, pixel_size: float, box: int, voltage: float = 300.0, cs: float = 2.7,
                amplitude_contrast: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RELION 3.1+ optics and particles blocks with every column RELION, cryoDRGN and cryoSPARC
    read without overrides (:data:`STAR_OPTICS`, :data:`STAR_PARTICLES`): a phase shift of 0
    (without it cryoDRGN's ``parse_ctf_star`` records NaN and ``train_vae`` stops with "KLD is
    nan"), CTF B-factor 0 and scale 1, a micrograph name and coordinates (one pseudo-micrograph
    per 100 particles, particle at its centre), random half-sets 1/2. hetbook's own truth columns
    are kept after them."""
    n = len(table)
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"],
                           "rlnMicrographOriginalPixelSize": [pixel_size], "rlnVoltage": [voltage],
                           "rlnSphericalAberration": [cs], "rlnAmplitudeContrast": [amplitude_contrast],
                           "rlnImagePixelSize": [pixel_size], "rlnImageSize": [box], "rlnImageDimensionality": [2],
                           "rlnCtfDataAreCtfPremultiplied": [0]})
    extra = pd.DataFrame({"rlnMicrographName": [f"mic_{i // 100:04d}.mrc" for i in range(n)],
                          "rlnCoordinateX": float(box // 2), "rlnCoordinateY": float(box // 2),
                          "rlnPhaseShift": 0.0, "rlnCtfBFactor": 0.0, "rlnCtfScalefactor": 1.0,
                          "rlnRandomSubset": np.arange(n) % 2 + 1}, index=table.index)
    full = pd.concat([table, extra], axis=1)
    ours = [c for c in full.columns if c not in STAR_PARTICLES]
    return optics[list(STAR_OPTICS)], full[list(STAR_PARTICLES) + ours]


# ------------------------------------------------------------------------- the data set
DEFAULTS = dict(box=64, voxel_size=2.146, n_gt=400, n_maps=80, n_small=20, coord_noise=0.3,
                bfactor=30.0, n_images=2000, snr=0.05, max_shift=2.0, seed=0,
                rotation_axis=(1.0, 2.0, 3.0), rotation_deg=40.0, other_voxel_factor=1.5,
                noise_fraction=2.0, lowpass_range=(14.0, 22.0), n_recon_images=24000, n_heldout=0,
                missing_above=0.6)


def _partial(folder: Path) -> Path:
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def make_dataset(out_dir, adk_npz, **params) -> dict:
    """Build the demo data set under ``out_dir`` (``gt/``, ``submissions/``, ``particles/``).

    Deterministic under ``seed``. Each of the three parts is generated only if its folder is
    missing, into a temporary folder renamed on success, so nothing existing is overwritten
    and an interrupted run leaves no half-written part. Returns the manifest (also written to
    ``out_dir/manifest.json``).
    """
    p = {**DEFAULTS, **params}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    box, vs = p["box"], p["voxel_size"]
    adk = load_adk(adk_npz)
    elements = adk.pop("elements")
    sup = superpose(adk)
    gt_frames = np.concatenate([sup[k] for k in GT_PATHS])
    mean, v, var1 = motion_pca(gt_frames, sup["dims"][0])
    all_pc1 = np.concatenate([project_pc1(sup[k], mean, v) for k in GT_PATHS])
    lo, hi = float(all_pc1.min()), float(all_pc1.max())
    manifest = {"data_version": DATA_VERSION,
                "params": {k: (list(x) if isinstance(x, tuple) else x) for k, x in p.items()},
                "md_pc1_variance_fraction": var1, "pc1_range": [lo, hi]}

    gt_dir = out / "gt"
    if not gt_dir.exists():
        rng = np.random.default_rng(p["seed"])
        coords, pc1, names = sample_conformations(sup, mean, v, p["n_gt"], rng, p["coord_noise"])
        pops = three_gaussian_populations(pc1, lo, hi)
        maps = render_maps(coords, elements, box, vs, bfactor=p["bfactor"])
        tmp = _partial(gt_dir)
        np.save(tmp / "maps_gt.npy", maps)
        total = 20 * p["n_gt"] * 10
        pd.DataFrame({"index": np.arange(p["n_gt"]), "volumes": [f"{i:05d}.mrc" for i in range(p["n_gt"])],
                      "populations_count": np.round(pops * total).astype(int), "pc1": pc1,
                      "populations": pops, "path": names}).to_csv(tmp / "metadata.csv", index=False)
        write_mrc(tmp / "mask.mrc", soft_mask(maps.mean(0), vs), vs)
        write_mrc(tmp / "reference.mrc", maps.mean(0), vs)
        tmp.rename(gt_dir)
    maps = np.load(gt_dir / "maps_gt.npy", mmap_mode="r")
    meta = pd.read_csv(gt_dir / "metadata.csv")
    pc1, pops = meta["pc1"].to_numpy(), meta["populations"].to_numpy()

    sub_dir = out / "submissions"
    if not sub_dir.exists():
        rng = np.random.default_rng(p["seed"] + 1)
        tmp = _partial(sub_dir)
        config = {"gt": {"name": "gt", "path": "../gt", "box_size": box, "pixel_size": vs,
                         "ref_align_fname": "reference.mrc"}}
        mocks = build_mocks(np.asarray(maps), pops, pc1, sup, mean, v, elements, lo, hi, p, rng)
        for i, (name, m) in enumerate(progress(mocks.items(), desc="write mocks")):
            folder = tmp / name
            folder.mkdir()
            for j, vol in enumerate(m["maps"]):
                write_mrc(folder / f"{j + 1:02d}.mrc", vol, m["voxel_size"])
            np.savetxt(folder / "populations.txt", m["populations"], fmt="%.10g")
            config[str(i)] = {"name": name, "flavor_name": m["label"], "path": name,
                              "populations_file": f"{name}/populations.txt", "submission_version": "0",
                              "box_size": int(m["maps"].shape[-1]), "pixel_size": m["voxel_size"],
                              "flip": int(m.get("flip", 0)), "align": int(m.get("align", 0)),
                              "hetbook_truth": m["truth"]}
        with open(tmp / "submission_config.json", "w") as fh:
            json.dump(config, fh, indent=2)
        tmp.rename(sub_dir)

    part_dir = out / "particles"
    if not part_dir.exists() and p["n_images"] > 0:
        tmp = _partial(part_dir)
        _write_particles(tmp, "particles", maps, pops, p["n_images"], np.random.default_rng(p["seed"] + 2), p)
        if p["n_heldout"] > 0:
            _write_particles(tmp, "heldout", maps, pops, p["n_heldout"], np.random.default_rng(p["seed"] + 3), p)
        tmp.rename(part_dir)
    save_json(out / "manifest.json", manifest)
    return manifest


def _write_particles(folder: Path, stem: str, maps, pops, n: int, rng, p: dict) -> None:
    """``n`` simulated particle images as ``<stem>.mrcs`` + ``<stem>.star`` in ``folder`` (and,
    for the training stack, 16 clean examples and ``simulation.json``)."""
    import starfile

    vs, box = p["voxel_size"], p["box"]
    noisy, clean, table, sigma = simulate_particles(maps, pops, n, vs, rng, p["snr"], p["max_shift"])
    table["rlnImageName"] = [f"{i + 1:06d}@{stem}.mrcs" for i in range(n)]
    write_mrc(folder / f"{stem}.mrcs", noisy, vs)
    optics, table = star_tables(table, vs, box)
    starfile.write({"optics": optics, "particles": table}, folder / f"{stem}.star")
    if stem == "particles":
        write_mrc(folder / "clean_examples.mrcs", clean[:16], vs)
        save_json(folder / "simulation.json", {"snr": p["snr"], "noise_sigma": sigma,
                                               "snr_definition": "Var(clean CTF-modulated line-sum projection over the whole box) / sigma^2",
                                               "projection": "line sum over voxels", "ctf_sign": "RELION (+A at k=0)"})


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
    one way aimed at one metric family.
    """
    box, vs, K = p["box"], p["voxel_size"], p["n_maps"]
    avg, avg_p, avg_pc1 = averaged_gt(maps, pops, pc1, K)
    samp, samp_p, _ = sampled_gt(maps, pops, pc1, K)
    mocks = {}
    mocks["averaged_gt"] = dict(label="Averaged GT", maps=avg, populations=avg_p, voxel_size=vs,
                                truth={"what": f"control: GT sorted by pc1, {K} equal groups, mean map, summed populations"})
    mocks["sampled_gt"] = dict(label="Sampled GT", maps=samp, populations=samp_p, voxel_size=vs,
                               truth={"what": f"control: GT sorted by pc1, {K} groups, most populated map of each"})
    n_img = p["n_recon_images"]
    images, _clean, table, _sigma = simulate_particles(maps, pops, n_img, vs, rng, p["snr"], p["max_shift"])
    del _clean
    rec = reconstruct_groups(images, table, group_of_map(pc1, K), K, vs)
    rmaps, rpops = rec["maps"], rec["populations"]
    rpc1 = avg_pc1[rec["groups"]]
    from helpers.kernels.fsc import resolution
    res_half = [float(x) for x in resolution(rec["fsc_half"], vs, 0.143)]
    recon_truth = {"n_images": int(n_img), "images_per_map": rec["n_images"].tolist(),
                   "groups_left_out_population": rec["left_out"],
                   "half_set_resolution_A_0.143": [round(x, 2) for x in res_half]}
    mocks["reconstructed"] = dict(
        label="Reconstructed", maps=rmaps, populations=rpops, voxel_size=vs,
        truth={"what": f"{n_img} particle images (SNR {p['snr']}) assigned to the pc1 group of their GT map, "
                       f"{K} groups, one Wiener-filtered reconstruction per group; populations = particle "
                       "fractions", **recon_truth})
    res = rng.uniform(*p["lowpass_range"], len(rmaps))
    lp = np.stack([lowpass(m, r, vs, width=0.01).numpy() for m, r in zip(rmaps, res)])
    mocks["lowpass"] = dict(label="Low-pass", maps=lp, populations=rpops, voxel_size=vs,
                            truth={"what": "Reconstructed, low-passed per map (raised-cosine edge 0.01/Å)",
                                   "resolution_A": res.round(2).tolist()})
    bi = three_gaussian_populations(rpc1, lo, hi, modes=(1.0, 0.0, 1.0))
    mocks["bimodal"] = dict(label="Bimodal", maps=rmaps, populations=bi, voxel_size=vs,
                            truth={"what": "Reconstructed maps, populations without the middle mode"})
    mid = three_gaussian_populations(rpc1, lo, hi, modes=(0.0, 1.0, 0.0))
    mocks["middle_mode"] = dict(label="Middle mode", maps=rmaps, populations=mid, voxel_size=vs,
                                truth={"what": "Reconstructed maps, populations of the middle mode only"})
    cut = lo + p["missing_above"] * (hi - lo)
    part = rpc1 <= cut
    mocks["missing_open"] = dict(
        label="Missing open", maps=rmaps[part], populations=rpops[part] / rpops[part].sum(), voxel_size=vs,
        truth={"what": f"Reconstructed maps with MD-PC1 ≤ {cut:.1f} Å only (the open end of the motion, "
                       f"{100 * (1 - p['missing_above']):.0f} % of its range, missing); populations renormalised"})
    # another grid: finer voxels (vs / factor) and a larger, odd box
    n_fine = int(round(box * p["other_voxel_factor"]))
    fine = fourier_resample(rmaps, n_fine)
    n_big = n_fine + 5
    big = crop_or_pad(fine, n_big).numpy()
    mocks["other_grid"] = dict(label="Other grid", maps=big, populations=rpops, voxel_size=vs / p["other_voxel_factor"],
                               truth={"what": f"Reconstructed, Fourier-upsampled to {n_fine}³ at {vs / p['other_voxel_factor']:.4f} Å, "
                                              f"zero-padded to {n_big}³"})
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
    # fewer, larger classes from the same particles: better resolution, each map a blend of more states
    few = reconstruct_groups(images, table, group_of_map(pc1, p["n_small"]), p["n_small"], vs)
    mocks["few_maps"] = dict(label=f"{p['n_small']} maps", maps=few["maps"], populations=few["populations"],
                             voxel_size=vs,
                             truth={"what": f"the same particles in {p['n_small']} pc1 groups instead of {K}",
                                    "images_per_map": few["n_images"].tolist()})
    del images
    # a method that found a slightly different motion: the DIMS2 path, reconstructed the same way
    d2 = sup["dims2"]
    d2_pc1 = project_pc1(d2, mean, v)
    pick = np.round(np.linspace(0, len(d2) - 1, K)).astype(int)
    d2_maps = render_maps(d2[pick], elements, box, vs, bfactor=p["bfactor"])
    d2_p = three_gaussian_populations(d2_pc1[pick], lo, hi)
    d2_img, _clean, d2_tab, _ = simulate_particles(d2_maps, d2_p, n_img, vs, rng, p["snr"], p["max_shift"])
    del _clean
    d2_rec = reconstruct_groups(d2_img, d2_tab, np.arange(K), K, vs)
    mocks["dims2_path"] = dict(label="DIMS2 path", maps=d2_rec["maps"], populations=d2_rec["populations"], voxel_size=vs,
                               truth={"what": f"{K} frames of the second DIMS path (not the GT's), populations from "
                                              f"the GT mixture at their pc1, {n_img} particle images, reconstructed "
                                              "like Reconstructed"})
    return mocks

