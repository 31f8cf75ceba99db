"""Tie-aware ranks: values within uncertainty share a rank; metrics that separate nothing are
left out; the overall rank is the mean of family ranks, with an interval; the API checks its input."""
import numpy as np
import pandas as pd
import pytest

from helpers.report import leaderboard as lb


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
    board, info, _ = lb.board(values, errors, {"good": "low", "flat": "high"},
                              family={"good": "volume", "flat": "volume"})
    assert info.loc["good", "in_mean_rank"] and not info.loc["flat", "in_mean_rank"]
    assert list(board.columns[:1]) == ["mean_rank"] and list(board.index) == idx
    np.testing.assert_allclose(board["mean_rank"], [1, 2, 3, 4])
    assert (board["rank_flat"] == 2.5).all()


def test_defect_checks_verdicts():
    """caught = worse than the base beyond both error bars; wrong way = better; missed = within;
    an undone mock ties its base on every metric."""
    from helpers.report.leaderboard import defect_checks

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
    board, _, _ = lb.board(vals, errs, {"a": "low", "b": "high"}, family={"a": "volume", "b": "image"})
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
    fam = {"map": "volume", "img": "image"}
    board, info, families = lb.board(values, errors, better, power={"img": (80, 546.0)}, family=fam)
    assert families.loc["image", "reason"] == "underpowered" and not families.loc["image", "in_mean_rank"]
    assert info.loc["img", "underpowered"] and not info.loc["img", "in_mean_rank"]
    assert info.loc["img", "n_images"] == 80 and info.loc["img", "images_needed"] == 546.0
    assert not info.loc["map", "underpowered"] and np.isnan(info.loc["map", "images_needed"])
    np.testing.assert_allclose(board.loc[idx, "mean_rank"], [1, 2, 3, 4])
    board, info, _ = lb.board(values, errors, better, power={"img": (600, 546.0)}, family=fam)  # enough images
    assert info.loc["img", "in_mean_rank"] and not info.loc["img", "underpowered"]
    np.testing.assert_allclose(board.loc[idx, "mean_rank"], [2.5] * 4)
    plain, _, _ = lb.board(values, errors, better, family=fam)  # without power: the old behaviour
    np.testing.assert_allclose(plain.loc[idx, "mean_rank"], [2.5] * 4)


FAM = {"v1": "volume", "v2": "volume", "v3": "volume", "d": "distribution", "s": "subspace"}
BETTER = {"v1": "low", "v2": "low", "v3": "low", "d": "low", "s": "high"}


def _three():
    """P ("Bimodal"): best on the three volume metrics, 2nd on distribution and subspace; Q
    ("Rotated"): 2nd on volume, best on the other two; R last everywhere. Errors 0.01: strict order."""
    idx = ["P", "Q", "R"]
    values = pd.DataFrame({"v1": [1.0, 2, 3], "v2": [1.0, 2, 3], "v3": [1.0, 2, 3], "d": [2.0, 1, 3],
                           "s": [2.0, 3, 1]}, index=idx)
    return values, pd.DataFrame(0.01, index=idx, columns=list(BETTER))


def test_overall_rank_is_the_mean_of_family_ranks_not_of_metric_ranks():
    """Metric mean: P (1+1+1+2+2)/5 = 1.4 ahead of Q (2+2+2+1+1)/5 = 1.6. Family mean: P (1+2+2)/3
    = 5/3 behind Q (2+1+1)/3 = 4/3; R (3+3+3)/3 = 3. The volume family no longer outvotes the rest."""
    values, errors = _three()
    board, info, families = lb.board(values, errors, BETTER, family=FAM)
    np.testing.assert_allclose(board.loc[["P", "Q", "R"], "mean_rank"], [5 / 3, 4 / 3, 3.0])
    np.testing.assert_allclose(board.loc[["P", "Q", "R"], "family_rank_volume"], [1, 2, 3])
    np.testing.assert_allclose(board.loc[["P", "Q", "R"], "family_rank_distribution"], [2, 1, 3])
    metric_mean = board[[f"rank_{m}" for m in BETTER]].mean(axis=1)
    assert metric_mean["P"] < metric_mean["Q"] and list(board.index) == ["Q", "P", "R"]
    assert list(board.columns[:6]) == ["mean_rank", "mean_rank_lo", "mean_rank_hi", "family_rank_volume",
                                       "family_rank_subspace", "family_rank_distribution"]
    assert families.in_mean_rank.all() and list(families.index) == ["volume", "subspace", "distribution"]


def test_a_family_with_no_separating_metric_is_shown_and_left_out():
    """Subspace values within 0.1 % of each other separate nothing: the overall rank is the mean of
    volume and distribution only, P (1+2)/2, Q (2+1)/2, R 3; the subspace family rank is still shown."""
    values, errors = _three()
    values["s"] = [50.0, 50.0 + 1e-6, 50.0 - 1e-6]
    board, _, families = lb.board(values, errors.drop(columns="s"), BETTER, family=FAM)
    assert not families.loc["subspace", "in_mean_rank"] and families.loc["subspace", "reason"] == "no separating metric"
    np.testing.assert_allclose(board.loc[["P", "Q", "R"], "mean_rank"], [1.5, 1.5, 3.0])
    np.testing.assert_allclose(board["family_rank_subspace"], 2.0)


def test_permuting_the_rows_changes_no_rank():
    """Values and errors in two different row orders: matched by label, every rank, mean rank and
    interval is unchanged. Errors differ enough across rows that matching them by position would
    change the per-metric ties."""
    rng = np.random.default_rng(3)
    idx = [f"s{i}" for i in range(7)]
    values = pd.DataFrame(rng.uniform(0, 3, (7, 5)), index=idx, columns=list(BETTER))
    errors = pd.DataFrame(rng.uniform(0.01, 0.8, (7, 5)), index=idx, columns=list(BETTER))
    ref, _, _ = lb.board(values, errors, BETTER, family=FAM, n_draws=300)
    p1, p2 = rng.permutation(7), rng.permutation(7)
    assert (p1 != p2).any()
    got, _, _ = lb.board(values.iloc[p1], errors.iloc[p2], BETTER, family=FAM, n_draws=300)
    pd.testing.assert_frame_equal(got.loc[ref.index], ref)
    assert list(got.index) == list(ref.index)
    by_position = [lb.tied_ranks(values.iloc[p1][m].to_numpy(), errors.iloc[p2][m].to_numpy(), b)["rank"]
                   for m, b in BETTER.items()]  # errors matched by row position instead of label
    assert not all(np.allclose(r, ref.loc[values.index[p1], f"rank_{m}"]) for r, m in zip(by_position, BETTER))


def test_mismatched_labels_and_directions_raise():
    values, errors = _three()
    with pytest.raises(ValueError, match=r"missing \['R'\], unexpected \['Zed'\]"):
        lb.board(values, errors.rename(index={"R": "Zed"}), BETTER, family=FAM)
    with pytest.raises(ValueError, match="bogus"):
        lb.board(values, errors.assign(bogus=0.1), BETTER, family=FAM)
    with pytest.raises(ValueError, match="missing.*'b'"):
        lb.significance(pd.Series([1.0, 2.0], index=["a", "b"]), pd.Series([0.1, 0.1], index=["a", "c"]))
    with pytest.raises(ValueError, match="'lower'"):
        lb.board(values, errors, {**BETTER, "d": "lower"}, family=FAM)
    for f in (lb.significance, lb.tied_ranks):
        with pytest.raises(ValueError, match="'lower'"):
            f([1.0, 2.0], None, "lower")


def test_a_nan_error_is_unknown_not_exact():
    """1, 5, 9 with errors 0.1, NaN, 0.1: treated as exact, 5 would be significantly apart from
    both. Unknown: no pair with it is significant, it has no rank, the other two rank 1 and 2
    among themselves, and it is flagged."""
    sig = lb.significance([1.0, 5.0, 9.0], [0.1, np.nan, 0.1], "low")
    assert not sig[1].any() and not sig[:, 1].any() and sig[0, 2]
    r = lb.tied_ranks(np.array([1.0, 5.0, 9.0]), np.array([0.1, np.nan, 0.1]), "low")
    assert np.isnan(r["rank"][1]) and list(r["rank"][[0, 2]]) == [1.0, 2.0]
    values, errors = _three()
    errors.loc["P", "d"] = np.nan
    board, info, _ = lb.board(values, errors, BETTER, family=FAM)
    assert board.loc["P", "unranked"] == "d (error unknown)" and board.loc["P", "rank_d_interval"] == "—"
    np.testing.assert_allclose(board.loc[["Q", "R"], "rank_d"], [1, 2])
    assert info.loc["d", "unranked"] == 1
    d = lb.defect_checks(values.rename(index={"P": "Bimodal", "Q": "Reconstructed"}),
                         errors.rename(index={"P": "Bimodal", "Q": "Reconstructed"}), BETTER,
                         defects=(("Bimodal", "distribution", "d"),), undone=())
    assert d.verdict.tolist() == ["error unknown"]


def test_an_unmeasured_metric_has_no_rank_and_the_overall_rank_is_over_the_rest():
    """R lacks the distribution metric: no rank there ("—"), P and Q rank 1 and 2 on it among
    themselves (not 1 and 2.5 or a middle rank for R), R's overall rank is the mean of its volume
    (3) and subspace (3) ranks, flagged; P's is (1 + 1 + 2)/3 once R is out of the distribution ranks."""
    values, errors = _three()
    values.loc["R", "d"] = np.nan
    values.loc["P", "d"] = 0.5
    board, _, _ = lb.board(values, errors, BETTER, family=FAM)
    assert np.isnan(board.loc["R", "rank_d"]) and board.loc["R", "rank_d_interval"] == "—"
    np.testing.assert_allclose(board.loc[["P", "Q"], "rank_d"], [1, 2])
    np.testing.assert_allclose(board.loc[["P", "Q", "R"], "mean_rank"], [4 / 3, 5 / 3, 3.0])
    assert board.loc["R", "unranked"] == "d (unmeasured)" and board.loc["P", "unranked"] == ""


def test_a_metric_measured_for_few_submissions_is_shown_not_averaged():
    """Chapter 9's AU-FSC exists only for methods with per-particle output: measured for 2 of 6
    submissions, it ranks those two among themselves (shown) but leaves every mean rank as it is
    without it, and its family says why (with min_measured=0 it would lift the two)."""
    rng = np.random.default_rng(3)
    labels = list("ABCDEF")
    values = pd.DataFrame({"v": rng.normal(size=6), "s": rng.normal(size=6)}, index=labels)
    errors = pd.DataFrame({"v": np.full(6, 1e-3), "s": np.full(6, 1e-3)}, index=labels)
    better, fam = {"v": "low", "s": "high"}, {"v": "volume", "s": "subspace", "a": "per-particle"}
    base, _, _ = lb.board(values, errors, better, family=fam, n_draws=0)
    values["a"] = [0.4, np.nan, np.nan, 0.2, np.nan, np.nan]
    errors["a"] = [1e-3, np.nan, np.nan, 1e-3, np.nan, np.nan]
    board, info, families = lb.board(values, errors, {**better, "a": "high"}, family=fam, n_draws=0)
    assert info.loc["a", "partial"] and not info.loc["a", "in_mean_rank"] and info.loc["a", "measured"] == 2
    np.testing.assert_allclose(board.loc[labels, "mean_rank"], base.loc[labels, "mean_rank"])
    np.testing.assert_allclose(board.loc[["A", "D"], "rank_a"], [1, 2])
    assert families.loc["per-particle", "reason"] == "measured for 2 of 6 submissions"
    lifted, _, _ = lb.board(values, errors, {**better, "a": "high"}, family=fam, n_draws=0, min_measured=0)
    assert not np.allclose(lifted.loc[labels, "mean_rank"], base.loc[labels, "mean_rank"])


def test_the_interval_contains_the_point_and_overlapping_intervals_tie():
    """A is better than B and B2 (twins) on four families by 0.25, below the 2-σ call (2·√2·0.1 =
    0.28): A, B, B2 share every rank, 2 (the midpoint of 1–3). In the draws A is first in a family
    in ~93 % of them, so the 97.5th percentile of its mean rank is below 2 — the interval must still
    contain the point. C is far behind: A, B, B2 tie overall, C holds last place alone."""
    fam = {"v": "volume", "t": "transport", "s": "subspace", "d": "distribution"}
    better = {m: "low" for m in fam}
    values = pd.DataFrame({m: [1.0, 1.25, 1.25, 9.0] for m in fam}, index=["A", "B", "B2", "C"])
    errors = pd.DataFrame(0.1, index=values.index, columns=list(fam))
    board, _, _ = lb.board(values, errors, better, family=fam, n_draws=4000)
    assert (board.mean_rank_lo <= board.mean_rank).all() and (board.mean_rank <= board.mean_rank_hi).all()
    assert board.loc["A", "mean_rank"] == 2.0 and board.loc["A", "mean_rank_hi"] == 2.0
    assert set(board.loc["A", "tied_with"].split("; ")) == {"B", "B2"} and board.loc["C", "tied_with"] == ""
    text = lb.ends_text(board)
    assert text.startswith("the lead is shared by A (") and "B (" in text and "B2 (" in text
    assert "C (4.00, interval 4.00–4.00) holds last place alone" in text
    apart = lb.ends_text(lb.board(values.drop(index=["B", "B2"]), errors.drop(index=["B", "B2"]), better,
                                  family=fam)[0])
    assert apart.startswith("A (1.00, interval 1.00–1.00) holds the lead alone")
    pl = lb.placement(board, "C", better, compare=None)
    assert set(pl["behind"]) == {"A", "B", "B2"} and pl["tied"] == [] and pl["ahead_of"] == []


def test_front_page_sentence_follows_the_tables():
    """The front-page sentence changes when its tables change: a miss in the defect checks is
    named, a submission is 'behind' exactly those whose interval lies wholly ahead of its own,
    and overlapping leaders share the lead."""
    from helpers.report.headline import front_page

    board = pd.DataFrame({"mean_rank": [1.0, 2.0, 4.0, 6.0], "mean_rank_lo": [1.0, 1.8, 3.5, 5.0],
                          "mean_rank_hi": [1.2, 2.5, 4.5, 7.0]}, index=["GT", "20 maps", "Reconstructed", "cryoDRGN"])
    checks = pd.DataFrame({"mock": ["Bimodal", "Bimodal", "Low-pass"], "metric": ["emd_submitted", "kl_submitted",
                           "resolution_A"], "verdict": ["caught", "caught", "caught"]})
    s = front_page(board, checks, methods=["cryoDRGN"], matched="20 maps")
    assert "ranks 4 of 4, the ideal reconstruction from exactly its images and box (20 maps) 2;" in s
    two = front_page(board, checks, methods=["cryoDRGN", "Reconstructed"], matched="20 maps")
    assert ("the 2 real methods run on the demo's particle images rank Reconstructed 3 of 4, cryoDRGN 4 of 4, the "
            "ideal reconstruction from exactly their images and box (20 maps) 2;") in two
    s = front_page(board, checks, methods=["cryoDRGN"])
    assert "**GT** leads the leaderboard of 4 submissions alone" in s
    assert "*Reconstructed* submission (noisy maps from simulated particle images) ranks 3, behind GT, 20 maps" in s
    assert "cryoDRGN, a real method trained on the demo's particle images, ranks 4 of 4" in s
    assert "2 of 2 deliberately degraded submissions are caught" in s and "each by every metric aimed at it" in s
    checks.loc[1, "verdict"] = "missed"                      # KL misses the Bimodal populations
    s = front_page(board, checks, methods=["cryoDRGN"])
    assert "(Bimodal missed by KL submitted)" in s and "each by every metric" not in s
    board.loc["20 maps", "mean_rank_hi"] = 3.6               # 20 maps' interval now overlaps Reconstructed's
    board.loc["GT", "mean_rank_hi"] = 1.9                    # and GT's overlaps 20 maps'
    s = front_page(board, checks, methods=["cryoDRGN"])
    assert "ranks 3 (its rank interval overlaps 20 maps), behind GT (rank intervals apart)" in s
    assert "**GT** and **20 maps** share the lead" in s
