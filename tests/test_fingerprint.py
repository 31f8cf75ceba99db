"""helpers.pipeline.fingerprint: which chapters still follow from their inputs (no notebooks run)."""
from helpers.pipeline import fingerprint as fp

CFG = {"common": {"data_dir": "d", "results_dir": "r", "voxel_size": 2.0},
       "notebooks": {"03_volume_metrics": {"sw_directions": 8}}}
INPUTS = {"gt/maps_gt.npy": {"bytes": 10, "mtime": 1.0, "sha1": None},
          "submissions/a/populations.txt": {"bytes": 3, "mtime": 2.0, "sha1": "aa"},
          "particles/particles.star": {"bytes": 5, "mtime": 3.0, "sha1": "pp"}}
STEMS = ["02_preprocessing", "03_volume_metrics", "05_distribution"]


def _done(cfg=CFG, inputs=INPUTS):
    chapters = {}
    for k, stem in enumerate(STEMS):
        chapters[stem] = {"status": "done", "token": f"t{k}",
                          "fingerprint": fp.fingerprint(stem, cfg, inputs, chapters, code="c")}
    return chapters


def test_a_fresh_run_is_done_and_locations_do_not_count():
    ch = _done()
    moved = {**CFG, "common": {**CFG["common"], "results_dir": "elsewhere", "executed_dir": "x"},
             "notebooks": {"03_volume_metrics": {**CFG["notebooks"]["03_volume_metrics"], "dask_workers": 4}}}
    assert {k: v[0] for k, v in fp.status(STEMS, moved, INPUTS, ch, code="c").items()} == dict.fromkeys(STEMS, "done")


def test_each_cause_makes_the_right_chapters_stale():
    ch = _done()
    cfg = {**CFG, "notebooks": {"03_volume_metrics": {"sw_directions": 16}}}
    s = fp.status(STEMS, cfg, INPUTS, ch, code="c")
    assert s["02_preprocessing"][0] == "done" and s["03_volume_metrics"] == ("stale", "parameters changed: sw_directions 8 → 16")
    assert s["05_distribution"] == ("stale", "03_volume_metrics is stale")
    changed = {**INPUTS, "submissions/a/populations.txt": {"bytes": 3, "mtime": 9.0, "sha1": "bb"}}
    s = fp.status(STEMS, CFG, changed, ch, code="c")
    assert s["02_preprocessing"] == ("stale", "data changed under submissions")
    assert s["03_volume_metrics"] == ("stale", "02_preprocessing is stale")
    touched = {**INPUTS, "submissions/a/populations.txt": {"bytes": 3, "mtime": 9.0, "sha1": "aa"}}  # same content
    assert all(v[0] == "done" for v in fp.status(STEMS, CFG, touched, ch, code="c").values())
    big = {**INPUTS, "gt/maps_gt.npy": {"bytes": 10, "mtime": 5.0, "sha1": None}}  # too big to hash: mtime counts
    assert fp.status(STEMS, CFG, big, ch, code="c")["02_preprocessing"][1] == "data changed under gt"
    assert fp.status(STEMS, CFG, INPUTS, ch, code="c2")["02_preprocessing"][0] == "stale"
    ch["02_preprocessing"]["token"] = "rerun"                       # chapter 2 run again since
    s = fp.status(STEMS, CFG, INPUTS, ch, code="c")
    assert s["03_volume_metrics"] == ("stale", "02_preprocessing was re-run since")
    del ch["02_preprocessing"]
    assert fp.status(STEMS, CFG, INPUTS, ch, code="c")["05_distribution"][1] == \
        "02_preprocessing is missing; 03_volume_metrics is stale"


def test_preprocessing_keeps_the_chapters_that_do_not_read_it(tmp_path):
    """Preprocessing redefines the run's submissions: the chapters that read it lose their records,
    the robustness study (GT and particles only), run beside the methods' training before it, keeps
    its own (it was lost once: 'missing, not run in this results folder' after a full build)."""
    import json

    from helpers.io import manifest
    from helpers.pipeline.fingerprint import readers_of

    manifest.start(tmp_path, {}, tmp_path, fresh=True)
    for ch in ("01_data", "03_volume_metrics", "07_robustness", "08_summary"):
        manifest.merge_update(tmp_path, ch)
    (tmp_path / "manifest_update.json").write_text(json.dumps({"submissions": {"a": {}}}))
    m = manifest.merge_update(tmp_path, "02_preprocessing", readers=readers_of("02_preprocessing"))
    assert set(m["chapters"]) == {"01_data", "02_preprocessing", "07_robustness"}
    assert readers_of("07_robustness") == {"08_summary"} and readers_of("08_summary") == set()


def test_a_new_recovar_record_makes_only_chapter_9_stale(tmp_path):
    """RECOVAR's run record is an input of chapter 9 (its latents and k-means labels), read from the
    data folder's fingerprints like cryoDRGN's."""
    from helpers.io import manifest

    (tmp_path / "recovar").mkdir()
    (tmp_path / "recovar" / "run.json").write_text('{"zdim": 4}')
    inputs = manifest.input_fingerprints(tmp_path)
    assert "recovar/run.json" in inputs
    stems, ch = ["02_preprocessing", "07_robustness", "09_per_particle"], {}
    for s in stems:
        ch[s] = {"status": "done", "token": s, "fingerprint": fp.fingerprint(s, CFG, {}, ch, code="c")}
    assert all(v[0] == "done" for v in fp.status(stems, CFG, {}, ch, code="c").values())
    st = fp.status(stems, CFG, inputs, ch, code="c")
    assert st["09_per_particle"] == ("stale", "data changed under recovar/run.json")
    assert st["07_robustness"][0] == "done" and st["02_preprocessing"][0] == "done"
