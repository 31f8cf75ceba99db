"""MRC maps and folders of maps: reading (header checks, no complex or truncated data), writing, natural sort.

Every reader raises :class:`~helpers.core.errors.InputError` naming the file and the fix; none
modifies its input.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path
import mrcfile
import numpy as np
from helpers.core.errors import InputError


def natural_key(name: str):
    """Sort key that orders ``2.mrc`` before ``10.mrc``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


def read_mrc(path, allow_2d: bool = False):
    """Read an MRC map. Returns (data float32 (N, N, N) — or (n, N, N) if ``allow_2d`` —,
    voxel size Å or None when the header says 0).

    Leading singleton axes are dropped ((1, N, N, N) masks). Refuses non-cubic maps,
    NaN/Inf voxels and unreadable or truncated files.
    """
    path = Path(path)
    data, vs, vs_all = _open_mrc(path)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 3 or (not allow_2d and len(set(data.shape)) != 1):
        raise InputError(path, f"map is not cubic: shape {data.shape}.",
                         "Pad or crop the map to a cubic box (e.g. relion_image_handler --new_box).")
    _check_map_values(data, path, vs_all)
    return data, (vs if vs > 0 else None)


def _open_mrc(path: Path):
    """(data float32, voxel size x, (x, y, z) voxel sizes) of an MRC file, or a clear error."""

    try:
        with warnings.catch_warnings(record=True) as caught, mrcfile.open(path, mode="r", permissive=False) as m:
            warnings.simplefilter("always")
            raw, mode, nz = m.data, int(m.header.mode), int(m.header.nz)
            if np.iscomplexobj(raw):
                raise InputError(path, f"holds complex values (MRC mode {mode}): a Fourier transform, not a map.",
                                 "Give the real-space map (inverse-transform it first).")
            data = np.array(raw, dtype=np.float32)
            vs_all = (float(m.voxel_size.x), float(m.voxel_size.y), float(m.voxel_size.z))
    except InputError:
        raise
    except Exception as exc:  # mrcfile raises ValueError / OSError on bad headers and sizes
        raise InputError(path, f"cannot be read as MRC ({exc}).",
                         "Check that the file is a complete MRC map (re-export or re-copy it).") from None
    extra = [str(w.message) for w in caught if "larger than expected" in str(w.message)]
    if extra:
        section = data[0].nbytes if data.ndim >= 2 else data.itemsize
        n_bytes = int(extra[0].split("MRC file is ")[1].split()[0]) if "MRC file is " in extra[0] else 0
        raise InputError(path, f"the header says {nz} sections but the file holds {n_bytes} more bytes "
                               f"({n_bytes / section:.3g} more sections of {data.shape[-2]}×{data.shape[-1]}): "
                               "header and data disagree.",
                         "Re-export the map from the program that made it (the header's nz must count every section).")
    return data, vs_all[0], vs_all


def _check_map_values(data: np.ndarray, path: Path, vs_all) -> None:
    """Refuse NaN/Inf voxels and anisotropic voxel sizes."""
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise InputError(path, f"{bad} voxels are NaN or Inf.",
                         "Fix the map in the method that produced it (or replace them by 0 yourself).")
    if len({round(v, 4) for v in vs_all}) > 1:
        raise InputError(path, f"anisotropic voxel size {vs_all}.", "Resample to isotropic voxels.")


def write_mrc(path, data, voxel_size: float, overwrite: bool = False) -> Path:
    """Write a float32 map (or 2D stack) with its voxel size, atomically; refuse to overwrite
    an existing file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "exists already; hetbook never overwrites data.",
                         "Delete it yourself or write elsewhere.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.writing")  # mrcfile needs a path: write, then rename
    with mrcfile.new(tmp_path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=np.float32))
        m.voxel_size = voxel_size
    tmp_path.replace(path)
    return path


MAP_SUFFIXES = (".mrc", ".map", ".mrcs")


def list_map_files(folder) -> list[Path]:
    """The map files (``*.mrc``, ``*.map``, ``*.mrcs``) of a folder in natural order, skipping
    files named like masks."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found.", "Point the config's path at the submission folder.")
    files = [f for f in folder.iterdir() if f.suffix.lower() in MAP_SUFFIXES and "mask" not in f.name.lower()
             and not f.name.startswith(".")]
    if not files:
        others = sorted(f.name for f in folder.iterdir())[:5]
        raise InputError(folder, f"contains no maps (.mrc, .map or .mrcs){'; it holds ' + ', '.join(others) if others else ''}.",
                         "Put the submission's maps in it (one MRC per map, or one MRC stack of maps).")
    return sorted(files, key=lambda f: natural_key(f.name))


def read_map_stack(path):
    """Maps of one MRC file: (1, N, N, N) for a map, (k, N, N, N) for a volume stack (ISPG 401,
    or a (k·N, N, N) block of k cubic maps). Returns (maps, voxel size or None)."""
    path = Path(path)
    data, vs, vs_all = _open_mrc(path)
    while data.ndim > 4 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 3 and data.shape[1] == data.shape[2] and data.shape[0] != data.shape[1] \
            and data.shape[0] % data.shape[1] == 0:
        k = data.shape[0] // data.shape[1]
        data = data.reshape(k, data.shape[1], data.shape[1], data.shape[1])
        from helpers.io.schema import notice
        notice(path, f"read as a stack of {k} maps of {data.shape[1]}³ (its z extent is {k} box lengths).")
    if data.ndim == 3:
        if len(set(data.shape)) != 1:
            raise InputError(path, f"map is not cubic: shape {data.shape}.",
                             "Pad or crop the map to a cubic box (e.g. relion_image_handler --new_box).")
        data = data[None]
    if data.ndim != 4 or len(set(data.shape[1:])) != 1:
        raise InputError(path, f"shape {data.shape} is neither a cubic map nor a stack of cubic maps.",
                         "Write one cubic map per file, or a stack of cubic maps.")
    _check_map_values(data, path, vs_all)
    return data, (vs if vs > 0 else None)


def read_map_folder(folder, voxel_size: float | None = None) -> tuple[np.ndarray, float, list[Path]]:
    """The maps of a folder in natural order: (maps (n, N, N, N), voxel size Å, files).

    The voxel size comes from the MRC headers; ``voxel_size`` (the config's value) is used when
    the headers say 0 and must agree with them otherwise. All maps must share box and voxel size.
    """
    folder = Path(folder)
    files = list_map_files(folder)
    sizes = set()
    first_shape = None
    out, count = None, 0  # maps written straight into one array (a list then np.stack held both)
    for f in files:
        stack, vs = read_map_stack(f)
        for k, data in enumerate(stack):
            name = f.name if len(stack) == 1 else f"{f.name} (map {k + 1} of the stack)"
            if first_shape is None:
                first_shape = data.shape
            elif data.shape != first_shape:
                raise InputError(f, f"box {data.shape} differs from {files[0].name}'s {first_shape}.",
                                 "All maps of a submission must share one box size.")
            if not np.any(data):
                raise InputError(name if len(stack) > 1 else f, "map is all zeros.",
                                 "Remove it (and its population) or fix it.")
            if float(data.max()) == float(data.min()):
                raise InputError(f, f"{name} is constant ({float(data.max()):g}): no structure to compare.",
                                 "Remove it (and its population) or fix it.")
        if out is None:  # room for every file holding as many maps as the first one
            out = np.empty((len(files) * len(stack), *first_shape), dtype=np.float32)
        elif count + len(stack) > len(out):  # a later file holds more maps (rare): grow
            out = np.concatenate([out[:count], np.empty((len(stack) + len(out) // 2, *first_shape), dtype=np.float32)])
        out[count:count + len(stack)] = stack
        count += len(stack)
        del stack
        sizes.add(None if vs is None else round(vs, 4))
    known = {s for s in sizes if s is not None}
    if len(known) > 1:
        raise InputError(folder, f"maps have different voxel sizes {sorted(known)} Å.",
                         "Resample all maps of a submission to one voxel size.")
    if known:
        vs = known.pop()
        if voxel_size is not None and abs(vs - voxel_size) > 1e-3 * voxel_size:
            raise InputError(folder, f"MRC headers say {vs} Å but the config says {voxel_size} Å.",
                             "Correct the config's pixel_size/voxel_size.")
    elif voxel_size is None:
        raise InputError(folder, "voxel size is 0 in every MRC header and not given in the config.",
                         "Add pixel_size (or voxel_size) in Å to the submission config.")
    else:
        vs = voxel_size
    return out[:count], vs, files
