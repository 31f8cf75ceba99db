"""The ground truth on disk: its maps, ``metadata.csv`` and mask, and finding them in a data folder.

* maps: ``.npy``/``.pt`` stack (N, n³) or (N, n, n, n) (memory-mapped), or a folder of MRCs
  (read lazily, :class:`MapFolder`);
* ``metadata.csv``: index, volumes, populations_count, pc1, populations;
* mask ``.mrc``: values clipped to [0, 1] and used as weights; where a metric needs a voxel
  selection, voxels with weight > 0.5 are selected (the published code's ``mask != 0`` is
  ``mask_rule="nonzero"``).
"""
from __future__ import annotations

from pathlib import Path
import mrcfile
import numpy as np
import pandas as pd
from helpers.core.errors import InputError
from helpers.io.mapset import MapSet
from helpers.io.mrc import list_map_files, read_map_stack, read_mrc
from helpers.io.submission import check_populations


GT_METADATA_COLUMNS = ["index", "volumes", "populations_count", "pc1", "populations"]


class MapFolder:
    """A GT given as a folder of MRC maps, read lazily like a memory-mapped (N, n, n, n) float32
    stack: ``shape``, ``dtype``, ``len``; indexing (an int, a slice, an index array) reads only
    the files holding the requested maps (each checked as :func:`read_map_stack` does), so a
    chunked kernel streams the folder instead of stacking it in memory. ``np.asarray`` reads it
    all. ``reads`` counts the files read (for tests and benchmarks)."""

    lazy = True  # read from disk when indexed (helpers.io.mapset.on_disk)

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
    path = Path(path)
    df = _read_metadata_csv(path)
    if n_maps is not None and len(df) != n_maps:
        raise InputError(path, f"{len(df)} rows for {n_maps} GT maps.", "Use the metadata of this GT stack.")
    if map_names is not None and "volumes" in df.columns:
        return _rows_by_volumes(path, df, map_names)
    if "index" in df.columns and n_maps is not None:
        return _rows_by_index(path, df, n_maps)
    return df


def _read_metadata_csv(path: Path) -> pd.DataFrame:
    """The CSV with ``pc1`` and ``populations`` numeric, finite, populations ≥ 0; else one error naming all."""
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
    return df


def _rows_by_volumes(path: Path, df: pd.DataFrame, map_names: list[str]) -> pd.DataFrame:
    """Rows in the order of the GT map files ``map_names``, matched by file name in ``volumes``."""
    from helpers.io.schema import notice

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


def _rows_by_index(path: Path, df: pd.DataFrame, n_maps: int) -> pd.DataFrame:
    """Rows sorted by ``index`` where it is the stack position (a permutation of 0…N−1 or 1…N);
    otherwise (a row id in a larger set) as they are."""
    from helpers.io.schema import notice

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
    from helpers.io.schema import notice

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
