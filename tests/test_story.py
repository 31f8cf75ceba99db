"""The chapters' "What the demo shows" sentences (helpers.report.story, helpers.report.story_scores) follow
their tables: each test builds a small table with the demo's labels, checks the sentence, then
changes the table and checks that the claim goes and the miss is named."""
import numpy as np
import pandas as pd

from helpers.report import story, story_scores

NYQ = 4.29  # Å, the demo GT's Nyquist


def test_data_summary_checks_the_weaker_middle_third():
    summary = {"n_gt_maps": 9, "box": 64, "voxel_size_A": 2.146, "n_particles": 500, "snr": 0.1,
               "md_pc1_variance_fraction": 0.62}
    pc1 = np.linspace(-12, 12, 9)
    pops = np.array([0.2, 0.1, 0.1, 0.05, 0.1, 0.05, 0.1, 0.1, 0.2])       # thirds 40 / 20 / 40 %
    s = story.data_summary(summary, pc1, pops)
    assert "9 GT maps of 64³ at 2.146 Å span MD-PC1 from -12 to 12" in s
    assert "carries 62 % of the atomic motion's variance" in s
    assert "split 40 / 20 / 40 %" in s and "(the challenge's design: three modes, the middle one weaker)" in s
    assert "500 particle images at SNR 0.1" in s
    pops = np.array([0.05, 0.1, 0.1, 0.2, 0.1, 0.2, 0.1, 0.1, 0.05])       # the middle third heaviest
    s = story.data_summary({**summary, "md_pc1_variance_fraction": None, "snr": None}, pc1, pops)
    assert "split 25 / 50 / 25 %" in s and "the middle third is not the least populated" in s
    assert "variance" not in s and "SNR" not in s


def _prep_report():
    return pd.DataFrame({
        "label": ["Reconstructed", "Other grid", "Flipped hand", "Rotated", "cryoDRGN"],
        "input_box": [64, 64, 64, 64, 32], "input_voxel_A": [2.146, 1.8, 2.146, 2.146, 4.292],
        "flip": [False, False, True, False, False], "align": [False, False, False, True, True],
        "score": [np.nan, np.nan, np.nan, 0.934, 0.91], "rotation_error_deg": [np.nan, np.nan, np.nan, 1.23, np.nan],
        "alignment_doubtful": [np.nan, np.nan, np.nan, False, False],
        "method": [np.nan, np.nan, np.nan, np.nan, "cryodrgn"]})


def test_preprocessing_sentence_follows_the_report():
    rep = _prep_report()
    s = story.preprocessing(rep, 5, 64, 2.146, method_angles={"cryoDRGN": 1.4})
    assert s.startswith("**What the demo shows.** 5 of 5 submissions are on the GT grid and frame")
    assert "Other grid, cryoDRGN came at another box or voxel size and were resampled" in s  # a voxel size alone counts
    assert "Flipped hand was mirrored as the config asks" in s
    assert "Rotated was aligned with score 0.934, 1.2° from the known rotation;" in s and "doubtful" not in s
    assert "cryoDRGN, a real method's output (cryodrgn), was aligned 1.4° from the identity (score 0.910): its maps " \
           "come in the GT's frame" in s
    assert "failed" not in s
    rep.loc[3, "alignment_doubtful"] = True                                  # the rotated mock's alignment is doubtful
    s = story.preprocessing(rep.drop(index=1), 6, 64, 2.146, n_failed=1, method_angles={"cryoDRGN": 12.0})
    assert "4 of 6 submissions" in s and "cryoDRGN came at another box or voxel size and was resampled" in s
    assert "1.2° from the known rotation — doubtful, check it above" in s
    assert "was aligned 12.0° from the identity (score 0.910): check the conventions of its adapter" in s
    assert s.endswith("1 failed (table above) and is left out of every later chapter.")
    # kernels.preprocess.voxel_size_check after a doubtful alignment (RECOVAR 1.0.5's maps)
    rep.loc[4, ["alignment_doubtful", "score"]] = [True, 0.307]
    rep["score_at_half_voxel"], rep["score_at_double_voxel"] = np.nan, np.nan
    rep["voxel_size_suggested_A"] = np.nan
    rep.loc[4, ["score_at_half_voxel", "score_at_double_voxel", "voxel_size_suggested_A"]] = [0.988, 0.052, 2.146]
    s = story.preprocessing(rep, 5, 64, 2.146)
    assert ("cryoDRGN's alignment was doubtful (score 0.307); at half its stated voxel size (2.146 Å) it aligns at "
            "0.988, so the voxel size in its header or config is probably wrong") in s
    rep.loc[4, ["score_at_half_voxel", "voxel_size_suggested_A"]] = [0.35, np.nan]
    assert "it aligns at 0.350, no better: the voxel size is not the problem" in story.preprocessing(rep, 5, 64, 2.146)


def _vol_summary():
    labs = ["Averaged GT", "Sampled GT", "20 maps", "Reconstructed", "Noisy", "Low-pass", "cryoDRGN"]
    return pd.DataFrame({
        "label": labs, "n_maps": [80, 80, 20, 80, 80, 80, 10],
        "best_res_median_A": [NYQ, NYQ, NYQ, 6.1, 7.3, 9.2, 8.58],
        "best_res_median_raw_A": [NYQ, NYQ, NYQ, 6.1, 7.3, 9.2, 7.9],
        "native_voxel_A": [2.145, 2.145, 2.145, 2.145, 2.145, 2.145, 4.29],
        "native_nyquist_A": [NYQ, NYQ, NYQ, NYQ, NYQ, NYQ, 8.58],
        "nyquist_limited": [False] * 6 + [True], "n_maps_nyquist_limited": [0] * 6 + [7],
        "best_res_corrected_median_A": [NYQ, NYQ, NYQ, 6.1, 7.31, 9.2, 8.58],
        "best_res_unmasked_median_A": [NYQ, NYQ, NYQ, 8.0, 11.4, 12.0, 9.0]})


def test_resolution_sentence_names_controls_and_misses():
    summ = _vol_summary()
    res = np.array([5.0, 5.5, 6.0, 6.2, 7.0, 7.5, 8.0, 9.0])                # Reconstructed's 8 maps
    pops = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])           # most populated = finest
    best = pd.DataFrame({"label": "Reconstructed", "map": np.arange(8), "best_res_A": res})
    s = story.resolution(summ, best, NYQ, pops)
    assert "3 of 7 submissions reach Nyquist (4.29 Å): Averaged GT, Sampled GT and 20 maps — Averaged GT and Sampled " \
           "GT are the GT-derived controls (GT maps or averages of a few)." in s
    assert "cryoDRGN's maps were made at 4.29 Å voxels: 7 of 10 best resolutions were finer than its own Nyquist, " \
           "8.58 Å (median 7.90 Å as measured)" in s
    assert "most populated quarter of maps (most images) reaches 5.25 Å, finer than its least populated quarter " \
           "(8.50 Å), as in real data." in s
    assert "Noisy (the Reconstructed maps with white noise added) and Low-pass (the Reconstructed maps, low-passed) " \
           "are worse than Reconstructed (Noisy 7.30 Å, Low-pass 9.20 Å against 6.10 Å)." in s
    summ.loc[1, "best_res_median_A"] = 5.0                                   # Sampled GT misses Nyquist
    summ.loc[4, "best_res_median_A"] = 6.1                                   # Noisy no worse than Reconstructed
    s = story.resolution(summ, best, NYQ, pops[::-1])                        # most populated = coarsest
    assert "2 of 7 submissions reach Nyquist (4.29 Å): Averaged GT and 20 maps — Averaged GT is a GT-derived control" in s
    assert "Sampled GT (5.00 Å), GT-derived control, does not." in s
    assert "reaches 8.50 Å, not finer than its least populated quarter (5.25 Å)." in s and "real data" not in s
    assert "Low-pass (the Reconstructed maps, low-passed) is worse than Reconstructed (Low-pass 9.20 Å against 6.10 Å)" in s
    assert "Noisy (the Reconstructed maps with white noise added) is not worse than Reconstructed (6.10 Å against " \
           "6.10 Å): the median best resolution does not see its defect." in s
    s = story.resolution(summ[summ.label != "Reconstructed"], best, NYQ, pops)
    assert "of noisy particle images, has" not in s and "The noise and blur mocks: Noisy 6.10 Å, Low-pass 9.20 Å." in s


def test_mask_check_says_what_the_correction_and_the_unmasked_fsc_show():
    summ = _vol_summary()
    s = story.mask_check(summ)
    assert "For Noisy the median best resolution is 7.30 Å masked and 7.31 Å after the mask correction: the soft " \
           "mask adds no spurious correlation; without the mask it is 11.4 Å, worse" in s
    summ.loc[4, "best_res_corrected_median_A"] = 9.5                        # the correction costs 2 Å
    summ.loc[4, "best_res_unmasked_median_A"] = 7.25                         # and no mask is no worse
    s = story.mask_check(summ)
    assert "the soft mask inflates the FSC, trust the corrected value" in s and "adds no spurious" not in s
    assert "without the mask it is 7.2 Å, no worse than with it." in s and "solvent" not in s
    s = story.mask_check(summ[summ.label != "Noisy"])                       # no Noisy mock: the last row
    assert "For cryoDRGN the median best resolution is 8.58 Å" in s


def test_subspace_first_ranks_the_controls_from_the_numbers():
    first = pd.Series({"GT": 100.0, "Averaged GT": 99.1, "Sampled GT": 98.7, "Reconstructed": 91.0,
                       "Noisy": 72.4, "Missing open": 61.3})
    s = story.subspace_first(first)
    assert "captures between 61.3 % (Missing open) and 99.1 % (Averaged GT)" in s
    assert "Averaged GT 99.1 %, Sampled GT 98.7 % — the GT-derived controls capture the most." in s
    assert "The lowest: Missing open (no maps for the open end of the motion)." in s
    tied = first.copy()
    tied["Sampled GT"] = 99.1                                               # tied controls still lead
    assert "— the GT-derived controls capture the most." in story.subspace_first(tied)
    first["Reconstructed"], first["Noisy"] = 99.5, 50.0                     # a control is no longer on top
    s = story.subspace_first(first)
    assert "— the GT-derived controls rank 2 and 3 of 5." in s and "capture the most" not in s
    assert "The lowest: Noisy (the Reconstructed maps with white noise added)." in s and "spreads" not in s
    first["Sampled GT"] = 99.1                                              # tied controls share a rank
    assert "— the GT-derived controls rank 2 and 2 of 5." in story.subspace_first(first)


def test_subspace_both_compares_with_reconstructed_and_names_a_miss():
    both = pd.DataFrame({"GT captured by set (%)": [97.0, 96.5, 90.0, 70.2, 92.0, 93.0],
                         "set captured by GT (%)": [95.0, 94.0, 60.0, 80.0, 65.0, 75.0]},
                        index=["Averaged GT", "Sampled GT", "Reconstructed", "Missing open", "DIMS2 path", "20 maps"])
    s = story.subspace_both(both)
    assert "The noise-free controls capture the most of the GT's variance (Averaged GT 97.0 %, Sampled GT 96.5 %)." in s
    assert "Reconstructed (maps reconstructed from noisy particle images) captures 90.0 % of the GT's variance, but " \
           "only 60.0 % of its own variance lies in the GT's subspace" in s
    assert "Missing open (no maps for the open end of the motion): 70.2 % / 80.0 % (GT captured / set in GT), " \
           "below / above Reconstructed's." in s
    assert "DIMS2 path (another path between the same end states): 92.0 % / 65.0 % (GT captured / set in GT), above " \
           "/ above Reconstructed's — not separated from Reconstructed by either PCV." in s
    assert "20 maps (the same particles reconstructed in 20 groups): 93.0 % / 75.0 %" in s and "fewer" not in s
    both.loc["20 maps", "GT captured by set (%)"] = 96.8                   # between the controls
    both.loc["DIMS2 path", "set captured by GT (%)"] = 55.0                # now below Reconstructed
    both.loc["Reconstructed", "set captured by GT (%)"] = 95.0             # no longer "but only"
    s = story.subspace_both(both)
    assert "The noise-free controls capture Averaged GT 97.0 %, Sampled GT 96.5 % of the GT's variance, ranking 1 " \
           "and 3 of 6: 20 maps capture more." in s and "capture the most" not in s
    assert "captures 90.0 % of the GT's variance, and 95.0 % of its own variance" in s and "but only" not in s
    assert "55.0 % (GT captured / set in GT), above / below Reconstructed's." in s and "not separated" not in s


def _l2m():
    return pd.DataFrame({"EMD_submitted_mean": [0.101, 0.105, 0.2, 0.31, 0.35, 0.27, 0.22],
                         "EMD_opt_mean": [0.09, 0.095, 0.15, 0.15, 0.15, 0.24, 0.12],
                         "KL_pq_submitted_mean": [0.01, 0.02, 0.05, 0.4, 0.6, 0.1, 0.05],
                         "max_q_opt_mean": [0.05, 0.06, 0.16, 0.16, 0.16, 0.2, 0.39]},
                        index=["Averaged GT", "Sampled GT", "Reconstructed", "Bimodal", "Middle mode", "Missing open",
                               "Low-pass"])


def test_distribution_sentence_checks_every_comparison():
    l2m = _l2m()
    s = story_scores.distribution(l2m, {"Reconstructed": 80})
    assert "The GT-derived controls score lowest: Averaged GT 0.101, Sampled GT 0.105 (EMD with their populations)." in s
    assert "Reconstructed (maps from 80 noisy reconstructions) scores 0.200: its maps and populations are farther" in s
    assert "Bimodal, the same maps with wrong populations, scores 0.310 with its populations, above Reconstructed's " \
           "0.200 (KL 0.40, above 0.05), and 0.150 optimised, like Reconstructed: the optimised EMD sees only the maps." in s
    assert "Missing open (no maps for the open end of the motion) is caught by the optimised EMD too (0.240 against " \
           "0.150)" in s
    assert "up to 39% of the mass on one map (Low-pass; Reconstructed 16%, Averaged GT 5%)" in s
    l2m.loc["Missing open", "EMD_opt_mean"] = 0.15                         # the optimised EMD misses it
    l2m.loc["Middle mode", ["EMD_submitted_mean", "KL_pq_submitted_mean"]] = [0.19, 0.05]  # nothing sees it
    l2m.loc["Sampled GT", "EMD_submitted_mean"] = 0.25                     # a control behind Reconstructed
    l2m.loc["Bimodal", "EMD_opt_mean"] = 0.17                              # optimised, no longer like Reconstructed
    s = story_scores.distribution(l2m, {"Reconstructed": 80})
    assert "score lowest" not in s and "The GT-derived controls score Averaged GT 0.101, Sampled GT 0.250 (EMD with " \
           "their populations), ranking 1 and 5 of 7: Reconstructed, Middle mode and Low-pass score lower." in s
    assert "scores 0.200, not above Sampled GT." in s and "farther" not in s
    assert "Middle mode, the same maps with wrong populations, scores 0.190 with its populations, not above " \
           "Reconstructed's 0.200 (KL 0.05, not above 0.05)" in s
    assert "Neither the EMD nor the KL with its populations separates it from Reconstructed." in s
    assert "(KL 0.40, above 0.05), and 0.170 optimised, against Reconstructed's 0.150." in s
    assert "(KL 0.05, not above 0.05), and 0.150 optimised, like Reconstructed" in s
    assert "Missing open (no maps for the open end of the motion) is not separated from Reconstructed by the " \
           "optimised EMD (0.150 against 0.150). With its populations it scores 0.270 against 0.200: caught there." in s
    l2m.loc["Missing open", "EMD_submitted_mean"] = 0.2                     # nor the submitted one
    s = story_scores.distribution(l2m, {"Reconstructed": 80})
    assert "With its populations it scores 0.200 against 0.200: not separated either." in s


def _verdicts():
    rows = [("blur", "resolution_A", "detects", 25.0, 0), ("blur", "l2", "saturates", 25.0, 0),
            ("blur", "kl_submitted", "blind", np.nan, -1), ("blur", "loglik_per_image", "underpowered", np.nan, -1),
            ("scale", "resolution_A", "invariant", np.nan, -1), ("scale", "l2", "not invariant", 0.01, 0),
            ("scale", "kl_submitted", "invariant", np.nan, -1), ("mode_drop", "resolution_A", "blind", np.nan, -1),
            ("mode_drop", "l2", "blind", np.nan, -1), ("mode_drop", "kl_submitted", "detects", 0.5, 1),
            ("mode_drop", "loglik_per_image", "wrong way", 0.25, 0)]
    S = pd.DataFrame(rows, columns=["degradation", "metric", "verdict", "threshold", "threshold_index"])
    S["n_levels"] = S.degradation.map({"blur": 3, "scale": 2, "mode_drop": 4})
    S["n_images"], S["images_needed"] = 60.0, np.where(S.verdict == "underpowered", 900.0, np.nan)
    return S


def test_robustness_lines_and_the_per_metric_leader_follow_the_verdicts():
    S, names = _verdicts(), ["blur", "scale", "mode_drop"]
    metrics = ["resolution_A", "l2", "kl_submitted", "loglik_per_image"]
    pm = story_scores.metric_table(S, metrics)
    assert pm.detects.tolist() == [1, 1, 1, 0] and list(pm.columns) == ["metric", "detects", "blind to",
                                                                         "underpowered for", "wrong way", "not invariant to"]
    assert pm.set_index("metric").loc["KL submitted", "blind to"] == "B-factor blur"
    assert pm.set_index("metric").loc["log-likelihood / image", "wrong way"] == "middle mode dropped"
    s = story_scores.robustness(S, names, pm)
    assert "- **B-factor blur**: first seen at 25 Å² by resolution, L2 per voxel; 2 of 4 metrics detect it; " \
           "blind: KL submitted; **underpowered** (too few images to tell): log-likelihood / image (needs ~900 " \
           "images, 60 scored)." in s
    assert "- **intensity scale** (should change nothing): 2 of 3 metrics are invariant; not: L2 per voxel (from " \
           "0.01 ×)." in s
    assert "- **middle mode dropped**: first seen at 0.5 fraction by KL submitted; 1 of 4 metrics detect it; blind: " \
           "resolution, L2 per voxel; **wrong way** (the defect looks like an improvement): log-likelihood / image." in s
    assert "resolution, L2 per voxel and KL submitted detect the most defects (1 of 2 each)" in s
    S.loc[S.degradation == "mode_drop", "verdict"] = "not measured"          # a defect not measured at all
    S.loc[(S.degradation == "scale") & (S.metric == "l2"), "verdict"] = "invariant"
    S.loc[(S.degradation == "blur") & (S.metric == "kl_submitted"), ["verdict", "threshold", "threshold_index"]] = \
        ["detects", 100.0, 1]
    pm = story_scores.metric_table(S, metrics)
    s = story_scores.robustness(S, names, pm)
    assert "- **middle mode dropped**: not measured in this run." in s and "no metric detects" not in s
    assert "- **intensity scale** (should change nothing): every metric is invariant." in s
    assert "3 of 4 metrics detect it" in s and "first seen at 25 Å² by resolution, L2 per voxel;" in s
    assert "resolution, L2 per voxel and KL submitted detect the most defects (1 of 2 each)" in s
    S = pd.concat([S, pd.DataFrame([{"degradation": "hand", "metric": "l2", "verdict": "detects", "threshold": 1.0,
                                     "threshold_index": 0, "n_levels": 1}])], ignore_index=True)
    pm = story_scores.metric_table(S, metrics)
    s = story_scores.robustness(S, names + ["hand"], pm)
    assert "- **wrong hand**: seen by L2 per voxel; 1 of 1 metrics detect it." in s
    assert "**Per metric.** L2 per voxel detects the most defects (2 of 3);" in s


def test_chapter_1_names_the_held_out_stack_and_chapter_3_its_controls():
    """With a held-out stack the sentence says chapter 6 scores on it, not on the training images;
    Nyquist reached by the controls alone is said once."""
    from helpers.report import story

    s = {"n_gt_maps": 4, "box": 8, "voxel_size_A": 2.0, "n_particles": 20, "snr": 0.05}
    assert "20 particle images at SNR 0.05 are what chapter 6 scores" in story.data_summary(s, [0, 1, 2, 3], [1] * 4)
    t = story.data_summary({**s, "n_heldout": 5}, [0, 1, 2, 3], [1] * 4)
    assert "are the stack methods train on; 5 more, drawn the same way and held out, are what chapter 6 scores" in t
    summ = pd.DataFrame({"label": ["Averaged GT", "Sampled GT", "Reconstructed"], "best_res_median_A": [4.29, 4.29, 6.0],
                         "nyquist_limited": [False] * 3})
    assert "reach Nyquist (4.29 Å): Averaged GT and Sampled GT, the GT-derived controls (GT maps" in \
        story.resolution(summ, None, 4.292)


def test_per_particle_summary_table_names_its_columns_for_a_reader():
    """Chapter 9's table on the page: CSV names turned into words with units, rounded."""
    import pandas as pd

    from helpers.report.story_per_particle import summary_table

    s = pd.DataFrame({"res_05_median_A": [8.123456], "n": [100], "au_fsc_mean": [0.49981], "submission": ["x"]},
                     index=["GT map"])
    t = summary_table(s)
    assert list(t.columns) == ["submission", "particles", "AU-FSC mean", "res. 0.5 (Å, median)"]
    assert t.loc["GT map", "AU-FSC mean"] == 0.5 and t.loc["GT map", "res. 0.5 (Å, median)"] == 8.123


def test_chapter_9_speaks_of_every_methods_latent_and_compares_two():
    """With two methods' latents the chapter gives each its sentence and compares them at the story's
    k with the standard error of the difference (red when only the first latent is read)."""
    import pandas as pd

    from helpers.report import story_per_particle as story

    rows = []
    for name, ns, d_conf in [("GT conformation", 0.9, 0.0), ("random", 0.05, 1.0), ("defocus + noise", 0.05, 1.0),
                             ("cryoDRGN latent", 0.12, 0.6), ("RECOVAR latent", 0.07, 0.8)]:
        for k in (5, 20):
            rows += [(name, "conformation", "neighbourhood_similarity", k, ns, 0.004, k / 400),
                     (name, "defocus", "neighbourhood_similarity", k, 0.8 if name == "defocus + noise" else 0.05,
                      0.004, k / 400)]
        rows += [(name, "conformation", "imbalance_latent_to_reference", np.nan, d_conf, np.nan, np.nan),
                 (name, "defocus", "imbalance_latent_to_reference", np.nan, 0.95, np.nan, np.nan)]
    lat = pd.DataFrame(rows, columns=["latent", "reference", "score", "k", "value", "sem", "chance"])
    text = story.latent(lat, 20, ["cryoDRGN latent", "RECOVAR latent"])
    assert "cryoDRGN latent shares 0.12 of its neighbours" in text and "RECOVAR latent shares 0.07" in text
    assert "Δ(latent → conformation) = 0.80" in text
    # 0.05 ± 0.004·√2 = 0.00566: z = 8.8
    assert "cryoDRGN latent follows the conformation more closely than RECOVAR latent: 0.050 ± 0.006" in text
    assert "z = 8.8; z-test, the two standard errors over interleaved subsets combined as if independent" in text
    lat.loc[lat.latent == "RECOVAR latent", "sem"] = 0.04
    assert "are not told apart on the conformation (0.050 ± 0.040, z = 1.2 < 2)" in story.latent(
        lat, 20, ["cryoDRGN latent", "RECOVAR latent"])
    assert story.chapter(pd.DataFrame({"au_fsc_mean": [0.4], "au_fsc_sem": [0.01], "n": [10]}, index=["x"]),
                         pd.DataFrame(), lat, 20).count("of its neighbours with the GT conformation") == 2


def test_the_summary_links_to_a_heading_of_the_robustness_chapter():
    """The trust table's link names an anchor the robustness page has (MyST's slug of a heading);
    a renamed heading left it dead (site check: 'no such anchor')."""
    import inspect
    import re

    from helpers.core.paths import REPO_ROOT
    from helpers.pipeline.chapters.summary import trust_table

    page, anchor = inspect.signature(trust_table).parameters["link"].default.split("#")
    text = (REPO_ROOT / "notebooks" / page.replace(".html", ".py")).read_text()
    slugs = {re.sub(r"\s+", "-", re.sub(r"[^\w\s-]", "", h.strip().lower())) for h in re.findall(r"^# #+ (.+)$", text, re.M)}
    assert anchor in slugs, sorted(slugs)
