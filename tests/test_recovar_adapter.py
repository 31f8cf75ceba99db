"""RECOVAR's output read into hetbook (helpers.methods.recovar), on synthetic folders in the
layout recovar 1.0.5 writes (confirmed from its source and a CPU run on the demo particles):
model/metadata.json, model/zdim_<d>/latent_coords.npy, analysis_<d>/data/kmeans_result.pkl
(pickle.dump of {"centers", "labels"}), analysis_<d>/kmeans/centerNNN.mrc (+ half maps),
analysis_<d>/traj000/stateNNN.mrc + latent_coords.txt."""
import json
import os
import pickle
import shutil
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


def test_map_voxel_size_replaces_the_headers_and_keeps_the_images_nyquist(run):
    """map_voxel_size: the maps' voxel size in place of the headers' (recovar 1.0.5 on CPU), the
    header's value kept in the provenance; the native voxel (the images', metadata.json) is
    unchanged, and a non-positive size is refused (red without the override)."""
    res, _, _, maps, _ = run
    plain = rc.from_recovar(res).volumes
    half = rc.from_recovar(res, map_voxel_size=plain.voxel_size / 2).volumes
    assert half.voxel_size == pytest.approx(plain.voxel_size / 2)
    assert half.provenance["header_voxel_size_A"] == pytest.approx(plain.voxel_size)
    assert half.native_voxel_size == plain.native_voxel_size and "header_voxel_size_A" not in plain.provenance
    np.testing.assert_array_equal(half.maps, plain.maps)
    assert rc.recovar_kmeans(res, map_voxel_size=1.5).voxel_size == 1.5
    with pytest.raises(InputError, match="is not a voxel size"):
        rc.from_recovar(res, map_voxel_size=-1.0)


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
    res = data / "recovar" / "pipeline"
    # RECOVAR 1.0.5's analyze writes to <pipeline>/Analyze/ unless told -o; at zdim 4 it is given a coarse density
    assert calls[1].startswith(f"analyze {res} -o {res / 'analysis_4'} --zdim 4 --n-clusters 3 --skip-umap --density")
    assert (res / "density_4.pkl").is_file() and "--very-low-memory-option" not in calls[0]
    assert rec["workdir"] == "recovar/pipeline" and rec["zdim"] == D and rec["n_clusters"] == K and rec["box"] == 32
    assert rec["n_bins"] is None and rec["very_low_memory"] is False
    assert rec["pipeline_s"] >= 0 and rec["analyze_s"] >= 0 and rec["recovar_version"] == "unknown"
    assert json.loads((data / "recovar" / "run.json").read_text()) == rec
    cfg = json.loads((data / "submissions" / "submission_config.json").read_text())
    assert cfg["0"]["name"] == "recovar" and cfg["0"]["hetbook_provenance"]["method"] == "RECOVAR"
    assert len(list((data / "submissions" / "recovar").glob("*.mrc"))) == K
    assert rc.add_recovar_entry(data, zdim=D, n_clusters=K, exe=exe) == rec  # present: returned, not redone
    assert len(log.read_text().splitlines()) == 2
    # a pipeline run earlier (by hand, or by a stopped build) is reused: its time is RECOVAR's own record
    shutil.rmtree(data / "recovar" / "pipeline" / "analysis_4")
    (res / "job.json").write_text(json.dumps({"command": "pipeline", "timing": {"duration_seconds": 854.5}}))
    run = rc.run_recovar(data / "particles" / "particles.star", data / "particles", data / "recovar", D, K, 32, exe)
    assert run["pipeline_s"] == 854.5 and run["analyze_s"] >= 0
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["pipeline", "analyze", "analyze"]
    assert rc.job_seconds(tmp_path) is None
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("helpers.core.paths.REPO_ROOT", tmp_path)
    with pytest.raises(InputError, match="RECOVAR command was not found.*venv-recovar"):
        rc.find_recovar()
    assert os.fspath(exe) == rc.find_recovar(exe)


# ------------------------------------------------------------------ chapter 9 and the data step
def chapter9_inputs(tmp_path, record=True):
    """What chapter 9's load_inputs returns, around a synthetic RECOVAR run in
    ``<data>/recovar/pipeline`` (+ ``recovar/run.json`` when ``record``), with this run's
    preprocessed submissions RECOVAR (its K centre maps, changed as chapter 2 would) and
    Reconstructed (one map per GT map). Returns (inp, z, labels)."""
    from types import SimpleNamespace

    import pandas as pd

    from helpers.io.mapset import MapSet

    data = tmp_path / "data"
    res = data / "recovar" / "pipeline"
    z = write_pipeline(res)
    labels, maps, _ = write_analysis(res)
    if record:
        (data / "recovar" / "run.json").write_text(json.dumps(
            {"name": "recovar", "label": "RECOVAR", "zdim": D, "n_clusters": K, "box": 32, "workdir": "recovar/pipeline"}))
    rng = np.random.default_rng(7)
    g_n = 6
    gt_maps = rng.normal(size=(g_n, BOX, BOX, BOX)).astype(np.float32)
    gt = SimpleNamespace(maps=gt_maps, populations=np.full(g_n, 1 / g_n), pc1=np.linspace(-1, 1, g_n), box=BOX,
                         voxel_size=APIX)
    table = pd.DataFrame({"hetbookTrueMapIndex": rng.integers(0, g_n, N), "rlnAngleRot": rng.uniform(-180, 180, N),
                          "rlnAngleTilt": rng.uniform(0, 180, N), "rlnDefocusU": rng.uniform(1e4, 2e4, N),
                          "rlnDefocusV": rng.uniform(1e4, 2e4, N)})
    pre = (0.5 * maps + rng.normal(size=maps.shape)).astype(np.float32)  # not RECOVAR's own files: chapter 2's
    subs = {"RECOVAR": MapSet(pre, np.bincount(labels, minlength=K) / N, APIX, "RECOVAR", {}, native_voxel_size=2 * APIX),
            "Reconstructed": MapSet(gt_maps + 0.3 * rng.normal(size=gt_maps.shape).astype(np.float32),
                                    np.full(g_n, 1 / g_n), APIX, "Reconstructed", {})}
    inp = {"gt": gt, "mask": None, "pc1": gt.pc1, "table": table, "subs": subs, "report": None, "config": {},
           "data_dir": data, "why_not": ""}
    return inp, z, labels


def test_chapter9_gives_each_particle_its_recovar_cluster_centre(tmp_path):
    from helpers.pipeline.chapters import per_particle as ch9

    inp, _, labels = chapter9_inputs(tmp_path)
    idx = ch9.select(N, 20)  # every 3rd particle: the labels must be those of the chosen particles
    ents = ch9.entries(inp, idx)
    assert "RECOVAR (3 maps)" in ents
    maps, map_index = ents["RECOVAR (3 maps)"]
    assert maps is inp["subs"]["RECOVAR"].maps  # the preprocessed maps, on the GT's grid and frame
    np.testing.assert_array_equal(map_index, labels[idx])
    res = ch9.analyse(tmp_path / "results", inp, n_particles=20, n_bins=2, ks=[3])
    s = res["summary"]
    assert s.loc["RECOVAR (3 maps)", "submission"] == "RECOVAR"  # its AU-FSC goes to the leaderboard
    assert s.loc["Reconstructed", "submission"] == "Reconstructed" and s.loc[ch9.GT_MAP, "submission"] == ""
    # its per-particle scores are those of the centre map of each particle's cluster, cut at its own Nyquist
    from helpers.kernels import per_image as pi

    g = inp["table"].hetbookTrueMapIndex.to_numpy()[idx]
    c = pi.per_image_fsc(np.asarray(maps)[labels[idx]], inp["gt"].maps, g)
    c[:, BOX // 4:] = np.nan  # made at twice the GT's voxel: no shell beyond N/4
    per = res["per_image"].set_index("entry").loc["RECOVAR (3 maps)"]
    np.testing.assert_allclose(per.au_fsc, pi.au_fsc(c), atol=1e-6)
    assert ch9.nyquist_lines(s.index, inp["subs"], APIX) == {"RECOVAR (3 maps)": pytest.approx(4 * APIX)}
    assert ("RECOVAR (3 maps)", "Reconstructed") in set(zip(res["pairs"].a, res["pairs"].b))


def test_chapter9_scores_recovars_latent_like_cryodrgns(tmp_path):
    from helpers.kernels.latent import score_latent
    from helpers.pipeline.chapters import per_particle as ch9

    inp, z, _ = chapter9_inputs(tmp_path)
    lat, latents = ch9.latent_scores(tmp_path / "results", inp, ks=[3])
    assert list(latents)[0] == "RECOVAR latent"  # the method's latent before the references
    np.testing.assert_array_equal(latents["RECOVAR latent"], z.astype(np.float64))
    conf = inp["pc1"][inp["table"].hetbookTrueMapIndex.to_numpy()][:, None]
    want = score_latent(z.astype(np.float64), conf, ch9.nuisances(inp["table"]), ks=[3])
    mine = lat[lat.latent == "RECOVAR latent"].drop(columns="latent").reset_index(drop=True)
    np.testing.assert_allclose(mine.value, want.value, rtol=1e-12)
    assert (mine.reference == want.reference).all()
    assert set(ch9.latent_summary(lat, 3).index.get_level_values(0)) >= {"RECOVAR latent", "random"}


def test_the_latent_browser_offers_every_methods_latent(tmp_path):
    """With cryoDRGN's and RECOVAR's latents the browser holds each latent in each colouring
    (2 × 3 frames, named "<latent>: <colour>"); with one latent only the colourings (red when
    colour_by keeps only the first method's latent)."""
    from helpers.pipeline.chapters import per_particle as ch9
    from helpers.report import figures_per_particle as figs

    inp, z, _ = chapter9_inputs(tmp_path)
    latents = {"cryoDRGN latent": z[:, :1], "RECOVAR latent": z, "GT conformation": z[:, :1]}
    shown, conf, colour = ch9.colour_by(inp, latents)
    assert list(shown) == ["cryoDRGN latent", "RECOVAR latent"] and len(colour) == 3
    box = figs.latent_browser(shown, conf, colour)
    labels = [o[0] for o in box.children[0].options]
    assert len(labels) == 6 and len(box.children[1].children) == 6
    assert labels[3] == "RECOVAR latent: GT conformation (MD-PC1, Å)"
    one = figs.latent_browser({"RECOVAR latent": z}, conf, colour)
    assert [o[0] for o in one.children[0].options] == list(colour)
    assert list(ch9.colour_by(inp, {"GT conformation": z[:, :1]})[0]) == ["GT conformation"]


def test_chapter9_without_recovar_run_record_or_submission_has_no_recovar_entry(tmp_path):
    from helpers.pipeline.chapters import per_particle as ch9

    inp, _, _ = chapter9_inputs(tmp_path, record=False)
    idx = ch9.select(N, 20)
    assert not any(e.startswith("RECOVAR") for e in ch9.entries(inp, idx))
    assert "RECOVAR latent" not in ch9.latent_scores(tmp_path / "r", inp, ks=[3])[1]
    inp, _, _ = chapter9_inputs(tmp_path / "b")
    del inp["subs"]["RECOVAR"]  # the run is there but its submission is not in this run (e.g. it failed)
    assert not any(e.startswith("RECOVAR") for e in ch9.entries(inp, idx))
    assert "RECOVAR latent" not in ch9.latent_scores(tmp_path / "r", inp, ks=[3])[1]


def _data_folder(tmp_path):
    """A generated-looking data folder (present: nothing to generate) with the fake recovar's layout inputs."""
    from helpers.datagen.simulate import DATA_VERSION

    data = tmp_path / "data"
    for p in ("gt", "particles", "submissions"):
        (data / p).mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"data_version": DATA_VERSION}))
    (data / "particles" / "particles.star").write_text(
        "data_particles\n\nloop_\n_rlnImageName #1\n" + "".join(f"{i:06d}@particles.mrcs\n" for i in range(1, N + 1)))
    (data / "submissions" / "submission_config.json").write_text(json.dumps(
        {"gt": {"name": "gt", "path": "../gt", "box_size": BOX, "pixel_size": APIX, "ref_align_fname": "r.mrc"}}))
    return data


def test_ensure_data_adds_the_recovar_entry_or_says_how(tmp_path, monkeypatch, capsys):
    """dataset.recovar: keys checked against add_recovar_entry's; without RECOVAR a note and no
    entry; with it (a stand-in on PATH) the entry and its time; then nothing is rerun."""
    from helpers.datagen.simulate import DEFAULTS
    from helpers.pipeline import params
    from helpers.pipeline.demo_data import ensure_data

    data, log = _data_folder(tmp_path), tmp_path / "calls.txt"
    cfg = {"dataset": {"generate": True, "out_dir": str(data), "recovar": {"zdim": D, "n_clusters": K, "box": 24}}}
    assert params.check_section("dataset", params.dataset_model(), cfg["dataset"], DEFAULTS) == []
    assert params.check_section("dataset", params.dataset_model(), {"recovar": 3}, DEFAULTS)
    monkeypatch.setattr("helpers.core.paths.REPO_ROOT", tmp_path)  # no .venv-recovar there
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + "/usr/bin:/bin")
    with pytest.raises(SystemExit, match=r"dataset.recovar should be a mapping with keys among \[.*'n_clusters'"):
        ensure_data({"dataset": {**cfg["dataset"], "recovar": {"zdims": 4}}})
    ensure_data(cfg)
    out = capsys.readouterr().out
    assert "note: data: RECOVAR is not installed" in out and "Fix: `make recovar`" in out
    assert not (data / "submissions" / "recovar").exists()
    exe = tmp_path / "bin" / "recovar"
    exe.parent.mkdir()
    exe.write_text(FAKE.format(python=sys.executable, tests=str(Path(__file__).parent), log=str(log), n=N))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    ensure_data(cfg)
    out = capsys.readouterr().out
    assert "data: RECOVAR entry 'RECOVAR' added in" in out and "(pipeline " in out
    assert "--downsample 24" in log.read_text() and (data / "submissions" / "recovar").is_dir()
    rec = json.loads((data / "recovar" / "run.json").read_text())
    assert rec["zdim"] == D and rec["n_clusters"] == K and rec["box"] == 24
    ensure_data(cfg)
    assert len(log.read_text().splitlines()) == 2  # present: not rerun, and not announced
    assert "RECOVAR" not in capsys.readouterr().out

