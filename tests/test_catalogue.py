"""The metric catalogue (helpers.core.catalogue): every metric the code reports is in it, each
direction agrees with what the real kernels do to a worse set, and the leaderboard's and the
robustness study's labels are read from it."""
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from conftest import blob_volume
from helpers.core import catalogue
from helpers.pipeline import robustness as rb
from helpers.pipeline import robustness_scores as rs
from helpers.report import leaderboard, story_scores, story_summary
from helpers.core.paths import REPO_ROOT


@pytest.fixture(scope="module")
def scored():
    """A small robustness study (24 GT maps of 16³) scored by the chapter's own Scorer: the base,
    noisier maps, flattened populations and the open end of the motion removed."""
    n_gt, N = 24, 16
    pc1 = np.linspace(-1, 1, n_gt)
    maps = np.stack([blob_volume(N, [((3 * t, 0, 0), 1.0), ((-2, 2, 0), 0.8)]) for t in pc1]).astype(np.float32)
    mask = (blob_volume(N, [((0, 0, 0), 1.0)], sigma=5.0) > 0.05).astype(np.float32)
    pops = np.exp(-4 * pc1 ** 2)
    study = rb.Study(maps, pops / pops.sum(), pc1, mask, 2.0, n_maps=8, base_snr=2.0, seed=1)
    sc = rs.Scorer(maps, study.gt_pops, pc1, mask, 2.0, sw_directions=8, transport_gt_maps=3, transport_sub_maps=4,
                   transport_top_k=20, transport_box=8, box_ds=8, rank=3, n_pool=2, dist_replicates=2)
    sets = {"base": study.base(0)[:2]}
    for name, level in (("noise", 0.1), ("pop_flatten", 1.0), ("missing", 0.6)):
        m, q, _, _ = study.make(name, level, 0)
        sets[name] = (np.array(m), q)
    return sc.score(sets)


def test_every_metric_column_the_code_reports_is_catalogued(scored):
    m = catalogue.METRICS
    assert set(scored["base"]) <= set(m), set(scored["base"]) - set(m)  # every GT-based metric of one set
    assert all(k == v.key for k, v in m.items())
    assert catalogue.FAMILY == {k: v.family for k, v in m.items()} and set(catalogue.FAMILY.values()) <= set(
        catalogue.FAMILIES)
    assert {metric for _, _, metric in leaderboard.DEMO_DEFECTS} <= set(m)
    # the leaderboard's columns, as chapter 8 documents them (its table of `column` rows)
    doc = (REPO_ROOT / "notebooks" / "08_summary.py").read_text()
    board_cols = set(re.findall(r"^# \| `(\w+)`", doc, re.M)) | set(re.findall(r"^# \| `\w+`, `(\w+)`", doc, re.M))
    assert board_cols and board_cols <= set(m), board_cols - set(m)
    # the image scores of one set
    rng = np.random.default_rng(0)
    s = rs.image_scores(rng.normal(size=(20, 3)), rng.uniform(size=(20, 3)), np.full(3, 1 / 3), np.zeros(20),
                        rng.integers(0, 20, (5, 20)), np.zeros(20))
    reported = {k for k in s if not k.endswith(("_err", "_se_diff", "_images_needed"))} - {"per_image_delta", "n_images"}
    assert reported <= set(m), reported - set(m)
    with pytest.raises(ValueError, match="better"):
        catalogue.Metric("x", "x", "", "lower", "volume", "")


def test_units_as_the_code_computes_them():
    u = {k: catalogue.unit(k) for k in catalogue.METRICS}
    assert {k for k, v in u.items() if v == "Å"} == {"resolution_A", "sw_A", "gw_coverage_A", "pw_coverage_A"}
    assert u["pcv_gt_captured"] == u["pcv_set_in_gt"] == "%"
    assert u["kl_submitted"] == u["kl_optimised"] == u["bioem"] == u["loglik_per_image"] == "nat"
    assert u["emd_submitted"] == u["emd_optimised"] == u["l2"]  # the EMD moves mass over the L2 cost
    assert u["corr"] == u["best_cc"] == u["fsc_area"] == u["au_fsc"] == ""
    assert catalogue.label("resolution_A") == "resolution (Å)" and catalogue.label("best_cc") == "best CC"
    assert catalogue.label("resolution_A", with_unit=False) == "resolution"


# which defect must make each GT-based metric worse (chapter 7's expectations: noise hurts every
# map metric; flattened populations the submitted-population metrics; a missing end of the motion
# what the optimised populations cannot recover)
WORSE_BY = {"noise": ["resolution_A", "fsc_area", "l2", "corr", "bioem", "sw_A", "gw_coverage_A", "pw_coverage_A",
                      "pcv_gt_captured", "pcv_set_in_gt", "emd_submitted", "emd_optimised"],
            "pop_flatten": ["emd_submitted", "kl_submitted"],
            "missing": ["emd_optimised", "kl_optimised"]}


def test_directions_agree_with_the_kernels(scored):
    """A worse set scores worse in the catalogue's direction, by the real kernels."""
    checked = set()
    for defect, metrics in WORSE_BY.items():
        for m in metrics:
            base, worse = scored["base"][m], scored[defect][m]
            assert (worse > base) if catalogue.better(m) == "low" else (worse < base), (defect, m, base, worse)
            checked.add(m)
    # the image metrics: images of the true map + noise scored against the true map and a noisier copy
    rng = np.random.default_rng(0)
    truth = blob_volume(16, [((2, 0, 0), 1.0), ((-2, 1, 0), 0.7)]).sum(0)  # a 16 × 16 projection
    noisy = truth + rng.normal(0, truth.std(), truth.shape)
    images = truth[None] + rng.normal(0, 0.5 * truth.std(), (50, 16, 16))
    sigma2 = (0.5 * truth.std()) ** 2

    def scores(ref):
        logp = -((images - ref) ** 2).sum((1, 2))[:, None] / (2 * sigma2)  # Gaussian log-likelihood per image
        cc = np.array([np.corrcoef(x.ravel(), ref.ravel())[0, 1] for x in images])[:, None]
        return rs.image_scores(logp, cc, np.ones(1), np.zeros(len(images)), rng.integers(0, 50, (5, 50)))

    good, bad = scores(truth), scores(noisy)
    for m in ("loglik_per_image", "best_cc"):
        assert (bad[m] > good[m]) if catalogue.better(m) == "low" else (bad[m] < good[m]), m
        checked.add(m)
    # the per-particle AU-FSC: each particle's own map against a noisier copy of it
    from helpers.kernels.per_image import au_fsc, per_image_fsc

    maps = np.stack([blob_volume(16, [((2, 0, s), 1.0), ((-2, 1, 0), 0.7)]) for s in (-1, 0, 1)])
    worse = maps + rng.normal(0, maps.std(), maps.shape)
    good_au, bad_au = (au_fsc(per_image_fsc(x, maps, [0, 1, 2])).mean() for x in (maps, worse))
    assert (bad_au > good_au) if catalogue.better("au_fsc") == "low" else (bad_au < good_au)
    checked.add("au_fsc")
    assert checked == set(catalogue.METRICS)


def test_labels_are_read_from_the_catalogue(monkeypatch):
    """A label changed in the catalogue shows on the leaderboard's table, in chapter 8's sentences
    and in the robustness study's per-metric table."""
    new = dataclasses.replace(catalogue.METRICS["kl_submitted"], label="KL of the submission")
    monkeypatch.setitem(catalogue.METRICS, "kl_submitted", new)
    idx = ["A", "B", "C"]
    values = pd.DataFrame({"resolution_A": [3.0, 4.0, 5.0], "kl_submitted": [0.1, 0.5, 0.9]}, index=idx)
    board, _, _ = leaderboard.board(values, None, catalogue.directions(values.columns), n_draws=0)
    shown = board[["mean_rank", "resolution_A", "kl_submitted"]].rename(columns=leaderboard.name)
    assert list(shown.columns) == ["mean rank", "resolution (Å)", "KL of the submission (nat)"]
    m = pd.DataFrame({"value": [0.9], "compare_value": [0.1], "vs_compare": ["worse"]}, index=["kl_submitted"])
    assert "worse than B on KL of the submission (0.9 nat vs 0.1 nat)" in "; ".join(story_summary._versus(m, "B"))
    S = pd.DataFrame({"degradation": ["blur"], "metric": ["kl_submitted"], "verdict": ["detects"], "threshold": [25.0],
                      "threshold_index": [0], "n_levels": [3], "n_images": [np.nan], "images_needed": [np.nan]})
    assert story_scores.metric_table(S, ["kl_submitted"]).metric.tolist() == ["KL of the submission"]
