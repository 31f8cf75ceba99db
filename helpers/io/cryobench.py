"""CryoBench data set folders (Jeon et al. 2024): GT maps, per-image GT labels, poses, CTF, particles.

The layout, as CryoBench's own scripts read it (``metrics/fsc/cdrgn.py``, ``imgfsc_cryodrgn.py``,
``cryosim/project3d.py``, ``cryosim/add_ctf.py``; the folder unpacked from a Zenodo archive)::

    IgG-1D/vols/128_org/000.mrc … 099.mrc   GT map of conformation k = k-th file in natural order
    IgG-1D/gt_latents.pkl                    (n_images,) int: conformation index of each image
    IgG-1D/combined_poses.pkl                (rotations (n, 3, 3), translations (n, 2))
    IgG-1D/combined_ctfs.pkl                 (n, 9) cryoDRGN CTF table (:data:`CTF_COLUMNS`)
    IgG-1D/images/snr0.01/sorted_particles.128.txt   cryoDRGN list of the .mrcs stacks
    IgG-1D/init_mask/mask.mrc                a mask of the GT maps (not read here)

Conventions (cryoDRGN's): rotations as ``cryodrgn parse_pose_star`` writes them; translations as
a fraction of the box (pixels / D), columns (x, y), the shift that re-centres the image; CTF
defocus dfu, dfv in Å, dfang and phase shift in degrees, voltage in kV, Cs in mm, w the amplitude
contrast. The CTF table's D and Apix may describe the images before downsampling (cryoSIM writes
256 px at 1.5 Å, cryoDRGN rescales to the images it trains on): only D·Apix, the box in Å, is
invariant. Images are in label blocks (IgG-1D: 1000 per conformation), in the order of the stacks.

Not confirmed from CryoBench's code: whether every data set's ``gt_latents.pkl`` holds integer
labels (some keep a continuous GT latent there and the labels in ``labels.pkl``: pass
``labels="labels.pkl"``; continuous values are refused), and the GT maps' header voxel size
(cryoDRGN writes 1 Å when none is given: ``voxel_size`` then overrides it).

Pickles are read by :mod:`helpers.io.safe_pickle` (numpy arrays and plain containers only)
unless ``trusted=True``.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import mrcfile
import numpy as np

from helpers.core.errors import InputError
from helpers.io import safe_pickle
from helpers.io.gt import MapFolder
from helpers.io.labels import count_particles
from helpers.io.mapset import MapSet, Rows
from helpers.io.mrc import list_map_files
from helpers.io.schema import notice

VOL_DIR = "vols/128_org"
GT_LABELS, POSES, CTFS = "gt_latents.pkl", "combined_poses.pkl", "combined_ctfs.pkl"
CTF_COLUMNS = ("D", "apix", "dfu", "dfv", "dfang", "volt", "cs", "w", "phase_shift")
CRYODRGN_DEFAULT_APIX = 1.0  # what cryoDRGN's MRC writer puts in a header when given no pixel size
_TRUST = ("If the file is the one you downloaded from CryoBench (Zenodo) and you trust it, "
          "pass trusted=True to read_cryobench.")


@dataclasses.dataclass(frozen=True)
class CTFTable:
    """cryoDRGN CTF parameters, one row per image: ``params`` float64 (n, 9), columns
    :data:`CTF_COLUMNS` (D px, Apix Å, dfu Å, dfv Å, dfang °, volt kV, cs mm, w, phase_shift °)."""

    params: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` (one of :data:`CTF_COLUMNS`), (n,)."""
        return self.params[:, CTF_COLUMNS.index(name)]

    @property
    def dfu(self) -> np.ndarray:
        """Defocus U, Å (n,)."""
        return self.column("dfu")

    @property
    def dfv(self) -> np.ndarray:
        """Defocus V, Å (n,)."""
        return self.column("dfv")

    @property
    def defocus(self) -> np.ndarray:
        """Mean defocus (dfu + dfv) / 2, Å (n,)."""
        return 0.5 * (self.dfu + self.dfv)


@dataclasses.dataclass
class CryoBenchSet:
    """A CryoBench data set as read by :func:`read_cryobench`.

    gt: the GT maps read (``map_index`` of the series; lazy on disk by default) with populations =
    fraction of the images of each (renormalised over a subset). labels: (n_images,) int64, the
    conformation of each image, 0 … n_conformations−1 (indices into the *whole* series).
    fractions: (n_conformations,) float64, fraction of images per conformation of the whole series.
    rotations (n, 3, 3), translations (n, 2) fraction of the box, ctf: optional (None when absent).
    particles: the particle list/stack read (None when not found or ambiguous, see ``candidates``).
    """

    folder: Path
    gt: MapSet
    labels: np.ndarray
    fractions: np.ndarray
    map_index: np.ndarray
    labels_file: Path
    rotations: np.ndarray | None = None
    translations: np.ndarray | None = None
    ctf: CTFTable | None = None
    particles: Path | None = None
    candidates: tuple = ()

    @property
    def n_images(self) -> int:
        return int(self.labels.size)

    @property
    def n_conformations(self) -> int:
        return int(self.fractions.size)

    def images_of(self, k: int) -> np.ndarray:
        """Indices (int64) of the images of conformation ``k``."""
        return np.flatnonzero(self.labels == k)


def read_cryobench(folder, vol_dir: str = VOL_DIR, voxel_size: float | None = None, maps="all",
                   labels: str = GT_LABELS, poses: str | None = POSES, ctf: str | None = CTFS,
                   particles=None, lazy: bool = True, trusted: bool = False) -> CryoBenchSet:
    """Read a CryoBench data set folder (module docstring). ``vol_dir``, ``labels``, ``poses``,
    ``ctf``, ``particles``: paths relative to ``folder`` (or absolute); ``poses``/``ctf`` None to
    skip; the default poses/CTF files may be absent (None then), a named one may not. ``particles``
    None: the one ``images/**/sorted_particles*.txt`` (or ``.star``) if there is exactly one.
    ``maps``: "all", a slice (e.g. ``slice(None, None, 10)``) or indices of the GT maps to keep
    (100 maps of 128³ are 0.8 GB). ``lazy``: maps stay on disk, read when indexed.
    ``voxel_size`` (Å): used when the headers say 0 or cryoDRGN's default 1 Å, checked otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder not found.", "Give the folder unpacked from the CryoBench archive (e.g. IgG-1D/).")
    vol_path = _under(folder, vol_dir)
    stack, vs, files = read_volume_series(vol_path, voxel_size, numbered=True)
    lab_path = _under(folder, labels)
    lab = read_gt_labels(lab_path, trusted)
    if lab.min() < 0 or lab.max() >= len(stack):
        raise InputError(lab_path, f"labels run from {lab.min()} to {lab.max()} but {vol_path} holds {len(stack)} "
                                   f"maps (conformations 0 … {len(stack) - 1}).",
                         "Give the labels file of this data set, or the vol_dir= with all its GT maps.")
    counts = [(lab_path, lab.size, "labels")]
    rots = trans = table = None
    pose_path = _optional(folder, poses, POSES)
    if pose_path is not None:
        rots, trans = read_poses(pose_path, trusted)
        counts.append((pose_path, len(rots), "poses"))
    ctf_path = _optional(folder, ctf, CTFS)
    if ctf_path is not None:
        table = read_ctf(ctf_path, trusted)
        counts.append((ctf_path, len(table), "CTF rows"))
    part, cands = _find_particles(folder, particles)
    if part is not None:
        counts.append((part, count_images(part), "images"))
    for path, n, what in counts[1:]:
        if n != lab.size:
            raise InputError(path, f"holds {n} {what} but {lab_path.name} holds {lab.size} labels (one per image).",
                             f"Use the {what.split()[0]} file of the same data set and image stack as {lab_path.name}.")
    fractions = np.bincount(lab, minlength=len(stack)) / lab.size
    idx = _select(maps, len(stack), vol_path)
    if fractions[idx].sum() == 0:
        raise InputError(vol_path, f"no image belongs to the maps selected ({idx[:5].tolist()} …).",
                         "Select maps that some images were simulated from.")
    prov = {"source": str(vol_path), "files": [files[i].name for i in idx], "steps": [], "method": "CryoBench GT",
            "labels": str(lab_path), "n_images": int(lab.size), "map_index": idx.tolist()}
    maps_arr = (stack if len(idx) == len(stack) else Rows(stack, idx)) if lazy else stack[idx]
    gt = MapSet(maps_arr, fractions[idx] / fractions[idx].sum(), vs, f"{folder.name} GT", prov)
    return CryoBenchSet(folder, gt, lab, fractions, idx, lab_path, rots, trans, table, part, tuple(cands))


def read_volume_series(folder, voxel_size: float | None = None, numbered: bool = False):
    """The maps of a folder in natural order, lazily: (:class:`~helpers.io.gt.MapFolder`
    (n, N, N, N), voxel size Å, files). ``numbered``: the files must be numbered 0 … n−1 (the
    first number in each name, as CryoBench names GT maps 000.mrc … or NNN_pdbid.mrc), no gap."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "folder of maps not found.",
                         "Unpack the whole CryoBench archive (it holds vols/128_org/), or pass vol_dir= the maps' folder.")
    files = list_map_files(folder)
    if numbered:
        _check_numbering(folder, files)
    return MapFolder(folder), _header_voxel_size(folder, files, voxel_size), files


def _check_numbering(folder: Path, files: list[Path]) -> None:
    """Refuse GT map names without a number, numbered from other than 0, or with gaps/duplicates."""
    nums = []
    for f in files:
        m = re.search(r"\d+", f.stem)
        if m is None:
            raise InputError(f, "has no number in its name: which conformation it is cannot be told.",
                             "Name the GT maps 000.mrc, 001.mrc, … (conformation index = label).")
        nums.append(int(m.group()))
    if nums != list(range(len(files))):
        k = next(i for i, n in enumerate(nums) if n != i)
        got = ", ".join(f.name for f in files[max(k - 1, 0):k + 2])
        raise InputError(folder, f"maps are not numbered 0 … {len(files) - 1} without a gap: map {k} is "
                                 f"{files[k].name} (… {got} …).",
                         "Restore the missing map (a label k names the k-th map), or remove the extra file.")


def _header_voxel_size(folder: Path, files: list[Path], voxel_size: float | None) -> float:
    """One voxel size (Å) from the MRC headers, or ``voxel_size`` where they say 0 or 1 Å."""
    sizes = set()
    for f in files:
        try:
            with mrcfile.open(f, mode="r", header_only=True, permissive=False) as m:
                sizes.add(round(float(m.voxel_size.x), 4))
        except Exception as exc:
            raise InputError(f, f"cannot be read as MRC ({exc}).", "Re-copy the map from the archive.") from None
    if len(sizes) > 1:
        raise InputError(folder, f"maps have different voxel sizes {sorted(sizes)} Å.", "Give maps of one voxel size.")
    vs = sizes.pop()
    if voxel_size is not None and vs in (0.0, CRYODRGN_DEFAULT_APIX):
        return float(voxel_size)
    if voxel_size is not None and abs(vs - voxel_size) > 1e-3 * voxel_size:
        raise InputError(folder, f"MRC headers say {vs} Å per voxel but voxel_size={voxel_size} Å.",
                         "Pass the maps' voxel size (CryoBench's README: IgG-1D 3.0 Å at 128 px).")
    if vs == 0.0:
        raise InputError(folder, "voxel size is 0 in the MRC headers.", "Pass voxel_size= in Å.")
    if vs == CRYODRGN_DEFAULT_APIX:
        notice(folder, "MRC headers say 1 Å per voxel, cryoDRGN's default when none is given: pass voxel_size= "
                       "(Å) if that is not the maps' voxel size.")
    return float(vs)


def _load(path: Path, trusted: bool):
    return safe_pickle.load(path, "arrays", trusted=trusted, fix=_TRUST)


def read_gt_labels(path, trusted: bool = False) -> np.ndarray:
    """Per-image conformation labels (n,) int64 from a pickled array or list (``gt_latents.pkl``);
    whole-number floats are accepted, continuous values refused."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found.", "Give the per-image GT labels of the data set (gt_latents.pkl).")
    lab = np.asarray(_load(path, trusted))
    if lab.ndim == 2 and 1 in lab.shape:
        lab = lab.reshape(-1)
    if lab.ndim != 1 or lab.size == 0 or not np.issubdtype(lab.dtype, np.number):
        raise InputError(path, f"holds an array of shape {lab.shape} ({lab.dtype}), not one label per image.",
                         "Give the (n_images,) array of conformation indices.")
    if not np.issubdtype(lab.dtype, np.integer):
        f = lab.astype(np.float64)
        if not (np.isfinite(f).all() and np.array_equal(f, np.round(f))):
            raise InputError(path, "holds continuous values (a GT latent coordinate), not conformation indices.",
                             "Pass labels= the file of integer conformation labels (e.g. labels.pkl).")
    return lab.astype(np.int64)


def read_poses(path, trusted: bool = False):
    """(rotations (n, 3, 3) float64, translations (n, 2) float64 fraction of the box, or None) from
    a cryoDRGN pose pickle: a tuple (rotations, translations), or rotations alone."""
    path = Path(path)
    obj = _load(path, trusted)
    rots, trans = (obj[0], obj[1]) if isinstance(obj, (tuple, list)) and len(obj) == 2 else (obj, None)
    rots = np.asarray(rots, dtype=np.float64)
    if rots.ndim != 3 or rots.shape[1:] != (3, 3) or not np.isfinite(rots).all():
        raise InputError(path, f"rotations have shape {rots.shape}, not (n, 3, 3) finite matrices.",
                         "Give cryoDRGN's pose.pkl: (rotations (n, 3, 3), translations (n, 2)).")
    err = np.abs(np.einsum("nij,nkj->nik", rots, rots) - np.eye(3)).max()
    if err > 1e-3:
        raise InputError(path, f"the 3×3 matrices are not rotations (R·Rᵀ differs from I by {err:.3g}).",
                         "Give rotation matrices (cryodrgn parse_pose_star converts Euler angles).")
    if trans is not None:
        trans = np.asarray(trans, dtype=np.float64)
        if trans.shape != (len(rots), 2) or not np.isfinite(trans).all():
            raise InputError(path, f"translations have shape {trans.shape}, not ({len(rots)}, 2).",
                             "Give one (x, y) translation per rotation.")
        if np.abs(trans).max() >= 1:
            raise InputError(path, f"translations reach {np.abs(trans).max():.3g}: cryoDRGN stores them as a "
                                   "fraction of the box (below 1), these look like pixels.",
                             "Divide them by the box size in pixels (cryodrgn parse_pose_star does).")
    return rots, trans


def read_ctf(path, trusted: bool = False) -> CTFTable:
    """A cryoDRGN CTF pickle, (n, 9) (:data:`CTF_COLUMNS`), as a :class:`CTFTable`."""
    path = Path(path)
    arr = np.asarray(_load(path, trusted), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(CTF_COLUMNS) or not np.isfinite(arr).all():
        raise InputError(path, f"holds an array of shape {arr.shape}, not (n, 9) finite CTF parameters.",
                         f"Give cryoDRGN's ctf.pkl (columns {', '.join(CTF_COLUMNS)}).")
    return CTFTable(arr)


def count_images(path) -> int:
    """Images in a cryoDRGN ``.txt`` list of stacks (paths relative to the list's folder, or
    absolute), a RELION ``.star`` file or an ``.mrcs`` stack."""
    path = Path(path)
    if path.suffix.lower() != ".txt":
        return count_particles(path)
    if not path.is_file():
        raise InputError(path, "not found.", "Give the particle list (.txt), .star or .mrcs of the data set.")
    total = 0
    for line in path.read_text().split():
        stack = Path(line) if Path(line).is_absolute() else path.parent / line
        if not stack.is_file():
            raise InputError(path, f"lists {line}, which is not there ({stack}).", "Unpack the whole images/ folder.")
        total += count_particles(stack)
    return total


def _under(folder: Path, name) -> Path:
    p = Path(name)
    return p if p.is_absolute() else folder / p


def _optional(folder: Path, name, default: str) -> Path | None:
    """The file ``name`` under ``folder``; None if skipped (None) or the default file is absent."""
    if name is None:
        return None
    p = _under(folder, name)
    if p.is_file():
        return p
    if str(name) == default:
        return None
    raise InputError(p, "not found.", "Check the name, or pass None to read the data set without it.")


def _find_particles(folder: Path, particles):
    """(particle file or None, candidates): ``particles`` if given, else the only list found."""
    if particles is not None:
        p = _under(folder, particles)
        if not p.is_file():
            raise InputError(p, "not found.", "Give the particle list (.txt), .star or .mrcs of the data set.")
        return p, [p]
    cands = sorted((folder / "images").glob("**/sorted_particles*.txt")) if (folder / "images").is_dir() else []
    if not cands and (folder / "images").is_dir():
        cands = sorted((folder / "images").glob("**/*.star"))
    return (cands[0] if len(cands) == 1 else None), cands


def _select(maps, n: int, where) -> np.ndarray:
    """Indices (int64) of the maps selected by "all", a slice or a sequence of indices."""
    if isinstance(maps, str) and maps == "all":
        return np.arange(n)
    if isinstance(maps, slice):
        return np.arange(n)[maps]
    idx = np.asarray(maps)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n \
            or len(np.unique(idx)) != idx.size:
        raise InputError(where, f"maps={maps!r} is not a set of distinct indices 0 … {n - 1}.",
                         'Pass maps="all", a slice (e.g. slice(None, None, 10)) or a list of map indices.')
    return idx.astype(np.int64)
