"""Chapter 9's readers of the real methods' per-particle output besides cryoDRGN's (which
:mod:`helpers.pipeline.chapters.per_particle` reads itself): RECOVAR's.

RECOVAR (:mod:`helpers.methods.recovar`) gives each particle a latent (``model/zdim_<d>/
latent_coords.npy``) and a k-means cluster (``analysis_<d>/data/kmeans_result.pkl``); its
submission is the cluster-centre maps in cluster order (``centerNNN.mrc`` → map NNN + 1), so a
particle's map is the centre of its cluster. Both are found through ``<data_dir>/recovar/run.json``
(written by :func:`helpers.methods.recovar.add_recovar_entry`; the run folder relative to the data
folder, so a copied data folder still works), and only when its submission is in this run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

RECOVAR_RECORD = "recovar/run.json"


def recovar_run(data_dir, subs: dict) -> dict | None:
    """RECOVAR's run record with ``result_dir`` (absolute) added, when ``recovar/run.json`` is there,
    its run folder exists and its submission (``label``) is among this run's ``subs``; else None."""
    rec_file = Path(data_dir) / RECOVAR_RECORD
    if not rec_file.is_file():
        return None
    rec = json.loads(rec_file.read_text())
    res = Path(data_dir) / rec.get("workdir", "recovar/pipeline")
    if rec.get("label", "RECOVAR") not in subs or not res.is_dir():
        return None
    return {**rec, "label": rec.get("label", "RECOVAR"), "result_dir": res}


def recovar_entry(inp: dict, idx: np.ndarray) -> dict:
    """{"<label> (<K> maps)": (its preprocessed maps, k-means cluster of each chosen particle)}, or
    {} without a RECOVAR run. Refuses labels that do not index the submission's maps."""
    from helpers.core.errors import InputError
    from helpers.methods.recovar import read_kmeans

    run = recovar_run(inp["data_dir"], inp["subs"])
    if run is None:
        return {}
    analysis = run["result_dir"] / f"analysis_{run['zdim']}"
    _, labels, kf = read_kmeans(analysis)
    maps = inp["subs"][run["label"]].maps
    if len(labels) != len(inp["table"]) or labels.max() >= len(maps):
        raise InputError(kf, f"{len(labels)} labels up to {labels.max()} for {len(inp['table'])} particles and "
                             f"{len(maps)} maps of submission {run['label']!r}.",
                         "Give the RECOVAR run this submission was made from (recovar/run.json).")
    return {f"{run['label']} ({len(maps)} maps)": (maps, labels[np.asarray(idx)])}


def recovar_latent(inp: dict) -> dict:
    """{"<label> latent": z (n, d)} of RECOVAR's run (regularised latents), or {} without one or
    when its particle count differs from the table's."""
    from helpers.methods.recovar import read_latents

    run = recovar_run(inp["data_dir"], inp["subs"])
    if run is None:
        return {}
    z, _ = read_latents(run["result_dir"], run["zdim"])
    return {f"{run['label']} latent": z} if len(z) == len(inp["table"]) else {}


def method_of(entry: str, subs: dict) -> str | None:
    """The submission a per-particle entry's maps come from: ``entry`` itself, or the submission
    whose label the entry starts with ("cryoDRGN (40 maps)", "cryoDRGN per particle", "RECOVAR
    (20 maps)"); None for the GT-made bounds."""
    if entry in subs:
        return entry
    return next((lab for lab in sorted(subs, key=len, reverse=True)
                 if entry.startswith(lab + " (") or entry.startswith(lab + " per particle")), None)
