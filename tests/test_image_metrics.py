"""Image metrics: pose recovery, the analytic marginal likelihood against numerical integration,
invariances, and EM weight recovery."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from conftest import blob_volume
from helpers import image_metrics as im
from helpers import projection as P
from helpers.geometry import pose_grid, rotation_angle, grid_spacing_deg

BLOBS_A = [((0, 6, 0), 1.0), ((4, -3, 3), 0.8), ((-5, -2, -4), 1.2), ((2, 2, -6), 0.6)]
BLOBS_B = [((0, -6, 0), 1.0), ((-4, 3, 3), 0.8), ((5, 2, -4), 1.2), ((-2, 2, 6), 0.6)]


def _images(maps, idx, R, shifts, n, px, rng, sigma):
    proj = P.FourierSliceProjector(maps)
    imgs = []
    du = np.full(len(idx), 8000.0)
    for i, (m, r, s) in enumerate(zip(idx, R, shifts)):
        f = proj.project_ft(r[None], [m])[0].to(torch.complex128)
        f = f * P.ctf(n, px, du[i:i + 1], du[i:i + 1] - 100, [20.0]) * P.shift_phase(n, [s])
        imgs.append(P.image_irfft(f, n)[0].numpy())
    imgs = np.stack(imgs)
    return imgs + rng.normal(0, sigma * imgs.std(), imgs.shape), dict(defocus_u=du, defocus_v=du - 100, defocus_angle=np.full(len(idx), 20.0))


def test_high_snr_pose_within_grid_spacing_and_true_map_wins():
    n, px = 32, 2.0
    maps = np.stack([blob_volume(n, BLOBS_A, 1.8), blob_volume(n, BLOBS_B, 1.8)]).astype(np.float32)
    _, R, _ = pose_grid(60, 12)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(R), 6, replace=False)
    idx = np.array([0, 1, 0, 1, 0, 1])
    shifts = [(1, 0), (0, -1), (0, 0), (-1, 1), (1, 1), (0, 1)]
    imgs, cp = _images(maps, idx, R[pick], shifts, n, px, rng, 0.05)
    s = im.ImageSearch(imgs, px, cp, n_directions=60, n_inplane=12, max_shift=1, refine_rounds=3)
    out = s.search(maps)
    # local refinement never does worse than the grid's best pose and gets close to the truth
    assert np.all(out["best_cc_refined"] >= out["best_cc"] - 1e-6)
    assert np.all(out["best_cc_refined"][np.arange(6), idx] > 0.95)
    assert np.all(out["logp_integrated"].argmax(1) == idx)
    assert np.all(out["best_cc"][np.arange(6), idx] > 0.9)
    for i in range(6):
        got = s.R[out["rotation_index"][i, idx[i]]]
        assert rotation_angle(got, R[pick[i]]) <= grid_spacing_deg(60, 12)
        assert tuple(s.shifts[out["shift_index"][i, idx[i]]]) == shifts[i]


def test_analytic_marginal_matches_numerical_integration():
    """Flat priors on β and on a = α‖x̃‖, dλ/λ on the noise; N = 5 pixels."""
    rng = np.random.default_rng(1)
    N = 5
    x = rng.standard_normal(N)
    y = 0.7 * x + 0.3 + 0.4 * rng.standard_normal(N)
    xt, yt = x - x.mean(), y - y.mean()
    nx = np.linalg.norm(xt)

    def integrand(b, a, lam):
        r = y - (a / nx) * x - b
        return (2 * math.pi * lam ** 2) ** (-N / 2) * math.exp(-(r @ r) / (2 * lam ** 2)) / lam

    # integrate β and a analytically-free numerically over wide boxes, λ over (0, ∞)
    val, _ = integrate.tplquad(lambda b, a, lam: integrand(b, a, lam), 0.02, 6.0, -8, 8, -4, 4,
                               epsabs=1e-13, epsrel=1e-7)
    rho2 = (xt @ yt) ** 2 / ((xt @ xt) * (yt @ yt))
    analytic = im.log_marginal(np.array(rho2), np.array(yt @ yt), N - 2, N)
    assert float(analytic) == pytest.approx(math.log(val), abs=2e-3)


def test_likelihood_invariant_to_image_offset_and_scale():
    n, px = 24, 3.0
    maps = np.stack([blob_volume(n, BLOBS_A, 1.5), blob_volume(n, BLOBS_B, 1.5)]).astype(np.float32)
    _, R, _ = pose_grid(20, 6)
    rng = np.random.default_rng(2)
    imgs, cp = _images(maps, [0, 1], R[[3, 40]], [(0, 0), (0, 0)], n, px, rng, 1.0)
    kw = dict(n_directions=20, n_inplane=6, max_shift=1)
    a = im.ImageSearch(imgs, px, cp, **kw).search(maps)
    b = im.ImageSearch(3.0 * imgs + 5.0, px, cp, **kw).search(maps)
    np.testing.assert_allclose(b["best_cc"], a["best_cc"], atol=1e-4)
    # scale c shifts every entry of an image by the same -m log c: differences between maps unchanged
    m = im.ImageSearch(imgs, px, cp, **kw).m
    np.testing.assert_allclose(b["logp_integrated"] - a["logp_integrated"], -m * math.log(3.0), atol=1e-3)
    d_a = a["logp_integrated"][:, 0] - a["logp_integrated"][:, 1]
    d_b = b["logp_integrated"][:, 0] - b["logp_integrated"][:, 1]
    np.testing.assert_allclose(d_a, d_b, atol=1e-3)


def test_em_weights_recover_sampling_proportions():
    """Synthetic likelihoods: images drawn from 3 maps in proportions 0.6/0.3/0.1."""
    rng = np.random.default_rng(3)
    true = np.array([0.6, 0.3, 0.1])
    z = rng.choice(3, size=4000, p=true)
    logp = rng.normal(0, 1, (4000, 3))
    logp[np.arange(4000), z] += 4.0
    w = im.optimise_weights(logp)
    np.testing.assert_allclose(w, true, atol=0.03)
    assert im.ensemble_loglik(logp, w) >= im.ensemble_loglik(logp, np.full(3, 1 / 3))


def test_downsample_images_preserves_mean_and_bandlimit():
    x = np.random.default_rng(0).standard_normal((2, 32, 32)) + 2.0
    y = im.downsample_images(x, 16).numpy()
    np.testing.assert_allclose(y.mean((1, 2)), x.mean((1, 2)), rtol=1e-6)
