"""Figures of chapter 3 (volume metrics: resolution, FSC, distance matrices, transport) and
chapter 4 (subspaces: PCV, common subspace, populations along the GT's axis, eigen-maps).

Each function takes the chapter's results (``helpers.pipeline.chapters.volume`` /
``.subspace``) and returns the figure (or widget); axes carry their units from
:mod:`helpers.core.catalogue` where the quantity is one of its metrics."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from helpers.core import catalogue
from helpers.kernels import nyquist
from helpers.report import plots, widgets

# chapter 3's matrices: what each is and its unit (l2 is summed over the masked voxels there)
MATRIX_LABELS = {"l2": "L2 distance", "corr": "1 − correlation", "bioem": "BioEM −log P", "fsc": "1 − FSC area",
                 "res": "resolution", "sw": "sliced Wasserstein"}
MATRIX_UNITS = {"l2": f"{catalogue.unit('l2')} summed over masked voxels", "corr": catalogue.unit("corr"),
                "bioem": catalogue.unit("bioem"), "fsc": catalogue.unit("fsc_area"),
                "res": catalogue.unit("resolution_A"), "sw": catalogue.unit("sw_A")}


def matrix_label(metric: str) -> str:
    """Readable name of a chapter-3 matrix with its unit: "resolution (Å)", "1 − correlation"."""
    unit = MATRIX_UNITS.get(metric, "")
    name = MATRIX_LABELS.get(metric, metric)
    return f"{name} ({unit})" if unit else name


def frequencies(box: int, voxel_size: float) -> np.ndarray:
    """Spatial frequencies (1/Å) of the FSC shells 1..N/2."""
    return np.arange(1, box // 2 + 1) / (box * voxel_size)


# ------------------------------------------------------------------ chapter 3: volume metrics
def best_resolution(results: dict, summary: pd.DataFrame, voxel_size: float):
    """Fig. 2E: box and strip plot of every submitted map's best resolution (Å) against the GT,
    per submission; dashed line at the GT's Nyquist, a red tick at each coarser submission's own."""
    flag = summary.set_index("label")
    shown = {lab: plots.nyquist_label(lab, bool(flag.loc[lab, "nyquist_limited"])) for lab in results}
    x = f"best {catalogue.label('resolution_A')}"
    long = pd.concat([pd.DataFrame({"submission": shown[lab], x: r["res"].min(0)}) for lab, r in results.items()])
    fig, ax = plt.subplots(figsize=(8, 4))
    sns.boxplot(data=long, y="submission", x=x, ax=ax, color="0.85", fliersize=2)
    sns.stripplot(data=long, y="submission", x=x, ax=ax, size=2, color="0.2")
    ax.axvline(2 * voxel_size, ls="--", c="k", lw=1)
    ax.text(2 * voxel_size, -0.6, " Nyquist", fontsize=9)
    for y, lab in enumerate(results):  # each coarser submission's own Nyquist on its row
        if nyquist.coarser_grid(flag.loc[lab, "native_voxel_A"], voxel_size):
            ax.plot([flag.loc[lab, "native_nyquist_A"]] * 2, [y - 0.4, y + 0.4], c="C3", lw=2)
    ax.set_title("Best FSC=0.5 resolution of every submitted map against the GT")
    fig.tight_layout()
    return fig


def mask_check(mask_fix: dict, results: dict, subs: dict, box: int, voxel_size: float, label: str = "Noisy"):
    """The mask check for ``label``'s middle map (the last submission's when ``label`` was not
    scored): its unmasked, masked, phase-randomised (FSC_n) and corrected FSC against its best GT
    match, x in 1/Å."""
    lab = label if label in mask_fix else list(mask_fix)[-1]
    j = subs[lab].n_maps // 2
    freqs = frequencies(box, voxel_size)
    names = {"randomised": "phase-randomised, masked (FSC_n)", "corrected": "corrected (masked, mask effect removed)"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style, c in [("unmasked", ":", "C0"), ("masked", "-", "C1"), ("randomised", "--", "C2"),
                          ("corrected", "-", "k")]:
        ax.plot(freqs, mask_fix[lab][key][j], style, color=c, lw=2.2 if key == "corrected" else 1.2,
                label=names.get(key, key), zorder=3 if key == "corrected" else 2)
    ax.axhline(0.5, c="k", lw=0.8, ls="--")
    i = int(results[lab]["best_gt_index"][j])
    if nyquist.coarser_grid(subs[lab].native_voxel_size, voxel_size):  # nothing beyond its own Nyquist
        plots.mark_nyquist(ax, nyquist.native_nyquist(subs[lab].native_voxel_size))
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_title(plots.nyquist_label(f"{lab}: map {j} vs its best GT match",
                                     bool(results[lab]["res_nyquist_limited"][i, j])))
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def fsc_curves(results: dict, subs: dict, box: int, voxel_size: float):
    """FSC of each submission's middle map against its best GT match (largest FSC area), x in 1/Å;
    0.5 and 0.143 thresholds; a dotted line at each coarser submission's native Nyquist."""
    freqs = frequencies(box, voxel_size)
    fig, ax = plt.subplots(figsize=(7, 4))
    col = plots.colors(list(results))
    for lab, r in results.items():
        j = r["res"].shape[1] // 2
        i = int(r["best_gt_index"][j])  # chosen by the whole curve (FSC area), not by tied resolutions
        ax.plot(freqs, r["fsc_curves"][i, j], label=plots.nyquist_label(lab, bool(r["res_nyquist_limited"][i, j])),
                lw=1.2, **plots.line_style(lab))
        if nyquist.coarser_grid(subs[lab].native_voxel_size, voxel_size):
            plots.mark_nyquist(ax, nyquist.native_nyquist(subs[lab].native_voxel_size), color=col[lab])
    ax.axhline(0.5, c="k", lw=0.8, ls="--")
    ax.axhline(0.143, c="k", lw=0.8, ls=":")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.legend(fontsize=9, ncol=2)
    ax.set_title("FSC of each submission's middle map vs its best GT match")
    fig.tight_layout()
    return fig


def matrix_png(results: dict, metric: str, label: str, order) -> bytes:
    """PNG of one submission's matrix for ``metric`` as a cost (1 − corr for ``corr``), GT rows in
    ``order`` (by MD-PC1), colour bar with the metric's unit."""
    r = results[label][metric]
    c = 1 - r if metric == "corr" else r
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    im = ax.imshow(c[order], aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("submitted map")
    ax.set_ylabel("GT map (ordered by MD-PC1)")
    fig.colorbar(im, ax=ax, label=matrix_label(metric))
    ax.set_title(f"{label}: {MATRIX_LABELS.get(metric, metric)}", fontsize=10)
    fig.subplots_adjust(left=0.17, right=0.8, bottom=0.13, top=0.91)  # fixed margins: one draw per frame
    return widgets.fig_to_png(fig, dpi=80, tight=False)


def matrix_browser(results: dict, metrics, order):
    """Fig. 3A / S4 browser: pick a metric (those of ``metrics`` that were computed), then a
    submission; each page is :func:`matrix_png`."""
    names = [m for m in metrics if m in next(iter(results.values()))]
    labs = list(results)
    return widgets.two_level_browser([matrix_label(m) for m in names], labs,
                                     lambda i, j: matrix_png(results, names[i], labs[j], order))


def l2_panels(results: dict, order):
    """Every submission's L2 matrix (GT rows in ``order``) side by side on one colour scale
    (0 to the 95th percentile of all of them)."""
    labs = list(results)
    fig, panels, _ = plots.panel_grid(labs, panel=(3, 2.6))
    vmax = np.percentile(np.concatenate([results[lab]["l2"].ravel() for lab in labs]), 95)
    for lab, a in panels.items():
        im = a.imshow(results[lab]["l2"][order], aspect="auto", cmap="viridis", vmin=0, vmax=vmax)
        a.set_title(lab, fontsize=10)
        a.set_xlabel("submitted map", fontsize=9)
        a.set_ylabel("GT map (by MD-PC1)", fontsize=9)
        a.set_xticks([]), a.set_yticks([])
    fig.suptitle("L2 distance, GT (rows, by MD-PC1) × submitted maps (columns)")
    fig.tight_layout()
    fig.colorbar(im, ax=list(panels.values()), shrink=0.6, label=f"L2 ({MATRIX_UNITS['l2']}, z-scored maps)")
    return fig


def transport_coverage(tr: dict, gt_pc1, metrics):
    """For each transport metric, each submission's distance (Å) from every GT map of the subset
    (x: its MD-PC1 coordinate) to the closest submitted map, and the GT subset's own nearest-
    neighbour spacing (dashed). ``tr``: :func:`helpers.pipeline.chapters.volume.transport_scores`."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics) + 2, 4), squeeze=False)
    x, col = np.asarray(gt_pc1)[tr["gt_sel"]], plots.colors(list(tr["results"]))
    for ax, m in zip(axes[0], metrics):
        for k, (lab, r) in enumerate(tr["results"].items()):
            ax.plot(x, r[m].min(1), marker="osD^v<>pXh*"[k % 11], ms=3, lw=1.2, label=lab, **plots.line_style(lab))
        d = tr["gt_self"][m] + np.diag(np.full(len(tr["gt_sel"]), np.inf))
        ax.plot(x, d.min(1), "k--", lw=1.5, label="GT neighbour spacing")
        ax.set_xlabel("GT map: MD-PC1 coordinate")
        ax.set_ylabel(f"{m.upper()} to the closest submitted map ({catalogue.unit(f'{m}_coverage_A')})")
        ax.set_title({"gw": "Gromov–Wasserstein", "pw": "Procrustes–Wasserstein"}[m])
    axes[0, -1].legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ chapter 4: subspaces
def pcv_heatmap(pcv: pd.DataFrame, rank: int):
    """Fig. 2B: the PCV matrix (%; row = reference set, column = capturing set), annotated."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(pcv, annot=True, fmt=".0f", cmap="mako", vmin=0, vmax=100, ax=ax,
                cbar_kws={"label": f"PCV ({catalogue.unit('pcv_gt_captured')})"}, annot_kws={"fontsize": 9})
    ax.set_xlabel("capturing set j")
    ax.set_ylabel("reference set i")
    ax.set_title(f"PCV(i, j), rank {rank}")
    fig.tight_layout()
    return fig


def common_embeddings(emb: dict, pops: dict, submissions):
    """Fig. 2D: each set's maps in the first two common axes (Z1, Z2; arbitrary units of the
    normalised maps), dots sized by population, over the population-weighted KDE of the
    ``submissions``' maps."""
    allz = np.concatenate([emb[k] for k in submissions])
    allw = np.concatenate([pops[k] for k in submissions])
    labs = list(emb)
    col = plots.colors(labs)
    fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.8), sharex=True, sharey=True)
    for lab, a in panels.items():
        sns.kdeplot(x=allz[:, 0], y=allz[:, 1], weights=allw, ax=a, fill=True, cmap="Greys", levels=6, thresh=0.05)
        a.scatter(emb[lab][:, 0], emb[lab][:, 1], s=4 + 800 * pops[lab], color=col[lab], edgecolor="k", lw=0.3)
        a.set_title(lab, fontsize=9)
    for a in axes[-1]:
        a.set_xlabel("Z1 (arbitrary units)")
    for a in axes[:, 0]:
        a.set_ylabel("Z2 (arbitrary units)")
    fig.suptitle("Embeddings in the common subspace (size = population)")
    fig.tight_layout()
    return fig


def populations_on_gt_axis(gtax: dict, pops: dict):
    """Fig. S2: each set's populations (scaled to their maximum) along its maps' coordinates on
    the GT's PC1 (from the GT's mean); the GT's in grey on every panel."""
    labs = list(gtax)
    col = plots.colors(labs)
    fig, panels, axes = plots.panel_grid(labs, panel=(3, 2.2), sharex=True)
    g = gtax["GT"][:, 0]
    go = np.argsort(g)
    for lab, a in panels.items():
        a.plot(g[go], pops["GT"][go] / pops["GT"].max(), c="0.6", lw=1)
        z = gtax[lab][:, 0]
        o = np.argsort(z)
        a.plot(z[o], pops[lab][o] / pops[lab].max(), ".-", color=col[lab], ms=3)
        a.set_title(lab, fontsize=9)
    for a in axes[-1]:
        a.set_xlabel("GT PC1 (arbitrary units)")
    for a in axes[:, 0]:
        a.set_ylabel("population / its max")
    fig.suptitle("Population (scaled) along the GT's first principal axis; grey = GT")
    fig.tight_layout()
    return fig


def eigen_maps(pcas: dict, box: int):
    """Fig. 2A: central z-section of each set's first principal direction (``box``³ voxels),
    red positive, blue negative, symmetric colour scale."""
    fig, panels, _ = plots.panel_grid(list(pcas), panel=(2.4, 2.4))
    for lab, a in panels.items():
        v = pcas[lab].V[:, 0].reshape(box, box, box).numpy()
        lim = np.abs(v).max()
        a.imshow(v[box // 2], cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
        a.set_title(lab, fontsize=9)
        a.set_xticks([]), a.set_yticks([])
    fig.suptitle("First eigen-map of each set (central z-section)")
    fig.tight_layout()
    return fig
