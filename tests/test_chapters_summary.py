"""Chapter 8 without its notebook: helpers.pipeline.chapters.summary (and calibration.against_gt)
on a small synthetic results folder, the tables checked against independent float64
recomputations (explicit bootstrap loops, log Σ w·exp, the closed form of images_needed,
scipy's Spearman, bin counting by hand)."""
import json
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from helpers import io
from helpers.io.mapset import MapSet, slug
from helpers.pipeline import robustness
from helpers.pipeline.chapters import summary
from helpers.report import calibration

LABS = ("Alpha one", "Beta", "Gamma")  # Gamma: not scored by chapter 6
N_GT, M, NB, SEED = 5, 40, 30, 3


def _write_results(out):
    rng = np.random.default_rng(11)
    subs = {}
    for k, lab in enumerate(LABS):
        n = 3 + k
        pops = rng.random(n) + 0.1
        s = MapSet(maps=rng.random((n, 4, 4, 4)).astype(np.float32), populations=pops / pops.sum(), voxel_size=2.0,
                   label=lab, provenance={"method": "toy"} if lab == "Beta" else {})
        subs[lab] = str(s.save(out / "preprocessed" / f"{slug(lab)}.npz").relative_to(out))
        np.savez(out / "volume_metrics" / f"{slug(lab)}.npz", res=rng.uniform(5, 15, (N_GT, n)),
                 l2=rng.random((N_GT, n)))
        ll = rng.normal(-50 + k, 2.0, (M, n))
        np.savez(out / "image_metrics" / f"{slug(lab)}.npz", logp_integrated=ll, populations=pops / pops.sum(),
                 best_cc=rng.uniform(0.1, 0.9, (M, n)))
    done = {"status": "done", "labels": list(LABS)}
    (out / "manifest.json").write_text(json.dumps({"submissions": subs, "failures": [], "chapters": {
        "03_volume_metrics": done, "04_subspace": done, "05_distribution": done,
        "06_image_metrics": {"status": "done", "labels": list(LABS[:2])}}}))
    pd.DataFrame({"label": LABS, "best_res_median_A": [8.0, 9.0, 10.0], "best_res_p10_A": [6.0, 7.0, 8.0],
                  "nyquist_limited": [False, True, False], "native_nyquist_A": [4.0, 9.0, 4.0]}) \
        .to_csv(out / "volume_metrics/summary.csv", index=False)
    pd.DataFrame({"label": [LABS[0]], "pw_coverage_A": [3.5]}).to_csv(out / "volume_metrics/transport.csv", index=False)
    (out / "volume_metrics/transport").mkdir()
    np.savez(out / "volume_metrics/transport" / f"{slug(LABS[0])}.npz", pw=rng.uniform(1, 6, (N_GT + 2, 3)))
    names = ["GT", *LABS]
    pd.DataFrame(rng.uniform(10, 90, (4, 4)), index=names, columns=names).to_csv(out / "subspace/pcv.csv")
    pd.DataFrame({"label": LABS[:2], "gt_captured_std": [1.0, 2.0], "set_in_gt_std": [3.0, 4.0]}) \
        .to_csv(out / "subspace/pcv_bootstrap.csv", index=False)
    rows = [{"label": lab, "metric": met, "EMD_submitted": rng.random(), "EMD_opt": rng.random(),
             "KL_pq_submitted": rng.random()} for lab in LABS for met in ("l2", "corr") for _ in range(4)]
    pd.DataFrame(rows).to_csv(out / "distribution/replicates.csv", index=False)
    pd.DataFrame({"label": LABS, "median_best_cc": [0.5, 0.6, 0.7]}).to_csv(out / "image_metrics/summary.csv",
                                                                            index=False)
    gp = np.full(4, 0.25)
    np.savez(out / "image_metrics/gt_ensemble.npz", logp_integrated=rng.normal(-49, 2.0, (M, 4)), populations=gp)
    pd.DataFrame({"n_stack": [1000]}).to_csv(out / "image_metrics/power.csv", index=False)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("summary") / "results"
    for d in ("preprocessed", "volume_metrics", "image_metrics", "subspace", "distribution", "summary"):
        (out / d).mkdir(parents=True)
    _write_results(out)
    return out


@pytest.fixture(scope="module")
def scored(results):
    inp = summary.load_inputs(results, "l2")
    return inp, *summary.metric_table(results, inp, NB, SEED)


def _ll(z):
    """log Σ_l w_l exp(logp_il), float64, by the max-shift by hand."""
    lp = z["logp_integrated"] + np.log(z["populations"])[None]
    mx = lp.max(1, keepdims=True)
    return (mx + np.log(np.exp(lp - mx).sum(1, keepdims=True)))[:, 0]


def test_load_inputs(results):
    inp = summary.load_inputs(results, "l2")
    assert inp.labels == list(LABS[:2])
    assert inp.missing == {"Gamma": ["06_image_metrics"]}
    assert set(inp.rep.metric) == {"l2"} and len(inp.rep) == 12
    assert inp.pcv.loc["GT", "Beta"] != inp.pcv.loc["Beta", "GT"]


def test_metric_table_against_float64_loops(results, scored):
    inp, table, per_image, n = scored
    assert n == M and list(table.index) == list(LABS[:2])
    gt = np.load(results / "image_metrics/gt_ensemble.npz")
    boot = np.random.default_rng(SEED).integers(0, M, (NB, M))  # the first draw of default_rng(seed)
    pcv = pd.read_csv(results / "subspace/pcv.csv", index_col=0)
    rep = pd.read_csv(results / "distribution/replicates.csv")
    for lab in LABS[:2]:
        z = np.load(results / "image_metrics" / f"{slug(lab)}.npz")
        diff = _ll(z) - _ll(gt)
        assert table.loc[lab, "loglik_per_image"] == pytest.approx(diff.mean(), abs=1e-12)
        assert table.loc[lab, "loglik_per_image_err"] == pytest.approx(
            np.std([diff[b].mean() for b in boot]), rel=1e-12)
        cc = z["best_cc"].max(1)
        assert table.loc[lab, "best_cc_err"] == pytest.approx(np.std([np.median(cc[b]) for b in boot]), rel=1e-12)
        best = np.load(results / "volume_metrics" / f"{slug(lab)}.npz")["res"].min(0)
        idx = np.random.default_rng([SEED, len(best)]).integers(0, len(best), (NB, len(best)))
        assert table.loc[lab, "resolution_A_err"] == pytest.approx(
            np.std([np.median(best[i]) for i in idx]), rel=1e-12)
        emd = rep[(rep.label == lab) & (rep.metric == "l2")].EMD_submitted
        assert table.loc[lab, "emd_submitted"] == pytest.approx(statistics.fmean(emd), rel=1e-12)
        assert table.loc[lab, "emd_submitted_err"] == pytest.approx(statistics.stdev(emd), rel=1e-12)
        assert table.loc[lab, "pcv_gt_captured"] == pcv.loc["GT", lab]  # the GT's variance the set captures
        assert table.loc[lab, "pcv_set_in_gt"] == pcv.loc[lab, "GT"]
    pw = np.load(results / "volume_metrics/transport" / f"{slug(LABS[0])}.npz")["pw"]
    idx = np.random.default_rng([SEED, len(pw)]).integers(0, len(pw), (NB, len(pw)))
    assert table.loc[LABS[0], "pw_coverage_A_err"] == pytest.approx(
        np.std([pw[i].min(1).mean() for i in idx]), rel=1e-12)
    assert np.isnan(table.loc["Beta", "pw_coverage_A"])  # no transport for Beta
    assert table.loc["Beta", "pcv_gt_captured_err"] == 2.0 and table.loc["Beta", "pcv_set_in_gt_err"] == 4.0


def test_image_power_closed_form(results, scored):
    _, table, per_image, n = scored
    better = summary.directions(table)
    assert better["loglik_per_image"] == "high" and better["resolution_A"] == "low"
    power = summary.image_power(results, table, per_image, better, n)
    pairs = pd.read_csv(results / "summary/image_power_pairs.csv")
    assert list(pairs.columns[:3]) == ["metric", "better", "worse"]
    for m in ("loglik_per_image", "best_cc"):
        a, b = sorted(LABS[:2], key=lambda k: -table.loc[k, m])  # higher is better
        d = np.asarray(per_image[m][a], np.float64) - per_image[m][b]
        need = max(1.0, (2 * statistics.stdev(d) / abs(statistics.fmean(d))) ** 2)
        row = pairs[pairs.metric == m].iloc[0]
        assert (row.better, row.worse) == (a, b)
        assert row.images_needed == pytest.approx(need, rel=1e-12)
        assert power[m] == (M, pytest.approx(need, rel=1e-12))


def test_rank_inputs_ranks_and_tables(results, scored):
    inp, table, _, _ = scored
    better = summary.directions(table)
    values, errors, extra = summary.rank_inputs(table, better, inp.vol)
    assert list(values.columns) == list(better)
    assert values.loc["Beta", "kl_submitted"] == table.loc["Beta", "kl_submitted"]
    assert errors.loc["Beta", "pcv_set_in_gt"] == 4.0 and errors.loc["Beta", "pcv_gt_captured"] == 2.0
    assert list(extra.columns) == ["resolution_p10_A", "nyquist_limited", "native_nyquist_A"]
    assert extra.loc["Beta", "native_nyquist_A"] == 9.0 and extra.loc[LABS[0], "resolution_p10_A"] == 6.0
    board = values.join(errors.add_suffix("_err")).join(values.rank().add_prefix("rank_"))
    ranks, errs = summary.ranks_and_errors(board, better)
    assert ranks.loc["Beta", "emd_submitted"] == values.emd_submitted.rank()["Beta"]
    assert errs.loc["Beta", "kl_submitted"] == table.loc["Beta", "kl_submitted_err"]
    summary.write_tables(results, demo=errs)
    back = pd.read_csv(results / "summary/demo.csv", index_col="label")
    assert back.loc["Beta", "kl_submitted"] == pytest.approx(errs.loc["Beta", "kl_submitted"], rel=1e-15)
    summary.write_headline(results, "one line")
    assert (results / "summary/headline.md").read_text() == "one line\n"
    inp_subs = summary.load_inputs(results).subs
    assert summary.method_entries(values, inp_subs) == ["Beta"]
    assert summary.failures(results).empty


def test_rank_correlation_is_scipy_spearman(results):
    rng = np.random.default_rng(5)
    ranks = pd.DataFrame({"a": rng.permutation(6) + 1.0, "b": rng.permutation(6) + 1.0, "tie": np.full(6, 3.5),
                          "c": [1, 2, 2, 4, 5, 6.0]})
    rc = summary.rank_correlation(results, ranks)
    assert list(rc.columns) == ["a", "b", "c"]  # the metric that ties everyone is left out
    assert rc.loc["a", "c"] == pytest.approx(spearmanr(ranks.a, ranks.c).statistic, abs=1e-12)
    assert rc.loc["b", "a"] == pytest.approx(spearmanr(ranks.a, ranks.b).statistic, abs=1e-12)
    saved = pd.read_csv(results / "summary/rank_correlation.csv", index_col="metric")
    assert np.allclose(saved.to_numpy(), rc.to_numpy(), atol=1e-15)


def test_trust_table_counts(results, tmp_path):
    names = list(robustness.DEGRADATIONS)[:4]
    rows = [("resolution_A", names[0], "detect", "detects", 0.5), ("resolution_A", names[1], "detect", "blind", np.nan),
            ("resolution_A", names[2], "detect", "saturates", 2.0),
            ("resolution_A", names[3], "invariant", "not invariant", np.nan),
            ("best_cc", names[0], "detect", "not measured", np.nan), ("best_cc", names[1], "detect", "underpowered", 1.0)]
    (tmp_path / "robustness").mkdir()
    pd.DataFrame(rows, columns=["metric", "degradation", "expect", "verdict", "threshold"]) \
        .to_csv(tmp_path / "robustness/summary.csv", index=False)
    assert summary.trust_table(results, {"resolution_A": "low"}) is None  # chapter 7 not run there
    t = summary.trust_table(tmp_path, {"resolution_A": "low", "best_cc": "high", "kl_submitted": "low"})
    assert len(t) == 2  # kl_submitted has no row
    title = {d: robustness.DEGRADATIONS[d].title for d in names}
    res, cc = t.iloc[0], t.iloc[1]
    assert res.detects == "2 of 3" and cc.detects == "0 of 3"  # 3 degradations expected detected (measured)
    assert res["blind to / wrong way"] == title[names[1]] and res["not invariant to"] == title[names[3]]
    assert res["first sees (threshold)"].startswith(title[names[0]] + " (")
    assert cc["underpowered for"] == title[names[1]] and cc["first sees (threshold)"] == "—"


def test_population_profiles_by_hand(tiny_data, tmp_path):
    gtf = io.find_gt(tiny_data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], 5.7, check_finite=False)
    n_gt, n = len(gt.populations), 5
    closest = np.array([0, 3, 3, n_gt - 1, 7])
    l2 = np.ones((n_gt, n))
    l2[closest, np.arange(n)] = 0.0
    (tmp_path / "volume_metrics").mkdir()
    np.savez(tmp_path / "volume_metrics" / "s.npz", l2=l2)
    pops = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    sub = MapSet(maps=np.zeros((n, 2, 2, 2), np.float32), populations=pops, voxel_size=5.7, label="s")
    bins, gt_hist, hists = summary.population_profiles(tiny_data, tmp_path, {"s": sub}, ["s"], 5.7, n_bins=6)
    lo, hi = gt.pc1.min(), gt.pc1.max()
    assert bins[0] == lo and bins[-1] == hi and len(bins) == 7
    want, want_gt = np.zeros(6), np.zeros(6)
    for x, w in zip(gt.pc1[closest], pops):
        want[min(int((x - lo) / (hi - lo) * 6), 5)] += w
    for x, w in zip(gt.pc1, gt.populations):
        want_gt[min(int((x - lo) / (hi - lo) * 6), 5)] += w
    assert np.allclose(hists["s"], want, atol=1e-15) and np.allclose(gt_hist, want_gt, atol=1e-12)


def test_calibration_against_gt_is_spearman_of_gt_families():
    labs = list("abcdef")
    rng = np.random.default_rng(2)
    board = pd.DataFrame({"family_rank_volume": rng.permutation(6) + 1.0,
                          "family_rank_distribution": rng.permutation(6) + 1.0,
                          "family_rank_image": rng.permutation(6) + 1.0,
                          "resolution_A": rng.uniform(5, 10, 6), "emd_submitted": rng.random(6),
                          "loglik_per_image": rng.normal(0, 1, 6)}, index=labs)
    errors = pd.DataFrame({"resolution_A": np.full(6, 0.01), "emd_submitted": np.full(6, 1e-3),
                           "loglik_per_image": np.full(6, 1e-3)}, index=labs)
    better = {"resolution_A": "low", "emd_submitted": "low", "loglik_per_image": "high"}
    info = pd.DataFrame({"in_mean_rank": [True, True, True]}, index=list(better))
    fams = pd.DataFrame({"in_mean_rank": [True, True, True, False]}, index=["volume", "distribution", "image", "subspace"])
    cal, mis, gt_rank = calibration.against_gt(board, errors, better, info, fams, ["loglik_per_image", "best_cc"],
                                               n_boot=200, seed=0)
    want = (board.family_rank_volume + board.family_rank_distribution) / 2  # image left out of the GT rank
    assert np.allclose(gt_rank.to_numpy(), want.to_numpy(), atol=1e-15)
    assert list(cal.index) == ["loglik_per_image"]  # best_cc is not on this board
    assert cal.loc["loglik_per_image", "rho"] == pytest.approx(
        spearmanr(-want.to_numpy(), board.loglik_per_image).statistic, abs=1e-12)
    n_bad = sum((want[a] < want[b]) and (board.loglik_per_image[a] < board.loglik_per_image[b])
                for a in labs for b in labs)
    assert cal.loc["loglik_per_image", "misordered"] == n_bad == len(mis)
    assert cal.loc["loglik_per_image", "pairs"] == 15
