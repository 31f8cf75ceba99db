"""Run integrity: a manifest of the run, staged chapter outputs, per-submission failures.

* **Manifest** (``<results_dir>/manifest.json``): written by the runner *before* any chapter
  runs — run id, start time, code version (git commit when available), the parameters, and the
  size/modification time/SHA-1 of every input file under the data folder's ``gt/``,
  ``submissions/`` and ``particles/`` config files — then updated as chapters finish. Keys:
  ``run_id``, ``started``, ``code_version``, ``params``, ``inputs`` {path: {bytes, mtime,
  sha1}}, ``submissions`` {label: preprocessed file, relative to results_dir} (set by the
  preprocessing chapter), ``chapters`` {name: {status, finished, run_id, labels}} and
  ``failures`` [{chapter, label, message}].
* **Current results only**: later chapters take their submissions from the manifest
  (:func:`current_submissions`, :func:`labels_done`), never by globbing a folder, so a file left
  by an earlier run for a submission no longer in the config is never scored.
* **Staged outputs**: while a chapter runs, every result file it writes (through
  :func:`helpers.core.paths.atomic_write`) goes to ``<results_dir>/.staging/<chapter>/``; the runner
  moves them into place only when the chapter succeeds. A failed chapter's partial outputs are
  kept aside in ``.failed/<chapter>/`` and never read.
* **Failures**: :class:`Failures` lets a chapter score every submission it can: a bad
  submission's :class:`~helpers.core.errors.InputError` is recorded (table in the book, lines on the
  terminal) and the loop goes on with the others.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd

from helpers.core.errors import InputError
from helpers.core.paths import CHAPTER_ENV, RESULTS_ENV, STAGE_ENV, staged_path  # noqa: F401 (the runner reads them here)
from helpers.core.paths import MANIFEST_NAME as NAME

# ------------------------------------------------------------------------------- staging
def commit_stage(stage: Path, results: Path) -> list[Path]:
    """Move every staged file into place (file by file, each an atomic rename). Returns them."""
    moved = []
    if not stage.is_dir():
        return moved
    for f in sorted(p for p in stage.rglob("*") if p.is_file()):
        dest = results / f.relative_to(stage)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
        moved.append(dest)
    shutil.rmtree(stage, ignore_errors=True)
    return moved


def discard_stage(stage: Path, results: Path, chapter: str) -> Path | None:
    """Keep a failed chapter's partial outputs aside in ``.failed/<chapter>``; returns it."""
    if not stage.is_dir():
        return None
    dest = results / ".failed" / chapter
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage, dest)
    return dest


# ------------------------------------------------------------------------------ manifest
def _sha1(path: Path, limit: int = 16 * 2 ** 20) -> str | None:
    if path.stat().st_size > limit:
        return None  # maps and stacks: size and mtime only (hashing every map at each run costs a full read)
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2 ** 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprints(data_dir: Path) -> dict:
    """{relative path: {bytes, mtime, sha1}} of the input files of a data folder."""
    out = {}
    data_dir = Path(data_dir)
    for sub in ("gt", "submissions", "particles", "manifest.json", "cryodrgn/run.json", "recovar/run.json"):
        root = data_dir / sub
        found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for f in (p for p in found if not p.name.startswith(".")):
            st = f.stat()
            out[str(f.relative_to(data_dir))] = {"bytes": st.st_size, "mtime": st.st_mtime, "sha1": _sha1(f)}
    return out


def code_version() -> str:
    from helpers import __version__
    from helpers.core.paths import REPO_ROOT

    try:
        rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    return f"{__version__}+{rev}{'.dirty' if dirty else ''}" if rev else __version__


def read(results_dir) -> dict:
    path = Path(results_dir) / NAME
    if not path.is_file():
        raise InputError(path, "no run manifest: these results were not made by a hetbook run.",
                         "Run the chapters with `hetbook run --params …` (from chapter 2 on).")
    with open(path) as fh:
        return json.load(fh)


def write(results_dir, m: dict) -> Path:
    from helpers.core.paths import save_json

    results_dir = Path(results_dir)
    old = {k: os.environ.pop(k, None) for k in (STAGE_ENV,)}
    try:
        return save_json(results_dir / NAME, m)
    finally:
        for k, v in old.items():
            if v is not None:
                os.environ[k] = v


def start(results_dir, params: dict, data_dir, fresh: bool) -> dict:
    """Write (``fresh``: a new run) or update the manifest before any chapter runs."""
    results_dir = Path(results_dir)
    m = read(results_dir) if (results_dir / NAME).is_file() else {}
    if fresh or not m:  # a new run id; finished chapters stay, judged by their fingerprints
        m = {"submissions": {}, "chapters": {}, "failures": [], **m,
             "run_id": uuid.uuid4().hex[:12], "started": _dt.datetime.now().isoformat(timespec="seconds")}
    m.update(code_version=code_version(), params=params, data_dir=str(data_dir),
             inputs=input_fingerprints(data_dir) if Path(data_dir).is_dir() else {})
    write(results_dir, m)
    return m


def chapter_update_path(results_dir) -> Path:
    """A chapter's manifest changes go to a file in its stage (applied by the runner on success)."""
    return staged_path(Path(results_dir) / "manifest_update.json")


def update(results_dir, **changes) -> None:
    """Record changes for the manifest (submissions, labels done, failures) from a chapter.

    Inside a staged chapter the changes are written to the stage and merged by the runner when
    the chapter succeeds; outside the runner they are merged at once."""
    path = chapter_update_path(results_dir)
    cur = {}
    if path.is_file():
        with open(path) as fh:
            cur = json.load(fh)
    for k, v in changes.items():
        if isinstance(v, dict):
            cur.setdefault(k, {}).update(v)
        elif isinstance(v, list):
            cur.setdefault(k, []).extend(v)
        else:
            cur[k] = v
    from helpers.core.paths import save_json
    save_json(path, cur)
    if path == Path(results_dir) / "manifest_update.json":  # not staged: apply now
        merge_update(results_dir, chapter=os.environ.get(CHAPTER_ENV, "interactive"))


def merge_update(results_dir, chapter: str, status: str = "done", fingerprint: dict | None = None,
                 readers: set | None = None) -> dict:
    """Apply a chapter's recorded changes to the manifest and mark the chapter (with the
    :mod:`helpers.pipeline.fingerprint` of what it used, and a fresh completion token). A chapter
    that defines the run's submissions (preprocessing) drops the records and failures of
    ``readers``, the chapters that read it (:func:`helpers.pipeline.fingerprint.readers_of`; by
    default every later-numbered chapter): a chapter that reads only the GT and particles, run
    beside it or before it, keeps its record."""
    results_dir = Path(results_dir)
    if not (results_dir / NAME).is_file():  # a chapter run by hand, outside the runner
        start(results_dir, {}, results_dir, fresh=True)
    m = read(results_dir)
    upd_path = results_dir / "manifest_update.json"
    upd = {}
    if upd_path.is_file():
        with open(upd_path) as fh:
            upd = json.load(fh)
        upd_path.unlink()
    if "submissions" in upd:  # the preprocessing chapter defines the run's submissions
        m["submissions"] = upd["submissions"]
        keep = (lambda k: k < chapter) if readers is None else (lambda k: k not in readers)
        m["chapters"] = {k: v for k, v in m.get("chapters", {}).items() if keep(k)}
        m["failures"] = [f for f in m.get("failures", []) if keep(f["chapter"])]
    m["failures"] = [f for f in m.get("failures", []) if f["chapter"] != chapter] + upd.get("failures", [])
    m.setdefault("chapters", {})[chapter] = {
        "status": status, "finished": _dt.datetime.now().isoformat(timespec="seconds"), "run_id": m.get("run_id"),
        "labels": upd.get("labels", []), "token": uuid.uuid4().hex[:12], "fingerprint": fingerprint}
    write(results_dir, m)
    return m


# ------------------------------------------------------------------------------ reading
def current_submissions(results_dir) -> dict:
    """{label: preprocessed file path} of this run (from the manifest; never a folder glob)."""
    results_dir = Path(results_dir)
    m = read(results_dir)
    subs = m.get("submissions") or {}
    if not subs:
        raise InputError(results_dir / NAME, "the run has no preprocessed submissions.",
                         "Run chapter 2 (02_preprocessing) first; see its failure table if it ran.")
    return {lab: results_dir / rel for lab, rel in subs.items()}


def load_submissions(results_dir, mmap: bool = False) -> dict:
    """{label: MapSet} of this run's preprocessed submissions (``mmap``: maps memory-mapped,
    read where used; see :meth:`MapSet.load`)."""
    from helpers.io.mapset import MapSet

    return {lab: MapSet.load(p, mmap=mmap) for lab, p in current_submissions(results_dir).items()}


def labels_done(results_dir, chapter: str) -> list[str]:
    """Labels a chapter scored in this run (it must have finished after the preprocessing)."""
    m = read(results_dir)
    rec = m.get("chapters", {}).get(chapter)
    if not rec or rec.get("status") != "done":
        raise InputError(Path(results_dir) / NAME, f"chapter {chapter} has not finished in this run.",
                         f"Run {chapter} first (hetbook run --only {chapter[:2]}).")
    return list(rec.get("labels", []))


# ------------------------------------------------------------------------------ failures
class Failures:
    """Per-submission failures of one chapter: ``with failures.guard(label): ...`` records an
    :class:`InputError` (or any exception, with ``catch_all``) and lets the loop go on."""

    def __init__(self, results_dir, chapter: str, catch_all: bool = True):
        self.results_dir, self.chapter, self.catch_all = Path(results_dir), chapter, catch_all
        self.rows: list[dict] = []
        self.ok: list[str] = []

    @contextlib.contextmanager
    def guard(self, label: str):
        try:
            yield
        except InputError as exc:
            self.rows.append({"chapter": self.chapter, "label": label, "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 — one submission must not block the others
            if not self.catch_all:
                raise
            self.rows.append({"chapter": self.chapter, "label": label,
                              "message": f"{type(exc).__name__}: {exc}"})
        else:
            self.ok.append(label)

    def save(self, extra_labels: list[str] | None = None) -> pd.DataFrame:
        """Record the labels scored and the failures in the manifest; return the failure table."""
        update(self.results_dir, labels=list(extra_labels if extra_labels is not None else self.ok),
               failures=self.rows)
        return self.table()

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["chapter", "label", "message"])
