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


def set_style() -> None:
    """The book's figure style (call once per notebook)."""
    sns.set_theme(context="notebook", style="ticks", palette=PALETTE)
    plt.rcParams.update({"figure.dpi": 90, "savefig.dpi": 90, "axes.titlesize": "medium",
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


def colors(labels) -> dict:
    """{label: colour} (:func:`line_style`): pass every chapter's first call the submissions in
    the run's manifest order (``manifest.load_submissions``) and a submission has the same colour
    everywhere."""
    return {lab: line_style(lab)["color"] for lab in labels}


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


def panel_grid(labels, ncols: int = 4, panel=(3.0, 2.5), **subplot_kw):
    """One panel per label on a grid of ``ncols`` columns; unused panels hidden.

    Returns (fig, {label: axis}, axes (rows, cols) array)."""
    n = len(labels)
    nr = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nr, ncols, figsize=(panel[0] * ncols, panel[1] * nr), squeeze=False, **subplot_kw)
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
