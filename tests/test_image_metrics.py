"""Image metrics: pose recovery, the analytic marginal likelihood against numerical integration,
invariances, and EM weight recovery."""
import math

import numpy as np
import pytest
import torch

from conftest import blob_volume
from helpers.kernels import image_metrics as im
from helpers.kernels import projection as P
from helpers.kernels.fourier import lowpass
from helpers.kernels.geometry import euler_to_matrix, grid_spacing_deg, pose_grid, random_rotations, rotation_angle

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
    kw = dict(n_directions=60, n_inplane=12, max_shift=1, shift_step=1.0)
    grid = im.ImageSearch(imgs, px, cp, refine_levels=0, **kw).search(maps)
    out = im.ImageSearch(imgs, px, cp, refine_levels=2, **kw).search(maps)
    # refinement never does worse than the grid's best pose and gets close to the truth
    assert np.all(out["best_cc"] >= grid["best_cc"] - 1e-6)
    assert np.all(out["best_cc"][np.arange(6), idx] > 0.95)
    for o in (grid, out):
        assert np.all(o["logp_integrated"].argmax(1) == idx)
    assert np.all(grid["best_cc"][np.arange(6), idx] > 0.9)
    spacing = grid_spacing_deg(60, 12)
    for i in range(6):
        for o, tol in ((grid, spacing), (out, spacing / 3)):
            got = euler_to_matrix(*o["euler"][i, idx[i]])
            assert rotation_angle(got, R[pick[i]]) <= tol
            assert tuple(o["shift"][i, idx[i]]) == shifts[i]


def _continuous_pose_images(snr, n=24, px=3.0, M=60, seed=0):
    """A sharp 12-blob map, images at Haar-random rotations and uniform sub-pixel shifts (±0.75 px)."""
    rng = np.random.default_rng(seed)
    cent = [(tuple(rng.uniform(-6, 6, 3)), rng.uniform(0.5, 1.2)) for _ in range(12)]
    V = blob_volume(n, cent, 1.0).astype(np.float32)
    R = random_rotations(M, rng)
    sh = rng.uniform(-0.75, 0.75, (M, 2))
    du = rng.uniform(8000, 20000, M)
    f = P.FourierSliceProjector(V[None]).project_ft(R)[0].to(torch.complex128)
    clean = P.image_irfft(f * P.ctf(n, px, du, du - 100, np.full(M, 20.0)) * P.shift_phase(n, sh), n).numpy()
    imgs = clean + rng.normal(0, np.sqrt(clean.var() / snr), clean.shape)
    return V, imgs, dict(defocus_u=du, defocus_v=du - 100, defocus_angle=np.full(M, 20.0)), rng


def test_true_map_beats_its_lowpass_when_poses_are_off_grid():
    """The demo's failure mode in miniature: with whole-pixel shifts and no refinement the
    low-passed map out-scores the map that made the images; the default search ranks the truth
    first, above the low-pass and a noisy copy."""
    V, imgs, cp, rng = _continuous_pose_images(0.3)
    lp = lowpass(V, 2 * 3.0 / 0.7, 3.0, width=0.01).numpy().astype(np.float32)
    noisy = (V + rng.normal(0, V.std(), V.shape)).astype(np.float32)
    maps = np.stack([V, lp, noisy])
    kw = dict(n_directions=100, n_inplane=12, max_shift=1)
    coarse = im.ImageSearch(imgs, 3.0, cp, shift_step=1.0, refine_levels=0, **kw).search(maps)
    default = im.ImageSearch(imgs, 3.0, cp, **kw).search(maps)
    c, d = coarse["logp_integrated"].sum(0), default["logp_integrated"].sum(0)
    assert c[1] > c[0]  # the failure the refinement fixes
    assert d[0] > d[1] + 10 and d[0] > d[2] + 300  # measured: +18 and +1000 nats over 60 images


def test_refined_integral_approaches_a_dense_grid():
    """Second quadrature: a grid 15x denser in rotations (1500 x 48) with 1/3-px shifts (and one
    refinement level). At SNR 0.3 the refined coarse integral (100 x 12, ½-px shifts) lands within
    2 nat/image of it in *absolute* per-image error (signed errors of both signs would cancel in a
    mean), with 5x less error than the plain coarse grid (measured: 1.3 vs 10.1 nat/image)."""
    V, imgs, cp, _ = _continuous_pose_images(0.3, M=24, seed=1)
    dense = im.ImageSearch(imgs, 3.0, cp, n_directions=1500, n_inplane=48, shift_step=1 / 3, refine_levels=1,
                           max_shift=1).search(V[None])["logp_integrated"][:, 0]
    s = im.ImageSearch(imgs, 3.0, cp, n_directions=100, n_inplane=12, max_shift=1)
    refined = s.search(V[None])["logp_integrated"][:, 0]
    s.refine_levels = 0
    plain = s.search(V[None])["logp_integrated"][:, 0]
    err_refined, err_plain = np.abs(refined - dense).mean(), np.abs(plain - dense).mean()
    assert err_refined < 2.0 and np.median(np.abs(refined - dense)) < 1.0 and err_plain > 5
    assert err_refined < err_plain / 5


def _brute_force_grid(V, imgs, px, cp, n_dir, n_inplane, max_shift, step):
    """Independent of the search code: for every grid rotation, shift and image, the CTF-weighted
    template is made in numpy, both images are band-passed in real space (0 < |k| < n/2 − 1 on
    the full FFT grid) and ρ, log P come from real-space sums; the pose integral is a plain
    log-mean-exp over the grid. Shares only the projector and the CTF, tested on their own."""
    from scipy.special import gammaln, logsumexp

    n = imgs.shape[-1]
    k = np.fft.fftfreq(n, 1.0 / n)
    band_full = (np.hypot(k[None, :], k[:, None]) > 0) & (np.hypot(k[None, :], k[:, None]) < n // 2 - 1)
    d = int(band_full.sum())  # real degrees of freedom of the band
    m = d - 1

    def bandpass(x):
        f = np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)))
        return np.fft.fftshift(np.fft.ifft2(f * band_full).real, axes=(-2, -1))

    yb = bandpass(imgs.astype(np.float64))
    yy = (yb ** 2).sum((1, 2))
    _, R, _ = pose_grid(n_dir, n_inplane)
    h = int(np.floor(max_shift / step + 1e-9))
    r = np.arange(-h, h + 1) * step
    shifts = np.stack(np.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)
    C = P.ctf(n, px, cp["defocus_u"], cp["defocus_v"], cp["defocus_angle"]).numpy()
    kx, ky = (t.numpy() for t in P.image_freqs(n))
    proj = P.FourierSliceProjector(V[None])
    M = len(imgs)
    lp = np.empty((M, len(R), len(shifts)))
    rho = np.empty_like(lp)
    for j in range(len(R)):
        T = proj.project_ft(R[j][None]).numpy()[0, 0].astype(np.complex128)
        for si, (sx, sy) in enumerate(shifts):
            ph = np.exp(-2j * np.pi * (kx * sx + ky * sy) / n)
            x = np.fft.fftshift(np.fft.irfft2(C * T[None] * ph[None], s=(n, n)), axes=(-2, -1))
            xb = bandpass(x)
            xy, xx = (xb * yb).sum((1, 2)), (xb ** 2).sum((1, 2))
            rho[:, j, si] = xy / np.sqrt(xx * yy)
            lp[:, j, si] = (gammaln(m / 2) - np.log(2) - 0.5 * np.log(n * n)
                            - (m / 2) * np.log(np.pi * yy * (1 - rho[:, j, si] ** 2)))
    flat = lp.reshape(M, -1)
    arg = rho.reshape(M, -1).argmax(1)
    return (logsumexp(flat, 1) - np.log(flat.shape[1]), rho.reshape(M, -1).max(1),
            flat.max(1), shifts[arg % len(shifts)])  # log P is monotone in ρ²; the best ρ is positive here


def test_grid_search_equals_an_independent_brute_force():
    """The batched search (GEMMs over templates × images × shifts, Fourier-space sums with
    half-spectrum weights) against a per-pose numpy loop in real space, on the same grid."""
    V, imgs, cp, _ = _continuous_pose_images(1.0, n=20, M=5, seed=4)
    kw = dict(n_directions=20, n_inplane=6, max_shift=1, shift_step=0.5)
    got = im.ImageSearch(imgs, 3.0, cp, refine_levels=0, **kw).search(V[None])
    lp_int, best_cc, lp_best, best_shift = _brute_force_grid(V, imgs, 3.0, cp, 20, 6, 1, 0.5)
    np.testing.assert_allclose(got["logp_integrated"][:, 0], lp_int, atol=2e-3)
    np.testing.assert_allclose(got["best_cc"][:, 0], best_cc, atol=1e-5)
    np.testing.assert_allclose(got["logp_best"][:, 0], lp_best, atol=2e-3)
    np.testing.assert_array_equal(got["shift"][:, 0], best_shift)  # the shift's sign, too


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

    # integrate β, a and λ numerically over wide boxes (Simpson's rule on a fine grid, λ on a log
    # grid: dλ/λ = d log λ), the residual's square expanded as a quadratic form in (a, β); a
    # spot value of the grid's integrand is checked against the direct formula above
    from scipy.integrate import simpson

    a = np.linspace(-8, 8, 241)[:, None, None]
    b = np.linspace(-4, 4, 241)[None, :, None]
    u = np.linspace(np.log(0.02), np.log(6.0), 361)[None, None, :]
    lam = np.exp(u)
    Q = (y @ y - 2 * a * (x @ y) / nx - 2 * b * y.sum() + a ** 2 * (x @ x) / nx ** 2
         + 2 * a * b * x.sum() / nx + N * b ** 2)
    f = (2 * math.pi * lam ** 2) ** (-N / 2) * np.exp(-Q / (2 * lam ** 2))  # × λ (dλ = λ du) ÷ λ (prior)
    assert f[150, 120, 200] * math.exp(-u[0, 0, 200]) == pytest.approx(integrand(b[0, 120, 0], a[150, 0, 0], lam[0, 0, 200]), rel=1e-9)
    val = simpson(simpson(simpson(f, x=u[0, 0], axis=2), x=b[0, :, 0], axis=1), x=a[:, 0, 0])
    rho2 = (xt @ yt) ** 2 / ((xt @ xt) * (yt @ yt))
    analytic = im.log_marginal(np.array(rho2), np.array(yt @ yt), N - 2, N)
    assert float(analytic) == pytest.approx(math.log(val), abs=2e-3)


def test_likelihood_invariant_to_image_offset_and_scale():
    n, px = 24, 3.0
    maps = np.stack([blob_volume(n, BLOBS_A, 1.5), blob_volume(n, BLOBS_B, 1.5)]).astype(np.float32)
    _, R, _ = pose_grid(20, 6)
    rng = np.random.default_rng(2)
    imgs, cp = _images(maps, [0, 1], R[[3, 40]], [(0, 0), (0, 0)], n, px, rng, 1.0)
    kw = dict(n_directions=20, n_inplane=6, max_shift=1)  # default refinement included
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
    """A band-limited image (cosines below the coarse Nyquist, origin at pixel n//2) sampled on
    32² and Fourier-cropped to 16² equals the same function sampled on the coarse grid; a
    constant image stays constant."""
    n, m = 32, 16
    c = np.arange(n) - n // 2
    X, Y = np.meshgrid(c, c, indexing="xy")
    rng = np.random.default_rng(0)
    waves = [(rng.integers(-7, 8), rng.integers(-7, 8), rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 2)) for _ in range(6)]

    def f(x, y, size):
        return 2.0 + sum(a * np.cos(2 * np.pi * (u * x + v * y) / size + p) for u, v, p, a in waves)
    fine = np.stack([f(X, Y, n), 3 * f(X, Y, n) - 1])
    cc = np.arange(m) - m // 2
    Xc, Yc = np.meshgrid(cc, cc, indexing="xy")
    coarse = f(2 * Xc, 2 * Yc, n)  # the same function at the coarse pixel centres (2 fine pixels apart)
    y = im.downsample_images(fine, m).numpy()
    np.testing.assert_allclose(y[0], coarse, atol=1e-9)
    np.testing.assert_allclose(y[1], 3 * coarse - 1, atol=1e-9)
    np.testing.assert_allclose(im.downsample_images(np.full((1, n, n), 4.5), m).numpy(), 4.5, atol=1e-12)


def _resample_numpy(x, m):
    """float64 numpy: the centred spectrum cropped to m³ (DC at N//2), values kept ((m/N)³)."""
    N = x.shape[-1]
    F = np.fft.fftshift(np.fft.fftn(x, axes=(1, 2, 3)), axes=(1, 2, 3))
    lo = N // 2 - m // 2
    G = F[:, lo:lo + m, lo:lo + m, lo:lo + m]
    return np.fft.ifftn(np.fft.ifftshift(G, axes=(1, 2, 3)), axes=(1, 2, 3)).real * (m / N) ** 3


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_maps_to_image_grid_reads_a_memory_map_in_chunks(tmp_path, chunk):
    """Maps on disk are read a few at a time (100 GT maps at 224³ at once killed the chapter-6
    kernel): the result equals a float64 numpy reference (solvent median off, spectrum cropped)
    for every chunk size, the GT subset taken lazily by MapSet.subset included."""
    from helpers.io.mapset import Rows
    from helpers.io.mapset import MapSet

    rng = np.random.default_rng(4)
    N, m = 16, 10
    x = (rng.standard_normal((5, N, N, N)) + 3.0).astype(np.float32)
    np.save(tmp_path / "m.npy", x)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    c = np.arange(N) - N // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    mask = np.clip((6 - r) / 2, 0, 1).astype(np.float32)
    solvent = mask <= 0.01
    ref = _resample_numpy(np.stack([v.astype(np.float64) - np.median(v[solvent]) for v in x]), m)
    got = im.maps_to_image_grid(mm, m, mask, chunk=chunk).numpy()
    np.testing.assert_allclose(got, ref, atol=2e-5)
    sub = MapSet(maps=mm, populations=np.full(5, 0.2), voxel_size=2.0, label="GT").subset([4, 0, 2])
    assert isinstance(sub.maps, Rows) and sub.maps.shape == (3, N, N, N)
    np.testing.assert_allclose(im.maps_to_image_grid(sub.maps, m, mask, chunk=chunk).numpy(), ref[[4, 0, 2]], atol=2e-5)
    np.testing.assert_allclose(sub.populations, [1 / 3] * 3)


def test_a_lazy_subset_reads_the_right_rows(tmp_path):
    from helpers.io.mapset import Rows
    from helpers.io.mapset import MapSet

    x = np.arange(6 * 8, dtype=np.float32).reshape(6, 2, 2, 2)
    np.save(tmp_path / "m.npy", x)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    s = MapSet(maps=mm, populations=np.arange(1, 7) / 21, voxel_size=1.0, label="GT")
    a = s.subset(np.array([False, True, False, True, True, False]))  # booleans: rows 1, 3, 4
    np.testing.assert_array_equal(np.asarray(a.maps), x[[1, 3, 4]])
    np.testing.assert_array_equal(a.maps[1:], x[[3, 4]])
    np.testing.assert_array_equal(a.maps[-1], x[4])
    np.testing.assert_allclose(a.populations, np.array([2, 4, 5]) / 11)
    b = a.subset([2, 0])  # a subset of a subset stays lazy and maps through both
    assert isinstance(b.maps, Rows)
    np.testing.assert_array_equal(np.asarray(b.maps), x[[4, 1]])
    mem = MapSet(maps=x, populations=s.populations, voxel_size=1.0, label="GT").subset([5])
    assert isinstance(mem.maps, np.ndarray)  # maps in memory are copied as before
    with pytest.raises(IndexError, match="outside a stack of 6"):
        Rows(mm, [6])


def _exact(n, mean, sd, seed=0):
    """n values with exactly this mean and sample sd (ddof=1)."""
    z = np.random.default_rng(seed).normal(size=n)
    return mean + sd * (z - z.mean()) / z.std(ddof=1)


def test_paired_power_closed_form_and_verdicts():
    """mean 0.1, sd 1: (2·1/0.1)² = 400 images needed; z = 0.1·√n."""
    d = _exact(100, 0.1, 1.0)
    p = im.paired_power(d, n_available=2000)
    assert math.isclose(p["images_needed"], 400.0, rel_tol=1e-9) and math.isclose(p["z"], 1.0, rel_tol=1e-9)
    assert p["verdict"] == "underpowered" and p["n_images"] == 100
    assert im.paired_power(d, n_available=300)["verdict"] == "no difference"  # the stack has fewer than 400
    big = _exact(500, 0.1, 1.0)
    assert im.paired_power(big)["verdict"] == "separated" and math.isclose(im.paired_power(big)["z"], 0.1 * math.sqrt(500))
    assert im.paired_power(-big)["verdict"] == "wrong way"
    assert math.isclose(im.images_needed(_exact(50, 0.3, 0.9), k=3), (3 * 0.9 / 0.3) ** 2, rel_tol=1e-9)
    assert im.paired_power(np.zeros(40))["images_needed"] == math.inf
    assert im.paired_power(np.zeros(40))["verdict"] == "no difference"
    noise = _exact(160, 3e-7, 2.6e-6)  # float noise between near-identical maps: 301 images "needed"
    assert im.paired_power(noise, n_available=2000)["verdict"] == "underpowered"
    p = im.paired_power(noise, n_available=2000, tol=1e-4)
    assert p["images_needed"] == math.inf and p["verdict"] == "no difference"
    assert im.paired_power(d, n_available=2000, tol=0.05)["verdict"] == "underpowered"  # 0.1 > tol: unchanged


def test_images_to_order_median_over_adjacent_pairs():
    """Three submissions scored on the same 200 images: a > b by 0.2 (sd 1 → 100 images),
    b > c by 0.1 (sd 1 → 400); c ≡ d (a tie no image count resolves, left out of the median)."""
    c = _exact(200, 0.0, 1.0, seed=3)
    b = c + _exact(200, 0.1, 1.0, seed=4)
    a = b + _exact(200, 0.2, 1.0, seed=5)
    per = {"a": a, "b": b, "c": c, "d": c.copy()}
    vals = {k: v.mean() + 1e-9 * (k == "c") for k, v in per.items()}
    need, pairs = im.images_to_order(per, vals, "high", n_available=2000)
    assert list(zip(pairs.better, pairs.worse)) == [("a", "b"), ("b", "c"), ("c", "d")]
    np.testing.assert_allclose(pairs.images_needed[:2], [100.0, 400.0], rtol=1e-9)
    assert pairs.verdict.tolist() == ["separated", "underpowered", "no difference"]
    assert math.isclose(need, 250.0)  # median of 100 and 400
    need_t, _ = im.images_to_order(per, vals, "high", n_available=2000, tol=0.15)  # b − c (0.1) within tol: a tie
    assert math.isclose(need_t, 100.0)
    low, lp = im.images_to_order({k: -v for k, v in per.items()}, {k: -v for k, v in vals.items()}, "low",
                                 n_available=2000)
    assert math.isclose(low, 250.0) and lp.verdict.tolist() == pairs.verdict.tolist()  # "a better" stays positive
