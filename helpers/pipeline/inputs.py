"""A data folder before any chapter runs: what is there and whether it reads (``hetbook check``),
and a folder that scores one more submission beside the others (``hetbook score``).

A data folder is the challenge's layout (``book/your_submission.md``): ``gt/`` (maps,
``metadata.csv``, ``mask.mrc``), ``submissions/submission_config.json`` with one folder per
submission, optionally ``particles/*.star``. Nothing here writes into a data folder.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from helpers.core.errors import InputError
from helpers.io.gt import check_gt_box, find_gt, read_gt, read_mask
from helpers.io.mapset import slug
from helpers.io.particles import read_particles
from helpers.io.submission import read_config, read_submission_folder

CONFIG = "submissions/submission_config.json"


@dataclass
class Finding:
    """One line of a check: ``what`` (e.g. "GT maps"), ``ok``, ``detail`` (a summary or the error)."""
    what: str
    ok: bool
    detail: str


def _try(what: str, fn) -> Finding:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detail = fn()
        notes = "; ".join(str(w.message) for w in caught)
        return Finding(what, True, detail + (f" (note: {notes})" if notes else ""))
    except (InputError, OSError, ValueError) as exc:
        return Finding(what, False, str(exc))


def check_data(data_dir, config: str = CONFIG) -> list[Finding]:
    """Read everything the chapters will read: the GT (maps, metadata, mask, box against the
    config), each submission of the config, each particle STAR file. One :class:`Finding` per
    item; a failing item does not stop the others."""
    data = Path(data_dir)
    if not data.is_dir():
        return [Finding("data folder", False, f"{data}: not a folder. Fix: give the folder holding gt/ and submissions/.")]
    out = []
    gt = {}
    out.append(_try("GT files", lambda: _found(gt, data)))
    if gt:
        out.append(_try("GT maps + metadata", lambda: _gt_summary(gt)))
        out.append(_try("GT mask", lambda: _mask_summary(gt)))
    entries = []
    out.append(_try("config", lambda: _config_summary(data / config, gt, entries)))
    for e in entries:
        out.append(_try(f"submission {e.label!r}", lambda e=e: _submission_summary(e)))
    for star in sorted((data / "particles").glob("*.star")):
        out.append(_try(f"particles {star.name}", lambda star=star: _particles_summary(star)))
    return out


def _found(gt: dict, data: Path) -> str:
    gt.update(find_gt(data))
    return ", ".join(f"{k}: {Path(v).name}" for k, v in gt.items())


def _gt_summary(gt: dict) -> str:
    ms = read_gt(gt["maps"], gt["metadata"], voxel_size=1.0)
    return f"{ms.n_maps} maps of {ms.box}³, populations sum {float(ms.populations.sum()):.4f}"


def _mask_summary(gt: dict) -> str:
    m = read_mask(gt["mask"])
    return f"{m.shape[0]}³, {int((m > 0.5).sum())} voxels inside (weight > 0.5)"


def _config_summary(path: Path, gt: dict, entries: list) -> str:
    gt_entry, subs = read_config(path)
    entries += subs
    if gt and gt_entry.get("box_size"):
        check_gt_box(path, int(gt_entry["box_size"]), gt["maps"])
    return f"{len(subs)} submissions; GT box {gt_entry.get('box_size')}, pixel {gt_entry.get('pixel_size')} Å"


def _submission_summary(e) -> str:
    ms = e.read()
    return (f"{ms.n_maps} maps of {ms.box}³ at {ms.voxel_size:.4g} Å, populations sum {float(ms.populations.sum()):.4f}"
            + (", flip" if e.flip else "") + (", align" if e.align else ""))


def _particles_summary(star: Path) -> str:
    p = read_particles(star)
    return f"{p.images.shape[0]} images of {p.images.shape[1]}² px at {p.pixel_size:.4g} Å"


def score_folder(submission_dir, data_dir, work_dir, label: str | None = None, voxel_size: float | None = None,
                 flip: bool = False, align: bool = True) -> Path:
    """Lay out ``work_dir/data``: the data folder's GT, particles and other parts linked (not
    copied), and a config holding every submission of the data folder plus the new one, all
    by absolute path. The new submission is read first, so a bad folder fails here with the
    reader's message. Refuses a label the config has already and a ``work_dir`` that exists.
    Returns the new data folder (point ``common.data_dir`` at it)."""
    sub, data, work = Path(submission_dir).resolve(), Path(data_dir).resolve(), Path(work_dir).resolve()
    label = label or sub.name
    ms = read_submission_folder(sub, None, voxel_size, label)
    cfg_path = data / CONFIG
    if not cfg_path.is_file():
        raise InputError(cfg_path, "not found.", "Point --data at a folder with submissions/submission_config.json.")
    cfg = json.loads(cfg_path.read_text())
    if any(isinstance(v, dict) and slug(v.get("flavor_name") or v.get("name") or "") == slug(label)
           for k, v in cfg.items() if k != "gt"):
        raise InputError(cfg_path, f"has a submission labelled like {label!r} already.", "Pass --label with another name.")
    if work.exists():
        raise InputError(work, "exists already (nothing is overwritten).", "Remove it or pass --results elsewhere.")
    new = work / "data"
    (new / "submissions").mkdir(parents=True)
    for part in data.iterdir():
        if part.name != "submissions":
            (new / part.name).symlink_to(part)
    base = cfg_path.parent
    for k, v in cfg.items():
        if isinstance(v, dict) and "path" in v:
            v["path"] = str((base / v["path"]).resolve()) if k != "gt" else str(new / "gt")
            if v.get("populations_file"):
                v["populations_file"] = str((base / v["populations_file"]).resolve())
    key = str(max([int(k) for k in cfg if k.isdigit()] + [-1]) + 1)
    cfg[key] = {"name": slug(label), "flavor_name": label, "path": str(sub),
                "populations_file": str(sub / "populations.txt"), "submission_version": "0",
                "box_size": int(ms.box), "pixel_size": float(ms.voxel_size), "flip": int(flip), "align": int(align)}
    (new / CONFIG).write_text(json.dumps(cfg, indent=2))
    return new
