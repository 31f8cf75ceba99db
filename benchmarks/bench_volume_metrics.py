"""Benchmark: batched GT × submission FSC + distances against a straightforward per-pair loop.

Usage: python benchmarks/bench_volume_metrics.py [--n-gt 400] [--n-sub 80] [--box 64] [--pairs 150]
       [--cuda-scale]   (on a GPU: one 80-map submission against a 224³ GT stack, maps/s)

Both paths run in the same process on the same random maps; the loop is timed on ``--pairs``
pairs and extrapolated to all pairs. Prints seconds and the speed-up ratio.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HETBOOK_QUIET", "1")
from helpers import volume_metrics as vm  # noqa: E402
from helpers.backend import device  # noqa: E402
from helpers.fourier import shell_index  # noqa: E402


def per_pair(g, s, mask, shells, n):
    """The straightforward way: FFT both maps of the pair, FSC shell by shell, then L2/corr."""
    a, b = torch.as_tensor(g * mask), torch.as_tensor(s * mask)
    A, B = torch.fft.rfftn(a), torch.fft.rfftn(b)
    fsc = []
    for i in range(1, n // 2 + 1):
        m = shells == i
        num = (A[m] * B[m].conj()).real.sum()
        fsc.append(num / torch.sqrt((A[m].abs() ** 2).sum() * (B[m].abs() ** 2).sum()))
    sel = mask > 0.5
    x, y = torch.as_tensor(g)[sel], torch.as_tensor(s)[sel]
    return torch.stack(fsc), ((x - y) ** 2).sum(), torch.corrcoef(torch.stack([x, y]))[0, 1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-gt", type=int, default=400)
    ap.add_argument("--n-sub", type=int, default=80)
    ap.add_argument("--box", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=150)
    ap.add_argument("--cuda-scale", action="store_true")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.box
    gt = rng.standard_normal((a.n_gt, n, n, n), dtype=np.float32)
    sub = rng.standard_normal((a.n_sub, n, n, n), dtype=np.float32)
    mask = np.ones((n, n, n), np.float32)
    dev = device()
    print(f"device {dev}, torch threads {torch.get_num_threads()}, GT {a.n_gt} × submission {a.n_sub}, box {n}")
    t = time.perf_counter()
    vm.distance_matrices(gt, sub, mask, metrics=["l2", "corr", "fsc", "res"], dev=dev)
    t_batch = time.perf_counter() - t
    shells = shell_index(n).numpy()
    shells = torch.as_tensor(shells)
    t = time.perf_counter()
    for k in range(a.pairs):
        per_pair(gt[k % a.n_gt], sub[k % a.n_sub], mask, shells, n)
    t_pair = (time.perf_counter() - t) / a.pairs * a.n_gt * a.n_sub
    print(f"batched: {t_batch:.2f} s for {a.n_gt * a.n_sub} pairs (FSC curves + resolution + L2 + corr)")
    print(f"per-pair loop: {t_pair:.1f} s (extrapolated from {a.pairs} pairs)")
    print(f"speed-up: {t_pair / t_batch:.0f}x")
    if a.cuda_scale and dev.type == "cuda":
        n = 224
        g = np.lib.format.open_memmap("/tmp/gt224.npy", mode="w+", dtype=np.float32, shape=(400, n, n, n))
        g[:] = rng.standard_normal((400, n, n, n), dtype=np.float32)
        s = rng.standard_normal((80, n, n, n), dtype=np.float32)
        torch.cuda.synchronize()
        t = time.perf_counter()
        vm.distance_matrices(g, s, np.ones((n, n, n), np.float32), metrics=["l2", "corr", "fsc", "res"], dev=dev)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        print(f"CUDA, 224³: 80 submitted maps vs 400 GT maps in {dt:.1f} s = {400 / dt:.1f} GT maps/s")


if __name__ == "__main__":
    main()
