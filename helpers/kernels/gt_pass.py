"""Many submissions scored in one pass over the GT: :func:`distance_matrices_many`.

gt_maps (n_gt, N, N, N) (a memory map is read chunk by chunk, once), subs {label: (n_l, N, N, N)}
on the GT grid, mask (N, N, N) real-space weights or None, ``voxel_size`` Å/voxel. The results
are those of :func:`helpers.kernels.volume_metrics.distance_matrices` in its default mode for
l2, corr, bioem, fsc and res: (n_gt, n_l) float64 matrices per submission, FSC curves
(n_gt, n_l, N//2) float32. Each GT chunk's masked statistics and shell-sorted spectrum are
scored against the stacked statistics and spectra of all submissions, one matrix product per
metric; the next chunk is read while this one is scored.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from helpers.core.backend import available_bytes, device, progress, sub_step
from helpers.kernels.fourier import as_tensor
from helpers.kernels.fsc import ShellLayout, _fsc_block, _spectra, fsc_distance, resolution
from helpers.kernels.gt_cache import gt_step
from helpers.kernels.volume_input import (DegenerateMapError, _check_finite, _check_nonconstant, solvent_index,
                                          subtract_background)
from helpers.kernels.volume_metrics import METRICS, _stat_scores, _stats

STAT_METRICS = {"l2", "corr", "bioem"}  # scored from the masked voxels' statistics
SPECTRUM_METRICS = {"fsc", "res"}       # scored from the FSC curves


def distance_matrices_many(gt_maps, subs: dict, mask=None, metrics=METRICS, voxel_size: float = 1.0,
                           fsc_cutoff_A: float | None = None, normalise: str | None = "median_zscore",
                           dev=None, gt_chunk: int | None = None, background: bool = True,
                           gt_label: str = "GT", sub_chunk: int | None = None,
                           sub_memory: int | None = None) -> tuple[dict, dict]:
    """:func:`distance_matrices` for many submissions in **one pass over the GT**.

    subs {label: (n_l, N, N, N) maps on the GT grid; memory maps are read ``sub_chunk`` maps at a
    time}. Each GT chunk is read once and scored against every submission for every metric (l2,
    corr, bioem, fsc, res; default mode): its masked statistics and its shell-sorted spectrum
    come from the same chunk in memory, and the submissions' statistics and spectra (computed
    and checked once, per submission) are stacked so each metric is one matrix product per
    chunk. A challenge-scale GT stored as a memory map is read once for all submissions instead
    of twice per submission. ``sw`` (and ``mode="reference"``) are not fused: use
    :func:`distance_matrices`.

    Memory: the submissions' statistics (float64, masked voxels) and spectra (float32, ~N³) —
    :func:`submission_bytes` per submitted map, ~80 MB at 224³ — plus two GT chunks of ≤ ~1 GiB
    of work each; the submitted maps are transformed ``sub_chunk`` at a time (default: ~0.5 GiB
    of temporaries). When all submissions' statistics exceed ``sub_memory`` bytes (default: 40 %
    of the free memory of ``dev``; chapter 3's ``memory_gib``), they are scored in groups that
    fit, one GT pass per group (a submission is never split), and a line says so.

    Returns (results {label: dict as distance_matrices returns}, failures {label:
    DegenerateMapError}): a degenerate submission is reported, the others are scored.
    A degenerate or non-finite *GT* map raises.
    """
    dev = dev or device()
    n = gt_maps.shape[-1]
    n_sel = n ** 3 if mask is None else int((as_tensor(mask, torch.device("cpu")).flatten() > 0.5).sum())
    per_map = submission_bytes(n, n_sel, metrics)
    budget = sub_memory if sub_memory is not None else int(0.4 * available_bytes(dev))
    groups, cur, used = [], {}, 0
    for lab, maps in subs.items():
        need = per_map * maps.shape[0]
        if cur and used + need > budget:
            groups.append(cur)
            cur, used = {}, 0
        cur[lab], used = maps, used + need
    groups.append(cur)
    if len(groups) > 1:
        print(f"{len(subs)} submissions in {len(groups)} passes over the GT: their statistics take "
              f"{per_map * sum(m.shape[0] for m in subs.values()) / 2 ** 30:.1f} GiB, "
              f"{budget / 2 ** 30:.1f} GiB allowed (sub_memory)")
    results, failures = {}, {}
    for group in groups:
        r, f = _one_gt_pass(gt_maps, group, mask, metrics, voxel_size, fsc_cutoff_A, normalise, dev,
                            gt_chunk, background, gt_label, sub_chunk)
        results.update(r)
        failures.update(f)
    return results, failures


def submission_bytes(n: int, n_masked: int, metrics=METRICS) -> int:
    """Bytes :func:`distance_matrices_many` holds per submitted map of box ``n``: its centred
    masked voxels (float64) for l2/corr/bioem, its shell-sorted spectrum (float32, (Re, Im) of
    the half-spectrum voxels in shells 1..n//2, ~0.52·n³/2 of them) and shell powers for the FSC."""
    want = set(metrics)
    k = int(math.pi / 6 * (n + 1) ** 3 / 2)  # ≈ half-spectrum voxels in shells 1..n//2 (radius n/2 + ½)
    return (n_masked * 8 if want & {"l2", "corr", "bioem"} else 0) + \
        ((2 * k * 4 + (n // 2) * 8) if want & {"fsc", "res"} else 0)


def _one_gt_pass(gt_maps, subs: dict, mask, metrics, voxel_size, fsc_cutoff_A, normalise, dev,
                 gt_chunk, background, gt_label, sub_chunk) -> tuple[dict, dict]:
    """The single GT pass of :func:`distance_matrices_many` for one group of submissions."""
    n, n_gt = gt_maps.shape[-1], gt_maps.shape[0]
    p = _Pass.make(n, mask, metrics, normalise, background, dev)
    rows, failures = _submission_rows(subs, n)
    block = _submission_block(p, subs, rows, failures, sub_chunk)
    if not block.labels:
        return {}, failures
    n_cols = int(sum(block.sizes))
    mats = {m: np.empty((n_gt, n_cols)) for m in p.want & STAT_METRICS} if p.want_stats else {}
    curves = np.empty((n_gt, n_cols, n // 2), dtype=np.float32) if p.want_spec else None
    # bytes per GT map in a chunk: its copies (float32 map, float64 masked statistics, spectrum)
    # and its row of every FSC numerator/denominator (float64, all submitted maps × shells)
    per_map = n ** 3 * 4 * 6 + p.sel.numel() * 8 * 2 + n_cols * (n // 2) * 8 * 3
    # at most ~1 GiB of GT work per chunk (two chunks are in flight: one scored, one being read):
    # bigger chunks gain nothing once the matrix products are this large, and the peak memory
    # stays bounded by the submissions' statistics plus two chunks
    step = gt_chunk or gt_step(per_map, dev)
    for a, b, x in _gt_chunks(gt_maps, step, dev):
        _score_chunk(p, x, a, b, block, gt_label, mats, curves)
    return _results(p, block, mats, curves, voxel_size, fsc_cutoff_A), failures


@dataclass
class _Pass:
    """What one fused GT pass shares: the mask's voxel selections, the shell layout, the options."""
    n: int
    want: set
    sel: torch.Tensor             # flat indices of the voxels with mask weight > 0.5 (all without a mask)
    weight: torch.Tensor | None   # the mask's weights clipped to [0, 1]
    solvent: torch.Tensor | None  # solvent_index(weight) when the background is subtracted
    use_bg: bool
    layout: ShellLayout
    normalise: str | None
    dev: torch.device
    dtype: torch.dtype = torch.float64

    @classmethod
    def make(cls, n: int, mask, metrics, normalise, background: bool, dev) -> "_Pass":
        unknown = set(metrics) - STAT_METRICS - SPECTRUM_METRICS
        if unknown:
            raise ValueError(f"distance_matrices_many: {sorted(unknown)} are not fused; use distance_matrices")
        # the mask's selections as index lists, made once: a boolean selection recounts its mask on
        # every chunk (at 224³ on 2 CPU cores, 3 maps: 77 ms by a boolean mask, 44 ms by an index list)
        if mask is None:
            sel = torch.arange(n ** 3, device=dev)
            weight = None
        else:
            sel = torch.nonzero(as_tensor(mask, dev).flatten() > 0.5).flatten()
            weight = as_tensor(mask, dev).clamp(0, 1)
        use_bg = background and mask is not None
        solvent = solvent_index(weight, dev) if use_bg else None
        return cls(n, set(metrics), sel, weight, solvent, use_bg, ShellLayout.make(n, dev), normalise, dev)

    @property
    def want_stats(self) -> bool:
        return bool(self.want & STAT_METRICS)

    @property
    def want_spec(self) -> bool:
        return bool(self.want & SPECTRUM_METRICS)

    def stats(self, x, label, first: int) -> tuple:
        """:func:`_stats` of a chunk over the selected voxels (median z-scored by default)."""
        return _stats(x, self.sel, self.normalise, "numpy", self.dev, self.dtype, label, first)

    def spectra(self, x, label, first: int) -> tuple:
        """Shell-sorted spectra and shell powers of a chunk (background subtracted, masked),
        checked non-constant."""
        if self.weight is not None:
            x = (subtract_background(x, self.weight, self.dev, self.solvent) if self.use_bg else x) * self.weight
        f, pw = _spectra(x, None, self.layout, self.dev)
        _check_nonconstant(pw.sum(1), label, first)
        return f, pw


@dataclass
class _Subs:
    """The scored submissions' rows, stacked: statistics (centred masked voxels (n, V) float64, μ
    (n,), V (n,)) and spectra ((n, 2K) float32, shell powers (n, N//2) float64), None when not asked."""
    labels: list
    sizes: list
    stats: tuple | None
    spec: tuple | None


def _submission_rows(subs: dict, n: int) -> tuple[dict, dict]:
    """({label: number of maps} of the submissions on the GT's box n, {label: error} of the others)."""
    failures, rows = {}, {}
    for lab, maps in subs.items():
        if maps.shape[-1] != n:
            failures[lab] = DegenerateMapError(lab, f"box {maps.shape[-1]} differs from the GT's {n}.",
                                               "Preprocess the submission onto the GT grid first.")
        else:
            rows[lab] = maps.shape[0]
    return rows, failures


def _submission_block(p: _Pass, subs: dict, rows: dict, failures: dict, sub_chunk) -> _Subs:
    """The submissions' statistics and spectra, computed and checked once, written straight into
    one preallocated array each (no per-submission parts concatenated afterwards: that held both,
    ~2× their size), ``sub_chunk`` maps at a time (the FFT's temporaries stay ~0.5 GiB whatever
    the submission's size). A degenerate submission goes to ``failures`` and its rows are dropped."""
    total = sum(rows.values())
    stats = spec = None
    if p.want_stats:
        stats = (torch.empty((total, p.sel.numel()), dtype=p.dtype, device=p.dev),
                 torch.empty(total, dtype=p.dtype, device=p.dev), torch.empty(total, dtype=p.dtype, device=p.dev))
    if p.want_spec:
        spec = (torch.empty((total, 2 * p.layout.order.numel()), dtype=torch.float32, device=p.dev),
                torch.empty((total, p.n // 2), dtype=torch.float64, device=p.dev))
    step = sub_chunk or sub_step(p.n)
    labels, sizes, r0, keep = [], [], 0, []
    for lab, k in rows.items():
        try:
            _fill_submission(p, subs[lab], lab, r0, step, stats, spec)
        except DegenerateMapError as e:
            failures[lab] = e
        else:
            labels.append(lab)
            sizes.append(k)
            keep.append(torch.arange(r0, r0 + k))
        r0 += k
    if labels and len(labels) < len(rows):  # drop a failed submission's rows (a copy, only then)
        idx = torch.cat(keep).to(p.dev)
        stats = None if stats is None else tuple(t[idx] for t in stats)
        spec = None if spec is None else tuple(t[idx] for t in spec)
    return _Subs(labels, sizes, stats, spec)


def _fill_submission(p: _Pass, maps, label, r0: int, step: int, stats, spec) -> None:
    """One submission's statistics and spectra into rows r0… of ``stats`` / ``spec``, ``step`` maps
    at a time; raises :class:`DegenerateMapError` for a non-finite or constant map."""
    k = maps.shape[0]
    for c0 in range(0, k, step):
        c1 = min(k, c0 + step)
        x = as_tensor(maps[c0:c1], p.dev)
        if stats is not None:
            v, mu, V = p.stats(x, label, c0)
            stats[0][r0 + c0:r0 + c1], stats[1][r0 + c0:r0 + c1], stats[2][r0 + c0:r0 + c1] = v, mu, V
            del v
        if spec is not None:
            if stats is None:
                _check_finite(x, label, c0)
            f, pw = p.spectra(x, label, c0)
            spec[0][r0 + c0:r0 + c1], spec[1][r0 + c0:r0 + c1] = f, pw
            del f


def _gt_chunks(gt_maps, step: int, dev):
    """Yield (a, b, x): GT rows a:b on ``dev``, each read once. Two reusable host buffers (pinned
    for a GPU: an asynchronous copy, and no page-locking of fresh memory per chunk): the GT rows
    are copied from the file (or page cache) straight into the buffer the device reads, and the
    next chunk is read while the caller scores this one."""
    n_gt, n = gt_maps.shape[0], gt_maps.shape[-1]
    starts = list(range(0, n_gt, step))
    bufs = [torch.empty((min(step, n_gt), n, n, n), dtype=torch.float32,
                        pin_memory=dev.type == "cuda") for _ in range(min(2, len(starts)))]

    def load(i, a):  # the only read of these GT maps
        k = min(n_gt, a + step) - a
        buf = bufs[i % len(bufs)][:k]
        np.copyto(buf.numpy(), np.asarray(gt_maps[a:a + k]), casting="same_kind")
        return buf

    pool = ThreadPoolExecutor(1)
    nxt = pool.submit(load, 0, starts[0])
    for i, a in enumerate(progress(starts, desc="GT chunks (all submissions, all metrics)")):
        host = nxt.result()
        if i + 1 < len(starts):  # into the other buffer: the previous chunk is finished with it (below)
            nxt = pool.submit(load, i + 1, starts[i + 1])
        yield a, min(n_gt, a + step), host.to(dev, non_blocking=True)
        if dev.type == "cuda":  # this chunk's buffer is reused two chunks later: its copy must be done
            torch.cuda.current_stream(dev).synchronize()
        del host
    pool.shutdown()


def _score_chunk(p: _Pass, x, a: int, b: int, block: _Subs, gt_label, mats: dict, curves) -> None:
    """GT rows a:b (``x`` on the device) against every submitted map: their rows of ``mats``
    (l2 / corr / bioem) and of ``curves`` (FSC), written in place."""
    if not p.want_stats:  # (_stats checks it otherwise: one check per chunk)
        _check_finite(x, gt_label, a)
    if p.want_stats:
        gst = p.stats(x, gt_label, a)
        for m, v in _stat_scores(gst, block.stats, p.sel.numel(), p.want).items():
            mats[m][a:b] = v
    if p.want_spec:
        fg, pg = p.spectra(x, gt_label, a)
        fs, ps = block.spec
        curves[a:b] = _fsc_block(fg, pg, fs, ps, p.layout)


def _results(p: _Pass, block: _Subs, mats: dict, curves, voxel_size, fsc_cutoff_A) -> dict:
    """{label: dict as distance_matrices returns}: each submission's columns of the matrices."""
    cols = np.cumsum([0] + block.sizes)
    results = {}
    for i, lab in enumerate(block.labels):
        c0, c1 = cols[i], cols[i + 1]
        r = results[lab] = {}
        if p.want_stats:
            r["n_voxels"] = p.sel.numel()
            for m, M in mats.items():
                r[m] = M[:, c0:c1]
        if p.want_spec:
            r["fsc_curves"] = curves[:, c0:c1]
            if "fsc" in p.want:
                r["fsc"] = fsc_distance(r["fsc_curves"], p.n, voxel_size, fsc_cutoff_A)
            if "res" in p.want:
                r["res"] = resolution(r["fsc_curves"], voxel_size, 0.5, "interpolated")
    return results
