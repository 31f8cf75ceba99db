"""The demo data set: deterministic, populations follow the mixture, mocks verifiably transformed,
files readable; alignment recovers the rotated mock's rotation."""
import json

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from helpers.kernels import align, preprocess
from helpers import io
from helpers.datagen import ensemble, mocks, simulate
from helpers.kernels.fourier import lowpass
from helpers.kernels.geometry import rotate_volume, rotation_angle
from helpers.core.paths import REPO_ROOT


def test_adk_superposition_and_pc1():
    adk = ensemble.load_adk(REPO_ROOT / "data/adk/adk_paths.npz")
    adk.pop("elements")
    assert adk["dims"].shape == (98, 1656, 3) and adk["dims2"].shape == (102, 1656, 3)
    sup = ensemble.superpose(adk)
    # the superposition is a rigid motion: internal distances unchanged
    d0 = np.linalg.norm(adk["tmd"][5, 0] - adk["tmd"][5, 100])
    assert np.linalg.norm(sup["tmd"][5, 0] - sup["tmd"][5, 100]) == pytest.approx(d0, abs=1e-9)
    # closed (first frame) vs open (last frame) CA-free heavy-atom RMSD is several Å (6.9 Å CA in the reference)
    rmsd = np.sqrt(((sup["dims"][0] - sup["dims"][-1]) ** 2).sum(1).mean())
    assert 5.0 < rmsd < 9.0
    mean, v, frac = ensemble.motion_pca(np.concatenate([sup["dims"], sup["tmd"]]), sup["dims"][0])
    p = ensemble.project_pc1(sup["dims"], mean, v)
    assert p[0] < 0 < p[-1] and frac > 0.5


def test_population_histogram_follows_the_mixture():
    pc1 = np.linspace(-100, 100, 2001)
    p = ensemble.three_gaussian_populations(pc1, -100, 100)
    rng = np.random.default_rng(0)
    draws = rng.choice(pc1, size=200_000, p=p)
    hist, edges = np.histogram(draws, bins=20, range=(-100, 100))
    centers = 0.5 * (edges[1:] + edges[:-1])
    # expected mass per bin from the closed-form mixture (same weights 1 : 1/2 : 1)
    from scipy.stats import norm
    mus, sds, ws = [-62, 0, 62], [11.5, 9.5, 11.5], [1, 0.5, 1]
    cdf = lambda x: sum(w * norm.cdf(x, m, s) for w, m, s in zip(ws, mus, sds))  # noqa: E731
    expect = np.diff(cdf(edges)) / (cdf(100) - cdf(-100)) * len(draws)
    assert np.abs(hist - expect).max() < 5 * np.sqrt(expect.max())
    mid = p[np.abs(pc1) < 5].mean()
    side = p[np.abs(pc1 - 62) < 5].mean()
    assert 0.45 < mid / side * (9.5 / 11.5) < 0.55  # middle mode has half the weight


def test_rendered_map_integrates_to_atomic_number():
    m = ensemble.render_maps(np.zeros((1, 1, 3)), ["O"], 32, 1.0)
    assert m.sum() == pytest.approx(8.0, rel=1e-4)
    assert np.unravel_index(m[0].argmax(), m[0].shape) == (16, 16, 16)


def test_dataset_is_deterministic_and_never_overwrites(tiny_data, tmp_path):
    again = tmp_path / "again"
    simulate.make_dataset(again, REPO_ROOT / "data/adk/adk_paths.npz", box=24, voxel_size=5.7, n_gt=24,
                          n_maps=6, n_small=3, n_images=24, seed=0)
    # equal to float32 rounding (threaded sums may add in another order on a loaded machine: seen
    # once, 1.4 % of voxels differing at 1e-5 relative, all in the tails below 1e-26)
    a, b = np.load(again / "gt/maps_gt.npy"), np.load(tiny_data / "gt/maps_gt.npy")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(b).max())
    np.testing.assert_array_equal(mrcfile.read(again / "particles/particles.mrcs"),
                                  mrcfile.read(tiny_data / "particles/particles.mrcs"))
    # a second call regenerates nothing: the user's (here: modified) files stay as they are
    np.save(again / "gt/maps_gt.npy", np.zeros((24, 24, 24, 24), np.float32))
    simulate.make_dataset(again, REPO_ROOT / "data/adk/adk_paths.npz", box=24, voxel_size=5.7, n_gt=24,
                          n_maps=6, n_small=3, n_images=24, seed=0)
    assert not np.load(again / "gt/maps_gt.npy").any()


def test_gt_files_in_challenge_format(tiny_data):
    meta = pd.read_csv(tiny_data / "gt/metadata.csv")
    assert list(meta.columns[:5]) == io.GT_METADATA_COLUMNS
    assert meta.populations.sum() == pytest.approx(1.0) and np.all(np.diff(meta.pc1) > 0)
    assert np.load(tiny_data / "gt/maps_gt.npy").shape == (24, 24, 24, 24)
    with mrcfile.open(tiny_data / "gt/mask.mrc") as m:
        assert m.data.min() >= 0 and m.data.max() <= 1 and float(m.voxel_size.x) == pytest.approx(5.7, abs=1e-4)
    star = starfile.read(tiny_data / "particles/particles.star", always_dict=True)
    assert set(star) == {"optics", "particles"} and len(star["particles"]) == 24


# columns each tool needs to read a particle stack without overrides (RELION 3.1 optics groups;
# cryoDRGN parse_ctf_star/parse_pose_star; cryoSPARC "Import particle stack" from a .star)
NEEDED = {
    "optics": {"rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
               "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality"},
    "particles": {"rlnImageName", "rlnMicrographName", "rlnOpticsGroup", "rlnDefocusU", "rlnDefocusV",
                  "rlnDefocusAngle", "rlnPhaseShift", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                  "rlnOriginXAngst", "rlnOriginYAngst"},
}


def test_particles_star_has_what_relion_cryodrgn_and_cryosparc_read(tiny_data):
    star = starfile.read(tiny_data / "particles/particles.star", always_dict=True)
    for block, cols in NEEDED.items():
        missing = cols - set(star[block].columns)
        assert not missing, (block, missing)
    p = star["particles"]
    assert (p.rlnPhaseShift == 0).all() and np.isfinite(p[list(NEEDED["particles"] - {"rlnImageName", "rlnMicrographName"})]).all().all()
    assert set(p.rlnRandomSubset) == {1, 2}
    assert star["optics"].rlnImageSize.iloc[0] == 24 and star["optics"].rlnImagePixelSize.iloc[0] == pytest.approx(5.7)
    # hetbook reads it back with the same poses and CTF (the extra columns change nothing)
    parts = io.read_particles(tiny_data / "particles/particles.star")
    np.testing.assert_allclose(parts.table.rlnDefocusU.to_numpy(), p.rlnDefocusU.to_numpy())


def test_cryodrgn_parses_the_star_without_overrides(tiny_data, tmp_path):
    """cryoDRGN's own parsers (where it is installed): CTF parameters finite (phase shift 0, not
    NaN), poses as many as particles."""
    import pickle
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from helpers.core.paths import REPO_ROOT

    cands = [Path(sys.executable).parent / "cryodrgn", REPO_ROOT / ".venv-cryodrgn/bin/cryodrgn"]
    exe = next((str(c) for c in cands if c.exists()), None) or shutil.which("cryodrgn")
    if exe is None:
        pytest.skip("cryoDRGN is not installed (make cryodrgn installs it)")
    star = tiny_data / "particles/particles.star"
    for cmd in (["parse_ctf_star", str(star), "-o", str(tmp_path / "ctf.pkl")],
                ["parse_pose_star", str(star), "-o", str(tmp_path / "pose.pkl")]):
        r = subprocess.run([exe, *cmd], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    with open(tmp_path / "ctf.pkl", "rb") as fh:
        ctf = pickle.load(fh)
    assert ctf.shape == (24, 9) and np.isfinite(ctf).all() and (ctf[:, 8] == 0).all()
    assert ctf[0, 0] == 24 and ctf[0, 1] == pytest.approx(5.7)


def test_mocks_are_what_their_truth_says(tiny_data):
    gt_maps = np.load(tiny_data / "gt/maps_gt.npy")
    meta = pd.read_csv(tiny_data / "gt/metadata.csv")
    cfg = json.loads((tiny_data / "submissions/submission_config.json").read_text())
    assert list(cfg)[0] == "gt"
    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    avg, p_avg, _ = mocks.averaged_gt(gt_maps, meta.populations.to_numpy(), meta.pc1.to_numpy(), 6)
    np.testing.assert_allclose(read["Averaged GT"].read().maps, avg, atol=1e-6)
    rec_e = read["Reconstructed"]
    rec = rec_e.read()
    truth = rec_e.extra["hetbook_truth"]
    counts = np.array(truth["images_per_map"])
    assert counts.min() >= 10 and counts.sum() <= truth["n_images"] == 1500
    np.testing.assert_allclose(rec.populations, counts / counts.sum(), rtol=1e-6)
    # each reconstruction is its PC1 group's state: it correlates best with that group's average
    a, r = avg.reshape(6, -1), rec.maps.reshape(rec.n_maps, -1)
    corr = np.corrcoef(np.concatenate([r, a]))[: rec.n_maps, rec.n_maps:]
    if rec.n_maps == 6:  # noisy 24 px maps: compare own group with groups ≥ 3 away (measured 0.81 vs 0.71)
        far = np.abs(np.subtract.outer(np.arange(6), np.arange(6))) >= 3
        assert corr.diagonal().mean() > corr[far].mean() + 0.05, corr.round(2)
    base = rec.maps
    rot = read["Rotated"]
    R = np.array(rot.extra["hetbook_truth"]["rotation_matrix"])
    np.testing.assert_allclose(rot.read().maps, rotate_volume(base, R).numpy(), atol=1e-5)
    np.testing.assert_array_equal(read["Flipped hand"].read().maps, base[..., ::-1])
    other = read["Other grid"].read()
    assert other.box != 24 and other.voxel_size < 5.7
    back = preprocess.to_gt_grid(other, 24, 5.7)
    # exact below Nyquist (an even box's Nyquist plane has no unique resampling)
    lp = lambda v: lowpass(v, 2 * 5.7 / 0.95, 5.7).numpy()  # noqa: E731
    np.testing.assert_allclose(lp(back.maps), lp(base), atol=1e-4 * np.abs(base).max())
    for lab in ("Bimodal", "Middle mode", "Noisy", "Low-pass"):
        assert read[lab].read().n_maps == rec.n_maps
    np.testing.assert_array_equal(read["Bimodal"].read().maps, base)
    mo = read["Missing open"].read()
    assert 0 < mo.n_maps < rec.n_maps and mo.populations.sum() == pytest.approx(1.0)
    assert read["3 maps"].read().n_maps <= 3
    assert read["DIMS2 path"].read().n_maps >= 3


def test_alignment_recovers_the_rotated_mock_within_3_degrees(tiny_data):
    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, _ = io.read_mrc(tiny_data / "gt/reference.mrc")
    rot = read["Rotated"]
    R_true = np.array(rot.extra["hetbook_truth"]["rotation_matrix"])
    res = align.align_to_reference(rot.read().maps, ref, box_ds=24, n_directions=200, n_inplane=18)
    assert rotation_angle(res["rotation"] @ R_true) < 3.0


def test_hand_test_detects_the_mirror(tiny_data):
    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, _ = io.read_mrc(tiny_data / "gt/reference.mrc")
    res = align.align_to_reference(read["Flipped hand"].read().maps, ref, box_ds=24, n_directions=150,
                                   n_inplane=12, test_hand=True)
    assert res["flipped"] and res["score_mirror"] > 0.8  # reconstructed (noisy) maps: measured 0.89


@pytest.mark.parametrize("shift", [(1, 0, 0), (2, -3, 1)])
def test_alignment_recovers_a_rotated_and_shifted_submission(tiny_data, shift):
    """180° about an oblique axis plus a shift (voxels, (dz, dy, dx)): the rotation search about
    the box centre alone found the wrong pose (correlation ~0.5); centring on the centres of
    mass first recovers rotation and translation."""
    from helpers.kernels.geometry import axis_angle_to_matrix, rotate_volume

    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, _ = io.read_mrc(tiny_data / "gt/reference.mrc")
    maps = read["Averaged GT"].read().maps
    R_true = axis_angle_to_matrix([1, 1, 0], 180)
    moved = np.roll(rotate_volume(maps, R_true).numpy(), shift, axis=(1, 2, 3))
    res = align.align_to_reference(moved, ref, box_ds=24, n_directions=200, n_inplane=18)
    assert rotation_angle(res["rotation"] @ R_true) < 4.0
    back = rotate_volume(moved.mean(0), res["rotation"], shift_in=res["shift_in"], shift_out=res["shift_out"]).numpy()
    assert np.corrcoef(back.ravel(), maps.mean(0).ravel())[0, 1] > 0.95
    assert res["score"] > align.MIN_SCORE


def test_alignment_of_an_unrelated_map_is_called_doubtful(tiny_data):
    from helpers.kernels import preprocess
    from helpers.io.mapset import MapSet

    ref, _ = io.read_mrc(tiny_data / "gt/reference.mrc")
    noise = np.random.default_rng(0).standard_normal((3,) + ref.shape).astype(np.float32)
    with pytest.warns(UserWarning, match="alignment doubtful"):
        _, rep = preprocess.preprocess_submission(MapSet(noise, [1 / 3] * 3, 5.7, "noise"), ref.shape[-1], 5.7,
                                                  align=True, reference=ref,
                                                  align_kwargs=dict(box_ds=16, n_directions=50, n_inplane=8))
    assert rep["alignment_doubtful"] and rep["score"] < align.MIN_SCORE


def test_a_set_at_half_its_stated_voxel_size_is_named(tiny_data):
    """Maps holding the reference magnified twice (the central half of the field at half the voxel,
    as RECOVAR 1.0.5 wrote them) under the reference's voxel size: the alignment is doubtful, the
    check aligns them at half the voxel size above MIN_SCORE and says so; a set whose alignment is
    fine is not checked (red without voxel_size_check)."""
    from helpers.kernels import preprocess
    from helpers.kernels.fourier import crop_or_pad, resample_stack
    from helpers.io.mapset import MapSet

    ref, vs = io.read_mrc(tiny_data / "gt/reference.mrc")
    n = ref.shape[-1]
    big = crop_or_pad(resample_stack(ref[None].astype(np.float32), 2 * n)[0], n).numpy()  # 2x finer, centre kept
    maps = np.stack([big, big]).astype(np.float32)
    kw = dict(box_ds=n, n_directions=200, n_inplane=12)
    with pytest.warns(UserWarning, match=r"at [0-9.]+ Å per voxel \(half the stated"):
        _, rep = preprocess.preprocess_submission(MapSet(maps, [0.5, 0.5], vs, "magnified"), n, vs, align=True,
                                                  reference=ref, align_kwargs=kw)
    assert rep["alignment_doubtful"] and rep["score_at_half_voxel"] >= align.MIN_SCORE > rep["score"]
    assert rep["score_at_double_voxel"] < rep["score_at_half_voxel"] and rep["voxel_size_suggested_A"] == vs / 2
    _, fine = preprocess.preprocess_submission(MapSet(np.stack([ref, ref]).astype(np.float32), [0.5, 0.5], vs, "ok"),
                                               n, vs, align=True, reference=ref, align_kwargs=kw)
    assert not fine["alignment_doubtful"] and "score_at_half_voxel" not in fine


@pytest.mark.parametrize("flip", [False, True])
def test_preprocess_submission_aligns_without_touching_the_callers_maps(tiny_data, flip):
    """Grid → flip → align equals flip_hand then rotate_volume with the rotation it reports (the
    aligned set is rotated in place when preprocess_submission made it — after a flip — and into
    a new array otherwise); the caller's maps are unchanged either way."""
    from helpers.kernels import preprocess
    from helpers.kernels.geometry import axis_angle_to_matrix, rotate_volume
    from helpers.io.mapset import MapSet

    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, vs = io.read_mrc(tiny_data / "gt/reference.mrc")
    maps = read["Averaged GT"].read().maps[:4]
    moved = rotate_volume(maps, axis_angle_to_matrix([1, 2, 0], 50)).numpy()
    if flip:
        moved = np.ascontiguousarray(moved[..., ::-1])
    ms = MapSet(moved, [0.25] * 4, vs, "moved")
    before = ms.maps.copy()
    pre, rep = preprocess.preprocess_submission(ms, ref.shape[-1], vs, flip=flip, align=True, reference=ref,
                                                align_kwargs=dict(box_ds=24, n_directions=200, n_inplane=18))
    np.testing.assert_array_equal(ms.maps, before)
    src = np.ascontiguousarray(before[..., ::-1]) if flip else before
    want = rotate_volume(src, np.array(rep["rotation_matrix"]), shift_in=rep["shift_in"],
                         shift_out=rep["shift_out"]).numpy()
    np.testing.assert_allclose(pre.maps, want, atol=1e-6)
    assert rep["score"] > align.MIN_SCORE


def test_the_hand_test_mirrors_the_maps_it_rotates(tiny_data):
    """A mirrored, rotated submission aligned with test_hand: the alignment finds the mirror
    fits better, and preprocess_submission mirrors the maps before applying that mirror's
    rotation (issue 32: it rotated the unmirrored maps, correlation 0.49 with the truth)."""
    from helpers.kernels import preprocess
    from helpers.kernels.geometry import axis_angle_to_matrix, rotate_volume
    from helpers.io.mapset import MapSet

    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, vs = io.read_mrc(tiny_data / "gt/reference.mrc")
    maps = read["Averaged GT"].read().maps[:4]
    moved = np.ascontiguousarray(rotate_volume(maps, axis_angle_to_matrix([1, 2, 0], 50)).numpy()[..., ::-1])
    pre, rep = preprocess.preprocess_submission(MapSet(moved, [0.25] * 4, vs, "mirrored"), ref.shape[-1], vs,
                                                align=True, reference=ref,
                                                align_kwargs=dict(box_ds=24, n_directions=200, n_inplane=18,
                                                                  test_hand=True))
    assert rep["flipped"] and rep["hand_flipped_by_alignment"] and rep["flip"]
    cc = np.corrcoef(pre.maps.mean(0).ravel(), maps.mean(0).ravel())[0, 1]
    assert cc > 0.9, cc  # measured 0.918, as for the same maps unmirrored (the pose grid's precision)


class _CountingStack:
    """A (n, N, N, N) stack that counts the maps read through it."""

    def __init__(self, x):
        self.x, self.shape, self.dtype, self.read = x, x.shape, x.dtype, 0

    def __getitem__(self, key):
        out = self.x[key]
        self.read += len(out)
        return out


@pytest.mark.parametrize("chunk,scratch", [(None, False), (1, False), (3, True)])
def test_averaged_gt_for_many_counts_reads_the_gt_once(tmp_path, monkeypatch, chunk, scratch):
    """Chapter 5's study needs Averaged-GT mocks for several numbers of maps: one pass over the GT
    gives each group's float64 numpy mean, summed populations and mean pc1, in memory or (large)
    as memory maps in a scratch folder."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((23, 6, 6, 6)).astype(np.float32) + 2.0
    pops, pc1 = rng.random(23), rng.standard_normal(23)
    if scratch:
        monkeypatch.setattr(mocks, "SCRATCH_BYTES", 0)
    stack = _CountingStack(x)
    got = mocks.averaged_gt_many(stack, pops, pc1, [2, 5, 11], scratch=tmp_path if scratch else None, chunk=chunk)
    assert stack.read == 23  # every GT map read once for all three counts
    order = np.argsort(pc1, kind="stable")
    for k, (m, p, c) in got.items():
        groups = np.array_split(order, k)
        np.testing.assert_allclose(m, np.stack([x[g].astype(np.float64).mean(0) for g in groups]), atol=1e-6)
        np.testing.assert_allclose(p, [pops[g].sum() / pops.sum() for g in groups], rtol=1e-12)
        np.testing.assert_allclose(c, [pc1[g].mean() for g in groups], rtol=1e-12)
        assert isinstance(m, np.memmap) == scratch and m.dtype == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == (
        ["averaged_gt_11.npy", "averaged_gt_2.npy", "averaged_gt_5.npy"] if scratch else [])
    with pytest.raises(ValueError, match="1 … 23"):
        mocks.averaged_gt_many(x, pops, pc1, [24])


def test_inverted_contrast_is_named(tiny_data):
    """Maps with protein dark (−1 × a GT-derived set) are announced, with the correlation with the
    GT reference (issue 32: scored without a word); the same maps as given raise no notice."""
    import warnings

    from helpers.kernels import preprocess
    from helpers.io.mapset import MapSet

    read = {e.label: e for e in io.read_config(tiny_data / "submissions/submission_config.json")[1]}
    ref, vs = io.read_mrc(tiny_data / "gt/reference.mrc")
    maps = read["Averaged GT"].read().maps[:4]
    with pytest.warns(UserWarning, match=r"correlates negatively with the GT reference \(r = -0\.9"):
        _, rep = preprocess.preprocess_submission(MapSet(-maps, [0.25] * 4, vs, "dark"), ref.shape[-1], vs,
                                                  reference=ref)
    assert rep["corr_with_reference"] < -0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, rep = preprocess.preprocess_submission(MapSet(maps, [0.25] * 4, vs, "bright"), ref.shape[-1], vs,
                                                  reference=ref)
    assert rep["corr_with_reference"] > 0.9
