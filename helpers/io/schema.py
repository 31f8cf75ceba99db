"""Typed, range-checked schemas of the inputs a user hands over, validated with pydantic.

Every violation becomes one line naming the file, the field and the fix; all violations of a
file are collected and raised together as one :class:`~helpers.core.errors.InputError`, so a user
fixes everything in one go. Automatic fixes (renormalised populations, re-sorted metadata rows,
clipped masks) are not errors: they go through :func:`notice`, which warns and records the fix
so the runner can print it on the terminal.

Schemas:

* :class:`GTEntry`, :class:`SubmissionEntryModel` — one entry of the challenge config
  (``submission_config.json``: ``gt`` first, then ``"0"``, ``"1"``, …; or YAML with
  ``gt:`` and ``submissions:``). Booleans (``flip``, ``align``) are 0/1 or true/false; sizes are
  positive numbers (strings are refused, not guessed). Optional ``native_pixel_size`` (or
  ``native_voxel_size``, Å): the voxel size at which the method produced the maps, when they
  were resampled before submission (e.g. cryoDRGN trained at 4.29 Å, maps upsampled to 2.146 Å);
  it bounds the reported resolutions (:mod:`helpers.kernels.nyquist`). Absent: the maps' own voxel size.
* :func:`validate_config` — the whole config: duplicated JSON keys, a config with no
  submissions, labels whose result file names would collide (``"Averaged GT"`` and
  ``"Averaged-GT"`` both become ``averaged_gt``), alignment asked without a reference.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from helpers.core.errors import InputError

NOTICES_ENV = "HETBOOK_NOTICES"  # file (JSON lines) where automatic fixes are recorded for the runner


def notice(where, message: str) -> None:
    """An automatic fix: warn (visible in the notebook) and append it to the run's notices file
    (printed on the terminal by ``hetbook run``)."""
    text = f"{where}: {message}"
    warnings.warn(text, stacklevel=3)
    path = os.environ.get(NOTICES_ENV)
    if path:
        try:
            with open(path, "a") as fh:
                fh.write(json.dumps({"where": str(where), "message": message}) + "\n")
        except OSError:
            pass


def _flag(v: Any) -> bool:
    """0/1 or true/false; anything else (e.g. "yes") is refused."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"must be 0/1 or true/false, got {v!r}")


class GTEntry(BaseModel):
    """The ``gt`` entry of a challenge config."""
    model_config = ConfigDict(extra="allow")
    path: str | None = None
    box_size: int = Field(gt=0, strict=True)
    voxel_size: float = Field(gt=0, strict=True, description="Å (pixel_size in the challenge's JSON)")
    ref_align_fname: str | None = None


class SubmissionEntryModel(BaseModel):
    """One submission entry of a challenge config (the JSON flavour's names and the YAML's)."""
    model_config = ConfigDict(extra="allow")
    label: str = Field(min_length=1)
    path: str = Field(min_length=1)
    populations_file: str | None = None
    box_size: int | None = Field(default=None, gt=0, strict=True)
    voxel_size: float | None = Field(default=None, gt=0, strict=True)
    native_voxel_size: float | None = Field(default=None, gt=0, strict=True,
                                            description="Å (native_pixel_size in the JSON)")
    flip: bool = False
    align: bool = False

    @field_validator("flip", "align", mode="before")
    @classmethod
    def _bool01(cls, v):
        return _flag(v)


FIXES = {
    "box_size": "give the box edge in voxels as a whole number, e.g. 224",
    "voxel_size": "give the voxel (pixel) size in Å as a number, e.g. 2.146 (not a string)",
    "native_voxel_size": "give the voxel size (Å) the method made the maps at as a number, e.g. 4.29, or leave it out",
    "flip": "write 0 or 1 (1 mirrors the maps)",
    "align": "write 0 or 1 (1 aligns the maps to the GT reference)",
    "path": "give the submission folder, relative to the config's folder or absolute",
    "label": "give a flavor_name (or name) for the submission",
    "ref_align_fname": "name the reference map (in the GT folder) used for alignment",
}


def _messages(exc: ValidationError, where: str) -> list[str]:
    out = []
    for e in exc.errors():
        field = ".".join(str(x) for x in e["loc"]) or "(entry)"
        leaf = str(e["loc"][-1]) if e["loc"] else ""
        fix = FIXES.get(leaf, "see the config format in the README")
        got = e.get("input")
        msg = e["msg"].replace("Value error, ", "")
        got_txt = f" (got {got!r})" if got is not None and not isinstance(got, dict) and "got" not in msg else ""
        field = {"voxel_size": "pixel_size (voxel_size)",
                 "native_voxel_size": "native_pixel_size (native_voxel_size)"}.get(field, field)
        out.append(f"{where}, field '{field}': {msg}{got_txt}. Fix: {fix}.")
    return out


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise _DuplicateKeys(dup)
    return dict(pairs)


class _DuplicateKeys(ValueError):
    def __init__(self, keys):
        self.keys = keys
        super().__init__(keys)


def load_config_text(path: Path) -> Any:
    """Parse a JSON or YAML config, refusing duplicated keys (JSON would keep only the last)."""
    import yaml

    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_no_duplicate_keys)
        return yaml.safe_load(text)
    except _DuplicateKeys as exc:
        raise InputError(path, f"duplicated key(s) {exc.keys}: JSON keeps only the last, so a submission "
                               "would be silently lost.", "Give every entry its own key (\"0\", \"1\", …).") from None
    except Exception as exc:
        raise InputError(path, f"cannot be parsed ({exc}).", "Fix the JSON/YAML syntax.") from None


def _entry_fields(e: dict, i: int) -> dict:
    name = e.get("label") or e.get("flavor_name") or e.get("submission_name") or e.get("name") or f"submission {i}"
    version = str(e.get("submission_version", "") or "")
    label = f"{name} {version}".strip() if version not in ("", "0") else str(name)
    out = dict(e)
    out.update(label=label, path=e.get("path") or e.get("path_to_volumes") or "",
               populations_file=e.get("populations_file") or e.get("path_to_populations_file"),
               voxel_size=e.get("voxel_size", e.get("pixel_size")),
               native_voxel_size=e.get("native_voxel_size", e.get("native_pixel_size")),
               flip=e.get("flip", e.get("flip_handedness", False)), align=e.get("align", False))
    return out


def validate_config(cfg: Any, path: Path) -> tuple[GTEntry, list[SubmissionEntryModel]]:
    """Validate a parsed challenge config; raise one InputError listing every problem."""
    from helpers.core.paths import slug

    if not isinstance(cfg, dict) or "gt" not in cfg:
        raise InputError(path, "has no 'gt' entry.", "Start the config with the GT entry (key 'gt').")
    problems: list[str] = []
    if isinstance(cfg.get("submissions"), list):  # YAML flavour
        raw = cfg["submissions"]
    else:
        keys = list(cfg.keys())
        if keys[0] != "gt":
            problems.append(f"{path}: key 'gt' is not first (the challenge code takes it as first). "
                            "Fix: move the 'gt' entry to the top of the JSON.")
        raw = [cfg[k] for k in keys if k != "gt"]
    gt_raw = cfg["gt"] if isinstance(cfg["gt"], dict) else {}
    gt_raw = dict(gt_raw)
    if "voxel_size" not in gt_raw and "pixel_size" in gt_raw:
        gt_raw["voxel_size"] = gt_raw["pixel_size"]
    gt = None
    try:
        gt = GTEntry(**gt_raw)
    except ValidationError as exc:
        problems += _messages(exc, f"{path} [gt]")
    if not raw:
        problems.append(f"{path}: no submission entries (only the GT). Fix: add one entry per submission "
                        "after 'gt' (\"0\": {{...}}, \"1\": {{...}}).")
    entries, seen = [], {}
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            problems.append(f"{path} [entry {i}]: not a mapping of fields. Fix: write each submission as an object.")
            continue
        try:
            m = SubmissionEntryModel(**_entry_fields(e, i))
        except ValidationError as exc:
            problems += _messages(exc, f"{path} [entry {i}]")
            continue
        s = slug(m.label)
        if s in seen:
            problems.append(f"{path} [entry {i}]: label {m.label!r} has the same result name '{s}' as "
                            f"{seen[s]!r}, so one would overwrite the other. Fix: make the flavor_name/"
                            "submission_version of the two differ by more than punctuation or case.")
        seen.setdefault(s, m.label)
        if m.align and gt is not None and not gt.ref_align_fname:
            problems.append(f"{path} [entry {i}] {m.label!r}: align is 1 but the gt entry has no "
                            "'ref_align_fname'. Fix: name the reference map in the gt entry, or set align to 0.")
        entries.append(m)
    if problems:
        raise InputError(path, f"{len(problems)} problem(s) in the config:\n  - " + "\n  - ".join(problems))
    return gt, entries
