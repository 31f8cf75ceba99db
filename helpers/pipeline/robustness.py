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

Every metric of one set (:class:`helpers.pipeline.robustness_scores.Scorer`, the image
scores) is in :mod:`helpers.pipeline.robustness_scores`; the metrics' labels and directions in
:data:`helpers.core.catalogue.METRICS`.

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

from helpers.core.catalogue import METRICS, directions
from helpers.kernels import verdicts
from helpers.kernels.distribution import kl
from helpers.kernels.fourier import as_tensor, fourier_resample_fast, irfftn3, rfftn3
from helpers.kernels.geometry import axis_angle_to_matrix, rotate_volume
from helpers.datagen.ensemble import three_gaussian_populations
from helpers.datagen.mocks import averaged_gt


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


# ---------------------------------------------------------------- verdicts from the responses

# the metrics the study scores: those of a set of maps and populations (chapter 9's per-particle
# AU-FSC needs a method's per-particle output, which a damaged set does not have)
STUDY_METRICS = [k for k, m in METRICS.items() if m.family != "per-particle"]


def classify(responses: pd.DataFrame, better: dict | None = None, alpha: float = verdicts.ALPHA,
             rtol: float = 1e-3) -> pd.DataFrame:
    """Verdict per degradation × metric of :data:`DEGRADATIONS` × ``better`` ({metric: "low" |
    "high"}; default: :data:`STUDY_METRICS`, in the catalogue's order) from
    the study's responses: :func:`helpers.kernels.verdicts.classify` (paired tests per level, Holm
    over a cell's levels, levels by severity)."""
    return verdicts.classify(responses, directions(STUDY_METRICS) if better is None else better, DEGRADATIONS,
                             alpha=alpha, rtol=rtol)


def level_tests(responses: pd.DataFrame, better: dict | None = None, alpha: float = verdicts.ALPHA,
                rtol: float = 1e-3):
    """Per-level tests behind :func:`classify` (:func:`helpers.kernels.verdicts.level_tests`)."""
    return verdicts.level_tests(responses, directions(STUDY_METRICS) if better is None else better, DEGRADATIONS,
                                alpha=alpha, rtol=rtol)
