"""Run the analysis notebooks in order with papermill: ``python -m helpers.pipeline.run``.

Example usage::

    python -m helpers.pipeline.run --params params/demo.yml            # data (if missing) + every notebook
    python -m helpers.pipeline.run --params params/tiny.yml --only 03   # one notebook (name or number prefix)
    python -m helpers.pipeline.run --params my.yml --out /tmp/executed  # executed copies elsewhere

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
import shutil
import ast
import os
import sys
import time
from pathlib import Path

import yaml

from helpers.pipeline.demo_data import ensure_data  # noqa: F401 (the Makefile's data target calls it from here)
from helpers.core.paths import REPO_ROOT, resolve

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def list_notebooks() -> list[Path]:
    """The pipeline's notebooks in order (``notebooks/NN_name.py``)."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


def declared_parameters(nb) -> dict:
    """Names and default values assigned in the notebook's ``parameters`` cell."""
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        if isinstance(t, ast.Name):
                            try:
                                out[t.id] = ast.literal_eval(node.value)
                            except ValueError:
                                out[t.id] = None
            return out
    raise ValueError("no cell tagged 'parameters'")


def load_params(path) -> dict:
    with open(resolve(path)) as fh:
        cfg = yaml.safe_load(fh) or {}
    cfg.setdefault("common", {})
    cfg.setdefault("notebooks", {})
    cfg.setdefault("dataset", {})
    cfg.setdefault("executed_dir", "book/executed")
    return cfg


def apply_override(cfg: dict, item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested parameters dict."""
    if "=" not in item:
        raise SystemExit(f"--set needs KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    *path, last = key.split(".")
    node = cfg
    for k in path:
        node = node.setdefault(k, {})
    node[last] = yaml.safe_load(value)


def _type_problem(name: str, default, value) -> str | None:
    """A parameter value whose type does not match the notebook's default (None if fine)."""
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        want = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        want = "a whole number"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        want = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        want = "a text (quote it)"
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        want = "a list, e.g. [a, b]"
    else:
        return None
    return None if ok else f"{name} = {value!r} should be {want} (its default is {default!r})"


def validate_params(cfg: dict, notebooks: list[Path], source: str) -> None:
    """Check every parameter the runner would pass against the notebooks' declared defaults:
    unknown names and wrong types, all listed at once (exits with a message, never a traceback
    from inside a notebook)."""
    import jupytext

    problems = []
    for path in notebooks:
        declared = declared_parameters(jupytext.read(path))
        own = cfg["notebooks"].get(path.stem, {}) or {}
        if not isinstance(own, dict):
            problems.append(f"notebooks.{path.stem} should be a mapping of parameters, got {own!r}")
            continue
        for k in sorted(set(own) - set(declared)):
            problems.append(f"notebooks.{path.stem}.{k} is not a parameter of {path.stem} "
                            f"(it declares {', '.join(sorted(declared))})")
        for k, v in {**{k: v for k, v in cfg["common"].items() if k in declared}, **own}.items():
            if k in declared:
                msg = _type_problem(k, declared[k], v)
                if msg:
                    problems.append(f"{path.stem}: {msg}")
                if isinstance(declared[k], (int, float)) and not isinstance(declared[k], bool) \
                        and isinstance(v, (int, float)) and not isinstance(v, bool):
                    least = AT_LEAST.get((path.stem, k))
                    if least is not None and v < least[0]:
                        problems.append(f"{path.stem}: {k} = {v!r} must be ≥ {least[0]} ({least[1]})")
                    elif k in POSITIVE and v <= 0:
                        problems.append(f"{path.stem}: {k} = {v!r} must be positive")
                    elif k in NONNEGATIVE and v < 0:
                        problems.append(f"{path.stem}: {k} = {v!r} must be ≥ 0 (0: the default)")
    if problems:
        raise SystemExit(f"{source}: {len(problems)} problem(s) with the parameters:\n  - " + "\n  - ".join(problems)
                         + "\nFix: correct them in the parameters file or the --set options.")


POSITIVE = {"voxel_size", "n_images", "box_ds", "n_directions", "n_inplane", "rank", "n_pool", "n_replicates",
            "sw_directions", "align_box", "align_directions", "align_inplane", "n_bootstrap", "transport_top_k",
            "transport_box"}
NONNEGATIVE = {"memory_gib", "transport_jobs", "dask_workers"}  # 0 means "the default"
# (notebook, parameter): (smallest value, why)
AT_LEAST = {("07_robustness", "n_replicates"): (3, "each level is tested against the base by a paired t-test "
                                                   "over replicates: with 1 the spread is 0, with 2 it has 1 degree of freedom")}


def parameters_for(nb, stem: str, cfg: dict) -> dict:
    """The parameters passed to one notebook: the ``common`` ones it declares + its own section."""
    declared = declared_parameters(nb)
    params = {k: v for k, v in cfg["common"].items() if k in declared}
    own = cfg["notebooks"].get(stem, {}) or {}
    unknown = set(own) - set(declared)
    if unknown:
        raise SystemExit(f"{stem}: parameters {sorted(unknown)} are not declared in its parameters cell")
    params.update(own)
    return params


def _tag_injected(path: Path) -> None:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
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


def _ipc_kernel_manager():
    """A jupyter KernelManager on local IPC sockets: the kernel is on this machine anyway, and
    over TCP ipykernel prints a warning about unencrypted traffic for every chapter."""
    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw):
            kw.setdefault("transport", "ipc")
            super().__init__(**kw)
    return IPCKernelManager


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


def run_notebook(path: Path, cfg: dict, out_dir: Path, env: dict | None = None) -> Path:
    """Execute one text notebook with its parameters; returns the executed ``.ipynb`` path.
    ``env``: variables set for the kernel (staging folder, notices file)."""
    import jupytext
    import papermill as pm

    nb = jupytext.read(path)
    params = parameters_for(nb, path.stem, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{path.stem}.ipynb"
    tmp = out_dir / f".{path.stem}.running.ipynb"
    bars = out_dir / f".{path.stem}.progress"  # the kernel's progress bars, copied to this terminal
    bars.write_text("")
    env = {**(env or {}), "HETBOOK_PROGRESS": str(bars)}
    saved = {k: os.environ.get(k) for k in ["PATH", *env]}
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{saved['PATH'] or ''}"  # kernel = this Python
    os.environ.update({k: str(v) for k, v in env.items()})
    stop = _follow(bars, sys.stderr)
    try:
        pm.execute_notebook(nb, str(tmp), parameters=params, kernel_name="python3", cwd=str(REPO_ROOT),
                            progress_bar=False, request_save_on_cell_execute=False,
                            kernel_manager_class=_ipc_kernel_manager())
    finally:
        stop()
        bars.unlink(missing_ok=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.pipeline.run", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params/demo.yml", help="parameters file (YAML)")
    ap.add_argument("--only", action="append", help="run only notebooks whose name starts with this (repeatable)")
    ap.add_argument("--out", help="folder for executed notebooks (default: executed_dir of the params)")
    ap.add_argument("--no-data", action="store_true", help="do not generate the demo data")
    ap.add_argument("--status", action="store_true",
                    help="print every chapter as done / stale / missing with the reason, and run nothing")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter, e.g. common.data_dir=/data/x or notebooks.03_volume_metrics.voxel_size=1.1 "
                         "(VALUE is read as YAML; repeatable)")
    args = ap.parse_args(argv)
    import papermill as pm

    cfg = load_params(args.params)
    for item in args.set:
        apply_override(cfg, item)
    out_dir = resolve(args.out or cfg["executed_dir"])
    if not args.no_data:
        ensure_data(cfg)
    nbs = list_notebooks()
    if args.only:
        nbs = [p for p in nbs if any(p.stem.startswith(o) for o in args.only)]
        if not nbs:
            print(f"no notebook matches {args.only}", file=sys.stderr)
            return 2
    validate_params(cfg, nbs, args.params)
    from helpers.pipeline import fingerprint
    from helpers.io import manifest
    from helpers.core.errors import InputError
    from helpers.io.schema import NOTICES_ENV

    results = resolve(cfg["common"]["results_dir"]) if cfg.get("common", {}).get("results_dir") else None
    if results is not None:
        try:
            check_writable(results)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        data_dir = resolve(cfg["common"].get("data_dir", "."))
        again = f"python -m helpers.pipeline.run --params {args.params}"
        if args.status:  # read-only: the manifest is not touched
            m = manifest.read(results) if (results / manifest.NAME).is_file() else {}
            inputs = manifest.input_fingerprints(data_dir) if data_dir.is_dir() else {}
            states = fingerprint.status([p.stem for p in list_notebooks()], cfg, inputs, m.get("chapters", {}))
            for stem, (state, why) in states.items():
                print(f"{stem:20s} {state:8s} {why}")
            fingerprint.mark_executed(out_dir, states, again)
            return 0
        fresh = any(p.stem.startswith("02") for p in nbs) or not (results / manifest.NAME).is_file()
        m = manifest.start(results, cfg, data_dir, fresh=fresh)
        states = fingerprint.status([p.stem for p in list_notebooks()], cfg, m["inputs"], m["chapters"])
        blocked = _blocked(nbs, states) if args.only else []
        if blocked:
            print("error: " + "; ".join(f"{stem} reads {dep}, which is {states[dep][0]} ({states[dep][1]})"
                                        for stem, dep in blocked)
                  + f".\nFix: `{again}` reruns exactly what is stale or missing (or add "
                  + " ".join(f"--only {d[:2]}" for d in dict.fromkeys(d for _, d in blocked)) + ").", file=sys.stderr)
            return 2
    elif args.status:
        print("no results_dir in the parameters: nothing to report", file=sys.stderr)
        return 2
    t0, ran = time.time(), 0
    for i, path in enumerate(nbs, 1):
        t = time.time()
        fp = None
        if results is not None:
            m = manifest.read(results)
            if not args.only and fingerprint.status([path.stem], cfg, m["inputs"], m["chapters"])[path.stem][0] == "done":
                print(f"[{i}/{len(nbs)}] {path.stem}: up to date, not rerun", flush=True)
                continue
            fp = fingerprint.fingerprint(path.stem, cfg, m["inputs"], m["chapters"])
        ran += 1
        print(f"[{i}/{len(nbs)}] {path.stem} ...", end=" ", flush=True)
        env = {}
        if results is not None:
            stage = results / ".staging" / path.stem
            shutil.rmtree(stage, ignore_errors=True)
            notices = results / ".staging" / f"{path.stem}.notices.jsonl"
            notices.parent.mkdir(parents=True, exist_ok=True)
            notices.unlink(missing_ok=True)
            env = {manifest.STAGE_ENV: stage, manifest.RESULTS_ENV: results, manifest.CHAPTER_ENV: path.stem,
                   NOTICES_ENV: notices}
        try:
            run_notebook(path, cfg, out_dir, env)
        except pm.PapermillExecutionError as exc:
            print("FAILED")
            print(f"\nnotebook {path.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}",
                  file=sys.stderr)
            print(f"(the partly executed notebook is {out_dir / ('.' + path.stem + '.running.ipynb')})", file=sys.stderr)
            if results is not None:
                kept = manifest.discard_stage(env[manifest.STAGE_ENV], results, path.stem)
                if kept:
                    print(f"(its partial results were kept aside in {kept}; later chapters never read them)",
                          file=sys.stderr)
            return 1
        print(f"done in {time.time() - t:.0f} s", flush=True)
        if results is not None:
            manifest.commit_stage(env[manifest.STAGE_ENV], results)
            m = manifest.merge_update(results, path.stem, fingerprint=fp)
            _report(env[NOTICES_ENV], [f for f in m.get("failures", []) if f["chapter"] == path.stem])
    if results is not None:
        shutil.rmtree(results / ".staging", ignore_errors=True)
        m = manifest.read(results)
        states = fingerprint.status([p.stem for p in list_notebooks()], cfg, m["inputs"], m["chapters"])
        stale = fingerprint.mark_executed(out_dir, states, f"python -m helpers.pipeline.run --params {args.params}")
        if stale:
            print(f"not current (marked in the book): {', '.join(f'{k} ({states[k][1]})' for k in stale)}")
    print(f"{ran} of {len(nbs)} notebooks run in {time.time() - t0:.0f} s -> {out_dir}")
    return 0


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
