"""The demo data set: real adenylate-kinase (AdK) transition paths -> challenge-format files.

:func:`make_dataset` writes, under one folder, deterministically under ``seed``:

1. the GT ensemble (:mod:`helpers.datagen.ensemble`): ``n_gt`` conformations evenly spaced along
   MD-PC1 (Å) of the superposed DIMS path, populations from a 3-Gaussian mixture along PC1, maps
   (n_gt, box, box, box) float32 at ``voxel_size`` Å, written as the challenge does
   (``gt/maps_gt.npy``, ``gt/metadata.csv``, ``gt/mask.mrc``, ``gt/reference.mrc``);
2. mock submissions (:mod:`helpers.datagen.mocks`) as folders of MRC maps + ``populations.txt`` and
   one ``submissions/submission_config.json``;
3. particle images (:mod:`helpers.datagen.particles`) as ``particles/particles.mrcs`` +
   ``particles.star`` (the images methods train on) and, with ``n_heldout`` > 0,
   ``particles/heldout.mrcs`` + ``heldout.star``: an independent draw no method sees, for the
   image metrics (chapter 6) to score every submission on images none was made from.

Each part draws from its own generator (``seed``, ``seed`` + 1, + 2, + 3 for the held-out stack).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.backend import progress
from helpers.core.paths import save_json
from helpers.datagen.ensemble import (GT_PATHS, load_adk, motion_pca, project_pc1, render_maps,
                                      sample_conformations, soft_mask, superpose, three_gaussian_populations)
from helpers.datagen.mocks import build_mocks
from helpers.datagen.particles import write_particle_stack
from helpers.io.mrc import write_mrc

# Bumped whenever the generated data change meaning; a data folder of another version is refused
# (helpers.pipeline.run.ensure_data) rather than silently mixed with new results.
DATA_VERSION = 4  # 4: a held-out particle stack (particles/heldout.star) no method trains on

DEFAULTS = dict(box=64, voxel_size=2.146, n_gt=400, n_maps=80, n_small=20, coord_noise=0.3,
                bfactor=30.0, n_images=2000, snr=0.05, max_shift=2.0, seed=0,
                rotation_axis=(1.0, 2.0, 3.0), rotation_deg=40.0, other_voxel_factor=1.5,
                noise_fraction=2.0, lowpass_range=(14.0, 22.0), n_recon_images=24000, n_heldout=0,
                missing_above=0.6)


def _partial(folder: Path) -> Path:
    """An empty ``.<name>.partial`` folder beside ``folder``, renamed to it once complete."""
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def make_dataset(out_dir, adk_npz, **params) -> dict:
    """Build the demo data set under ``out_dir`` (``gt/``, ``submissions/``, ``particles/``).

    Deterministic under ``seed``. Each of the three parts is generated only if its folder is
    missing, into a temporary folder renamed on success, so nothing existing is overwritten
    and an interrupted run leaves no half-written part. Returns the manifest (also written to
    ``out_dir/manifest.json``).
    """
    p = {**DEFAULTS, **params}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adk = load_adk(adk_npz)
    elements = adk.pop("elements")
    sup = superpose(adk)
    gt_frames = np.concatenate([sup[k] for k in GT_PATHS])
    mean, v, var1 = motion_pca(gt_frames, sup["dims"][0])
    all_pc1 = np.concatenate([project_pc1(sup[k], mean, v) for k in GT_PATHS])
    lo, hi = float(all_pc1.min()), float(all_pc1.max())
    manifest = {"data_version": DATA_VERSION,
                "params": {k: (list(x) if isinstance(x, tuple) else x) for k, x in p.items()},
                "md_pc1_variance_fraction": var1, "pc1_range": [lo, hi]}

    gt_dir = out / "gt"
    if not gt_dir.exists():
        _write_gt(gt_dir, sup, mean, v, elements, lo, hi, p)
    maps = np.load(gt_dir / "maps_gt.npy", mmap_mode="r")
    meta = pd.read_csv(gt_dir / "metadata.csv")
    pc1, pops = meta["pc1"].to_numpy(), meta["populations"].to_numpy()

    sub_dir = out / "submissions"
    if not sub_dir.exists():
        rng = np.random.default_rng(p["seed"] + 1)
        mocks = build_mocks(np.asarray(maps), pops, pc1, sup, mean, v, elements, lo, hi, p, rng)
        _write_submissions(sub_dir, mocks, p)

    part_dir = out / "particles"
    if not part_dir.exists() and p["n_images"] > 0:
        _write_particles(part_dir, maps, pops, p)
    save_json(out / "manifest.json", manifest)
    return manifest


def _write_gt(gt_dir: Path, sup, mean, v, elements, lo: float, hi: float, p: dict) -> None:
    """The GT in the challenge's layout: ``maps_gt.npy``, ``metadata.csv``, ``mask.mrc``, ``reference.mrc``."""
    vs = p["voxel_size"]
    rng = np.random.default_rng(p["seed"])
    coords, pc1, names = sample_conformations(sup, mean, v, p["n_gt"], rng, p["coord_noise"])
    pops = three_gaussian_populations(pc1, lo, hi)
    maps = render_maps(coords, elements, p["box"], vs, bfactor=p["bfactor"])
    tmp = _partial(gt_dir)
    np.save(tmp / "maps_gt.npy", maps)
    total = 20 * p["n_gt"] * 10
    pd.DataFrame({"index": np.arange(p["n_gt"]), "volumes": [f"{i:05d}.mrc" for i in range(p["n_gt"])],
                  "populations_count": np.round(pops * total).astype(int), "pc1": pc1,
                  "populations": pops, "path": names}).to_csv(tmp / "metadata.csv", index=False)
    write_mrc(tmp / "mask.mrc", soft_mask(maps.mean(0), vs), vs)
    write_mrc(tmp / "reference.mrc", maps.mean(0), vs)
    tmp.rename(gt_dir)


def _write_submissions(sub_dir: Path, mocks: dict, p: dict) -> None:
    """One folder of MRC maps + ``populations.txt`` per mock and ``submission_config.json`` (the
    challenge's: the GT entry, then one entry per mock numbered from 0, plus its ``hetbook_truth``)."""
    tmp = _partial(sub_dir)
    config = {"gt": {"name": "gt", "path": "../gt", "box_size": p["box"], "pixel_size": p["voxel_size"],
                     "ref_align_fname": "reference.mrc"}}
    for i, (name, m) in enumerate(progress(mocks.items(), desc="write mocks")):
        folder = tmp / name
        folder.mkdir()
        for j, vol in enumerate(m["maps"]):
            write_mrc(folder / f"{j + 1:02d}.mrc", vol, m["voxel_size"])
        np.savetxt(folder / "populations.txt", m["populations"], fmt="%.10g")
        config[str(i)] = {"name": name, "flavor_name": m["label"], "path": name,
                          "populations_file": f"{name}/populations.txt", "submission_version": "0",
                          "box_size": int(m["maps"].shape[-1]), "pixel_size": m["voxel_size"],
                          "flip": int(m.get("flip", 0)), "align": int(m.get("align", 0)),
                          "hetbook_truth": m["truth"]}
    with open(tmp / "submission_config.json", "w") as fh:
        json.dump(config, fh, indent=2)
    tmp.rename(sub_dir)


def _write_particles(part_dir: Path, maps, pops, p: dict) -> None:
    """The training stack ``particles`` (generator ``seed`` + 2) and, with ``n_heldout`` > 0, the
    held-out stack ``heldout`` (``seed`` + 3)."""
    tmp = _partial(part_dir)
    write_particle_stack(tmp, "particles", maps, pops, p["n_images"], np.random.default_rng(p["seed"] + 2), p)
    if p["n_heldout"] > 0:
        write_particle_stack(tmp, "heldout", maps, pops, p["n_heldout"], np.random.default_rng(p["seed"] + 3), p)
    tmp.rename(part_dir)
