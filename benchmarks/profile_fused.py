"""Where the time of chapter 3's single GT pass goes, stage by stage (one chunk at a time, the
device synchronised after each stage): reading a GT chunk into the host buffer, the copy to the
device, the masked statistics (median z-score included), the l2/corr/BioEM products, the
spectra, the FSC products. Run it after ``bench_scale.py --keep`` (same ``--dir``) or on its own.

Usage: python benchmarks/profile_fused.py [--n-gt 256] [--box 128] [--n-sub 4] [--maps 80] [--chunk 32]
"""
import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HETBOOK_QUIET", "1")
from bench_scale import make_data, size_args  # noqa: E402
from helpers.kernels import fsc, volume_input, volume_metrics as vm  # noqa: E402
from helpers.core.backend import device  # noqa: E402
from helpers.kernels.fourier import as_tensor  # noqa: E402
from helpers.kernels.fsc import ShellLayout  # noqa: E402
from helpers.kernels.volume_input import subtract_background  # noqa: E402


def main():
    ap = size_args(argparse.ArgumentParser(), n_gt=256, box=128, directory="/tmp/hetbook-profile")
    ap.add_argument("--chunk", type=int, default=32)
    a = ap.parse_args()
    gt, subs, mask = make_data(Path(a.dir), a.n_gt, a.box, a.n_sub, a.maps)
    dev = device()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    n = a.box
    sel = torch.nonzero(as_tensor(mask, dev).flatten() > 0.5).flatten()  # as _one_gt_pass: index lists, made once
    weight = as_tensor(mask, dev).clamp(0, 1)
    solvent = volume_input.solvent_index(weight, dev)
    layout = ShellLayout.make(n, dev)
    S = torch.cat([as_tensor(s, dev) for s in subs.values()])
    sub_st = vm._stats(S, sel, "median_zscore", "numpy", dev, torch.float64)
    fs, ps = fsc._spectra(subtract_background(S, weight, dev, solvent) * weight, None, layout, dev)
    N = sel.numel()
    buf = torch.empty((a.chunk, n, n, n), dtype=torch.float32, pin_memory=dev.type == "cuda")
    times = defaultdict(float)
    for rep in range(2):  # the first pass warms up (kernels, FFT plans); the second is timed
        times.clear()
        for s0 in range(0, a.n_gt, a.chunk):
            k = min(a.n_gt, s0 + a.chunk) - s0
            t = time.perf_counter()
            np.copyto(buf[:k].numpy(), np.asarray(gt[s0:s0 + k]))
            times["read into host buffer"] += time.perf_counter() - t
            t = time.perf_counter()
            x = buf[:k].to(dev, non_blocking=True)
            sync()
            times["copy to device"] += time.perf_counter() - t
            t = time.perf_counter()
            volume_input._check_finite(x, "GT", s0)
            sync()
            times["finite check"] += time.perf_counter() - t
            t = time.perf_counter()
            g = vm._stats(x, sel, "median_zscore", "numpy", dev, torch.float64)
            sync()
            times["masked statistics (median z-score)"] += time.perf_counter() - t
            t = time.perf_counter()
            vm._stat_scores(g, sub_st, N, {"l2", "corr", "bioem"})
            times["l2/corr/BioEM products (+ to host)"] += time.perf_counter() - t
            t = time.perf_counter()
            fg, pg = fsc._spectra(subtract_background(x, weight, dev, solvent) * weight, None, layout, dev)
            sync()
            times["background, FFT, shell sort"] += time.perf_counter() - t
            t = time.perf_counter()
            fsc._fsc_block(fg, pg, fs, ps, layout)
            times["FSC products (+ to host)"] += time.perf_counter() - t
    tot = sum(times.values())
    print(f"device {dev}; GT {a.n_gt} × {n}³ in chunks of {a.chunk}; {S.shape[0]} submitted maps; "
          f"{N} masked voxels")
    for k, v in times.items():
        print(f"  {k:40s} {v:7.2f} s  {1000 * v / a.n_gt:7.2f} ms/map  {100 * v / tot:5.1f} %")
    print(f"  {'total':40s} {tot:7.2f} s  {1000 * tot / a.n_gt:7.2f} ms/map")


if __name__ == "__main__":
    main()
