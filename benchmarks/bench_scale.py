"""Challenge-scale benchmark of the chapters' GT work — chapter 3's volume metrics (one pass over a
memory-mapped GT for all
submissions (``gt_pass.distance_matrices_many``) against one call per submission
(``vm.distance_matrices``, which streams the GT twice per submission when it does not fit in
memory)) and chapter 4's streamed downsampling + PCA — with the time to read the GT once as the
I/O floor. Chapters 5–7 read only chapter 3's matrices (and chapter 6 a few hundred GT maps).

Usage: python benchmarks/bench_scale.py [--n-gt 800] [--box 96] [--n-sub 4] [--maps 80]
                                        [--dir /tmp/hetbook-scale] [--keep]
The challenge itself is ``--n-gt 3861 --box 224`` (174 GB: needs that much disk).

Synthetic data, written once under ``--dir`` (reused when present with the same shape):
``gt.npy`` (n_gt, box³) float32, memory-mapped, smooth random maps along a 1-D path (maps
k and k+1 similar, like a motion) so the metrics have structure; ``sub_i.npy`` (maps, box³),
each a noisy subsample of the path, memory-mapped too (as the chapters read preprocessed
sets). Prints, per path: wall time, time to read the GT once, their ratio, and the peak
*anonymous* resident memory (``RssAnon``: the process's own memory, not the page cache of the
mapped files), sampled every 50 ms.
"""
import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("HETBOOK_QUIET", "1")
from helpers.kernels import gt_pass, volume_metrics as vm  # noqa: E402
from helpers.core.backend import device  # noqa: E402
from helpers.kernels.fourier import lowpass  # noqa: E402


def rss_anon() -> int:
    """Resident anonymous memory of this process, bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class PeakAnon:
    """Peak of ``measure()`` (bytes; this process's RssAnon by default), sampled every 50 ms
    while the ``with`` block runs."""

    def __init__(self, measure=rss_anon):
        self.measure = measure

    def __enter__(self):
        self.peak, self.stop = self.measure(), False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()
        return self

    def _run(self):
        while not self.stop:
            self.peak = max(self.peak, self.measure())
            time.sleep(0.05)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()


def make_data(d: Path, n_gt: int, box: int, n_sub: int, n_maps: int, seed: int = 0):
    d.mkdir(parents=True, exist_ok=True)
    gt_path = d / "gt.npy"
    if gt_path.exists() and np.load(gt_path, mmap_mode="r").shape == (n_gt, box, box, box):
        gt = np.load(gt_path, mmap_mode="r")
    else:
        rng = np.random.default_rng(seed)
        base = lowpass(rng.standard_normal((2, box, box, box)), 6.0, 1.0).numpy()
        c = np.arange(box) - box // 2
        r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
        env = np.clip((0.38 * box - r) / 3, 0, 1).astype(np.float32)
        gt = np.lib.format.open_memmap(gt_path, mode="w+", dtype=np.float32, shape=(n_gt, box, box, box))
        for a in range(0, n_gt, 32):  # a path from base[0] to base[1], written in chunks
            t = np.linspace(0, 1, n_gt)[a:a + 32, None, None, None]
            gt[a:a + 32] = ((1 - t) * base[0] + t * base[1]) * env
        gt.flush()
    subs = {}
    for i in range(n_sub):
        p = d / f"sub_{i}.npy"
        if not (p.exists() and np.load(p, mmap_mode="r").shape == (n_maps, box, box, box)):
            rng = np.random.default_rng(seed + 1 + i)
            pick = np.sort(rng.choice(n_gt, n_maps, replace=False))
            s = np.lib.format.open_memmap(p, mode="w+", dtype=np.float32, shape=(n_maps, box, box, box))
            for a in range(0, n_maps, 8):  # a few maps at a time (a 224³ submission is 3.6 GB)
                k = len(pick[a:a + 8])
                s[a:a + k] = np.asarray(gt[pick[a:a + 8]]) + (0.2 + 0.2 * i) * rng.standard_normal(
                    (k, box, box, box), dtype=np.float32)
            s.flush()
            del s
        # memory-mapped, as the chapters read preprocessed submissions (MapSet.load(mmap=True))
        subs[f"sub_{i}"] = np.load(p, mmap_mode="r")
    mask = np.clip((0.4 * box - np.sqrt(sum(np.meshgrid(*[np.arange(box) - box // 2] * 3, indexing="ij")[k] ** 2
                                             for k in range(3)))) / 3, 0, 1).astype(np.float32)
    return np.load(gt_path, mmap_mode="r"), subs, mask


def read_once(gt, step: int = 32) -> float:
    t = time.perf_counter()
    tot = 0.0
    for a in range(0, gt.shape[0], step):
        tot += float(np.asarray(gt[a:a + step]).sum(dtype=np.float64))
    return time.perf_counter() - t


def stream_once(gt, dev, step: int = 32) -> float:
    """The GPU floor: the GT copied once into a pinned host buffer and on to the device, chunk by
    chunk (what any GPU code must do at least); 0 on a CPU."""
    import torch

    if dev.type != "cuda":
        return 0.0
    buf = torch.empty((step, *gt.shape[1:]), dtype=torch.float32, pin_memory=True)
    t = time.perf_counter()
    for a in range(0, gt.shape[0], step):
        k = min(gt.shape[0], a + step) - a
        np.copyto(buf[:k].numpy(), np.asarray(gt[a:a + k]))
        buf[:k].to(dev, non_blocking=True)
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t


def size_args(ap, n_gt: int = 800, box: int = 96, directory: str = "/tmp/hetbook-scale"):
    """The synthetic data set's size options, shared by the scale benchmarks."""
    ap.add_argument("--n-gt", type=int, default=n_gt)
    ap.add_argument("--box", type=int, default=box)
    ap.add_argument("--n-sub", type=int, default=4)
    ap.add_argument("--maps", type=int, default=80)
    ap.add_argument("--dir", default=directory)
    return ap


def main():
    ap = size_args(argparse.ArgumentParser())
    ap.add_argument("--keep", action="store_true", help="keep the synthetic data for the next run")
    ap.add_argument("--fused-only", action="store_true", help="skip the one-call-per-submission baseline")
    ap.add_argument("--no-subspace", action="store_true", help="skip chapter 4's GT work")
    ap.add_argument("--gt-chunk", type=int, default=None, help="GT maps per chunk of the single pass (default: automatic)")
    a = ap.parse_args()
    t = time.perf_counter()
    gt, subs, mask = make_data(Path(a.dir), a.n_gt, a.box, a.n_sub, a.maps)
    size = gt.nbytes / 2 ** 30
    print(f"data: GT {a.n_gt} × {a.box}³ ({size:.1f} GiB, memory-mapped), {a.n_sub} submissions × {a.maps} maps "
          f"(made or found in {time.perf_counter() - t:.0f} s); device {device()}")
    metrics = ["l2", "corr", "bioem", "fsc", "res"]
    vm.distance_matrices(gt[:4], subs["sub_0"][:2], mask, metrics)  # warm-up
    floor = read_once(gt)
    gpu_floor = stream_once(gt, device())
    rows = []
    with PeakAnon() as pk:
        t = time.perf_counter()
        fused, failed = gt_pass.distance_matrices_many(gt, subs, mask, metrics, gt_chunk=a.gt_chunk)
        t_fused = time.perf_counter() - t
    rows.append(("chapter 3: one GT pass, all submissions (distance_matrices_many)", t_fused, pk.peak))
    t_per = None
    if not a.fused_only:
        with PeakAnon() as pk:
            t = time.perf_counter()
            per = {lab: vm.distance_matrices(gt, s, mask, metrics, label=lab) for lab, s in subs.items()}
            t_per = time.perf_counter() - t
        rows.append((f"chapter 3 before: one call per submission (× {len(subs)})", t_per, pk.peak))
        for lab in subs:  # the two paths agree
            for m in metrics:
                np.testing.assert_allclose(fused[lab][m], per[lab][m], rtol=1e-5, atol=1e-5)
    # chapter 4's GT work: masked Fourier downsampling streamed chunk by chunk, then the PCA
    from helpers.kernels import subspace
    box_ds = min(64, a.box)
    if not a.no_subspace:
        with PeakAnon() as pk:
            t = time.perf_counter()
            x = subspace.masked_downsample(gt, mask, box_ds, label="GT")
            subspace.pca(subspace.prepare(x), 10, randomized=len(x) > 2000)
            t_sub = time.perf_counter() - t
        rows.append((f"chapter 4: GT masked + downsampled to {box_ds}³, PCA", t_sub, pk.peak))
    print(f"reading the GT once (I/O floor): {floor:.1f} s ({size / floor:.2f} GiB/s)")
    print(f"{'path':66s} {'wall (s)':>9s} {'÷ floor':>8s} {'peak anon (GiB)':>16s}")
    for name, wall, peak in rows:
        print(f"{name:66s} {wall:9.1f} {wall / floor:8.1f} {peak / 2 ** 30:16.2f}")
    if gpu_floor:
        print(f"streaming the GT once to the GPU (pinned copies, the GPU floor): {gpu_floor:.1f} s; "
              f"chapter 3's single pass ÷ that floor: {t_fused / gpu_floor:.2f}")
    if t_per:
        print(f"speed-up of the single pass: {t_per / t_fused:.2f}×")
    if not a.keep:
        for p in Path(a.dir).glob("*.npy"):
            p.unlink()


if __name__ == "__main__":
    main()
