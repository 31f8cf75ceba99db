"""RECOVAR's output read into hetbook (helpers.methods.recovar), on synthetic folders in the
layout recovar 1.0.5 writes (confirmed from its source and a CPU run on the demo particles):
model/metadata.json, model/zdim_<d>/latent_coords.npy, analysis_<d>/data/kmeans_result.pkl
(pickle.dump of {"centers", "labels"}), analysis_<d>/kmeans/centerNNN.mrc (+ half maps),
analysis_<d>/traj000/stateNNN.mrc + latent_coords.txt."""
import json
import os
import pickle
import stat
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from helpers.core.errors import InputError
from helpers.methods import recovar as rc

N, D, K, BOX, APIX, M = 60, 4, 3, 8, 2.146, 5


def _mrc(path, data, vs=APIX):
    """As recovar.utils.write_mrc does: mrcfile.new, float32 data, header voxel size."""
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, np.float32))
        m.voxel_size = vs


def write_pipeline(res, n=N, d=D, seed=0):
    """``recovar pipeline -o res --zdim d``'s model folder; returns z (n, d) float32."""
    z = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    zd = Path(res) / "model" / f"zdim_{d}"
    zd.mkdir(parents=True)
    np.save(zd / "latent_coords.npy", z)
    np.save(zd / "latent_coords_noreg.npy", 2 * z)
    np.save(zd / "contrasts.npy", np.ones(n))
    np.save(zd / "latent_precision.npy", np.tile(np.eye(d), (n, 1, 1)))
    (Path(res) / "model" / "metadata.json").write_text(json.dumps(
        {"recovar_version": "1.0.5", "voxel_size": APIX, "volume_shape": [BOX] * 3, "zdims_computed": [d]}))
    (Path(res) / "output" / "volumes").mkdir(parents=True, exist_ok=True)
    _mrc(Path(res) / "output" / "volumes" / "mean.mrc", np.ones((BOX,) * 3))
    return z


def write_analysis(res, d=D, k=K, seed=1):
    """``recovar analyze res --zdim d --n-clusters k``: (labels, centre maps (k, B, B, B), path maps)."""
    a = Path(res) / f"analysis_{d}"
    z = np.load(Path(res) / "model" / f"zdim_{d}" / "latent_coords.npy")
    rng = np.random.default_rng(seed)
    labels = np.r_[np.arange(k), rng.choice(k, len(z) - k, p=np.linspace(1, 2, k) / np.linspace(1, 2, k).sum())]
    centers = np.stack([z[labels == j][0] for j in range(k)]).astype(np.float32)
    (a / "data").mkdir(parents=True)
    with open(a / "data" / "kmeans_result.pkl", "wb") as fh:
        pickle.dump({"centers": centers, "labels": labels}, fh)
    (a / "kmeans").mkdir()
    maps = rng.normal(size=(k, BOX, BOX, BOX)).astype(np.float32)
    for j in range(k):
        _mrc(a / "kmeans" / f"center{j:03d}.mrc", maps[j])
        for extra in ("_half1_unfil", "_half2_unfil", "_unfil"):  # beside each map: never read as one
            _mrc(a / "kmeans" / f"center{j:03d}{extra}.mrc", -maps[j])
    np.savetxt(a / "kmeans" / "centers.txt", centers)
    t = a / "traj000"
    t.mkdir()
    pts = np.linspace(z.min(0), z.max(0), M)
    np.savetxt(t / "latent_coords.txt", pts)
    path_maps = rng.normal(size=(M, BOX, BOX, BOX)).astype(np.float32)
    for j in range(M):
        _mrc(t / f"state{j:03d}.mrc", path_maps[j])
    return labels, maps, path_maps


@pytest.fixture
def run(tmp_path):
    res = tmp_path / "recovar_out"
    z = write_pipeline(res)
    labels, maps, path_maps = write_analysis(res)
    return res, z, labels, maps, path_maps


def test_reads_latents_labels_and_centre_maps(run):
    res, z, labels, maps, _ = run
    pp = rc.from_recovar(res, images=N)
    assert pp.z.shape == (N, D) and pp.z.dtype == np.float64
    np.testing.assert_array_equal(pp.z, z.astype(np.float64))
    np.testing.assert_array_equal(pp.state, labels)
    assert pp.volumes.n_maps == K and pp.volumes.box == BOX
    np.testing.assert_array_equal(pp.volumes.maps, maps)  # the centre maps, not their half maps
    np.testing.assert_array_equal(pp.volumes.populations, np.bincount(labels, minlength=K) / N)
    assert pp.volumes.voxel_size == pytest.approx(APIX, abs=1e-4)
    prov = pp.provenance
    assert prov["files"] == ["center000.mrc", "center001.mrc", "center002.mrc"]
    assert prov["recovar_version"] == "1.0.5" and prov["zdim"] == D and prov["kmeans"] == K
    assert prov["per_particle_file"].endswith("zdim_4/latent_coords.npy")
    np.testing.assert_array_equal(rc.from_recovar(res, noreg=True).z, 2 * z.astype(np.float64))
    ms = rc.recovar_kmeans(res, zdim=D, label="RECOVAR k3")
    assert ms.label == "RECOVAR k3" and ms.populations.sum() == pytest.approx(1.0)


def test_trajectory_maps_and_nearest_point_populations(run):
    res, z, _, _, path_maps = run
    ms = rc.recovar_trajectory(res)
    pts = np.loadtxt(res / "analysis_4" / "traj000" / "latent_coords.txt")
    np.testing.assert_array_equal(ms.maps, path_maps)
    near = np.argmin(np.linalg.norm(z[:, None].astype(float) - pts[None], axis=-1), 1)
    np.testing.assert_array_equal(ms.populations, np.bincount(near, minlength=M) / N)
    assert ms.provenance["method"] == "RECOVAR trajectory" and len(ms.provenance["path_points"]) == M
    with pytest.raises(InputError, match=r"traj001.*latent_coords\.txt.*not found"):
        rc.recovar_trajectory(res, traj=1)
    np.savetxt(res / "analysis_4" / "traj000" / "latent_coords.txt", pts[:, :3])
    with pytest.raises(InputError, match="3-D points but the latents are 4-D"):
        rc.recovar_trajectory(res)


def test_missing_folders_and_files_name_the_path(run, tmp_path):
    res = run[0]
    with pytest.raises(InputError, match="folder not found"):
        rc.from_recovar(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no zdim_<d>/ folder"):
        rc.from_recovar(tmp_path)
    with pytest.raises(InputError, match=r"no zdim_2/ \(found \[4\]\)"):
        rc.from_recovar(res, zdim=2)
    with pytest.raises(InputError, match=r"analysis_4x: analysis folder not found.*recovar analyze"):
        rc.from_recovar(res, analysis=res / "analysis_4x")
    write_pipeline(res, d=2)
    with pytest.raises(InputError, match=r"several dimensions \[2, 4\]"):
        rc.from_recovar(res)
    assert rc.from_recovar(res, zdim=4).z.shape == (N, D)
    (res / "analysis_4" / "kmeans" / "center001.mrc").unlink()
    with pytest.raises(InputError, match=r"lacks 1 of the 3 maps.*center001\.mrc"):
        rc.from_recovar(res, zdim=4)
    (res / "analysis_4" / "data" / "kmeans_result.pkl").unlink()
    with pytest.raises(InputError, match=r"kmeans_result\.pkl: not found"):
        rc.from_recovar(res, zdim=4)


def test_count_and_shape_mismatches(run):
    res, z, labels, maps, _ = run
    kf = res / "analysis_4" / "data" / "kmeans_result.pkl"
    centers = np.loadtxt(res / "analysis_4" / "kmeans" / "centers.txt").astype(np.float32)

    def dump(**obj):
        with open(kf, "wb") as fh:
            pickle.dump(obj, fh)

    with pytest.raises(InputError, match="holds 60 particles but the data set holds 61 images"):
        rc.from_recovar(res, images=61)
    dump(centers=centers, labels=labels[:-1])
    with pytest.raises(InputError, match="holds 59 labels but .* holds 60 latents"):
        rc.from_recovar(res)
    dump(centers=centers[:, :2], labels=labels)
    with pytest.raises(InputError, match="centers are 2-D but the latents 4-D"):
        rc.from_recovar(res)
    bad = labels.copy()
    bad[5] = np.iinfo(np.int64).min  # what recovar's NaN padding leaves for an image it left out
    dump(centers=centers, labels=bad)
    with pytest.raises(InputError, match="not cluster indices 0 … 2"):
        rc.from_recovar(res)
    dump(centers=centers, labels=labels.astype(float))
    with pytest.raises(InputError, match="float64"):
        rc.from_recovar(res)
    dump(centre=centers, labels=labels)
    with pytest.raises(InputError, match="not a dict with 'centers' and 'labels'"):
        rc.from_recovar(res)
    dump(centers=centers, labels=labels)
    _mrc(res / "analysis_4" / "kmeans" / "center003.mrc", maps[0])
    with pytest.raises(InputError, match=r"more maps than the 3 expected \(e\.g\. center003\.mrc\)"):
        rc.from_recovar(res)
    (res / "analysis_4" / "kmeans" / "center003.mrc").unlink()
    zf = res / "model" / "zdim_4" / "latent_coords.npy"
    zz = z.copy()
    zz[7] = np.nan
    np.save(zf, zz)
    with pytest.raises(InputError, match="1 particles have no latent .*particle 7"):
        rc.from_recovar(res)
    np.save(zf, z[:, :3])
    with pytest.raises(InputError, match=r"shape \(60, 3\), not latents \(n_particles, 4\)"):
        rc.from_recovar(res)


def test_a_pickle_holding_code_is_refused_unrun(run, tmp_path):
    res = run[0]

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    with open(res / "analysis_4" / "data" / "kmeans_result.pkl", "wb") as fh:
        pickle.dump({"centers": np.zeros((K, D)), "labels": Evil()}, fh)
    with pytest.raises(InputError, match="other than numpy arrays.*not loaded"):
        rc.from_recovar(res)
    assert not (tmp_path / "pwned").exists()


def test_voxel_size_from_headers_or_given(run):
    res, *_ = run
    for j in range(K):
        f = res / "analysis_4" / "kmeans" / f"center{j:03d}.mrc"
        _mrc(f, mrcfile.read(f), vs=0.0)
    with pytest.raises(InputError, match="pass voxel_size="):
        rc.from_recovar(res)
    assert rc.from_recovar(res, voxel_size=3.0).volumes.voxel_size == 3.0
    _mrc(res / "analysis_4" / "kmeans" / "center000.mrc", mrcfile.read(res / "analysis_4/kmeans/center001.mrc"), vs=2.0)
    # 2 Å in one header, 3 Å given for the others (whose headers say 0)
    with pytest.raises(InputError, match=r"voxel sizes \['2\.0', '3\.0'\]"):
        rc.from_recovar(res, voxel_size=3.0)


FAKE = """#!{python}
import sys; sys.path.insert(0, {tests!r})
from pathlib import Path
import test_recovar_adapter as t
a = sys.argv[1:]
Path({log!r}).open("a").write(" ".join(a) + "\\n")
if a[0] == "pipeline":
    t.write_pipeline(Path(a[a.index("-o") + 1]), n={n}, d=int(a[a.index("--zdim") + 1]))
else:
    t.write_analysis(Path(a[1]), d=int(a[a.index("--zdim") + 1]), k=int(a[a.index("--n-clusters") + 1]))
"""


def test_add_recovar_entry_runs_once_and_never_overwrites(tmp_path, monkeypatch):
    """The runner's commands (a stand-in ``recovar`` writing recovar's layout), the submission it
    adds, its run record; a second call runs nothing. Without RECOVAR: a clear error."""
    data, log = tmp_path / "data", tmp_path / "calls.txt"
    (data / "particles").mkdir(parents=True)
    (data / "particles" / "particles.star").write_text(
        "data_particles\n\nloop_\n_rlnImageName #1\n" + "".join(f"{i:06d}@particles.mrcs\n" for i in range(1, N + 1)))
    (data / "submissions").mkdir()
    (data / "submissions" / "submission_config.json").write_text(json.dumps(
        {"gt": {"name": "gt", "path": "../gt", "box_size": BOX, "pixel_size": APIX, "ref_align_fname": "r.mrc"}}))
    exe = tmp_path / "bin" / "recovar"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable, tests=str(Path(__file__).parent), log=str(log), n=N))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    rec = rc.add_recovar_entry(data, zdim=D, n_clusters=K, exe=exe)
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[0].startswith("pipeline ") and "--accept-cpu" in calls[0]
    assert f"--datadir {data / 'particles'}" in calls[0] and "--mask sphere" in calls[0]
    assert "--downsample 32" in calls[0]
    assert calls[1].startswith(f"analyze {data / 'recovar' / 'pipeline'} --zdim 4 --n-clusters 3")
    assert rec["workdir"] == "recovar/pipeline" and rec["zdim"] == D and rec["n_clusters"] == K and rec["box"] == 32
    assert rec["pipeline_s"] >= 0 and rec["analyze_s"] >= 0 and rec["recovar_version"] == "unknown"
    assert json.loads((data / "recovar" / "run.json").read_text()) == rec
    cfg = json.loads((data / "submissions" / "submission_config.json").read_text())
    assert cfg["0"]["name"] == "recovar" and cfg["0"]["hetbook_provenance"]["method"] == "RECOVAR"
    assert len(list((data / "submissions" / "recovar").glob("*.mrc"))) == K
    assert rc.add_recovar_entry(data, zdim=D, n_clusters=K, exe=exe) == rec  # present: returned, not redone
    assert len(log.read_text().splitlines()) == 2
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("helpers.core.paths.REPO_ROOT", tmp_path)
    with pytest.raises(InputError, match="RECOVAR command was not found.*venv-recovar"):
        rc.find_recovar()
    assert os.fspath(exe) == rc.find_recovar(exe)
