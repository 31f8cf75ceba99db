"""Every chapter on a synthetic challenge-shaped data set: per chapter, wall time, the time to
read the GT once (the I/O floor), their ratio and the peak anonymous memory of the chapter's
whole process tree (runner + notebook kernel + any workers: ``RssAnon``, the processes' own
memory, not the page cache of the memory-mapped GT).

Usage: python benchmarks/bench_book_scale.py [--n-gt 800] [--box 96] [--n-sub 4] [--maps 80]
                                             [--n-images 300] [--dir /tmp/hetbook-book-scale] [--only 03 ...]
                                             [--set notebooks.03_volume_metrics.memory_gib=4 ...]

The data folder is laid out like the challenge's (``params/challenge.yml``): ``gt/maps_gt.npy``
(the memory-mapped synthetic GT of ``bench_scale.py``: smooth maps along a 1-D path),
``gt/metadata.csv`` (a 3-Gaussian population along the path, weights 1 : ½ : 1),
``gt/mask.mrc``, ``gt/reference.mrc``; one folder of MRC maps + ``populations.txt`` per
submission (noisy maps at random places along the path; the 2nd, 5th … written mirrored with
``flip`` and ``align`` set, the 3rd, 6th … at ¾ of the box with a 4/3 voxel, so chapter 2 does
all of its kinds of work) with ``submission_config.json``; and
``particles/`` (images simulated from the GT maps by
``helpers.datagen.particles.simulate_particles``, with its STAR file). Made once, reused. Each
chapter runs as ``python -m helpers.pipeline.run --only NN`` with settings for a large GT
(chapter 7 trimmed to four degradations without image metrics).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_scale import PeakAnon, make_data, read_once, size_args  # noqa: E402

CHAPTERS = ("01", "02", "03", "04", "05", "06", "07", "08")
LAYOUT = "layout 2: submissions plain / mirrored + aligned / on another grid"  # in data/done; another is rebuilt


def tree_anon(pid: int) -> int:
    """Anonymous memory (bytes) of a process and all its descendants. A worker forked without
    exec (same command line as its parent: the transport pool) shares its parent's pages
    copy-on-write, and summing ``RssAnon`` would count them in every process (chapter 3 read
    7.4–7.8 GiB instead of ~5.6): such parents and children are counted by their proportional
    share (``Pss_Anon``, /proc/PID/smaps_rollup; ~0.1 s per read of a 4 GB process, so only
    then), every other process by its ``RssAnon`` (cheap)."""
    parent, todo = {pid: None}, [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                for c in open(f"/proc/{p}/task/{t}/children").read().split():
                    parent[int(c)] = p
                    todo.append(int(c))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    shared = set()
    for c, p in parent.items():
        if p is not None and _cmdline(c) == _cmdline(p):
            shared |= {c, p}
    total = 0
    for p in parent:
        try:
            total += _field(p, "smaps_rollup", "Pss_Anon:") if p in shared else _field(p, "status", "RssAnon:")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total


def _cmdline(pid: int) -> bytes:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return b""


def _field(pid: int, name: str, key: str) -> int:
    for line in open(f"/proc/{pid}/{name}"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def build(d: Path, n_gt: int, box: int, n_sub: int, n_maps: int, n_images: int, voxel_size: float) -> Path:
    """The challenge-layout folder ``d/data`` (made once)."""
    import starfile

    from helpers.datagen.particles import simulate_particles, star_tables
    from helpers.kernels.fourier import fourier_resample
    from helpers.io import write_mrc

    data = d / "data"
    gt, subs, mask = make_data(d, n_gt, box, n_sub, n_maps)
    if (data / "done").exists() and (data / "done").read_text() == LAYOUT:
        return data
    if data.exists():  # unfinished, or an older layout: made again
        shutil.rmtree(data)
    (data / "gt").mkdir(parents=True, exist_ok=True)
    link = data / "gt/maps_gt.npy"
    if not link.exists():
        link.symlink_to(d / "gt.npy")
    t = np.linspace(0, 1, n_gt)
    pops = sum(w * np.exp(-0.5 * ((t - c) / 0.1) ** 2) for w, c in ((1, 0.2), (0.5, 0.5), (1, 0.8)))
    pops /= pops.sum()
    pd.DataFrame({"index": np.arange(n_gt), "volumes": [f"{i:05d}.mrc" for i in range(n_gt)],
                  "pc1": t, "populations": pops}).to_csv(data / "gt/metadata.csv", index=False)
    write_mrc(data / "gt/mask.mrc", mask, voxel_size)
    write_mrc(data / "gt/reference.mrc", np.asarray(gt[n_gt // 2]), voxel_size)
    cfg = {"gt": {"name": "gt", "path": "../gt", "box_size": box, "pixel_size": voxel_size,
                  "ref_align_fname": "reference.mrc"}}
    rng = np.random.default_rng(0)
    for i, (lab, maps) in enumerate(subs.items()):
        folder = data / "submissions" / lab
        folder.mkdir(parents=True, exist_ok=True)
        # chapter 2's three kinds of work, one per submission in turn: none; mirror + align
        # (the maps written mirrored, flip and align set); resample (written at 3/4 of the box
        # with a 4/3 voxel, the same physical box)
        kind = ("plain", "flip_align", "other_grid")[i % 3]
        b_i = int(round(0.75 * box)) if kind == "other_grid" else box
        vs_i = voxel_size * box / b_i
        for j, m in enumerate(maps):
            m = np.asarray(m)
            if kind == "flip_align":
                m = np.ascontiguousarray(m[..., ::-1])
            elif kind == "other_grid":
                m = fourier_resample(m, b_i).numpy()
            write_mrc(folder / f"{j + 1:02d}.mrc", m, vs_i)
        p = rng.dirichlet(np.ones(len(maps)) * 5)
        np.savetxt(folder / "populations.txt", p)
        cfg[str(i)] = {"name": lab, "flavor_name": f"Submission {i + 1}", "path": lab,
                       "populations_file": f"{lab}/populations.txt", "submission_version": "0",
                       "box_size": b_i, "pixel_size": vs_i, "flip": int(kind == "flip_align"),
                       "align": int(kind == "flip_align")}
    (data / "submissions/submission_config.json").write_text(json.dumps(cfg, indent=2))
    (data / "particles").mkdir(exist_ok=True)
    pick = np.linspace(0, n_gt - 1, min(n_gt, 100)).round().astype(int)  # images from 100 maps along the path
    noisy, _, table, _ = simulate_particles(np.asarray(gt[pick]), pops[pick] / pops[pick].sum(), n_images,
                                            voxel_size, rng)
    write_mrc(data / "particles/particles.mrcs", noisy, voxel_size)
    optics, table = star_tables(table, voxel_size, box)
    starfile.write({"optics": optics, "particles": table}, data / "particles/particles.star")
    (data / "done").write_text(LAYOUT)
    return data


def params(d: Path, data: Path, voxel_size: float, box: int) -> Path:
    """The runner's parameters: the challenge file's choices for a large GT (chapter 7 at 112³ when
    the GT's box is larger than 128, as params/challenge.yml), trimmed to finish in minutes."""
    vs = {"voxel_size": voxel_size}
    cfg = {"executed_dir": str(d / "executed"), "dataset": {"generate": False},
           "common": {"data_dir": str(data), "results_dir": str(d / "results")},
           "notebooks": {
               "01_data": {**vs, "n_browse": 6},
               "03_volume_metrics": {**vs, "transport_gt_maps": 8, "transport_sub_maps": 8},
               "04_subspace": {**vs, "box_ds": 48},
               "05_distribution": vs,
               "06_image_metrics": {**vs, "n_images": 300, "box_ds": 32, "n_gt_maps": 100},
               "07_robustness": {**vs, "gt_stride": 40, "image_metrics": False, "n_replicates": 2,
                                 "degradations": ["noise", "blur", "pop_shift", "n_maps"],
                                 "study_box": 112 if box > 128 else 0},
               "08_summary": vs}}
    p = d / "params.yml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def main():
    ap = size_args(argparse.ArgumentParser(), directory="/tmp/hetbook-book-scale")
    ap.add_argument("--n-images", type=int, default=300)
    ap.add_argument("--voxel-size", type=float, default=2.146)
    ap.add_argument("--only", action="extend", nargs="+", help="chapters to run (number prefix); default all")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a parameter for helpers.pipeline.run, e.g. notebooks.03_volume_metrics.memory_gib=4")
    a, _ = ap.parse_known_args()  # bench_scale.py's own options (make bench-scale ARGS=...) are ignored
    d = Path(a.dir)
    t = time.perf_counter()
    data = build(d, a.n_gt, a.box, a.n_sub, a.maps, a.n_images, a.voxel_size)
    gt = np.load(data / "gt/maps_gt.npy", mmap_mode="r")
    print(f"data: {data} — GT {a.n_gt} × {a.box}³ ({gt.nbytes / 2 ** 30:.1f} GiB, memory-mapped), {a.n_sub} "
          f"submissions × {a.maps} maps, {a.n_images} particle images (made or found in {time.perf_counter() - t:.0f} s)")
    floor = read_once(gt)
    p = params(d, data, a.voxel_size, a.box)
    rows = []
    for ch in a.only or CHAPTERS:
        sets = [x for kv in a.set for x in ("--set", kv)]
        proc = subprocess.Popen([sys.executable, "-m", "helpers.pipeline.run", "--params", str(p), "--no-data", "--only", ch, *sets],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "HETBOOK_QUIET": "1"})
        t = time.perf_counter()
        with PeakAnon(lambda: tree_anon(proc.pid)) as pk:
            log = proc.communicate()[0]
        wall, peak = time.perf_counter() - t, pk.peak
        ok = proc.returncode == 0
        rows.append({"chapter": ch, "ok": ok, "wall_s": round(wall, 1), "wall_over_gt_read": round(wall / floor, 1),
                     "peak_anon_GiB": round(peak / 2 ** 30, 2)})
        print(f"  {ch}: {'done' if ok else 'FAILED'} in {wall:.0f} s, peak anon {peak / 2 ** 30:.2f} GiB", flush=True)
        if not ok:
            print("\n".join(log.splitlines()[-15:]))
    print(f"reading the GT once (I/O floor): {floor:.1f} s")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
