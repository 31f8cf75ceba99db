"""The package's structure: layers held by import-linter, and no import cycle anywhere.

Both count every import, the function-local ones included, so a cycle cannot hide inside a
function (fourier → volume_metrics → preprocess → align → fourier, io ↔ mapset, paths ↔ manifest and
schema → mapset were once closed that way)."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_layers_hold():
    """pyproject.toml's [tool.importlinter] contracts: report > pipeline > methods > datagen >
    kernels > io > core, and inside kernels the metric kernels over the numerics; every module is
    in a layer (exhaustive). Red with fourier importing volume_metrics (the old circle) or with a
    module in no layer."""
    pytest.importorskip("importlinter")
    from importlinter.cli import lint_imports

    assert lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True) == 0


def _graph() -> dict:
    """{module: modules it imports}, dotted names under helpers (packages as their __init__)."""
    root = REPO / "helpers"
    mods = {}
    for p in root.rglob("*.py"):
        parts = ("helpers",) + p.relative_to(root).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    g = {m: set() for m in mods}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.startswith("helpers"):
                targets = [f"{n.module}.{a.name}" for a in n.names if f"{n.module}.{a.name}" in mods] or [n.module]
                g[m] |= {t for t in targets if t in mods and t != m}
            elif isinstance(n, ast.ImportFrom) and n.level:
                raise AssertionError(f"{p}: relative import (hetbook imports absolutely)")
    return g


def test_no_import_cycle():
    """Depth-first search over helpers' own imports (module level and function level)."""
    g, state, cycle = _graph(), {}, []

    def visit(m, path):
        state[m] = "open"
        for nx in sorted(g[m]):
            if state.get(nx) == "open":
                cycle.append(path[path.index(nx):] + [nx])
            elif nx not in state:
                visit(nx, path + [nx])
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycle, " ; ".join(" → ".join(c) for c in cycle)


def test_results_comparison_catches_a_change(tmp_path):
    """tools/compare_results.py (the before/after check of a refactor): a timing column may differ,
    a value changed by 1e-9 relative may not; a missing file is reported."""
    import subprocess
    import sys

    import numpy as np
    import pandas as pd

    for d in ("a", "b"):
        (tmp_path / d / "sub").mkdir(parents=True)
    pd.DataFrame({"label": ["x", "y"], "res": [4.0, 5.0], "seconds": [1.0, 2.0]}).to_csv(tmp_path / "a/s.csv", index=False)
    pd.DataFrame({"label": ["x", "y"], "res": [4.0, 5.0], "seconds": [3.0, 9.0]}).to_csv(tmp_path / "b/s.csv", index=False)
    np.savez(tmp_path / "a/sub/m.npz", fsc=np.linspace(0, 1, 5))
    np.savez(tmp_path / "b/sub/m.npz", fsc=np.linspace(0, 1, 5))

    def run():
        return subprocess.run([sys.executable, str(REPO / "tools/compare_results.py"), str(tmp_path / "a"),
                               str(tmp_path / "b")], capture_output=True, text=True)
    r = run()
    assert r.returncode == 0 and "2 files: 2 bit-identical" in r.stdout
    np.savez(tmp_path / "b/sub/m.npz", fsc=np.linspace(0, 1, 5) * (1 + 1e-9))
    r = run()
    assert r.returncode == 1 and "differs" in r.stdout and "sub/m.npz" in r.stdout
    (tmp_path / "b/s.csv").unlink()
    assert "missing" in run().stdout
    # two checkouts: a provenance path differs only by the checkout's location (--moved)
    np.savez(tmp_path / "b/sub/m.npz", fsc=np.linspace(0, 1, 5))
    for d, root in (("a", "/old/repo"), ("b", "/new/repo")):
        np.savez(tmp_path / d / "p.npz", provenance=np.array(f'{{"source": "{root}/data/x"}}'))
    (tmp_path / "a/s.csv").unlink()
    assert "p.npz  provenance" in run().stdout
    r = subprocess.run([sys.executable, str(REPO / "tools/compare_results.py"), str(tmp_path / "a"), str(tmp_path / "b"),
                        "--moved", "/old/repo", "/new/repo"], capture_output=True, text=True)
    assert r.returncode == 0 and "2 files: 2 bit-identical" in r.stdout, r.stdout


def test_recording_a_run_copies_its_headlines_and_never_overwrites(tmp_path):
    """tools/record_run.py (book/full_size/, book/with_recovar/): the files present are copied
    byte for byte under their book names with the method records, a second call refuses, and
    --replace leaves no file of the older run behind."""
    import subprocess
    import sys

    res, data, dest = tmp_path / "results", tmp_path / "data", tmp_path / "book" / "rec"
    (res / "summary").mkdir(parents=True)
    (res / "per_particle").mkdir()
    (data / "recovar").mkdir(parents=True)
    (res / "summary" / "headline.md").write_text("On this run, A leads.\n")
    (res / "per_particle" / "story.md").write_text("On 10 particles ...\n")
    (res / "per_particle" / "summary.csv").write_text("entry,au_fsc_mean\nA,0.4\n")
    (data / "recovar" / "run.json").write_text('{"zdim": 4, "label": "RECOVAR"}')
    (res / "summary" / "leaderboard.csv").write_text(
        "label,mean_rank,mean_rank_lo,mean_rank_hi,resolution_A,resolution_A_err,rank_resolution_A\n"
        "Reconstructed,1.5,1.0,2.0,6.3314,0.4581,1.0\nRECOVAR,2.5,2.0,3.0,8.584,1e-15,2.0\n")

    def run(*extra):
        return subprocess.run([sys.executable, str(REPO / "tools/record_run.py"), str(res), str(dest),
                               "--data", str(data), *extra], capture_output=True, text=True)
    r = run()
    assert r.returncode == 0 and "6 files recorded" in r.stdout, r.stderr
    table = (dest / "methods.md").read_text().splitlines()
    assert table[0] == "|  | RECOVAR | Reconstructed |"
    assert table[2] == "| overall place | 2 of 2 | 1 of 2 |"
    assert table[4] == "| resolution (Å), lower is better | 8.58 (rank 2) | 6.33 ± 0.46 (rank 1) |"
    assert (dest / "summary_headline.md").read_text() == "On this run, A leads.\n"
    assert (dest / "per_particle_story.md").read_text() == "On 10 particles ...\n"
    assert (dest / "per_particle_summary.csv").read_text() == "entry,au_fsc_mean\nA,0.4\n"
    assert (dest / "recovar_run.json").read_text() == '{"zdim": 4, "label": "RECOVAR"}'
    assert "| `per_particle_story.md` |" in (dest / "README.md").read_text()
    (res / "summary" / "headline.md").write_text("On this run, B leads.\n")
    r = run()
    assert r.returncode != 0 and "exists: nothing was copied" in r.stderr
    assert (dest / "summary_headline.md").read_text() == "On this run, A leads.\n"
    (res / "per_particle" / "story.md").unlink()
    assert run("--replace").returncode == 0
    assert (dest / "summary_headline.md").read_text() == "On this run, B leads.\n"
    assert not (dest / "per_particle_story.md").exists()


def test_rooms_a_newcomer_can_hold():
    """No module of helpers/ over 400 lines, no function over 60 (def to last line), and each
    chapter's code cells ≤ 120 non-blank, non-comment lines: computations live in
    helpers.pipeline.chapters, figures in helpers.report."""
    import jupytext

    big = [f"{p.relative_to(REPO)}: {n} lines" for p in (REPO / "helpers").rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400]
    long = []
    for p in (REPO / "helpers").rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60:
                long.append(f"{p.relative_to(REPO)}:{n.name} {n.end_lineno - n.lineno + 1} lines")
    heavy = []
    for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py")):
        cells = [c for c in jupytext.read(p).cells if c.cell_type == "code"]
        n = sum(1 for c in cells for line in c.source.splitlines() if line.strip() and not line.strip().startswith("#"))
        if n > 120:
            heavy.append(f"{p.name}: {n} code lines")
    assert not (big or long or heavy), big + long + heavy
