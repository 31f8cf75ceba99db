"""Chapter 2 (``notebooks/02_preprocessing.py``): every submission of the config onto the GT's grid,
hand and frame (:func:`helpers.kernels.preprocess.preprocess_submission`), saved as
``preprocessed/<label>.npz`` and listed in the run's manifest; ``preprocessing_report.csv`` (one
row per submission: label, input_box, input_voxel_A, native_voxel_A, flip, align, score,
rotation_error_deg (° against the mock's recorded rotation, where there is one), seconds,
alignment_doubtful, and after a doubtful alignment score_at_half_voxel, score_at_double_voxel,
voxel_size_suggested_A (Å or empty): :func:`helpers.kernels.preprocess.voxel_size_check`)."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.paths import save_csv
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import preprocess
from helpers.kernels.geometry import rotation_angle

CHAPTER = "02_preprocessing"


def load_config(data_dir, config: str):
    """The config's GT entry and submissions, the GT grid (box, voxel size in Å, checked against
    the GT maps: a wrong box_size stops here) and the alignment reference map (or None).
    Returns (entries, gt_box, gt_voxel, reference)."""
    data = Path(data_dir)
    gt_entry, entries = io.read_config(data / config)
    gt_box, gt_voxel = int(gt_entry["box_size"]), float(gt_entry["voxel_size"])
    gt_folder = io.locate(gt_entry.get("path") or ".", (data / config).parent, "GT folder", data / config)
    io.check_gt_box(data / config, gt_box, io.find_gt(data)["maps"])
    reference = None
    if gt_entry.get("ref_align_fname"):
        reference, _ = io.read_mrc(io.locate(gt_entry["ref_align_fname"], gt_folder, "alignment reference", data / config))
    return entries, gt_box, gt_voxel, reference


def _one(e, gt_box: int, gt_voxel: float, reference, align_kwargs: dict, out: Path):
    """Read, preprocess and save one submission; returns (report row, raw summary, result summary).
    Only a summary of each set is kept (box, voxel size, the first map's central section): a dozen
    80-map submissions at 224³ are 43 GB, so each is saved and let go before the next."""
    ms = e.read()
    raw = SimpleNamespace(box=ms.box, voxel_size=ms.voxel_size, section=np.array(ms.maps[0][ms.box // 2]))
    t = time.time()
    pre, rep = preprocess.preprocess_submission(ms, gt_box, gt_voxel, flip=e.flip, align=e.align,
                                                reference=reference, align_kwargs=align_kwargs)
    rep["seconds"] = time.time() - t
    truth = e.extra.get("hetbook_truth", {})
    if "rotation_matrix" in truth and "rotation_matrix" in rep:
        rep["rotation_error_deg"] = float(rotation_angle(np.array(rep["rotation_matrix"]) @ np.array(truth["rotation_matrix"])))
    pre.provenance["truth"] = truth
    method = e.extra.get("hetbook_provenance", {}).get("method")  # a real method's entry (helpers.methods.adapters)
    if method:
        pre.provenance["method"] = method
        rep["method"] = method
    pre.save(out / "preprocessed" / f"{slug(e.label)}.npz")
    return rep, raw, SimpleNamespace(provenance=pre.provenance, section=np.array(pre.maps[0][gt_box // 2]))


def preprocess_all(entries, gt_box: int, gt_voxel: float, reference, results_dir, align_kwargs: dict):
    """Every submission through :func:`_one`; a submission that fails is recorded (``failures.csv``
    of the chapter) and the others go on. Writes the preprocessed sets, the manifest's submission
    list and ``preprocessing_report.csv``. Returns (report, raw {label: summary}, sets {label:
    summary with provenance}, failed table)."""
    out = Path(results_dir)
    rows, sets, raw = [], {}, {}
    failures = manifest.Failures(out, CHAPTER)
    for e in entries:
        with failures.guard(e.label):
            rep, raw[e.label], sets[e.label] = _one(e, gt_box, gt_voxel, reference, align_kwargs, out)
            rows.append(rep)
    raw = {k: v for k, v in raw.items() if k in sets}
    manifest.update(out, submissions={lab: f"preprocessed/{slug(lab)}.npz" for lab in sets})
    failed = failures.save()
    report = pd.DataFrame(rows).drop(columns=["rotation_matrix"], errors="ignore")
    save_csv(out / "preprocessing_report.csv", report)
    return report, raw, sets, failed


def changed(sets: dict, raw: dict, gt_box: int, gt_voxel: float) -> list[str]:
    """The submissions preprocessing changed: another box or voxel size, a flip or an alignment."""
    def steps(lab):
        return " ".join(sets[lab].provenance.get("steps", []))
    return [lab for lab in sets if raw[lab].box != gt_box or raw[lab].voxel_size != gt_voxel
            or "flip" in steps(lab) or "alignment" in steps(lab)]


def rotation_angles(sets: dict) -> dict:
    """Each aligned set's rotation, degrees from the identity."""
    return {lab: float(rotation_angle(v.provenance["rotation_matrix"])) for lab, v in sets.items()
            if "rotation_matrix" in v.provenance}
