"""Which chapters' results still follow from their inputs: fingerprints, stale chapters, banners.

A chapter's results hold only for what it used. When a chapter finishes, the runner records in
the manifest (``chapters[<name>]``) its **fingerprint**: its resolved parameters (its own and the
shared ones; folder locations and where it runs — Dask, worker counts — left out), a digest of every data file it reads (:data:`READS`:
parts of the data folder), the code it ran (digests of its notebook and of ``helpers/``), and the completion ``token`` of every chapter it
reads (:data:`DEPENDS`), plus a fresh token of its own. A chapter is

* ``missing``: never finished in this results folder (or dropped when preprocessing re-ran);
* ``stale``: its parameters, its data files or the code changed since, or a chapter it reads
  was re-run since (its token changed) or is itself stale or missing — the reason says which;
* ``done``: otherwise.

The runner reruns exactly the stale and missing chapters (make-like), refuses ``--only N`` while
a chapter N reads is stale (naming it and the command that refreshes it), and puts a banner at
the top of every stale chapter's executed notebook, so the book never shows its figures as
current. ``hetbook status`` prints each chapter's state and reason.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

# chapter -> the chapters whose results it reads
DEPENDS = {"01_data": [], "02_preprocessing": [], "03_volume_metrics": ["02_preprocessing"],
           "04_subspace": ["02_preprocessing"], "05_distribution": ["02_preprocessing", "03_volume_metrics"],
           "06_image_metrics": ["02_preprocessing"], "07_robustness": [],
           "08_summary": ["02_preprocessing", "03_volume_metrics", "04_subspace", "05_distribution",
                          "06_image_metrics", "07_robustness", "09_per_particle"],
           "09_per_particle": ["02_preprocessing"]}
# chapter -> the parts of the data folder it reads (a folder, or one file)
READS = {"01_data": ["gt", "particles", "manifest.json"], "02_preprocessing": ["gt", "submissions"],
         "03_volume_metrics": ["gt"], "04_subspace": ["gt"], "05_distribution": ["gt"],
         "06_image_metrics": ["gt", "particles"], "07_robustness": ["gt", "particles", "manifest.json"],
         "08_summary": ["submissions/submission_config.json", "manifest.json", "cryodrgn/run.json"],
         "09_per_particle": ["gt", "particles", "submissions/submission_config.json", "cryodrgn/run.json",
                                             "recovar/run.json"]}
# where things are and where they run, not what they compute: never make a chapter stale
LOCATIONS = {"data_dir", "results_dir", "executed_dir", "dask_scheduler", "dask_workers", "transport_jobs"}
BANNER_TAG = "hetbook-stale"


def readers_of(stem: str) -> set[str]:
    """The chapters that read ``stem``'s results, directly or through others (:data:`DEPENDS`)."""
    out, todo = set(), [stem]
    while todo:
        s = todo.pop()
        for k, deps in DEPENDS.items():
            if s in deps and k not in out:
                out.add(k)
                todo.append(k)
    return out


def _digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _in_scope(path: str, scope: str) -> bool:
    return path == scope or path.startswith(scope.rstrip("/") + "/")


def chapter_params(cfg: dict, stem: str) -> dict:
    """The parameters a chapter gets (shared + its own), folder locations left out."""
    own = cfg.get("notebooks", {}).get(stem, {}) or {}
    return {k: v for k, v in {**cfg.get("common", {}), **own}.items() if k not in LOCATIONS}


_CODE: dict = {}
RUNNER_ONLY = {"run.py", "fingerprint.py", "cli.py", "params.py", "inputs.py", "schedule.py"}  # the runner's own code: no chapter imports it


def code_digest(stem: str) -> str:
    """Digest of the code a chapter runs: its notebook file and every module of ``helpers/`` but
    the runner's own (:data:`RUNNER_ONLY`); a change to either makes the chapter stale, a commit
    that changes neither does not."""
    from helpers.core.paths import REPO_ROOT

    if "helpers" not in _CODE:
        h = hashlib.sha1()
        for f in sorted((REPO_ROOT / "helpers").rglob("*.py")):
            if f.name not in RUNNER_ONLY:
                h.update(f.relative_to(REPO_ROOT).as_posix().encode() + f.read_bytes())
        _CODE["helpers"] = h.hexdigest()[:12]
    nb = REPO_ROOT / "notebooks" / f"{stem}.py"
    return _CODE["helpers"] + "/" + (hashlib.sha1(nb.read_bytes()).hexdigest()[:12] if nb.is_file() else "-")


def fingerprint(stem: str, cfg: dict, inputs: dict, chapters: dict, code: str | None = None) -> dict:
    """What chapter ``stem`` uses now. inputs: the manifest's ``inputs`` {relative path:
    {bytes, mtime, sha1}}; chapters: the manifest's ``chapters`` (for the tokens it reads);
    code: its code version (default :func:`code_digest`)."""
    scopes = READS.get(stem, ["gt", "submissions", "particles"])
    data = {s: _digest({p: (v.get("sha1") or (v["bytes"], v["mtime"])) for p, v in inputs.items()
                        if _in_scope(p, s)}) for s in scopes}
    return {"params": chapter_params(cfg, stem), "data": data, "code": code or code_digest(stem),
            "upstream": {d: chapters.get(d, {}).get("token") for d in DEPENDS.get(stem, [])}}


def status(stems, cfg: dict, inputs: dict, chapters: dict, code: str | None = None) -> dict:
    """{stem: (state, reason)} for ``stems`` in order; state "done", "stale" or "missing"
    (``code``: the code version for every chapter; default each one's :func:`code_digest`)."""
    out = {}
    for stem in stems:
        rec = chapters.get(stem)
        if not rec or rec.get("status") != "done":
            out[stem] = ("missing", "not run in this results folder" if not rec else f"last run {rec.get('status')}")
            continue
        old, now = rec.get("fingerprint"), fingerprint(stem, cfg, inputs, chapters, code)
        if not old:
            out[stem] = ("stale", "run by a hetbook without fingerprints")
            continue
        why = []
        changed = sorted(k for k in set(old["params"]) | set(now["params"])
                         if old["params"].get(k, "<unset>") != now["params"].get(k, "<unset>"))
        if changed:
            why.append("parameters changed: " + ", ".join(
                f"{k} {old['params'].get(k, '<unset>')!r} → {now['params'].get(k, '<unset>')!r}" for k in changed[:4]))
        files = [s for s in now["data"] if old["data"].get(s) != now["data"][s]]
        if files:
            why.append("data changed under " + ", ".join(files))
        if old.get("code") != now["code"]:
            what = ("its notebook" if old.get("code", "/").split("/")[0] == now["code"].split("/")[0] else "helpers/")
            why.append(f"code changed ({what})")
        for d in DEPENDS.get(stem, []):
            up = out.get(d) or status([d], cfg, inputs, chapters, code)[d]
            if up[0] != "done":
                why.append(f"{d} is {up[0]}")
            elif old["upstream"].get(d) != now["upstream"][d]:
                why.append(f"{d} was re-run since")
        out[stem] = ("stale", "; ".join(why)) if why else ("done", "")
    return out


def mark_executed(out_dir: Path, states: dict, command: str) -> list[str]:
    """Put a banner on top of each executed notebook (``<out_dir>/<stem>.ipynb``) whose chapter
    is not done, and take it off the others; returns the stems given a banner."""
    import nbformat

    marked = []
    for stem, (state, reason) in states.items():
        path = Path(out_dir) / f"{stem}.ipynb"
        if not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if BANNER_TAG not in c.metadata.get("tags", [])]
        if state != "done":
            text = (f"```{{warning}}\n**These results are {state}** ({reason}): the figures and tables below were "
                    f"computed from inputs that have changed since. Rerun: `{command}`.\n```")
            cells.insert(0, nbformat.v4.new_markdown_cell(text, metadata={"tags": [BANNER_TAG]}))
            marked.append(stem)
        if len(cells) != len(nb.cells) or state != "done":
            nb.cells = cells
            nbformat.write(nb, path)
    return marked
