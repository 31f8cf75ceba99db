"""CryoBench data set folders (helpers.io.cryobench) and methods' per-particle outputs
(helpers.methods.per_particle), on tiny folders written here in the exact forms CryoBench and
cryoDRGN write them: GT maps vols/128_org/000.mrc … (mrcfile), gt_latents.pkl (pickled int64
array), combined_poses.pkl (pickled tuple (rotations, translations)), combined_ctfs.pkl (pickled
(n, 9) float32), images/snr0.01/sorted_particles.16.txt listing .mrcs stacks; a cryoDRGN
training folder (config.yaml, weights.N.pkl, z.N.pkl holding z_mu then z_logvar)."""
import array
import os
import pickle
import shutil

import mrcfile
import numpy as np
import pytest

from helpers.core.errors import InputError
from helpers.io.cryobench import CTF_COLUMNS, read_cryobench
from helpers.io.mapset import on_disk
from helpers.methods.per_particle import from_cryodrgn, from_labels

COUNTS = np.array([9, 15, 0, 24, 12])  # images per conformation (one has none): 60 images
BOX, APIX = 16, 3.0


def _dump(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _rotations(n, rng):
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q.astype(np.float32)  # cryoDRGN writes float32 rotations


def _write_set(root, counts=COUNTS, apix=APIX, seed=0):
    """A CryoBench-layout folder; returns what was written."""
    rng = np.random.default_rng(seed)
    n_maps, n = len(counts), int(counts.sum())
    maps = rng.normal(size=(n_maps, BOX, BOX, BOX)).astype(np.float32)
    (root / "vols/128_org").mkdir(parents=True)
    for k, m in enumerate(maps):
        with mrcfile.new(root / f"vols/128_org/{k:03d}.mrc") as f:
            f.set_data(m)
            f.voxel_size = apix
    labels = np.repeat(np.arange(n_maps), counts).astype(np.int64)  # images in conformation blocks
    rots, trans = _rotations(n, rng), (rng.uniform(-0.1, 0.1, (n, 2))).astype(np.float32)
    ctf = np.zeros((n, 9), np.float32)
    ctf[:, 0], ctf[:, 1] = 256, 1.5  # cryoSIM's simulation grid, before downsampling
    ctf[:, 2], ctf[:, 3] = rng.uniform(10000, 25000, n), rng.uniform(10000, 25000, n)
    ctf[:, 4:] = [30.0, 300, 2.7, 0.1, 0]
    _dump(root / "gt_latents.pkl", labels)
    _dump(root / "combined_poses.pkl", (rots, trans))
    _dump(root / "combined_ctfs.pkl", ctf)
    img = root / "images/snr0.01"
    img.mkdir(parents=True)
    for j in range(2):
        with mrcfile.new(img / f"particles.{j:03d}.mrcs") as f:
            f.set_data(rng.normal(size=(n // 2, BOX, BOX)).astype(np.float32))
    (img / "sorted_particles.16.txt").write_text("particles.000.mrcs\nparticles.001.mrcs\n")
    return dict(maps=maps, labels=labels, rots=rots, trans=trans, ctf=ctf)


def test_cryobench_folder_round_trips(tmp_path):
    w = _write_set(tmp_path / "IgG-1D")
    cb = read_cryobench(tmp_path / "IgG-1D")
    assert on_disk(cb.gt.maps) and cb.gt.maps.reads == 0  # lazy: no map read yet
    np.testing.assert_array_equal(np.asarray(cb.gt.maps), w["maps"])
    np.testing.assert_array_equal(cb.labels, w["labels"])
    assert cb.labels.dtype == np.int64 and cb.n_images == 60 and cb.n_conformations == 5
    np.testing.assert_allclose(cb.gt.populations, np.bincount(w["labels"], minlength=5) / 60, rtol=0, atol=1e-15)
    np.testing.assert_allclose(cb.fractions, COUNTS / 60, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(cb.images_of(3), np.arange(24, 48))
    assert cb.gt.voxel_size == APIX and cb.gt.label == "IgG-1D GT" and cb.gt.provenance["n_images"] == 60
    np.testing.assert_array_equal(cb.rotations, w["rots"])
    np.testing.assert_array_equal(cb.translations, w["trans"])
    np.testing.assert_array_equal(cb.ctf.params, w["ctf"])
    np.testing.assert_array_equal(cb.ctf.dfu, w["ctf"][:, 2])
    np.testing.assert_array_equal(cb.ctf.dfv, w["ctf"][:, 3])
    np.testing.assert_array_equal(cb.ctf.column("volt"), np.full(60, 300.0))
    np.testing.assert_allclose(cb.ctf.defocus, (w["ctf"][:, 2].astype(float) + w["ctf"][:, 3]) / 2, rtol=1e-15)
    assert CTF_COLUMNS[2:4] == ("dfu", "dfv")
    assert cb.particles == tmp_path / "IgG-1D/images/snr0.01/sorted_particles.16.txt"
    # several noise levels (as IgG-1D ships): no particle list chosen, all listed; particles= names one
    shutil.copytree(tmp_path / "IgG-1D/images/snr0.01", tmp_path / "IgG-1D/images/snr0.001")
    cb = read_cryobench(tmp_path / "IgG-1D")
    assert cb.particles is None and [c.parent.name for c in cb.candidates] == ["snr0.001", "snr0.01"]
    cb = read_cryobench(tmp_path / "IgG-1D", particles="images/snr0.001/sorted_particles.16.txt")
    assert cb.particles.parent.name == "snr0.001"


def test_a_subset_of_the_gt_maps(tmp_path):
    """maps= a list or a slice: only those maps, populations renormalised over them; lazy=False
    reads them into memory."""
    w = _write_set(tmp_path / "d")
    cb = read_cryobench(tmp_path / "d", maps=[1, 4])
    assert cb.gt.n_maps == 2 and list(cb.map_index) == [1, 4]
    np.testing.assert_array_equal(np.asarray(cb.gt.maps), w["maps"][[1, 4]])
    np.testing.assert_allclose(cb.gt.populations, [15 / 27, 12 / 27], rtol=1e-15)
    assert cb.gt.provenance["files"] == ["001.mrc", "004.mrc"]
    eager = read_cryobench(tmp_path / "d", maps=slice(None, None, 2), lazy=False)
    assert isinstance(eager.gt.maps, np.ndarray) and list(eager.map_index) == [0, 2, 4]
    np.testing.assert_array_equal(eager.gt.maps, w["maps"][[0, 2, 4]])
    np.testing.assert_allclose(eager.gt.populations, [9 / 21, 0, 12 / 21], rtol=1e-15)
    with pytest.raises(InputError, match=r"maps=\[0, 7\] is not a set of distinct indices 0 … 4"):
        read_cryobench(tmp_path / "d", maps=[0, 7])
    with pytest.raises(InputError, match="no image belongs to the maps selected"):
        read_cryobench(tmp_path / "d", maps=[2])


def test_counts_that_disagree_name_both_files(tmp_path):
    w = _write_set(tmp_path / "d")
    d = tmp_path / "d"
    _dump(d / "combined_poses.pkl", (w["rots"][:59], w["trans"][:59]))
    with pytest.raises(InputError, match=r"combined_poses\.pkl: holds 59 poses but gt_latents\.pkl holds 60 labels"):
        read_cryobench(d)
    _dump(d / "combined_poses.pkl", (w["rots"], w["trans"]))
    _dump(d / "combined_ctfs.pkl", np.concatenate([w["ctf"], w["ctf"][:1]]))
    with pytest.raises(InputError, match=r"combined_ctfs\.pkl: holds 61 CTF rows but gt_latents\.pkl holds 60"):
        read_cryobench(d)
    _dump(d / "combined_ctfs.pkl", w["ctf"])
    (d / "images/snr0.01/sorted_particles.16.txt").write_text("particles.000.mrcs\n")
    with pytest.raises(InputError, match=r"sorted_particles\.16\.txt: holds 30 images but gt_latents\.pkl holds 60"):
        read_cryobench(d)
    (d / "images/snr0.01/sorted_particles.16.txt").write_text("particles.000.mrcs\nparticles.009.mrcs\n")
    with pytest.raises(InputError, match=r"lists particles\.009\.mrcs, which is not there"):
        read_cryobench(d)
    # poses and CTF are optional: absent default files read as None, a named absent file is an error
    (d / "images/snr0.01/sorted_particles.16.txt").unlink()
    (d / "combined_ctfs.pkl").unlink()
    cb = read_cryobench(d, poses=None)
    assert cb.rotations is None and cb.ctf is None and cb.particles is None
    with pytest.raises(InputError, match=r"ctf\.pkl: not found"):
        read_cryobench(d, ctf="ctf.pkl")


def test_gt_maps_must_be_numbered_without_gaps(tmp_path):
    _write_set(tmp_path / "d")
    vols = tmp_path / "d/vols/128_org"
    (vols / "002.mrc").unlink()  # 000, 001, 003, 004
    with pytest.raises(InputError, match=r"128_org: maps are not numbered 0 … 3 without a gap: map 2 is 003\.mrc"):
        read_cryobench(tmp_path / "d")
    (vols / "003.mrc").rename(vols / "002.mrc")
    (vols / "004.mrc").rename(vols / "003.mrc")
    (vols / "extra.mrc").write_bytes((vols / "000.mrc").read_bytes())
    with pytest.raises(InputError, match=r"extra\.mrc: has no number in its name"):
        read_cryobench(tmp_path / "d")
    with pytest.raises(InputError, match=r"vols/256_org: folder of maps not found"):
        read_cryobench(tmp_path / "d", vol_dir="vols/256_org")
    with pytest.raises(InputError, match=r"nowhere: folder not found"):
        read_cryobench(tmp_path / "nowhere")


def test_labels_must_index_the_gt_maps(tmp_path):
    w = _write_set(tmp_path / "d")
    d = tmp_path / "d"
    for bad, lo, hi in ((5, 0, 5), (-1, -1, 4)):
        lab = w["labels"].copy()
        lab[7] = bad
        _dump(d / "gt_latents.pkl", lab)
        with pytest.raises(InputError, match=rf"gt_latents\.pkl: labels run from {lo} to {hi} but .* holds 5 maps"):
            read_cryobench(d)
    _dump(d / "gt_latents.pkl", w["labels"].astype(np.float64) + 0.25)  # a continuous GT latent
    with pytest.raises(InputError, match="continuous values"):
        read_cryobench(d)
    _dump(d / "gt_latents.pkl", w["labels"].astype(np.float32)[:, None])  # whole numbers, (n, 1): accepted
    np.testing.assert_array_equal(read_cryobench(d).labels, w["labels"])


def test_voxel_size_from_headers_or_the_caller(tmp_path):
    """cryoDRGN writes 1 Å when given no pixel size: voxel_size= replaces it; a real header value
    that disagrees is refused."""
    _write_set(tmp_path / "one", apix=1.0)
    assert read_cryobench(tmp_path / "one", voxel_size=3.0).gt.voxel_size == 3.0
    with pytest.warns(UserWarning, match="cryoDRGN's default"):
        assert read_cryobench(tmp_path / "one").gt.voxel_size == 1.0
    _write_set(tmp_path / "three")
    with pytest.raises(InputError, match=r"headers say 3\.0 Å per voxel but voxel_size=2\.0"):
        read_cryobench(tmp_path / "three", voxel_size=2.0)


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    w = _write_set(tmp_path / "d")
    d, pwned = tmp_path / "d", tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {pwned}",))

    _dump(d / "combined_poses.pkl", Evil())
    with pytest.raises(InputError, match=r"combined_poses\.pkl: holds something other than numpy arrays "
                                         r"\(posix\.system is not allowed\).*pass trusted=True to read_cryobench"):
        read_cryobench(d)
    assert not pwned.exists()
    # a file from a trusted source holding another class loads with the opt-in
    _dump(d / "combined_poses.pkl", (w["rots"], w["trans"]))
    _dump(d / "gt_latents.pkl", array.array("q", w["labels"].tolist()))
    with pytest.raises(InputError, match=r"gt_latents\.pkl: .*_array_reconstructor is not allowed"):
        read_cryobench(d)
    np.testing.assert_array_equal(read_cryobench(d, trusted=True).labels, w["labels"])


def test_poses_and_ctf_of_the_wrong_form(tmp_path):
    w = _write_set(tmp_path / "d")
    d = tmp_path / "d"
    _dump(d / "combined_poses.pkl", (w["rots"], w["trans"] * BOX))  # pixels, not fractions of the box
    with pytest.raises(InputError, match="look like pixels"):
        read_cryobench(d)
    _dump(d / "combined_poses.pkl", (w["rots"] * 2, w["trans"]))
    with pytest.raises(InputError, match="not rotations"):
        read_cryobench(d)
    _dump(d / "combined_poses.pkl", w["rots"])  # rotations alone (cryoSIM without shifts)
    cb = read_cryobench(d)
    np.testing.assert_array_equal(cb.rotations, w["rots"])
    assert cb.translations is None
    _dump(d / "combined_ctfs.pkl", w["ctf"][:, :8])
    with pytest.raises(InputError, match=r"shape \(60, 8\), not \(n, 9\)"):
        read_cryobench(d)


def _train_folder(root, n=60, rng=None):
    """A cryoDRGN training folder: epochs 1 and 3 and the final files."""
    rng = rng or np.random.default_rng(1)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("model_args:\n  zdim: 4\n")
    zs = {}
    for ep, d in ((1, 2), (3, 4), (None, 4)):
        tag = "" if ep is None else f".{ep}"
        zs[ep] = rng.normal(size=(n, d)).astype(np.float32)
        _dump(root / f"weights{tag}.pkl", {"epoch": ep})  # any small object: only its presence is read
        with open(root / f"z{tag}.pkl", "wb") as fh:  # cryoDRGN: z_mu, then z_logvar
            pickle.dump(zs[ep], fh)
            pickle.dump(np.full_like(zs[ep], -3.0), fh)
    return zs


def test_from_cryodrgn_reads_latents_and_the_generator(tmp_path):
    _write_set(tmp_path / "d")
    cb = read_cryobench(tmp_path / "d")
    work = tmp_path / "train"
    zs = _train_folder(work)
    pp = from_cryodrgn(work, images=cb)
    np.testing.assert_array_equal(pp.z, zs[3])  # the last numbered epoch, z_mu (not z_logvar)
    assert pp.z.shape == (60, 4) and pp.n_particles == 60 and pp.state is None
    g = pp.generator
    assert g.epoch == 3 and g.weights == work / "weights.3.pkl" and g.config.is_file() and g.z_file.is_file()
    assert g.eval_vol_command("z.txt", "out", 3.0) == ["cryodrgn", "eval_vol", str(work / "weights.3.pkl"), "-c",
                                                       str(work / "config.yaml"), "--zfile", "z.txt", "-o", "out",
                                                       "--Apix", "3"]
    np.testing.assert_array_equal(from_cryodrgn(work, epoch=1).z, zs[1])
    final = from_cryodrgn(work, epoch=-1)
    np.testing.assert_array_equal(final.z, zs[None])
    assert final.generator.weights == work / "weights.pkl" and final.generator.epoch is None
    with pytest.raises(InputError, match=r"z\.3\.pkl: holds 60 particles but .*gt_latents\.pkl holds 59 images"):
        from_cryodrgn(work, images=type("Set", (), {"n_images": 59, "labels_file": tmp_path / "gt_latents.pkl"})())
    with pytest.raises(InputError, match=r"weights\.2\.pkl: not found"):
        from_cryodrgn(work, epoch=2)
    (work / "config.yaml").unlink()
    with pytest.raises(InputError, match=r"config\.yaml: not found"):
        from_cryodrgn(work)


def test_from_labels_reads_states_and_their_volume_series(tmp_path):
    rng = np.random.default_rng(2)
    vols = tmp_path / "method/vols"
    vols.mkdir(parents=True)
    maps = rng.normal(size=(3, BOX, BOX, BOX)).astype(np.float32)
    for k, m in enumerate(maps):
        with mrcfile.new(vols / f"vol_{k + 1:03d}.mrc") as f:  # cryoDRGN analyze names them from 1
            f.set_data(m)
            f.voxel_size = APIX
    lab = rng.integers(1, 4, 60)
    lab[:3] = [1, 2, 3]
    np.savetxt(tmp_path / "labels.txt", lab, fmt="%d")  # 1-based, as RELION / cryoDRGN classes
    pp = from_labels(vols, tmp_path / "labels.txt", images=60)
    np.testing.assert_array_equal(pp.state, lab - 1)
    np.testing.assert_array_equal(np.asarray(pp.volumes.maps), maps)
    np.testing.assert_allclose(pp.volumes.populations, np.bincount(lab - 1, minlength=3) / 60, rtol=0, atol=1e-15)
    assert pp.z is None and pp.n_particles == 60 and pp.volumes.voxel_size == APIX
    with pytest.raises(InputError, match=r"labels\.txt: holds 60 particles but the data set holds 61 images"):
        from_labels(vols, tmp_path / "labels.txt", images=61)
    lab[5] = 7
    np.savetxt(tmp_path / "bad.txt", lab, fmt="%d")
    with pytest.raises(InputError, match=r"bad\.txt: labels run from 1 to 7 but there are 3 maps"):
        from_labels(vols, tmp_path / "bad.txt")
