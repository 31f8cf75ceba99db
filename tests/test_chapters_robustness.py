"""Chapter 7's computations (helpers.pipeline.chapters.robustness_study) without the notebook: a
tiny study on the tiny demo data set (6 maps, 3 replicates, scale / blur / flattened populations),
and the table steps on hand-made inputs, each against a float64 recomputation or a closed form."""
import math

import numpy as np
import pandas as pd
import pytest

from helpers.pipeline.chapters import robustness_study as rstudy
from helpers.pipeline.robustness import DEGRADATIONS

N_REP = 3
SWEEP = {"scale": [2.0], "blur": [400.0], "pop_flatten": [0.5]}


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """The chapter's computations in the notebook's order on the tiny data set."""
    out = tmp_path_factory.mktemp("robustness_results")
    setup = rstudy.prepare(tiny_data, out, 5.7, n_maps=6, base_snr=2.0, seed=0, gt_stride=2,
                           degradations=list(SWEEP), levels=SWEEP, sw_directions=4, transport_gt_maps=0,
                           box_ds=12, rank=2, n_pool=3)
    scores = rstudy.score_sets(setup, N_REP, image_metrics=True, image_box=12)
    img_rows, deltas = rstudy.image_responses(tiny_data, scores, n_images=10, image_box=12, n_directions=8,
                                              n_inplane=4, seed=0)
    responses, levels, summary = rstudy.write_responses(out, scores.rows, img_rows)
    return dict(out=out, setup=setup, scores=scores, img_rows=img_rows, deltas=deltas, responses=responses,
                levels=levels, summary=summary)


def _values(rows, metric, name):
    r = pd.DataFrame(rows)
    r = r[(r.metric == metric) & (r.degradation == name)].sort_values("replicate")
    return r.value.to_numpy(float)


def test_prepare_and_jobs(run):
    """The sweep and the job list; the base's populations are fractions; an unknown name refused."""
    s = run["setup"]
    assert s.names == list(SWEEP) and s.sweep == {k: tuple(v) for k, v in SWEEP.items()}
    assert s.jobs[0][0] == "none" and math.isnan(s.jobs[0][1])
    assert [rstudy.key(*j) for j in s.jobs[1:]] == ["scale|2", "blur|400", "pop_flatten|0.5"]
    assert len(s.scored) == 12 and np.all(np.diff(s.gt.pc1[s.scored]) != 0)
    with pytest.raises(ValueError, match="unknown degradation"):
        rstudy.prepare("unused", "unused", 1.0, degradations=["nope"])


def test_score_sets_closed_forms(run):
    """Scale: Pearson correlation and FSC resolution unchanged (closed form: both scale-free);
    blur 400 Å²: the correlation falls; flattened populations: the base's map metrics copied, the true KL
    equal to Σ p log(p/q) with q = (1 − a) p + a/n recomputed in float64."""
    rows, s = run["scores"].rows, run["setup"]
    per_set = pd.DataFrame(rows).groupby(["degradation", "replicate"]).size()
    assert per_set.nunique() == 1 and len(per_set) == 4 * N_REP
    base_corr = _values(rows, "corr", "none")
    assert len(base_corr) == N_REP and np.all(base_corr > 0)
    np.testing.assert_allclose(_values(rows, "corr", "scale"), base_corr, rtol=1e-5)
    np.testing.assert_allclose(_values(rows, "resolution_A", "scale"), _values(rows, "resolution_A", "none"),
                               rtol=1e-5)
    assert np.all(_values(rows, "corr", "blur") < base_corr)
    for m in ("l2", "corr", "resolution_A", "pcv_gt_captured"):
        np.testing.assert_array_equal(_values(rows, m, "pop_flatten"), _values(rows, m, "none"))
    p = np.asarray(s.study.pops, np.float64)
    q = 0.5 * p + 0.5 / len(p)
    kl = float(np.sum(p * np.log(p / q)))
    assert run["scores"].kl_true["pop_flatten|0.5"] == pytest.approx(kl, rel=1e-12, abs=0)
    kt = pd.DataFrame(rows).query("degradation == 'pop_flatten'").kl_true
    np.testing.assert_allclose(kt, kl, rtol=1e-12)


def test_image_responses(run):
    """Base against itself: 0 nats with 0 error (closed form); flattened populations reuse the
    base's maps, so their best CC is the base's; the log-likelihood's value and bootstrap error
    recomputed from the per-image changes with the chapter's bootstrap (rng [seed, 4], 200 × M)."""
    img = pd.DataFrame(run["img_rows"]).set_index(["degradation", "metric"])
    assert img.loc[("none", "loglik_per_image"), "value"] == 0.0
    assert img.loc[("none", "loglik_per_image"), "err"] == 0.0
    assert img.loc[("pop_flatten", "best_cc"), "value"] == img.loc[("none", "best_cc"), "value"]
    d = np.asarray(run["deltas"]["pop_flatten|0.5"], np.float64)
    M = len(d)
    assert M == 10 and img.loc[("pop_flatten", "loglik_per_image"), "n_images"] == M
    boot = np.random.default_rng([0, 4]).integers(0, M, (200, M))
    row = img.loc[("pop_flatten", "loglik_per_image")]
    assert row.value == pytest.approx(d.mean(), rel=1e-12)
    assert row.err == pytest.approx(np.std([d[b].mean() for b in boot]), rel=1e-9)
    assert row.images_needed == pytest.approx(max(1.0, (2 * d.std(ddof=1) / abs(d.mean())) ** 2), rel=1e-12)
    assert row.kl_true == run["scores"].kl_true["pop_flatten|0.5"]


def test_write_responses(run):
    """The three CSVs written as returned; each level's change from the base in levels.csv is the
    mean paired difference over the replicates (numpy); summary's family from the catalogue."""
    from helpers.core import catalogue

    out, responses = run["out"], run["responses"]
    assert len(responses) == len(run["scores"].rows) + len(run["img_rows"])
    for name, df in (("responses", responses), ("levels", run["levels"]), ("summary", run["summary"])):
        back = pd.read_csv(out / "robustness" / f"{name}.csv")
        assert len(back) == len(df)
    lv = run["levels"].set_index(["degradation", "metric"])
    diff = _values(run["scores"].rows, "corr", "blur") - _values(run["scores"].rows, "corr", "none")
    assert lv.loc[("blur", "corr"), "diff"] == pytest.approx(diff.mean(), rel=1e-9)
    s = run["summary"]
    assert (s.family == s.metric.map(lambda m: catalogue.METRICS[m].family)).all()


def test_write_responses_without_images(tmp_path):
    """No image rows: ``err`` is added, nan throughout."""
    rows = [{"degradation": d, "level": lv, "replicate": r, "metric": "l2", "value": v + r * 0.01, "kl_true": np.nan}
            for r in range(3) for d, lv, v in (("none", np.nan, 1.0), ("blur", 100.0, 1.5))]
    responses, levels, summary = rstudy.write_responses(tmp_path, rows, [])
    assert responses.err.isna().all() and (tmp_path / "robustness" / "responses.csv").is_file()
    assert levels.set_index("metric").loc["l2", "diff"] == pytest.approx(0.5, rel=1e-12)


def test_image_count_and_worst(tmp_path):
    """Per set: −mean, sd (ddof 1), (2 sd / |mean|)² images and the subset check recomputed in
    float64 with the same generator; the most severe level kept, invariant defects dropped."""
    rng = np.random.default_rng(7)
    deltas = {"none": np.zeros(40), "blur|25": rng.normal(-0.3, 1.0, 40), "blur|400": rng.normal(-2.0, 1.0, 40),
              "scale|2": rng.normal(0.0, 1.0, 40)}
    ic = rstudy.image_count(tmp_path, deltas, seed=3)
    row = ic.set_index("set").loc["blur|400"]
    d = deltas["blur|400"]
    assert row.mean_loss_per_image == pytest.approx(-d.mean(), rel=1e-12)
    assert row.sd == pytest.approx(np.sqrt(np.sum((d - d.mean()) ** 2) / 39), rel=1e-12)
    need = max(1.0, (2 * row.sd / abs(d.mean())) ** 2)
    assert row.images_needed == pytest.approx(need, rel=1e-12)
    for k, r in ic.set_index("set").iterrows():  # every set, each its own 200 draws of the generator seeded 3
        n = int(min(max(r.images_needed, 2), 40))
        x = deltas[k][np.random.default_rng(3).integers(0, 40, (200, n))]
        check = np.mean(x.mean(1) < -2 * x.std(1, ddof=1) / np.sqrt(n))
        assert r.check_fraction == pytest.approx(check, abs=1e-12), k
    assert 0 < ic.check_fraction.min() < 1  # a fraction the seed can change
    assert pd.read_csv(tmp_path / "robustness" / "image_count.csv").shape == ic.shape
    worst = rstudy.worst_levels(ic, ["blur", "scale"])
    assert list(worst.index) == ["blur"] and worst.level.iloc[0] == 400.0
    assert rstudy.image_count(tmp_path / "none", {}) is None


def test_grid_and_headline(tmp_path):
    """Metrics shown in the catalogue's order, the verdict grid by name, the headline's counts."""
    summary = pd.DataFrame({
        "degradation": ["blur", "blur", "scale", "scale", "blur"],
        "metric": ["l2", "corr", "l2", "corr", "bioem"],
        "verdict": ["detects", "blind", "invariant", "not invariant", "not measured"],
        "threshold": [100.0, np.nan, np.nan, np.nan, np.nan],
        "expect": ["detect", "detect", "invariant", "invariant", "detect"]})
    metrics = rstudy.shown_metrics(summary)
    assert metrics == [m for m in ("l2", "corr") if m in metrics] and set(metrics) == {"l2", "corr"}
    mat, thr = rstudy.verdict_grid(summary, ["scale", "blur"], metrics)
    assert mat.loc["scale", "corr"] == "not invariant" and thr.loc["blur", "l2"] == 100.0
    assert list(mat.index) == ["scale", "blur"]
    per_metric = pd.DataFrame({"metric": ["L2", "correlation"], "detects": [1, 0]})
    S = summary[summary.verdict != "not measured"]
    text = rstudy.write_headline(tmp_path, S, per_metric, ["blur", "scale"])
    n_detect = sum(DEGRADATIONS[d].expect == "detect" for d in ["blur", "scale"])
    assert text == ("Damaging one GT-derived submission in 2 controlled ways (chapter 7): L2 detects the most "
                    f"defects (1 of {n_detect}), correlation the fewest (0); 1 metric × change pairs respond to a "
                    "change that should not matter.\n")
    assert (tmp_path / "robustness" / "headline.md").read_text() == text


def test_figures(run):
    """The chapter's figures draw from the study's tables (report layer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from helpers.report import figures_robustness as figs

    names, summary = run["setup"].names, run["summary"]
    metrics = rstudy.shown_metrics(summary)
    fig = figs.verdict_matrix(*rstudy.verdict_grid(summary, names, metrics), names, metrics)
    assert len(fig.axes[0].get_yticklabels()) == len(names)
    fig2 = figs.response_curves(run["levels"], "corr", names)
    assert sum(a.get_visible() for a in fig2.axes) == len(names)
    ic = rstudy.image_count(run["out"], run["deltas"])
    fig3 = figs.images_needed(rstudy.worst_levels(ic, names), len(run["deltas"]["none"]))
    assert "images" in fig3.axes[0].get_xlabel()
    plt.close("all")


def test_study_box_and_no_images(tiny_data, tmp_path):
    """At a coarser study box the GT is resampled into a scratch memory map (voxel 5.7 × 24 / 16 Å)
    that :meth:`Setup.close` removes; without image metrics no image set is kept and
    :func:`image_responses` returns nothing."""
    setup = rstudy.prepare(tiny_data, tmp_path, 5.7, n_maps=4, gt_stride=3, study_box=16,
                           degradations=["pop_flatten"], levels={"pop_flatten": [1.0]}, sw_directions=0,
                           transport_gt_maps=0, box_ds=8, rank=2, n_pool=2)
    assert setup.voxel_size == pytest.approx(5.7 * 24 / 16, rel=1e-12) and setup.G.shape[-1] == 16
    assert rstudy.describe(setup, 1).startswith("study at 16³ (8.550 Å voxels, Nyquist 17.1 Å) instead of 24³")
    assert len(list(tmp_path.glob(".scratch-*"))) == 1
    scores = rstudy.score_sets(setup, 1, image_metrics=False)
    assert scores.image_sets == {} and rstudy.image_responses(tiny_data, scores) == ([], {})
    res = pd.DataFrame(scores.rows).query("metric == 'resolution_A'").value
    assert (res >= 2 * 5.7 * 24 / 16 - 1e-6).all()  # no finer than the study grid's Nyquist
    setup.close()
    assert not list(tmp_path.glob(".scratch-*"))
