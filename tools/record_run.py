"""Keep a run's headline results in the book: copy them from a results folder into ``book/<name>/``.

    python tools/record_run.py RESULTS DEST [--data DATA] [--note TEXT] [--replace]

RESULTS is a folder ``hetbook run`` wrote (e.g. ``results/demo_recovar``); DEST a folder under
``book/`` (e.g. ``book/with_recovar``) that pages quote with ``{include}``. Copied, where present:

    summary/headline.md        -> summary_headline.md        chapter 8's front-page sentence
    robustness/headline.md     -> robustness_headline.md     chapter 7's sentence
    summary/leaderboard.csv, families.csv, defects.csv -> same names (columns: chapter 8)
    image_metrics/power.csv    -> image_power.csv            chapter 6
    robustness/summary.csv     -> robustness_summary.csv     chapter 7
    per_particle/story.md      -> per_particle_story.md      chapter 9's "what the demo shows"
    per_particle/summary.csv   -> per_particle_summary.csv   chapter 9 (columns: its module)
    per_particle/pairs.csv     -> per_particle_pairs.csv
    per_particle/latent.csv    -> per_particle_latent.csv
    run_time.md                -> run_time.md                the runner's per-chapter times

and, with ``--data DATA``, the real methods' run records ``DATA/<method>/run.json`` as
``<method>_run.json`` and ``methods.md``: a Markdown table of the leaderboard (rows: overall
place and each metric, value ± error and rank; columns: the real methods, the control with their
images and box, and Reconstructed). A ``README.md`` lists what came from where, the commit and the date
(``--note``: a sentence on how the run was made). DEST is never overwritten unless ``--replace``
(then it is replaced whole, so no file of an older run survives beside the new ones).
"""
from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
from pathlib import Path

FILES = {"summary/headline.md": "summary_headline.md", "robustness/headline.md": "robustness_headline.md",
         "summary/leaderboard.csv": "leaderboard.csv", "summary/families.csv": "families.csv",
         "summary/defects.csv": "defects.csv", "image_metrics/power.csv": "image_power.csv",
         "robustness/summary.csv": "robustness_summary.csv", "per_particle/story.md": "per_particle_story.md",
         "per_particle/summary.csv": "per_particle_summary.csv", "per_particle/pairs.csv": "per_particle_pairs.csv",
         "per_particle/latent.csv": "per_particle_latent.csv", "run_time.md": "run_time.md"}
METHODS = ("cryodrgn", "recovar")


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent)
    return r.stdout.strip() if r.returncode == 0 else "unknown"


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # helpers, run from a checkout


def _cell(v, e, r) -> str:
    if v != v:  # NaN: not measured for this entry
        return "—"
    return f"{v:.3g}" + (f" ± {e:.2g}" if e == e and e > 1e-9 * max(abs(v), 1) else "") + (f" (rank {r:g})" if r == r else "")


def methods_table(board, labels) -> str:
    """``methods.md``: chapter 8's leaderboard (DataFrame, index = label, board order) for
    ``labels``, transposed: one row per metric, "value ± error (rank k)" in each column."""
    from helpers.core import catalogue

    labels = [k for k in labels if k in board.index]
    rows = [["overall place"] + [f"{board.index.get_loc(k) + 1} of {len(board)}" for k in labels],
            ["mean rank (interval)"] + [f"{board.loc[k, 'mean_rank']:.2f} ({board.loc[k, 'mean_rank_lo']:.2f}–"
                                        f"{board.loc[k, 'mean_rank_hi']:.2f})" for k in labels]]
    for m in [m for m in catalogue.METRICS if m in board.columns]:
        rows.append([f"{catalogue.label(m)}, {'lower' if catalogue.better(m) == 'low' else 'higher'} is better"]
                    + [_cell(board.loc[k, m], board.get(f"{m}_err", {}).get(k, float("nan")),
                             board.get(f"rank_{m}", {}).get(k, float("nan"))) for k in labels])
    head = ["", *labels]
    return "\n".join("| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]) + "\n"


def record(results: Path, dest: Path, data: Path | None = None, note: str = "", replace: bool = False) -> list:
    """Copy the files above; returns the (source, name) pairs copied. Raises SystemExit with the
    fix when RESULTS has none of them or DEST exists without ``replace``."""
    results, dest = Path(results), Path(dest)
    pairs = [(results / src, name) for src, name in FILES.items() if (results / src).is_file()]
    if data is not None:
        pairs += [(Path(data) / m / "run.json", f"{m}_run.json") for m in METHODS
                  if (Path(data) / m / "run.json").is_file()]
    if not pairs:
        raise SystemExit(f"{results}: none of the files to record ({', '.join(FILES)}).\n"
                         "Fix: give the results folder of a finished `hetbook run`.")
    if dest.exists() and not replace:
        raise SystemExit(f"{dest} exists: nothing was copied.\nFix: pass --replace to replace it whole, "
                         "or choose another folder.")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for src, name in pairs:
        shutil.copy2(src, tmp / name)
    board_file = results / "summary" / "leaderboard.csv"
    if data is not None and board_file.is_file():
        import json

        import pandas as pd

        from helpers.pipeline.matched import matched_label_in

        labels = [json.loads(f.read_text()).get("label") for f, _ in pairs if f.name == "run.json"]
        if labels:
            board = pd.read_csv(board_file, index_col=0)
            (tmp / "methods.md").write_text(methods_table(board, [*labels, matched_label_in(data), "Reconstructed"]))
            pairs.append((board_file, "methods.md"))
    rows = "\n".join(f"| `{name}` | `{src}` |" for src, name in pairs)
    (tmp / "README.md").write_text(
        f"# Recorded results: {dest.name}\n\nCopied by `tools/record_run.py` from `{results}` at commit "
        f"{_commit()} on {datetime.date.today().isoformat()}. {note}\nThey are results, not inputs: "
        "pages quote them; `hetbook run` never reads them.\n\n| file | from |\n|---|---|\n" + rows + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.replace(dest)
    return pairs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="the run's data folder (real methods' run.json)")
    ap.add_argument("--note", default="", help="how the run was made (one sentence for the README)")
    ap.add_argument("--replace", action="store_true", help="replace DEST whole if it exists")
    a = ap.parse_args(argv)
    pairs = record(a.results, a.dest, a.data, a.note, a.replace)
    print(f"{a.dest}: {len(pairs)} files recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
