"""Controlled degradations of a submission and how every metric responds (chapter 7).

The study starts from a *base* submission made from the GT — the Averaged GT (each group of
GT maps along MD-PC1 averaged, the group's summed population) plus white Gaussian noise at a
fixed signal-to-noise ratio, as a reconstruction has — and applies one defect at a time, each
swept over levels (:data:`DEGRADATIONS`). Replicate r draws its own noise (and its own map
permutation where the defect is a shuffle): the spread over replicates at the base level is
each metric's *own noise*.

Where each defect acts (``stage``):

* ``"signal"`` — on the noise-free maps, before the replicate's noise is added: what a method
  gets wrong about the molecule (lost high-resolution signal = B-factor blur, a residual
  rotation or translation, the wrong hand, part of the motion missing, fewer maps, map order).
* ``"map"`` — on the finished (noisy) map: what is done to a map afterwards (sharpening with a
  negative B-factor, an intensity scale or offset).
* ``"populations"`` — the maps are the base's, only the populations change (shifted along the
  motion, flattened towards uniform, the middle mode dropped); each set records its true
  KL(p‖q) in nats.

Conventions: maps (n, N, N, N) float32, axes (z, y, x), about voxel N//2; rotations active,
V'(r) = V(Rᵀ r), on a 2× Fourier-oversampled grid (plain trilinear interpolation at N³ blurs
the map as much as a 1–2° rotation moves it); translations as exact Fourier phase shifts;
noise SNR = (variance of the noise-free map inside the mask, weight > 0.5) / (noise variance).

:func:`classify` turns the response table into verdicts (:mod:`helpers.kernels.verdicts`): each level
against the base by a paired test over replicates (they share their noise draw), Holm over the
levels of a degradation × metric cell, levels ordered by :meth:`Degradation.severity`.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch

from helpers.core import catalogue
from helpers.kernels import verdicts
from helpers.kernels.distribution import kl
from helpers.kernels.fourier import as_tensor, fourier_resample_fast, irfftn3, rfftn3
from helpers.kernels.geometry import axis_angle_to_matrix, rotate_volume
from helpers.datagen.simulate import averaged_gt, three_gaussian_populations


@dataclasses.dataclass(frozen=True)
class Degradation:
    name: str        # key (CSV column ``degradation``)
    title: str       # readable name
    unit: str        # unit of the level
    none: float      # level of the undegraded base
    levels: tuple    # demo levels, mildest first
    stage: str       # "signal", "map", "populations" (module docstring)
    expect: str      # "detect": a metric should respond; "invariant": it should not
    what: str        # one line for the tables

    def severity(self, level: float) -> float:
        """How severe a level is, from the definition (larger = worse; the base scores 0): lower
        SNR and fewer maps are worse (``1/level``), an intensity scale by its factor either way
        (``|log level|``), every other level by its distance from the base's (``|level − none|``)."""
        if self.unit == "SNR" or self.name == "n_maps":
            return 1.0 / level
        if self.unit == "×":
            return abs(math.log(level))
        return abs(level - self.none)

    def format(self, level: float) -> str:
        """A level as text: "SNR 0.25", "100 Å²", "flipped"."""
        if self.unit in ("flipped", "shuffled"):
            return self.unit
        if self.unit == "SNR":
            return f"SNR {level:g}"
        if self.unit == "maps" and self.name == "n_maps":
            return f"{level:g} maps"
        return f"{level:g} {self.unit}"


DEGRADATIONS = {d.name: d for d in (
    Degradation("noise", "added noise", "SNR", math.nan, (1.0, 0.25), "map", "detect",
                "more white noise in every map: the map's SNR falls from the base's to the level"),
    Degradation("blur", "B-factor blur", "Å²", 0.0, (25.0, 100.0, 400.0), "signal", "detect",
                "the signal multiplied by exp(−B|k|²/4) before the noise: lost high-resolution signal"),
    Degradation("sharpen", "sharpening", "Å²", 0.0, (-25.0, -100.0), "map", "detect",
                "the finished map multiplied by exp(+|B||k|²/4): over-sharpened signal and noise"),
    Degradation("rotation", "residual rotation", "°", 0.0, (0.5, 2.0, 10.0), "signal", "detect",
                "every map rotated about the box centre by the level about one fixed axis"),
    Degradation("translation", "residual translation", "Å", 0.0, (0.25, 1.0, 4.0), "signal", "detect",
                "every map shifted by the level along one fixed direction"),
    Degradation("hand", "wrong hand", "flipped", 0.0, (1.0,), "signal", "detect",
                "every map mirrored (x reversed), not corrected by the preprocessing"),
    Degradation("scale", "intensity scale", "×", 1.0, (0.01, 100.0), "map", "invariant",
                "every map multiplied by the level: units differ between methods"),
    Degradation("offset", "intensity offset", "σ", 0.0, (0.1, 10.0), "map", "invariant",
                "the level × the map's std (in the mask) added to every voxel"),
    Degradation("pop_shift", "populations shifted", "maps", 0.0, (1.0, 2.0, 4.0, 8.0, 16.0), "populations", "detect",
                "each map given the population of the map the level steps before it along MD-PC1"),
    Degradation("pop_flatten", "populations flattened", "fraction", 0.0, (0.1, 0.25, 0.5, 1.0), "populations", "detect",
                "populations mixed with the uniform distribution: (1 − a)·p + a/n"),
    Degradation("mode_drop", "middle mode dropped", "fraction", 0.0, (0.25, 0.5, 0.75, 1.0), "populations", "detect",
                "the middle of the three population modes reduced by the level"),
    Degradation("missing", "motion missing", "fraction", 0.0, (0.1, 0.3, 0.6), "signal", "detect",
                "the maps of the open end of the motion (the level's fraction of the maps) removed"),
    Degradation("n_maps", "fewer maps", "maps", math.nan, (40.0, 20.0, 10.0, 5.0), "signal", "detect",
                "the Averaged GT with fewer, larger groups (each map the mean of more GT maps)"),
    Degradation("shuffle", "map order shuffled", "shuffled", 0.0, (1.0,), "signal", "invariant",
                "maps and their populations permuted together"),
)}


def masked_variance(maps, mask) -> np.ndarray:
    """(n,) variance of each map over the voxels with mask weight > 0.5 (all voxels without a mask)."""
    x = np.asarray(maps, np.float64).reshape(len(maps), -1)
    if mask is not None:
        x = x[:, np.asarray(mask).reshape(-1) > 0.5]
    return x.var(1)


def fourier_shift(maps, shift_vox) -> torch.Tensor:
    """Translate maps (..., N, N, N) by ``shift_vox`` = (x, y, z) voxels: V'(r) = V(r − s), exactly
    (phase ramp; periodic box)."""
    x = as_tensor(maps)
    n = x.shape[-1]
    f = rfftn3(x.to(torch.float64))
    k = torch.fft.fftfreq(n, dtype=torch.float64, device=x.device)
    kr = torch.fft.rfftfreq(n, dtype=torch.float64, device=x.device)
    sx, sy, sz = (float(s) for s in shift_vox)
    ph = (sz * k[:, None, None] + sy * k[None, :, None] + sx * kr[None, None, :])
    return irfftn3(f * torch.polar(torch.ones_like(ph), -2 * math.pi * ph), n).to(torch.float32)


def rotate_oversampled(maps, R, factor: int = 2, chunk: int = 16) -> torch.Tensor:
    """Rotate maps actively by R (V'(r) = V(Rᵀ r)) by trilinear interpolation on a ``factor``×
    Fourier-oversampled grid, resampled back: the interpolation's own blur is ~factor² smaller
    (tested: a rotation and its inverse lose < half of what plain trilinear loses)."""
    x = as_tensor(maps)
    n = x.shape[-1]
    out = []
    for a in range(0, len(x), chunk):
        up = fourier_resample_fast(x[a:a + chunk], factor * n)
        out.append(fourier_resample_fast(rotate_volume(up, R), n))
    return torch.cat(out)


def population_variant(name: str, level: float, p: np.ndarray, pc1: np.ndarray, pc1_range) -> np.ndarray:
    """Populations of the ``pop_*``/``mode_drop`` defects from the base populations p (maps sorted
    by pc1 ascending); normalised to sum 1."""
    p = np.asarray(p, float)
    n = len(p)
    if name == "pop_shift":
        src = np.clip(np.arange(n) - int(round(level)), 0, n - 1)
        q = p[src]
    elif name == "pop_flatten":
        q = (1 - level) * p + level / n
    elif name == "mode_drop":
        lo, hi = pc1_range
        g0 = three_gaussian_populations(pc1, lo, hi)
        g1 = three_gaussian_populations(pc1, lo, hi, modes=(1.0, 0.5 * (1 - level), 1.0))
        q = p * (g1 / g0.clip(1e-300)) * (g0.sum() / g1.sum())
    else:
        raise ValueError(f"not a population defect: {name!r}")
    return q / q.sum()


class Study:
    """The base submission and its degraded copies.

    gt_maps (n_gt, N, N, N), gt_pops, gt_pc1 (n_gt,), mask (N, N, N) or None, voxel_size Å,
    n_maps: maps of the base (Averaged GT groups), base_snr: SNR of the base's noise (0: no
    noise), seed: the rotation axis, translation direction and every replicate's noise."""

    def __init__(self, gt_maps, gt_pops, gt_pc1, mask, voxel_size: float, n_maps: int = 80,
                 base_snr: float = 2.0, seed: int = 0, pc1_range=None):
        self.gt_maps, self.gt_pops, self.gt_pc1 = gt_maps, np.asarray(gt_pops, float), np.asarray(gt_pc1, float)
        self.mask, self.voxel_size, self.n_maps, self.base_snr, self.seed = mask, voxel_size, n_maps, base_snr, seed
        self.pc1_range = pc1_range or (float(self.gt_pc1.min()), float(self.gt_pc1.max()))
        m, p, pc = averaged_gt(gt_maps, self.gt_pops, self.gt_pc1, n_maps)
        self.signal, self.pops, self.pc1 = m, p, pc
        self.signal_var = masked_variance(m, mask)
        rng = np.random.default_rng([seed, 1])
        v = rng.standard_normal(3)
        self.axis = v / np.linalg.norm(v)          # rotation axis (x, y, z)
        v = rng.standard_normal(3)
        self.direction = v / np.linalg.norm(v)     # translation direction (x, y, z)
        self._signal_cache: dict = {}

    def noise(self, replicate: int, n: int, salt: int = 0) -> np.ndarray:
        """(n, N³) standard normal noise of one replicate (the same for every defect)."""
        N = self.signal.shape[-1]
        return np.random.default_rng([self.seed, 2, replicate, salt]).standard_normal((n, N, N, N), np.float32)

    def _noisy(self, signal, var, replicate: int, snr: float | None = None):
        snr = self.base_snr if snr is None else snr
        if not snr or snr <= 0:
            return np.asarray(signal, np.float32)
        sd = np.sqrt(var / snr).astype(np.float32)[:, None, None, None]
        return (np.asarray(signal, np.float32) + sd * self.noise(replicate, len(signal))).astype(np.float32)

    def degraded_signal(self, name: str, level: float):
        """(maps, populations, pc1, signal variance) of a ``signal``-stage defect (cached: the same
        for every replicate, except the shuffle, done in :meth:`make`)."""
        key = (name, float(level))
        if key in self._signal_cache:
            return self._signal_cache[key]
        m, p, pc, var = self.signal, self.pops, self.pc1, self.signal_var
        if name == "blur":
            from helpers.kernels.fourier import apply_bfactor
            m = apply_bfactor(m, level, self.voxel_size).numpy()
        elif name == "rotation":
            m = rotate_oversampled(m, axis_angle_to_matrix(self.axis, level)).numpy()
        elif name == "translation":
            m = fourier_shift(m, self.direction * level / self.voxel_size).numpy()
        elif name == "hand":
            m = np.ascontiguousarray(m[..., ::-1]) if level else m
        elif name == "missing":
            keep = np.arange(len(m)) < len(m) - int(round(level * len(m)))  # maps sorted by pc1: open end last
            m, p, pc, var = m[keep], p[keep] / p[keep].sum(), pc[keep], var[keep]
        elif name == "n_maps":
            m, p, pc = averaged_gt(self.gt_maps, self.gt_pops, self.gt_pc1, int(level))
            var = masked_variance(m, self.mask)
        elif name != "shuffle":
            raise ValueError(f"not a signal defect: {name!r}")
        self._signal_cache[key] = (m, p, pc, var)
        return self._signal_cache[key]

    def base(self, replicate: int):
        """(maps, populations, pc1) of the undegraded base of one replicate (the last replicate's
        maps are kept: every population defect reuses them; treat them as read-only)."""
        if getattr(self, "_base", (None,))[0] != replicate:
            self._base = (replicate, self._noisy(self.signal, self.signal_var, replicate))
        return self._base[1], self.pops, self.pc1

    def make(self, name: str, level: float, replicate: int):
        """(maps, populations, pc1, extra) of one degraded set; ``extra`` holds ``kl_true`` for the
        population defects. Population defects return the base's maps array itself."""
        d = DEGRADATIONS[name]
        extra = {}
        if d.stage == "populations":
            maps, p, pc = self.base(replicate)
            q = population_variant(name, level, p, pc, self.pc1_range)
            extra["kl_true"] = kl(p, q)
            return maps, q, pc, extra
        if d.stage == "signal":
            m, p, pc, var = self.degraded_signal(name, level)
            maps = self._noisy(m, var, replicate)
            if name == "shuffle" and level:
                perm = np.random.default_rng([self.seed, 3, replicate]).permutation(len(maps))
                maps, p, pc = maps[perm], p[perm], pc[perm]
                extra["permutation"] = perm
            return maps, p, pc, extra
        maps, p, pc = self.base(replicate)
        if name == "noise":
            if not level < (self.base_snr or math.inf):
                raise ValueError(f"noise level SNR {level} is not below the base's SNR {self.base_snr}")
            # extra noise so that the total noise variance is var/level
            extra_var = self.signal_var / level - (self.signal_var / self.base_snr if self.base_snr else 0.0)
            sd = np.sqrt(extra_var).astype(np.float32)[:, None, None, None]
            maps = maps + sd * self.noise(replicate, len(maps), salt=1)
        elif name == "sharpen":
            from helpers.kernels.fourier import apply_bfactor
            maps = apply_bfactor(maps, level, self.voxel_size).numpy()
        elif name == "scale":
            maps = maps * np.float32(level)
        elif name == "offset":
            maps = maps + np.float32(level * np.sqrt(self.signal_var.mean()))
        else:
            raise ValueError(f"not a map defect: {name!r}")
        return np.asarray(maps, np.float32), p, pc, extra


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


# ---------------------------------------------------------------- verdicts from the responses

def classify(responses: pd.DataFrame, better: dict, alpha: float = verdicts.ALPHA, rtol: float = 1e-3) -> pd.DataFrame:
    """Verdict per degradation × metric of :data:`DEGRADATIONS` × ``better`` from the study's
    responses: :func:`helpers.kernels.verdicts.classify` (paired tests per level, Holm over a cell's
    levels, levels by severity)."""
    return verdicts.classify(responses, better, DEGRADATIONS, alpha=alpha, rtol=rtol)


def level_tests(responses: pd.DataFrame, better: dict, alpha: float = verdicts.ALPHA, rtol: float = 1e-3):
    """Per-level tests behind :func:`classify` (:func:`helpers.kernels.verdicts.level_tests`)."""
    return verdicts.level_tests(responses, better, DEGRADATIONS, alpha=alpha, rtol=rtol)


# ---------------------------------------------------------------- every metric of one set

BETTER = {
    "resolution_A": "low", "fsc_area": "high", "l2": "low", "corr": "high", "bioem": "low", "sw_A": "low",
    "gw_coverage_A": "low", "pw_coverage_A": "low", "pcv_gt_captured": "high", "pcv_set_in_gt": "high",
    "emd_submitted": "low", "emd_optimised": "low", "kl_submitted": "low", "kl_optimised": "low",
    "loglik_per_image": "high", "best_cc": "high",
}
FAMILY = catalogue.FAMILY  # {metric: family} (helpers.core.catalogue)
METRIC_NAMES = {
    "resolution_A": "resolution (Å)", "fsc_area": "FSC area", "l2": "L2 per voxel", "corr": "correlation",
    "bioem": "BioEM −log P", "sw_A": "sliced W (Å)", "gw_coverage_A": "GW coverage (Å)",
    "pw_coverage_A": "PW coverage (Å)", "pcv_gt_captured": "PCV: GT captured (%)",
    "pcv_set_in_gt": "PCV: set in GT (%)", "emd_submitted": "EMD submitted", "emd_optimised": "EMD optimised",
    "kl_submitted": "KL submitted", "kl_optimised": "KL optimised", "loglik_per_image": "log-likelihood / image",
    "best_cc": "best CC",
}


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
        from helpers.kernels.volume_metrics import subtract_background
        self.G_bg = (subtract_background(gt_maps, mask, torch.device("cpu")).numpy() if mask is not None
                     else gt_maps)

    def score(self, sets: dict) -> dict:
        """{label: (maps, populations)} → {label: {metric: value}} (one GT pass for the batch)."""
        from helpers.kernels import distribution as dist
        from helpers.kernels import volume_metrics as vm
        out = {lab: {} for lab in sets}
        cpu = torch.device("cpu")
        flat = {k: vm.subtract_background(m, self.mask, cpu) if self.mask is not None else m for k, (m, _) in sets.items()}
        # background off once per set (and once for the GT, in __init__): the same numbers as the
        # chapters' calls, which subtract it inside (tested against them)
        fused, failed = vm.distance_matrices_many(self.G_bg, flat, self.mask, ["l2", "corr", "bioem", "fsc", "res"],
                                                  voxel_size=self.vs, background=False)
        if failed:
            raise RuntimeError(f"degenerate degraded sets: {failed}")
        for lab, (_, q) in sets.items():
            r, o, maps = fused[lab], out[lab], flat[lab]
            l2 = dist.distance_cost(r["l2"], "l2", int(r["n_voxels"]))
            best = vm.best_match(r["fsc_curves"])
            o["resolution_A"] = float(np.median(r["res"].min(0)))
            o["fsc_area"] = float(np.median(vm.fsc_area(r["fsc_curves"][best, np.arange(len(q))])))
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
