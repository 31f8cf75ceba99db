"""Chapter 9's figures: per-image AU-FSC by entry, mean FSC curves, AU-FSC along MD-PC1, the
latent embedding browser and the neighbourhood similarity. Entries that are submissions keep
their book-wide colour (:func:`helpers.report.plots.line_style`); the GT-made bounds are black
(the GT's own map) and grey (one average map)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers.report import plots, widgets

BOUNDS = {"GT map": {"color": "#000000", "linestyle": "-"}, "one average map": {"color": "#777777", "linestyle": "--"}}


def entry_style(name: str) -> dict:
    """Colour and line style of an entry: a submission's own (cryoDRGN's per-particle maps dotted in
    cryoDRGN's colour), the bounds black and grey."""
    if name in BOUNDS:
        return BOUNDS[name]
    base = name.split(" per particle")[0].split(" (")[0]
    style = dict(plots.line_style(base))
    if name != base:
        style["linestyle"] = ":" if "per particle" in name else "-."
    return style


def au_fsc_by_entry(per: pd.DataFrame, order):
    """Box plot of the per-image AU-FSC of each entry (one point per particle), best first
    (None when nothing was scored)."""
    if per.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 0.45 * len(order) + 1.2))
    data = [per.loc[per.entry == e, "au_fsc"].to_numpy() for e in order]
    box = ax.boxplot(data, vert=False, widths=0.6, showfliers=False, patch_artist=True)
    rng = np.random.default_rng(0)
    for i, (e, d) in enumerate(zip(order, data)):
        c = entry_style(e)["color"]
        box["boxes"][i].set(facecolor="none", edgecolor=c)
        ax.scatter(d, i + 1 + rng.uniform(-0.18, 0.18, len(d)), s=5, color=c, alpha=0.5)
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.invert_yaxis()
    ax.set_xlabel("per-image AU-FSC (area under |FSC| over 0–0.5 cycles/px; 0.5 = perfect)")
    ax.set_title("Per-image AU-FSC, one point per particle")
    fig.tight_layout()
    return fig


def mean_curves(curves: dict, names: dict, freq_px: np.ndarray, voxel_size: float, nyquist_A: dict | None = None):
    """Mean per-image FSC of each entry (band: ± 1 sd over particles) against spatial frequency
    (Å⁻¹). Shells where a map has no signal (NaN) count as 0 in the mean, as in the AU-FSC."""
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    f = np.asarray(freq_px)[1:] / voxel_size
    for key, name in names.items():
        c = np.nan_to_num(np.asarray(curves[key], float), nan=0.0)
        st = entry_style(name)
        m, s = c.mean(0), c.std(0)
        ax.plot(f, m, label=name, lw=1.8, **st)
        ax.fill_between(f, m - s, m + s, color=st["color"], alpha=0.12, lw=0)
    for lab, res in (nyquist_A or {}).items():
        plots.mark_nyquist(ax, res, color=entry_style(lab)["color"])
    ax.axhline(0.143, color="k", lw=0.6, ls=":")
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xlabel("spatial frequency (Å⁻¹)")
    ax.set_ylabel("per-image FSC")
    ax.set_ylim(-0.2, 1.05)
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.set_title("Mean per-image FSC (band: ± 1 sd over particles)")
    fig.tight_layout()
    return fig


def au_fsc_along_pc1(by_state: pd.DataFrame, order):
    """Mean AU-FSC (± sd over the particles of the bin) of each entry in bins of the particles'
    GT MD-PC1 coordinate (Å)."""
    if by_state.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for e in order:
        d = by_state[by_state.entry == e].sort_values("pc1_mid")
        st = entry_style(e)
        ax.errorbar(d.pc1_mid, d["mean"], yerr=d["std"], label=e, capsize=2, lw=1.5, marker="o", ms=3, **st)
    ax.set_xlabel("GT conformation: MD-PC1 of the particle's GT map (Å)")
    ax.set_ylabel("per-image AU-FSC")
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    ax.set_title("AU-FSC along the motion")
    fig.tight_layout()
    return fig


COLOUR_BY = {"GT conformation (MD-PC1, Å)": "conformation", "defocus (Å)": "defocus",
             "viewing direction: tilt (°)": "tilt"}


def latent_browser(latents: dict, conformation: np.ndarray, colour: dict):
    """A dropdown browser (static page: pre-rendered frames) of each latent embedding of
    ``latents`` {name: (n, d)} coloured by each variable of ``colour`` {title: (n,) values}. A 1-D
    latent is drawn against the GT conformation; a latent of ≥ 2 dimensions on its first two
    principal axes. With several latents each choice reads "<latent>: <colour>"."""
    def axes(name, z):
        z = np.asarray(z, float).reshape(len(z), -1)
        if z.shape[1] == 1:
            return conformation, z[:, 0], "GT conformation: MD-PC1 (Å)", f"{name} (latent units)"
        zc = z - z.mean(0)
        u = np.linalg.svd(zc, full_matrices=False)[2][:2]
        return zc @ u[0], zc @ u[1], f"{name}: PC1", f"{name}: PC2"

    views = [(name, axes(name, z), title, v) for name, z in latents.items() for title, v in colour.items()]

    def draw(i):
        name, (x, y, xl, yl), title, v = views[i]
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        sc = ax.scatter(x, y, c=v, s=6, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=title)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(f"{name}, coloured by {title.split(' (')[0]}")
        fig.tight_layout()
        return fig
    frames = widgets.render_frames(len(views), draw, tight=False)
    options = [t if len(latents) == 1 else f"{n}: {t}" for n, _, t, _ in views]
    if len(latents) == 1:
        return widgets.dropdown_browser(options, frames, description="colour by")
    box = widgets.dropdown_browser(options, frames, description="latent, colour")
    box.children[0].layout.width, box.children[0].style.description_width = "460px", "initial"
    return box


def neighbourhood(lat: pd.DataFrame):
    """Neighbourhood similarity (fraction of shared k nearest neighbours, ± standard error over
    interleaved subsets) of each latent with the GT conformation, against k; the dotted line is
    chance, k / (m − 1) for subsets of m particles."""
    d = lat[(lat.score == "neighbourhood_similarity") & (lat.reference == "conformation")]
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
    styles = {"GT conformation": ("#000000", "-"), "random": ("#777777", "--"), "defocus + noise": ("#777777", "-.")}
    for name, g in d.groupby("latent", sort=False):
        col, ls = styles.get(name, (entry_style(name.replace(" latent", ""))["color"], ":"))
        ax.errorbar(g.k, g.value, yerr=g["sem"], label=name, color=col, ls=ls, marker="o", ms=3, capsize=2)
    ch = d.drop_duplicates("k").sort_values("k")
    ax.plot(ch.k, ch.chance, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("neighbourhood size k (particles)")
    ax.set_ylabel("shared k-nearest neighbours (fraction)")
    ax.set_title("Neighbourhood similarity with the GT conformation")
    ax.legend(fontsize=9, frameon=False)
    fig.tight_layout()
    return fig
