"""The run parameters' model (helpers.pipeline.params) and the ``hetbook`` command
(helpers.pipeline.cli, helpers.pipeline.inputs): every shipped parameters file validates, bad
values are named with the fix, and check / score / status / --help work on a tiny data set."""
import json
import subprocess
import sys
import tomllib

import numpy as np
import pytest

from helpers.core.paths import REPO_ROOT
from helpers.pipeline import params as run_params, run


def _validate(cfg):
    run_params.validate(cfg, run.list_notebooks(), "p.yml")


SHIPPED = sorted(p.stem for p in (REPO_ROOT / "params").glob("*.yml"))


def test_the_shipped_parameter_files_are_all_here():
    """The list below is every file in params/ (a new one is validated without editing this test)."""
    assert {"demo", "demo_full", "demo_recovar", "tiny", "challenge", "robustness_full"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_parameters_file_validates(name):
    cfg = run_params.load_params(REPO_ROOT / f"params/{name}.yml")
    _validate(cfg)


def test_a_real_methods_options_are_checked_with_the_rest():
    """dataset.recovar / dataset.cryodrgn name their entry function's options: a misspelt one is
    listed by validate with the other problems, before any data is made (red without method_problems)."""
    cfg = run_params.load_params(REPO_ROOT / "params/demo_recovar.yml")
    cfg["dataset"]["recovar"]["n_cluster"] = 8
    cfg["dataset"]["cryodrgn"] = "yes"
    with pytest.raises(SystemExit) as exc:
        _validate(cfg)
    msg = str(exc.value)
    assert "3 problem(s)" in msg and "dataset.recovar should be a mapping with keys among" in msg
    assert "'n_clusters'" in msg and "dataset.cryodrgn should be" in msg


def test_dataset_section_is_typed(tmp_path):
    """The dataset section is checked against make_dataset's DEFAULTS: a zero box, a text seed and
    an unknown key are all listed at once (red without dataset_model in validate)."""
    cfg = run_params.load_params(REPO_ROOT / "params/demo.yml")
    cfg["dataset"].update(box=0, seed="zero", n_imgs=10)
    with pytest.raises(SystemExit) as exc:
        _validate(cfg)
    msg = str(exc.value)
    assert "3 problem(s)" in msg and "box = 0 must be positive" in msg
    assert "seed = 'zero' should be a whole number" in msg and "dataset.n_imgs is not a parameter of dataset" in msg


def test_unknown_top_level_section_names_the_file(tmp_path):
    (tmp_path / "p.yml").write_text("common: {results_dir: r}\nnotebook: {}\n")
    with pytest.raises(SystemExit, match=r"(?s)p\.yml: notebook is not a section.*Fix: the file has the sections"):
        run_params.load_params(tmp_path / "p.yml")


def test_notebook_model_types_follow_the_defaults():
    m = run_params.notebook_model("07_robustness", {"n_replicates": 3, "voxel_size": 1.0, "levels": {}, "x": None})
    m(n_replicates=5, voxel_size=2, levels={"noise": [1.0]}, x="anything")  # an int where a float is expected: fine
    for bad in ({"n_replicates": 2}, {"n_replicates": 4.0}, {"voxel_size": "1"}, {"levels": [1]}, {"y": 1}):
        with pytest.raises(Exception):
            m(**bad)


def test_console_script_and_help():
    """pyproject declares `hetbook`; the command and each subcommand answer --help."""
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["hetbook"] == "helpers.pipeline.cli:main"
    for sub, words in (([], "COMMAND"), (["run"], "--only"), (["status"], "stale"), (["check"], "DATA_DIR"),
                       (["score"], "--data")):
        r = subprocess.run([sys.executable, "-m", "helpers.pipeline.cli", *sub, "--help"], capture_output=True,
                           text=True, cwd=REPO_ROOT)
        assert r.returncode == 0 and words in r.stdout, (sub, r.stdout, r.stderr)


def test_check_lists_every_part_and_names_a_broken_file(tiny_data, tmp_path, capsys):
    from helpers.pipeline import cli

    assert cli.main(["check", str(tiny_data)]) == 0
    out = capsys.readouterr().out
    cfg = json.loads((tiny_data / "submissions/submission_config.json").read_text())
    n_subs = sum(k != "gt" for k in cfg)
    assert out.count("ok   submission") == n_subs and "ready to run" in out
    assert "24 maps of 24³" in out  # the tiny GT
    # a copy with one populations file of the wrong length: that submission fails, the rest read
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_data, bad, symlinks=True)
    first = next(v for k, v in cfg.items() if k != "gt")
    pops = bad / "submissions" / first["populations_file"]
    pops.write_text("\n".join(["0.5", "0.5"]) + "\n")
    assert cli.main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "populations.txt" in fail[0] and "1 problem(s)" in out


def test_score_folder_links_the_data_and_adds_one_entry(tiny_data, tmp_path):
    from helpers import io
    from helpers.core.errors import InputError
    from helpers.pipeline.inputs import score_folder

    cfg = json.loads((tiny_data / "submissions/submission_config.json").read_text())
    first = next(v for k, v in cfg.items() if k != "gt")
    mine = tmp_path / "mine"
    import shutil

    shutil.copytree(tiny_data / "submissions" / first["path"], mine)
    before = sorted(p.name for p in (tiny_data / "submissions").iterdir())
    new = score_folder(mine, tiny_data, tmp_path / "work", label="My method")
    gt, entries = io.read_config(new / "submissions/submission_config.json")
    assert len(entries) == len(cfg) and entries[-1].label == "My method"
    a, b = entries[0].read(), entries[-1].read()
    ref = io.read_submission_folder(tiny_data / "submissions" / first["path"], None, None, "x")
    np.testing.assert_array_equal(np.asarray(b.maps), np.asarray(ref.maps))
    np.testing.assert_array_equal(np.asarray(a.maps), np.asarray(ref.maps))  # the data's own entries, by absolute path
    assert (new / "gt").is_symlink() and (new / "gt").resolve() == (tiny_data / "gt").resolve()
    assert sorted(p.name for p in (tiny_data / "submissions").iterdir()) == before  # nothing written there
    with pytest.raises(InputError, match="exists already"):
        score_folder(mine, tiny_data, tmp_path / "work", label="Mine 2")
    with pytest.raises(InputError, match="labelled like"):
        score_folder(mine, tiny_data, tmp_path / "work2", label=first["flavor_name"])


def test_status_reports_every_chapter_missing_on_a_fresh_folder(tmp_path, capsys):
    from helpers.pipeline import cli

    (tmp_path / "p.yml").write_text(f"common: {{results_dir: {tmp_path / 'r'}, data_dir: {tmp_path}}}\n"
                                    f"executed_dir: {tmp_path / 'x'}\n")
    assert cli.main(["status", "--params", str(tmp_path / "p.yml")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == len(run.list_notebooks()) and all(" missing " in line for line in lines)


def test_challenge_parameter_file_names_only_declared_parameters():
    """params/challenge.yml must pass the runner's checks (every parameter declared by its
    notebook, numbers positive) before anyone spends a day on the real data."""


    cfg = run_params.load_params(REPO_ROOT / "params/challenge.yml")
    assert cfg["dataset"]["generate"] is False
    run_params.validate(cfg, run.list_notebooks(), "params/challenge.yml")
    bad = {**cfg, "notebooks": {**cfg["notebooks"], "04_subspace": {"box_ds": -1}}}
    with pytest.raises(SystemExit, match="box_ds"):
        run_params.validate(bad, run.list_notebooks(), "params/challenge.yml")
    # memory_gib: 0 is the default (40 % of free memory), a negative budget is refused by name
    for v, ok in ((0.0, True), (6.0, True), (-2.0, False)):
        c = {**cfg, "notebooks": {**cfg["notebooks"], "03_volume_metrics": {
            **cfg["notebooks"]["03_volume_metrics"], "memory_gib": v}}}
        if ok:
            run_params.validate(c, run.list_notebooks(), "params/challenge.yml")
        else:
            with pytest.raises(SystemExit, match="memory_gib = -2.0 must be ≥ 0"):
                run_params.validate(c, run.list_notebooks(), "params/challenge.yml")


def test_robustness_full_sweep_parameter_file_is_valid():
    """params/robustness_full.yml (the full sweep of chapter 7) passes the runner's checks, and
    every degradation it sets levels for exists."""
    from helpers.pipeline import robustness as rb


    cfg = run_params.load_params(REPO_ROOT / "params/robustness_full.yml")
    run_params.validate(cfg, run.list_notebooks(), "params/robustness_full.yml")
    levels = cfg["notebooks"]["07_robustness"]["levels"]
    assert set(levels) <= set(rb.DEGRADATIONS) and len(levels) >= 10




def test_executed_code_cells_are_collapsed_and_parameters_removed(tmp_path):
    """Issue 34 item 1: the book shows outputs first; every code cell is collapsed (hide-input),
    papermill's injected parameters are removed, a cell the chapter removes stays removed."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters", "hide-input"]}),
                nbformat.v4.new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("y = x"),
                nbformat.v4.new_code_cell("Markdown('a')", metadata={"tags": ["remove-input"]}),
                nbformat.v4.new_markdown_cell("text")]
    nbformat.write(nb, tmp_path / "n.ipynb")
    run._tag_injected(tmp_path / "n.ipynb")
    tags = [c.metadata.get("tags", []) for c in nbformat.read(tmp_path / "n.ipynb", as_version=4).cells]
    assert tags == [["parameters", "hide-input"], ["injected-parameters", "remove-cell"], ["hide-input"],
                    ["remove-input"], []]
