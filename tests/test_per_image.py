"""Per-image FSC and AU-FSC (helpers.kernels.per_image) against a float64 numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.kernels import per_image as pi
from helpers.kernels.fsc import paired_fsc

N = 16


def _maps(k, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(k, N, N, N))
    # smooth a little so the FSC is not ~0 everywhere
    f = np.fft.fftn(x, axes=(1, 2, 3)) * np.exp(-np.sum(np.meshgrid(*[np.fft.fftfreq(N) ** 2] * 3, indexing="ij"), 0) * 20)
    return np.fft.ifftn(f, axes=(1, 2, 3)).real


def _reference(a, b, convention):
    """Full complex FFT in float64, shells summed voxel by voxel (no half spectrum, no GEMM)."""
    k = np.fft.fftfreq(N, 1.0 / N)
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    if convention == "hetbook":
        shell, last = np.floor(r + 0.5).astype(int), N // 2
    else:
        shell, last = np.floor(r).astype(int) + 1, N // 2 - 1
    A, B = np.fft.fftn(a), np.fft.fftn(b)
    out = []
    for i in range(1, last + 1):
        s = shell == i
        out.append(np.real(np.sum(A[s] * np.conj(B[s]))) / np.sqrt(np.sum(abs(A[s]) ** 2) * np.sum(abs(B[s]) ** 2)))
    return np.array(out)


@pytest.mark.parametrize("convention", pi.CONVENTIONS)
def test_per_particle_maps_match_the_float64_reference(convention):
    gt, sub = _maps(4, 0), _maps(6, 1)
    gt_index = np.array([0, 3, 3, 1, 2, 0])
    got = pi.per_image_fsc(sub, gt, gt_index, convention=convention, batch=4)
    ref = np.stack([_reference(sub[i], gt[g], convention) for i, g in enumerate(gt_index)])
    assert got.shape == (6, N // 2 if convention == "hetbook" else N // 2 - 1)
    np.testing.assert_allclose(got, ref, atol=2e-5)


@pytest.mark.parametrize("convention", pi.CONVENTIONS)
def test_a_volume_series_gives_the_curves_of_its_expanded_maps(convention):
    gt, series = _maps(5, 2), _maps(3, 3)
    rng = np.random.default_rng(4)
    gt_index, map_index = rng.integers(0, 5, 40), rng.integers(0, 3, 40)
    got = pi.per_image_fsc(series, gt, gt_index, map_index=map_index, convention=convention, batch=7)
    ref = pi.per_image_fsc(series[map_index], gt, gt_index, convention=convention, batch=16)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    one = _reference(series[map_index[5]], gt[gt_index[5]], convention)
    np.testing.assert_allclose(got[5], one, atol=2e-5)


def test_the_gt_map_for_every_particle_scores_one_in_every_shell():
    gt = _maps(5, 5)
    idx = np.array([4, 0, 2, 2, 1])
    for convention, area in [("hetbook", 0.5), ("cryobench", 0.5 - 1 / N)]:
        curves = pi.per_image_fsc(gt[idx], gt, idx, convention=convention)
        np.testing.assert_allclose(curves, 1.0, atol=1e-5)
        np.testing.assert_allclose(pi.au_fsc(curves, convention), area, atol=1e-5)
        np.testing.assert_allclose(pi.image_resolution(curves, 2.0, 0.143, convention), 4.0)


def test_with_a_mask_it_is_the_paired_fsc():
    gt, sub = _maps(3, 6), _maps(3, 7)
    x = np.linspace(-1, 1, N)
    mask = (np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) < 0.8).astype(float)
    got = pi.per_image_fsc(sub, gt, [2, 0, 1], mask=mask)
    np.testing.assert_allclose(got, paired_fsc(sub, gt[[2, 0, 1]], mask=mask), atol=1e-6)


def test_au_fsc_closed_form_and_nan_shells():
    S = N // 2
    c = np.full((1, S), 0.3)
    # trapezoid over 0, 1/N, …, S/N with FSC(0) = 1 and 0.3 after: (1 + 0.3)/2/N + 0.3 (S − 1)/N
    np.testing.assert_allclose(pi.au_fsc(c), (1.3 / 2 + 0.3 * (S - 1)) / N)
    c[0, -3:] = np.nan        # no signal in the last three shells: counted as 0
    np.testing.assert_allclose(pi.au_fsc(c), (1.3 / 2 + 0.3 * (S - 4) + 0.3 / 2) / N)
    np.testing.assert_allclose(pi.au_fsc(-np.full((1, S), 0.3)), (1.3 / 2 + 0.3 * (S - 1)) / N)  # |FSC|


def test_cryobench_resolution_is_the_first_shell_below_without_interpolation():
    c = np.array([[0.9, 0.8, 0.6, 0.4, 0.1, 0.0, 0.0]])          # N = 16: shells 1..7
    # first below 0.5 is shell 4 at 4/16 cycles/px: 16/4 px × 2 Å
    assert pi.image_resolution(c, 2.0, 0.5, "cryobench")[0] == pytest.approx(8.0)
    assert pi.image_resolution(np.ones((1, 7)), 2.0, 0.5, "cryobench")[0] == pytest.approx(4.0)


def test_bad_inputs_say_what_is_wrong():
    gt, sub = _maps(2, 8), _maps(3, 9)
    with pytest.raises(ValueError, match="one map per particle"):
        pi.per_image_fsc(sub, gt, [0, 1])
    with pytest.raises(ValueError, match="resample"):
        pi.per_image_fsc(np.zeros((2, 8, 8, 8)), gt, [0, 1])
    with pytest.raises(ValueError, match="convention"):
        pi.shell_layout(N, "relion")


def test_a_shared_gt_cache_transforms_each_gt_map_once_per_convention(monkeypatch):
    """Several methods on the same particles: the GT spectra are computed once per convention and
    reused (counted), and the curves equal uncached calls."""
    gt, a, b = _maps(4, 10), _maps(5, 11), _maps(5, 12)
    g = np.array([0, 1, 1, 3, 2])
    plain = [pi.per_image_fsc(x, gt, g, convention=c) for x in (a, b) for c in pi.CONVENTIONS]
    calls = []
    real = pi._stack_spectra
    monkeypatch.setattr(pi, "_stack_spectra", lambda *args: calls.append(1) or real(*args))
    cache = {}
    cached = [pi.per_image_fsc(x, gt, g, convention=c, gt_cache=cache) for x in (a, b) for c in pi.CONVENTIONS]
    assert len(calls) == 2                      # one GT transform per convention, none for the second method
    for x, y in zip(plain, cached):
        np.testing.assert_array_equal(x, y)
    x = np.linspace(-1, 1, N)
    mask = (np.sqrt(x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2) < 0.8).astype(float)
    np.testing.assert_allclose(pi.per_image_fsc(a, gt, g, mask=mask, gt_cache=cache),     # another mask: not reused
                               pi.per_image_fsc(a, gt, g, mask=mask), atol=1e-12)
