"""The control matched to a real method's budget (helpers.pipeline.matched): its images are the particle
stack as a downsampling method sees it, and it lands in the submissions folder like any entry."""
import json
import shutil

import numpy as np
import pytest

from helpers.pipeline import matched
from helpers.datagen import reconstruct as rc
from helpers.datagen.particles import simulate_particles
from helpers.kernels.fourier import fourier_resample
from helpers.kernels.geometry import euler_to_matrix
from helpers.kernels import fsc
from tests.test_reconstruct import _blob_map


def test_downsampled_images_reconstruct_the_downsampled_map():
    """Noiseless 24-px images cropped to 12 px reconstruct the Fourier-resampled map at twice the
    voxel size: FSC ≥ 0.95 up to 80 % of Nyquist and the scale of the full-size reconstruction
    (0.7–0.85 without gridding correction, tests/test_reconstruct.py). Scaling the cropped images
    by box/n halves it; without rescaling the shifts the outer shells decorrelate."""
    vol = _blob_map(n=24, seed=5)
    rng = np.random.default_rng(2)
    imgs, _, tab, _ = simulate_particles(vol[None], np.array([1.0]), 1500, 1.0, rng, snr=1e12,
                                         defocus_range=(8000.0, 20000.0))
    small, t, factor = matched.downsampled_stack(imgs, tab, 12)
    assert small.shape == (1500, 12, 12) and factor == 2.0
    R = euler_to_matrix(t.rlnAngleRot, t.rlnAngleTilt, t.rlnAnglePsi)
    out = rc.reconstruct(small, 2.0, R, t[["hetbookShiftXPx", "hetbookShiftYPx"]].to_numpy(),
                         t.rlnDefocusU, t.rlnDefocusV, t.rlnDefocusAngle)
    ref = fourier_resample(vol[None], 12).numpy()
    f = fsc.fsc_matrix(ref, out["maps"], None, background=False)[0, 0]
    assert f[: int(0.8 * 6)].min() > 0.95, f.round(3)
    scale = float((out["maps"][0] * ref[0]).sum() / (ref[0] ** 2).sum())
    assert 0.7 < scale < 0.85, scale


def test_matched_control_is_written_once_as_a_submission(tiny_data, tmp_path):
    """On the tiny data set (24 training images of 24 px): the control has the method's box and
    voxel size, one map per populated group, populations = image fractions, and a second call
    leaves the entry alone."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    with pytest.raises(Exception, match="at most 24"):
        matched.add_matched_control(data, box=48, n_maps=1)
    rec = matched.add_matched_control(data, box=12, n_maps=1)
    assert rec["label"] == "Recon. 24 img @12" and rec["voxel_size_A"] == pytest.approx(11.4)
    cfg = json.loads((data / "submissions" / "submission_config.json").read_text())
    entry = [v for v in cfg.values() if isinstance(v, dict) and v.get("name") == matched.MATCHED_NAME]
    assert len(entry) == 1 and entry[0]["box_size"] == 12 and entry[0]["align"] == 0
    assert np.loadtxt(data / "submissions" / matched.MATCHED_NAME / "populations.txt") == pytest.approx(1.0)
    assert matched.add_matched_control(data, box=12, n_maps=1) == {"name": matched.MATCHED_NAME,
                                                                   "label": "Recon. 24 img @12"}


def test_heldout_stack_is_an_independent_draw(tiny_data):
    """particles/heldout.star names its own stack, holds n_heldout images of the same optics,
    and none of its images is one of the training images (an independent draw, not a split of
    the same noise)."""
    from helpers import io

    train = io.read_particles(tiny_data / "particles" / "particles.star")
    held = io.read_particles(tiny_data / "particles" / "heldout.star")
    assert len(held.table) == 8 and held.table.rlnImageName.str.endswith("@heldout.mrcs").all()
    assert held.pixel_size == train.pixel_size and held.images.shape[1:] == train.images.shape[1:]
    a = np.asarray(train.images).reshape(len(train.table), -1)
    b = np.asarray(held.images).reshape(len(held.table), -1)
    assert np.abs(a[:, None] - b[None]).max(axis=2).min() > 0
    assert held.table.hetbookTrueMapIndex.between(0, 23).all()


def test_budgets_and_label_are_read_from_the_data_folder(tiny_data, tmp_path):
    """budgets(): each entry's image count and box from the config's records (the tiny data set:
    Reconstructed from 1 500 images at 24 px; the matched control from the 24 training images at
    12 px); matched_label_in() finds the control, None before it is added."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    assert matched.matched_label_in(data) is None
    matched.add_matched_control(data, box=12, n_maps=1)
    b = matched.budgets(data)
    assert b["Reconstructed"] == {"n_images": 1500, "box": 24}
    assert b["Recon. 24 img @12"] == {"n_images": 24, "box": 12}
    assert matched.matched_label_in(data) == "Recon. 24 img @12"
    # the real methods' records (cryoDRGN's and RECOVAR's run.json): their box, the stack's size
    for key, lab, box in (("cryodrgn", "cryoDRGN", 12), ("recovar", "RECOVAR", 16)):
        (data / key).mkdir(exist_ok=True)
        (data / key / "run.json").write_text(json.dumps({"label": lab, "box": box}))
    b = matched.budgets(data)
    assert b["cryoDRGN"] == {"n_images": 24, "box": 12} and b["RECOVAR"] == {"n_images": 24, "box": 16}
    from helpers.pipeline.chapters.summary import method_context
    runs = method_context(data, tmp_path / "results", ["RECOVAR", "cryoDRGN", "Other"])["runs"]
    assert runs == {"RECOVAR": {"label": "RECOVAR", "box": 16}, "cryoDRGN": {"label": "cryoDRGN", "box": 12},
                    "Other": {}}
