"""Particle images simulated from GT maps, written as RELION 3.1 ``.mrcs`` + ``.star`` (``image-formation.md``).

Images (n, N, N) float32 are line-sum projections (the projector's units) of maps drawn by their
populations at Haar-random poses, shifted, CTF-modulated (RELION sign: +A at k = 0) and given white
Gaussian noise with σ² = Var(clean images over the whole box) / SNR. Defocus in Å, angles in degrees,
shifts in pixels (``hetbookShiftX/YPx``: the object moved by +x columns, +y rows; RELION's
``rlnOriginX/YAngst`` = −shift × pixel size). ``hetbookTrueMapIndex`` is the GT map of each image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers.core.backend import progress
from helpers.core.paths import save_json
from helpers.io.mrc import write_mrc
from helpers.kernels.geometry import matrix_to_euler, random_rotations
from helpers.kernels.projection import FourierSliceProjector, ctf, image_irfft, shift_phase


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


def write_particle_stack(folder: Path, stem: str, maps, pops, n: int, rng, p: dict) -> None:
    """``n`` simulated particle images as ``<stem>.mrcs`` + ``<stem>.star`` in ``folder`` (and,
    for the training stack ``stem="particles"``, 16 clean examples and ``simulation.json``).
    ``p``: the data set's parameters (``voxel_size``, ``box``, ``snr``, ``max_shift``)."""
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
