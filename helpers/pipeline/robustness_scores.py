"""Every metric of one degraded set, summarised to one number per set (chapter 7).

:class:`Scorer` computes chapters 3–5's GT-based metrics for batches of sets in one pass over
the GT; :func:`image_scores` chapter 6's image metrics from a pose search; :func:`batch_for`
how many sets fit in memory at once. The metric keys, labels, units and directions are those of
:data:`helpers.core.catalogue.METRICS`.
"""
from __future__ import annotations

import math

import numpy as np
import torch

def spread_subset(cost: np.ndarray, gt_pc1: np.ndarray, k: int) -> np.ndarray:
    """k submitted maps spread along the motion, independent of the submission's map order:
    maps sorted by the MD-PC1 of their closest GT map (ties by that distance), then k evenly
    spaced. cost (n_gt, n_sub), lower = closer."""
    n = cost.shape[1]
    if k >= n:
        return np.arange(n)
    j = np.argmin(cost, 0)
    order = np.lexsort((cost[j, np.arange(n)], gt_pc1[j]))
    return np.sort(order[np.linspace(0, n - 1, k).round().astype(int)])




def batch_for(n_maps: int, box: int, budget: int = 3 * 2 ** 30, most: int = 8) -> int:
    """Degraded sets per pass over the GT that fit a working-memory ``budget`` (bytes): each set
    of ``n_maps`` float32 maps of ``box``³ is held about four times during scoring (the set, its
    background-subtracted copy, the kernels' stacked copy and spectra). 8 on the demo (80 × 64³);
    2 at 80 × 96³ (measured: batch 8 there peaked at 9.95 GiB of anonymous memory)."""
    per_set = 4 * n_maps * box ** 3 * 4
    return int(max(1, min(most, budget // per_set)))


class Scorer:
    """Every GT-based metric of chapters 3–5 for sets of maps, summarised to one number per set.

    Per set (maps (n, N, N, N) on the GT grid, populations (n,)): ``resolution_A`` / ``fsc_area``
    / ``l2`` (per masked voxel) / ``corr`` / ``bioem`` / ``sw_A``: median over the submitted maps
    of the best value against any GT map; ``gw_coverage_A`` / ``pw_coverage_A``: mean over an
    evenly spaced GT subset of the distance to the closest of a subset of submitted maps
    (:func:`spread_subset`); ``pcv_*``: PCV between the GT and the set (%), spectra equalised
    between the two alone; ``emd_*`` / ``kl_*``: chapter 5's distribution metrics on the L2 cost
    (mean over its replicates)."""

    def __init__(self, gt_maps, gt_pops, gt_pc1, mask, voxel_size: float, sw_directions: int = 32,
                 transport_gt_maps: int = 6, transport_sub_maps: int = 10, transport_top_k: int = 100,
                 transport_box: int = 16, box_ds: int = 32, rank: int = 5, n_pool: int = 5,
                 dist_replicates: int = 3, transport_jobs: int = 1):
        from helpers.kernels import subspace
        self.G, self.mask, self.vs = gt_maps, mask, voxel_size
        self.p_gt, self.pc1 = np.asarray(gt_pops, float), np.asarray(gt_pc1, float)
        self.sw_directions, self.box_ds, self.rank = sw_directions, box_ds, rank
        self.n_pool, self.dist_replicates = n_pool, dist_replicates
        self.t_gt = np.argsort(self.pc1)[np.linspace(0, len(self.pc1) - 1, transport_gt_maps).round().astype(int)] \
            if transport_gt_maps else None
        self.t_sub, self.t_k, self.t_box, self.t_jobs = transport_sub_maps, transport_top_k, transport_box, transport_jobs
        self.sw_cache, self.t_cache = {}, {}
        self.l2: dict = {}  # label -> (n_gt, n_sub) L2 cost of the last sets scored (for population variants)
        self.gt_ds = subspace.masked_downsample(gt_maps, mask, box_ds, label="GT")
        # the GT with its solvent background subtracted, once (the sets are subtracted once each in
        # score): the fused pass then skips both
        from helpers.kernels.volume_input import subtract_background
        self.G_bg = (subtract_background(gt_maps, mask, torch.device("cpu")).numpy() if mask is not None
                     else gt_maps)

    def score(self, sets: dict) -> dict:
        """{label: (maps, populations)} → {label: {metric: value}} (one GT pass for the batch)."""
        from helpers.kernels import distribution as dist
        from helpers.kernels import fsc, gt_pass, volume_input, volume_metrics as vm
        out = {lab: {} for lab in sets}
        cpu = torch.device("cpu")
        flat = {k: volume_input.subtract_background(m, self.mask, cpu) if self.mask is not None else m for k, (m, _) in sets.items()}
        # background off once per set (and once for the GT, in __init__): the same numbers as the
        # chapters' calls, which subtract it inside (tested against them)
        fused, failed = gt_pass.distance_matrices_many(self.G_bg, flat, self.mask, ["l2", "corr", "bioem", "fsc", "res"],
                                                  voxel_size=self.vs, background=False)
        if failed:
            raise RuntimeError(f"degenerate degraded sets: {failed}")
        for lab, (_, q) in sets.items():
            r, o, maps = fused[lab], out[lab], flat[lab]
            l2 = dist.distance_cost(r["l2"], "l2", int(r["n_voxels"]))
            best = fsc.best_match(r["fsc_curves"])
            o["resolution_A"] = float(np.median(r["res"].min(0)))
            o["fsc_area"] = float(np.median(fsc.fsc_area(r["fsc_curves"][best, np.arange(len(q))])))
            o["l2"] = float(np.median(l2.min(0)))
            o["corr"] = float(np.median(r["corr"].max(0)))
            o["bioem"] = float(np.median(r["bioem"].min(0)))
            if self.sw_directions:
                sw = vm.sliced_wasserstein(self.G, maps, self.vs, self.sw_directions, mask=self.mask, cache=self.sw_cache,
                                           background=False)  # subtracted above, once for SW and PCA
                o["sw_A"] = float(np.median(sw.min(0)))
            if self.t_gt is not None:
                o.update(self._transport(maps, l2))
            o.update(self._pcv(maps))
            o.update(self.distribution(l2, q))
            self.l2[lab] = l2
        return out

    def distribution(self, l2: np.ndarray, q) -> dict:
        """Chapter 5's EMD/KL (submitted and optimised populations) on an L2 cost (n_gt, n_sub)."""
        from helpers.kernels import distribution as dist
        reps = dist.evaluate(l2, self.p_gt, self.pc1, np.asarray(q, float), n_pool=self.n_pool,
                             n_replicates=self.dist_replicates)
        return {key: float(np.mean([x[col] for x in reps])) for key, col in (
            ("emd_submitted", "EMD_submitted"), ("emd_optimised", "EMD_opt"),
            ("kl_submitted", "KL_pq_submitted"), ("kl_optimised", "KL_pq_opt"))}

    def _transport(self, maps, l2) -> dict:
        from helpers.kernels.transport import transport_matrices
        sub = spread_subset(l2, self.pc1, self.t_sub)
        t = transport_matrices(self.G, maps, ["gw", "pw"], top_k=self.t_k, voxel_size=self.vs, mask=self.mask,
                               downsample=self.t_box, gt_index=self.t_gt, sub_index=sub, n_jobs=self.t_jobs,
                               cache=self.t_cache)
        return {"gw_coverage_A": float(t["gw"].min(1).mean()), "pw_coverage_A": float(t["pw"].min(1).mean())}

    def _pcv(self, maps) -> dict:
        from helpers.kernels import subspace
        from helpers.kernels.normalise import equalise_spectra
        x = subspace.masked_downsample(maps, self.mask, self.box_ds, background=False)
        eq, _ = equalise_spectra({"GT": self.gt_ds, "set": x})  # the GT and this set alone
        pg = subspace.pca(subspace.prepare(eq["GT"]), self.rank)
        pxs = subspace.pca(subspace.prepare(eq["set"]), min(self.rank, len(x) - 1))
        return {"pcv_gt_captured": 100 * subspace.pcv(pg, pxs), "pcv_set_in_gt": 100 * subspace.pcv(pxs, pg)}


def image_scores(logp: np.ndarray, best_cc: np.ndarray, q: np.ndarray, base_ll: np.ndarray,
                 boot: np.ndarray, base_cc: np.ndarray | None = None) -> dict:
    """Image metrics of one set from its pose-search results (chapter 6): logp (M, n) integrated
    log-likelihoods, best_cc (M, n), populations q (n,), base_ll (M,) the base's per-image ensemble
    log-likelihood, boot (B, M) bootstrap indices (the same for every set), base_cc (M,) the
    base's per-image best CC over its maps. ``loglik_per_image``: mean over images of the
    log-likelihood relative to the base (nats); ``best_cc``: median over images of the best CC
    over maps; each with the std over the bootstrap as ``*_err`` and, paired with the base over
    the same resampled images, the standard error of the difference from the base as
    ``*_se_diff`` (for the log-likelihood, already relative to the base, the two are equal);
    ``*_images_needed``: :func:`images_to_separate` of the per-image differences."""
    from helpers.kernels.image_metrics import per_image_loglik
    d = per_image_loglik(logp, q) - base_ll
    cc = best_cc.max(1)
    out = {"loglik_per_image": float(d.mean()), "loglik_per_image_err": float(d[boot].mean(1).std()),
           "best_cc": float(np.median(cc)), "best_cc_err": float(np.median(cc[boot], 1).std()),
           "per_image_delta": d, "n_images": len(d), "loglik_per_image_images_needed": images_to_separate(d)}
    out["loglik_per_image_se_diff"] = out["loglik_per_image_err"]
    if base_cc is not None:
        out["best_cc_se_diff"] = float((np.median(cc[boot], 1) - np.median(base_cc[boot], 1)).std())
        out["best_cc_images_needed"] = images_to_separate(cc - base_cc)
    return out


def images_to_separate(delta: np.ndarray, k: float = 2.0) -> float:
    """Images needed before a mean per-image difference ``delta`` (M,) exceeds k standard errors:
    :func:`helpers.kernels.image_metrics.images_needed`."""
    from helpers.kernels.image_metrics import images_needed
    return images_needed(delta, k)


def separation_curve(delta: np.ndarray, counts, n_draws: int = 200, k: float = 2.0, seed: int = 0) -> np.ndarray:
    """For each image count n: the fraction of random n-image subsets (with replacement) in which
    the base ensemble beats the degraded one by more than k standard errors of the mean."""
    rng = np.random.default_rng(seed)
    out = []
    for n in counts:
        x = delta[rng.integers(0, len(delta), (n_draws, int(n)))]
        se = x.std(1, ddof=1) / math.sqrt(n) if n > 1 else np.full(n_draws, np.inf)
        out.append(float(np.mean(x.mean(1) < -k * se)))
    return np.array(out)
