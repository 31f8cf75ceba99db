"""A submission on disk: ``populations.txt``, a raw folder of maps, the challenge's configs and
preprocessed ``.pt`` files.

* raw submission: a folder of ``*.mrc`` maps (natural sort; names containing "mask" are
  skipped) + ``populations.txt`` (one float per line);
* challenge config: ``submission_config.json`` (key ``"gt"`` first, then ``"0"``, ``"1"``, …)
  or a YAML file with ``gt:`` and ``submissions:`` (a list of the same entries);
* preprocessed submission: a torch-pickled dict ``{volumes, populations, id}`` (``.pt``).

Populations that do not sum to 1 (within 1e-6) but are otherwise valid are **renormalised**
and the fact is recorded in the provenance (the challenge's own code renormalises too).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
import numpy as np
from helpers.core.errors import InputError
from helpers.io.mapset import MapSet, slug
from helpers.io.mrc import read_map_folder


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
        from helpers.io.schema import notice
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


def locate(p, base: Path, what: str, config: Path) -> Path:
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
                from helpers.io.schema import notice

                notice(config, f"{what} {p} does not exist as written; using {c} (the same name next to the "
                               "config). Write the path relative to the config's folder if that is not the one.")
            return c
    raise InputError(config, f"{what} {p} not found (tried {', '.join(str(c) for c in cands)}).",
                     "Fix the path in the config (absolute, or relative to the config's folder).")


def read_config(path):
    """Read and validate a challenge submission config (JSON with ``gt`` first, or YAML).

    Validation (:mod:`helpers.io.schema`): typed, range-checked fields, duplicated JSON keys,
    result-name collisions, a config without submissions, alignment without a reference; every
    problem of the file is listed in one :class:`InputError`. Returns ``(gt, entries)``: ``gt`` a
    dict (path, box_size, voxel_size, ref_align_fname) and ``entries`` a list of
    :class:`SubmissionEntry`.
    """
    from helpers.io.schema import load_config_text, validate_config

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
            folder = locate(m.path, base, "submission folder", path)
            pop = m.populations_file or folder / "populations.txt"
            pop = locate(pop, base, "populations file", path) if not Path(pop).is_file() else Path(pop)
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


def mapset_path(folder, label: str) -> Path:
    """Where the preprocessed MapSet of ``label`` lives in a results folder."""
    return Path(folder) / f"{slug(label)}.npz"
