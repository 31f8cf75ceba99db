"""Run the analysis notebooks in order with papermill: ``hetbook run`` (:mod:`helpers.pipeline.cli`),
or ``python -m helpers.pipeline.run``.

Example usage::

    hetbook run --params params/demo.yml            # data (if missing) + every stale or missing notebook
    hetbook run --params params/tiny.yml --only 03   # one notebook (name or number prefix)
    hetbook run --params my.yml --out /tmp/executed  # executed copies elsewhere

The parameters file (YAML) has ``dataset`` (options of :func:`helpers.datagen.simulate.make_dataset`;
``generate: false`` for your own data), ``common`` (parameters passed to every notebook that
declares them) and ``notebooks`` (``{stem: {name: value}}`` per notebook). Notebooks are the
jupytext ``py:percent`` files ``notebooks/NN_*.py``; executed copies (``.ipynb``) go to
``executed_dir`` (the book reads ``book/executed``). The run stops at the first failing notebook
and prints its name, the failing cell and the error.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from helpers.pipeline.demo_data import ensure_data  # noqa: F401 (the Makefile's data target calls it from here)
from helpers.core.paths import REPO_ROOT, resolve
from helpers.pipeline.params import apply_override, load_params, parameters_for, validate
from helpers.pipeline.schedule import ipc_kernel_manager

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
MANIFEST_LOCK = threading.Lock()  # chapters run at once read and commit the run's manifest one at a time


def list_notebooks() -> list[Path]:
    """The pipeline's notebooks in order (``notebooks/NN_name.py``)."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def _tag_injected(path: Path) -> None:
    """Tag the executed notebook for the book: papermill's injected parameters are removed, and
    every code cell is collapsed (``hide-input``: the reader sees outputs and can open the code)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        if cell.cell_type == "code" and not {"remove-cell", "remove-input", "hide-input", "hide-cell"} & set(tags):
            tags.append("hide-input")
        cell.metadata["tags"] = tags
    nbformat.write(nb, path)


def check_writable(folder: Path) -> None:
    """Refuse early, with a clear message, a results folder that cannot be written."""
    from helpers.core.errors import InputError

    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "is a file, not a folder.", "Point common.results_dir at a folder (or move the file).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(folder, f"cannot be written ({exc.strerror}).",
                         "Choose a results_dir you can write to (common.results_dir), or fix its permissions.") from None


def _follow(path: Path, stream, interval: float = 0.2):
    """Copy what is appended to ``path`` to ``stream`` from a background thread; returns a
    function that copies the rest and stops it."""
    import threading

    done = threading.Event()

    def copy(fh):
        chunk = fh.read()
        if chunk:
            stream.write(chunk)
            stream.flush()

    def loop():
        with open(path, encoding="utf-8", errors="replace") as fh:
            while not done.wait(interval):
                copy(fh)
            copy(fh)

    t = threading.Thread(target=loop, daemon=True)
    t.start()

    def stop():
        done.set()
        t.join(5)
    return stop


def run_notebook(path: Path, cfg: dict, out_dir: Path, env: dict | None = None, show_progress: bool = True) -> Path:
    """Execute one text notebook with its parameters; returns the executed ``.ipynb`` path.
    ``env``: variables set for the kernel (staging folder, notices file, threads);
    ``show_progress``: copy the kernel's progress bars to this terminal (off when chapters run
    at once: their bars would overwrite each other)."""
    import jupytext
    import papermill as pm

    nb = jupytext.read(path)
    params = parameters_for(nb, path.stem, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.ipynb"
    tmp = out_dir / f".{path.stem}.running.ipynb"
    bars = out_dir / f".{path.stem}.progress"  # the kernel's progress bars, copied to this terminal
    bars.write_text("")
    kernel_env = {**os.environ, **{k: str(v) for k, v in (env or {}).items()}, "HETBOOK_PROGRESS": str(bars),
                  "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # kernel = this Python
    stop = _follow(bars, sys.stderr) if show_progress else (lambda: None)
    try:
        pm.execute_notebook(nb, str(tmp), parameters=params, kernel_name="python3", cwd=str(REPO_ROOT),
                            progress_bar=False, request_save_on_cell_execute=False,
                            kernel_manager_class=ipc_kernel_manager(kernel_env))
    finally:
        stop()
        bars.unlink(missing_ok=True)
    _tag_injected(tmp)
    os.replace(tmp, out)
    return out


def _report(notices: Path, failures: list) -> None:
    """Print a chapter's automatic fixes and per-submission failures on the terminal."""

    if notices.is_file():
        for line in notices.read_text().splitlines():
            n = json.loads(line)
            print(f"    note: {n['where']}: {n['message']}", flush=True)
        notices.unlink()
    for f in failures:
        first = f["message"].splitlines()[0]
        print(f"    FAILED submission {f['label']!r}: {first}", file=sys.stderr, flush=True)


def build_parser(prog: str = "python -m helpers.pipeline.run") -> argparse.ArgumentParser:
    """The runner's options (shared by ``hetbook run`` and ``hetbook status``)."""
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params/demo.yml", help="parameters file (YAML)")
    ap.add_argument("--only", action="append", help="run only notebooks whose name starts with this (repeatable)")
    ap.add_argument("--out", help="folder for executed notebooks (default: executed_dir of the params)")
    ap.add_argument("--no-data", action="store_true", help="do not generate the demo data")
    ap.add_argument("--jobs", type=int, help="chapters run at once along their dependencies (default: the "
                    "parameters' jobs, else 1; at most the CPU count); each kernel then gets CPUs/jobs threads")
    ap.add_argument("--status", action="store_true",
                    help="print every chapter as done / stale / missing with the reason, and run nothing")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. common.data_dir=/data/x or notebooks.03_volume_metrics.voxel_size=1.1 "
                         "(VALUE is read as YAML; repeatable)")
    return ap


def main(argv=None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Validate the parameters, then print the status (``--status``) or run what is stale or
    missing (everything selected with ``--only``). Returns the exit code."""
    cfg = load_params(args.params)
    for item in args.set:
        apply_override(cfg, item)
    out_dir = resolve(args.out or cfg["executed_dir"])
    methods = ensure_data(cfg, methods=False) if not args.no_data and not args.status else None
    nbs = list_notebooks()
    if args.only:
        nbs = [p for p in nbs if any(p.stem.startswith(o) for o in args.only)]
        if not nbs:
            print(f"no notebook matches {args.only}", file=sys.stderr)
            return 2
    validate(cfg, nbs, args.params)
    again = f"hetbook run --params {args.params}"
    results = resolve(cfg["common"]["results_dir"]) if cfg.get("common", {}).get("results_dir") else None
    if results is None:
        if args.status:
            print("no results_dir in the parameters: nothing to report", file=sys.stderr)
            return 2
        return _execute(nbs, cfg, out_dir, None, args, again, methods)
    from helpers.core.errors import InputError

    try:
        check_writable(results)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.status:
        return print_status(cfg, results, out_dir, again)
    from helpers.io import manifest
    from helpers.pipeline import fingerprint

    fresh = any(p.stem.startswith("02") for p in nbs) or not (results / manifest.NAME).is_file()
    m = manifest.start(results, cfg, resolve(cfg["common"].get("data_dir", ".")), fresh=fresh)
    states = fingerprint.status([p.stem for p in list_notebooks()], cfg, m["inputs"], m["chapters"])
    blocked = _blocked(nbs, states) if args.only else []
    if blocked:
        print("error: " + "; ".join(f"{stem} reads {dep}, which is {states[dep][0]} ({states[dep][1]})"
                                    for stem, dep in blocked)
              + f".\nFix: `{again}` reruns exactly what is stale or missing (or add "
              + " ".join(f"--only {d[:2]}" for d in dict.fromkeys(d for _, d in blocked)) + ").", file=sys.stderr)
        return 2
    return _execute(nbs, cfg, out_dir, results, args, again, methods)


def print_status(cfg: dict, results: Path, out_dir: Path, again: str) -> int:
    """Every chapter as done / stale / missing with the reason; read-only for the results (the
    manifest is not touched), marks stale executed notebooks with a banner."""
    from helpers.io import manifest
    from helpers.pipeline import fingerprint

    data_dir = resolve(cfg["common"].get("data_dir", "."))
    m = manifest.read(results) if (results / manifest.NAME).is_file() else {}
    inputs = manifest.input_fingerprints(data_dir) if data_dir.is_dir() else {}
    states = fingerprint.status([p.stem for p in list_notebooks()], cfg, inputs, m.get("chapters", {}))
    for stem, (state, why) in states.items():
        print(f"{stem:20s} {state:8s} {why}")
    fingerprint.mark_executed(out_dir, states, again)
    return 0


def _execute(nbs: list[Path], cfg: dict, out_dir: Path, results: Path | None, args, again: str, methods=None) -> int:
    """Run the selected chapters (skipping those up to date unless ``--only``): one after another,
    or ``jobs`` at once along the chapters' dependencies (:mod:`helpers.pipeline.schedule`);
    ``methods`` (the real methods' data step, or None) first, beside the chapters not reading it."""
    from helpers.pipeline.fingerprint import DEPENDS, READS
    from helpers.pipeline.schedule import (METHODS_STEP, effective_jobs, expected_seconds, kernel_threads,
                                           run_graph, with_step)

    t0 = time.time()
    jobs = effective_jobs(getattr(args, "jobs", None) or cfg.get("jobs", 1), len(nbs))
    counters = {p.stem: f"[{i}/{len(nbs)}]" for i, p in enumerate(nbs, 1)}
    paths = {p.stem: p for p in nbs}
    extra = {} if jobs == 1 else {"OMP_NUM_THREADS": kernel_threads(jobs), "MKL_NUM_THREADS": kernel_threads(jobs)}
    if jobs > 1:
        print(f"running up to {jobs} chapters at once, {kernel_threads(jobs)} thread(s) each "
              "(progress bars off; --jobs 1 shows them)", flush=True)
    items, deps = with_step(list(paths), DEPENDS, READS, beside=jobs > 2) if methods else (list(paths), DEPENDS)

    def work(stem: str) -> str:
        if stem == METHODS_STEP:
            return _methods_step(methods, cfg, results, kernel_threads(jobs) if jobs > 2 else None)
        return _run_chapter(paths[stem], counters[stem], cfg, out_dir, results, bool(args.only), extra, jobs == 1)

    outcome = run_graph(items, deps, work, jobs, expected_seconds(results))
    if "failed" in outcome.values():
        return 1
    if results is not None:
        _finish(cfg, out_dir, results, again)
    ran = sum(v == "ran" for k, v in outcome.items() if k in paths)
    print(f"{ran} of {len(nbs)} notebooks run in {time.time() - t0:.0f} s -> {out_dir}")
    return 0


def _methods_step(methods, cfg: dict, results: Path | None, threads: int | None = None) -> str:
    """Add the real methods' entries (on ``threads`` threads), then record the data's new
    fingerprints in the manifest (under :data:`MANIFEST_LOCK`) before their readers start."""
    from helpers.core.errors import InputError
    from helpers.io import manifest

    try:
        methods(threads) if threads else methods()
    except InputError as exc:
        print(f"error: data: {exc}", file=sys.stderr, flush=True)
        return "failed"
    if results is not None:
        with MANIFEST_LOCK:
            m = manifest.read(results)
            m["inputs"] = manifest.input_fingerprints(resolve(cfg["common"].get("data_dir", ".")))
            manifest.write(results, m)
    return "ran"


def _run_chapter(path: Path, counter: str, cfg: dict, out_dir: Path, results: Path | None, forced: bool,
                 extra_env: dict | None = None, one_at_a_time: bool = True) -> str:
    """One chapter: skip if up to date, else run it in a staging folder and commit its results
    (manifest reads and commits under :data:`MANIFEST_LOCK`). Returns "skipped", "ran" or "failed"."""
    import papermill as pm

    from helpers.io import manifest
    from helpers.io.schema import NOTICES_ENV
    from helpers.pipeline import fingerprint

    t, fp, env = time.time(), None, dict(extra_env or {})
    if results is not None:
        with MANIFEST_LOCK:
            m = manifest.read(results)
            if not forced and fingerprint.status([path.stem], cfg, m["inputs"], m["chapters"])[path.stem][0] == "done":
                print(f"{counter} {path.stem}: up to date, not rerun", flush=True)
                return "skipped"
            fp = fingerprint.fingerprint(path.stem, cfg, m["inputs"], m["chapters"])
        env.update(_stage_env(results, path.stem))
    print(f"{counter} {path.stem} ..." + ("" if one_at_a_time else " started"), end=" " if one_at_a_time else "\n",
          flush=True)
    try:
        run_notebook(path, cfg, out_dir, env, show_progress=one_at_a_time)
    except pm.PapermillExecutionError as exc:
        print("FAILED" if one_at_a_time else f"{counter} {path.stem} FAILED")
        print(f"\nnotebook {path.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", file=sys.stderr)
        print(f"(the partly executed notebook is {out_dir / ('.' + path.stem + '.running.ipynb')})", file=sys.stderr)
        if results is not None:
            kept = manifest.discard_stage(env[manifest.STAGE_ENV], results, path.stem)
            if kept:
                print(f"(its partial results were kept aside in {kept}; later chapters never read them)",
                      file=sys.stderr)
        return "failed"
    print(("" if one_at_a_time else f"{counter} {path.stem} ") + f"done in {time.time() - t:.0f} s", flush=True)
    if results is not None:
        with MANIFEST_LOCK:
            manifest.commit_stage(env[manifest.STAGE_ENV], results)
            m = manifest.merge_update(results, path.stem, fingerprint=fp, readers=fingerprint.readers_of(path.stem))
            m["chapters"][path.stem]["seconds"] = round(time.time() - t, 1)
            manifest.write(results, m)
            _report(env[NOTICES_ENV], [f for f in m.get("failures", []) if f["chapter"] == path.stem])
    return "ran"


def _stage_env(results: Path, stem: str) -> dict:
    """The kernel's environment for one chapter: its empty staging folder and notices file."""
    from helpers.io import manifest
    from helpers.io.schema import NOTICES_ENV

    stage = results / ".staging" / stem
    shutil.rmtree(stage, ignore_errors=True)
    notices = results / ".staging" / f"{stem}.notices.jsonl"
    notices.parent.mkdir(parents=True, exist_ok=True)
    notices.unlink(missing_ok=True)
    return {manifest.STAGE_ENV: stage, manifest.RESULTS_ENV: results, manifest.CHAPTER_ENV: stem, NOTICES_ENV: notices}


def _finish(cfg: dict, out_dir: Path, results: Path, again: str) -> None:
    """After a run: drop the staging folder, mark chapters that are still not current."""
    from helpers.io import manifest
    from helpers.pipeline import fingerprint

    shutil.rmtree(results / ".staging", ignore_errors=True)
    m = manifest.read(results)
    write_run_time(results, m)
    states = fingerprint.status([p.stem for p in list_notebooks()], cfg, m["inputs"], m["chapters"])
    stale = fingerprint.mark_executed(out_dir, states, again)
    if stale:
        print(f"not current (marked in the book): {', '.join(f'{k} ({states[k][1]})' for k in stale)}")


def write_run_time(results: Path, m: dict) -> Path:
    """``<results>/run_time.md`` for the book's front page: each chapter's last run time (s, from
    the manifest), their sum and the machine's CPU count."""
    rows = [(k, v.get("seconds")) for k, v in sorted(m.get("chapters", {}).items())]
    known = [s for _, s in rows if s is not None]
    lines = ["| chapter | seconds |", "|---|---:|"] + [f"| {k} | {'—' if s is None else f'{s:.0f}'} |" for k, s in rows]
    text = (f"The chapters' last runs took {sum(known):.0f} s in all on {os.cpu_count()} CPU cores "
            f"({len(known)} of {len(rows)} timed):\n\n" + "\n".join(lines) + "\n")
    (results / "run_time.md").write_text(text)
    return results / "run_time.md"


def _blocked(nbs: list[Path], states: dict) -> list[tuple[str, str]]:
    """(chapter, chapter it reads) pairs where the one read is stale or missing and not run
    before it in this invocation."""
    from helpers.pipeline.fingerprint import DEPENDS

    out, earlier = [], set()
    for p in nbs:
        out += [(p.stem, d) for d in DEPENDS.get(p.stem, []) if d not in earlier and states.get(d, ("missing",))[0] != "done"]
        earlier.add(p.stem)
    return out


if __name__ == "__main__":
    sys.exit(main())
