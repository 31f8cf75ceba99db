"""Direct Fourier reconstruction (helpers.reconstruct) against the map the images came from."""
import numpy as np
import pytest
import torch

from helpers import reconstruct as rc
from helpers import simulate
from helpers import volume_metrics as vm
from helpers.fourier import lowpass
from helpers.geometry import euler_to_matrix


def _blob_map(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = lowpass(torch.as_tensor(rng.standard_normal((1, n, n, n))), 3.0, 1.0)[0].numpy()
    c = np.arange(n) - n // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    return (x * (r < 0.35 * n)).astype(np.float32)


def _particles(vol, n_images, snr, seed=1):
    rng = np.random.default_rng(seed)
    noisy, clean, tab, _ = simulate.simulate_particles(vol[None], np.array([1.0]), n_images, 1.0, rng, snr=snr,
                                                       defocus_range=(8000.0, 20000.0))
    R = euler_to_matrix(tab.rlnAngleRot, tab.rlnAngleTilt, tab.rlnAnglePsi)
    shifts = tab[["hetbookShiftXPx", "hetbookShiftYPx"]].to_numpy()
    return noisy, R, shifts, tab


def test_noiseless_images_reconstruct_the_map():
    """Conventions (rotation, shift sign, CTF, Friedel mates, centring) checked against the truth:
    FSC ≥ 0.97 from shell 2 to 80 % of Nyquist and the right scale. Using Rᵀ instead of R, or
    the shifts with the wrong sign, drops the FSC to ~0.1 in the outer shells."""
    vol = _blob_map()
    imgs, R, shifts, tab = _particles(vol, 1500, snr=1e12)
    for corr, scale_range in ((False, (0.7, 0.85)), (True, (0.92, 1.05))):  # measured 0.765, 0.967
        out = rc.reconstruct(imgs, 1.0, R, shifts, tab.rlnDefocusU, tab.rlnDefocusV, tab.rlnDefocusAngle,
                             gridding_correction=corr)
        f = vm.fsc_matrix(vol[None], out["maps"], None, background=False)[0, 0]
        assert f[0] > 0.9 and f[1: int(0.8 * 12)].min() > 0.97, f.round(3)  # measured ≥ 0.93, then ≥ 0.98
        scale = float((out["maps"][0] * vol).sum() / (vol * vol).sum())
        assert scale_range[0] < scale < scale_range[1], (corr, scale)


def test_half_set_fsc_predicts_the_fsc_against_the_truth():
    """With noise, the half-set FSC and the FSC of the full reconstruction against the truth obey
    FSC_true ≈ √(2·FSC_half / (1 + FSC_half)) (Rosenthal & Henderson 2003) where the signal is
    measurable; and more images give a better map."""
    vol = _blob_map(seed=3)
    res = {}
    for n_img in (300, 1200):
        imgs, R, shifts, tab = _particles(vol, n_img, snr=0.05, seed=n_img)
        out = rc.reconstruct(imgs, 1.0, R, shifts, tab.rlnDefocusU, tab.rlnDefocusV, tab.rlnDefocusAngle)
        f_true = vm.fsc_matrix(vol[None], out["maps"], None, background=False)[0, 0]
        half = out["fsc_half"][0]
        ok = (half > 0.15) & (half < 0.95)
        assert ok.sum() >= 3
        pred = np.sqrt(2 * half[ok] / (1 + half[ok]))
        np.testing.assert_allclose(f_true[ok], pred, atol=0.12)
        res[n_img] = f_true
    assert res[1200][4:10].mean() > res[300][4:10].mean() + 0.05


def test_classes_are_reconstructed_separately():
    """Two different maps, images labelled by class: each class reconstructs its own map."""
    a, b = _blob_map(seed=5), _blob_map(seed=6)
    rng = np.random.default_rng(2)
    imgs, _, tab, _ = simulate.simulate_particles(np.stack([a, b]), np.array([0.5, 0.5]), 1600, 1.0, rng, snr=1e12)
    R = euler_to_matrix(tab.rlnAngleRot, tab.rlnAngleTilt, tab.rlnAnglePsi)
    out = rc.reconstruct(imgs, 1.0, R, tab[["hetbookShiftXPx", "hetbookShiftYPx"]].to_numpy(), tab.rlnDefocusU,
                         tab.rlnDefocusV, tab.rlnDefocusAngle, classes=tab.hetbookTrueMapIndex.to_numpy(), n_classes=2)
    f = vm.fsc_matrix(np.stack([a, b]), out["maps"], None, background=False)
    assert f[0, 0, :8].min() > 0.95 and f[1, 1, :8].min() > 0.95
    assert f[0, 1, 2:8].max() < 0.5 and f[1, 0, 2:8].max() < 0.5
    np.testing.assert_array_equal(out["n_images"], np.bincount(tab.hetbookTrueMapIndex, minlength=2))
