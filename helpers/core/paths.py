"""Repository-relative paths and atomic, non-destructive writes.

Notebook parameters hold paths relative to the repository root (``data/demo``) or absolute
paths (a user's own data); :func:`resolve` turns either into an absolute :class:`Path`.
Every result file is written through :func:`atomic_write` (write to a temporary file in the
same folder, then rename), so an interrupted run never leaves a half-written result.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]  # helpers/core/paths.py → the repository


def resolve(path: str | os.PathLike, root: Path | None = None) -> Path:
    """Absolute path: ``path`` itself if absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root or REPO_ROOT) / p


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file next to ``path``; rename it onto ``path`` only on success.

    While the runner executes a chapter, result files are redirected into that chapter's
    staging folder (:func:`staged_path`) and moved into place only if the
    chapter succeeds."""
    path = staged_path(Path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from helpers.core.errors import InputError
        raise InputError(path.parent, f"cannot create the results folder ({exc.strerror}).",
                         "Choose a results_dir you can write to (common.results_dir), or fix its permissions.") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars/arrays converted)."""
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON serialisable: {type(o)}")
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=default)
    return Path(path)


def load_json(path):
    with open(path) as fh:
        return json.load(fh)


def save_npz(path, **arrays) -> Path:
    """Write arrays to an ``.npz`` atomically."""
    with atomic_write(path, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def save_csv(path, frame) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index column unless named)."""
    with atomic_write(path, "w") as fh:
        frame.to_csv(fh, index=frame.index.name is not None)
    return Path(path)


STAGE_ENV = "HETBOOK_STAGE"      # staging folder of the running chapter
RESULTS_ENV = "HETBOOK_RESULTS"  # the results folder the stage stands in for
CHAPTER_ENV = "HETBOOK_CHAPTER"  # the running chapter's name
MANIFEST_NAME = "manifest.json"  # the run manifest (helpers.io.manifest)


def staged_path(path: Path) -> Path:
    """Where a result file is really written: inside the stage while a chapter runs."""
    stage, results = os.environ.get(STAGE_ENV), os.environ.get(RESULTS_ENV)
    if not stage or not results:
        return path
    p = Path(path).resolve()
    if p.is_relative_to(Path(stage).resolve()):
        return path  # already inside the stage
    try:
        rel = p.relative_to(Path(results).resolve())
    except ValueError:
        return path
    if rel.name == MANIFEST_NAME:
        return path  # the manifest is the runner's; chapters update it through the stage file below
    return Path(stage) / rel


def slug(label: str) -> str:
    """File-name-safe version of a label: lower case, runs of other characters -> ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "unnamed"
