"""The robustness chapter's building blocks (helpers.robustness) against closed forms and second
computations, and the intensity-offset invariances the chapter found missing."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import blob_volume
from helpers import geometry, image_metrics, transport
from helpers import robustness as rb
from helpers.distribution import kl
from helpers import volume_metrics as vm


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


def test_classify_verdicts_and_thresholds():
    base = {np.nan: [1.0, 1.1, 0.9]}  # own noise: std 0.1
    res = _responses({"none": base,
                      "blur": {50.0: [1.05, 1.15, 0.95], 100.0: [1.6, 1.7, 1.5], 200.0: [3.0, 3.1, 2.9],
                               400.0: [6.0, 6.1, 5.9]},
                      "rotation": {1.0: [1.0, 1.1, 0.9], 2.0: [1.1, 1.0, 0.9], 5.0: [0.95, 1.05, 1.0],
                                   10.0: [1.0, 1.0, 1.1], 20.0: [1.1, 1.0, 0.9]},
                      "noise": {1.0: [3.0, 3.1, 2.9], 0.3: [4.0, 4.1, 3.9], 0.1: [4.05, 4.0, 4.1]},
                      "sharpen": {-25.0: [0.4, 0.5, 0.3], -50.0: [0.2, 0.3, 0.1], -100.0: [0.1, 0.0, 0.2]},
                      "scale": {0.01: [1.0, 1.1, 0.9], 100.0: [1.0, 1.1, 0.9]},
                      "offset": {0.1: [1.0, 1.1, 0.9], 10.0: [2.0, 2.1, 1.9]}})
    s = rb.classify(res, {"m": "low"}).set_index("degradation")
    assert s.loc["blur", "verdict"] == "detects" and s.loc["blur", "threshold"] == 100.0
    assert s.loc["rotation", "verdict"] == "blind" and np.isnan(s.loc["rotation", "threshold"])
    assert s.loc["noise", "verdict"] == "saturates" and s.loc["noise", "threshold"] == 1.0
    assert s.loc["sharpen", "verdict"] == "wrong way"
    assert s.loc["scale", "verdict"] == "invariant" and s.loc["offset", "verdict"] == "not invariant"
    np.testing.assert_allclose(s.loc["blur", "change_max"], 5.0)
    np.testing.assert_allclose(s.loc["blur", "change_max_noise"], 50.0)
    assert s.loc["hand", "verdict"] == "not measured"
    # the same values for a "higher is better" metric: blur now looks like an improvement
    s2 = rb.classify(res, {"m": "high"}).set_index("degradation")
    assert s2.loc["blur", "verdict"] == "wrong way" and s2.loc["sharpen", "verdict"] == "saturates"


def test_spread_subset_ignores_the_submissions_map_order():
    rng = np.random.default_rng(3)
    cost = rng.uniform(size=(30, 20))
    pc1 = np.sort(rng.uniform(-1, 1, 30))
    perm = rng.permutation(20)
    a = rb.spread_subset(cost, pc1, 6)
    b = rb.spread_subset(cost[:, perm], pc1, 6)
    assert sorted(perm[b].tolist()) == sorted(a.tolist())  # the same maps, wherever they sit
    np.testing.assert_array_equal(rb.spread_subset(cost, pc1, 25), np.arange(20))


def test_images_to_separate_matches_the_normal_approximation_and_the_resampled_curve():
    rng = np.random.default_rng(4)
    d = rng.normal(-0.5, 2.0, 4000)
    n = rb.images_to_separate(d)
    np.testing.assert_allclose(n, (2 * d.std(ddof=1) / 0.5) ** 2 * (0.5 / abs(d.mean())) ** 2, rtol=1e-9)
    curve = rb.separation_curve(d, [5, int(n), 20 * int(n)], n_draws=400)
    assert curve[0] < 0.3 and 0.3 < curve[1] < 0.7 and curve[2] > 0.95  # 50 % at the estimate
    assert rb.images_to_separate(np.zeros(10)) == math.inf


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
    s = rb.image_scores(logp, cc, q, base, boot)
    d = np.log((np.exp(logp + 100) * q).sum(1)) - 100 - base
    np.testing.assert_allclose(s["per_image_delta"], d, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(s["loglik_per_image"], d.mean(), rtol=1e-10)
    np.testing.assert_allclose(s["loglik_per_image_err"], d[boot].mean(1).std(), rtol=1e-10)
    np.testing.assert_allclose(s["best_cc"], np.median(cc.max(1)))


def test_scorer_summaries_equal_the_per_metric_kernels(study):
    """Scorer.score (one fused GT pass, background subtracted once) against each chapter's own
    call on the same maps: distance_matrices per submission, the sliced Wasserstein distance,
    the PCA/PCV pipeline with equalised spectra, and the distribution metrics."""
    from helpers import distribution as dist
    from helpers import preprocess, subspace

    G, mask = study.gt_maps, study.mask
    sc = rb.Scorer(G, study.gt_pops, study.gt_pc1, mask, 2.0, sw_directions=8, transport_gt_maps=0, box_ds=8,
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
    eq, _ = preprocess.equalise_spectra({"GT": subspace.masked_downsample(G, mask, 8),
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
    assert rb.batch_for(80, 64) == 8
    assert rb.batch_for(80, 96) == 2
    assert rb.batch_for(80, 224) == 1
    per_set = 4 * 80 * 96 ** 3 * 4
    assert rb.batch_for(80, 96) * per_set <= 3 * 2 ** 30 < (rb.batch_for(80, 96) + 1) * per_set
