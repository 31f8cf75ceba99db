"""Chapters 5 and 6 without their notebooks: helpers.pipeline.chapters.distribution and .images
on the tiny data set, their tables checked against independent computations (POT's ``ot.emd2``
on windows drawn here, log-sum-exp of the saved log-likelihoods, the kernel's own search)."""
import json

import numpy as np
import ot
import pandas as pd
import pytest
from scipy.special import logsumexp
from scipy.stats import rankdata

from helpers import io
from helpers.datagen import mocks
from helpers.io import manifest
from helpers.io.mapset import MapSet, slug
from helpers.kernels import gt_pass
from helpers.kernels import image_metrics as im
from helpers.pipeline.chapters import distribution as ch5
from helpers.pipeline.chapters import images as ch6


@pytest.fixture(scope="module")
def gt_and_subs(tiny_data):
    """The tiny GT, two Averaged-GT sets on its grid (4 and 6 maps; the 6-map one with skewed
    populations) and their chapter-3 matrices (l2, corr, n_voxels) from the fused GT pass."""
    gtf = io.find_gt(tiny_data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], 5.7, check_finite=False)
    subs = {}
    for lab, k in (("Four", 4), ("Six", 6)):
        maps, pops, _ = mocks.averaged_gt(np.asarray(gt.maps), gt.populations, gt.pc1, k)
        if k == 6:
            pops = pops * np.linspace(0.5, 1.5, k)
            pops = pops / pops.sum()
        subs[lab] = MapSet(maps=np.asarray(maps, np.float32), populations=pops, voxel_size=gt.voxel_size, label=lab)
    mask = io.read_mask(gtf["mask"], gt.box)
    fused, _ = gt_pass.distance_matrices_many(np.asarray(gt.maps), {k: s.maps for k, s in subs.items()}, mask,
                                              ["l2", "corr"])
    mats = {lab: {"l2": np.asarray(r["l2"]), "corr": np.asarray(r["corr"]), "n_voxels": np.int64(r["n_voxels"])}
            for lab, r in fused.items()}
    return gt, gtf, subs, mats


def _windows(n, pc1, fraction, n_pool, seed):
    """The default replicate draw, written out here: default_rng(seed) rows, stable pc1 order,
    floor(m / n_pool) contiguous windows."""
    m = int(np.floor(fraction * n))
    rows = np.random.default_rng(seed).choice(n, size=m, replace=False)
    rows = rows[np.argsort(pc1[rows], kind="stable")]
    return rows, np.array_split(np.arange(m), max(1, m // n_pool))


def _emd(cost, p, rows, wins, q, how="mean"):
    c = cost[rows].astype(np.float64)
    D = np.stack([c[w].mean(0) if how == "mean" else c[w].sum(0) for w in wins])
    P = np.array([p[rows][w].sum() for w in wins])
    P = P / P.sum()
    return ot.emd2(P, np.asarray(q, np.float64), D), float((P * D.min(1)).sum())


def test_distribution_replicates_against_pot_and_the_files(gt_and_subs, tmp_path):
    """Rows = submissions × metrics × window sizes × replicates; one submission's EMD (submitted
    and optimised) recomputed with ot.emd2 on L2 per masked voxel; the summary is the mean over
    replicates and window sizes; q_opt keyed <slug>__<metric>. Red with p_gt and pc1 swapped in
    the evaluate call, and with the L2 cost left unnormalised (n_voxels dropped)."""
    gt, _, subs, mats = gt_and_subs
    kw = dict(metrics=["l2", "corr"], n_pool=3, n_pool_sweep=[2, 3], fraction=0.9, n_replicates=3,
              cost_scale="distance", mode="default", voxel_size=gt.voxel_size)
    rep, summary, qopt, failed = ch5.replicates(tmp_path, subs, mats, gt.populations, gt.pc1, **kw)
    assert len(failed) == 0 and len(rep) == 2 * 2 * 2 * 3
    assert {"label", "metric", "n_pool", "replicate", "EMD_submitted", "EMD_opt", "KL_pq_submitted",
            "KL_qp_submitted", "KL_pq_opt", "KL_qp_opt", "em_iterations", "max_q_opt"} <= set(rep.columns)
    on_disk = pd.read_csv(tmp_path / "distribution" / "replicates.csv")
    np.testing.assert_array_equal(on_disk.EMD_submitted.to_numpy(), rep.EMD_submitted.to_numpy())
    cost = mats["Six"]["l2"].astype(np.float64) / int(mats["Six"]["n_voxels"])
    for npool in (2, 3):
        for k in range(3):
            rows, wins = _windows(gt.n_maps, gt.pc1, 0.9, npool, k)
            e_sub, e_opt = _emd(cost, gt.populations, rows, wins, subs["Six"].populations)
            got = rep[(rep.label == "Six") & (rep.metric == "l2") & (rep.n_pool == npool) & (rep.replicate == k)]
            assert got.EMD_submitted.item() == pytest.approx(e_sub, rel=1e-9)
            assert got.EMD_opt.item() == pytest.approx(e_opt, rel=1e-9)
    sel = rep[(rep.label == "Four") & (rep.metric == "corr")]
    assert summary.loc[("Four", "corr"), "EMD_submitted_mean"] == pytest.approx(sel.EMD_submitted.mean(), rel=1e-12)
    assert summary.loc[("Four", "corr"), "EMD_submitted_std"] == pytest.approx(sel.EMD_submitted.std(), rel=1e-12)
    saved = pd.read_csv(tmp_path / "distribution" / "summary.csv")
    assert len(saved) == 4 and saved.columns[0] == "label"
    with np.load(tmp_path / "distribution" / "q_opt.npz") as z:
        assert sorted(z.files) == sorted(f"{slug(lab)}__{m}" for lab in subs for m in ("l2", "corr"))
        assert z[f"{slug('Four')}__l2"].shape == (4,) and z[f"{slug('Four')}__l2"].sum() == pytest.approx(1.0)


def test_n_volumes_study_against_its_own_mock(gt_and_subs, tmp_path):
    """k maps ≤ half the GT's only; distance rows: the k=4 Averaged-GT mock's EMD recomputed from
    its own L2 matrix (one GT pass for that mock alone) with ot.emd2; rank rows from 0. Red with
    the cost scales swapped and with the mock's populations replaced by the GT's first k."""
    gt, gtf, _, _ = gt_and_subs
    study = ch5.n_volumes_study(tmp_path, gt, gtf["mask"], n_volumes=[4, 6, 100], n_pool=3, fraction=0.9,
                                n_replicates=2)
    assert list(study.columns) == ["n_maps", "cost_scale", "EMD_submitted", "EMD_opt"]
    assert len(study) == 2 * 2 * 2 and set(study.n_maps) == {4, 6}
    assert not any(p.name.startswith(".scratch-") for p in tmp_path.iterdir())  # scratch removed
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "distribution" / "n_volumes_study.csv"), study)
    maps, pops, _ = mocks.averaged_gt(np.asarray(gt.maps), gt.populations, gt.pc1, 4)
    r, _ = gt_pass.distance_matrices_many(np.asarray(gt.maps), {"m": maps}, io.read_mask(gtf["mask"], gt.box), ["l2"])
    l2 = np.asarray(r["m"]["l2"], np.float64)
    for k in range(2):
        rows, wins = _windows(gt.n_maps, gt.pc1, 0.9, 3, k)
        got = study[(study.n_maps == 4) & (study.cost_scale == "distance")].EMD_submitted.to_numpy()[k]
        assert got == pytest.approx(_emd(l2 / r["m"]["n_voxels"], gt.populations, rows, wins, pops)[0], rel=1e-6)
        got = study[(study.n_maps == 4) & (study.cost_scale == "rank")].EMD_submitted.to_numpy()[k]
        assert got == pytest.approx(_emd(rankdata(l2, axis=1) - 1, gt.populations, rows, wins, pops)[0], rel=1e-9)


def test_compare_modes_reference_against_the_published_draw(gt_and_subs, tmp_path):
    """Reference mode: ranks from 1 summed over windows of rows drawn by RandomState(k) on the
    pc1 order, recomputed here with ot.emd2; default: L2 per voxel. Red with the two modes'
    matrices swapped."""
    gt, _, subs, mats = gt_and_subs
    modes = ch5.compare_modes(subs, mats, gt.populations, gt.pc1, n_pool=3, fraction=0.9, n_replicates=2)
    assert sorted(modes.columns) == sorted(f"{a} ({b})" for a in ("EMD_submitted", "EMD_opt")
                                           for b in ("default", "reference"))
    assert list(modes.index) == sorted(subs)
    n, ref, dfl = gt.n_maps, [], []
    for k in range(2):
        order = np.argsort(gt.pc1, kind="quicksort")
        pos = np.sort(np.random.RandomState(k).choice(np.arange(n), size=int(0.9 * n), replace=False))
        rows = order[pos]
        wins = np.array_split(np.arange(len(rows)), len(rows) // 3)
        ref.append(_emd(rankdata(mats["Six"]["l2"], axis=1), gt.populations, rows, wins, subs["Six"].populations, "sum")[0])
        rows, wins = _windows(n, gt.pc1, 0.9, 3, k)
        dfl.append(_emd(mats["Six"]["l2"] / int(mats["Six"]["n_voxels"]), gt.populations, rows, wins,
                        subs["Six"].populations)[0])
    assert modes.loc["Six", "EMD_submitted (reference)"] == pytest.approx(np.mean(ref), rel=1e-9)
    assert modes.loc["Six", "EMD_submitted (default)"] == pytest.approx(np.mean(dfl), rel=1e-9)
    # the default column taken from the chapter's own replicates table equals the recomputation
    rep = ch5.replicates(tmp_path, subs, mats, gt.populations, gt.pc1, metrics=["l2"], n_pool=3, n_pool_sweep=[3],
                         fraction=0.9, n_replicates=2, cost_scale="distance", mode="default", voxel_size=5.7)[0]
    reused = ch5.compare_modes(subs, mats, gt.populations, gt.pc1, n_pool=3, fraction=0.9, n_replicates=2, rep=rep)
    pd.testing.assert_frame_equal(reused, modes, rtol=1e-12)
    assert ch5.rank_agreement(pd.DataFrame({"EMD_submitted (default)": [1.0, 2.0, 3.0],
                                            "EMD_submitted (reference)": [10.0, 30.0, 20.0]})) == 1


def test_load_inputs_takes_what_chapter_3_scored(gt_and_subs, tiny_data, tmp_path):
    """Only the submissions chapter 3 finished are read, with their matrices. Red with the
    chapter-3 filter dropped (every preprocessed submission read)."""
    _, _, subs, mats = gt_and_subs
    (tmp_path / "volume_metrics").mkdir()
    for lab, s in subs.items():
        s.save(tmp_path / "preprocessed" / f"{slug(lab)}.npz")
        np.savez(tmp_path / "volume_metrics" / f"{slug(lab)}.npz", **mats[lab])
    manifest.write(tmp_path, {"submissions": {lab: f"preprocessed/{slug(lab)}.npz" for lab in subs},
                              "chapters": {"03_volume_metrics": {"status": "done", "labels": ["Six"]}}})
    gt, gtf, got, got_mats = ch5.load_inputs(tiny_data, tmp_path, 5.7)
    assert list(got) == ["Six"] and list(got_mats) == ["Six"] and gt.n_maps == 24
    assert ch5.map_counts(got) == {"Six": 6}
    np.testing.assert_array_equal(got_mats["Six"]["l2"], mats["Six"]["l2"])


# ------------------------------------------------------------------ chapter 6
@pytest.fixture(scope="module")
def searched(gt_and_subs, tiny_data, tmp_path_factory):
    """The first 8 particle images at 12 px against the GT ensemble, the 4-map set, a copy of it
    with other populations (reuses its search) and an exact copy (same ensemble)."""
    gt, gtf, subs, _ = gt_and_subs
    out = tmp_path_factory.mktemp("ch6")
    manifest.start(out, {}, tiny_data, fresh=True)
    st = ch6.particle_stack(tiny_data, out, "particles/particles.star", 8, 12, n_directions=12, n_inplane=4,
                            max_shift=0, shift_step=1.0, refine_levels=0, refine_top=1)
    four = subs["Four"]
    sets = {"GT ensemble": gt, "Four": four, "Four, flat": MapSet(four.maps, np.full(4, 0.25), four.voxel_size, "Four, flat"),
            "Four again": MapSet(four.maps, four.populations, four.voxel_size, "Four again")}
    mask = io.read_mask(gtf["mask"], gt.box)
    res, summary, failed = ch6.search_sets(out, sets, st, mask, 12)
    return out, st, sets, mask, res, summary, failed


def test_image_search_table_against_the_kernel(searched):
    """summary.csv: one row per set, ranks 1…n by loglik_submitted, the GT ensemble's delta 0;
    the 4-map set's log-likelihoods recomputed from a search run here by the kernel and a
    log-sum-exp written out; reused searches marked. Red with loglik_submitted taken from the
    best-pose log-likelihood, and with the delta not divided by the number of images."""
    out, st, sets, mask, res, summary, failed = searched
    assert len(failed) == 0
    info = json.loads((out / "image_metrics" / "images.json").read_text())
    assert info == {"particles": "particles/particles.star", "n_images": 8, "n_stack": st.n_stack} and st.n_stack == 24
    assert list(summary.columns) == ["n_maps", "loglik_submitted", "loglik_optimised", "loglik_best_pose_submitted",
                                     "median_best_cc", "seconds", "delta_per_image_vs_gt", "rank"]
    assert sorted(summary.index) == sorted(sets) and list(summary["rank"]) == [1, 2, 3, 4]
    assert summary.loc["GT ensemble", "delta_per_image_vs_gt"] == 0.0
    direct = st.search.search(im.maps_to_image_grid(sets["Four"].maps, 12, mask))
    with np.load(out / "image_metrics" / f"{slug('Four')}.npz") as z:
        np.testing.assert_allclose(z["logp_integrated"], direct["logp_integrated"], rtol=1e-6)
        np.testing.assert_array_equal(z["populations"], sets["Four"].populations)
        assert "w_opt" not in z.files and "seconds" not in z.files
    lp = direct["logp_integrated"].astype(np.float64)
    mine = logsumexp(lp + np.log(sets["Four"].populations)[None], axis=1).sum()
    assert summary.loc["Four", "loglik_submitted"] == pytest.approx(mine, rel=1e-6)
    flat = np.log(np.exp(lp - lp.max(1, keepdims=True)).mean(1)).sum() + lp.max(1).sum()
    assert summary.loc["Four, flat", "loglik_submitted"] == pytest.approx(flat, rel=1e-6)
    gt_ll = summary.loc["GT ensemble", "loglik_submitted"]
    assert summary.loc["Four", "delta_per_image_vs_gt"] == pytest.approx((mine - gt_ll) / 8, rel=1e-6)
    assert summary.loc["Four", "loglik_optimised"] >= summary.loc["Four", "loglik_submitted"] - 1e-9
    saved = pd.read_csv(out / "image_metrics" / "summary.csv", index_col="label")
    np.testing.assert_array_equal(saved.loglik_submitted.to_numpy(), summary.loglik_submitted.to_numpy())
    assert ch6.reused_searches(res) == {"Four, flat": "Four", "Four again": "Four"}
    assert ch6.same_ensembles(res, sets) == {"Four again"}
    rank, above = ch6.above_gt(summary)
    assert rank == summary.loc["GT ensemble", "rank"] and set(above) == set(summary.index[summary["rank"] < rank])
    cost = ch6.search_cost(res, sets, st)
    assert cost["comparisons"] == 8 * (24 + 4) * st.search.n_evaluated


def test_power_table_against_a_paired_difference_written_out(searched):
    """power.csv: submissions × (loglik, best_cc); mean, sd, z of the per-image difference GT
    ensemble − submission recomputed with numpy. Red with the difference's sign flipped."""
    out, st, sets, _, res, _, _ = searched
    power = ch6.power_table(out, res, sets, st.n_stack)
    assert len(power) == 3 * 2 and set(power.index.get_level_values("metric")) == {"loglik", "best_cc"}
    saved = pd.read_csv(out / "image_metrics" / "power.csv")
    assert list(saved.columns) == ["label", "metric", "n_images", "mean", "sd", "z", "images_needed", "verdict", "n_stack"]
    lg = res["GT ensemble"]["logp_integrated"].astype(np.float64)
    lf = res["Four"]["logp_integrated"].astype(np.float64)
    d = (logsumexp(lg + np.log(sets["GT ensemble"].populations)[None], axis=1)
         - logsumexp(lf + np.log(sets["Four"].populations)[None], axis=1))
    row = power.loc[("Four", "loglik")]
    assert row["mean"] == pytest.approx(d.mean(), rel=1e-6) and row["sd"] == pytest.approx(d.std(ddof=1), rel=1e-6)
    assert row["z"] == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(8)), rel=1e-6)
    dcc = res["GT ensemble"]["best_cc"].max(1) - res["Four"]["best_cc"].max(1)
    assert power.loc[("Four", "best_cc"), "mean"] == pytest.approx(dcc.mean(), rel=1e-6)
    assert (power["n_stack"] == 24).all() and (power["n_images"] == 8).all()


def test_thin_gt_keeps_the_distribution_along_the_motion():
    """Chapter 6's GT ensemble on fewer maps (``n_gt_maps``): 10 maps with shuffled MD-PC1 cut
    into 3 runs (4, 3, 3 maps in PC1 order); each run's middle map carries the run's summed
    population (written out here by hand), so the populations' mean PC1 moves by less than one
    map spacing; 0 or ≥ 10 maps: the GT itself."""
    rng = np.random.default_rng(0)
    pc1 = rng.permutation(10).astype(float)  # map i sits at PC1 = pc1[i]
    pops = rng.random(10)
    gt = MapSet(maps=np.stack([np.full((4, 4, 4), v, np.float32) for v in pc1]), populations=pops / pops.sum(),
                voxel_size=1.0, label="GT", pc1=pc1)
    thin = ch6.thin_gt(gt, 3)
    order = np.argsort(pc1)
    runs = [order[:4], order[4:7], order[7:]]
    assert list(thin.pc1) == [pc1[order[2]], pc1[order[5]], pc1[order[8]]]
    np.testing.assert_allclose(thin.maps[:, 0, 0, 0], thin.pc1)  # the maps travel with their PC1
    want = np.array([gt.populations[r].sum() for r in runs])
    np.testing.assert_allclose(thin.populations, want / want.sum(), rtol=1e-12)
    assert abs(thin.populations @ thin.pc1 - gt.populations @ gt.pc1) < 1.0
    assert ch6.thin_gt(gt, 0) is gt and ch6.thin_gt(gt, 10) is gt
