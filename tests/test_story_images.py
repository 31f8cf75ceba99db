"""Chapter 6's sentences (helpers.report.story_images) follow its tables."""
import pandas as pd

from helpers.report import story_images as story


def test_likelihood_sentence_names_who_beats_the_gt():
    s_ = pd.DataFrame({"rank": [1, 2, 3, 4], "delta_per_image_vs_gt": [0.0, -0.12, -0.4, -2.5]},
                      index=["GT ensemble", "Sampled GT", "Reconstructed", "Noisy"])
    s = story.likelihood(s_, 160)
    assert "Over 160 images, the GT ensemble ranks 1 of 4;" in s and "above it" not in s
    assert "Sampled GT -0.120 nat/image" in s and "largest losses: Noisy -2.50, Reconstructed -0.40, Sampled GT -0.12" in s
    s_.loc["Sampled GT", ["rank", "delta_per_image_vs_gt"]] = [0, 0.05]       # a control beats the GT ensemble
    s = story.likelihood(s_, 160)
    assert "ranks 1 of 4 (above it: Sampled GT +0.050)" in s


def test_power_sentence_lists_every_verdict():
    p = pd.DataFrame({"label": ["Noisy", "Reconstructed", "Bimodal", "Noisy", "Reconstructed", "Bimodal"],
                      "metric": ["loglik"] * 3 + ["best_cc"] * 3, "images_needed": [5, 35, 900, 3, 300, 1e9],
                      "verdict": ["separated", "separated", "underpowered", "separated", "underpowered",
                                  "no difference"]})
    s = story.power_verdicts(p, 160, 400, {"Flipped hand": "Reconstructed"}, {"Flipped hand"}, 24)
    assert "ahead at ≥ 2σ of: Noisy, Reconstructed; underpowered: Bimodal (900 needed)" in s
    assert "Best CC — ahead of: Noisy; underpowered: Reconstructed (300 needed); no difference within the stack: Bimodal" in s
    assert "Flipped hand has the same maps as Reconstructed on the 24³ image grid and the same populations" in s
    p.loc[1, "verdict"] = "wrong way"
    s = story.power_verdicts(p, 160, 400)
    assert "ahead at ≥ 2σ of: Noisy;" in s and "wrong way: Reconstructed." in s and "Flipped" not in s
