"""The Nyquist rule (helpers.kernels.nyquist): a submission's native voxel size travels with its MapSet
from ingestion through regridding and files, and no resolution is reported finer than 2 × it."""
import json

import numpy as np
import pytest

from conftest import blob_volume
from helpers import io
from helpers.kernels import nyquist, preprocess
from helpers.kernels import fsc, volume_metrics as vm
from helpers.kernels.fourier import fourier_resample
from helpers.io.mapset import MapSet

GT_BOX, GT_VS, NATIVE_BOX, NATIVE_VS = 32, 2.145, 16, 4.29  # the same 68.64 Å box, voxels ×2


def _gt_maps(n=3):
    return np.stack([blob_volume(GT_BOX, [((t - 1, 0, 0), 1.0), ((0, 3, -2), 0.6)], sigma=1.2)
                     for t in range(n)]).astype(np.float32)


def test_clip_resolution_against_hand_values():
    assert nyquist.native_nyquist(NATIVE_VS) == pytest.approx(8.58, abs=1e-12)
    res, lim = nyquist.clip_resolution([8.1, 8.58, 8.58 * (1 - 1e-12), 9.0, np.nan], NATIVE_VS)
    np.testing.assert_allclose(res, [8.58, 8.58, 8.58 * (1 - 1e-12), 9.0, np.nan], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(lim, [True, False, False, False, False])
    cols = nyquist.resolution_columns(np.array([8.1, 12.0]), NATIVE_VS, "best_res")
    np.testing.assert_allclose(cols["best_res_A"], [8.58, 12.0])
    np.testing.assert_allclose(cols["best_res_raw_A"], [8.1, 12.0])
    np.testing.assert_array_equal(cols["nyquist_limited"], [True, False])
    assert cols["native_nyquist_A"] == pytest.approx(8.58)
    assert nyquist.coarser_grid(NATIVE_VS, GT_VS) and not nyquist.coarser_grid(GT_VS, GT_VS)
    with pytest.raises(ValueError, match="positive"):
        nyquist.native_nyquist(0.0)


def test_mrc_at_4_29_keeps_its_native_voxel_through_regridding_and_files(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    coarse = fourier_resample(_gt_maps(), NATIVE_BOX).numpy()
    for j, m in enumerate(coarse):
        io.write_mrc(sub / f"{j + 1:02d}.mrc", m, NATIVE_VS)
    np.savetxt(sub / "populations.txt", [0.2, 0.3, 0.5])
    ms = io.read_submission_folder(sub)
    assert ms.voxel_size == pytest.approx(NATIVE_VS, abs=1e-4) and ms.native_voxel_size == ms.voxel_size
    pre, rep = preprocess.preprocess_submission(ms, GT_BOX, GT_VS)
    assert pre.box == GT_BOX and pre.voxel_size == GT_VS
    assert pre.native_voxel_size == pytest.approx(NATIVE_VS, abs=1e-4)
    assert rep["native_voxel_A"] == pytest.approx(NATIVE_VS, abs=1e-4)
    back = MapSet.load(pre.save(tmp_path / "pre.npz"), mmap=True)
    assert back.voxel_size == GT_VS and back.native_voxel_size == pytest.approx(NATIVE_VS, abs=1e-4)
    assert back.subset([2, 0]).native_voxel_size == back.native_voxel_size
    assert back.with_maps(np.asarray(back.maps), voxel_size=1.0).native_voxel_size == back.native_voxel_size
    # a file from before the field: native = its voxel size
    with np.load(tmp_path / "pre.npz") as z:
        old = {k: z[k] for k in z.files if k != "native_voxel_size"}
    np.savez(tmp_path / "old.npz", **old)
    assert MapSet.load(tmp_path / "old.npz").native_voxel_size == GT_VS
    with pytest.raises(Exception, match="not positive"):
        MapSet(coarse, [0.2, 0.3, 0.5], NATIVE_VS, "x", native_voxel_size=0.0)


def test_upsampled_coarse_maps_are_reported_at_their_own_nyquist():
    """A set made at 4.29 Å (the GT Fourier-cropped to 16³) and Fourier-upsampled onto the
    2.145 Å GT grid: the corners of its cube hold frequencies up to √3 × its Nyquist, identical
    to the GT's, so the measured 0.5 crossing lies beyond 1/8.58 Å⁻¹ (here ~6.3 Å; the demo's
    cryoDRGN 8.09–8.31 Å) — information the set never had on a full shell."""
    gt = _gt_maps()
    ms = MapSet(fourier_resample(gt, NATIVE_BOX).numpy(), np.full(3, 1 / 3), NATIVE_VS, "coarse")
    pre = preprocess.to_gt_grid(ms, GT_BOX, GT_VS)
    raw = vm.distance_matrices(gt, pre.maps, metrics=["res"], voxel_size=GT_VS)["res"]
    assert np.all((np.diag(raw) > 2 * GT_VS) & (np.diag(raw) < 8.58 - 1.0))  # measured 6.1–6.3 Å
    got, lim = nyquist.clip_resolution(raw, pre.native_voxel_size)
    np.testing.assert_allclose(np.diag(got), 8.58, atol=1e-3)
    assert lim.diagonal().all()
    np.testing.assert_allclose(got, np.maximum(raw, 2 * pre.native_voxel_size))
    curves = vm.distance_matrices(gt, pre.maps, metrics=["fsc"], voxel_size=GT_VS)["fsc_curves"]
    np.testing.assert_allclose(fsc.resolution(curves, GT_VS, native_voxel_size=pre.native_voxel_size), got)


@pytest.mark.parametrize("noise", [0.0, 0.02, 0.2])
def test_a_set_on_its_native_grid_is_never_flagged(noise):
    gt = _gt_maps()
    rng = np.random.default_rng(1)
    sub = (gt + noise * gt.max() * rng.standard_normal(gt.shape)).astype(np.float32)
    ms = MapSet(sub, np.full(3, 1 / 3), GT_VS, "native")
    raw = vm.distance_matrices(gt, ms.maps, metrics=["res"], voxel_size=GT_VS)["res"]
    if noise == 0.0:
        np.testing.assert_allclose(np.diag(raw), 2 * GT_VS, rtol=1e-12)  # identical maps: exactly Nyquist
    got, lim = nyquist.clip_resolution(raw, ms.native_voxel_size)
    assert not lim.any()
    np.testing.assert_array_equal(got, raw)


def test_config_native_pixel_size_is_read_and_checked(tmp_path):
    sub = tmp_path / "subs" / "a"
    sub.mkdir(parents=True)
    for j, m in enumerate(_gt_maps(2)):
        io.write_mrc(sub / f"{j + 1:02d}.mrc", m, GT_VS)
    np.savetxt(sub / "populations.txt", [0.5, 0.5])
    entry = {"name": "a", "path": "a", "box_size": GT_BOX, "pixel_size": GT_VS, "native_pixel_size": NATIVE_VS}
    cfg = tmp_path / "subs" / "submission_config.json"
    cfg.write_text(json.dumps({"gt": {"box_size": GT_BOX, "pixel_size": GT_VS}, "0": entry}))
    (e,) = io.read_config(cfg)[1]
    ms = e.read()
    assert ms.voxel_size == pytest.approx(GT_VS, abs=1e-4) and ms.native_voxel_size == NATIVE_VS
    cfg.write_text(json.dumps({"gt": {"box_size": GT_BOX, "pixel_size": GT_VS},
                               "0": {**entry, "native_pixel_size": "4.29"}}))
    with pytest.raises(Exception, match=r"native_pixel_size.*Fix: give the voxel size"):
        io.read_config(cfg)
