"""Chapters run at once along their dependencies (helpers.pipeline.schedule, hetbook run --jobs)."""
from __future__ import annotations

import threading
import time

import nbformat
import pytest

from helpers.pipeline.schedule import effective_jobs, kernel_threads, run_graph

# the demo's chapter graph (fingerprint.DEPENDS), shortened
DEPS = {"a": [], "b": [], "c": ["b"], "d": ["b"], "e": ["b", "c"], "f": ["a", "b", "c", "d", "e"]}


def _recorder(fail=(), seconds=0.05):
    log, lock, live = [], threading.Lock(), [0, 0]

    def work(item):
        with lock:
            live[0] += 1
            live[1] = max(live[1], live[0])
            log.append(("start", item, time.perf_counter()))
        time.sleep(seconds)
        with lock:
            live[0] -= 1
            log.append(("end", item, time.perf_counter()))
        return "failed" if item in fail else "ran"
    return work, log, live


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_every_item_runs_after_what_it_reads_and_never_more_than_jobs_at_once(jobs):
    work, log, live = _recorder()
    out = run_graph(list(DEPS), DEPS, work, jobs)
    assert out == {k: "ran" for k in DEPS}
    start = {i: t for kind, i, t in log if kind == "start"}
    end = {i: t for kind, i, t in log if kind == "end"}
    for item, deps in DEPS.items():
        assert all(end[d] <= start[item] for d in deps), (item, deps)
    assert live[1] == jobs if jobs < 3 else live[1] >= 2   # a, b start together; c, d together
    if jobs == 1:
        assert [i for kind, i, _ in log if kind == "start"] == list(DEPS)


def test_with_two_jobs_the_graph_takes_its_critical_path_not_the_sum():
    work, log, _ = _recorder(seconds=0.2)
    t0 = time.perf_counter()
    run_graph(list(DEPS), DEPS, work, 2)
    took = time.perf_counter() - t0
    # 6 items of 0.2 s: 1.2 s one at a time; two lanes: (a,b) (c,d) (e) (f) = 0.8 s
    assert 0.75 < took < 1.05, took


def test_a_failure_starts_nothing_new_and_lets_the_running_one_finish():
    work, log, _ = _recorder(fail={"b"})
    out = run_graph(list(DEPS), DEPS, work, 2)
    assert out == {"a": "ran", "b": "failed"}          # c, d, e, f read b: never started
    work, log, _ = _recorder(fail={"a"})
    out = run_graph(list(DEPS), {**DEPS, "a": []}, work, 1)
    assert out == {"a": "failed"}


def test_one_at_a_time_follows_the_dependencies_not_the_list_order():
    """A summary that reads a later-numbered chapter runs after it (chapter 8 reads chapter 9)."""
    work, log, _ = _recorder(seconds=0)
    deps = {"08": ["03", "09"], "03": [], "09": ["03"]}
    run_graph(["03", "08", "09"], deps, work, 1)
    assert [i for kind, i, _ in log if kind == "start"] == ["03", "09", "08"]
    with pytest.raises(ValueError, match="cycle"):
        run_graph(["a", "b"], {"a": ["b"], "b": ["a"]}, work, 1)


def test_dependencies_outside_the_selection_count_as_done():
    work, _, _ = _recorder()
    assert run_graph(["c", "e"], DEPS, work, 2) == {"c": "ran", "e": "ran"}


def test_jobs_capped_by_cpus_and_items(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert effective_jobs(4, 8) == 2 and effective_jobs(None, 8) == 1 and effective_jobs(2, 1) == 1
    assert kernel_threads(2) == 1 and kernel_threads(1) == 2


def test_two_chapters_at_once_each_see_their_own_environment(tmp_path):
    """run_notebook hands each kernel its own variables (no os.environ edits shared between the
    runner's threads)."""
    from helpers.pipeline import run

    nb = tmp_path / "99_env.py"
    nb.write_text('# %% tags=["parameters"]\nx = 1\n\n# %%\nimport os\nprint(os.environ["PROBE"], os.environ["OMP_NUM_THREADS"])\n')
    outs = {}

    def go(tag):
        outs[tag] = run.run_notebook(nb, {"common": {}, "notebooks": {}}, tmp_path / tag,
                                     {"PROBE": tag, "OMP_NUM_THREADS": 1}, show_progress=False)
    threads = [threading.Thread(target=go, args=(t,)) for t in ("first", "second")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tag in ("first", "second"):
        text = nbformat.read(outs[tag], as_version=4).cells[-1].outputs[0]["text"]
        assert text.strip() == f"{tag} 1"
    assert "PROBE" not in __import__("os").environ


def test_critical_path_is_cost_plus_the_longest_chain_waiting_for_it():
    from helpers.pipeline.schedule import critical_path

    level = critical_path(list(DEPS), DEPS, {"a": 1, "b": 2, "c": 3, "d": 10, "e": 4, "f": 5})
    # f: 5; e: 4 + 5; d: 10 + 5 (f reads d); c: 3 + max(e 9, f 5); b: 2 + max(c 12, d 15, e 9, f 5); a: 1 + 5
    assert level == {"f": 5, "e": 9, "d": 15, "c": 12, "b": 17, "a": 6}
    with pytest.raises(ValueError, match="cycle"):
        critical_path(["a", "b"], {"a": ["b"], "b": ["a"]}, {})


def test_two_at_a_time_the_longest_chain_starts_first():
    """The demo's graph with its typical seconds: 02 (everything but 01 and 07 waits for it) and 07
    (the longest chapter) start first, not 01 and 02 in file order, and once 02 is done chapter 6
    (149 s + the summary) goes before 03."""
    from helpers.pipeline.fingerprint import DEPENDS
    from helpers.pipeline.schedule import TYPICAL_SECONDS

    items = sorted(DEPENDS)
    work, log, _ = _recorder(seconds=0.02)
    run_graph(items, DEPENDS, work, 2, TYPICAL_SECONDS)
    started = [i for kind, i, _ in log if kind == "start"]
    assert set(started[:2]) == {"02_preprocessing", "07_robustness"}, started
    assert started.index("06_image_metrics") < started.index("03_volume_metrics"), started
    assert started[-1] == "08_summary"
    work, log, _ = _recorder(seconds=0.02)
    run_graph(items, DEPENDS, work, 2, {**TYPICAL_SECONDS, "01_data": 1000})   # the costs decide
    assert [i for kind, i, _ in log if kind == "start"][:2] == ["01_data", "02_preprocessing"]


def test_the_methods_step_runs_beside_the_chapters_that_do_not_read_it():
    """The real methods' training (cryoDRGN) is a step of the graph: the data overview and the
    robustness study (GT and particles only) run beside it, every chapter reading the submissions
    or a method's record after it."""
    from helpers.pipeline.fingerprint import DEPENDS, READS
    from helpers.pipeline.schedule import METHODS_STEP, TYPICAL_SECONDS, with_step

    items, deps = with_step(sorted(DEPENDS), DEPENDS, READS)
    assert items[0] == METHODS_STEP and deps[METHODS_STEP] == []
    readers = {i for i in items if METHODS_STEP in deps.get(i, [])}
    assert readers == {"02_preprocessing", "08_summary", "09_per_particle"}   # the rest read them through 02
    work, log, _ = _recorder(seconds=0.03)
    run_graph(items, deps, work, 2, TYPICAL_SECONDS)
    start = {i: t for kind, i, t in log if kind == "start"}
    end = {i: t for kind, i, t in log if kind == "end"}
    assert [i for kind, i, _ in log if kind == "start"][:2] == [METHODS_STEP, "07_robustness"]
    assert all(start[r] >= end[METHODS_STEP] for r in readers)


def test_the_methods_step_records_the_new_data_before_its_readers_start(tmp_path):
    """After the step the manifest holds the data folder's new fingerprints, so the chapters that
    run after it are fingerprinted with the method's entry in it (not stale on the next status)."""
    from helpers.io import manifest
    from helpers.pipeline import run

    data, results = tmp_path / "data", tmp_path / "results"
    (data / "gt").mkdir(parents=True)
    (data / "gt" / "maps_gt.npy").write_bytes(b"x")
    cfg = {"common": {"data_dir": str(data)}}
    before = manifest.start(results, cfg, data, fresh=True)["inputs"]

    def methods():
        (data / "submissions" / "cryodrgn").mkdir(parents=True)
        (data / "submissions" / "cryodrgn" / "populations.txt").write_text("1.0\n")

    assert run._methods_step(methods, cfg, results) == "ran"
    after = manifest.read(results)["inputs"]
    assert set(after) - set(before) == {"submissions/cryodrgn/populations.txt"}


def test_ensure_data_defers_only_a_missing_method_entry(tmp_path, monkeypatch):
    """``ensure_data(methods=False)`` returns the methods' step while an entry is missing and None
    once it is there; bad options stop at once either way."""
    from helpers.pipeline import demo_data

    out = tmp_path / "demo"
    for part in ("gt", "submissions", "particles"):
        (out / part).mkdir(parents=True)
    (out / "manifest.json").write_text('{"data_version": %d}' % __import__("helpers.datagen.simulate", fromlist=["x"]).DATA_VERSION)
    calls = []
    monkeypatch.setattr(demo_data, "ensure_matched", lambda o, opts: None)
    monkeypatch.setattr(demo_data, "ensure_cryodrgn", lambda o, opts: calls.append(opts))
    cfg = {"dataset": {"generate": True, "out_dir": str(out), "cryodrgn": {"epochs": 2}}}
    step = demo_data.ensure_data(cfg, methods=False)
    assert callable(step) and calls == []
    step()
    assert calls == [{"epochs": 2}]
    step(1)   # beside other chapters: one thread, unless the parameters name their own
    assert calls[-1] == {"threads": 1, "epochs": 2}
    demo_data.ensure_data({"dataset": {**cfg["dataset"], "cryodrgn": {"epochs": 2, "threads": 2}}}, methods=False)(1)
    assert calls[-1] == {"threads": 2, "epochs": 2}
    (out / "submissions" / "cryodrgn").mkdir()
    assert demo_data.ensure_data(cfg, methods=False) is None
    with pytest.raises(SystemExit, match="dataset.cryodrgn should be a mapping"):
        demo_data.ensure_data({"dataset": {**cfg["dataset"], "cryodrgn": {"epoch": 2}}}, methods=False)


def test_on_two_cores_every_chapter_waits_for_the_methods_step():
    """``beside=False`` (the runner's choice below 3 jobs): nothing starts before the step ends."""
    from helpers.pipeline.fingerprint import DEPENDS, READS
    from helpers.pipeline.schedule import METHODS_STEP, TYPICAL_SECONDS, with_step

    items, deps = with_step(sorted(DEPENDS), DEPENDS, READS, beside=False)
    assert all(METHODS_STEP in deps[i] for i in items if i != METHODS_STEP)
    work, log, _ = _recorder(seconds=0.03)
    run_graph(items, deps, work, 2, TYPICAL_SECONDS)
    start = {i: t for kind, i, t in log if kind == "start"}
    end = {i: t for kind, i, t in log if kind == "end"}
    assert all(start[i] >= end[METHODS_STEP] for i in items if i != METHODS_STEP)
