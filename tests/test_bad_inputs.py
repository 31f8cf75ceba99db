"""The bad-input suite (issue: every bad input gets a clear answer). Each case builds a broken
input the way users really hand them over (hand-edited configs and CSVs, files exported by other
tools, RELION/cryoSPARC/cryoDRGN habits) and asserts either a clear :class:`InputError` naming the
file, the field and the fix, or a documented automatic fix surfaced as a warning — never a raw
exception, never a silent wrong result. Together with ``test_io_bad_input.py`` (31 cases) this is
more than 60 cases across every input type."""
import json
import warnings

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from helpers import io
from helpers.core.errors import InputError

RNG = np.random.default_rng(7)


def write_map(path, data, vs=2.0):
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = vs


def expect(fn, *words):
    """A clear InputError: every word in the message, and a fix."""
    with pytest.raises(InputError) as exc:
        fn()
    msg = str(exc.value)
    assert "fix" in msg.lower(), msg
    for w in words:
        assert w.lower() in msg.lower(), (w, msg)
    return msg


# ----------------------------------------------------------------------------- configs
def make_config(tmp_path, entries=None, gt=None, raw_text=None, name="submission_config.json"):
    sub = tmp_path / "a"
    sub.mkdir(exist_ok=True)
    for i in range(3):
        write_map(sub / f"{i + 1}.mrc", RNG.uniform(0.1, 1, (8, 8, 8)))
    (sub / "populations.txt").write_text("0.2\n0.3\n0.5\n")
    cfg = {"gt": gt if gt is not None else {"path": ".", "box_size": 8, "pixel_size": 2.0, "ref_align_fname": "r.mrc"}}
    for i, e in enumerate(entries if entries is not None else [{}]):
        cfg[str(i)] = {"flavor_name": f"Sub {i}", "path": "a", "box_size": 8, "pixel_size": 2.0, "flip": 0,
                       "align": 0, **e}
    path = tmp_path / name
    path.write_text(raw_text if raw_text is not None else json.dumps(cfg))
    return path


CONFIG_CASES = {
    "flip yes": ([{"flip": "yes"}], None, ["field 'flip'", "0/1", "'yes'"]),
    "align 2": ([{"align": 2}], None, ["field 'align'", "0/1"]),
    "pixel size string": ([{"pixel_size": "2.0"}], None, ["pixel_size", "valid number", "not a string"]),
    "pixel size zero": ([{"pixel_size": 0}], None, ["pixel_size", "greater than 0"]),
    "pixel size negative": ([{"pixel_size": -1.5}], None, ["pixel_size", "greater than 0"]),
    "box size fractional": ([{"box_size": 32.5}], None, ["box_size", "integer", "whole number"]),
    "box size zero": ([{"box_size": 0}], None, ["box_size", "greater than 0"]),
    "gt pixel size missing": ([{}], {"path": ".", "box_size": 8}, ["[gt]", "pixel_size", "required"]),
    "gt box size string": ([{}], {"path": ".", "box_size": "8", "pixel_size": 2.0}, ["[gt]", "box_size"]),
    "no path": ([{"path": ""}], None, ["field 'path'", "submission folder"]),
    "align without reference": ([{"align": 1}], {"path": ".", "box_size": 8, "pixel_size": 2.0},
                                ["ref_align_fname", "align is 1"]),
    "labels collide": ([{"flavor_name": "Averaged GT"}, {"flavor_name": "Averaged-GT"}], None,
                       ["'averaged_gt'", "overwrite", "Averaged-GT"]),
    "labels collide in case": ([{"flavor_name": "mock A"}, {"flavor_name": "Mock a"}], None, ["same result name"]),
    "only the GT": ([], None, ["no submission entries"]),
    "three problems at once": ([{"flip": "yes", "pixel_size": "x", "box_size": -2}], None, ["3 problem(s)"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_field_errors(tmp_path, case):
    entries, gt, words = CONFIG_CASES[case]
    path = make_config(tmp_path, entries, gt)
    expect(lambda: io.read_config(path), path.name, *words)


def test_config_duplicated_json_key(tmp_path):
    text = ('{"gt": {"path": ".", "box_size": 8, "pixel_size": 2.0},'
            ' "0": {"flavor_name": "A", "path": "a"}, "0": {"flavor_name": "B", "path": "a"}}')
    path = make_config(tmp_path, raw_text=text)
    expect(lambda: io.read_config(path), "duplicated key", "'0'", "silently lost")


def test_config_not_a_mapping_entry(tmp_path):
    text = '{"gt": {"path": ".", "box_size": 8, "pixel_size": 2.0}, "0": ["a", "b"]}'
    expect(lambda: io.read_config(make_config(tmp_path, raw_text=text)), "entry 0", "not a mapping")


def test_config_json_syntax_error(tmp_path):
    expect(lambda: io.read_config(make_config(tmp_path, raw_text='{"gt": {"path": "."},')), "cannot be parsed", "syntax")


def test_config_without_gt(tmp_path):
    expect(lambda: io.read_config(make_config(tmp_path, raw_text='{"0": {"path": "a"}}')), "no 'gt' entry")


def test_yaml_config_with_a_string_pixel_size(tmp_path):
    text = "gt: {path: ., box_size: 8, pixel_size: 2.0}\nsubmissions:\n  - {flavor_name: A, path: a, pixel_size: abc}\n"
    path = make_config(tmp_path, raw_text=text, name="c.yaml")
    expect(lambda: io.read_config(path), "c.yaml", "pixel_size")


def test_config_populations_file_missing(tmp_path):
    path = make_config(tmp_path, [{"populations_file": "a/pops.txt"}])
    expect(lambda: io.read_config(path), "'Sub 0'", "populations file", "not found")


def test_config_valid_reads(tmp_path):
    gt, (e,) = io.read_config(make_config(tmp_path, [{"flip": True, "align": 1}]))
    assert gt["voxel_size"] == 2.0 and e.flip and e.align and e.read().n_maps == 3


# ------------------------------------------------------------------- submission folders
@pytest.fixture
def sub(tmp_path):
    d = tmp_path / "sub"
    d.mkdir()
    for i in range(3):
        write_map(d / f"{i + 1}.mrc", RNG.uniform(0.1, 1, (8, 8, 8)))
    (d / "populations.txt").write_text("0.2\n0.3\n0.5\n")
    return d


def test_map_files_are_read_like_mrc(sub):
    (sub / "3.mrc").rename(sub / "3.map")
    assert io.read_submission_folder(sub).n_maps == 3


def test_folder_with_other_files_only(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "notes.txt").write_text("hi")
    (d / "vol.ccp4x").write_text("x")
    expect(lambda: io.read_submission_folder(d), "contains no maps", "notes.txt", "one MRC per map")


def test_a_multi_map_mrc_stack_is_split_with_a_notice(tmp_path):
    d = tmp_path / "stack"
    d.mkdir()
    maps = RNG.uniform(0.1, 1, (4, 8, 8, 8))
    write_map(d / "all.mrc", maps.reshape(32, 8, 8))
    (d / "populations.txt").write_text("0.25\n0.25\n0.25\n0.25\n")
    with pytest.warns(UserWarning, match="stack of 4 maps"):
        ms = io.read_submission_folder(d)
    np.testing.assert_allclose(ms.maps, maps, rtol=1e-6)


def test_constant_map(sub):
    write_map(sub / "2.mrc", np.full((8, 8, 8), 3.0))
    expect(lambda: io.read_submission_folder(sub), "2.mrc", "constant")


def test_2d_image_instead_of_a_map(sub):
    write_map(sub / "2.mrc", RNG.uniform(0.1, 1, (8, 8)))
    expect(lambda: io.read_submission_folder(sub), "2.mrc", "cubic")


def test_populations_with_a_header(sub):
    (sub / "populations.txt").write_text("population\n0.2\n0.3\n0.5\n")
    expect(lambda: io.read_submission_folder(sub), "populations.txt", "numbers", "no header")


def test_populations_with_nan(sub):
    (sub / "populations.txt").write_text("0.2\nnan\n0.5\n")
    expect(lambda: io.read_submission_folder(sub), "populations.txt", "NaN")


def test_populations_as_percentages_are_renormalised_with_a_warning(sub):
    (sub / "populations.txt").write_text("20\n30\n50\n")
    with pytest.warns(UserWarning, match="renormalised"):
        ms = io.read_submission_folder(sub)
    np.testing.assert_allclose(ms.populations, [0.2, 0.3, 0.5])


def test_empty_populations_file(sub):
    (sub / "populations.txt").write_text("")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about the empty file before we refuse it
        expect(lambda: io.read_submission_folder(sub), "populations.txt", "0 populations for 3 maps")


# ------------------------------------------------------------------------------- GT
def test_npz_named_npy(tmp_path):
    np.savez(tmp_path / "maps_gt.npz", maps=np.zeros((2, 4, 4, 4), np.float32))
    (tmp_path / "maps_gt.npz").rename(tmp_path / "maps_gt.npy")
    expect(lambda: io.read_gt_maps(tmp_path / "maps_gt.npy"), "maps_gt.npy", ".npz archive", "numpy.save")


def test_gt_with_a_nan_voxel_names_the_map(tmp_path):
    g = RNG.uniform(0, 1, (5, 6, 6, 6)).astype(np.float32)
    g[3, 1, 2, 3] = np.nan
    np.save(tmp_path / "g.npy", g)
    expect(lambda: io.read_gt_maps(tmp_path / "g.npy"), "g.npy", "[3]", "NaN")


def test_gt_with_huge_values_is_accepted_but_inf_is_not(tmp_path):
    g = RNG.uniform(0, 1, (2, 6, 6, 6)).astype(np.float32)
    g[1, 0, 0, 0] = np.inf
    np.save(tmp_path / "g.npy", g)
    expect(lambda: io.read_gt_maps(tmp_path / "g.npy"), "[1]", "Inf")


def test_gt_integer_stack(tmp_path):
    np.save(tmp_path / "g.npy", np.ones((2, 4, 4, 4), np.int16))
    expect(lambda: io.read_gt_maps(tmp_path / "g.npy"), "g.npy", "int16", "float32")


def test_gt_pt_holding_a_dict(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "g.pt")
    expect(lambda: io.read_gt_maps(tmp_path / "g.pt"), "g.pt", "dict", "torch.save(maps")


def test_gt_pt_tensor_is_read(tmp_path):
    g = torch.rand(3, 4 ** 3)
    torch.save(g, tmp_path / "maps_gt_flat.pt")
    np.testing.assert_allclose(io.read_gt_maps(tmp_path / "maps_gt_flat.pt"), g.reshape(3, 4, 4, 4).numpy())


def _meta(n, **cols):
    base = {"index": np.arange(n), "volumes": [f"{i:05d}.mrc" for i in range(n)], "populations_count": np.ones(n, int),
            "pc1": np.linspace(-1, 1, n), "populations": np.full(n, 1.0 / n)}
    base.update(cols)
    return pd.DataFrame(base)


def test_metadata_resorted_in_a_spreadsheet_is_put_back_in_order(tmp_path):
    df = _meta(6, populations=np.arange(1, 7) / 21.0)
    df.sort_values("pc1", ascending=False).to_csv(tmp_path / "m.csv", index=False)
    with pytest.warns(UserWarning, match="re-ordered by the 'index' column"):
        back = io.read_gt_metadata(tmp_path / "m.csv", 6)
    np.testing.assert_allclose(back["pc1"], df["pc1"])
    np.testing.assert_allclose(back["populations"], df["populations"])


def test_metadata_matched_to_an_mrc_folder_by_file_name(tmp_path):
    d = tmp_path / "maps"
    d.mkdir()
    for i in range(4):
        write_map(d / f"{i:05d}.mrc", np.full((4, 4, 4), float(i + 1)) + RNG.uniform(0, 0.1, (4, 4, 4)))
    df = _meta(4, index=[900, 17, 3, 41], pc1=[10.0, 20.0, 30.0, 40.0])
    df.iloc[[2, 0, 3, 1]].to_csv(tmp_path / "m.csv", index=False)
    gt = io.read_gt(d, tmp_path / "m.csv", 2.0)
    np.testing.assert_allclose(gt.pc1, [10, 20, 30, 40])
    np.testing.assert_allclose(gt.maps.mean((1, 2, 3)), [1.05, 2.05, 3.05, 4.05], atol=0.03)


def test_metadata_without_a_row_for_a_map_file(tmp_path):
    d = tmp_path / "maps"
    d.mkdir()
    for i in range(3):
        write_map(d / f"{i:05d}.mrc", RNG.uniform(0.1, 1, (4, 4, 4)))
    df = _meta(3, volumes=["00000.mrc", "00001.mrc", "99999.mrc"])
    df.to_csv(tmp_path / "m.csv", index=False)
    expect(lambda: io.read_gt(d, tmp_path / "m.csv", 2.0), "m.csv", "00002.mrc", "'volumes'")


@pytest.mark.parametrize("col,value,words", [("pc1", np.nan, ["'pc1'", "row"]), ("pc1", "abc", ["'pc1'", "non-numeric"]),
                                             ("populations", -0.1, ["negative"]), ("populations", np.inf, ["'populations'"])])
def test_metadata_bad_values(tmp_path, col, value, words):
    df = _meta(4)
    df[col] = df[col].astype(object)
    df.loc[2, col] = value
    df.to_csv(tmp_path / "m.csv", index=False)
    expect(lambda: io.read_gt_metadata(tmp_path / "m.csv", 4), "m.csv", *words)


def test_metadata_missing_column(tmp_path):
    _meta(3).drop(columns=["populations"]).to_csv(tmp_path / "m.csv", index=False)
    expect(lambda: io.read_gt_metadata(tmp_path / "m.csv", 3), "m.csv", "['populations']")


def test_metadata_file_missing(tmp_path):
    expect(lambda: io.read_gt_metadata(tmp_path / "nope.csv", 3), "nope.csv", "not found")


def test_find_gt_nothing_there(tmp_path):
    (tmp_path / "gt").mkdir()
    expect(lambda: io.find_gt(tmp_path), "no GT maps found", "maps_gt.npy")


def test_find_gt_two_candidate_stacks(tmp_path):
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "gt/a.npy", np.zeros((1, 2, 2, 2), np.float32))
    np.save(tmp_path / "gt/b.npy", np.zeros((1, 2, 2, 2), np.float32))
    expect(lambda: io.find_gt(tmp_path), "several possible GT stacks", "a.npy")


def test_find_gt_pt_and_mrc_folder(tmp_path):
    (tmp_path / "gt/maps").mkdir(parents=True)
    assert io.find_gt(tmp_path)["maps"].name == "maps"
    torch.save(torch.zeros(1, 8), tmp_path / "gt/maps_gt.pt")
    assert io.find_gt(tmp_path)["maps"].name == "maps_gt.pt"


# ------------------------------------------------------------------------------ masks
def test_all_zero_mask(tmp_path):
    write_map(tmp_path / "mask.mrc", np.zeros((6, 6, 6)))
    expect(lambda: io.read_mask(tmp_path / "mask.mrc", 6), "mask.mrc", "selects no voxel")


def test_faint_mask_never_above_half(tmp_path):
    write_map(tmp_path / "mask.mrc", np.full((6, 6, 6), 0.3))
    expect(lambda: io.read_mask(tmp_path / "mask.mrc", 6), "mask.mrc", "above 0.5", "0…1")


def test_mask_outside_zero_one_is_clipped_with_a_notice(tmp_path):
    m = np.zeros((6, 6, 6))
    m[1:5, 1:5, 1:5] = 1.2  # overshoot (ringing of a soft edge)
    m[0, 0, 0] = -0.5
    write_map(tmp_path / "mask.mrc", m)
    with pytest.warns(UserWarning, match="clipped to"):
        out = io.read_mask(tmp_path / "mask.mrc", 6)
    assert out.max() == 1.0 and out.min() == 0.0


def test_mask_on_another_scale_keeps_its_soft_edge(tmp_path):
    """A soft mask stored as 0…255 is divided by its maximum, not clipped to a binary mask
    (issue 32: every voxel above 1/255 became weight 1)."""
    c = np.arange(8) - 4
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    soft = np.clip(4 - r, 0, 1)  # 1 inside, a linear edge, 0 outside
    write_map(tmp_path / "mask.mrc", 255 * soft)
    with pytest.warns(UserWarning, match="another scale, divided by its maximum 255"):
        out = io.read_mask(tmp_path / "mask.mrc", 8)
    np.testing.assert_allclose(out, soft, atol=1e-6)
    assert ((out > 0) & (out < 1)).sum() > 20


def test_mrc_whose_header_disagrees_with_its_data(tmp_path):
    """Trailing sections the header does not count (read silently as an 8-section map before),
    and a complex-valued file (its real part was taken) are refused, naming the file."""
    d = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    write_map(tmp_path / "a.mrc", d)
    (tmp_path / "long.mrc").write_bytes((tmp_path / "a.mrc").read_bytes() + d[:2].tobytes())
    expect(lambda: io.read_mrc(tmp_path / "long.mrc"), "long.mrc", "header says 8 sections", "2 more sections")
    with mrcfile.new(tmp_path / "z.mrc") as m:
        m.set_data((d + 1j * d).astype(np.complex64))
    expect(lambda: io.read_mrc(tmp_path / "z.mrc"), "z.mrc", "complex values (MRC mode 4)")


# ------------------------------------------------------------------------------- STAR
def make_star(tmp_path, n=4, names=None, drop=(), optics_drop=(), parts_update=None, images=None):
    imgs = images if images is not None else RNG.standard_normal((n, 8, 8)).astype(np.float32)
    with mrcfile.new(tmp_path / "p.mrcs", overwrite=True) as m:
        m.set_data(imgs)
    parts = pd.DataFrame({"rlnImageName": names or [f"{i + 1:06d}@p.mrcs" for i in range(n)],
                          "rlnOpticsGroup": 1, "rlnDefocusU": 15000.0, "rlnDefocusV": 14700.0, "rlnDefocusAngle": 30.0})
    for k, v in (parts_update or {}).items():
        parts[k] = v
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g"], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1], "rlnImagePixelSize": [4.0],
                           "rlnImageSize": [8]})
    starfile.write({"optics": optics.drop(columns=list(optics_drop)), "particles": parts.drop(columns=list(drop))},
                   tmp_path / "p.star")
    return tmp_path / "p.star"


def test_star_reads(tmp_path):
    ps = io.read_particles(make_star(tmp_path))
    assert ps.images.shape == (4, 8, 8) and ps.pixel_size == 4.0


def test_star_without_image_names(tmp_path):
    expect(lambda: io.read_particles(make_star(tmp_path, drop=["rlnImageName"])), "p.star", "rlnImageName")


def test_star_with_zero_based_indices(tmp_path):
    star = make_star(tmp_path, names=[f"{i}@p.mrcs" for i in range(4)])
    expect(lambda: io.read_particles(star), "p.star", "start at 1", "Add 1")


def test_star_index_beyond_the_stack(tmp_path):
    star = make_star(tmp_path, names=["1@p.mrcs", "2@p.mrcs", "3@p.mrcs", "9@p.mrcs"])
    expect(lambda: io.read_particles(star), "p.star", "index 9", "4 images")


def test_star_nan_defocus(tmp_path):
    star = make_star(tmp_path, parts_update={"rlnDefocusU": [15000.0, np.nan, 15000.0, 15000.0]})
    expect(lambda: io.read_particles(star), "p.star", "rlnDefocusU")


def test_star_optics_without_pixel_size(tmp_path):
    expect(lambda: io.read_particles(make_star(tmp_path, optics_drop=["rlnImagePixelSize"])), "rlnImagePixelSize")


def test_star_image_name_without_at(tmp_path):
    star = make_star(tmp_path, names=["p.mrcs"] * 4)
    expect(lambda: io.read_particles(star), "p.star", "index@stack")


def test_star_nan_image(tmp_path):
    imgs = RNG.standard_normal((4, 8, 8)).astype(np.float32)
    imgs[2, 3, 3] = np.nan
    expect(lambda: io.read_particles(make_star(tmp_path, images=imgs)), "p.mrcs", "[3]", "NaN")


def test_star_without_optics_block(tmp_path):
    star = make_star(tmp_path)
    blocks = starfile.read(star, always_dict=True)
    starfile.write({"particles": blocks["particles"]}, star, overwrite=True)
    expect(lambda: io.read_particles(star), "p.star", "optics")


def test_star_garbage(tmp_path):
    (tmp_path / "p.star").write_bytes(b"\x00\x01 not a star file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expect(lambda: io.read_particles(tmp_path / "p.star"), "p.star")


# ------------------------------------------------------------------ runner parameters
@pytest.mark.parametrize("item,words", [
    ("notebooks.03_volume_metrics.voxel_size=abc", ["voxel_size = 'abc'", "a number"]),
    ("notebooks.03_volume_metrics.sw_directions=0", ["sw_directions = 0", "positive"]),
    ("notebooks.03_volume_metrics.metrics=l2", ["metrics = 'l2'", "a list"]),
    ("notebooks.03_volume_metrics.bogus=1", ["bogus is not a parameter"]),
    ("notebooks.06_image_metrics.n_images=2.5", ["n_images = 2.5", "whole number"]),
    ("common.voxel_size=-1", ["voxel_size = -1", "positive"]),
    ("notebooks.07_robustness.n_replicates=2", ["n_replicates = 2", "≥ 3", "paired t-test"]),
    ("notebooks.07_robustness.n_replicates=1", ["n_replicates = 1", "≥ 3"]),
])
def test_runner_parameter_errors(tmp_path, item, words):
    from helpers.pipeline import run

    (tmp_path / "p.yml").write_text("common: {results_dir: %s}\n" % (tmp_path / "r"))
    with pytest.raises(SystemExit) as exc:
        run.main(["--params", str(tmp_path / "p.yml"), "--no-data", "--set", item])
    msg = str(exc.value)
    assert "p.yml" in msg and "Fix:" in msg
    for w in words:
        assert w in msg, msg


def test_results_folder_is_a_file(tmp_path, capsys):
    from helpers.pipeline import run

    (tmp_path / "r").write_text("in the way")
    (tmp_path / "p.yml").write_text("common: {results_dir: %s}\n" % (tmp_path / "r"))
    assert run.main(["--params", str(tmp_path / "p.yml"), "--no-data", "--only", "03"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Fix:" in err


def test_a_misplaced_gt_folder_is_named_with_where_it_must_go(tmp_path):
    """The GT stored as <data>/ground_truth/ instead of <data>/gt/: the error names what was found
    and where it must go (issue 32: 'GT folder not found.' only); an empty gt/ lists what it holds."""
    (tmp_path / "ground_truth").mkdir()
    np.save(tmp_path / "ground_truth/maps_gt.npy", np.zeros((2, 4, 4, 4), np.float32))
    (tmp_path / "ground_truth/metadata.csv").write_text("index,populations\n0,0.5\n1,0.5\n")
    expect(lambda: io.find_gt(tmp_path), "GT folder not found", "ground_truth/maps_gt.npy",
           f"{tmp_path / 'gt'}/", "move or link")
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt/readme.txt").write_text("x")
    expect(lambda: io.find_gt(tmp_path), "no GT maps found", "readme.txt")


def test_a_wrong_gt_box_in_the_config_is_named(tmp_path):
    """box_size 48 for 8³ GT maps: an error naming the config, both boxes and the fix (issue 32:
    a raw shape exception in chapter 3; chapter 2 now calls this before preprocessing)."""
    np.save(tmp_path / "maps_gt.npy", np.zeros((2, 8, 8, 8), np.float32))
    expect(lambda: io.check_gt_box(tmp_path / "submission_config.json", 48, tmp_path / "maps_gt.npy"),
           "submission_config.json", "box_size is 48", "are 8³", "box_size: 8")
    assert io.check_gt_box(tmp_path / "c.json", 8, tmp_path / "maps_gt.npy") == 8


def test_a_config_path_found_only_by_its_name_is_announced(tmp_path):
    """A path that does not resolve as written but whose last component exists next to the config
    is used with a notice naming both (issue 32: silently replaced by the folder of that name)."""
    (tmp_path / "sub1").mkdir()
    with pytest.warns(UserWarning, match=r"runs/v2/sub1 does not exist as written; using .*sub1"):
        assert io.locate("runs/v2/sub1", tmp_path, "submission folder", tmp_path / "c.json") == tmp_path / "sub1"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a path that resolves as written: no notice
        assert io.locate("sub1", tmp_path, "submission folder", tmp_path / "c.json") == tmp_path / "sub1"


def test_metadata_rows_out_of_order(tmp_path):
    """Stack metadata whose 'index' says which row is which map: a 1-based permutation is put in
    order like a 0-based one (issue 32: read in file order); a larger-set row id (the challenge's
    metadata: 3238, 3020, 1113, …) leaves the rows in stack order."""
    pc1 = np.array([10.0, 20.0, 30.0, 40.0])
    f = tmp_path / "metadata.csv"
    pd.DataFrame({"index": [3, 1, 4, 2], "pc1": pc1[[2, 0, 3, 1]], "populations": 0.25}).to_csv(f, index=False)
    with pytest.warns(UserWarning, match="counted from 1"):
        np.testing.assert_array_equal(io.read_gt_metadata(f, 4)["pc1"], pc1)
    pd.DataFrame({"index": [3238, 3020, 1113, 3592], "pc1": pc1, "populations": 0.25}).to_csv(f, index=False)
    np.testing.assert_array_equal(io.read_gt_metadata(f, 4)["pc1"], pc1)  # the challenge's layout: as is
