"""Readers (and a few writers) for the challenge's real file formats.

Every reader raises :class:`~helpers.errors.InputError` naming the file and the fix; none
modifies its input. Formats (``challenge-metrics.md`` §1):

* raw submission: a folder of ``*.mrc`` maps (natural sort; names containing "mask" are
  skipped) + ``populations.txt`` (one float per line);
* challenge config: ``submission_config.json`` (key ``"gt"`` first, then ``"0"``, ``"1"``, …)
  or a YAML file with ``gt:`` and ``submissions:`` (a list of the same entries);
* preprocessed submission: a torch-pickled dict ``{volumes, populations, id}`` (``.pt``);
* GT: ``.npy``/``.pt`` stack (N, n³) or (N, n, n, n) (memory-mapped), or a folder of MRCs,
  + ``metadata.csv`` (index, volumes, populations_count, pc1, populations) + a mask ``.mrc``;
* particles: an ``.mrcs`` stack + RELION 3.1 ``.star`` (optics + particles blocks).

Populations that do not sum to 1 (within 1e-6) but are otherwise valid are **renormalised**
and the fact is recorded in the provenance (the challenge's own code renormalises too).
Soft masks: values are clipped to [0, 1] and used as weights; where a metric needs a voxel
selection, voxels with weight > 0.5 are selected (the published code's ``mask != 0`` is
available as ``mask_rule="nonzero"``).
"""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from .errors import InputError
from .mapset import MapSet, slug

GT_METADATA_COLUMNS = ["index", "volumes", "populations_count", "pc1", "populations"]


def natural_key(name: str):
    """Sort key that orders ``2.mrc`` before ``10.mrc``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(name))]


# ----------------------------------------------------------------------------------- MRC
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
    import warnings

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


# ----------------------------------------------------------------------------- populations
def check_populations(p, n_maps: int, where, provenance: dict | None = None) -> np.ndarray:
    """Validate populations for ``n_maps`` maps; renormalise if they do not sum to 1."""
    p = np.asarray(p, dtype=np.float64).ravel()
    if p.size != n_maps:
        raise InputError(where, f"{p.size} populations for {n_maps} maps.",
                         "Give exactly one population per map, in the maps' natural-sort order.")
    if not np.isfinite(p).all():
        raise InputError(where, "populations contain NaN or Inf.", "Write finite numbers.")
    if (p < 0).any():
        raise InputError(where, f"{int((p < 0).sum())} negative populations (min {p.min():.3g}).",
                         "Populations are probabilities: make them non-negative.")
    s = p.sum()
    if s <= 0:
        raise InputError(where, "populations are all zero.", "Give each map its population.")
    if abs(s - 1) > 1e-6:
        from .schema import notice
        notice(where, f"populations sum to {s:.6g}; renormalised to 1.")
        if provenance is not None:
            provenance["populations_renormalised_from_sum"] = float(s)
    return p / s


def read_populations(path, n_maps: int, provenance: dict | None = None) -> np.ndarray:
    """Read ``populations.txt`` (one float per line, no header) for ``n_maps`` maps."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "populations file not found.",
                         "Write populations.txt next to the maps (one number per line).")
    try:
        p = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise InputError(path, f"not a column of numbers ({exc}).",
                         "Write one population per line, no header.") from None
    return check_populations(p, n_maps, path, provenance)


# ---------------------------------------------------------------------- raw submissions
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
        from .schema import notice
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


def read_submission_folder(folder, populations_file=None, voxel_size: float | None = None,
                           label: str | None = None, extra: dict | None = None,
                           native_voxel_size: float | None = None) -> MapSet:
    """Read a raw submission folder into a :class:`MapSet`: its maps (:func:`read_map_folder`)
    and ``populations.txt`` (or ``populations_file``). ``native_voxel_size`` (Å): the voxel size
    the method made the maps at, if they were resampled before submission; None: the maps'
    voxel size (from the MRC headers, else ``voxel_size``)."""
    folder = Path(folder)
    maps, vs, files = read_map_folder(folder, voxel_size)
    prov = {"source": str(folder), "files": [f.name for f in files], "steps": []}
    if extra:
        prov.update(extra)
    pop_path = Path(populations_file) if populations_file else folder / "populations.txt"
    pops = read_populations(pop_path, len(maps), prov)
    return MapSet(maps, pops, vs, label or folder.name, prov,
                  native_voxel_size=vs if native_voxel_size is None else native_voxel_size)


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


# ------------------------------------------------------------------------------ configs
@dataclasses.dataclass
class SubmissionEntry:
    """One submission of a config, in one schema whatever the config's format."""
    label: str
    path: Path
    populations_file: Path
    box_size: int | None
    voxel_size: float | None
    flip: bool = False
    align: bool = False
    extra: dict = dataclasses.field(default_factory=dict)
    native_voxel_size: float | None = None

    def read(self) -> MapSet:
        return read_submission_folder(self.path, self.populations_file, self.voxel_size,
                                      self.label, {"config": self.extra}, self.native_voxel_size)


def _locate(p, base: Path, what: str, config: Path) -> Path:
    """Resolve a config path: as written relative to the config folder, else by its last
    component(s) next to the config (the challenge's configs hold repo-relative paths)."""
    p = Path(p)
    if p.is_absolute():
        cands = [p]
    else:
        cands = [base / p, base.parent / p]
        if base.name == p.name:
            cands.append(base)
        cands += [base / p.name, base.parent / p.name]
    for i, c in enumerate(cands):
        if c.exists():
            if i >= 2 and c != base:  # found by its last component only: say which folder is used
                from .schema import notice

                notice(config, f"{what} {p} does not exist as written; using {c} (the same name next to the "
                               "config). Write the path relative to the config's folder if that is not the one.")
            return c
    raise InputError(config, f"{what} {p} not found (tried {', '.join(str(c) for c in cands)}).",
                     "Fix the path in the config (absolute, or relative to the config's folder).")


def read_config(path):
    """Read and validate a challenge submission config (JSON with ``gt`` first, or YAML).

    Validation (:mod:`helpers.schema`): typed, range-checked fields, duplicated JSON keys,
    result-name collisions, a config without submissions, alignment without a reference; every
    problem of the file is listed in one :class:`InputError`. Returns ``(gt, entries)``: ``gt`` a
    dict (path, box_size, voxel_size, ref_align_fname) and ``entries`` a list of
    :class:`SubmissionEntry`.
    """
    from .schema import load_config_text, validate_config

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "config file not found.", "Give the path of submission_config.json/.yaml.")
    cfg = load_config_text(path)
    gt_model, models = validate_config(cfg, path)
    base = path.parent
    gt = dict(cfg["gt"])
    gt.update(box_size=gt_model.box_size, voxel_size=float(gt_model.voxel_size))
    entries, problems = [], []
    raw_entries = cfg["submissions"] if isinstance(cfg.get("submissions"), list) else [cfg[k] for k in cfg if k != "gt"]
    for m, raw in zip(models, raw_entries):
        try:
            folder = _locate(m.path, base, "submission folder", path)
            pop = m.populations_file or folder / "populations.txt"
            pop = _locate(pop, base, "populations file", path) if not Path(pop).is_file() else Path(pop)
        except InputError as exc:
            problems.append(f"{m.label!r}: {exc.problem}")
            continue
        extra = {k: v for k, v in m.model_dump().items() if k not in ("label", "path", "populations_file")}
        extra.update({k: v for k, v in raw.items() if k not in extra})
        entries.append(SubmissionEntry(
            label=m.label, path=folder, populations_file=Path(pop), box_size=m.box_size,
            voxel_size=None if m.voxel_size is None else float(m.voxel_size), flip=m.flip, align=m.align,
            extra=extra, native_voxel_size=None if m.native_voxel_size is None else float(m.native_voxel_size)))
    if problems:
        raise InputError(path, f"{len(problems)} path(s) not found:\n  - " + "\n  - ".join(problems),
                         "Fix the paths in the config (absolute, or relative to the config's folder).")
    return gt, entries


# ---------------------------------------------------------------------- preprocessed .pt
def _safe_numpy_globals():
    """numpy array reconstruction helpers: data only, no code execution; allowed by default.

    Files written with numpy 1 name ``numpy.core.multiarray._reconstruct``; numpy 2 moved it to
    ``numpy._core``, so both names are registered."""
    try:
        from numpy._core import multiarray as ma
    except ImportError:  # numpy 1
        from numpy.core import multiarray as ma
    out = [(ma._reconstruct, "numpy.core.multiarray._reconstruct"),
           (ma._reconstruct, "numpy._core.multiarray._reconstruct"), np.ndarray, np.dtype]
    out += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32")]
    return out


def read_preprocessed_pt(path, voxel_size: float, allow_unsafe_pickle: bool = False,
                         native_voxel_size: float | None = None) -> MapSet:
    """Read a preprocessed challenge submission ``.pt`` (dict with volumes, populations, id).

    Loaded with ``torch.load(weights_only=True)`` plus numpy's array types (data only). Files
    that need arbitrary pickled objects are refused unless ``allow_unsafe_pickle=True`` — a
    pickle can run code, so only opt in for files you trust. The ``.pt`` holds no voxel size:
    pass the GT's (preprocessed submissions are on the GT grid), and ``native_voxel_size`` (Å)
    where the method made its maps on a coarser grid (None: ``voxel_size``).
    """
    import torch

    path = Path(path)
    try:
        if allow_unsafe_pickle:
            d = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_safe_numpy_globals()):
                d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise InputError(path, "needs unsafe unpickling (it stores Python objects, which can run code).",
                             "If you trust the file, pass allow_unsafe_pickle=True.") from None
        raise InputError(path, f"cannot be read by torch.load ({exc}).", "Re-save the submission.") from None
    if not isinstance(d, dict) or "volumes" not in d or "populations" not in d:
        raise InputError(path, "is not a dict with 'volumes' and 'populations'.",
                         "Save the submission as {'volumes': ..., 'populations': ..., 'id': ...}.")
    vols = np.asarray(d["volumes"].numpy() if hasattr(d["volumes"], "numpy") else d["volumes"], dtype=np.float32)
    if vols.ndim == 2:
        n = round(vols.shape[1] ** (1 / 3))
        vols = vols.reshape(-1, n, n, n)
    if not np.isfinite(vols).all():
        raise InputError(path, "volumes contain NaN or Inf.", "Fix the maps.")
    pops = d["populations"]
    pops = np.asarray(pops.numpy() if hasattr(pops, "numpy") else pops, dtype=np.float64)
    prov = {"source": str(path), "steps": []}
    pops = check_populations(pops, vols.shape[0], path, prov)
    label = str(d.get("id", path.stem))
    if "rotation_matrix" in d:
        prov["rotation_matrix"] = np.asarray(d["rotation_matrix"]).tolist()
    return MapSet(vols, pops, voxel_size, label, prov, native_voxel_size=native_voxel_size)


# ---------------------------------------------------------------------------------- GT
class MapFolder:
    """A GT given as a folder of MRC maps, read lazily like a memory-mapped (N, n, n, n) float32
    stack: ``shape``, ``dtype``, ``len``; indexing (an int, a slice, an index array) reads only
    the files holding the requested maps (each checked as :func:`read_map_stack` does), so a
    chunked kernel streams the folder instead of stacking it in memory. ``np.asarray`` reads it
    all. ``reads`` counts the files read (for tests and benchmarks)."""

    lazy = True  # read from disk when indexed (helpers.mapset.on_disk)

    def __init__(self, folder):
        self.folder = Path(folder)
        self.files = list_map_files(self.folder)
        counts, box = [], None
        for f in self.files:
            try:
                with mrcfile.open(f, mode="r", header_only=True, permissive=False) as m:
                    nx, ny, nz = int(m.header.nx), int(m.header.ny), int(m.header.nz)
            except Exception as exc:
                raise InputError(f, f"cannot be read as MRC ({exc}).",
                                 "Check that the file is a complete MRC map (re-export or re-copy it).") from None
            if nx != ny or nz % nx:
                raise InputError(f, f"shape ({nz}, {ny}, {nx}) is neither a cubic map nor a stack of cubic maps.",
                                 "Write one cubic map per file, or a stack of cubic maps.")
            if box is not None and nx != box:
                raise InputError(f, f"box {nx} differs from {self.files[0].name}'s {box}.",
                                 "Give every GT map the same box.")
            box = nx
            counts.append(nz // nx)
        self.box = box
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.shape = (int(self.starts[-1]), box, box, box)
        self.dtype = np.dtype(np.float32)
        self.ndim, self.itemsize = 4, 4
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * 4
        self.reads = 0

    def __len__(self):
        return self.shape[0]

    def _maps(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.float32)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        for fi in np.unique(which):
            stack, _ = read_map_stack(self.files[fi])
            self.reads += 1
            sel = which == fi
            out[sel] = stack[idx[sel] - self.starts[fi]]
        return out

    def __getitem__(self, key):
        idx = np.arange(self.shape[0])[key]
        if np.ndim(idx) == 0:
            return self._maps(np.array([idx]))[0]
        return self._maps(np.asarray(idx))

    def __array__(self, dtype=None, copy=None):
        a = self._maps(np.arange(self.shape[0]))
        return a if dtype is None else a.astype(dtype)


LAZY_FOLDER_BYTES = 2 ** 30  # an MRC-folder GT larger than this stays on disk (MapFolder)


def read_gt_maps(path, box: int | None = None, mmap: bool = True, check_finite: bool = True,
                 lazy: bool | None = None) -> np.ndarray:
    """GT map stack (N, n, n, n) float32 from ``.npy`` (memory-mapped), ``.pt`` or an MRC folder
    (above ``LAZY_FOLDER_BYTES``, or with ``lazy=True``, a lazy :class:`MapFolder`: maps are
    read when a kernel asks for them; smaller folders are read into an array).

    ``check_finite`` reads the whole stack once to refuse NaN/Inf maps (chunk by chunk); chapters
    whose kernels check every chunk they read, or that need only the metadata, pass False."""
    path = Path(path)
    if path.is_dir():
        arr = MapFolder(path)  # read lazily, chunk by chunk, by the kernels
        if not (lazy if lazy is not None else arr.nbytes > LAZY_FOLDER_BYTES):
            arr = np.asarray(arr)  # small: a plain array
    elif not path.is_file():
        raise InputError(path, "GT maps not found.", "Point gt_maps at the .npy/.pt stack or MRC folder.")
    elif path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(path, f"cannot be read as .npy ({exc}).", "Re-save it with numpy.save.") from None
        if not isinstance(arr, np.ndarray):  # np.load opened an .npz archive
            names = list(getattr(arr, "files", []))
            raise InputError(path, f"is an .npz archive (arrays {names[:4]}), not an .npy array.",
                             "Save the GT stack with numpy.save (one array), or rename the file to .npz and "
                             "extract its stack.")
    elif path.suffix == ".pt":
        import torch
        try:
            t = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:
            raise InputError(path, f"cannot be read as a tensor ({exc}).", "Save a plain tensor.") from None
        if isinstance(t, dict):  # a preprocessed submission or a state dict, not a GT stack
            keys = list(t)[:5]
            t = t.get("volumes", t.get("maps")) if isinstance(t.get("volumes", t.get("maps")), torch.Tensor) else None
            if t is None:
                raise InputError(path, f"holds a dict (keys {keys}), not a tensor of GT maps.",
                                 "Save the GT stack itself: torch.save(maps, path) with maps (N, n, n, n).")
        if not isinstance(t, torch.Tensor):
            raise InputError(path, f"holds a {type(t).__name__}, not a tensor of GT maps.",
                             "Save the GT stack itself: torch.save(maps, path) with maps (N, n, n, n).")
        arr = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    else:
        raise InputError(path, "unknown GT format.", "Use .npy, .pt or a folder of .mrc maps.")
    if arr.ndim == 2:
        n = round(arr.shape[1] ** (1 / 3))
        if n ** 3 != arr.shape[1]:
            raise InputError(path, f"rows of length {arr.shape[1]} are not cubes.", "Give (N, n³) or (N, n, n, n).")
        arr = arr.reshape(-1, n, n, n)
    if arr.ndim != 4 or len(set(arr.shape[1:])) != 1:
        raise InputError(path, f"shape {arr.shape} is not (N, n, n, n).", "Give (N, n³) or (N, n, n, n).")
    if box is not None and arr.shape[-1] != box:
        raise InputError(path, f"box {arr.shape[-1]} but the config says {box}.", "Fix the config's box_size.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(path, f"dtype {arr.dtype} is not a floating-point map stack.", "Save the maps as float32.")
    if check_finite:
        check_finite_stack(arr, path)
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def check_finite_stack(arr, path, chunk_bytes: int = 256 * 2 ** 20) -> None:
    """Refuse a map stack with NaN/Inf voxels, reading a memory map chunk by chunk; names the maps."""
    per = max(1, chunk_bytes // max(1, arr[0].nbytes))
    bad = []
    for a in range(0, arr.shape[0], per):
        block = np.asarray(arr[a:a + per])
        ok = np.isfinite(block.reshape(len(block), -1)).all(1)
        bad += (np.flatnonzero(~ok) + a).tolist()
        if len(bad) >= 10:
            break
    if bad:
        raise InputError(path, f"GT map(s) {bad[:10]} (0-based) contain NaN or Inf voxels.",
                         "Fix or drop these maps (and their metadata rows) before scoring.")


def read_gt_metadata(path, n_maps: int | None = None, map_names: list[str] | None = None) -> pd.DataFrame:
    """GT ``metadata.csv``, its rows in the order of the GT maps.

    Checks the columns, the number of rows, finite numeric ``pc1`` and ``populations`` (≥ 0).
    Rows are matched to maps by identity, not position, where the file says which map a row is:
    with ``map_names`` (a GT given as a folder of MRC files) by the ``volumes`` column; for a
    stack, when ``index`` is a permutation of 0…N−1 (or 1…N) it is read as the stack position (a
    file re-sorted in a spreadsheet is put back in order, with a notice). Otherwise (the
    challenge's ``index`` is a row id in a larger set) rows follow the stack order, as the
    challenge's code assumes (its own metadata lists rows by MD-PC1 with ids such as 3238, 3020, …).
    """
    from .schema import notice

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "GT metadata not found.", "Put metadata.csv next to the GT maps.")
    try:
        df = pd.read_csv(path)
    except Exception as exc:
        raise InputError(path, f"cannot be read as CSV ({exc}).", "Give the GT metadata.csv.") from None
    missing = [c for c in ("pc1", "populations") if c not in df.columns]
    if missing:
        raise InputError(path, f"missing columns {missing} (has {list(df.columns)[:8]}).",
                         f"Columns must include {GT_METADATA_COLUMNS}.")
    problems = []
    for col in ("pc1", "populations"):
        v = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(~np.isfinite(v.to_numpy(dtype=float)))
        if len(bad):
            problems.append(f"column '{col}' has {len(bad)} empty, non-numeric or non-finite value(s) "
                            f"(rows {(bad + 2).tolist()[:6]} of the file)")
        df[col] = v
    if (df["populations"] < 0).any():
        problems.append(f"column 'populations' has {int((df['populations'] < 0).sum())} negative value(s)")
    if problems:
        raise InputError(path, "; ".join(problems) + ".", "Give every GT map a finite pc1 and a population ≥ 0.")
    if n_maps is not None and len(df) != n_maps:
        raise InputError(path, f"{len(df)} rows for {n_maps} GT maps.", "Use the metadata of this GT stack.")
    if map_names is not None and "volumes" in df.columns:
        names = df["volumes"].astype(str).map(lambda x: Path(x).name).tolist()
        missing = sorted(set(map_names) - set(names))
        if missing:
            raise InputError(path, f"no row for GT map file(s) {missing[:5]} (column 'volumes').",
                             "Give one row per GT map file, its name in 'volumes'.")
        if len(set(names)) != len(names):
            raise InputError(path, "column 'volumes' names a file twice.", "One row per GT map file.")
        pos = {n: i for i, n in enumerate(names)}
        order = [pos[n] for n in map_names]
        if order != list(range(len(order))):
            notice(path, "rows matched to the GT map files by the 'volumes' column (file order differs).")
        return df.iloc[order].reset_index(drop=True)
    if "index" in df.columns and n_maps is not None:
        idx = pd.to_numeric(df["index"], errors="coerce").to_numpy()
        whole = np.isfinite(idx).all() and (idx == np.round(idx)).all()
        for base in (0, 1):  # index = the map's position in the stack, from 0 or from 1
            if whole and sorted(idx.astype(int).tolist()) == list(range(base, n_maps + base)):
                if not (idx == np.arange(base, n_maps + base)).all():
                    notice(path, "rows are not in stack order; re-ordered by the 'index' column "
                                 f"(index = position of the map in the GT stack, counted from {base}).")
                    return df.sort_values("index", kind="stable").reset_index(drop=True)
                return df
    return df


def read_gt(maps_path, metadata_path, voxel_size: float, label: str = "ground truth",
            check_finite: bool = True) -> MapSet:
    """The GT as a MapSet: maps in file order, metadata rows matched to them
    (:func:`read_gt_metadata`), populations renormalised, ``pc1`` attached (``check_finite``: see
    :func:`read_gt_maps`)."""
    maps = read_gt_maps(maps_path, check_finite=check_finite)
    names = [f.name for f in list_map_files(maps_path)] if Path(maps_path).is_dir() else None
    meta = read_gt_metadata(metadata_path, maps.shape[0], names)
    prov = {"source": str(maps_path), "metadata": str(metadata_path), "steps": []}
    pops = check_populations(meta["populations"].to_numpy(), maps.shape[0], metadata_path, None)
    return MapSet(maps, pops, voxel_size, label, prov, pc1=meta["pc1"].to_numpy())


MASK_OTHER_SCALE = 1.5  # a mask whose maximum exceeds this is on another scale (e.g. 0…255), not overshooting 1


def read_mask(path, box: int | None = None, mask_rule: str = "weight") -> np.ndarray:
    """Mask (N, N, N) float32 from MRC.

    ``mask_rule``: ``"weight"`` (default) clips to [0, 1] (a soft mask stays soft; a mask on
    another scale — maximum above :data:`MASK_OTHER_SCALE`, e.g. 0…255 — is divided by its maximum first);
    ``"binary"`` = weight > 0.5; ``"nonzero"`` = the published code's ``astype(bool)``.
    """
    from .schema import notice

    data, _ = read_mrc(path)
    if box is not None and data.shape != (box,) * 3:
        raise InputError(path, f"mask shape {data.shape} does not match the maps' box {box}.",
                         "Use the mask made for this GT grid (or resample it).")
    if not (data > 0.5 if mask_rule == "binary" else data > 0).any():
        raise InputError(path, "the mask selects no voxel (all ≤ 0).",
                         "Use the GT's mask (values 0…1, 1 inside the molecule).")
    if mask_rule == "weight" and data.max() > MASK_OTHER_SCALE:  # e.g. 0…255: another scale, not overshoot
        notice(path, f"mask values span {data.min():.3g}…{data.max():.3g}: read as a mask on another scale, divided "
                     f"by its maximum {data.max():.3g} (a soft edge stays soft), negative values set to 0.")
        data = data / data.max()
    elif mask_rule == "weight" and (data.min() < -1e-6 or data.max() > 1 + 1e-6):
        notice(path, f"mask values span {data.min():.3g}…{data.max():.3g}; clipped to [0, 1] and used as weights.")
    if mask_rule == "weight" and not (data > 0.5).any():
        raise InputError(path, f"no voxel has a mask weight above 0.5 (max {data.max():.3g}): the distances "
                               "would select nothing.", "Scale the mask to 0…1 (1 inside the molecule).")
    if mask_rule == "weight":
        return np.clip(data, 0, 1).astype(np.float32)
    if mask_rule == "binary":
        return (data > 0.5).astype(np.float32)
    if mask_rule == "nonzero":
        return (data != 0).astype(np.float32)
    raise ValueError(f"unknown mask_rule {mask_rule!r}")


# ---------------------------------------------------------------------------- particles
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


def read_particles(star_path) -> ParticleStack:
    """Read a RELION 3.1 STAR file (optics + particles blocks) and its ``.mrcs`` stack."""
    import starfile

    star_path = Path(star_path)
    try:
        blocks = starfile.read(star_path, always_dict=True)
    except Exception as exc:
        raise InputError(star_path, f"cannot be parsed as STAR ({exc}).", "Give a RELION 3.1 STAR file.") from None
    if "optics" not in blocks or "particles" not in blocks:
        raise InputError(star_path, "needs 'optics' and 'particles' blocks (RELION 3.1).",
                         "Convert with relion_convert_star.")
    parts = blocks["particles"]
    problems = []
    need_p = ["rlnImageName", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]
    need_o = ["rlnImagePixelSize", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]
    miss_p = [c for c in need_p if c not in parts.columns]
    miss_o = [c for c in need_o if c not in blocks["optics"].columns]
    if miss_p:
        problems.append(f"particles block lacks {miss_p}")
    if miss_o:
        problems.append(f"optics block lacks {miss_o}")
    if problems:
        raise InputError(star_path, "; ".join(problems) + ".",
                         "Export a RELION 3.1 STAR with image names, CTF parameters and optics.")
    optics = blocks["optics"].iloc[0]
    for c in need_p[1:]:
        v = pd.to_numeric(parts[c], errors="coerce").to_numpy(dtype=float)
        if not np.isfinite(v).all():
            problems.append(f"column {c} has {int((~np.isfinite(v)).sum())} empty or non-numeric value(s)")
    for c in need_o:
        try:
            v = float(optics[c])
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or (c in ("rlnImagePixelSize", "rlnVoltage") and v <= 0):
            problems.append(f"optics {c} = {optics[c]!r} is not a positive number")
    if problems:
        raise InputError(star_path, "; ".join(problems) + ".", "Fix those columns in the STAR file.")
    names = parts["rlnImageName"].astype(str).str.split("@")
    if not names.map(len).eq(2).all():
        bad = parts["rlnImageName"][~names.map(len).eq(2)].iloc[0]
        raise InputError(star_path, f"rlnImageName {bad!r} is not of the form 'index@stack.mrcs'.",
                         "Use RELION image names (1-based index @ stack file).")
    stack_files = names.str[1].unique()
    if len(stack_files) != 1:
        raise InputError(star_path, "refers to several image stacks.", "Use one .mrcs per STAR file.")
    stack = star_path.parent / stack_files[0]
    try:
        with mrcfile.mmap(stack, mode="r") as m:
            images = np.array(m.data, dtype=np.float32)
    except Exception as exc:
        raise InputError(stack, f"cannot be read ({exc}).", "Check the .mrcs stack.") from None
    if images.ndim == 2:
        images = images[None]
    idx_raw = pd.to_numeric(names.str[0], errors="coerce").to_numpy()
    if not np.isfinite(idx_raw).all() or (idx_raw != np.round(idx_raw)).any():
        raise InputError(star_path, "rlnImageName has non-integer image indices.", "Use 1-based integer indices.")
    idx = idx_raw.astype(int) - 1
    if (idx < 0).any():
        raise InputError(star_path, f"{int((idx < 0).sum())} image index(es) are 0 or negative: RELION's indices "
                                    "start at 1 (a 0-based file would silently read the wrong images).",
                         "Add 1 to every index (1@stack.mrcs is the first image).")
    if (idx >= len(images)).any():
        raise InputError(star_path, f"image index {int(idx.max()) + 1} is beyond the stack's {len(images)} images "
                                    f"({stack.name}).", "Use the STAR file that belongs to this stack.")
    sel = images[idx]
    if not np.isfinite(sel).all():
        bad = np.flatnonzero(~np.isfinite(sel.reshape(len(sel), -1)).all(1))
        raise InputError(stack, f"image(s) {(idx[bad] + 1).tolist()[:10]} (1-based) contain NaN or Inf.",
                         "Drop those particles from the STAR file.")
    return ParticleStack(images=sel, pixel_size=float(optics["rlnImagePixelSize"]), table=parts,
                         optics={"voltage": float(optics["rlnVoltage"]),
                                 "cs": float(optics["rlnSphericalAberration"]),
                                 "amplitude_contrast": float(optics["rlnAmplitudeContrast"])})


def find_gt(data_dir) -> dict:
    """Locate the GT files in ``data_dir/gt``: the maps (``maps_gt.npy``, ``maps_gt.pt``,
    ``maps_gt_flat.pt``, the only ``.npy``/``.pt`` there, or a folder ``maps/`` of MRC files),
    ``metadata.csv`` and ``mask.mrc``. Returns {"maps", "metadata", "mask"} paths; a clear error
    lists what was looked for."""
    gt = Path(data_dir) / "gt"
    if not gt.is_dir():
        seen = _gt_like(Path(data_dir))
        raise InputError(gt, "GT folder not found" + (": GT-like files are elsewhere — " + ", ".join(
                             str(p) for p in seen) if seen else f" (and no GT-like file under {data_dir})") + ".",
                         f"Put the GT maps, metadata.csv and mask.mrc in {gt}/"
                         + (f" (e.g. move or link {seen[0].parent} there)" if seen else "") + ".")
    cands = [gt / n for n in ("maps_gt.npy", "maps_gt.pt", "maps_gt_flat.pt", "maps")]
    found = [c for c in cands if c.exists()]
    if not found:
        stacks = sorted(p for p in gt.iterdir() if p.suffix in (".npy", ".pt"))
        found = stacks if len(stacks) == 1 else []
        if len(stacks) > 1:
            raise InputError(gt, f"several possible GT stacks {[p.name for p in stacks]}.",
                             "Name the GT stack maps_gt.npy (or .pt), or keep only one.")
    if not found:
        here = sorted(p.name + ("/" if p.is_dir() else "") for p in gt.iterdir())[:12]
        raise InputError(gt, "no GT maps found (looked for maps_gt.npy, maps_gt.pt, maps_gt_flat.pt, "
                             f"a single .npy/.pt, or a folder maps/ of MRC files); it holds {here or 'nothing'}.",
                         f"Put the GT stack in {gt}/ under one of those names.")
    meta = gt / "metadata.csv"
    mask = gt / "mask.mrc"
    if not mask.exists():
        masks = sorted(gt.glob("mask*.mrc"))
        mask = masks[0] if len(masks) == 1 else mask
    return {"maps": found[0], "metadata": meta, "mask": mask}


def _gt_like(root: Path, depth: int = 3) -> list[Path]:
    """GT-looking files (maps_gt*.npy/.pt, metadata.csv) within ``depth`` levels of ``root``."""
    out = []
    for pattern in ("maps_gt*.npy", "maps_gt*.pt", "metadata*.csv"):
        for d in range(depth):
            out += sorted(root.glob("/".join(["*"] * d + [pattern])))
    return out[:6]


def check_gt_box(config_path, box: int, maps_path) -> int:
    """The GT maps' box (from the stack's header, no map read) must be the config's ``box_size``;
    returns it, or raises an error naming both."""
    n = read_gt_maps(maps_path, check_finite=False).shape[-1]
    if n != int(box):
        raise InputError(config_path, f"the GT entry's box_size is {box} but the GT maps ({maps_path}) are {n}³.",
                         f"Set box_size: {n} in the GT entry (every submission is brought onto the GT's grid).")
    return n


def mapset_path(folder, label: str) -> Path:
    """Where the preprocessed MapSet of ``label`` lives in a results folder."""
    return Path(folder) / f"{slug(label)}.npz"
