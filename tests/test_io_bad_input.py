"""Readers on the real challenge fixtures and a bad-input suite: every case a clear InputError
naming the file and a fix (or a documented automatic fix), never a raw traceback."""
import json
import shutil
import warnings

import mrcfile
import numpy as np
import pytest
import torch

from helpers import io
from helpers.core.errors import InputError
from helpers.io.mapset import MapSet

RNG = np.random.default_rng(42)


# ------------------------------------------------------------------- real fixtures
def test_reads_every_fixture(fixtures):
    gt, entries = io.read_config(fixtures / "unprocessed_dataset_2_submissions/submission_x/submission_config.json")
    assert gt["box_size"] == 16 and gt["voxel_size"] == pytest.approx(30.044)
    (e,) = entries
    assert e.label == "test flavor 1.0" and e.flip and e.align and e.voxel_size == pytest.approx(15.022)
    ms = e.read()  # MRC headers say voxel 0: the config's pixel size is used
    assert ms.maps.shape == (4, 32, 32, 32) and ms.voxel_size == pytest.approx(15.022)
    np.testing.assert_allclose(ms.populations, 0.25)
    ref, vs = io.read_mrc(fixtures / "Ground_truth/1.mrc")
    assert ref.shape == (16, 16, 16) and ref.sum() == pytest.approx(0.0319, abs=5e-4)
    a = io.read_gt_maps(fixtures / "Ground_truth/test_maps_gt_flat_10.npy")
    b = io.read_gt_maps(fixtures / "Ground_truth/test_maps_gt_flat_10.pt")
    assert isinstance(a, np.memmap) and a.shape == (10, 16, 16, 16)
    np.testing.assert_array_equal(np.asarray(a), b)
    g = io.read_gt(fixtures / "Ground_truth/test_maps_gt_flat_10.npy", fixtures / "Ground_truth/test_metadata_10.csv", 30.044)
    assert g.populations.sum() == pytest.approx(1.0) and g.pc1[0] == pytest.approx(-231.621, abs=1e-3)
    mb = io.read_mask(fixtures / "Ground_truth/test_mask_bool.mrc", 16)
    assert int(mb.sum()) == 2015
    soft = io.read_mask(fixtures / "Ground_truth/test_mask_dilated_wide.mrc", 16)  # (1,16,16,16) on disk
    assert soft.shape == (16, 16, 16) and soft.min() >= 0 and soft.max() <= 1
    assert int(io.read_mask(fixtures / "Ground_truth/test_mask_dilated_wide.mrc", 16, "nonzero").sum()) == 4096
    sub = io.read_preprocessed_pt(fixtures / "dataset_2_submissions/submission_1000.pt", 30.044)
    assert sub.label == "Coffee" and sub.maps.shape == (8, 16, 16, 16)


def test_reads_demo_data_through_the_same_functions(tiny_data):
    gt, entries = io.read_config(tiny_data / "submissions/submission_config.json")
    assert len(entries) == 13 and len({e.label for e in entries}) == 13
    for e in entries:
        ms = e.read()
        assert ms.populations.sum() == pytest.approx(1.0)
    parts = io.read_particles(tiny_data / "particles/particles.star")
    assert parts.images.shape == (24, 24, 24) and parts.optics["voltage"] == 300.0
    assert "hetbookTrueMapIndex" in parts.table


# ----------------------------------------------------------------------- bad input
def write_map(path, data, vs=1.0):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = vs


@pytest.fixture
def good(tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        write_map(d / f"{i + 1}.mrc", rng.uniform(0.1, 1, (8, 8, 8)), 2.0)
    (d / "populations.txt").write_text("0.2\n0.3\n0.5\n")
    return d


def expect_error(fn, *words):
    with pytest.raises(InputError) as exc:
        fn()
    msg = str(exc.value)
    assert "Fix:" in msg or "fix" in msg.lower()
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


def test_good_folder_reads(good):
    ms = io.read_submission_folder(good)
    assert ms.n_maps == 3 and ms.voxel_size == 2.0


def test_natural_sort_and_mask_files_skipped(good):
    write_map(good / "10.mrc", RNG.uniform(0.1, 1, (8, 8, 8)), 2.0)
    write_map(good / "mask.mrc", np.ones((8, 8, 8)), 2.0)
    assert [f.name for f in io.list_map_files(good)] == ["1.mrc", "2.mrc", "3.mrc", "10.mrc"]


def test_non_cubic_map(good):
    write_map(good / "2.mrc", RNG.uniform(0.1, 1, (8, 8, 9)), 2.0)
    expect_error(lambda: io.read_submission_folder(good), "2.mrc", "not cubic")


def test_box_mismatch(good):
    write_map(good / "3.mrc", RNG.uniform(0.1, 1, (10, 10, 10)), 2.0)
    expect_error(lambda: io.read_submission_folder(good), "3.mrc", "box")


def test_voxel_mismatch(good):
    write_map(good / "3.mrc", RNG.uniform(0.1, 1, (8, 8, 8)), 3.0)
    expect_error(lambda: io.read_submission_folder(good), "voxel sizes")


def test_voxel_missing_everywhere(good):
    for f in good.glob("*.mrc"):
        write_map(f, RNG.uniform(0.1, 1, (8, 8, 8)), 0.0)
    expect_error(lambda: io.read_submission_folder(good), "voxel size", "config")


def test_voxel_header_disagrees_with_config(good):
    expect_error(lambda: io.read_submission_folder(good, voxel_size=3.0), "config")


def test_nan_voxels(good):
    a = np.ones((8, 8, 8))
    a[1, 2, 3] = np.nan
    write_map(good / "1.mrc", a, 2.0)
    expect_error(lambda: io.read_submission_folder(good), "1.mrc", "NaN")


def test_inf_voxels(good):
    a = np.ones((8, 8, 8))
    a[0, 0, 0] = np.inf
    write_map(good / "2.mrc", a, 2.0)
    expect_error(lambda: io.read_submission_folder(good), "2.mrc", "Inf")


def test_all_zero_map(good):
    write_map(good / "2.mrc", np.zeros((8, 8, 8)), 2.0)
    expect_error(lambda: io.read_submission_folder(good), "2.mrc", "all zeros")


def test_wrong_number_of_populations(good):
    (good / "populations.txt").write_text("0.5\n0.5\n")
    expect_error(lambda: io.read_submission_folder(good), "populations.txt", "2 populations for 3 maps")


def test_negative_populations(good):
    (good / "populations.txt").write_text("0.5\n-0.1\n0.6\n")
    expect_error(lambda: io.read_submission_folder(good), "negative")


def test_populations_not_summing_to_one_are_renormalised(good):
    (good / "populations.txt").write_text("2\n3\n5\n")
    with pytest.warns(UserWarning, match="renormalised"):
        ms = io.read_submission_folder(good)
    np.testing.assert_allclose(ms.populations, [0.2, 0.3, 0.5])
    assert ms.provenance["populations_renormalised_from_sum"] == pytest.approx(10)


def test_all_zero_populations(good):
    (good / "populations.txt").write_text("0\n0\n0\n")
    expect_error(lambda: io.read_submission_folder(good), "all zero")


def test_non_numeric_populations(good):
    (good / "populations.txt").write_text("a\nb\nc\n")
    expect_error(lambda: io.read_submission_folder(good), "populations.txt", "numbers")


def test_missing_populations_file(good):
    (good / "populations.txt").unlink()
    expect_error(lambda: io.read_submission_folder(good), "populations.txt", "not found")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    expect_error(lambda: io.read_submission_folder(tmp_path / "empty"), "empty", "contains no maps")


def test_missing_folder(tmp_path):
    expect_error(lambda: io.read_submission_folder(tmp_path / "nope"), "nope", "not found")


def test_truncated_mrc(good):
    data = (good / "1.mrc").read_bytes()
    (good / "1.mrc").write_bytes(data[: len(data) // 2])
    expect_error(lambda: io.read_submission_folder(good), "1.mrc", "cannot be read")


def test_not_an_mrc(good):
    (good / "2.mrc").write_text("hello")
    expect_error(lambda: io.read_submission_folder(good), "2.mrc", "cannot be read")


def test_pt_needing_unsafe_loading(tmp_path):
    import datetime  # an arbitrary Python object (a date) needs the unsafe unpickler

    p = tmp_path / "sub.pt"
    torch.save({"volumes": torch.ones(2, 4, 4, 4), "populations": [0.5, 0.5], "id": "x",
                "extra": datetime.date(2025, 1, 1)}, p)
    expect_error(lambda: io.read_preprocessed_pt(p, 1.0), "sub.pt", "allow_unsafe_pickle")
    ms = io.read_preprocessed_pt(p, 1.0, allow_unsafe_pickle=True)
    assert ms.n_maps == 2


def test_pt_without_volumes(tmp_path):
    p = tmp_path / "bad.pt"
    torch.save({"maps": torch.zeros(2, 4, 4, 4)}, p)
    expect_error(lambda: io.read_preprocessed_pt(p, 1.0), "bad.pt", "volumes")


def test_mask_of_another_shape(tmp_path):
    write_map(tmp_path / "mask.mrc", np.ones((10, 10, 10)))
    expect_error(lambda: io.read_mask(tmp_path / "mask.mrc", 8), "mask.mrc", "does not match")


def test_duplicate_labels(tmp_path, good):
    cfg = {"gt": {"path": ".", "box_size": 8, "pixel_size": 2.0},
           "0": {"flavor_name": "Vanilla", "path": str(good), "submission_version": "1"},
           "1": {"flavor_name": "Vanilla", "path": str(good), "submission_version": "1"}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    expect_error(lambda: io.read_config(tmp_path / "c.json"), "duplicate", "Vanilla 1")


def test_config_gt_not_first(tmp_path, good):
    (tmp_path / "c.json").write_text(json.dumps({"0": {"path": str(good)}, "gt": {"path": "."}}))
    expect_error(lambda: io.read_config(tmp_path / "c.json"), "gt")


def test_config_missing_folder(tmp_path):
    cfg = {"gt": {"path": ".", "box_size": 16, "pixel_size": 2.0}, "0": {"flavor_name": "A", "path": "does/not/exist"}}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    expect_error(lambda: io.read_config(tmp_path / "c.json"), "not found", "does/not/exist")


def test_yaml_config(tmp_path, good):
    (tmp_path / "c.yaml").write_text(f"gt: {{path: ., box_size: 8, voxel_size: 2.0}}\nsubmissions:\n"
                                     f"  - {{submission_name: A, path_to_volumes: {good}, voxel_size: 2.0}}\n")
    gt, (e,) = io.read_config(tmp_path / "c.yaml")
    assert e.label == "A" and e.read().n_maps == 3


def test_gt_stack_not_cubic(tmp_path):
    np.save(tmp_path / "gt.npy", np.zeros((3, 100), np.float32))
    expect_error(lambda: io.read_gt_maps(tmp_path / "gt.npy"), "gt.npy", "cubes")


def test_gt_metadata_rows_mismatch(tmp_path):
    (tmp_path / "m.csv").write_text("index,volumes,populations_count,pc1,populations\n0,a,1,0.1,0.5\n")
    expect_error(lambda: io.read_gt_metadata(tmp_path / "m.csv", 3), "m.csv", "1 rows for 3")


def test_mapset_roundtrip_and_no_overwrite_of_maps(tmp_path):
    ms = MapSet(np.random.default_rng(0).standard_normal((2, 4, 4, 4)).astype(np.float32), [0.4, 0.6], 1.5, "A b",
                {"source": "x"}, pc1=[1.0, 2.0])
    back = MapSet.load(ms.save(tmp_path / "a.npz"))
    np.testing.assert_array_equal(back.maps, ms.maps)
    assert back.label == "A b" and back.voxel_size == 1.5 and list(back.pc1) == [1.0, 2.0]
    io.write_mrc(tmp_path / "x.mrc", ms.maps[0], 1.5)
    expect_error(lambda: io.write_mrc(tmp_path / "x.mrc", ms.maps[0], 1.5), "x.mrc", "never overwrites")


def test_mapset_maps_memory_mapped_from_the_npz(tmp_path):
    """MapSet.load(mmap=True) maps the uncompressed .npz member in place: the same maps (odd
    label lengths shift the member's offset), read-only, nothing loaded; a compressed file names
    itself and the fix."""
    rng = np.random.default_rng(4)
    for label in ("a", "a much longer label, with spaces"):
        ms = MapSet(rng.standard_normal((3, 5, 5, 5)).astype(np.float32), [0.2, 0.3, 0.5], 2.0, label, {"source": "x"})
        back = MapSet.load(ms.save(tmp_path / "m.npz"), mmap=True)
        assert isinstance(back.maps, np.memmap) and not back.maps.flags.writeable
        np.testing.assert_array_equal(back.maps, ms.maps)
        np.testing.assert_array_equal(back.populations, ms.populations)
        (tmp_path / "m.npz").unlink()
    np.savez_compressed(tmp_path / "c.npz", maps=ms.maps, populations=ms.populations, voxel_size=2.0,
                        label="c", provenance="{}")
    expect_error(lambda: MapSet.load(tmp_path / "c.npz", mmap=True), "c.npz", "compressed")
    assert MapSet.load(tmp_path / "c.npz").n_maps == 3  # without mmap it still loads


def test_gt_from_a_folder_of_mrc_maps(tmp_path):
    rng = np.random.default_rng(1)
    maps = rng.uniform(0.1, 1, (3, 6, 6, 6)).astype(np.float32)
    for i, m in enumerate(maps):
        write_map(tmp_path / f"{i + 1:05d}.mrc", m, 2.0)
    write_map(tmp_path / "mask.mrc", np.ones((6, 6, 6)), 2.0)  # skipped: named like a mask
    np.testing.assert_array_equal(io.read_gt_maps(tmp_path), maps)


def test_gt_folder_is_read_lazily_and_once_per_pass(tmp_path):
    """A GT folder of MRC maps (one a 2-map stack) reads like the stacked array, but only the
    files a chunk needs: one pass of the fused volume metrics reads every file once."""
    from helpers.kernels import gt_pass, volume_metrics as vm

    rng = np.random.default_rng(3)
    maps = rng.standard_normal((6, 8, 8, 8)).astype(np.float32)
    folder = tmp_path / "maps"
    folder.mkdir()
    for k in range(4):
        write_map(folder / f"{k + 1:03d}.mrc", maps[k])
    write_map(folder / "005.mrc", maps[4:6].reshape(16, 8, 8))  # a stack of two maps
    lazy = io.read_gt_maps(folder, box=8, check_finite=False, lazy=True)
    assert isinstance(io.read_gt_maps(folder, box=8), np.ndarray)  # small folders: read into memory
    assert isinstance(lazy, io.MapFolder) and lazy.shape == (6, 8, 8, 8) and lazy.reads == 0
    np.testing.assert_array_equal(lazy[1:3], maps[1:3])
    np.testing.assert_array_equal(lazy[5], maps[5])
    np.testing.assert_array_equal(lazy[np.array([4, 0])], maps[[4, 0]])
    np.testing.assert_array_equal(np.asarray(lazy), maps)
    lazy.reads = 0
    got, _ = gt_pass.distance_matrices_many(lazy, {"s": maps[:2]}, None, ["l2", "fsc"], gt_chunk=2)
    assert lazy.reads == 5  # files 1-2, 3-4, 5: five reads for three chunks (no file twice)
    ref = vm.distance_matrices(maps, maps[:2], None, ["l2", "fsc"])
    np.testing.assert_allclose(got["s"]["l2"], ref["l2"], rtol=1e-6, atol=1e-9 * ref["l2"].max())  # a map with itself: 0 or rounding
    write_map(folder / "006.mrc", np.zeros((10, 10, 10), np.float32))
    with pytest.raises(InputError, match="box 10 differs"):
        io.read_gt_maps(folder, check_finite=False, lazy=True)


@pytest.mark.parametrize("layout", ["single", "stack_later", "stack_first"])
def test_submission_folder_maps_in_order_whatever_mix_of_maps_and_stacks(tmp_path, layout):
    """read_map_folder writes the maps into one array as it reads (no list + stack copy): a
    folder of single maps, one whose later file is a 4-map stack (the array grows) and one whose
    first file is a stack give the maps in natural file order."""
    rng = np.random.default_rng(5)
    maps = rng.uniform(0.1, 1, (6, 6, 6, 6)).astype(np.float32)
    groups = {"single": [[0], [1], [2], [3], [4], [5]], "stack_later": [[0], [1, 2, 3, 4], [5]],
              "stack_first": [[0, 1], [2], [3, 4, 5]]}[layout]
    for i, g in enumerate(groups):
        write_map(tmp_path / f"{i + 1}.mrc", maps[g[0]] if len(g) == 1 else maps[g].reshape(6 * len(g), 6, 6), 2.0)
    got, vs, files = io.read_map_folder(tmp_path)
    np.testing.assert_array_equal(got, maps)
    assert vs == 2.0 and len(files) == len(groups) and got.dtype == np.float32
