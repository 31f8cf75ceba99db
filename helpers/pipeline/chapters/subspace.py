"""Chapter 4 (``notebooks/04_subspace.py``): PCA of the GT and of each submission on masked,
downsampled, unit-norm, spectrum-equalised maps; the percentage of captured variance (PCV, %)
between every pair of sets with bootstrap error bars, the GT's first component captured, the
common-subspace and GT-axis embeddings. Everything is written under ``<results_dir>/subspace``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.errors import InputError
from helpers.core.paths import save_csv, save_npz
from helpers.io import manifest
from helpers.io.mapset import slug
from helpers.kernels import normalise, subspace

CHAPTER = "04_subspace"


def load_inputs(data_dir, results_dir, voxel_size: float):
    """The GT (not checked for finite values: streamed by :func:`fit_sets`), its soft mask on the GT
    box and this run's preprocessed submissions {label: MapSet} (the manifest; memory-mapped).
    Returns (gt, mask, subs). Writes nothing."""
    gtf = io.find_gt(Path(data_dir))
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size, check_finite=False)
    mask = io.read_mask(gtf["mask"], gt.box)
    return gt, mask, manifest.load_submissions(Path(results_dir), mmap=True)


def usable(subs: dict, failures: manifest.Failures) -> dict:
    """The submissions with at least 2 maps (a subspace needs two); the others are recorded in
    ``failures`` as an :class:`InputError`. Returns {label: MapSet}."""
    for lab, s in subs.items():
        with failures.guard(lab):
            if s.n_maps < 2:
                raise InputError(lab, f"{s.n_maps} map: a subspace (PCA) needs at least 2 maps.",
                                 "Submit at least two maps to be scored in this chapter.")
    return {lab: s for lab, s in subs.items() if lab in failures.ok}


def fit_sets(sets: dict, mask, *, box_ds: int, rank: int, equalise: bool, randomized_above: int):
    """Each set's maps × mask, Fourier-downsampled to ``box_ds``³ (chunk by chunk: a memory-mapped
    GT is streamed once), power spectra equalised to the common (minimum) shape when
    ``equalise``, then :func:`subspace.pca` of rank ``rank`` (seeded randomised SVD above
    ``randomized_above`` maps). Returns (prepared {label: (n, box_ds, box_ds, box_ds)},
    pcas {label: PCA}). Writes nothing."""
    prepared = {lab: subspace.masked_downsample(s.maps, mask, box_ds, label=lab) for lab, s in sets.items()}
    if equalise:
        prepared, _ = normalise.equalise_spectra(prepared)
    pcas = {lab: subspace.pca(subspace.prepare(x), rank, randomized=len(x) > randomized_above)
            for lab, x in prepared.items()}
    return prepared, pcas


def variance_table(results_dir, pcas: dict, rank: int) -> pd.DataFrame:
    """Variance fraction (0–1) of each set's first ``rank`` components: one row per set, columns
    PC1…PC<rank>. Writes ``subspace/variance.csv`` (index ``label``)."""
    var = pd.DataFrame({lab: pd.Series(p.variance_fraction[:rank]) for lab, p in pcas.items()}).T
    var.columns = [f"PC{i + 1}" for i in range(var.shape[1])]
    save_csv(Path(results_dir) / "subspace" / "variance.csv", var.rename_axis("label"))
    return var


def pcv_table(results_dir, pcas: dict) -> pd.DataFrame:
    """PCV matrix in %: row i = reference set, column j = capturing set, the share of i's rank-r
    variance in j's subspace (:func:`subspace.pcv_matrix`). Writes ``subspace/pcv.csv`` (index
    ``reference``)."""
    M, labels = subspace.pcv_matrix(pcas)
    pcv = pd.DataFrame(100 * M, index=labels, columns=labels)
    save_csv(Path(results_dir) / "subspace" / "pcv.csv", pcv.rename_axis("reference"))
    return pcv


def bootstrap_pcv(results_dir, prepared: dict, pcas: dict, labels, *, rank: int, n_bootstrap: int) -> pd.DataFrame:
    """Error bars: each of ``labels``' maps resampled with replacement ``n_bootstrap`` times
    (``default_rng(n_maps)``: sets of one size get the same resamples, so twins tie), its PCA
    redone, both PCVs against the GT recomputed. Columns label, gt_captured_std, set_in_gt_std
    (std over resamples, %). Writes ``subspace/pcv_bootstrap.csv``."""
    boot = []
    for lab in labels:
        X = subspace.prepare(prepared[lab])
        v = []
        rng_boot = np.random.default_rng(len(X))
        for _ in range(n_bootstrap):
            pb = subspace.pca(X[rng_boot.integers(0, len(X), len(X))], rank)
            v.append((subspace.pcv(pcas["GT"], pb), subspace.pcv(pb, pcas["GT"])))
        v = 100 * np.array(v)
        boot.append({"label": lab, "gt_captured_std": v[:, 0].std(), "set_in_gt_std": v[:, 1].std()})
    boot = pd.DataFrame(boot)
    save_csv(Path(results_dir) / "subspace" / "pcv_bootstrap.csv", boot)
    return boot


def analyse(results_dir, gt, mask, subs: dict, *, box_ds: int, rank: int, equalise: bool, randomized_above: int,
            n_bootstrap: int) -> dict:
    """Chapter 4's PCA and PCV: :func:`usable` (failures recorded in the manifest, chapter
    ``04_subspace``), :func:`fit_sets` on the GT and the usable submissions, :func:`variance_table`,
    :func:`pcv_table`, :func:`bootstrap_pcv`. Writes ``subspace/variance.csv``, ``pcv.csv``,
    ``pcv_bootstrap.csv``. Returns {"subs", "sets" (GT first), "pcas", "variance", "pcv",
    "bootstrap", "failed" (failure table)}."""
    failures = manifest.Failures(Path(results_dir), CHAPTER)
    subs = usable(subs, failures)
    sets = {"GT": gt, **subs}
    prepared, pcas = fit_sets(sets, mask, box_ds=box_ds, rank=rank, equalise=equalise,
                              randomized_above=randomized_above)
    var = variance_table(results_dir, pcas, rank)
    pcv = pcv_table(results_dir, pcas)
    boot = bootstrap_pcv(results_dir, prepared, pcas, list(subs), rank=rank, n_bootstrap=n_bootstrap)
    return {"subs": subs, "sets": sets, "pcas": pcas, "variance": var, "pcv": pcv, "bootstrap": boot,
            "failed": failures.save()}


def gt_pc1_captured(results_dir, pcas: dict) -> pd.Series:
    """% of the GT's first-component variance (S₁² along V₁) captured by each set's subspace,
    sorted from most to least. Writes ``subspace/gt_pc1_captured.csv`` (label, the value)."""
    v1 = pcas["GT"].V[:, :1] * pcas["GT"].S[:1]
    first = pd.Series({lab: float(((p.V.T @ v1) ** 2).sum() / (v1 ** 2).sum()) * 100 for lab, p in pcas.items()},
                      name="% of GT PC1 variance captured").sort_values(ascending=False)
    save_csv(Path(results_dir) / "subspace" / "gt_pc1_captured.csv", first.rename_axis("label").to_frame())
    return first


def embeddings(results_dir, pcas: dict, sets: dict) -> dict:
    """Every set's maps in the submissions' common subspace (first 2 axes, :func:`subspace.embed`)
    and on the GT's first two axes from the GT's mean (:func:`subspace.project_on`), with their
    populations. Writes ``subspace/embeddings.npz`` (``common_<slug>`` (n, 2), ``gtaxes_<slug>``
    (n, 2), ``pop_<slug>`` (n,)). Returns {"common", "gtaxes", "pops"}: {label: array}."""
    basis, _ = subspace.common_subspace({k: v for k, v in pcas.items() if k != "GT"}, 2)
    emb = {lab: subspace.embed(p, basis) for lab, p in pcas.items()}
    gtax = {lab: subspace.project_on(p, pcas["GT"], 2) for lab, p in pcas.items()}
    pops = {lab: s.populations for lab, s in sets.items()}
    save_npz(Path(results_dir) / "subspace" / "embeddings.npz",
             **{f"common_{slug(k)}": v for k, v in emb.items()}, **{f"gtaxes_{slug(k)}": v for k, v in gtax.items()},
             **{f"pop_{slug(k)}": v for k, v in pops.items()})
    return {"common": emb, "gtaxes": gtax, "pops": pops}


def both_directions(pcv: pd.DataFrame) -> pd.DataFrame:
    """Per submission (the GT row dropped): "GT captured by set (%)" (the PCV matrix's GT row) and
    "set captured by GT (%)" (its GT column). Writes nothing."""
    return pd.DataFrame({"GT captured by set (%)": pcv.loc["GT"], "set captured by GT (%)": pcv["GT"]}).drop("GT")
