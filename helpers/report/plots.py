"""Figures shared by the chapters: map slices and projections, colour conventions.

Submissions get one colour each, the same in every chapter (:func:`colors`, from Paul Tol's
colour-blind-safe "muted" and "vibrant" schemes: 14 distinct colours; the GT is black);
diverging maps use "RdBu_r" centred at 0; ranks and sequential values "cividis".
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from helpers.core import catalogue

PALETTE = "colorblind"
DPI = 90  # inline figures; the book's text column is 688 px wide at a 1280-px window (measured)
CONTENT_WIDTH_PX = 688
MIN_TEXT_PX = 10.0  # every label, tick and title at least this tall on the page (issue 34: ≥ 10 px)


def set_style() -> None:
    """The book's figure style (call once per notebook)."""
    sns.set_theme(context="notebook", style="ticks", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titlesize": "medium",
                         "xtick.labelsize": 9, "ytick.labelsize": 9, "legend.fontsize": 9})


# Paul Tol's muted scheme (9) + six of his vibrant colours: 15 colours that stay distinct for
# common colour-vision deficiencies; no grey (grey and black are the GT's)
SUBMISSION_COLOURS = ("#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677",
                      "#882255", "#AA4499", "#EE7733", "#0077BB", "#EE3377", "#CC3311", "#009988", "#33BBEE")
LINESTYLES = ("-", "--", ":", "-.")  # beyond 15 submissions the colours repeat with the next line style
GT_NAMES = ("GT", "GT ensemble")
_SEEN: list = []  # submissions in the order this kernel first drew them (the run's manifest order)


def line_style(label) -> dict:
    """Colour and line style of one submission, the same in every figure of the book: the i-th
    submission of the run (in the order of the first :func:`colors` call of the chapter, which
    every chapter makes with the manifest's full list) gets colour i mod 15 and line style
    i div 15, so no two submissions share both; the GT is black and solid."""
    if label in GT_NAMES:
        return {"color": "#000000", "linestyle": "-"}
    if label not in _SEEN:
        _SEEN.append(label)
    i = _SEEN.index(label)
    return {"color": SUBMISSION_COLOURS[i % len(SUBMISSION_COLOURS)],
            "linestyle": LINESTYLES[(i // len(SUBMISSION_COLOURS)) % len(LINESTYLES)]}


def shown_px(fig, points: float, dpi: float = DPI) -> float:
    """Height in page pixels of ``points``-pt text in ``fig`` rendered at ``dpi`` and shown in the
    book's text column (a figure wider than :data:`CONTENT_WIDTH_PX` is shrunk to fit)."""
    width_px = fig.get_size_inches()[0] * dpi
    return points * dpi / 72 * min(1.0, CONTENT_WIDTH_PX / width_px)


def legible(fig, dpi: float = DPI):
    """Raise every text of ``fig`` (titles, labels, tick labels, legends, annotations) that would
    show smaller than :data:`MIN_TEXT_PX` on the page to that size, then redo a tight layout
    if anything grew. Larger text is left alone. Every figure of the book passes here
    (:func:`helpers.report.page.setup` hooks it into the inline PNG output, and
    :func:`helpers.report.widgets.fig_to_png` calls it). Returns ``fig``."""
    from matplotlib.text import Text

    need = MIN_TEXT_PX / shown_px(fig, 1.0, dpi) - 1e-6  # points (9 pt at 80 dpi is 10 px: left alone)
    grew = False
    for ax in fig.axes:
        for axis, which in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            labels = [t for t in axis.get_ticklabels(which="both") if t.get_text()]
            if labels and min(t.get_fontsize() for t in labels) < need:
                ax.tick_params(axis=which, which="both", labelsize=need)
                grew = True
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < need:
            t.set_fontsize(need)
            grew = True
    if grew and fig.get_layout_engine() is None:
        import warnings

        with warnings.catch_warnings():  # a layout that cannot be tightened stays as it was
            warnings.simplefilter("ignore")
            fig.tight_layout()
    return fig


def colors(labels) -> dict:
    """{label: colour} (:func:`line_style`): pass every chapter's first call the submissions in
    the run's manifest order (``manifest.load_submissions``) and a submission has the same colour
    everywhere."""
    return {lab: line_style(lab)["color"] for lab in labels}


def _luminance(colour) -> float:
    """WCAG 2 relative luminance of a matplotlib colour."""
    from matplotlib.colors import to_rgb

    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def cell_css(colour) -> str:
    """CSS for a table cell filled with ``colour``: black or white text, whichever contrasts
    more (always ≥ 4.58 : 1, WCAG's 4.5 : 1 for body text)."""
    from matplotlib.colors import to_hex

    ink = "#000000" if _luminance(colour) > 0.1791 else "#ffffff"
    return f"background-color: {to_hex(colour)}; color: {ink}"


def gradient_css(col, cmap: str = "cividis") -> list:
    """Styler.apply function: each cell of the column ``col`` filled by its value on ``cmap``
    (min to max of the column; NaN cells unstyled), text by :func:`cell_css`. Replaces pandas'
    ``background_gradient``, whose light text (#f1f1f1) cannot reach 4.5 : 1 on mid tones."""
    v = col.astype(float)
    lo, hi = np.nanmin(v), np.nanmax(v)
    cm = plt.get_cmap(cmap)
    return ["" if x != x else cell_css(cm(0.5 if hi == lo else (x - lo) / (hi - lo))) for x in v]


def metric_axis(key: str, with_label: bool = False) -> str:
    """A figure axis for a metric from :mod:`helpers.core.catalogue`: its unit and direction,
    "Å; lower is better" (with ``with_label``: "resolution (Å; lower is better)")."""
    m = catalogue.METRICS[key]
    what = ("lower" if m.better == "low" else "higher") + " is better"
    what = f"{m.unit}; {what}" if m.unit else what
    return f"{m.label} ({what})" if with_label else what


def readable(frame):
    """A table for display: snake_case column and index names with spaces, so that a narrow
    column can wrap its header (the CSV files keep the names)."""
    out = frame.copy()
    out.columns = [str(c).replace("_", " ") for c in out.columns]
    if out.index.name:
        out.index.name = out.index.name.replace("_", " ")
    return out


def central_slices(vol: np.ndarray):
    """The three central sections (z, y, x) of a (N, N, N) map."""
    c = vol.shape[0] // 2
    return vol[c], vol[:, c], vol[:, :, c]


def show_map(vol: np.ndarray, voxel_size: float, title: str = "", axes=None, vmax=None):
    """Central z-section and the z-projection of a map, axes in Å."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(6, 3))
    n = vol.shape[0]
    ext = np.array([-(n // 2), n - n // 2]) * voxel_size
    extent = (ext[0], ext[1], ext[0], ext[1])
    sl = vol[n // 2]
    pr = vol.sum(0)
    axes[0].imshow(sl, cmap="gray", origin="lower", extent=extent, vmax=vmax)
    axes[0].set_title(f"{title} z-section".strip())
    axes[1].imshow(pr, cmap="gray", origin="lower", extent=extent)
    axes[1].set_title(f"{title} projection".strip())
    for a in axes:
        a.set_xlabel("x (Å)")
        a.set_ylabel("y (Å)")
    return axes


def panel_grid(labels, ncols: int = 3, panel=(3.0, 2.5), **subplot_kw):
    """One panel per label on a grid of ``ncols`` columns; unused panels hidden. Panels are
    narrowed (aspect kept) so that the figure fits the book's text column unshrunk.

    Returns (fig, {label: axis}, axes (rows, cols) array)."""
    n = len(labels)
    nr = int(np.ceil(n / ncols))
    w = min(panel[0], CONTENT_WIDTH_PX / DPI / ncols)
    h = panel[1] * w / panel[0]
    fig, axes = plt.subplots(nr, ncols, figsize=(w * ncols, h * nr), squeeze=False, **subplot_kw)
    for a in axes.flat[n:]:
        a.axis("off")
    return fig, dict(zip(labels, axes.flat)), axes


def nyquist_label(label: str, limited: bool) -> str:
    """Legend/table label of a curve or set whose reported resolution was raised to its own
    Nyquist (:mod:`helpers.kernels.nyquist`): ``"<label> (Nyquist-limited)"``; else ``label``."""
    return f"{label} (Nyquist-limited)" if limited else label


def mark_nyquist(ax, native_nyquist_A: float, color="k", axis: str = "frequency") -> None:
    """A dotted line at a submission's native Nyquist (Å) on an FSC plot whose x axis is the
    spatial frequency in 1/Å (``axis="frequency"``, the line at 1/Nyquist) or a resolution axis in
    Å (``axis="resolution"``); beyond it the submission's maps hold no information."""
    x = 1.0 / native_nyquist_A if axis == "frequency" else native_nyquist_A
    ax.axvline(x, color=color, ls=":", lw=1.2)


# ------------------------------------------------------------------ chapter 5: distributions
def emd_bars(rep):
    """Fig. 3C: mean EMD per submission (L2 cost), submitted and optimised populations, error
    bars the sd over replicates and window sizes. ``rep``: chapter 5's replicates table."""
    m = rep[rep.metric == "l2"].melt(id_vars=["label"], value_vars=["EMD_submitted", "EMD_opt"],
                                     var_name="populations", value_name="EMD")
    m["populations"] = m["populations"].map({"EMD_submitted": "submitted", "EMD_opt": "optimised"})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.barplot(data=m, y="label", x="EMD", hue="populations", errorbar="sd", ax=ax, palette=PALETTE)
    ax.set_xlabel("EMD (L2 per masked voxel that the GT mass travels)")
    ax.set_ylabel("")
    ax.set_title("EMD between GT and submission distributions")
    fig.tight_layout()
    return fig


def emd_heatmap(rep):
    """Mean EMD with submitted populations per submission (rows) and cost metric (columns),
    coloured relative to the largest of its column, annotated in the metric's units."""
    piv = rep.groupby(["label", "metric"])["EMD_submitted"].mean().unstack()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sns.heatmap(piv.div(piv.max(axis=0), axis=1), annot=piv.round(2).values, fmt="", cmap="rocket_r", ax=ax,
                cbar_kws={"label": "EMD (submitted) / largest in its column"})
    ax.set_xlabel("cost metric (EMD in its units)")
    ax.set_ylabel("")
    ax.set_title("EMD with submitted populations, per cost metric")
    fig.tight_layout()
    return fig


def optimised_populations(subs: dict, mats: dict, qopt: dict, pc1, metric: str = "l2"):
    """Fig. 3B: per submission, submitted and EMD-optimised populations (``qopt``
    ``<slug>__<metric>``) of each map against the MD-PC1 (Å) of its best GT match (``mats``:
    chapter 3's matrices, lowest cost = best)."""
    from helpers.io.mapset import slug

    fig, panels, axes = panel_grid(list(subs), panel=(3, 2.3), sharex=True)
    for lab, a in panels.items():
        where = pc1[np.argmin(mats[lab][metric], axis=0)]
        o = np.argsort(where)
        a.plot(where[o], subs[lab].populations[o], ".-", ms=3, label="submitted")
        a.plot(where[o], qopt[f"{slug(lab)}__{metric}"][o], ".-", ms=3, label="optimised (EMD)")
        a.set_title(lab, fontsize=9)
    axes.flat[0].legend(fontsize=9)
    for a in axes[-1]:
        a.set_xlabel("MD-PC1 of best GT match (Å)")
    for a in axes[:, 0]:
        a.set_ylabel("population (fraction)")
    fig.suptitle(f"Submitted vs optimised populations ({metric.upper()} cost)")
    fig.tight_layout()
    return fig


def n_volumes_study(study):
    """Fig. S5: EMD with submitted populations against the number of maps of the Averaged-GT
    mocks, one panel per cost scale (L2 per voxel; mean rank), error bars the sd over replicates."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for a, cs, unit in zip(axes, ("distance", "rank"), ("L2 per voxel", "mean rank")):
        sns.pointplot(data=study[study.cost_scale == cs], x="n_maps", y="EMD_submitted", errorbar="sd", ax=a)
        a.set_xlabel("number of maps in the Averaged-GT mock")
        a.set_ylabel(f"EMD submitted ({unit})")
        a.set_title(f"cost scale: {cs}", fontsize=10)
    fig.suptitle("EMD vs number of maps (same maps, two cost scales)")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ chapter 6: image metrics
def loglik_bars(summary, labels):
    """Fig. 3D: ensemble log-likelihood per image relative to the GT ensemble (nats, symlog axis:
    linear within ±0.1 nat), one bar per set in its colour (``labels``: the run's sets in order)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    d = summary["delta_per_image_vs_gt"].sort_values()
    ax.barh(d.index, d.values, color=[colors(list(labels))[k] for k in d.index])
    ax.axvline(0, c="k", lw=0.8)
    ax.set_xscale("symlog", linthresh=0.1)  # linear within ±0.1 nat, logarithmic beyond
    for y, v in enumerate(d.values):
        ax.text(v, y, f" {v:+.3f} ", va="center", ha="right" if v < 0 else "left", fontsize=9)
    ax.set_xlim(min(d.min() * 8, -1), 0.3)
    ax.set_xlabel("ensemble log-likelihood per image, relative to the GT ensemble (nats, symlog)")
    ax.set_title("Image likelihood (submitted populations)")
    fig.tight_layout()
    return fig


def best_cc_violins(res: dict):
    """Fig. 2C/2F: per set, the distribution over images of the best normalised
    cross-correlation over all maps and poses (``res``: chapter 6's search results)."""
    import pandas as pd

    long = pd.concat([pd.DataFrame({"set": lab, "best CC": r["best_cc"].max(1)}) for lab, r in res.items()])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.violinplot(data=long, y="set", x="best CC", ax=ax, color="0.85", inner="quartile", cut=0)
    ax.set_xlabel("best normalised cross-correlation (unitless)")
    ax.set_ylabel("")
    ax.set_title("Best cross-correlation of each particle image")
    fig.tight_layout()
    return fig


def power_z(power, n_images: int):
    """Paired z (mean Δ / standard error, GT ensemble − submission; unitless, symlog) of the
    log-likelihood and the best CC per submission, ±2 dashed (``power``: chapter 6's power table)."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    zt = power.z.unstack("metric").reindex(columns=["loglik", "best_cc"])
    y = np.arange(len(zt))
    for j, (metric, name) in enumerate((("loglik", "log-likelihood"), ("best_cc", "best CC"))):
        ax.barh(y + (j - 0.5) * 0.4, zt[metric].clip(-1e3, 1e3), height=0.4, label=name)
    for x in (-2, 2):
        ax.axvline(x, c="k", ls="--", lw=0.8)
    ax.set_yticks(y, zt.index)
    ax.set_xscale("symlog", linthresh=5)
    ax.set_xlabel("z = mean Δ / standard error (GT ensemble − submission; symlog, ±2 dashed)")
    ax.set_title(f"Does the GT ensemble beat each submission on {n_images} images?", fontsize=10)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def likelihood_populations(sets: dict, res: dict):
    """Fig. S6: per set, submitted and likelihood-optimised (``res[label]["w_opt"]``) populations
    (fraction) against the map index, maps in their submitted order."""
    fig, panels, axes = panel_grid(list(sets), panel=(3, 2.2))
    for lab, a in panels.items():
        a.plot(sets[lab].populations, ".-", ms=3, label="submitted")
        a.plot(res[lab]["w_opt"], ".-", ms=3, label="likelihood-optimised")
        a.set_title(lab, fontsize=9)
    for a in axes[-1]:
        a.set_xlabel("map index")
    for a in axes[:, 0]:
        a.set_ylabel("population (fraction)")
    axes.flat[0].legend(fontsize=9)
    fig.suptitle("Populations: submitted vs optimised on the images")
    fig.tight_layout()
    return fig
