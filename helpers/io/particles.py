"""Particle images: a RELION 3.1 ``.star`` file (optics + particles blocks) and its ``.mrcs`` stack.

Images (n, N, N) float32 in the STAR file's order; ``rlnImageName`` is ``index@stack.mrcs`` with
1-based indices into one stack; defocus U/V in Å, angle in degrees, pixel size in Å, voltage in kV,
spherical aberration in mm (RELION's units).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import mrcfile
import numpy as np
import pandas as pd
from helpers.core.errors import InputError


@dataclasses.dataclass
class ParticleStack:
    """Particle images with their optics and CTF parameters.

    images: (n, N, N) float32 (memory map when possible); pixel_size Å; table: the RELION
    particles block (rlnDefocusU/V Å, rlnDefocusAngle °, true-pose columns if simulated);
    optics: dict with voltage (kV), cs (mm), amplitude_contrast.
    """
    images: np.ndarray
    pixel_size: float
    table: pd.DataFrame
    optics: dict


NEEDED_PARTICLES = ["rlnImageName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]
NEEDED_OPTICS = ["rlnImagePixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]


def read_particles(star_path) -> ParticleStack:
    """Read a RELION 3.1 STAR file (optics + particles blocks) and its ``.mrcs`` stack."""
    star_path = Path(star_path)
    parts, optics = _read_star(star_path)
    names = parts["rlnImageName"].astype(str).str.split("@")
    if not names.map(len).eq(2).all():
        bad = parts["rlnImageName"][~names.map(len).eq(2)].iloc[0]
        raise InputError(star_path, f"rlnImageName {bad!r} is not of the form 'index@stack.mrcs'.",
                         "Use RELION image names (1-based index @ stack file).")
    stack_files = names.str[1].unique()
    if len(stack_files) != 1:
        raise InputError(star_path, "refers to several image stacks.", "Use one .mrcs per STAR file.")
    stack = star_path.parent / stack_files[0]
    images = _read_stack(stack)
    idx = _image_indices(star_path, names.str[0], len(images), stack)
    sel = images[idx]
    if not np.isfinite(sel).all():
        bad = np.flatnonzero(~np.isfinite(sel.reshape(len(sel), -1)).all(1))
        raise InputError(stack, f"image(s) {(idx[bad] + 1).tolist()[:10]} (1-based) contain NaN or Inf.",
                         "Drop those particles from the STAR file.")
    return ParticleStack(images=sel, pixel_size=float(optics["rlnImagePixelSize"]), table=parts,
                         optics={"voltage": float(optics["rlnVoltage"]),
                                 "cs": float(optics["rlnSphericalAberration"]),
                                 "amplitude_contrast": float(optics["rlnAmplitudeContrast"])})


def _read_star(star_path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """The particles block and the first optics row, with the columns :func:`read_particles` needs,
    their CTF values finite and the pixel size and voltage positive; else one error naming all."""
    import starfile

    try:
        blocks = starfile.read(star_path, always_dict=True)
    except Exception as exc:
        raise InputError(star_path, f"cannot be parsed as STAR ({exc}).", "Give a RELION 3.1 STAR file.") from None
    if "optics" not in blocks or "particles" not in blocks:
        raise InputError(star_path, "needs 'optics' and 'particles' blocks (RELION 3.1).",
                         "Convert with relion_convert_star.")
    parts = blocks["particles"]
    problems = []
    miss_p = [c for c in NEEDED_PARTICLES if c not in parts.columns]
    miss_o = [c for c in NEEDED_OPTICS if c not in blocks["optics"].columns]
    if miss_p:
        problems.append(f"particles block lacks {miss_p}")
    if miss_o:
        problems.append(f"optics block lacks {miss_o}")
    if problems:
        raise InputError(star_path, "; ".join(problems) + ".",
                         "Export a RELION 3.1 STAR with image names, CTF parameters and optics.")
    optics = blocks["optics"].iloc[0]
    for c in NEEDED_PARTICLES[1:]:
        v = pd.to_numeric(parts[c], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(v).all():
            problems.append(f"column {c} has {int((~np.isfinite(v)).sum())} empty or non-numeric value(s)")
    for c in NEEDED_OPTICS:
        try:
            v = float(optics[c])
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or (c in ("rlnImagePixelSize", "rlnVoltage") and v <= 0):
            problems.append(f"optics {c} = {optics[c]!r} is not a positive number")
    if problems:
        raise InputError(star_path, "; ".join(problems) + ".", "Fix those columns in the STAR file.")
    return parts, optics


def _read_stack(stack: Path) -> np.ndarray:
    """The images (n, N, N) float32 of an ``.mrcs`` stack (a single image gets n = 1)."""
    try:
        with mrcfile.mmap(stack, mode="r") as m:
            images = np.array(m.data, dtype=np.float32)
    except Exception as exc:
        raise InputError(stack, f"cannot be read ({exc}).", "Check the .mrcs stack.") from None
    return images[None] if images.ndim == 2 else images


def _image_indices(star_path: Path, index_text: pd.Series, n_images: int, stack: Path) -> np.ndarray:
    """0-based stack positions from the 1-based indices of ``rlnImageName`` (text before the '@'),
    each an integer within the stack's ``n_images``."""
    idx_raw = pd.to_numeric(index_text, errors="coerce").to_numpy()
    if not np.isfinite(idx_raw).all() or (idx_raw != np.round(idx_raw)).any():
        raise InputError(star_path, "rlnImageName has non-integer image indices.", "Use 1-based integer indices.")
    idx = idx_raw.astype(int) - 1
    if (idx < 0).any():
        raise InputError(star_path, f"{int((idx < 0).sum())} image index(es) are 0 or negative: RELION's indices "
                                    "start at 1 (a 0-based file would silently read the wrong images).",
                         "Add 1 to every index (1@stack.mrcs is the first image).")
    if (idx >= n_images).any():
        raise InputError(star_path, f"image index {int(idx.max()) + 1} is beyond the stack's {n_images} images "
                                    f"({stack.name}).", "Use the STAR file that belongs to this stack.")
    return idx
