"""The one data model for a set of maps: :class:`MapSet`.

A MapSet is what every notebook passes around: a submission (80 maps + populations), the
ground truth (thousands of maps + populations), a mock. On disk a MapSet is an ``.npz`` with

===============  ===================================================================
key              content
===============  ===================================================================
``maps``         float32 (n_maps, N, N, N), MRC axis order (z, y, x), voxel N//2 = centre
``populations``  float64 (n_maps,), non-negative, sums to 1
``voxel_size``   float, Å per voxel
``native_voxel_size``  optional float, Å per voxel of the maps as the method produced them,
                 before any resampling onto the GT grid (absent in older files: = ``voxel_size``)
``label``        str, unique name of the set (e.g. ``"averaged_gt"``)
``provenance``   JSON str: where the maps came from and every step applied to them
``pc1``          optional float64 (n_maps,): coordinate of each map along the motion
                 (the GT's ``metadata.csv`` column ``pc1``); absent for submissions
===============  ===================================================================
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from helpers.core.errors import InputError
from helpers.core.paths import atomic_write, slug  # noqa: F401 (slug: the name callers import from here)


def npz_memmap(path: str | Path, name: str) -> np.ndarray:
    """Read-only memory map of the array ``name`` of an uncompressed ``.npz`` (``np.savez``): the
    member is an ``.npy`` file stored as is inside the zip, at an offset read from its local
    header. A compressed member raises :class:`InputError` (load it with ``np.load`` instead)."""
    import zipfile

    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise InputError(path, f"'{name}' is compressed and cannot be memory-mapped.",
                         "Write the set with MapSet.save (np.savez, uncompressed) or load it without mmap.")
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # the local file header: its name and extra-field lengths at bytes 26-29
        if local[:4] != b"PK\x03\x04":
            raise InputError(path, "not a valid zip member header.", "Re-write the file.")
        fh.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                + int.from_bytes(local[28:30], "little"))
        fmt = np.lib.format
        version = fmt.read_magic(fh)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


class Rows:
    """Rows ``index`` of a stack on disk (a memory map, a :class:`helpers.io.MapFolder`, another
    ``Rows``), read only when indexed, like a ``MapFolder``: ``shape``, ``dtype``, ``len``, indexing (an
    int, a slice, an index array) and ``np.asarray`` (reads them all). A subset of a 224³ GT
    (``MapSet.subset``) stays on disk instead of ~45 MB per map in memory."""

    lazy = True

    def __init__(self, base, index):
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        if self.index.ndim != 1 or (len(self.index) and not 0 <= self.index.min() <= self.index.max() < len(base)):
            raise IndexError(f"rows {self.index} outside a stack of {len(base)} maps")
        self.shape = (len(self.index), *base.shape[1:])
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        idx = self.index[key]
        if np.ndim(idx) == 0:
            return np.asarray(self.base[int(idx)])
        return np.asarray(self.base[idx])

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.base[self.index])
        return a if dtype is None else a.astype(dtype)


def on_disk(maps) -> bool:
    """True for a stack read lazily from disk: a memory map, or an object marked ``lazy``
    (:class:`helpers.io.MapFolder`, :class:`Rows`)."""
    return isinstance(maps, np.memmap) or bool(getattr(maps, "lazy", False))


@dataclasses.dataclass
class MapSet:
    """A set of cubic density maps with populations.

    maps: (n_maps, N, N, N) float32 array (may be a read-only memory map), axes (z, y, x).
    populations: (n_maps,) float64, non-negative, summing to 1.
    voxel_size: Å per voxel. label: unique name. provenance: free-form dict (JSON-able).
    native_voxel_size: Å per voxel of the maps as the method produced them, set at ingestion and
    kept when the maps are resampled (None: ``voxel_size``); its Nyquist, 2 × native voxel size,
    is the finest resolution the set can be reported at (:mod:`helpers.kernels.nyquist`).
    """

    maps: np.ndarray
    populations: np.ndarray
    voxel_size: float
    label: str
    provenance: dict = dataclasses.field(default_factory=dict)
    pc1: np.ndarray | None = None
    native_voxel_size: float | None = None

    def __post_init__(self):
        if self.pc1 is not None:
            self.pc1 = np.asarray(self.pc1, dtype=np.float64)
        self.populations = np.asarray(self.populations, dtype=np.float64)
        self.voxel_size = float(self.voxel_size)
        self.native_voxel_size = float(self.voxel_size if self.native_voxel_size is None else self.native_voxel_size)
        where = self.provenance.get("source", self.label)
        if self.maps.ndim != 4 or len(set(self.maps.shape[1:])) != 1:
            raise InputError(where, f"maps must have shape (n, N, N, N), got {self.maps.shape}.",
                             "Give cubic maps of one box size.")
        if self.populations.shape != (self.maps.shape[0],):
            raise InputError(where, f"{self.maps.shape[0]} maps but {self.populations.size} "
                             "populations.", "Give exactly one population per map.")
        if not self.voxel_size > 0:
            raise InputError(where, f"voxel size {self.voxel_size} Å is not positive.",
                             "Set the voxel size (Å) in the submission config.")
        if not self.native_voxel_size > 0:
            raise InputError(where, f"native voxel size {self.native_voxel_size} Å is not positive.",
                             "Set native_pixel_size (Å) in the submission config, or leave it out.")

    @property
    def n_maps(self) -> int:
        return int(self.maps.shape[0])

    @property
    def box(self) -> int:
        return int(self.maps.shape[1])

    @property
    def box_length(self) -> float:
        """Physical edge of the box in Å."""
        return self.box * self.voxel_size

    def subset(self, index) -> "MapSet":
        """The maps ``index`` (array of ints or booleans) with renormalised populations. Maps on
        disk (a memory map, a lazy MRC folder) stay there: the subset reads them when indexed
        (:class:`Rows`)."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        p = self.populations[index]
        maps = Rows(self.maps, index) if on_disk(self.maps) else self.maps[index]
        return MapSet(maps=maps, populations=p / p.sum(), voxel_size=self.voxel_size,
                      label=self.label, provenance=dict(self.provenance),
                      pc1=None if self.pc1 is None else self.pc1[index], native_voxel_size=self.native_voxel_size)

    def with_maps(self, maps: np.ndarray, step: str | None = None, **changes) -> "MapSet":
        """A copy with new maps (and optionally other fields); ``step`` is appended to the
        provenance's list of processing steps. The native voxel size is kept unless changed
        explicitly (a regridding changes ``voxel_size`` only)."""
        prov = json.loads(json.dumps(self.provenance, default=str))
        if step:
            prov.setdefault("steps", []).append(step)
        fields = dict(maps=np.ascontiguousarray(maps, dtype=np.float32), populations=self.populations,
                      voxel_size=self.voxel_size, label=self.label, provenance=prov, pc1=self.pc1,
                      native_voxel_size=self.native_voxel_size)
        fields.update(changes)
        return MapSet(**fields)

    def save(self, path: str | Path) -> Path:
        """Write the set as an ``.npz`` (see module docstring), atomically."""
        path = Path(path)
        with atomic_write(path, "wb") as fh:
            np.savez(fh, maps=np.asarray(self.maps, dtype=np.float32), populations=self.populations,
                     voxel_size=np.float64(self.voxel_size), label=np.str_(self.label),
                     native_voxel_size=np.float64(self.native_voxel_size),
                     provenance=np.str_(json.dumps(self.provenance, default=str)),
                     **({} if self.pc1 is None else {"pc1": self.pc1}))
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> "MapSet":
        """Read a set written by :meth:`save`. ``mmap=True``: the maps are a read-only memory map
        into the file (:func:`npz_memmap`; :meth:`save` stores them uncompressed), read only where
        used — 80 maps at 224³ are 3.6 GB, a dozen submissions more than most hosts' memory."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                maps = npz_memmap(path, "maps") if mmap else z["maps"]
                return cls(maps=maps, populations=z["populations"],
                           voxel_size=float(z["voxel_size"]), label=str(z["label"]),
                           provenance=json.loads(str(z["provenance"])),
                           pc1=z["pc1"] if "pc1" in z.files else None,
                           native_voxel_size=float(z["native_voxel_size"]) if "native_voxel_size" in z.files else None)
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(path, f"not a hetbook map-set file ({exc}).",
                             "Re-run the preprocessing notebook to regenerate it.") from None

    def __repr__(self) -> str:
        return (f"MapSet({self.label!r}, {self.n_maps} maps of {self.box}³ at "
                f"{self.voxel_size:.3f} Å" + (f", native {self.native_voxel_size:.3f} Å"
                                               if self.native_voxel_size != self.voxel_size else "") + ")")
