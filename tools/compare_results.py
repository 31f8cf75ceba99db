"""Compare two results folders (e.g. results/demo before and after a refactor), file by file.

    python tools/compare_results.py BEFORE AFTER [--rtol 1e-12] [--moved OLD NEW]

Every CSV and NPZ under BEFORE is compared with the same file under AFTER: numeric columns and
arrays to ``rtol`` (bit-identical counted apart), everything else exactly. Timing fields (names
containing "seconds", ending in "_s", or "time") are skipped: they differ from run to run.
``--moved OLD NEW``: the two runs were made in different checkouts, so text values (a
provenance's source path) hold OLD in BEFORE where AFTER holds NEW; OLD is read as NEW.
Prints one line per differing file and a summary; exits 1 if any file differs or is missing.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIMING = re.compile(r"seconds|_s$|(^|_)time")
MOVED: list = []  # (old, new) checkout paths, set by --moved


def _same(a, b, rtol):
    """(identical, within rtol, max relative difference) of two arrays."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False, False, np.inf
    if a.dtype.kind not in "fciub" or b.dtype.kind not in "fciub":
        sa = a.astype(str)
        for old, new in MOVED:
            sa = np.char.replace(sa, old, new)
        eq = bool(np.array_equal(sa, b.astype(str)))
        return eq, eq, 0.0 if eq else np.inf
    if np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
        return True, True, 0.0
    a64, b64 = a.astype(np.complex128 if "c" in a.dtype.kind + b.dtype.kind else np.float64), b.astype(
        np.complex128 if "c" in a.dtype.kind + b.dtype.kind else np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    d = np.where(both_nan, 0, np.abs(a64 - b64) / np.maximum(np.abs(b64), 1e-300))
    d = np.where(np.abs(a64 - b64) == 0, 0, d)
    m = float(np.nanmax(d)) if d.size else 0.0
    return False, m <= rtol, m


def compare_file(fa: Path, fb: Path, rtol: float) -> tuple[str, str]:
    """('identical' | 'close' | 'differs' | 'missing', detail)."""
    if not fb.is_file():
        return "missing", "not in AFTER"
    worst, ident, notes = 0.0, True, []
    if fa.suffix == ".csv":
        a, b = pd.read_csv(fa), pd.read_csv(fb)
        extra = sorted(set(b.columns) - set(a.columns))
        lost = sorted(set(a.columns) - set(b.columns))
        if lost:
            return "differs", f"columns missing in AFTER: {lost}"
        if extra:
            notes.append(f"new columns {extra}")
        if len(a) != len(b):
            return "differs", f"{len(a)} rows vs {len(b)}"
        items = [(c, a[c].to_numpy(), b[c].to_numpy()) for c in a.columns if not TIMING.search(str(c))]
    else:
        za, zb = np.load(fa, allow_pickle=False), np.load(fb, allow_pickle=False)
        if set(za.files) - set(zb.files):
            return "differs", f"arrays missing in AFTER: {sorted(set(za.files) - set(zb.files))}"
        items = [(k, za[k], zb[k]) for k in za.files if not TIMING.search(k)]
    for name, x, y in items:
        i, ok, m = _same(x, y, rtol)
        ident &= i
        worst = max(worst, m)
        if not ok:
            return "differs", f"{name}: max relative difference {m:.3g}"
    state = "identical" if ident else "close"
    return state, ("; ".join(notes) + ("; " if notes else "") + f"max relative difference {worst:.3g}") if not ident or notes else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rtol", type=float, default=1e-12)
    ap.add_argument("--moved", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                    help="checkout path OLD in BEFORE's text values is NEW in AFTER's")
    args = ap.parse_args(argv)
    MOVED[:] = [tuple(m) for m in args.moved]
    a, b = Path(args.before), Path(args.after)
    files = sorted(p for p in a.rglob("*") if p.suffix in (".csv", ".npz") and ".staging" not in p.parts
                   and ".failed" not in p.parts)
    counts = {"identical": 0, "close": 0, "differs": 0, "missing": 0}
    for f in files:
        state, detail = compare_file(f, b / f.relative_to(a), args.rtol)
        counts[state] += 1
        if state in ("differs", "missing") or detail:
            print(f"{state:9s} {f.relative_to(a)}  {detail}")
    print(f"{len(files)} files: {counts['identical']} bit-identical, {counts['close']} within rtol {args.rtol:g}, "
          f"{counts['differs']} differ, {counts['missing']} missing (timing fields skipped)")
    return 0 if counts["differs"] == counts["missing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
