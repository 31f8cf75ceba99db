"""Chapter 8's sentences (helpers.report.story_summary) follow its tables: change a table, the sentence changes."""
import numpy as np
import pandas as pd

from helpers.report import story_summary as story


def _board():
    return pd.DataFrame({"mean_rank": [1.2, 2.0, 4.0, 5.0, 6.5],
                         "mean_rank_lo": [1.0, 1.5, 3.5, 4.5, 6.0], "mean_rank_hi": [1.4, 2.6, 4.6, 5.5, 7.0],
                         "rank_resolution_A": [1, 2, 4, 3, 5], "resolution_A": [4.3, 4.3, 6.0, 5.0, 8.6],
                         "nyquist_limited": [False, False, False, False, True]},
                        index=["Averaged GT", "Sampled GT", "Reconstructed", "Low-pass", "cryoDRGN"])


def test_sanity_names_a_degraded_mock_above_a_control():
    b = _board()
    s = story.sanity(b, ["Averaged GT", "Sampled GT"], ["Low-pass", "Noisy"], 0.8, 5, ["cryoDRGN"])
    assert "Averaged GT holds first place" in s and "1 of 1 degraded mocks rank below every noise-free control (1 " in s
    assert "not below" not in s and "cryoDRGN (a real method) is scored, place 5" in s
    b.loc["Low-pass", ["mean_rank", "mean_rank_lo"]] = [1.9, 1.1]            # Low-pass now above Sampled GT
    s = story.sanity(b.sort_values("mean_rank"), ["Averaged GT", "Sampled GT"], ["Low-pass"], 0.8, 5)
    assert "0 of 1 degraded mocks rank below" in s and "not below: Low-pass" in s
    assert "Averaged GT share first place (with Low-pass)" in s


def test_verdict_names_left_out_metrics_and_families():
    b = _board()
    fam = pd.DataFrame({"in_mean_rank": [True, False], "reason": ["", "no separating metric"]},
                       index=["volume", "image"])
    info = pd.DataFrame({"in_mean_rank": [True, False, False, False], "separates": [True, False, True, True],
                         "underpowered": [False, False, True, False], "n_images": [np.nan, np.nan, 160, 160],
                         "images_needed": [np.nan, np.nan, 900, 20]},
                        index=["resolution_A", "kl_submitted", "best_cc", "loglik_per_image"])
    s = story.verdict(b, fam, info, 200)
    assert "mean of 1 family ranks (volume)" in s and "image family (no separating metric)" in s
    assert "pairs: KL submitted" in s and "best CC (160 images, 900 needed)." in s
    info.loc["best_cc", ["in_mean_rank", "underpowered"]] = [True, False]
    s = story.verdict(b, fam, info, 200)
    assert "underpowered" not in s


def test_like_with_like_names_what_the_method_gets_wrong():
    m = pd.DataFrame({"value": [8.6, 0.9], "compare_value": [8.6, 0.2], "vs_compare": ["tied", "worse"]},
                     index=["resolution_A", "kl_submitted"])
    budgets = {"cryoDRGN": {"n_images": 2000, "box": 32}, "Recon. 2000 img @32": {"n_images": 2000, "box": 32},
               "Reconstructed": {"n_images": 24000, "box": 64}}
    run = {"epochs": 20, "train_s": 95.0}
    s = story.like_with_like("cryoDRGN", budgets, m, "Recon. 2000 img @32", m.assign(vs_compare="better"),
                             "Reconstructed", run, {"n": 160, "stack": 400, "heldout": True})
    assert "cryoDRGN trained on 2,000 images at 32 px (20 epochs, 95 s" in s
    assert "worse than Recon. 2000 img @32 on KL submitted (0.9 nat vs 0.2 nat)" in s
    assert "within the error bars of Recon. 2000 img @32 on resolution" in s
    assert "gets wrong beyond its budget: KL submitted" in s
    assert "*Reconstructed* had 24,000 images at 64 px: against it, cryoDRGN is better than" in s
    assert "held-out stack of 400" in s
    m.loc["kl_submitted", "vs_compare"] = "tied"
    s = story.like_with_like("cryoDRGN", budgets, m, "Recon. 2000 img @32", None, None, run,
                             {"n": 160, "stack": 2000, "heldout": False})
    assert "beyond its budget: nothing the error bars resolve" in s and "optimistic" in s and "24,000" not in s
    s = story.like_with_like("cryoDRGN", budgets, None, None, None, None)
    assert "cannot be told apart" in s and "no training record" in s and "true poses" not in s
    # RECOVAR's record (recovar.add_recovar_entry): no epochs, its two commands' times
    rec = {"zdim": 4, "n_clusters": 20, "pipeline_s": 854.5, "analyze_s": 3420.0}
    s = story.like_with_like("RECOVAR", {**budgets, "RECOVAR": {"n_images": 2000, "box": 32}}, m,
                             "Recon. 2000 img @32", None, None, rec)
    assert ("RECOVAR ran on 2,000 images at 32 px (a 4-D latent, 20 k-means maps, `pipeline` 14 min, `analyze` "
            "57 min on this machine) with the true poses") in s


def test_method_placement_and_nyquist():
    b = _board()
    pl = {"position": 5, "n": 5, "tied": ["Low-pass"], "ahead_of": [], "behind": ["Averaged GT", "Sampled GT"]}
    s = story.method_placement("cryoDRGN", "cryodrgn", b, pl)
    assert "5 of 5 by mean rank (6.50, interval 6.00–7.00)" in s and "overlaps those of Low-pass" in s
    assert "; it ranks behind Averaged GT, Sampled GT (intervals apart)" in s and "ahead of" not in s
    s = story.method_placement("cryoDRGN", "cryodrgn", b, {**pl, "ahead_of": ["Low-pass"]})
    assert "; it ranks ahead of Low-pass and behind Averaged GT, Sampled GT (intervals apart)" in s
    vol = pd.DataFrame({"best_res_median_raw_A": [7.9]}, index=["cryoDRGN"])
    run = {"box": 32, "voxel_size_A": 4.292}
    assert "crossed at 7.90 Å" in story.method_nyquist("cryoDRGN", run, b, vol)
    b.loc["cryoDRGN", ["nyquist_limited", "resolution_A"]] = [False, 12.0]
    assert "12.00 Å is above that limit" in story.method_nyquist("cryoDRGN", run, b, vol)
    assert story.method_nyquist("cryoDRGN", {}, b, vol) == ""
    assert story.method_nyquist("cryoDRGN", {**run, "epochs": 12}, b, vol).startswith("It was trained on images")
    assert story.method_nyquist("cryoDRGN", {**run, "zdim": 4}, b, vol).startswith("It ran on images downsampled "
                                                                                     "to 32 px (4.29 Å/px)")


def test_defects_separate_rescued_from_lost_misses():
    checks = pd.DataFrame({"mock": ["Bimodal", "Bimodal", "Noisy", "Flipped hand"],
                           "metric": ["emd_submitted", "kl_submitted", "loglik_per_image", "all"],
                           "verdict": ["caught", "missed", "caught", "undone"]})
    s = story.defects(checks, _board(), ["Averaged GT", "Sampled GT"])
    assert "2 of 2 degraded mocks are caught" in s and "Bimodal: KL submitted missed — another metric" in s
    assert "not caught" not in s and "Preprocessing: Flipped hand undone" in s and "Averaged GT 1, Sampled GT 2" in s
    checks.loc[0, "verdict"] = "wrong way"
    s = story.defects(checks, _board(), ["Averaged GT"])
    assert "another metric" not in s
    assert "1 of 2 degraded mocks" in s and "not caught: Bimodal (EMD submitted wrong way), Bimodal (KL submitted missed)" in s


def test_calibration_reads_the_interval():
    cal = pd.DataFrame({"rho": [0.9, 0.3], "lo": [0.6, -0.4], "hi": [1.0, 0.86], "n": [12, 12],
                        "misordered": [3, 20], "pairs": [66, 66]}, index=["loglik_per_image", "best_cc"])
    mis = pd.DataFrame({"gt_better": ["A"], "gt_worse": ["B"], "significant": [True]}, index=["best_cc"])
    s = story.calibration(cal, mis, ["loglik_per_image", "best_cc"])
    assert "ρ = 0.90" in s and "agreement beyond chance" in s and "none of them significantly" in s
    assert "interval contains 0" in s and "1 of them significantly on both sides, the GT-free score putting B above A" in s
    cal.loc["best_cc", ["rho", "lo", "hi"]] = [-0.7, -0.9, -0.2]
    assert "an anti-correlation" in story.calibration(cal, mis, ["best_cc"])
