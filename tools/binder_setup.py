"""Binder start-up (called by ``postBuild``): make the chapters openable and the first one runnable.

1. ``notebooks/NN_*.ipynb`` from the jupytext text notebooks (the book's launch buttons open them);
2. the demo data (``data/demo``, as ``params/demo.yml`` describes it) without the cryoDRGN entry,
   which needs its own environment (``make cryodrgn``) and minutes of training: on Binder the
   chapters score the 14 other submissions.

Usage: python tools/binder_setup.py [--params params/demo.yml] [--no-data]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def notebooks_to_ipynb(src: Path, dest: Path) -> list[Path]:
    """Write ``dest/NN_name.ipynb`` for every ``src/NN_name.py``; returns the files written."""
    import jupytext

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for p in sorted(src.glob("[0-9][0-9]_*.py")):
        target = dest / f"{p.stem}.ipynb"
        jupytext.write(jupytext.read(p), target)
        out.append(target)
    return out


def binder_dataset(cfg: dict) -> dict:
    """The parameters with the dataset's cryoDRGN entry removed (generated data only)."""
    cfg = {**cfg, "dataset": {k: v for k, v in cfg["dataset"].items() if k != "cryodrgn"}}
    return cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params/demo.yml")
    ap.add_argument("--no-data", action="store_true", help="only convert the notebooks")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from helpers.pipeline.demo_data import ensure_data
    from helpers.pipeline.params import load_params

    written = notebooks_to_ipynb(REPO / "notebooks", REPO / "notebooks")
    print(f"binder: {len(written)} notebooks written as .ipynb")
    if not args.no_data:
        t = time.time()
        ensure_data(binder_dataset(load_params(REPO / args.params)))
        print(f"binder: demo data ready in {time.time() - t:.0f} s (without cryoDRGN)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
