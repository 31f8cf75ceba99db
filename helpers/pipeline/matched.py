"""A control with a real method's data budget: the comparison that is fair to the method.

The demo's *Reconstructed* mock is what perfect classification and perfect poses deliver from
``n_recon_images`` particle images at the GT's box. A real method (cryoDRGN) trains on the
particle stack at a smaller box, with far fewer images; set against *Reconstructed* it is judged
on its data as much as on its algorithm. :func:`add_matched_control` makes the same ideal
reconstruction from **exactly the method's images at the method's box**: the particle stack
Fourier-cropped to ``box`` pixels, each image assigned to the MD-PC1 group of its true GT map,
one Wiener-filtered map per group. What is left between the method and this control is what the
method had to learn (states and their order) and what it gets wrong.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.errors import InputError
from helpers.io.mapset import MapSet

MATCHED_NAME = "reconstructed_matched"


def matched_label(box: int, n_images: int) -> str:
    """The control's label, e.g. "Recon. 2000 img @32" (the budget it is matched to)."""
    return f"Recon. {n_images} img @{box}"


def downsampled_stack(images, table: pd.DataFrame, box: int) -> tuple[np.ndarray, pd.DataFrame, float]:
    """Particle images (P, n, n) Fourier-cropped to ``box`` px, as a method that downsamples sees them.

    Pixel values are kept (the crop preserves the mean); :func:`helpers.datagen.reconstruct.reconstruct`
    then returns the map at the scale it has from full-size images (tested); the truth shift columns (``hetbookShiftXPx/YPx``) are
    rescaled to the new pixel. Returns (images (P, box, box) float32, table, factor n/box)."""
    from helpers.kernels.image_metrics import downsample_images

    n = images.shape[-1]
    if box > n:
        raise InputError("particles", f"cannot be downsampled to {box} px: the images are {n} px.",
                         f"Set the matched control's box to at most {n}.")
    small = downsample_images(images, box).numpy().astype(np.float32)
    t = table.copy()
    for c in ("hetbookShiftXPx", "hetbookShiftYPx"):
        t[c] = t[c] * (box / n)
    return small, t, n / box


def matched_control(data_dir, box: int = 32, n_maps: int = 80, min_images: int = 10) -> MapSet:
    """The ideal reconstruction from the training stack ``<data_dir>/particles/particles.star`` at
    ``box`` px: ``n_maps`` MD-PC1 groups of the GT (``gt/metadata.csv``), each image in the group
    of its true map (``hetbookTrueMapIndex``), groups with fewer than ``min_images`` images left
    out. Returns a MapSet at the downsampled voxel size (its Nyquist is the method's)."""
    from helpers.io.particles import read_particles
    from helpers.datagen.mocks import group_of_map, reconstruct_groups

    data = Path(data_dir)
    parts = read_particles(data / "particles" / "particles.star")
    if "hetbookTrueMapIndex" not in parts.table:
        raise InputError(data / "particles" / "particles.star", "has no hetbookTrueMapIndex column.",
                         "The matched control needs simulated particles that know their GT map (the demo's).")
    meta = pd.read_csv(data / "gt" / "metadata.csv")
    imgs, table, factor = downsampled_stack(np.asarray(parts.images), parts.table, box)
    vs = float(parts.pixel_size) * factor
    rec = reconstruct_groups(imgs, table, group_of_map(meta["pc1"].to_numpy(), n_maps), n_maps, vs,
                             min_images=min_images)
    n_img = len(table)
    return MapSet(rec["maps"], rec["populations"], vs, matched_label(box, n_img),
                  provenance={"what": f"the {n_img} training images at {box} px (a real method's budget), each "
                                      f"in the MD-PC1 group of its true GT map, {n_maps} groups, one Wiener-filtered "
                                      "reconstruction per group; populations = particle fractions",
                              "control": "matched", "n_images": n_img, "box": box, "images_per_map": rec["n_images"].tolist(),
                              "groups_left_out_population": rec["left_out"]})


def add_matched_control(data_dir, box: int = 32, n_maps: int = 80, name: str = MATCHED_NAME) -> dict:
    """Write :func:`matched_control` as submission ``name`` of ``<data_dir>/submissions`` (left
    alone when present). Returns dict(name, label, n_images, box, voxel_size_A)."""
    import json

    from helpers.methods.adapters import write_submission

    subs = Path(data_dir) / "submissions"
    cfg = json.loads((subs / "submission_config.json").read_text())
    for v in cfg.values():
        if isinstance(v, dict) and v.get("name") == name:
            return {"name": name, "label": v.get("flavor_name", name)}
    ms = matched_control(data_dir, box=box, n_maps=n_maps)
    write_submission(ms, subs, name=name, align=False)
    return {"name": name, "label": ms.label, "n_images": ms.provenance["n_images"], "box": box,
            "voxel_size_A": ms.voxel_size}


def budgets(data_dir) -> dict:
    """{label: dict(n_images, box)}: the particle images each entry of a generated data folder was
    made from — the mocks with a recorded image count (``hetbook_truth``), the matched control
    (``hetbook_provenance``) and the real methods run on the stack (``cryodrgn/run.json``,
    ``recovar/run.json``: the box; the stack's size from ``manifest.json``). Entries without a
    record are left out."""
    import json

    data = Path(data_dir)
    cfg_path = data / "submissions" / "submission_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    out = {}
    for v in cfg.values():
        if not isinstance(v, dict) or "flavor_name" not in v:
            continue
        rec = {**v.get("hetbook_truth", {}), **v.get("hetbook_provenance", {})}
        if "n_images" in rec:
            out[v["flavor_name"]] = {"n_images": int(rec["n_images"]), "box": int(rec.get("box", v["box_size"]))}
    man = data / "manifest.json"
    m = json.loads(man.read_text()).get("params", {}) if man.is_file() else {}
    for run in (data / "cryodrgn" / "run.json", data / "recovar" / "run.json"):
        if run.is_file() and "n_images" in m:
            r = json.loads(run.read_text())
            if r.get("box"):
                out[r["label"]] = {"n_images": int(m["n_images"]), "box": int(r["box"])}
    return out


def matched_label_in(data_dir, name: str = MATCHED_NAME) -> str | None:
    """The label of the matched control in a data folder's submission config (None: absent)."""
    import json

    cfg_path = Path(data_dir) / "submissions" / "submission_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return next((v.get("flavor_name") for v in cfg.values() if isinstance(v, dict) and v.get("name") == name), None)
