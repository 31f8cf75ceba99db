"""Chapter 7's figures (``notebooks/07_robustness.py``): the verdict matrix, the response curves of
one metric and the particle images the likelihood needs. Each takes the tables of
:mod:`helpers.pipeline.chapters.robustness_study` and returns a matplotlib figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from helpers.core import catalogue
from helpers.pipeline.robustness import DEGRADATIONS
from helpers.report import widgets

VERDICT_COLOURS = {"detects": "#117733", "saturates": "#44AA99", "wrong way": "#EE7733", "blind": "#BBBBBB",
                   "underpowered": "#DDCC77", "invariant": "#88CCEE", "not invariant": "#CC3311",
                   "not measured": "#FFFFFF"}


def _row_label(d: str) -> str:
    return f"{DEGRADATIONS[d].title} ({DEGRADATIONS[d].unit})"


def verdict_matrix(mat, thr, names, metrics):
    """Degradation (rows, with the level's unit) × metric (columns, label with its unit): colour the
    verdict, number the threshold (in the row's unit) where a metric detects. ``mat``, ``thr``:
    :func:`helpers.pipeline.chapters.robustness_study.verdict_grid`."""
    codes = {v: i for i, v in enumerate(VERDICT_COLOURS)}
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(names) + 2.2))
    ax.imshow(mat.replace(codes).astype(float).to_numpy(), cmap=ListedColormap(list(VERDICT_COLOURS.values())),
              vmin=-0.5, vmax=len(codes) - 0.5, aspect="auto")
    for i, d in enumerate(names):
        for j, m in enumerate(metrics):
            t = thr.loc[d, m]
            if t == t and mat.loc[d, m] in ("detects", "saturates", "wrong way"):
                ax.text(j, i, f"{t:g}", ha="center", va="center", fontsize=9,
                        color="white" if mat.loc[d, m] == "detects" else "black")
    ax.set_xticks(range(len(metrics)), [catalogue.label(m) for m in metrics], rotation=45, ha="right")
    ax.set_yticks(range(len(names)), [_row_label(d) for d in names])
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="0.5") for c in VERDICT_COLOURS.values()]
    ax.legend(handles, list(VERDICT_COLOURS), ncol=4, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.38))
    ax.set_title("Verdict per degradation and metric (number: detection threshold, in the row's unit)")
    fig.tight_layout()
    return fig


def response_curves(levels_tested, metric: str, names):
    """One panel per degradation of ``names``: the test statistic of each level against the base
    (``levels.csv``'s ``stat``: change / its standard error, dimensionless), signed so that worse is
    up, levels (in the degradation's unit) from least to most severe; grey bars ±``crit``, filled
    markers the detected levels."""
    lt = levels_tested[levels_tested.metric == metric]
    sign = 1 if catalogue.better(metric) == "low" else -1
    ncol = 4
    nrow = (len(names) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(8.5, 2.1 * nrow), sharey=True, squeeze=False)  # 680 px at 80 dpi
    for a, d in zip(axes.flat, names):
        s_ = lt[lt.degradation == d].sort_values("severity_rank")
        x = np.arange(len(s_))
        z = np.clip(sign * s_.stat.to_numpy(float), -1e4, 1e4)   # a change with no spread: off the scale
        a.bar(x, 2 * s_.crit, bottom=-s_.crit, width=0.5, color="0.85", zorder=0)
        a.plot(x, z, "-", color="#332288", lw=1, zorder=1)
        det = s_.detected.to_numpy(bool)
        a.plot(x[det], z[det], "o", ms=5, color="#332288", zorder=2)
        a.plot(x[~det], z[~det], "o", ms=5, mfc="white", mec="#332288", zorder=2)
        a.set_yscale("symlog", linthresh=5)
        a.set_yticks([-1e4, -100, 0, 100, 1e4], ["≤−10⁴", "−10²", "0", "10²", "≥10⁴"])
        a.set_ylim(-3e4, 3e4)
        a.set_xticks(x, [DEGRADATIONS[d].format(v) if DEGRADATIONS[d].unit in ("flipped", "shuffled")
                         else f"{v:g}" for v in s_.level], fontsize=9)
        a.set_xlim(-0.5, max(len(s_) - 0.5, 0.5))
        a.set_title(_row_label(d), fontsize=9)
        a.tick_params(axis="y", labelsize=9)
    for a in axes.flat[len(names):]:
        a.set_visible(False)
    for a in axes[:, 0]:
        a.set_ylabel("change / its std. error\n(worse ↑)", fontsize=9)
    fig.suptitle(f"{catalogue.label(metric)}: paired test of each level against the base "
                 "(grey: ±Holm critical value; filled: detected)", fontsize=10)
    fig.tight_layout()
    return fig


def response_browser(levels_tested, metrics, names):
    """A dropdown over ``metrics``: each page is :func:`response_curves` for that metric (frames
    drawn once each, laid out by ``tight_layout``: no second draw for a bounding box)."""
    return widgets.dropdown_browser([catalogue.label(m) for m in metrics],
                                    widgets.render_frames(len(metrics), lambda i: response_curves(levels_tested, metrics[i], names),
                                                          tight=False), description="metric")


def images_needed(worst, n_run: int):
    """Horizontal bars: particle images needed to see the mean log-likelihood loss (nats per
    image) at 2 standard errors, per degradation at its most severe level (``worst``:
    :func:`helpers.pipeline.chapters.robustness_study.worst_levels`); no bar where the likelihood
    prefers the degraded set. Dashed: the ``n_run`` images of this run."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    loss = worst.mean_loss_per_image > 0
    yl = [f"{DEGRADATIONS[d].title} ({DEGRADATIONS[d].format(lv)})" for d, lv in zip(worst.index, worst.level)]
    ax.barh(yl, np.where(loss, worst.images_needed, np.nan), color="#44AA99")
    ax.axvline(n_run, color="k", ls="--", lw=1, label=f"{n_run} images in this run")
    ax.legend(fontsize=9, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("particle images needed to see the loss at 2 standard errors (images)")
    ax.tick_params(labelsize=9)
    ax.invert_yaxis()
    ax.set_title("How many images the likelihood needs (most severe level)", fontsize=10)
    fig.tight_layout()
    return fig
