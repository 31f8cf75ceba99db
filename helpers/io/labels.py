"""Per-particle state labels: reading them, their base (0 or 1), their count, populations.

Label files: ``.pkl`` (a pickled integer array, read by :mod:`helpers.io.safe_pickle`, which admits
numpy arrays only — never arbitrary code), ``.npy``, ``.txt`` (one integer per line) or ``.csv``
(a column named ``label``, ``class`` or ``cluster``). State k is the k-th map in natural order
(labels from 0) or the (k−1)-th (labels from 1); the base is given, or detected only where the
labels decide it (:func:`populations_from_labels`). A label file must hold one label per
particle of its stack (:func:`count_particles`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.errors import InputError
from helpers.io.schema import notice


def load_pickled_array(path) -> np.ndarray:
    """A numpy array from a ``.pkl`` written by ``pickle.dump(array)`` (cryoDRGN's labels.pkl,
    z.N.pkl), refusing anything that is not an array."""
    from helpers.io.safe_pickle import load

    path = Path(path)
    obj = load(path, "arrays", fix="Give the labels/latent file the method wrote (pickle.dump of an array), "
                                   "or a .npy/.txt copy.")
    if isinstance(obj, (list, tuple)):
        obj = np.asarray(obj)
    if not isinstance(obj, np.ndarray):
        raise InputError(path, f"holds a {type(obj).__name__}, not an array.", "Give a file with one label per particle.")
    return obj


def read_labels(path) -> np.ndarray:
    """Per-particle integer state labels (n_particles,) from .pkl/.npy/.txt/.csv (module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found.", "Give the per-particle label file the method wrote.")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        lab = load_pickled_array(path)
    elif suffix == ".npy":
        lab = np.load(path, allow_pickle=False)
    elif suffix == ".csv":
        df = pd.read_csv(path)
        col = next((c for c in df.columns if c.strip().lower() in ("label", "labels", "class", "cluster")), None)
        if col is None:
            raise InputError(path, f"has no column named label, class or cluster (columns: {list(df.columns)[:8]}).",
                             "Name the per-particle state column 'label'.")
        lab = df[col].to_numpy()
    else:
        try:
            lab = np.loadtxt(path, ndmin=1)
        except ValueError as exc:
            raise InputError(path, f"cannot be read as one number per line ({exc}).",
                             "Write one integer state per particle, one per line.") from None
    lab = np.asarray(lab).reshape(-1)
    if lab.size == 0:
        raise InputError(path, "has no labels.", "Give one state label per particle.")
    if not np.all(np.isfinite(lab.astype(float))) or not np.all(np.asarray(lab, float) == np.round(np.asarray(lab, float))):
        raise InputError(path, "labels must be whole numbers (one state index per particle).",
                         "Write the state/cluster index of each particle, not a coordinate.")
    return lab.astype(np.int64)


def populations_from_labels(labels: np.ndarray, n_maps: int, where, base: int | None = None) -> np.ndarray:
    """Fraction of particles per state (n_maps,). ``base``: 0 (labels 0…n−1) or 1 (1…n); None:
    detected — 0 when a label 0 occurs, 1 when the label n occurs, refused as ambiguous when
    neither does (e.g. 1-based labels with the last state unused read the same as 0-based ones
    with the first state unused)."""
    lo, hi = int(labels.min()), int(labels.max())
    if base is None:
        if lo == 0:
            base = 0
        elif hi == n_maps:
            base = 1
        elif lo >= 1 and hi < n_maps:
            raise InputError(where, f"labels run from {lo} to {hi} for {n_maps} maps: they could start at 0 (map 0 "
                                    "unused) or at 1 (the last map unused).",
                             "Say which: label_base=0 or label_base=1 (cryoDRGN and RELION classes start at 1, "
                             "numpy/cryoSPARC indices at 0).")
        else:  # labels beyond the maps whichever the base: say so, not "base None"
            raise InputError(where, f"labels run from {lo} to {hi} but there are {n_maps} maps.",
                             "Give one map per state (labels 0…n−1 or 1…n), or the label file of this map series.")
    if base not in (0, 1):
        raise InputError(where, f"label_base must be 0 or 1, got {base!r}.", "Pass label_base=0 or label_base=1.")
    labels = labels - base
    if labels.min() < 0 or labels.max() >= n_maps:
        raise InputError(where, f"labels run from {lo} to {hi} but there are {n_maps} maps (labels starting at {base}).",
                         "Give one map per state (labels 0…n−1 or 1…n), or the label file of this map series.")
    counts = np.bincount(labels, minlength=n_maps).astype(float)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        notice(where, f"{len(empty)} map(s) have no particle assigned (e.g. map {int(empty[0])}, 0-based): "
                      "population 0, kept.")
    return counts / counts.sum()


def count_particles(path) -> int:
    """Particles in a RELION STAR file (rows of its particles block) or an MRC stack (sections)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not found.", "Give the particle STAR file or .mrcs stack the labels belong to.")
    if path.suffix.lower() == ".star":
        import starfile

        blocks = starfile.read(path, always_dict=True)
        table = blocks.get("particles", next(iter(blocks.values())) if len(blocks) == 1 else None)
        if table is None:
            raise InputError(path, "has no particles block.", "Give a RELION particle STAR file.")
        return len(table)
    import mrcfile

    with mrcfile.mmap(path, permissive=True) as m:
        return int(m.header.nz)
