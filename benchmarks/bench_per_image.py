"""Benchmark: per-image FSC of many particles (chapter 9) against the straightforward loop.

Usage: python benchmarks/bench_per_image.py [--n 1000] [--box 64] [--n-gt 50] [--n-series 40] [--batch 64]

Two cases, each timed in this process on the same maps after a warm-up run:

1. **one map per particle** (a decoder evaluated at each particle's latent): ``n`` maps of
   ``box``³ read from a memory-mapped file, each against its GT map. Baseline — what a competent
   user writes: the GT maps transformed once and kept, then per particle one ``rfftn`` of its map
   and the three per-shell sums (Re A B*, |A|², |B|²) by ``torch.bincount`` over a precomputed shell
   index, in float32 like hetbook. hetbook: :func:`helpers.kernels.per_image.per_image_fsc`,
   particles streamed ``batch`` at a time.
2. **a volume series with per-particle labels** (``n-series`` maps): the baseline loop as above
   with both maps' transforms cached; hetbook scores each distinct (map, GT) pair once.

Prints seconds, particles per second and the ratio baseline / hetbook, and the largest
difference between the two results' curves.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HETBOOK_QUIET", "1")
from helpers.kernels import per_image as pi  # noqa: E402
from helpers.kernels.fourier import rfft_weights, shell_index  # noqa: E402


def smooth_maps(k, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(k, n, n, n, generator=g)
    f = torch.fft.rfftn(x, dim=(1, 2, 3))
    r2 = sum(t ** 2 for t in torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), torch.fft.rfftfreq(n), indexing="ij"))
    return torch.fft.irfftn(f * torch.exp(-r2 * 30), s=(n, n, n), dim=(1, 2, 3)).numpy()


class Loop:
    """The straightforward per-particle FSC: shells 1..n//2 by round(|k|), half-spectrum weights."""

    def __init__(self, n):
        s = shell_index(n).flatten()
        w = rfft_weights(n).expand(n, n, -1).flatten()
        keep = (s >= 1) & (s <= n // 2)
        self.s, self.w, self.n = s[keep], w[keep].float(), n
        self.keep = keep

    def spectrum(self, vol):
        return torch.fft.rfftn(torch.as_tensor(np.asarray(vol)), dim=(0, 1, 2)).flatten()[self.keep]

    def fsc(self, a, b):
        m = self.n // 2 + 1
        num = torch.bincount(self.s, self.w * (a * b.conj()).real, m)[1:]
        pa = torch.bincount(self.s, self.w * a.abs() ** 2, m)[1:]
        pb = torch.bincount(self.s, self.w * b.abs() ** 2, m)[1:]
        return (num / torch.sqrt(pa * pb)).double().numpy()


def timed(f, *a, **k):
    f(*a, **k)  # warm-up
    t = time.perf_counter()
    out = f(*a, **k)
    return out, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--n-gt", type=int, default=50)
    ap.add_argument("--n-series", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    n, N = a.n, a.box
    rng = np.random.default_rng(0)
    gt = smooth_maps(a.n_gt, N, 0)
    g = rng.integers(0, a.n_gt, n)
    with tempfile.TemporaryDirectory() as tmp:
        maps = np.lib.format.open_memmap(os.path.join(tmp, "maps.npy"), mode="w+", dtype=np.float32, shape=(n, N, N, N))
        for i in range(0, n, 100):
            maps[i:i + 100] = gt[g[i:i + 100]] + 0.3 * smooth_maps(min(100, n - i), N, i + 1)
        maps.flush()
        loop = Loop(N)

        def baseline_per_particle():
            G = {int(j): loop.spectrum(gt[j]) for j in np.unique(g)}     # each GT map once
            return np.stack([loop.fsc(loop.spectrum(maps[i]), G[int(g[i])]) for i in range(n)])

        ref, t_loop = timed(baseline_per_particle)
        got, t_het = timed(pi.per_image_fsc, maps, gt, g, batch=a.batch, desc="bench")
        print(f"one map per particle: {n} particles at {N}^3: loop {t_loop:.2f} s ({n / t_loop:.0f}/s), "
              f"hetbook {t_het:.2f} s ({n / t_het:.0f}/s): ratio {t_loop / t_het:.2f}; "
              f"max |difference| {np.abs(ref - got).max():.1e}")

        series = smooth_maps(a.n_series, N, 7)
        lab = rng.integers(0, a.n_series, n)

        def baseline_series():
            G = {int(j): loop.spectrum(gt[j]) for j in np.unique(g)}
            S = {int(j): loop.spectrum(series[j]) for j in np.unique(lab)}   # each series map once
            return np.stack([loop.fsc(S[int(lab[i])], G[int(g[i])]) for i in range(n)])

        ref, t_loop = timed(baseline_series)
        got, t_het = timed(pi.per_image_fsc, series, gt, g, map_index=lab, batch=a.batch)
        print(f"volume series of {a.n_series} maps: {n} particles: loop {t_loop:.2f} s, hetbook {t_het:.2f} s: "
              f"ratio {t_loop / t_het:.2f}; max |difference| {np.abs(ref - got).max():.1e}")


if __name__ == "__main__":
    main()
