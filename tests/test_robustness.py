"""The robustness chapter's building blocks (helpers.pipeline.robustness) against closed forms and second
computations, and the intensity-offset invariances the chapter found missing."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import blob_volume
from helpers.kernels import geometry, image_metrics, transport
from helpers.core import catalogue
from helpers.pipeline import robustness as rb
from helpers.pipeline import robustness_scores as rs
from helpers.kernels.distribution import kl
from helpers.kernels import volume_metrics as vm


def _blobs(n=24, count=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        spots = [(tuple(rng.uniform(-5, 5, 3)), rng.uniform(0.5, 1.5)) for _ in range(4)]
        out.append(blob_volume(n, spots))
    return np.stack(out).astype(np.float32)


def test_fourier_shift_integer_is_a_roll_and_fractional_shifts_compose():
    x = _blobs(count=2)
    got = rb.fourier_shift(x, (2, -1, 3)).numpy()  # (x, y, z) voxels; array axes (z, y, x)
    np.testing.assert_allclose(got, np.roll(x, (3, -1, 2), axis=(1, 2, 3)), atol=1e-5)
    back = rb.fourier_shift(rb.fourier_shift(x, (0.3, 0.7, -0.4)), (-0.3, -0.7, 0.4)).numpy()
    np.testing.assert_allclose(back, x, atol=1e-4)  # only the Nyquist plane is not invertible


def test_oversampled_rotation_loses_less_than_plain_trilinear_and_rotates_the_right_way():
    x = _blobs(n=32, count=1, seed=2)
    R = geometry.axis_angle_to_matrix([0.3, -0.5, 0.8], 7.0)
    plain = geometry.rotate_volume(geometry.rotate_volume(x, R), R.T).numpy()
    over = rb.rotate_oversampled(rb.rotate_oversampled(x, R), R.T).numpy()
    err_plain, err_over = np.abs(plain - x).max(), np.abs(over - x).max()
    assert err_over < 0.5 * err_plain, (err_over, err_plain)
    # one blob at p moves to R p (active rotation, (x, y, z) about voxel N//2)
    p = np.array([6.0, -2.0, 3.0])
    one = blob_volume(32, [(tuple(p), 1.0)])[None].astype(np.float32)
    rot = rb.rotate_oversampled(one, R).numpy()[0].clip(0)
    c = np.arange(32) - 16
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    com = np.array([(rot * a).sum() for a in (xx, yy, zz)]) / rot.sum()
    np.testing.assert_allclose(com, R @ p, atol=0.1)


def test_population_variants_and_their_kl():
    p = np.array([0.1, 0.2, 0.4, 0.2, 0.1])
    assert kl(p, p) == 0.0
    q = np.full(5, 0.2)
    np.testing.assert_allclose(kl(p, q), float(np.sum(p * np.log(p / q))))
    np.testing.assert_allclose(rb.population_variant("pop_flatten", 1.0, p, None, None), q)
    np.testing.assert_allclose(rb.population_variant("pop_flatten", 0.5, p, None, None), (p + q) / 2)
    # shifted by one map: each map gets the population of the map before it (the first keeps its own)
    np.testing.assert_allclose(rb.population_variant("pop_shift", 1, p, None, None),
                               np.array([0.1, 0.1, 0.2, 0.4, 0.2]) / 1.0)
    pc1 = np.linspace(-1, 1, 41)
    p3 = rb.three_gaussian_populations(pc1, -1, 1)
    np.testing.assert_allclose(rb.population_variant("mode_drop", 0.0, p3, pc1, (-1, 1)), p3, rtol=1e-12)
    gone = rb.population_variant("mode_drop", 1.0, p3, pc1, (-1, 1))
    np.testing.assert_allclose(gone, rb.three_gaussian_populations(pc1, -1, 1, modes=(1.0, 0.0, 1.0)), rtol=1e-9)
    kls = [kl(p3, rb.population_variant("mode_drop", a, p3, pc1, (-1, 1))) for a in (0.25, 0.5, 0.75)]
    assert kls[0] < kls[1] < kls[2]


@pytest.fixture(scope="module")
def study():
    n_gt, N = 24, 16
    rng = np.random.default_rng(0)
    pc1 = np.linspace(-1, 1, n_gt)
    maps = np.stack([blob_volume(N, [((3 * t, 0, 0), 1.0), ((-2, 2, 0), 0.8)]) for t in pc1]).astype(np.float32)
    mask = (blob_volume(N, [((0, 0, 0), 1.0)], sigma=5.0) > 0.05).astype(np.float32)
    pops = rng.uniform(0.5, 1.5, n_gt)
    return rb.Study(maps, pops / pops.sum(), pc1, mask, 2.0, n_maps=8, base_snr=2.0, seed=1)


def test_study_noise_scale_offset_and_set_edits(study):
    sig = study.signal
    noisy, p, _ = study.base(0)
    noise = noisy - sig
    snr = rb.masked_variance(sig, study.mask) / rb.masked_variance(noise, study.mask)
    np.testing.assert_allclose(snr, 2.0, rtol=0.35)  # 8 maps, finite voxel count
    more, *_ = study.make("noise", 0.5, 0)
    snr2 = rb.masked_variance(sig, study.mask) / rb.masked_variance(more - sig, study.mask)
    np.testing.assert_allclose(np.median(snr2), 0.5, rtol=0.3)
    np.testing.assert_allclose(study.make("scale", 10.0, 0)[0], 10 * noisy, rtol=1e-6)
    off = study.make("offset", 1.0, 0)[0] - noisy
    np.testing.assert_allclose(off, math.sqrt(study.signal_var.mean()), rtol=1e-4)
    m, q, pc, _ = study.make("missing", 0.25, 0)
    assert len(m) == 6 and np.isclose(q.sum(), 1) and pc.max() < study.pc1.max()
    assert len(study.make("n_maps", 4, 0)[0]) == 4
    sm, sq, spc, extra = study.make("shuffle", 1, 0)
    perm = extra["permutation"]
    np.testing.assert_array_equal(sm, noisy[perm])  # maps and populations moved together
    np.testing.assert_array_equal(sq, p[perm])
    # the noise realisation is the replicate's: another replicate differs, the same one repeats
    assert not np.allclose(study.base(1)[0], noisy)
    np.testing.assert_array_equal(study.base(0)[0], noisy)
    blur = study.make("blur", 100.0, 0)[0]
    np.testing.assert_allclose(blur - noise, study.degraded_signal("blur", 100.0)[0], atol=1e-5)  # before the noise
    q_mode = study.make("mode_drop", 0.5, 0)
    np.testing.assert_array_equal(q_mode[0], noisy)
    assert q_mode[3]["kl_true"] > 0


def _responses(table):
    """Long responses from {degradation: {level: [values over replicates]}} for one metric 'm'."""
    rows = []
    for d, lv in table.items():
        for level, vals in lv.items():
            rows += [{"degradation": d, "level": level, "replicate": r, "metric": "m", "value": v}
                     for r, v in enumerate(vals)]
    return pd.DataFrame(rows)


def _paired_table(cells, n_rep=3, seed=0, sd=0.1):
    """Long responses for one metric 'm': {degradation: {level: shift}}; replicate r of every level
    shares the replicate effect u_r with the base (the study's shared noise draw), plus its own
    N(0, sd) noise."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1.0, n_rep)
    rows = [{"degradation": "none", "level": np.nan, "replicate": r, "metric": "m", "value": 1 + u[r]}
            for r in range(n_rep)]
    for d, lv in cells.items():
        for level, shift in lv.items():
            rows += [{"degradation": d, "level": level, "replicate": r, "metric": "m",
                      "value": 1 + u[r] + shift + rng.normal(0, sd)} for r in range(n_rep)]
    return pd.DataFrame(rows)


def _holm_loop(p):
    """Holm's adjusted p-values by the textbook loop (independent of helpers.kernels.verdicts.holm)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, running = [0.0] * m, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p[i]))
        adj[i] = running
    return np.array(adj)


def test_level_tests_are_paired_t_tests_with_holm_in_severity_order():
    """Each level against the base: scipy's paired t-test (ttest_rel), Holm-adjusted over the
    cell by the textbook loop; levels ordered by severity whatever the row order (noise: lower
    SNR is worse; fewer maps are worse; a scale either way from 1)."""
    from scipy.stats import ttest_rel
    res = _paired_table({"blur": {400.0: 0.5, 25.0: 0.0, 100.0: 0.2}, "noise": {0.25: 0.4, 1.0: 0.1},
                         "n_maps": {5.0: 0.3, 40.0: 0.0, 10.0: 0.1}, "scale": {100.0: 0.0, 0.01: 0.0}},
                        n_rep=5, seed=1, sd=0.05)
    lt = rb.level_tests(res, {"m": "low"})
    base = res[res.degradation == "none"].value.to_numpy()
    for d in ("blur", "noise", "n_maps", "scale"):
        c = lt[lt.degradation == d].sort_values("severity_rank")
        want = {"blur": [25.0, 100.0, 400.0], "noise": [1.0, 0.25], "n_maps": [40.0, 10.0, 5.0],
                "scale": [0.01, 100.0]}[d]          # |log 100| = |log 0.01|: equal severity, by value
        assert c.level.tolist() == want, d
        ps = []
        for lv, row in zip(c.level, c.itertuples()):
            x = res[(res.degradation == d) & (res.level == lv)].value.to_numpy()
            t = ttest_rel(x, base)
            np.testing.assert_allclose(row.p, t.pvalue, rtol=1e-10)
            np.testing.assert_allclose(row.stat, t.statistic, rtol=1e-10)
            np.testing.assert_allclose(row.diff, (x - base).mean(), rtol=1e-12)
            ps.append(t.pvalue)
        np.testing.assert_allclose(c.p_holm, _holm_loop(ps), rtol=1e-12)
        # the |t| each level needed at its Holm step (what the chapter's figure draws): scipy's quantile
        from scipy.stats import t as student
        step = np.argsort(np.argsort(ps, kind="stable"), kind="stable")
        np.testing.assert_allclose(c.crit, student.isf(0.05 / (len(ps) - step) / 2, 4), rtol=1e-9)
        assert (c.detected == ((c.p_holm <= 0.05) & (c["diff"].abs() > c.floor))).all()


def test_classify_verdicts_and_thresholds():
    """Verdicts from paired designs: a blur whose shift grows (detects, threshold at the first
    real shift), a rotation that changes nothing (blind), noise whose two levels are equal
    (saturates), sharpening that lowers a lower-is-better metric (wrong way), scale unchanged
    (invariant) and an offset that moves it (not invariant); a "higher is better" metric turns
    the blur into a wrong way."""
    cells = {"blur": {25.0: 0.0, 100.0: 2.0, 400.0: 5.0}, "rotation": {0.5: 0.0, 2.0: 0.0, 10.0: 0.0},
             "noise": {1.0: 3.0, 0.25: 3.0}, "sharpen": {-25.0: -1.0, -100.0: -1.0},
             "scale": {0.01: 0.0, 100.0: 0.0}, "offset": {0.1: 0.0, 10.0: 2.0}}
    res = _paired_table(cells, n_rep=5, seed=2, sd=0.05)
    s = rb.classify(res, {"m": "low"}).set_index("degradation")
    assert s.loc["blur", "verdict"] == "detects" and s.loc["blur", "threshold"] == 100.0
    assert s.loc["rotation", "verdict"] == "blind" and np.isnan(s.loc["rotation", "threshold"])
    assert s.loc["noise", "verdict"] == "saturates" and s.loc["noise", "threshold"] == 1.0
    assert s.loc["sharpen", "verdict"] == "wrong way"
    assert s.loc["scale", "verdict"] == "invariant" and s.loc["offset", "verdict"] == "not invariant"
    blur = res[(res.degradation == "blur") & (res.level == 400.0)].value.to_numpy()
    np.testing.assert_allclose(s.loc["blur", "change_max"], (blur - res[res.degradation == "none"].value.to_numpy()).mean())
    assert s.loc["hand", "verdict"] == "not measured"
    s2 = rb.classify(res, {"m": "high"}).set_index("degradation")
    assert s2.loc["blur", "verdict"] == "wrong way" and s2.loc["sharpen", "verdict"] == "saturates"


def test_classify_refuses_fewer_than_three_replicates():
    res = _paired_table({"blur": {25.0: 1.0}}, n_rep=2)
    with pytest.raises(ValueError, match="n_replicates ≥ 3"):
        rb.classify(res, {"m": "low"})


def _null_table(rng, n_rep=3, n_img=60):
    """One study on pure noise at the default settings: every degradation's default levels, every
    metric; map metrics over n_rep replicates sharing their noise draw with the base, the image
    metrics on one replicate with a paired standard error (as chapter 7 scores them)."""
    rows = []
    for m in catalogue.directions():
        image = catalogue.FAMILY[m] == "image"
        u = rng.normal(0, 1, n_rep)
        sd = rng.uniform(0.05, 2.0)
        for d, dd in [("none", None)] + list(rb.DEGRADATIONS.items()):
            for lv in [np.nan] if dd is None else dd.levels:
                if image:
                    rows.append({"degradation": d, "level": lv, "replicate": 0, "metric": m,
                                 "value": 0.0 if dd is None else rng.normal(0, sd), "se_diff": sd,
                                 "n_images": n_img, "images_needed": np.inf})
                else:
                    rows += [{"degradation": d, "level": lv, "replicate": r, "metric": m,
                              "value": 10 + u[r] + rng.normal(0, sd)} for r in range(n_rep)]
    return pd.DataFrame(rows)


def test_on_pure_noise_at_most_five_percent_of_cells_are_called():
    """200 null tables (every level drawn like the base) at the default settings: the fraction of
    degradation × metric cells called anything but blind / invariant stays ≤ 5 %; each cell's
    levels are tested with Holm (without it, a cell of 3–5 levels calls ~10–20 %)."""
    rng = np.random.default_rng(7)
    called = total = 0
    for _ in range(200):
        s = rb.classify(_null_table(rng), catalogue.directions())
        s = s[s.verdict != "not measured"]
        called += int((~s.verdict.isin(["blind", "invariant"])).sum())
        total += len(s)
    assert total == 200 * len(rb.DEGRADATIONS) * len(catalogue.directions())
    assert called / total <= 0.05, called / total


def test_underpowered_when_fewer_images_than_needed():
    """An image metric with no detected level reads ``underpowered`` when every level needs more
    images than were scored, ``blind`` when one needs fewer (or none can be resolved)."""
    rows = [{"degradation": "none", "level": np.nan, "replicate": 0, "metric": "loglik_per_image", "value": 0.0,
             "se_diff": 0.1, "n_images": 60, "images_needed": np.nan}]
    rows += [{"degradation": "hand", "level": 1.0, "replicate": 0, "metric": "loglik_per_image", "value": -0.05,
              "se_diff": 0.1, "n_images": 60, "images_needed": 546.0}]
    res = pd.DataFrame(rows)
    s = rb.classify(res, {"loglik_per_image": "high"}).set_index("degradation")
    assert s.loc["hand", "verdict"] == "underpowered"
    assert s.loc["hand", "n_images"] == 60 and s.loc["hand", "images_needed"] == 546
    res.loc[1, "images_needed"] = 40.0
    assert rb.classify(res, {"loglik_per_image": "high"}).set_index("degradation").loc["hand", "verdict"] == "blind"


def test_spread_subset_ignores_the_submissions_map_order():
    rng = np.random.default_rng(3)
    cost = rng.uniform(size=(30, 20))
    pc1 = np.sort(rng.uniform(-1, 1, 30))
    perm = rng.permutation(20)
    a = rs.spread_subset(cost, pc1, 6)
    b = rs.spread_subset(cost[:, perm], pc1, 6)
    assert sorted(perm[b].tolist()) == sorted(a.tolist())  # the same maps, wherever they sit
    np.testing.assert_array_equal(rs.spread_subset(cost, pc1, 25), np.arange(20))


def test_images_to_separate_matches_the_normal_approximation_and_the_resampled_curve():
    rng = np.random.default_rng(4)
    d = rng.normal(-0.5, 2.0, 4000)
    n = rs.images_to_separate(d)
    np.testing.assert_allclose(n, (2 * d.std(ddof=1) / 0.5) ** 2 * (0.5 / abs(d.mean())) ** 2, rtol=1e-9)
    curve = rs.separation_curve(d, [5, int(n), 20 * int(n)], n_draws=400)
    assert curve[0] < 0.3 and 0.3 < curve[1] < 0.7 and curve[2] > 0.95  # 50 % at the estimate
    assert rs.images_to_separate(np.zeros(10)) == math.inf


# ---------------------------------------------------------------- offset invariances found by the chapter

def _gt_and_sub():
    N = 20
    mask = (blob_volume(N, [((0, 0, 0), 1.0)], sigma=5.0) > 0.05).astype(np.float32)
    gt = np.stack([blob_volume(N, [((t, 0, 0), 1.0), ((-2, 2, 1), 0.7)]) for t in (-2, 0, 2)]).astype(np.float32)
    sub = gt[[0, 2]] + 0.01 * np.random.default_rng(5).standard_normal((2, N, N, N)).astype(np.float32)
    return gt, sub, mask


def test_sliced_wasserstein_ignores_an_intensity_offset_and_scale_with_a_mask():
    gt, sub, mask = _gt_and_sub()
    ref = vm.sliced_wasserstein(gt, sub, 2.0, 16, mask=mask)
    np.testing.assert_allclose(vm.sliced_wasserstein(gt, 5 * sub + 0.3, 2.0, 16, mask=mask), ref, rtol=1e-4, atol=1e-5)
    assert np.abs(vm.sliced_wasserstein(gt, sub + 0.3, 2.0, 16) - vm.sliced_wasserstein(gt, sub, 2.0, 16)).max() > 0.1


def test_point_clouds_ignore_an_intensity_offset_with_a_mask():
    _, sub, mask = _gt_and_sub()
    pos, w = transport.top_k_clouds(sub, 30, 2.0, mask=mask)
    pos2, w2 = transport.top_k_clouds(sub + 0.3, 30, 2.0, mask=mask)
    np.testing.assert_allclose(pos2, pos, atol=1e-9)
    np.testing.assert_allclose(w2, w, atol=1e-6)


def test_maps_on_the_image_grid_ignore_an_intensity_offset_with_a_mask():
    _, sub, mask = _gt_and_sub()
    a = image_metrics.maps_to_image_grid(sub, 10, mask).numpy()
    b = image_metrics.maps_to_image_grid(sub + 0.3, 10, mask).numpy()
    np.testing.assert_allclose(b, a, atol=1e-5)
    assert np.abs(image_metrics.maps_to_image_grid(sub + 0.3, 10).numpy() - image_metrics.maps_to_image_grid(sub, 10).numpy()).max() > 0.1


def test_image_scores_against_a_direct_float64_sum():
    """Per-image ensemble log-likelihood relative to the base, its bootstrap error and the
    median best CC, against a plain numpy computation (log of a weighted sum of likelihoods)."""
    rng = np.random.default_rng(6)
    M, L = 50, 4
    logp = rng.normal(-100, 3, (M, L))
    cc = rng.uniform(0, 1, (M, L))
    q, q0 = np.array([0.1, 0.2, 0.3, 0.4]), np.full(L, 0.25)
    base = np.log((np.exp(logp + 100) * q0).sum(1)) - 100
    boot = rng.integers(0, M, (30, M))
    s = rs.image_scores(logp, cc, q, base, boot)
    d = np.log((np.exp(logp + 100) * q).sum(1)) - 100 - base
    np.testing.assert_allclose(s["per_image_delta"], d, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s["loglik_per_image"], d.mean(), rtol=1e-10)
    np.testing.assert_allclose(s["loglik_per_image_err"], d[boot].mean(1).std(), rtol=1e-10)
    np.testing.assert_allclose(s["best_cc"], np.median(cc.max(1)))
    # paired with the base over the same resampled images: the std of the difference of medians
    base_cc = rng.uniform(0, 1, M)
    s = rs.image_scores(logp, cc, q, base, boot, base_cc)
    med = lambda x: np.array([np.median(x[b]) for b in boot])  # noqa: E731
    np.testing.assert_allclose(s["best_cc_se_diff"], np.std(med(cc.max(1)) - med(base_cc)), rtol=1e-10)
    np.testing.assert_allclose(s["loglik_per_image_se_diff"], d[boot].mean(1).std(), rtol=1e-10)
    dc = cc.max(1) - base_cc
    np.testing.assert_allclose(s["best_cc_images_needed"], (2 * dc.std(ddof=1) / abs(dc.mean())) ** 2, rtol=1e-10)
    assert s["n_images"] == M


def test_scorer_summaries_equal_the_per_metric_kernels(study):
    """Scorer.score (one fused GT pass, background subtracted once) against each chapter's own
    call on the same maps: distance_matrices per submission, the sliced Wasserstein distance,
    the PCA/PCV pipeline with equalised spectra, and the distribution metrics."""
    from helpers.kernels import distribution as dist
    from helpers.kernels import normalise, subspace

    G, mask = study.gt_maps, study.mask
    sc = rs.Scorer(G, study.gt_pops, study.gt_pc1, mask, 2.0, sw_directions=8, transport_gt_maps=0, box_ds=8,
                   rank=3, n_pool=2, dist_replicates=2)
    maps, q, _ = study.base(0)
    got = sc.score({"s": (maps, q)})["s"]
    r = vm.distance_matrices(G, maps, mask, ["l2", "corr", "bioem", "fsc", "res"], voxel_size=2.0)
    l2 = dist.distance_cost(r["l2"], "l2", int(r["n_voxels"]))
    np.testing.assert_allclose(got["resolution_A"], np.median(r["res"].min(0)), rtol=1e-6)
    np.testing.assert_allclose(got["l2"], np.median(l2.min(0)), rtol=1e-5)
    np.testing.assert_allclose(got["corr"], np.median(r["corr"].max(0)), rtol=1e-5)
    np.testing.assert_allclose(got["bioem"], np.median(r["bioem"].min(0)), rtol=1e-5)
    sw = vm.sliced_wasserstein(G, maps, 2.0, 8, mask=mask)
    np.testing.assert_allclose(got["sw_A"], np.median(sw.min(0)), rtol=1e-4)
    eq, _ = normalise.equalise_spectra({"GT": subspace.masked_downsample(G, mask, 8),
                                         "s": subspace.masked_downsample(maps, mask, 8)})
    pg, ps = (subspace.pca(subspace.prepare(eq[k]), 3) for k in ("GT", "s"))
    np.testing.assert_allclose(got["pcv_gt_captured"], 100 * subspace.pcv(pg, ps), rtol=1e-4)
    np.testing.assert_allclose(got["pcv_set_in_gt"], 100 * subspace.pcv(ps, pg), rtol=1e-4)
    reps = dist.evaluate(l2, study.gt_pops, study.gt_pc1, q, n_pool=2, n_replicates=2)
    np.testing.assert_allclose(got["emd_submitted"], np.mean([x["EMD_submitted"] for x in reps]), rtol=1e-6)
    np.testing.assert_allclose(got["kl_optimised"], np.mean([x["KL_pq_opt"] for x in reps]), rtol=1e-6, atol=1e-12)


def test_batch_fits_the_memory_budget():
    """Degraded sets per GT pass: 8 for the demo's 80 × 64³ sets, fewer for larger maps (80 × 96³
    in batches of 8 peaked at 9.95 GiB), never 0."""
    assert rs.batch_for(80, 64) == 8
    assert rs.batch_for(80, 96) == 2
    assert rs.batch_for(80, 224) == 1
    per_set = 4 * 80 * 96 ** 3 * 4
    assert rs.batch_for(80, 96) * per_set <= 3 * 2 ** 30 < (rs.batch_for(80, 96) + 1) * per_set


def test_the_map_browser_draws_one_titled_frame_per_map():
    """widgets.map_frames (chapters 1 and 8's browser): one PNG per requested map, each titled."""
    from helpers.report import widgets

    maps = np.random.default_rng(0).random((5, 8, 8, 8)).astype(np.float32)
    seen = []
    frames = widgets.map_frames(maps, 2.0, [0, 4], lambda k: seen.append(k) or f"map {k}", small=True)
    assert len(frames) == 2 and all(f[:8] == b"\x89PNG\r\n\x1a\n" for f in frames) and seen == [0, 1]
