"""Chapter 2's computation without the notebook (helpers.pipeline.chapters.preprocessing) on the
tiny data set: every submission saved on the GT grid, an untouched submission saved bit for bit,
the rotated mock's recovered rotation within 3° of the recorded one, the changed sets named."""
import json

import numpy as np
import pandas as pd

from helpers import io
from helpers.io import manifest
from helpers.io.mapset import MapSet, slug
from helpers.pipeline.chapters import preprocessing as ch


def test_preprocess_all_on_the_tiny_data(tiny_data, tmp_path):
    entries, gt_box, gt_voxel, reference = ch.load_config(tiny_data, "submissions/submission_config.json")
    gt = io.read_gt((f := io.find_gt(tiny_data))["maps"], f["metadata"], gt_voxel)
    assert gt_box == gt.box and reference is not None
    report, raw, sets, failed = ch.preprocess_all(entries, gt_box, gt_voxel, reference, tmp_path,
                                                  dict(box_ds=24, n_directions=300, n_inplane=24))
    assert len(failed) == 0 and len(report) == len(entries) == len(sets)
    assert pd.read_csv(tmp_path / "preprocessing_report.csv")["label"].tolist() == [e.label for e in entries]
    assert set(manifest.read(tmp_path)["submissions"]) == {e.label for e in entries}
    for e in entries:
        saved = MapSet.load(tmp_path / "preprocessed" / f"{slug(e.label)}.npz")
        assert saved.box == gt_box and abs(saved.voxel_size - gt_voxel) < 1e-9
        if not (e.flip or e.align) and e.read().box == gt_box:  # nothing to do: the maps come back as they went in
            np.testing.assert_array_equal(np.asarray(saved.maps), np.asarray(e.read().maps, dtype=saved.maps.dtype))
            np.testing.assert_allclose(saved.populations, e.read().populations, rtol=1e-12)
    rotated = report.set_index("label").loc["Rotated"]
    assert rotated["rotation_error_deg"] < 3.0
    cfg = json.loads((tiny_data / "submissions/submission_config.json").read_text())
    expect = {v["flavor_name"] for k, v in cfg.items() if k != "gt" and (v.get("flip") or v.get("align")
                                                                         or v["box_size"] != gt_box)}
    assert set(ch.changed(sets, raw, gt_box, gt_voxel)) == expect
    assert set(ch.rotation_angles(sets)) == {lab for lab in sets if "rotation_matrix" in sets[lab].provenance}
