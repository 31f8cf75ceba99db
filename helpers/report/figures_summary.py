"""Chapter 8's figures, styled tables and browsers (``notebooks/08_summary.py``), drawn from the
tables of :mod:`helpers.pipeline.chapters.summary` and :mod:`helpers.report.leaderboard`. Metric
axes carry the catalogue's unit and direction (:func:`helpers.report.plots.metric_axis`)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import Markdown

from helpers.report import leaderboard, plots, widgets
from helpers.report import story_summary as story

BAR_METRICS = ("resolution_A", "pcv_gt_captured", "emd_submitted", "emd_optimised", "kl_submitted", "loglik_per_image")
TIED = "tied with (intervals overlap)"


def family_table(board: pd.DataFrame, families: pd.DataFrame):
    """The leaderboard by family (Styler): mean rank, its interval, each family's rank (†: left out
    of the mean rank), unranked metrics (only when a submission has any), tied submissions."""
    fam_in = list(families.index[families.in_mean_rank])
    fam_cols = [c for c in board if c.startswith("family_rank_")]
    show = pd.DataFrame({
        "mean rank": board["mean_rank"],
        "interval": [f"{a:.2f}–{b:.2f}" for a, b in zip(board.mean_rank_lo, board.mean_rank_hi)],
        **{c[12:] + ("" if c[12:] in fam_in else " †"): board[c] for c in fam_cols},
        "unranked": board["unranked"], TIED: board["tied_with"].str.replace("; ", ", ")}, index=board.index)
    if not board["unranked"].fillna("").astype(bool).any():
        show = show.drop(columns="unranked")  # every submission has every metric
    return show.style.apply(plots.gradient_css, subset=[c for c in show if c not in ("interval", "unranked", TIED)]) \
        .format(precision=2, na_rep="—").set_properties(subset=[TIED], **{"text-align": "left"})


def rank_table(board: pd.DataFrame, ranks: pd.DataFrame, better: dict, metric_info: pd.DataFrame):
    """Every metric's value coloured by its rank (dark = best; † = left out of the mean rank; ‡ =
    Nyquist-limited resolution). Returns (Styler, the ‡ note in Markdown or None)."""
    left_out = [m for m in better if not metric_info.loc[m, "in_mean_rank"]]
    shown = {m: leaderboard.name(m) + (" †" if m in left_out else "") for m in ["mean_rank"] + list(better)}
    show = board[list(shown)].rename(columns=shown)
    back = {v: k for k, v in shown.items()}
    pal = sns.color_palette("cividis", len(board)).as_hex()  # colour-blind safe; dark = rank 1

    def by_rank(col):
        r = ranks.loc[col.index, back[col.name]]
        return ["" if np.isnan(k) else plots.cell_css(pal[int(k) - 1]) for k in r]

    limited = board.index[board.get("nyquist_limited", pd.Series(False, index=board.index)).fillna(False).astype(bool)]
    res_col = shown["resolution_A"]
    show[res_col] = [f"{v:.2f}" + (" ‡" if k in limited else "") if v == v else "—" for k, v in show[res_col].items()]
    note = None
    if len(limited):  # a resolution at a submission's own Nyquist: its grid, not its maps, sets the value
        note = ("‡ Resolution reported as *Nyquist-limited*: its FSC crossed finer than twice the voxel size "
                "the maps were made at, which resampling cannot improve; the value shown is that limit ("
                + ", ".join(f"{k}: {board.loc[k, 'native_nyquist_A']:.2f} Å" for k in limited) + ").")
    styled = show.style.apply(by_rank, subset=[c for c in show.columns if c != "mean rank"]).apply(
        plots.gradient_css, subset=["mean rank"]).format(precision=2, na_rep="—").set_table_styles(
        [{"selector": "th.row_heading", "props": "white-space: normal; max-width: 7.5em;"},  # long labels wrap
         {"selector": "th.col_heading", "props": "white-space: normal; max-width: 6.5em;"}])
    return styled, note


def metric_bars(board: pd.DataFrame, labels, metrics=BAR_METRICS):
    """One horizontal bar panel per metric: each submission's value with its error bar (x axis:
    the metric's unit and direction). Returns the figure."""
    fig, panels, _ = plots.panel_grid(list(metrics), ncols=3, panel=(4, 3.6))
    col = plots.colors(labels)
    for m, a in panels.items():
        err = board.get(f"{m}_err")
        a.barh(board.index, board[m], xerr=None if err is None else err, color=[col[k] for k in board.index])
        a.set_title(leaderboard.name(m), fontsize=10)
        a.set_xlabel(plots.metric_axis(m), fontsize=9)
        a.tick_params(labelsize=9)
    fig.tight_layout()
    return fig


def method_sections(board: pd.DataFrame, subs: dict, methods, better: dict, ctx: dict, vol: pd.DataFrame) -> list:
    """Per real method's entry: its values and ranks against the matched control and the
    Reconstructed mock (Styler, verdict beyond both error bars) and the "What the demo shows"
    text (Markdown). ``ctx``: :func:`helpers.pipeline.chapters.summary.method_context`. Returns
    the items to display, in order."""
    matched_lab = ctx["matched"] if ctx["matched"] in board.index else None
    base = leaderboard.DEMO_BASE if leaderboard.DEMO_BASE in board.index else None
    items = []
    for lab in methods:
        run = ctx["runs"][lab]
        vs = {k: leaderboard.placement(board, lab, better, compare=k)["metrics"] for k in (matched_lab, base) if k}
        verdict_cols = {"compare_value": "value", "vs_compare": f"{lab} is"}
        if vs:
            tab = pd.concat({lab: vs[next(iter(vs))][["value", "rank"]],
                             **{k: v[["compare_value", "vs_compare"]].rename(columns=verdict_cols)
                                for k, v in vs.items()}}, axis=1)
            items.append(tab.rename(index=leaderboard.name).rename_axis("metric").style.format(
                "{:.3g}", subset=[c for c in tab.columns if c[1] in ("value", "rank")], na_rep="")
                .set_caption(f"{lab} against the ideal reconstructions (verdict: beyond both error bars)"))
        pl = leaderboard.placement(board, lab, better)
        items.append(Markdown("**What the demo shows.** "
                              + story.method_placement(lab, subs[lab].provenance["method"], board, pl)
                              + ". " + story.method_nyquist(lab, run, board, vol) + "\n\n"
                              + story.like_with_like(lab, ctx["budgets"], vs.get(matched_lab), matched_lab,
                                                     vs.get(base), base, run, ctx["images"])))
    return items


def rank_heatmap(rc: pd.DataFrame):
    """Heatmap of the Spearman correlation between the metrics' rankings (−1 to 1). Returns the figure."""
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(rc.rename(index=leaderboard.name, columns=leaderboard.name), annot=True, fmt=".2f", cmap="vlag",
                vmin=-1, vmax=1, ax=ax, annot_kws={"fontsize": 9}, cbar_kws={"label": "Spearman rank correlation"})
    ax.set_title("Agreement between metric rankings")
    fig.tight_layout()
    return fig


def calibration_scatter(gt_rank: pd.Series, board: pd.DataFrame, errors: pd.DataFrame, cal: pd.DataFrame):
    """One panel per calibrated image metric: its value (± error bar; y axis with unit) against
    the GT-based family rank, each submission labelled, ρ and its interval in the title."""
    metrics = list(cal.index)
    labs = list(gt_rank.index)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    for a, m in zip(axes[0], metrics):
        a.errorbar(gt_rank, board.loc[labs, m], yerr=errors.loc[labs, m], fmt="o", ms=4, color="0.3", lw=1)
        for lab in labs:
            a.annotate(lab, (gt_rank[lab], board.loc[lab, m]), fontsize=7, xytext=(3, 2), textcoords="offset points")
        a.set_xlabel("GT-based family rank (1 = best)")
        a.set_ylabel(plots.metric_axis(m, with_label=True))
        a.set_title(f"ρ = {cal.loc[m, 'rho']:.2f} [{cal.loc[m, 'lo']:.2f}, {cal.loc[m, 'hi']:.2f}]", fontsize=10)
    fig.tight_layout()
    return fig


def map_browser(subs: dict, labels, n_browse: int):
    """Pick a submission, then move along ``n_browse`` evenly spaced maps of it (central
    z-section and z-projection, axes in Å)."""
    def frames(s):
        idx = np.linspace(0, s.n_maps - 1, min(n_browse, s.n_maps)).astype(int)
        return widgets.map_frames(s.maps, s.voxel_size, idx, lambda k: f"{s.label}: map {idx[k] + 1}/{s.n_maps}, "
                                  f"population {s.populations[idx[k]]:.3f}", figsize=(4.4, 2.3), small=True)

    return widgets.nested_browser(labels, [frames(subs[lab]) for lab in labels])


def profile_browser(bins, gt_hist, hists: dict, labels):
    """Pick a submission: its population per MD-PC1 bin (Å) against the GT's
    (:func:`helpers.pipeline.chapters.summary.population_profiles`)."""
    col = plots.colors(labels)

    def profile(lab):
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.stairs(gt_hist, bins, color="0.5", fill=True, alpha=0.4, label="GT")
        ax.stairs(hists[lab], bins, color=col[lab], lw=2, label=lab)
        ax.set_xlabel("MD-PC1 (Å)")
        ax.set_ylabel("population per bin")
        ax.legend(fontsize=9)
        ax.set_title(f"{lab}: population along the motion", fontsize=9)
        return widgets.fig_to_png(fig, dpi=80)

    return widgets.dropdown_browser(labels, [profile(lab) for lab in labels], "submission")
