"""Chapter 9 (helpers.pipeline.chapters.per_particle) on the tiny book run: the bounds, a
submission's per-particle score recomputed here from its maps and the GT, the paired tests against
scipy, the leaderboard's per-particle family, and a data set without per-particle GT."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from helpers import io
from helpers.datagen.mocks import group_of_map
from helpers.io import manifest
from helpers.kernels import per_image as pi
from helpers.kernels.fsc import paired_fsc
from helpers.kernels.verdicts import holm
from helpers.pipeline.chapters import per_particle as ch9


def _out(executed):
    return executed / "results" / "per_particle"


def test_the_bounds_gt_map_scores_half_and_one_average_map_less(executed):
    s = pd.read_csv(_out(executed) / "summary.csv", index_col="entry")
    assert s.loc[ch9.GT_MAP, "au_fsc_mean"] == pytest.approx(0.5, abs=1e-5)
    assert s.loc[ch9.GT_MAP, "au_fsc_sd"] < 1e-5
    assert s.loc[ch9.GT_MAP, "au_fsc_cryobench_mean"] == pytest.approx(0.5 - 1 / 32, abs=1e-5)   # box 32
    # the group means of the GT (Averaged GT) sit between the one global mean and each particle's own map
    assert s.loc[ch9.AVERAGE, "au_fsc_mean"] < s.loc["Averaged GT", "au_fsc_mean"] < 0.5 - 1e-3
    assert s.loc["Reconstructed", "submission"] == "Reconstructed"
    assert pd.isna(s.loc[ch9.GT_MAP, "submission"])


def test_the_pages_story_is_written_beside_the_tables(executed):
    """per_particle/story.md holds the page's "what the demo shows", its numbers from summary.csv
    (red without write_story in the notebook)."""
    s = pd.read_csv(_out(executed) / "summary.csv", index_col="entry")
    text = (_out(executed) / "story.md").read_text()
    r = s.loc["Reconstructed"]
    assert text.startswith(f"On {int(r.n)} particles, the mean per-image AU-FSC orders the entries")
    assert f"Reconstructed {r.au_fsc_mean:.3f} ± {r.au_fsc_sem:.3f}" in text


def test_reconstructed_per_particle_recomputed_from_its_maps(executed):
    """Each chosen particle's FSC recomputed pair by pair (paired_fsc) from Reconstructed's
    preprocessed map of the particle's GT group and its GT map; the group labels must be right: a
    reversed assignment scores lower."""
    data, res = executed / "data", executed / "results"
    gtf = io.find_gt(data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], 4.292, check_finite=False)
    mask = io.read_mask(gtf["mask"], gt.box)
    table = io.read_particles(data / "particles" / "particles.star").table
    per = pd.read_csv(_out(executed) / "per_image.csv")
    mine = per[per.entry == "Reconstructed"].sort_values("particle")
    g = table.hetbookTrueMapIndex.to_numpy()[mine.particle.to_numpy()].astype(int)
    np.testing.assert_array_equal(g, mine.gt_index)
    rec = manifest.load_submissions(res)["Reconstructed"]
    k = group_of_map(np.asarray(gt.pc1, float), rec.n_maps)[g]
    maps = np.asarray(rec.maps)
    curves = paired_fsc(maps[k], np.asarray(gt.maps)[g], mask=mask)
    np.testing.assert_allclose(mine.au_fsc, pi.au_fsc(curves), atol=1e-5)
    wrong = paired_fsc(maps[rec.n_maps - 1 - k], np.asarray(gt.maps)[g], mask=mask)
    assert pi.au_fsc(wrong).mean() < mine.au_fsc.mean() - 0.01


def test_pair_tests_are_scipys_paired_t_with_holm(executed):
    per = pd.read_csv(_out(executed) / "per_image.csv")
    pairs = pd.read_csv(_out(executed) / "pairs.csv")
    assert len(pairs) >= 2
    wide = per.pivot(index="particle", columns="entry", values="au_fsc")
    p = [stats.ttest_rel(wide[a], wide[b]).pvalue for a, b in zip(pairs.a, pairs.b)]
    np.testing.assert_allclose(pairs.p, p, rtol=1e-8)
    np.testing.assert_allclose(pairs.p_holm, holm(np.array(p)), rtol=1e-8)
    called = pairs[pairs.better != "tie"]
    assert (called.p_holm < 0.05).all() and ((called.better == "a") == (called["diff"] > 0)).all()


def test_latent_scores_expose_the_defocus_latent(executed):
    lat = pd.read_csv(_out(executed) / "latent.csv")
    ns = lat[lat.score == "neighbourhood_similarity"]
    k = ns.k.max()
    row = ns[ns.k == k].set_index(["latent", "reference"]).value
    assert row[("defocus + noise", "defocus")] > 0.8 > row[("defocus + noise", "conformation")]
    assert row[("GT conformation", "conformation")] > row[("random", "conformation")]


def test_the_leaderboard_carries_the_per_particle_family(executed):
    s = pd.read_csv(_out(executed) / "summary.csv", index_col="entry")
    board = pd.read_csv(executed / "results" / "summary" / "leaderboard.csv", index_col=0)
    assert board.loc["Reconstructed", "au_fsc"] == pytest.approx(s.loc["Reconstructed", "au_fsc_mean"], rel=1e-9)
    assert board.loc["Reconstructed", "au_fsc_err"] == pytest.approx(s.loc["Reconstructed", "au_fsc_sem"], rel=1e-9)
    assert board["au_fsc"].isna().sum() >= 1          # submissions without per-particle output: unmeasured
    info = pd.read_csv(executed / "results" / "summary" / "metrics.csv", index_col="metric")
    # measured for a few submissions only: ranked among them, not averaged into the overall rank
    assert info.loc["au_fsc", "partial"] and not info.loc["au_fsc", "in_mean_rank"]


def test_without_per_particle_gt_nothing_is_scored_and_the_page_says_why(executed, tmp_path):
    from helpers.report import story_per_particle as story

    inp = ch9.load_inputs(executed / "data", executed / "results", 4.292, particles="particles/none.star")
    assert inp["table"] is None and "none.star" in inp["why_not"]
    res = ch9.analyse(tmp_path, inp, n_particles=10, n_bins=2, ks=[1])
    assert res["summary"].empty and (tmp_path / "per_particle" / "summary.csv").is_file()
    assert "Nothing is scored" in story.chapter(res["summary"], res["pairs"], res["latent"], 1, inp["why_not"])


def test_particle_choice_is_cryobenchs_stride():
    np.testing.assert_array_equal(ch9.select(2000, 200), np.arange(0, 2000, 10))
    np.testing.assert_array_equal(ch9.select(48, 24), np.arange(0, 48, 2))
    assert len(ch9.select(10, 50)) == 10


def test_shells_beyond_a_coarser_maps_nyquist_count_as_no_signal(executed, tmp_path):
    """An entry made at twice the GT's voxel size (a cryoDRGN run on downsampled images) has no
    information beyond its own Nyquist, shell N/4: those shells are NaN (0 in the AU-FSC), its
    resolution is no finer than 2 × its voxel, and the shells below are untouched."""
    import dataclasses

    inp = ch9.load_inputs(executed / "data", executed / "results", 4.292)
    rec = inp["subs"]["Reconstructed"]
    inp["subs"] = {**inp["subs"], "cryoDRGN": dataclasses.replace(rec, native_voxel_size=2 * rec.voxel_size)}
    idx = ch9.select(len(inp["table"]), 12)
    g = inp["table"].hetbookTrueMapIndex.to_numpy()[idx].astype(int)
    k = group_of_map(inp["pc1"], rec.n_maps)[g]
    res = ch9.score(tmp_path, inp, idx, {"Reconstructed": (rec.maps, k), "cryoDRGN (series)": (rec.maps, k)})
    fine, coarse = res["curves"]["reconstructed"], res["curves"][ch9.slug("cryoDRGN (series)")]
    N = inp["gt"].box
    assert np.isnan(coarse[:, N // 4:]).all() and not np.isnan(fine[:, N // 4:]).all()
    np.testing.assert_array_equal(coarse[:, :N // 4], fine[:, :N // 4])
    s = res["summary"]
    assert s.loc["cryoDRGN (series)", "au_fsc_mean"] < s.loc["Reconstructed", "au_fsc_mean"]
    assert s.loc["cryoDRGN (series)", "res_0143_median_A"] >= 4 * rec.voxel_size - 1e-6
