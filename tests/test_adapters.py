"""Method-output adapters (helpers.methods.adapters) on files written in each tool's exact format."""
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import blob_volume
from helpers.methods import adapters
from helpers import io
from helpers.core.errors import InputError


def _series(folder, n=4, box=12, vs=2.5, names="vol_{:03d}.mrc", start=1):
    folder.mkdir(parents=True, exist_ok=True)
    maps = np.stack([blob_volume(box, [((t - n / 2, 0, 0), 1.0)]) for t in range(n)]).astype(np.float32)
    for i, m in enumerate(maps):
        io.write_mrc(folder / names.format(i + start), m, vs)
    return maps


@pytest.mark.parametrize("fmt", ["txt", "npy", "csv", "pkl"])
def test_volume_series_populations_are_particle_fractions(tmp_path, fmt):
    maps = _series(tmp_path / "vols", n=4)
    lab = np.array([0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    f = tmp_path / f"labels.{fmt}"
    if fmt == "txt":
        np.savetxt(f, lab, fmt="%d")
    elif fmt == "npy":
        np.save(f, lab)
    elif fmt == "csv":
        f.write_text("particle,cluster\n" + "".join(f"{i},{v}\n" for i, v in enumerate(lab)))
    else:
        with open(f, "wb") as fh:
            pickle.dump(lab, fh)  # what cryoDRGN's utils.save_pkl writes
    ms = adapters.volume_series(tmp_path / "vols", labels=f, label="method X")
    np.testing.assert_allclose(ms.populations, [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(ms.maps, maps, atol=1e-6)
    assert ms.voxel_size == pytest.approx(2.5) and ms.label == "method X"
    assert ms.provenance["n_particles"] == 10 and ms.provenance["labels"] == str(f)
    # 1-based labels (state k = k-th map) give the same populations
    np.savetxt(tmp_path / "one.txt", lab + 1, fmt="%d")
    np.testing.assert_allclose(adapters.volume_series(tmp_path / "vols", labels=tmp_path / "one.txt").populations,
                               [0.1, 0.2, 0.3, 0.4])


def test_volume_series_bad_inputs_name_the_file(tmp_path):
    _series(tmp_path / "vols", n=3)
    bad = tmp_path / "bad.txt"
    np.savetxt(bad, [0, 1, 5], fmt="%d")
    with pytest.raises(InputError, match=r"bad\.txt.*0 to 5 but there are 3 maps"):
        adapters.volume_series(tmp_path / "vols", labels=bad)
    frac = tmp_path / "frac.txt"
    np.savetxt(frac, [0.5, 1.2, 2.0])
    with pytest.raises(InputError, match=r"frac\.txt.*whole numbers"):
        adapters.volume_series(tmp_path / "vols", labels=frac)
    with pytest.raises(InputError, match="exactly one of labels"):
        adapters.volume_series(tmp_path / "vols")
    with pytest.raises(InputError, match=r"missing\.txt.*not found"):
        adapters.volume_series(tmp_path / "vols", labels=tmp_path / "missing.txt")
    with pytest.raises(InputError, match="not a folder"):
        adapters.volume_series(tmp_path / "nothing", labels=bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="contains no maps"):
        adapters.volume_series(tmp_path / "empty", labels=bad)
    # a map nobody was assigned to: population 0, kept, with a notice
    some = tmp_path / "some.txt"
    np.savetxt(some, [0, 0, 2], fmt="%d")
    with pytest.warns(UserWarning, match="no particle assigned"):
        ms = adapters.volume_series(tmp_path / "vols", labels=some)
    np.testing.assert_allclose(ms.populations, [2 / 3, 0, 1 / 3])
    # or a populations file, one value per map
    pops = tmp_path / "pops.txt"
    np.savetxt(pops, [1, 1, 2])
    np.testing.assert_allclose(adapters.volume_series(tmp_path / "vols", populations=pops).populations, [0.25, 0.25, 0.5])


def test_pickled_labels_never_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    f = tmp_path / "labels.pkl"
    with open(f, "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(InputError, match="other than numpy arrays"):
        adapters.load_pickled_array(f)
    assert not (tmp_path / "pwned").exists()
    for proto in (2, 4, 5):  # numpy arrays in every protocol cryoDRGN's Python may use
        with open(f, "wb") as fh:
            pickle.dump(np.arange(5, dtype=np.int32), fh, protocol=proto)
        np.testing.assert_array_equal(adapters.load_pickled_array(f), np.arange(5))


def _analyze_folder(root, k=4, n_particles=20, seed=0):
    sub = root / "analyze.49" / f"kmeans{k}"
    maps = _series(sub, n=k)  # cryoDRGN ≥ 3: vol_001.mrc … (vol_start_index 1)
    lab = np.random.default_rng(seed).integers(0, k, n_particles)
    with open(sub / "labels.pkl", "wb") as fh:
        pickle.dump(lab, fh)
    np.savetxt(sub / "centers.txt", np.zeros((k, 8)))
    return root / "analyze.49", maps, lab


def test_cryodrgn_analyze_folder(tmp_path):
    folder, maps, lab = _analyze_folder(tmp_path, k=4)
    ms = adapters.cryodrgn_analyze(folder, voxel_size=None)
    np.testing.assert_allclose(ms.populations, np.bincount(lab, minlength=4) / len(lab))
    np.testing.assert_allclose(ms.maps, maps, atol=1e-6)
    assert ms.label == "cryoDRGN" and ms.provenance["kmeans"] == 4
    _analyze_folder(tmp_path, k=6)  # a second K: the largest is chosen unless k= says otherwise
    assert adapters.cryodrgn_analyze(folder).n_maps == 6
    assert adapters.cryodrgn_analyze(folder, k=4).n_maps == 4
    with pytest.raises(InputError, match="no kmeans5"):
        adapters.cryodrgn_analyze(folder, k=5)
    (folder / "kmeans4" / "labels.pkl").unlink()
    with pytest.raises(InputError, match=r"labels\.pkl.*not found"):
        adapters.cryodrgn_analyze(folder, k=4)
    with pytest.raises(InputError, match="no kmeans"):
        adapters.cryodrgn_analyze(tmp_path)
    (folder / "kmeans6" / "vol_006.mrc").unlink()
    with pytest.raises(InputError, match="5 maps for K = 6"):
        adapters.cryodrgn_analyze(folder, k=6)


def test_write_submission_round_trips_through_the_challenge_reader(tmp_path):
    folder, maps, lab = _analyze_folder(tmp_path / "run", k=4)
    ms = adapters.cryodrgn_analyze(folder)
    subs = tmp_path / "submissions"
    with pytest.raises(InputError, match="no gt= entry"):
        adapters.write_submission(ms, subs, name="cryodrgn")
    gt = {"name": "gt", "path": "../gt", "box_size": 12, "pixel_size": 2.5, "ref_align_fname": "reference.mrc"}
    (tmp_path / "gt").mkdir()
    io.write_mrc(tmp_path / "gt" / "reference.mrc", maps[0], 2.5)
    adapters.write_submission(ms, subs, name="cryodrgn", gt=gt)
    _, entries = io.read_config(subs / "submission_config.json")
    back = [e for e in entries if e.label == "cryoDRGN"]
    assert len(back) == 1
    got = back[0].read()
    np.testing.assert_allclose(got.maps, ms.maps, atol=1e-6)
    np.testing.assert_allclose(got.populations, ms.populations, rtol=1e-9)
    assert got.voxel_size == pytest.approx(ms.voxel_size)
    assert json.loads((subs / "submission_config.json").read_text())["0"]["hetbook_provenance"]["kmeans"] == 4
    assert back[0].align and not back[0].flip
    with pytest.raises(InputError, match="exists already"):
        adapters.write_submission(ms, subs, name="cryodrgn")


def test_cryodrgn_workdir_with_the_real_tool(cryodrgn_entry):
    """Where cryoDRGN is installed: the 2-epoch, 8-D model the data step trained on the tiny demo
    particles (:func:`adapters.train_cryodrgn`: parse, downsample 24 → 16 px, train_vae; the
    ``cryodrgn_entry`` fixture), its maps generated by cryoDRGN (k-means through `analyze`, and
    along the latent PC1 through `eval_vol`) with populations from the particles' latent
    coordinates."""
    data, _ = cryodrgn_entry
    exe = adapters.find_cryodrgn()
    star, stack = data / "particles/particles.star", data / "particles/particles.mrcs"
    work, vs = adapters.train_cryodrgn(star, stack, data / "cryodrgn", box=16, zdim=8, epochs=2, exe=exe)  # reused
    assert work == data / "cryodrgn/train" and vs == pytest.approx(5.7 * 24 / 16)
    assert (work / "weights.2.pkl").is_file() and not (work / "weights.3.pkl").exists()
    km = adapters.cryodrgn_workdir(work, voxel_size=vs, how="kmeans", n=3)
    assert km.n_maps == 3 and km.box == 16 and km.voxel_size == pytest.approx(vs, abs=1e-3)
    assert km.populations.sum() == pytest.approx(1.0) and km.provenance["epoch"] == 2
    pc = adapters.cryodrgn_workdir(work, voxel_size=vs, how="pc1", n=4)
    z = adapters.load_pickled_array(work / "z.2.pkl").reshape(24, -1).astype(float)
    assert z.shape == (24, 8)
    t = (z - z.mean(0)) @ np.linalg.svd(z - z.mean(0))[2][0]  # PC1 coordinates (sign arbitrary)
    pts = np.array(pc.provenance["pc1_points"])
    near = [np.bincount(np.argmin(np.abs(s * t[:, None] - pts[None]), 1), minlength=4) / 24 for s in (1, -1)]
    assert any(np.allclose(pc.populations, x) for x in near)
    assert pc.n_maps == 4 and not np.allclose(pc.maps[0], pc.maps[-1])


def test_cryodrgn_reads_our_images_in_our_conventions(tmp_path):
    """Where cryoDRGN is installed: its `backproject_voxel` of our noiseless particle images
    (poses, shifts and CTF through our STAR file, its default data sign) gives back the map they
    were made from — same axes, same hand (the mirror correlates far less), and our alignment
    finds the identity (measured with 4.3.1 on a 32³ map: correlation 0.98, mirror 0.39, 0.02°). Fails
    with rot/psi swapped or the x shift's sign flipped in our STAR file."""
    import starfile

    from helpers.kernels import align
    from helpers.datagen.particles import simulate_particles, star_tables
    from helpers.kernels.geometry import rotation_angle

    try:
        exe = adapters.find_cryodrgn()
    except InputError:
        pytest.skip("cryoDRGN is not installed (make cryodrgn installs it)")
    N, vs = 24, 5.0
    vol = blob_volume(N, [((4, 1, 0), 1.0), ((-3, 3, 2), 0.8), ((1, -3, 4), 0.6), ((0, 0, -4), 0.7)]).astype(np.float32)
    _, clean, table, _ = simulate_particles(vol[None], np.array([1.0]), 1500, vs, np.random.default_rng(0),
                                            snr=1e8, max_shift=3.0)
    io.write_mrc(tmp_path / "particles.mrcs", clean, vs)
    optics, parts = star_tables(table, vs, N)
    starfile.write({"optics": optics, "particles": parts}, tmp_path / "particles.star")
    star = tmp_path / "particles.star"
    adapters._run([exe, "parse_ctf_star", star, "-o", tmp_path / "ctf.pkl"], star)
    adapters._run([exe, "parse_pose_star", star, "-o", tmp_path / "pose.pkl"], star)
    adapters._run([exe, "backproject_voxel", tmp_path / "particles.mrcs", "--poses", tmp_path / "pose.pkl",
                   "--ctf", tmp_path / "ctf.pkl", "-o", tmp_path / "bp", "--no-half-maps"], star)
    bp, got_vs = io.read_map_stack(tmp_path / "bp" / "backproject.mrc")
    assert got_vs == pytest.approx(vs, abs=1e-3)

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    c, c_mirror = corr(bp[0], vol), corr(bp[0], vol[..., ::-1])
    assert c > 0.95 and c_mirror < c - 0.3, (c, c_mirror)
    res = align.align_to_reference(bp, vol, test_hand=True)
    assert not res["flipped"] and float(rotation_angle(res["rotation"])) < 3.0


def test_demo_cryodrgn_entry(tiny_data, tmp_path, monkeypatch, capsys, request):
    """The data step's cryoDRGN entry (``dataset.cryodrgn``): without cryoDRGN a note says how to
    add it and nothing is written; bad options stop with a message; where cryoDRGN is installed
    a tiny training (the ``cryodrgn_entry`` fixture) becomes a submission whose config entry
    names the method, with a run record, and a second call trains nothing."""
    import shutil

    from conftest import DRGN_OPTS
    from helpers.pipeline import demo_data

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = (data / "submissions/submission_config.json").read_text()
    with pytest.raises(SystemExit, match="dataset.cryodrgn should be a mapping"):
        demo_data.ensure_cryodrgn(data, {"epochs": 2, "depth": 3})

    def absent(exe=None):
        raise InputError("cryodrgn", "the cryoDRGN command was not found.", "make cryodrgn")

    with monkeypatch.context() as m:
        m.setattr(adapters, "find_cryodrgn", absent)
        demo_data.ensure_cryodrgn(data, {"epochs": 2})
    said = capsys.readouterr().out
    assert "cryoDRGN is not installed" in said and "make cryodrgn" in said
    assert not (data / "submissions/cryodrgn").exists()
    assert (data / "submissions/submission_config.json").read_text() == before
    data, before = request.getfixturevalue("cryodrgn_entry")   # skips where cryoDRGN is absent
    cfg = json.loads((data / "submissions/submission_config.json").read_text())
    entry = [v for k, v in cfg.items() if k != "gt" and v["name"] == "cryodrgn"]
    assert len(entry) == 1 and entry[0]["hetbook_provenance"]["method"] == "cryoDRGN" and entry[0]["align"] == 1
    assert set(json.loads(before)) == set(cfg) - {k for k, v in cfg.items() if k != "gt" and v["name"] == "cryodrgn"}
    rec = json.loads((data / "cryodrgn/run.json").read_text())
    import subprocess  # the version recorded = the one the command itself prints
    assert rec["cryodrgn_version"] in subprocess.run([adapters.find_cryodrgn(), "--version"], capture_output=True,
                                                     text=True).stdout
    assert rec["epochs"] == 2 and rec["voxel_size_A"] == pytest.approx(5.7 * 24 / 16) and rec["train_s"] > 0
    ms = io.read_submission_folder(data / "submissions/cryodrgn")
    assert ms.n_maps == DRGN_OPTS["n_maps"] and ms.populations.sum() == pytest.approx(1.0)
    stamp = (data / "cryodrgn/train/weights.2.pkl").stat().st_mtime_ns
    assert adapters.add_cryodrgn_entry(data, **{k: v for k, v in DRGN_OPTS.items()}) == rec  # present: returned, not redone
    assert (data / "cryodrgn/train/weights.2.pkl").stat().st_mtime_ns == stamp


def test_native_voxel_size_travels_through_a_written_submission(tmp_path):
    """Maps resampled before submission (2.5 Å files, made at 5 Å): the adapter's native voxel
    size goes into the config (``native_pixel_size``) and comes back with the read set."""
    folder, maps, _ = _analyze_folder(tmp_path / "run", k=4)
    ms = adapters.cryodrgn_analyze(folder, native_voxel_size=5.0)
    assert ms.voxel_size == pytest.approx(2.5) and ms.native_voxel_size == 5.0
    assert adapters.cryodrgn_analyze(folder).native_voxel_size == pytest.approx(2.5)  # default: the files'
    gt = {"name": "gt", "path": "../gt", "box_size": 12, "pixel_size": 2.5}
    adapters.write_submission(ms, tmp_path / "submissions", name="cryodrgn", gt=gt, align=False)
    (e,) = io.read_config(tmp_path / "submissions" / "submission_config.json")[1]
    got = e.read()
    assert got.native_voxel_size == 5.0 and got.voxel_size == pytest.approx(2.5)


FAKE_CRYODRGN = """#!{python}
# eval_vol as cryoDRGN runs it: one map per row of --zfile, box {box}, header voxel --Apix
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {repo!r})
from helpers.io import write_mrc
a = sys.argv[1:]
assert a[0] == "eval_vol", a
out, apix, z = Path(a[a.index("-o") + 1]), float(a[a.index("--Apix") + 1]), np.loadtxt(a[a.index("--zfile") + 1])
for i, zi in enumerate(np.atleast_1d(z)):
    g = np.indices(({box},) * 3) - {box} // 2
    write_mrc(out / f"vol_{{i:03d}}.mrc", np.exp(-((g[2] - zi) ** 2 + g[1] ** 2 + g[0] ** 2) / 4.0), apix)
"""


def test_cryodrgn_workdir_carries_its_training_voxel_size(tmp_path):
    """A cryoDRGN training folder at 32 px and 4.29 Å (the demo's): the maps it generates carry
    native voxel 4.29 Å, kept when they are resampled onto a 64³ grid at 2.145 Å, so a
    resolution of 8.1 Å measured there is reported as 8.58 Å, flagged."""
    import sys

    from helpers.kernels import nyquist, preprocess
    from helpers.core.paths import REPO_ROOT

    exe = tmp_path / "cryodrgn"
    exe.write_text(FAKE_CRYODRGN.format(python=sys.executable, repo=str(REPO_ROOT), box=32))
    exe.chmod(0o755)
    work = tmp_path / "train"
    work.mkdir()
    (work / "config.yaml").write_text("model_args: {}\n")
    (work / "weights.3.pkl").write_bytes(b"")
    with open(work / "z.3.pkl", "wb") as fh:
        pickle.dump(np.linspace(-3, 3, 50)[:, None], fh)
    ms = adapters.cryodrgn_workdir(work, voxel_size=4.29, how="pc1", n=5, exe=str(exe))
    assert ms.box == 32 and ms.n_maps == 5 and ms.native_voxel_size == pytest.approx(4.29)
    pre = preprocess.to_gt_grid(ms, 64, 2.145)
    assert pre.voxel_size == 2.145 and pre.native_voxel_size == pytest.approx(4.29)
    res, lim = nyquist.clip_resolution([8.1, 9.0], pre.native_voxel_size)
    np.testing.assert_allclose(res, [8.58, 9.0])
    assert lim.tolist() == [True, False]


def test_label_base_is_given_or_decided_by_the_labels(tmp_path):
    """Labels 1…n−1 for n maps read the same as 0-based labels with map 0 unused, or 1-based ones
    with the last map unused: refused as ambiguous, naming the file and label_base (issue 32:
    they were read as 0-based); a 0 or an n decides; label_base=1 reads them 1-based."""
    from helpers.io.labels import populations_from_labels

    lab = np.array([1, 1, 2, 3, 3, 3])
    with pytest.raises(InputError, match=r"labels\.txt.*label_base=0 or label_base=1"):
        populations_from_labels(lab, 4, tmp_path / "labels.txt")
    np.testing.assert_allclose(populations_from_labels(lab, 4, "x", base=1), [2 / 6, 1 / 6, 3 / 6, 0])
    np.testing.assert_allclose(populations_from_labels(lab, 4, "x", base=0), [0, 2 / 6, 1 / 6, 3 / 6])
    np.testing.assert_allclose(populations_from_labels(np.r_[lab, 0], 4, "x"), [1 / 7, 2 / 7, 1 / 7, 3 / 7])
    np.testing.assert_allclose(populations_from_labels(np.r_[lab, 4], 4, "x"), [2 / 7, 1 / 7, 3 / 7, 1 / 7])
    with pytest.raises(InputError, match="labels starting at 1"):
        populations_from_labels(np.r_[lab, 5], 4, "x", base=1)
    # 1…7 for 4 maps fits neither base: the range is named, not "label_base None"
    with pytest.raises(InputError, match=r"labels run from 1 to 7 but there are 4 maps"):
        populations_from_labels(np.r_[lab, 7], 4, "x")


def test_a_label_file_must_match_its_particle_stack(tmp_path):
    """A label file shorter than the particle stack is an error naming both files and both
    counts (issue 32: accepted)."""
    import starfile

    folder = tmp_path / "maps"
    folder.mkdir()
    for k in range(3):
        io.write_mrc(folder / f"vol_{k:03d}.mrc", np.random.default_rng(k).random((8, 8, 8)).astype(np.float32), 2.0)
    star = tmp_path / "particles.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1]}),
                    "particles": pd.DataFrame({"rlnImageName": [f"{i + 1}@p.mrcs" for i in range(10)]})}, star)
    labels = tmp_path / "labels.txt"
    np.savetxt(labels, np.arange(9) % 3, fmt="%d")
    with pytest.raises(InputError, match=r"labels\.txt: holds 9 labels but .*particles\.star holds 10 particles"):
        adapters.volume_series(folder, labels=labels, particles=star)
    np.savetxt(labels, np.arange(10) % 3, fmt="%d")
    ms = adapters.volume_series(folder, labels=labels, particles=star)
    np.testing.assert_allclose(ms.populations, [0.4, 0.3, 0.3])
