"""Fourier tools and preprocessing steps against closed forms and numpy float64 references."""
import numpy as np
import pytest
import torch

from conftest import blob_volume
from helpers.kernels import fourier as Fo
from helpers.kernels import normalise as nz
from helpers.kernels import preprocess as pp
from helpers.io.mapset import MapSet


def numpy_radial_ps(v):
    n = v.shape[0]
    f = np.abs(np.fft.fftn(np.fft.ifftshift(v))) ** 2
    k = np.fft.fftfreq(n) * n
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    s = np.floor(r + 0.5).astype(int)
    return np.array([f[s == i].mean() for i in range(n // 2 + 1)])


@pytest.mark.parametrize("n", [16, 17])
def test_radial_power_spectrum_matches_numpy(n):
    v = np.random.default_rng(n).standard_normal((n, n, n))
    _, p = Fo.radial_power_spectrum(v[None])
    np.testing.assert_allclose(p[0], numpy_radial_ps(v), rtol=1e-5)


def test_dc_is_in_shell_zero_for_even_boxes():
    """The published grid puts DC at r = √3/2 for even boxes; ours puts it at 0."""
    v = np.ones((16, 16, 16))
    _, p = Fo.radial_power_spectrum(v[None])
    assert p[0, 0] == pytest.approx(16 ** 6) and np.all(p[0, 1:] < 1e-12)


def test_bfactor_sign_and_units():
    n, px, B = 32, 2.0, 100.0
    v = np.random.default_rng(0).standard_normal((n, n, n)).astype(np.float32)
    out = Fo.apply_bfactor(v, B, px).double()
    f_in = torch.fft.rfftn(torch.as_tensor(v, dtype=torch.float64))
    f_out = torch.fft.rfftn(out)
    k = 5 / (n * px)  # along x, index 5
    ratio = (f_out[0, 0, 5] / f_in[0, 0, 5]).real.item()
    assert ratio == pytest.approx(np.exp(-B * k ** 2 / 4), rel=1e-4)  # positive B blurs
    assert (Fo.apply_bfactor(v, -B, px).std() > torch.as_tensor(v).std())


@pytest.mark.parametrize("n,m", [(32, 16), (33, 16), (32, 17), (16, 32), (17, 33)])
def test_fourier_resample_preserves_constant_and_band_limited_maps(n, m):
    c = Fo.fourier_resample(np.full((n, n, n), 3.0), m).numpy()
    np.testing.assert_allclose(c, 3.0, atol=1e-5)
    # a band-limited map survives a round trip through a larger grid exactly
    small = min(n, m)
    x = Fo.lowpass(np.random.default_rng(1).standard_normal((small, small, small)), 4.0, 1.0).numpy()
    back = Fo.fourier_resample(Fo.fourier_resample(x, max(n, m)), small).numpy()
    np.testing.assert_allclose(back, x, atol=1e-5)


@pytest.mark.parametrize("n,m", [(33, 28), (32, 27), (27, 32), (28, 33)])
def test_crop_or_pad_keeps_the_centre_voxel(n, m):
    v = np.zeros((n, n, n), np.float32)
    v[n // 2, n // 2, n // 2] = 1
    out = Fo.crop_or_pad(v, m).numpy()
    assert out.shape == (m, m, m) and out[m // 2, m // 2, m // 2] == 1


def test_to_gt_grid_recovers_the_averaged_gt_from_the_other_grid_mock():
    rng = np.random.default_rng(0)
    base = Fo.lowpass(rng.standard_normal((2, 24, 24, 24)), 8.0, 2.0).numpy()
    fine = Fo.fourier_resample(base, 36).numpy()  # 36 voxels of 4/3 Å = 48 Å
    big = Fo.crop_or_pad(fine, 41).numpy()  # odd box, odd difference
    ms = MapSet(big, [0.5, 0.5], 2.0 * 24 / 36, "other")
    out = pp.to_gt_grid(ms, 24, 2.0)
    assert out.box == 24 and out.voxel_size == 2.0
    np.testing.assert_allclose(out.maps, base, atol=1e-4 * np.abs(base).max())
    # resampled a map at a time (a challenge-size set would not fit at once): the same maps, in order
    five = MapSet(np.concatenate([big, big[::-1], big[:1]]), [0.2] * 5, 2.0 * 24 / 36, "other")
    one_by_one = pp.to_gt_grid(five, 24, 2.0, chunk_bytes=1).maps
    np.testing.assert_allclose(one_by_one, np.concatenate([base, base[::-1], base[:1]]), atol=1e-4 * np.abs(base).max())


def test_median_zscore_conventions():
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 8)).astype(np.float32)
    z = nz.median_zscore(x).numpy()
    flat = x.reshape(3, -1).astype(np.float64)
    ref = (flat - np.median(flat, 1, keepdims=True)) / flat.std(1, ddof=1, keepdims=True)
    np.testing.assert_allclose(z.reshape(3, -1), ref, atol=1e-5)
    zp = nz.median_zscore(x, convention="published").numpy().reshape(3, -1)
    lower = np.sort(flat, 1)[:, (flat.shape[1] - 1) // 2]  # torch's lower median
    np.testing.assert_allclose(zp, (flat - lower[:, None]) / flat.std(1, ddof=1, keepdims=True), atol=1e-5)


def test_bracketed_median_of_long_rows_is_exact(monkeypatch):
    """Rows of ≥ 2¹⁶ values (a map's solvent) take the bracketing path: exactly numpy's median
    (float64 reference) for odd and even lengths, heavy ties, a solvent of exact zeros, skewed
    values; rows whose bracket misses the middle (forced by a 4-value sample) fall back to the
    full selection and are still exact."""
    rng = np.random.default_rng(3)
    m = nz.BRACKET_MIN
    rows = {"normal odd": rng.standard_normal((3, m + 1)),
            "normal even": rng.standard_normal((3, m)),
            "ties": rng.integers(0, 5, (3, m)),
            "zeros": np.zeros((2, m)),
            "mostly zero": np.where(rng.random((3, m)) < 0.7, 0.0, rng.standard_normal((3, m))),
            "skewed": rng.exponential(1.0, (3, m + 3)) ** 3}
    for name, x in rows.items():
        x = x.astype(np.float32)
        got = nz._numpy_median(torch.as_tensor(x)).numpy()
        np.testing.assert_array_equal(got, np.median(x.astype(np.float64), 1).astype(np.float32), err_msg=name)
    calls = []
    full = nz._selected_median
    monkeypatch.setattr(nz, "_selected_median", lambda r: calls.append(1) or full(r))
    x = rng.standard_normal((64, m)).astype(np.float32)
    got = nz._bracketed_median(torch.as_tensor(x), sample=4).numpy()
    np.testing.assert_array_equal(got, np.median(x.astype(np.float64), 1).astype(np.float32))
    assert 0 < len(calls) < 64  # some rows fell back, the others were bracketed


def test_numpy_median_by_selection_handles_ties_and_odd_counts():
    rng = np.random.default_rng(1)
    for m in (7, 8, 512):
        x = rng.integers(0, 4, (6, m)).astype(np.float32)  # many ties at the middle
        got = nz._numpy_median(torch.as_tensor(x)).numpy()
        np.testing.assert_array_equal(got, np.median(x, 1).astype(np.float32))
    mask = np.zeros((8, 8, 8), np.float32)
    mask[2:6, 2:6, 1:6] = 1  # 80 voxels: an even count inside the mask
    x = rng.standard_normal((2, 8, 8, 8)).astype(np.float32)
    sel = x.reshape(2, -1)[:, mask.ravel() > 0.5].astype(np.float64)
    z = nz.median_zscore(x, mask).numpy().reshape(2, -1)[:, mask.ravel() > 0.5]
    np.testing.assert_allclose(z, (sel - np.median(sel, 1, keepdims=True)) / sel.std(1, ddof=1, keepdims=True),
                               atol=1e-5)


def test_equalise_spectra_replaces_profiles_by_the_minimum():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 16, 16, 16))
    b = Fo.apply_bfactor(a, 200.0, 1.5).numpy()
    out, common = nz.equalise_spectra({"a": a, "b": b})
    shape = {k: nz.mean_power_spectrum(x) / nz.mean_power_spectrum(x).sum() for k, x in (("a", a), ("b", b))}
    np.testing.assert_allclose(common, np.minimum(shape["a"], shape["b"]))
    for k, x in (("a", a), ("b", b)):  # every set gets the common shape and keeps its own total power
        got = nz.mean_power_spectrum(out[k].numpy())
        np.testing.assert_allclose(got[1:], (common * nz.mean_power_spectrum(x).sum())[1:], rtol=1e-3)


def test_equalise_spectra_does_not_depend_on_a_sets_intensity_units():
    """A set in other units (× 0.01) is filtered exactly as in the original units and changes no
    other set; with raw spectra it became the minimum and imposed its spectrum on the GT."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 16, 16, 16))
    b = Fo.apply_bfactor(rng.standard_normal((4, 16, 16, 16)), 100.0, 1.5).numpy()
    ref, _ = nz.equalise_spectra({"a": a, "b": b})
    out, _ = nz.equalise_spectra({"a": a, "b": 0.01 * b})
    np.testing.assert_allclose(out["a"].numpy(), ref["a"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["b"].numpy(), 0.01 * ref["b"].numpy(), rtol=1e-4, atol=1e-8)


def test_flip_hand_reverses_x():
    v = blob_volume(16, [((3, 1, -2), 1.0)])[None].astype(np.float32)
    out = pp.flip_hand(MapSet(v, [1.0], 1.0, "x")).maps[0]
    np.testing.assert_array_equal(out, v[0][:, :, ::-1])


def test_coarser_submission_is_upsampled_with_a_warning_or_refused():
    from helpers.core.errors import InputError

    base = Fo.lowpass(np.random.default_rng(3).standard_normal((1, 16, 16, 16)), 8.0, 3.0).numpy()
    ms = MapSet(base, [1.0], 3.0, "coarse")  # 48 Å box at 3 Å; the GT grid is 24 × 2 Å
    with pytest.warns(UserWarning, match="coarser"):
        out = pp.to_gt_grid(ms, 24, 2.0)
    assert out.box == 24 and out.voxel_size == 2.0
    np.testing.assert_allclose(Fo.fourier_resample(out.maps, 16).numpy(), base, atol=1e-4 * np.abs(base).max())
    with pytest.raises(InputError, match="coarser"):
        pp.to_gt_grid(ms, 24, 2.0, allow_coarser=False)


def test_unit_norm_with_mask_weights():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 6, 6))
    m = rng.uniform(0, 1, (6, 6, 6))
    out = nz.unit_norm(x, m).numpy()
    ref = (x * m) / np.linalg.norm((x * m).reshape(3, -1), axis=1)[:, None, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)


def test_fft_translation_finds_a_known_integer_shift():
    from helpers.kernels.align import fft_translation

    ref = blob_volume(24, [((2, -3, 1), 1.0), ((-4, 5, 0), 0.6)])
    moved = np.roll(ref, (2, -3, 4), axis=(0, 1, 2))  # (dz, dy, dx)
    np.testing.assert_array_equal(fft_translation(moved, ref), [-2, 3, -4])  # the shift that undoes it


@pytest.mark.parametrize("n,m", [(16, 8), (16, 9), (15, 8), (15, 7), (8, 16), (9, 16), (8, 13), (7, 11)])
def test_fourier_resample_equals_the_centred_crop_with_fftshift(n, m):
    """The index-select implementation (no fftshift copies) against the textbook one: shift the
    origin (voxel N//2) to 0, FFT, centre, crop or zero-pad about the centre, undo (float64 numpy)."""
    x = np.random.default_rng(n * 100 + m).standard_normal((2, n, n, n))
    ax = (-3, -2, -1)
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=ax), axes=ax), axes=ax)
    if n > m:
        a = n // 2 - m // 2
        g = f[:, a:a + m, a:a + m, a:a + m]
    else:
        g = np.zeros((2, m, m, m), complex)
        a = m // 2 - n // 2
        g[:, a:a + n, a:a + n, a:a + n] = f
    ref = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(g, axes=ax), axes=ax), axes=ax).real * (m / n) ** 3
    np.testing.assert_allclose(Fo.fourier_resample(x, m).numpy(), ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("chunk,to_file", [(None, False), (2, True)])
def test_resample_stack_in_chunks_into_a_memory_map(tmp_path, chunk, to_file):
    """A stack resampled a few maps at a time (chapter 7's coarser study grid), optionally into a
    .npy memory map: equal to the float64 numpy centred-spectrum crop (DC at N//2, (m/N)³)."""
    from helpers.kernels.fourier import resample_stack

    rng = np.random.default_rng(6)
    N, m = 16, 10
    x = rng.standard_normal((5, N, N, N)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    mm = np.load(tmp_path / "in.npy", mmap_mode="r")
    F = np.fft.fftshift(np.fft.fftn(x.astype(np.float64), axes=(1, 2, 3)), axes=(1, 2, 3))
    lo = N // 2 - m // 2
    ref = np.fft.ifftn(np.fft.ifftshift(F[:, lo:lo + m, lo:lo + m, lo:lo + m], axes=(1, 2, 3)), axes=(1, 2, 3)).real * (m / N) ** 3
    got = resample_stack(mm, m, tmp_path / "out.npy" if to_file else None, chunk=chunk)
    np.testing.assert_allclose(got, ref, atol=2e-6)
    assert got.dtype == np.float32 and isinstance(got, np.memmap) == to_file
    if to_file:
        np.testing.assert_allclose(np.load(tmp_path / "out.npy"), ref, atol=2e-6)


def test_fast_resampler_equals_the_exact_one_below_nyquist():
    """fourier_resample_fast (real FFTs, float32, Nyquist planes dropped; the robustness study's
    oversampled rotation) equals fourier_resample on maps with no content at Nyquist."""
    from helpers.kernels.fourier import fourier_resample, fourier_resample_fast, lowpass

    x = lowpass(torch.as_tensor(np.random.default_rng(3).standard_normal((2, 16, 16, 16))), 4.0, 1.0).float()
    for m in (32, 8):
        exact = fourier_resample(lowpass(x.double(), 8.0 if m == 8 else 4.0, 1.0), m).numpy()
        fast = fourier_resample_fast(lowpass(x.double(), 8.0 if m == 8 else 4.0, 1.0).float(), m).numpy()
        np.testing.assert_allclose(fast, exact, atol=1e-5 * np.abs(exact).max())
