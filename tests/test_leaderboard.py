"""Tie-aware ranks: values within uncertainty share a rank; metrics that separate nothing are
left out of the mean rank."""
import numpy as np
import pandas as pd
import pytest

from helpers import leaderboard as lb


def test_float_noise_never_decides_a_rank():
    """The demo's case: 0.5842746 vs 0.5842747 (best CC, no error bar) ranked 5th vs 1st."""
    v = np.array([0.5842747, 0.5842746, 0.5801, 0.4])
    r = lb.tied_ranks(v, None, better="high")
    assert r["rank"][0] == r["rank"][1] == 1.5 and list(r.rank_lo[:2]) == [1, 1] and list(r.rank_hi[:2]) == [2, 2]
    assert r["rank"][2] == 3 and r["rank"][3] == 4


def test_ranks_with_error_bars_closed_form():
    """Values 1, 1.5, 4 with errors 0.3: |1 − 1.5| = 0.5 < 2·√(0.09+0.09) = 0.85 → tie; 4 is
    significantly worse than both. Without errors the order is strict and matches argsort."""
    v, e = np.array([1.0, 1.5, 4.0]), np.full(3, 0.3)
    r = lb.tied_ranks(v, e, better="low")
    np.testing.assert_allclose(r["rank"], [1.5, 1.5, 3.0])
    strict = lb.tied_ranks(v, None, better="low")
    np.testing.assert_allclose(strict["rank"], [1, 2, 3])
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 10, 12)
    np.testing.assert_allclose(lb.tied_ranks(w, None, "high")["rank"], pd.Series(w).rank(ascending=False))


def test_a_metric_that_separates_nothing_is_left_out_of_the_mean_rank():
    idx = ["a", "b", "c", "d"]
    values = pd.DataFrame({"good": [1.0, 2.0, 3.0, 4.0], "flat": [0.58, 0.58 + 1e-7, 0.58 - 1e-7, 0.58]}, index=idx)
    errors = pd.DataFrame({"good": [0.1] * 4}, index=idx)
    board, info = lb.board(values, errors, {"good": "low", "flat": "high"})
    assert info.loc["good", "in_mean_rank"] and not info.loc["flat", "in_mean_rank"]
    assert list(board.columns[:1]) == ["mean_rank"] and list(board.index) == idx
    np.testing.assert_allclose(board["mean_rank"], [1, 2, 3, 4])
    assert (board["rank_flat"] == 2.5).all()


def test_defect_checks_verdicts():
    """caught = worse than the base beyond both error bars; wrong way = better; missed = within;
    an undone mock ties its base on every metric."""
    from helpers.leaderboard import defect_checks

    idx = ["Reconstructed", "Low-pass", "Noisy", "Flipped hand", "Rotated"]
    v = pd.DataFrame({"resolution_A": [6.0, 14.0, 6.1, 6.0, 6.0], "loglik_per_image": [-0.5, -3.0, 0.5, -0.5, -0.9]},
                     index=idx)
    e = pd.DataFrame({"resolution_A": [0.5, 0.1, 0.4, 0.5, 0.5], "loglik_per_image": [0.1, 0.3, 0.1, 0.1, 0.1]},
                     index=idx)
    better = {"resolution_A": "low", "loglik_per_image": "high"}
    out = defect_checks(v, e, better)
    got = {(r.mock, r.metric): r.verdict for r in out.itertuples()}
    assert got[("Low-pass", "resolution_A")] == "caught"  # 14 vs 6 ± 0.5
    assert got[("Noisy", "resolution_A")] == "missed"  # 6.1 vs 6.0: within 2σ
    assert got[("Noisy", "loglik_per_image")] == "wrong way"  # better than the base
    assert got[("Flipped hand", "all")] == "undone"
    assert got[("Rotated", "all")] == "left a difference in loglik_per_image"
    assert ("Bimodal", "emd_submitted") not in got  # absent mocks and metrics are skipped


def test_placement_against_a_comparison():
    """leaderboard.placement: position, neighbours and significance verdicts on a hand-made board."""
    vals = pd.DataFrame({"a": [1.0, 2.0, 3.0, 2.05], "b": [10.0, 9.0, 8.0, 12.0]}, index=["W", "X", "Y", "Z"])
    errs = pd.DataFrame({"a": [0.01] * 4, "b": [0.1] * 4}, index=vals.index)
    board, _ = lb.board(vals, errs, {"a": "low", "b": "high"})
    pl = lb.placement(board, "Z", {"a": "low", "b": "high"}, compare="X")
    assert list(board.index) == ["W", "Z", "X", "Y"] and (pl["position"], pl["n"]) == (2, 4)
    assert (pl["above"], pl["below"]) == ("W", "X")
    m = pl["metrics"]
    assert m.loc["a", "vs_compare"] == "worse"   # 2.05 vs 2.00: gap 0.05 > 2·sqrt(2)·0.01
    assert m.loc["b", "vs_compare"] == "better"  # 12 vs 9, higher is better
    assert m.loc["a", "compare_value"] == 2.0 and pl["best"] == ["b"] and pl["worst"] == ["a"]
    wide = lb.placement(board, "Z", {"a": "low", "b": "high"}, compare="X",
                                 errors=errs.assign(a=0.1))  # 0.05 is now within 2 σ
    assert wide["metrics"].loc["a", "vs_compare"] == "tied"


def test_an_underpowered_image_metric_is_left_out_of_the_mean_rank():
    """The image metric orders a, b, c, d the other way round from the map metric; with fewer
    images than it needs it must not move the mean rank."""
    idx = ["a", "b", "c", "d"]
    values = pd.DataFrame({"map": [1.0, 2.0, 3.0, 4.0], "img": [1.0, 2.0, 3.0, 4.0]}, index=idx)
    errors = pd.DataFrame({"map": [0.1] * 4, "img": [0.1] * 4}, index=idx)
    better = {"map": "low", "img": "high"}
    board, info = lb.board(values, errors, better, power={"img": (80, 546.0)})
    assert info.loc["img", "underpowered"] and not info.loc["img", "in_mean_rank"]
    assert info.loc["img", "n_images"] == 80 and info.loc["img", "images_needed"] == 546.0
    assert not info.loc["map", "underpowered"] and np.isnan(info.loc["map", "images_needed"])
    np.testing.assert_allclose(board.loc[idx, "mean_rank"], [1, 2, 3, 4])
    board, info = lb.board(values, errors, better, power={"img": (600, 546.0)})  # enough images
    assert info.loc["img", "in_mean_rank"] and not info.loc["img", "underpowered"]
    np.testing.assert_allclose(board.loc[idx, "mean_rank"], [2.5] * 4)
    plain, _ = lb.board(values, errors, better)  # without power: the old behaviour
    np.testing.assert_allclose(plain.loc[idx, "mean_rank"], [2.5] * 4)
