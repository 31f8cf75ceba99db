"""Chapters 3 and 4 without their notebooks: helpers.pipeline.chapters.volume and .subspace on the
tiny data set with small synthetic submissions, their tables and files checked against
independent float64 numpy recomputations (masked median-z-scored L2 and Pearson correlation, the
interpolated 0.5 crossing, numpy SVDs for the PCAs, PCVs and bootstrap)."""
import numpy as np
import pandas as pd
import pytest

from helpers import io
from helpers.datagen import mocks
from helpers.io.mapset import MapSet, slug
from helpers.kernels import normalise, subspace
from helpers.kernels import volume_metrics as vm
from helpers.pipeline.chapters import subspace as ch4
from helpers.pipeline.chapters import volume as ch3

VOXEL = 5.7
RANK, N_BOOT = 2, 3  # every bootstrap resample of "Coarse" and "Noisy" has ≥ RANK + 1 distinct maps


@pytest.fixture(scope="module")
def tiny(tiny_data):
    """The tiny GT (24 maps, box 24), its files and mask, and three submissions on its grid:
    "Four" (Averaged GT, 4 maps), "Coarse" (Averaged GT, 6 maps, skewed populations, made at
    2 × the GT's voxel size: native Nyquist 22.8 Å) and "Noisy" (5 GT maps + noise)."""
    gtf = io.find_gt(tiny_data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], VOXEL, check_finite=False)
    mask = io.read_mask(gtf["mask"], gt.box)
    gmaps = np.asarray(gt.maps)
    subs = {}
    for lab, k, nat in (("Four", 4, None), ("Coarse", 6, 2 * VOXEL)):
        maps, pops, _ = mocks.averaged_gt(gmaps, gt.populations, gt.pc1, k)
        if k == 6:
            pops = pops * np.linspace(0.5, 1.5, k)
            pops = pops / pops.sum()
        subs[lab] = MapSet(maps=np.asarray(maps, np.float32), populations=pops, voxel_size=VOXEL, label=lab,
                           native_voxel_size=nat)
    rng = np.random.default_rng(3)
    noisy = gmaps[[2, 7, 12, 17, 22]] + rng.normal(0, 0.3 * gmaps.std(), (5,) + gmaps.shape[1:])
    subs["Noisy"] = MapSet(maps=noisy.astype(np.float32), populations=np.full(5, 0.2), voxel_size=VOXEL,
                           label="Noisy")
    return gt, gtf, mask, subs


def _zscore(v, sel):
    x = v[sel].astype(np.float64)
    return (x - np.median(x)) / x.std(ddof=1)


def _res_interpolated(curve, voxel):
    """The 0.5 crossing of one FSC curve (shells 1..N/2), linear in frequency from the previous
    shell (FSC(0) = 1); never below 0.5 → Nyquist."""
    c = np.nan_to_num(np.asarray(curve, np.float64))
    n = 2 * len(c)
    f = np.arange(len(c) + 1) / (n * voxel)
    c = np.concatenate([[1.0], c])
    for k in range(1, len(c)):
        if c[k] < 0.5:
            fx = f[k - 1] + (c[k - 1] - 0.5) / (c[k - 1] - c[k]) * (f[k] - f[k - 1])
            return 1 / fx
    return 2 * voxel


@pytest.fixture(scope="module")
def scored(tiny, tmp_path_factory):
    gt, gtf, mask, subs = tiny
    out = tmp_path_factory.mktemp("ch3")
    sc = ch3.score_submissions(out, gt, gtf, mask, subs, metrics=["l2", "corr", "bioem", "fsc", "res", "sw"],
                               voxel_size=VOXEL, sw_directions=8)
    return out, sc


def test_volume_matrices_against_numpy(tiny, scored):
    """One L2 and one correlation entry per submission recomputed in float64 numpy (median z-score
    over the voxels with mask weight > 0.5, sum of squared differences, Pearson); the npz holds
    them with gt_pc1, n_voxels = the masked voxel count and the native voxel size. Red with the
    npz's gt_pc1 given the GT populations, and with n_voxels counted over the whole box."""
    gt, _, mask, subs = tiny
    out, sc = scored
    assert len(sc["failed"]) == 0 and list(sc["results"]) == list(subs)
    sel = np.asarray(mask) > 0.5
    gmaps = np.asarray(gt.maps)
    for lab, (i, j) in (("Four", (3, 1)), ("Coarse", (20, 5)), ("Noisy", (7, 1))):
        g, s = _zscore(gmaps[i], sel), _zscore(subs[lab].maps[j], sel)
        r = sc["results"][lab]
        np.testing.assert_allclose(r["l2"][i, j], ((g - s) ** 2).sum(), rtol=1e-9)
        np.testing.assert_allclose(r["corr"][i, j], np.corrcoef(g, s)[0, 1], rtol=1e-9)
        saved = np.load(out / "volume_metrics" / f"{slug(lab)}.npz")
        np.testing.assert_array_equal(saved["l2"], r["l2"])
        np.testing.assert_array_equal(saved["gt_pc1"], gt.pc1)
        assert int(saved["n_voxels"]) == sel.sum() and float(saved["native_voxel_size"]) == subs[lab].native_voxel_size
        assert saved["sw"].shape == (gt.n_maps, subs[lab].n_maps)
    # the noisy copy of GT map 7 matches GT map 7 best, by every distance
    r = sc["results"]["Noisy"]
    assert r["l2"][:, 1].argmin() == 7 and r["corr"][:, 1].argmax() == 7 and r["best_gt_index"][1] == 7


def test_volume_summary_nyquist_and_files(tiny, scored):
    """summary.csv and best_resolution.csv against the saved FSC curves: each map's best
    resolution is the numpy 0.5 crossing minimised over the GT, raised to 2 × native voxel for
    "Coarse" (flagged), the median / 10th percentile / min of those, the best match's FSC area
    (NaN shells as 0). Red with the Nyquist rule given the GT's voxel size instead of the native
    one, and with the FSC area taken against GT map 0 instead of each map's best match."""
    gt, _, _, subs = tiny
    out, sc = scored
    summary = pd.read_csv(out / "volume_metrics" / "summary.csv").set_index("label")
    per_map = pd.read_csv(out / "volume_metrics" / "best_resolution.csv")
    assert list(summary.index) == list(subs) and len(per_map) == sum(s.n_maps for s in subs.values())
    for lab, s in subs.items():
        curves = np.load(out / "volume_metrics" / f"{slug(lab)}.npz")["fsc_curves"]
        raw = np.array([[_res_interpolated(curves[i, j], VOXEL) for j in range(s.n_maps)]
                        for i in range(gt.n_maps)]).min(0)
        best = np.maximum(raw, 2 * s.native_voxel_size)
        rows = per_map[per_map.label == lab]
        np.testing.assert_allclose(rows.best_res_raw_A, raw, rtol=1e-9)
        np.testing.assert_allclose(rows.best_res_A, best, rtol=1e-9)
        np.testing.assert_array_equal(rows.nyquist_limited, raw < 2 * s.native_voxel_size * (1 - 1e-9))
        row = summary.loc[lab]
        np.testing.assert_allclose([row.best_res_median_A, row.best_res_p10_A, row.best_res_min_A],
                                   [np.median(best), np.percentile(best, 10), best.min()], rtol=1e-9)
        area = np.nan_to_num(curves.astype(np.float64)).mean(-1)
        np.testing.assert_allclose(row.best_fsc_area_median, np.median(area.max(0)), rtol=1e-9)
        assert row.native_nyquist_A == pytest.approx(2 * s.native_voxel_size)
    assert bool(summary.loc["Coarse", "nyquist_limited"]) and summary.loc["Coarse", "n_maps_nyquist_limited"] > 0
    assert summary.loc["Coarse", "best_res_min_A"] == pytest.approx(4 * VOXEL)
    assert not summary.loc["Four", "nyquist_limited"]


def test_transport_selection_and_coverage(tiny, tmp_path):
    """GT subset = maps evenly spaced along MD-PC1 (closed form); a submission holding exact copies
    of those GT maps plus two unrelated ones covers every GT map of the subset at distance 0 by
    PW and GW, while each far map is > 1 Å from every GT map; the csv holds the mean over the
    GT subset of the row minima. Red with the coverage taken over columns (min(0)), and with the
    submission's subset drawn with one map fewer."""
    gt, _, mask, _ = tiny
    gmaps = np.asarray(gt.maps)
    gt_sel = np.argsort(gt.pc1)[[0, 8, 15, 23]]
    far = np.roll(gmaps[[0, 23]], 6, axis=2)  # moved 34 Å sideways: far from every GT map
    copy = MapSet(maps=np.concatenate([gmaps[gt_sel], far]).astype(np.float32), populations=np.full(6, 1 / 6),
                  voxel_size=VOXEL, label="Copy")
    tr = ch3.transport_scores(tmp_path, gt, mask, {"Copy": copy}, metrics=["gw", "pw"], gt_maps=4, sub_maps=6,
                              top_k=40, box=12, n_jobs=1, voxel_size=VOXEL)
    np.testing.assert_array_equal(tr["gt_sel"], gt_sel)
    r = tr["results"]["Copy"]
    saved = np.load(tmp_path / "volume_metrics" / "transport" / f"{slug('Copy')}.npz")
    np.testing.assert_array_equal(saved["sub_index"], np.arange(6))
    csv = pd.read_csv(tmp_path / "volume_metrics" / "transport.csv").set_index("label")
    for m in ("gw", "pw"):
        np.testing.assert_allclose(np.diag(r[m][:, :4]), 0, atol=1e-6)
        assert r[m][:, 4:].min() > 1.0
        assert csv.loc["Copy", f"{m}_coverage_A"] == pytest.approx(0, abs=1e-6)
        np.testing.assert_allclose(np.diag(tr["gt_self"][m]), 0, atol=1e-6)
    assert ch3.transport_scores(tmp_path, gt, mask, {}, metrics=[], gt_maps=4, sub_maps=6, top_k=40, box=12,
                                n_jobs=1, voxel_size=VOXEL) is None


def test_compare_modes_against_the_published_rule(tiny, scored):
    """The default column from the chapter's own matrices (median best resolution, maps at the
    GT Nyquist, mean BioEM); the reference column's resolution by the published rule written out
    here (first shell i with FSC ≤ 0.5 → N·voxel/i, never → N·voxel) on the reference-mode curves.
    "Noisy" reaches the GT Nyquist (5 maps never failing by default), "Coarse" is raised to its own
    22.8 Å by default but not in reference mode. Red with the "never failing" count compared
    against N·voxel in default mode too, and with the reference median taken from the default
    matrices."""
    gt, _, mask, subs = tiny
    _, sc = scored
    n = gt.box
    for lab in ("Noisy", "Coarse"):
        r = sc["results"][lab]
        cmp = ch3.compare_modes(gt, subs[lab], r, mask, VOXEL).set_index("quantity")
        best = r["res"].min(0)
        np.testing.assert_allclose(cmp["default"].to_numpy(np.float64),
                                   [np.median(best), (best <= 2 * VOXEL + 1e-9).sum(), r["bioem"].mean()],
                                   rtol=1e-12)
        curves = vm.distance_matrices(gt.maps, subs[lab].maps, mask, metrics=["fsc"], mode="reference",
                                      voxel_size=VOXEL)["fsc_curves"]
        first = np.where((curves <= 0.5).any(-1), (curves <= 0.5).argmax(-1) + 1, 0)
        res = np.where(first > 0, n * VOXEL / np.maximum(first, 1), n * VOXEL).min(0)
        ref = cmp["reference-compatible"]
        assert ref.iloc[0] == pytest.approx(np.median(res), rel=1e-12)
        assert ref.iloc[1] == (res >= n * VOXEL - 1e-9).sum()
        assert np.isfinite(ref.iloc[2]) and ref.iloc[2] != pytest.approx(r["bioem"].mean())
    assert cmp.loc["median best resolution (Å)", "default"] == pytest.approx(4 * VOXEL)  # Coarse, Nyquist-raised


# ------------------------------------------------------------------ chapter 4
def _np_pca(X, rank):
    X = np.asarray(X, np.float64)
    Xc = X - X.mean(0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    r = min(rank, len(X) - 1)
    return U[:, :r], S[:r], Vt[:r].T, X.mean(0)


def _np_pcv(a, b):
    (_, Sa, Va, _), (_, _, Vb, _) = a, b
    return ((Vb.T @ (Va * Sa)) ** 2).sum() / (Sa ** 2).sum()


@pytest.fixture(scope="module")
def analysed(tiny, tmp_path_factory):
    gt, _, mask, subs = tiny
    one = MapSet(maps=np.asarray(gt.maps[:1], np.float32), populations=np.ones(1), voxel_size=VOXEL, label="One")
    out = tmp_path_factory.mktemp("ch4")
    kw = dict(box_ds=12, rank=RANK, equalise=True, randomized_above=2000)
    res = ch4.analyse(out, gt, mask, {**subs, "One": one}, n_bootstrap=N_BOOT, **kw)
    # the prepared rows from the kernels directly: masked, downsampled, spectra equalised, unit norm
    prepared = {lab: subspace.masked_downsample(s.maps, mask, 12, label=lab) for lab, s in res["sets"].items()}
    prepared, _ = normalise.equalise_spectra(prepared)
    X = {lab: subspace.prepare(x).numpy() for lab, x in prepared.items()}
    return out, res, X


def test_subspace_pcv_variance_against_numpy_svd(analysed):
    """A one-map set is a recorded failure, left out; PCV (%) and the variance fractions from
    numpy SVDs of the rows prepared here from the kernels (PCV(i, i) = 100); the csvs hold them.
    Red with the PCV table's rows and columns transposed (labels kept), and with the spectra
    left unequalised in fit_sets."""
    out, res, X = analysed
    assert list(res["failed"].label) == ["One"] and list(res["sets"]) == ["GT", "Four", "Coarse", "Noisy"]
    p = {lab: _np_pca(x, RANK) for lab, x in X.items()}
    want = pd.DataFrame([[100 * _np_pcv(p[a], p[b]) for b in p] for a in p], index=list(p), columns=list(p))
    np.testing.assert_allclose(res["pcv"].to_numpy(), want.to_numpy(), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(np.diag(res["pcv"]), 100, rtol=1e-9)
    assert not np.allclose(res["pcv"].to_numpy(), res["pcv"].to_numpy().T, atol=1e-3)  # asymmetric
    pcv_csv = pd.read_csv(out / "subspace" / "pcv.csv", index_col="reference")
    np.testing.assert_allclose(pcv_csv.to_numpy(), res["pcv"].to_numpy(), rtol=1e-12)
    var = pd.read_csv(out / "subspace" / "variance.csv", index_col="label")
    for lab, (_, S, _, _) in p.items():
        np.testing.assert_allclose(var.loc[lab].dropna().to_numpy(), S ** 2 / (S ** 2).sum(), rtol=1e-7)
    both = ch4.both_directions(res["pcv"])
    np.testing.assert_allclose(both.loc["Noisy"].to_numpy(), [want.loc["GT", "Noisy"], want.loc["Noisy", "GT"]],
                               rtol=1e-7)


def test_subspace_bootstrap_against_numpy(analysed):
    """Bootstrap std of both PCVs for one submission redone with numpy: default_rng(n_maps)
    resamples, numpy SVD, PCV(GT, resample) and PCV(resample, GT), std over N_BOOT resamples (%;
    a resample of fewer than RANK + 1 distinct maps would leave a null direction that numpy and
    torch may pick differently).
    Red with the two PCV directions swapped, and with the generator seeded 0."""
    out, res, X = analysed
    gt_p = _np_pca(X["GT"], RANK)
    boot = pd.read_csv(out / "subspace" / "pcv_bootstrap.csv").set_index("label")
    assert list(boot.index) == ["Four", "Coarse", "Noisy"]
    for lab in ("Coarse", "Noisy"):
        x = X[lab]
        rng = np.random.default_rng(len(x))
        v = []
        for _ in range(N_BOOT):
            pb = _np_pca(x[rng.integers(0, len(x), len(x))], RANK)
            v.append((_np_pcv(gt_p, pb), _np_pcv(pb, gt_p)))
        v = 100 * np.array(v)
        np.testing.assert_allclose(boot.loc[lab, ["gt_captured_std", "set_in_gt_std"]].to_numpy(np.float64),
                                   v.std(0), rtol=1e-6, atol=1e-8)


def test_subspace_pc1_and_embeddings_against_numpy(analysed):
    """% of the GT's PC1 variance captured (100 for the GT; numpy for the others, sorted
    descending, in the csv); GT-axis coordinates = (rank-r reconstruction + own mean − GT mean)
    on the GT's first two numpy axes (signs aligned); the npz keys. Red with each set projected
    on its own axes instead of the GT's, and with the GT's second component in place of its first."""
    out, res, X = analysed
    p = {lab: _np_pca(x, RANK) for lab, x in X.items()}
    first = ch4.gt_pc1_captured(out, res["pcas"])
    _, S, V, _ = p["GT"]
    v1 = V[:, :1] * S[:1]
    for lab, (_, _, Vl, _) in p.items():
        assert first[lab] == pytest.approx(100 * ((Vl.T @ v1) ** 2).sum() / (v1 ** 2).sum(), rel=1e-6)
    assert first["GT"] == pytest.approx(100) and list(first.index) == list(first.sort_values(ascending=False).index)
    csv = pd.read_csv(out / "subspace" / "gt_pc1_captured.csv", index_col="label")
    np.testing.assert_allclose(csv.iloc[:, 0].to_numpy(), first.to_numpy(), rtol=1e-12)
    emb = ch4.embeddings(out, res["pcas"], res["sets"])
    gU, gS, gV, gmean = p["GT"]
    sign = np.sign(np.sum(emb["gtaxes"]["GT"] * (gU[:, :2] * gS[:2]), 0))
    for lab, (U, Sl, Vl, mean) in p.items():
        want = ((U * Sl) @ Vl.T + (mean - gmean)) @ gV[:, :2] * sign
        np.testing.assert_allclose(emb["gtaxes"][lab], want, rtol=1e-6, atol=1e-8)
    saved = np.load(out / "subspace" / "embeddings.npz")
    assert set(saved.files) == {f"{k}_{slug(lab)}" for k in ("common", "gtaxes", "pop") for lab in res["sets"]}
    np.testing.assert_array_equal(saved[f"pop_{slug('Coarse')}"], res["sets"]["Coarse"].populations)
    assert saved[f"common_{slug('Noisy')}"].shape == (5, 2)
    # the common basis from the submissions only: orthonormal, so embedding norms ≤ the rank-r norms
    for lab in ("Four", "Coarse", "Noisy"):
        U, Sl, _, _ = p[lab]
        assert (np.linalg.norm(saved[f"common_{slug(lab)}"], axis=1) <= np.linalg.norm(U * Sl, axis=1) + 1e-9).all()
