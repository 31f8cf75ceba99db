"""Benchmark: batched pose search (images × maps × poses per second) against a naive loop.

Usage: python benchmarks/bench_image_search.py [--images 100] [--maps 4] [--box 24] [--dirs 100] [--inplane 12]

The naive loop projects one template at a time, applies the image's CTF and cross-correlates
by one inverse FFT per (image, map, rotation) — all shifts at once, as a careful person would
without batching; it is timed on a subset and extrapolated. Same inputs, same process.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HETBOOK_QUIET", "1")
from helpers import image_metrics as im  # noqa: E402
from helpers import projection as P  # noqa: E402
from helpers.backend import device  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--maps", type=int, default=4)
    ap.add_argument("--box", type=int, default=24)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--inplane", type=int, default=12)
    ap.add_argument("--naive", type=int, default=300, help="(image, map, rotation) triples timed in the loop")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    n = a.box
    maps = rng.standard_normal((a.maps, n, n, n)).astype(np.float32)
    imgs = rng.standard_normal((a.images, n, n)).astype(np.float32)
    cp = dict(defocus_u=rng.uniform(1e4, 2e4, a.images), defocus_v=rng.uniform(1e4, 2e4, a.images),
              defocus_angle=rng.uniform(0, 180, a.images))
    dev = device()
    # the grid search alone (integer shifts, no refinement), as the naive loop does it
    s = im.ImageSearch(imgs, 4.0, cp, n_directions=a.dirs, n_inplane=a.inplane, max_shift=1, shift_step=1.0,
                       refine_levels=0, dev=dev)
    t = time.perf_counter()
    s.search(maps)
    t_batch = time.perf_counter() - t
    total = a.images * a.maps * s.n_poses
    proj = P.FourierSliceProjector(maps)
    ctfs = P.ctf(n, 4.0, cp["defocus_u"], cp["defocus_v"], cp["defocus_angle"])
    Y = P.image_rfft(torch.as_tensor(imgs, dtype=torch.float64))
    t = time.perf_counter()
    for k in range(a.naive):
        i, m, r = k % a.images, k % a.maps, k % len(s.R)
        T = proj.project_ft(s.R[r:r + 1], [m])[0, 0].to(torch.complex128) * ctfs[i]
        cc = torch.fft.irfft2(Y[i] * T.conj(), s=(n, n))
        cc[:2, :2].max(), (T.abs() ** 2).sum()
    per = (time.perf_counter() - t) / a.naive
    t_naive = per * a.images * a.maps * len(s.R)
    print(f"device {dev}: {a.images} images × {a.maps} maps × {s.n_poses} poses ({len(s.R)} rotations × {len(s.shifts)} shifts), box {n}")
    print(f"batched: {t_batch:.2f} s = {total / t_batch:.3g} image-map-poses/s")
    print(f"naive loop: {t_naive:.1f} s (extrapolated) = {total / t_naive:.3g} image-map-poses/s")
    print(f"speed-up: {t_naive / t_batch:.0f}x")
    # the book's default: half-pixel shifts and two levels of adaptive refinement of the pose integral
    d = im.ImageSearch(imgs, 4.0, cp, n_directions=a.dirs, n_inplane=a.inplane, max_shift=1, dev=dev)
    t = time.perf_counter()
    d.search(maps)
    t_def = time.perf_counter() - t
    print(f"default search (shift step 0.5 px, {d.refine_levels} refinement levels): {t_def:.2f} s, "
          f"{d.n_evaluated} poses evaluated per image and map = {a.images * a.maps * d.n_evaluated / t_def:.3g} /s")


if __name__ == "__main__":
    main()
