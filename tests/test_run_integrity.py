"""Run integrity through the public runner (``python -m helpers.pipeline.run``): one bad submission never
blocks the others, a stale result is never scored, a failed chapter leaves no partial results."""
import json
import shutil

import mrcfile
import numpy as np
import pandas as pd
import pytest
import yaml

from helpers.io import manifest
from helpers.pipeline import params as run_params, run
from helpers.core.errors import InputError
from helpers.io.mapset import MapSet

pytestmark = pytest.mark.slow  # runs notebooks


def params(tmp_path, data):
    cfg = {"executed_dir": str(tmp_path / "executed"), "dataset": {},
           "common": {"data_dir": str(data), "results_dir": str(tmp_path / "results")},
           "notebooks": {"02_preprocessing": {"align_box": 12, "align_directions": 50, "align_inplane": 8},
                         "03_volume_metrics": {"voxel_size": 5.7, "sw_directions": 4, "transport_metrics": []},
                         "04_subspace": {"voxel_size": 5.7, "box_ds": 12, "rank": 2}}}
    (tmp_path / "p.yml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "p.yml")


def add_submission(data, name, maps, pops, vs=5.7):
    d = data / "submissions" / name
    d.mkdir()
    for i, m in enumerate(maps):
        with mrcfile.new(d / f"{i + 1}.mrc") as h:
            h.set_data(np.asarray(m, np.float32))
            h.voxel_size = vs
    (d / "populations.txt").write_text("\n".join(map(str, pops)))
    cfg_path = data / "submissions/submission_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[str(len(cfg) - 1)] = {"flavor_name": name.replace("_", " ").title(), "path": name, "box_size": maps.shape[-1],
                              "pixel_size": vs, "flip": 0, "align": 0}
    cfg_path.write_text(json.dumps(cfg))


@pytest.fixture
def data(tiny_data, tmp_path):
    d = tmp_path / "data"
    shutil.copytree(tiny_data, d)
    return d


def test_one_bad_submission_among_good_ones(data, tmp_path, capsys):
    gt = np.load(data / "gt/maps_gt.npy")
    bad = gt[:3].copy()
    bad[1] = 2.0  # a constant map: refused when read
    add_submission(data, "constant_map", bad, [1 / 3] * 3)
    add_submission(data, "one_map", gt[:1], [1.0])  # fine for chapter 3, too few maps for a subspace
    add_submission(data, "pure_noise", np.random.default_rng(0).standard_normal((4, 24, 24, 24)), [0.25] * 4)
    pops = data / "submissions/averaged_gt/populations.txt"  # percentages: an automatic, announced fix
    pops.write_text("\n".join(str(100 * float(x)) for x in pops.read_text().split()))
    assert run.main(["--params", params(tmp_path, data), "--no-data", "--only", "02", "--only", "03", "--only", "04"]) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "note:" in captured.out and "populations.txt: populations sum to 100; renormalised" in captured.out
    assert "FAILED submission 'Constant Map'" in err and "constant" in err
    assert "FAILED submission 'One Map'" in err and "at least 2 maps" in err
    res = tmp_path / "results"
    m = manifest.read(res)
    assert {(f["chapter"], f["label"]) for f in m["failures"]} == {("02_preprocessing", "Constant Map"),
                                                                   ("04_subspace", "One Map")}
    n_cfg = len(json.loads((data / "submissions/submission_config.json").read_text())) - 1  # minus "gt"
    assert len(m["submissions"]) == n_cfg - 1 and "Constant Map" not in m["submissions"]
    vol = pd.read_csv(res / "volume_metrics/summary.csv")
    assert len(vol) == n_cfg - 1 and {"Pure Noise", "One Map", "Averaged GT"} <= set(vol.label)
    assert set(m["chapters"]["04_subspace"]["labels"]) == set(m["submissions"]) - {"One Map"}
    pcv = pd.read_csv(res / "subspace/pcv.csv", index_col=0)
    assert "One Map" not in pcv.index and "Pure Noise" in pcv.index


def test_a_stale_result_is_never_scored(data, tmp_path):
    p = params(tmp_path, data)
    assert run.main(["--params", p, "--no-data", "--only", "02", "--only", "03"]) == 0
    res = tmp_path / "results"
    # a file left by an earlier run for a submission that is no longer in the config
    ghost = MapSet.load(res / "preprocessed/averaged_gt.npz")
    MapSet(ghost.maps, ghost.populations, ghost.voxel_size, "Ghost").save(res / "preprocessed/ghost.npz")
    cfg_path = data / "submissions/submission_config.json"
    cfg = json.loads(cfg_path.read_text())
    removed = cfg.pop("1")["flavor_name"]
    cfg_path.write_text(json.dumps(cfg))
    n_left = len(cfg) - 1  # minus "gt"
    assert run.main(["--params", p, "--no-data", "--only", "02", "--only", "03"]) == 0
    m = manifest.read(res)
    assert "Ghost" not in m["submissions"] and removed not in m["submissions"] and len(m["submissions"]) == n_left
    labels = set(pd.read_csv(res / "volume_metrics/summary.csv").label)
    assert "Ghost" not in labels and removed not in labels and len(labels) == n_left
    assert m["inputs"]["submissions/submission_config.json"]["sha1"]  # inputs fingerprinted


def test_a_failed_chapter_leaves_no_partial_results(tmp_path, monkeypatch, capsys):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    head = "# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n#     language: python\n#     name: python3\n# ---\n\n"
    body = ('# %% tags=["parameters"]\nresults_dir = "x"\n\n# %%\nimport pandas as pd\n'
            'from helpers.core.paths import save_csv\nfrom pathlib import Path\n'
            'save_csv(Path(results_dir) / "part/half.csv", pd.DataFrame({"a": [1]}))\n')
    (nbdir / "01_good.py").write_text(head + body.replace("half.csv", "good.csv"))
    (nbdir / "02_bad.py").write_text(head + body + 'raise RuntimeError("broken half-way")\n')
    res = tmp_path / "results"
    (tmp_path / "p.yml").write_text(yaml.safe_dump({"executed_dir": str(tmp_path / "out"), "dataset": {},
                                                    "common": {"results_dir": str(res), "data_dir": str(tmp_path)}}))
    monkeypatch.setattr(run, "NOTEBOOK_DIR", nbdir)
    assert run.main(["--params", str(tmp_path / "p.yml"), "--no-data"]) == 1
    assert (res / "part/good.csv").is_file()  # the good chapter's output was moved into place
    assert not (res / "part/half.csv").exists()  # the failed chapter's is not where later chapters look
    assert (res / ".failed/02_bad/part/half.csv").is_file()
    err = capsys.readouterr().err
    assert "kept aside" in err and "broken half-way" in err
    with pytest.raises(InputError, match="has not finished"):
        manifest.labels_done(res, "02_bad")


def test_stale_chapters_after_partial_reruns(data, tmp_path, capsys, monkeypatch):
    """Issue 32 item 1, through the runner on the tiny data (chapters 2–4): a changed chapter-3
    parameter makes 3 stale ('parameters changed'); rerunning 3 alone makes nothing else stale
    here but records its new fingerprint; a changed populations.txt makes 2 stale and, through
    it, 3 and 4; `--only 03` then refuses, naming 02 and the command; a run without --only
    reruns exactly 02–04 (the stale ones) and 01 stays 'missing' only because it was never run;
    a stale chapter's executed notebook carries the banner, a rerun one does not."""
    from helpers.pipeline import fingerprint as fpm

    p = params(tmp_path, data)
    assert run.main(["--params", p, "--no-data", "--only", "02", "--only", "03", "--only", "04"]) == 0

    def states():
        capsys.readouterr()
        assert run.main(["--params", p, "--no-data", "--status"]) == 0
        return {ln.split()[0]: ln.split(None, 2)[1:] for ln in capsys.readouterr().out.splitlines() if ln.strip()}

    s = states()
    assert [s[k][0] for k in ("02_preprocessing", "03_volume_metrics", "04_subspace")] == ["done"] * 3
    assert s["01_data"][0] == "missing" and s["05_distribution"][0] == "missing"
    assert s["08_summary"] == ["missing", "not run in this results folder"]

    cfg = yaml.safe_load(open(p))
    cfg["notebooks"]["03_volume_metrics"]["sw_directions"] = 6
    open(p, "w").write(yaml.safe_dump(cfg))
    s = states()
    assert s["03_volume_metrics"][0] == "stale" and "sw_directions 4 → 6" in s["03_volume_metrics"][1]
    assert s["04_subspace"][0] == "done"
    assert "stale" in (tmp_path / "executed/03_volume_metrics.ipynb").read_text()  # the banner
    assert run.main(["--params", p, "--no-data", "--only", "03"]) == 0
    s = states()
    assert s["03_volume_metrics"][0] == "done" and fpm.BANNER_TAG not in (tmp_path / "executed/03_volume_metrics.ipynb").read_text()

    pops = data / "submissions/averaged_gt/populations.txt"
    pops.write_text(pops.read_text().replace("e", "E", 1) + "\n")  # same numbers? no: a new file content
    s = states()
    assert s["02_preprocessing"][0] == "stale" and "data changed under submissions" in s["02_preprocessing"][1]
    assert s["03_volume_metrics"][0] == "stale" and "02_preprocessing is stale" in s["03_volume_metrics"][1]
    assert run.main(["--params", p, "--no-data", "--only", "03"]) == 2
    err = capsys.readouterr().err
    assert "03_volume_metrics reads 02_preprocessing, which is stale" in err and f"--params {p}` reruns" in err

    nbs = [q for q in run.list_notebooks() if q.stem[:2] in ("01", "02", "03", "04")]
    cfg["notebooks"]["01_data"] = {"voxel_size": 5.7}
    open(p, "w").write(yaml.safe_dump(cfg))

    def make_like():
        capsys.readouterr()
        assert run.main(["--params", p, "--no-data"]) == 0
        return capsys.readouterr().out

    monkeypatch.setattr(run, "list_notebooks", lambda: nbs)  # chapters 1–4 only (5–8 take minutes)
    assert "4 of 4 notebooks run" in make_like()  # 01 was missing, 02–04 stale: all four, nothing skipped
    # the front page's run-time table: each chapter's last run, summed (issue 34 item 1)
    import re

    rt = (tmp_path / "results/run_time.md").read_text()
    secs = {k: float(v) for k, v in re.findall(r"^\| (\d\d_\w+) \| (\d+) \|$", rt, re.M)}
    assert set(secs) == {"01_data", "02_preprocessing", "03_volume_metrics", "04_subspace"} and min(secs.values()) >= 1
    total = float(re.search(r"took (\d+) s in all", rt).group(1))
    assert abs(total - sum(secs.values())) <= len(secs)  # rounding of each row
    s = states()
    assert all(s[k][0] == "done" for k in ("01_data", "02_preprocessing", "03_volume_metrics", "04_subspace"))
    out = make_like()
    assert "0 of 4 notebooks run" in out and out.count("up to date, not rerun") == 4


def test_a_wrong_gt_box_stops_chapter_2_with_the_fix(data, tmp_path, capsys):
    """The config's GT box_size disagrees with the GT maps: chapter 2 stops in its first cell with
    an error naming the config, both boxes and the fix (issue 32: a raw exception in chapter 3)."""
    cfg_path = data / "submissions/submission_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["gt"]["box_size"] = 48
    cfg_path.write_text(json.dumps(cfg))
    assert run.main(["--params", params(tmp_path, data), "--no-data", "--only", "02"]) == 1
    err = capsys.readouterr().err
    assert "InputError" in err and "box_size is 48" in err and "are 24³" in err and "box_size: 24" in err
