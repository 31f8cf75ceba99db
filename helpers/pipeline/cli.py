"""The ``hetbook`` command: ``run``, ``status``, ``score`` and ``check``, each with ``--help``.

::

    hetbook run                          # the demo data (if missing) + every stale or missing chapter
    hetbook run --only 03 --set notebooks.03_volume_metrics.sw_directions=32
    hetbook status                       # each chapter: done / stale / missing, and why
    hetbook check data/my_data           # read the GT, config, submissions and particles; list every problem
    hetbook score my_maps/ --data data/demo   # score one more submission beside the data folder's own

``python -m helpers.pipeline.cli`` is the same command where the console script is not installed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from helpers.core.errors import InputError
from helpers.pipeline import run as runner


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hetbook", description="hetbook: score cryo-EM heterogeneity results "
                                 "(maps + populations) against a ground truth, and build the book.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_p = runner.build_parser("hetbook run")
    sub.add_parser("run", parents=[run_p], add_help=False, help="run the chapters that are stale or missing",
                   description="Run the chapters that are stale or missing (all selected ones with --only).")
    st = sub.add_parser("status", help="print each chapter as done / stale / missing, with the reason",
                        description="Print each chapter as done / stale / missing, with the reason; runs nothing.")
    st.add_argument("--params", default="params/demo.yml", help="parameters file (YAML)")
    st.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    ck = sub.add_parser("check", help="read a data folder the way the chapters will, and list every problem",
                        description="Read the GT (maps, metadata, mask), the config, every submission and "
                                    "every particle STAR file; print one line each; exit 1 if anything fails.")
    ck.add_argument("data_dir", help="folder holding gt/ and submissions/ (the challenge's layout)")
    ck.add_argument("--config", default="submissions/submission_config.json", help="config, relative to DATA_DIR")
    sc = sub.add_parser("score", help="score one submission folder beside a data folder's submissions",
                        description="Score a folder of MRC maps + populations.txt with every chapter, ranked "
                                    "beside the data folder's own submissions. The data folder is not written: "
                                    "its parts are linked into RESULTS/data.")
    sc.add_argument("submission_dir", help="folder of .mrc maps and populations.txt")
    sc.add_argument("--data", default="data/demo", help="data folder with gt/ and submissions/ (default: the demo)")
    sc.add_argument("--label", help="the submission's name in the tables (default: the folder's name)")
    sc.add_argument("--voxel-size", type=float, help="Å per voxel, where the MRC headers say 0")
    sc.add_argument("--flip", action="store_true", help="mirror the maps (the other hand)")
    sc.add_argument("--no-align", action="store_true", help="do not align the maps onto the GT reference")
    sc.add_argument("--results", help="results folder (default: results/score/<label>)")
    sc.add_argument("--params", default="params/demo.yml", help="parameters the chapters run with")
    return ap


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return runner.run(args)
    if args.command == "status":
        return runner.main(["--params", args.params, "--status", "--no-data",
                            *[x for s in args.set for x in ("--set", s)]])
    if args.command == "check":
        return check(args.data_dir, args.config)
    return score(args)


def check(data_dir, config: str) -> int:
    from helpers.pipeline.inputs import check_data

    findings = check_data(data_dir, config)
    width = max(len(f.what) for f in findings)
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'} {f.what:{width}s}  {f.detail}")
    bad = sum(not f.ok for f in findings)
    print(f"{len(findings) - bad} of {len(findings)} read; " + (f"{bad} problem(s) above." if bad else "ready to run."))
    return 1 if bad else 0


def score(args) -> int:
    from helpers.io.mapset import slug
    from helpers.pipeline.inputs import score_folder

    label = args.label or Path(args.submission_dir).resolve().name
    results = Path(args.results or f"results/score/{slug(label)}").resolve()
    try:
        data = score_folder(args.submission_dir, args.data, results, label, args.voxel_size, args.flip,
                            not args.no_align)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"scoring {label!r} beside the submissions of {args.data}; results in {results}")
    return runner.main(["--params", args.params, "--no-data", "--set", "dataset.generate=false",
                        "--set", f"common.data_dir={data}", "--set", f"common.results_dir={results}",
                        "--set", f"executed_dir={results / 'executed'}"])


if __name__ == "__main__":
    sys.exit(main())
