"""Chapter 8's result sentences, written from its tables (the front page's is :mod:`helpers.report.headline`).

Each function takes the summary's tables (the leaderboard ``board`` sorted by mean rank, with
``mean_rank_lo`` / ``mean_rank_hi``; the per-metric information; the defect checks; the
calibration) and returns markdown. Two submissions are never ordered where their overall rank
intervals overlap, and every miss in a table is named in its sentence.
"""
from __future__ import annotations

import pandas as pd

from helpers.core import catalogue
from helpers.report.leaderboard import ends_text, overall_ties


def _name(m: str) -> str:
    """A metric's name in a sentence (:mod:`helpers.core.catalogue`; units go with values, not names)."""
    return catalogue.label(m, with_unit=False)


def _value(m: str, v: float) -> str:
    """A metric's value with its unit: "3.2 Å", "0.9 nat", "0.584"."""
    u = catalogue.unit(m)
    return f"{v:.3g}" + (f" {u}" if u else "")


def verdict(board: pd.DataFrame, families: pd.DataFrame, metric_info: pd.DataFrame, n_draws: int) -> str:
    """The leaderboard's verdict. families: :func:`helpers.report.leaderboard.board`'s family table
    (index = family; ``in_mean_rank``, ``reason``); metric_info: its metric table (index = metric;
    ``in_mean_rank``, ``separates``, ``underpowered``, ``n_images``, ``images_needed``)."""
    ends = ends_text(board)
    fam_in = list(families.index[families.in_mean_rank])
    fam_out = families[~families.in_mean_rank]
    left = metric_info[~metric_info.in_mean_rank.astype(bool)]
    weak = list(left.index[~left.separates.astype(bool)])
    under = [m for m in left.index if m not in weak and bool(left.loc[m, "underpowered"])]
    return (f"**Verdict.** {ends[0].upper() + ends[1:]}. The overall rank is the mean of {len(fam_in)} family ranks "
            f"({', '.join(fam_in)}), each the mean of its separating metrics' ranks; its interval is the 95 % range "
            f"over {n_draws} draws of every value within its error bar, and submissions whose intervals overlap "
            "are not ordered"
            + (f"; left out: the {', '.join(f'{f} family ({r})' for f, r in fam_out.reason.items())}"
               if len(fam_out) else "")
            + ". Per metric, ranks count a difference only beyond the metrics' error bars (2 σ; 0.1 % relative "
              "without one)"
            + (f"; left out of the mean rank because they separate fewer than a quarter of the pairs: "
               f"{', '.join(_name(m) for m in weak)}" if weak else "")
            + ("; left out as underpowered (fewer images scored than needed to order the submissions): "
               + ", ".join(f"{_name(m)} ({metric_info.loc[m, 'n_images']:.0f} images, "
                           f"{metric_info.loc[m, 'images_needed']:.0f} needed)" for m in under) if under else "")
            + ".")


def sanity(board: pd.DataFrame, controls, degraded, separated: float, distinct: int, methods=()) -> str:
    """The demo's sanity checks: which GT-derived ``controls`` share first place, how many
    ``degraded`` mocks rank below every control (and how many with intervals wholly behind the
    controls'), how much resolution separates (``separated``: fraction of pairs, ``distinct``:
    distinct ranks), and where each real method (``methods``) is placed."""
    ties = overall_ties(board)
    winner = board.index[0]
    lead = [winner] + ties[winner]
    ctrl = [k for k in controls if k in board.index]
    deg = [k for k in degraded if k in board.index]
    worst = board.loc[ctrl, "mean_rank"].max() if ctrl else float("inf")
    last_hi = board.loc[ctrl, "mean_rank_hi"].max() if ctrl else float("inf")
    below = [k for k in deg if board.loc[k, "mean_rank"] > worst]
    apart = sum(bool(board.loc[k, "mean_rank_lo"] > last_hi) for k in deg)
    firsts = [k for k in lead if k in ctrl]
    says = [f"{' and '.join(firsts) or 'no GT-derived control'} " + ("holds" if len(lead) == 1 else "share")
            + " first place" + (f" (with {', '.join(k for k in lead if k not in ctrl)})" if set(lead) - set(ctrl) else ""),
            f"{len(below)} of {len(deg)} degraded mocks rank below every noise-free control ({apart} with intervals "
            "wholly behind theirs)" + ("" if len(below) == len(deg) else
                                       f"; not below: {', '.join(k for k in deg if k not in below)}"),
            f"resolution separates {separated:.0%} of the pairs ({distinct} distinct ranks)"]
    says += [f"{k} (a real method) is scored, place {board.index.get_loc(k) + 1}" for k in methods if k in board.index]
    return "**What the demo shows.** " + "; ".join(says) + "."


def _versus(m: pd.DataFrame, other: str) -> list[str]:
    """'better than X on …', 'worse than X on …', 'within the error bars on …' from a placement's
    metric table (value, compare_value, vs_compare)."""
    out = []
    for word in ("better", "worse"):
        ms = m.index[m.vs_compare == word]
        if len(ms):
            out.append(f"{word} than {other} on " + ", ".join(
                f"{_name(k)} ({_value(k, m.loc[k, 'value'])} vs {_value(k, m.loc[k, 'compare_value'])})" for k in ms))
    tied = m.index[m.vs_compare == "tied"]
    if len(tied):
        out.append(f"within the error bars of {other} on " + ", ".join(_name(k) for k in tied))
    return out


def method_placement(label: str, method: str, board: pd.DataFrame, place: dict) -> str:
    """Where a real method's entry lands: its place by mean rank, the submissions its interval
    overlaps, and those it is ahead of / behind (intervals apart). place: :func:`helpers.report.leaderboard.placement`."""
    b = board.loc[label]
    return (f"{label} (" + (f"{method}, " if method != label else "") + "a real method's output) is "
            f"{place['position']} of {place['n']} by mean rank ({b.mean_rank:.2f}, interval {b.mean_rank_lo:.2f}–"
            f"{b.mean_rank_hi:.2f})"
            + (f"; its interval overlaps those of {', '.join(place['tied'])}, so it is not ordered against them"
               if place["tied"] else "")
            + ("; it ranks " + " and ".join(([f"ahead of {', '.join(place['ahead_of'])}"] if place["ahead_of"] else [])
                                            + ([f"behind {', '.join(place['behind'])}"] if place["behind"] else []))
               + " (intervals apart)" if place["ahead_of"] or place["behind"] else ""))


def method_nyquist(label: str, run: dict, board: pd.DataFrame, vol: pd.DataFrame) -> str:
    """What a method's training box does to its resolution. run: its training record (``box``,
    ``voxel_size_A``; empty: nothing to say); board: the leaderboard (``resolution_A``,
    ``nyquist_limited``); vol: chapter 3's summary (``best_res_median_raw_A``, the median crossing
    as measured)."""
    if not run:
        return ""
    nyq = 2 * run["voxel_size_A"]
    limited = bool(board.get("nyquist_limited", pd.Series(False, index=board.index)).fillna(False).get(label, False))
    res = board.loc[label, "resolution_A"]
    return (f"It {'was trained' if 'epochs' in run else 'ran'} on images downsampled to {run['box']} px ({run['voxel_size_A']:.2f} Å/px), so its maps "
            f"hold nothing finer than the Nyquist limit {nyq:.2f} Å: "
            + (f"its FSC crossed at {vol.loc[label, 'best_res_median_raw_A']:.2f} Å (median of its maps), finer than "
               "that limit, so its resolution is reported as Nyquist-limited at the limit — the budget, not the "
               "method, caps it." if limited else
               f"its resolution of {res:.2f} Å is " + ("at that limit — the budget, not the method, caps it."
                                                        if res < 1.1 * nyq else "above that limit.")))


def _how_run(run: dict) -> str:
    """"trained on" for a network (a record with ``epochs``), "ran on" otherwise."""
    return "trained on" if "epochs" in run else "ran on"


def _run_cost(run: dict) -> str:
    """What a real method's run cost on this machine, from its record: cryoDRGN's epochs and
    training time, RECOVAR's latent dimension, k-means maps and the times of its two commands."""
    if "epochs" in run:
        return f"{run['epochs']} epochs, {run['train_s']:.0f} s on this machine"
    parts = [f"a {run['zdim']}-D latent"] if "zdim" in run else []
    parts += [f"{run['n_clusters']} k-means maps"] if "n_clusters" in run else []
    parts += [f"`{k[:-2]}` {run[k] / 60:.0f} min" for k in ("pipeline_s", "analyze_s") if run.get(k)]
    return ", ".join(parts) + (" on this machine" if any(run.get(k) for k in ("pipeline_s", "analyze_s")) else "")


def like_with_like(label: str, budgets: dict, vs_matched: pd.DataFrame | None, matched: str | None,
                   vs_base: pd.DataFrame | None, base: str | None, run: dict | None = None,
                   images: dict | None = None) -> str:
    """The fair comparison of a real method with the ideal reconstructions.

    budgets: {label: dict(n_images, box[, how])} for the method, the matched control and the base;
    vs_matched / vs_base: the ``metrics`` table of :func:`helpers.report.leaderboard.placement` against
    each (None: not on the board); run: the method's training record (``epochs``, ``train_s``);
    images: dict(n, stack, heldout: bool) — the particle images the image metrics scored."""
    def budget(k):
        b = budgets.get(k, {})
        return f"{b['n_images']:,} images at {b['box']} px" if "n_images" in b and "box" in b else "an unknown budget"

    txt = [f"**Like with like.** {label} {_how_run(run)} {budget(label)} ({_run_cost(run)}) with the true poses, and "
           "had to find each image's state itself" if run else
           f"**Like with like.** {label} has no training record here (its images, box and poses are not known)"]
    if matched and vs_matched is not None:
        txt.append(f"*{matched}* had exactly those images at that box, the true poses and each image's true state, "
                   "and reconstructed one map per state group: the ideal result of that budget")
        said = _versus(vs_matched, matched)
        txt.append(f"against it, {label} is " + "; ".join(said) if said else f"no metric compares {label} with it")
        worse = vs_matched.index[vs_matched.vs_compare == "worse"]
        txt.append(f"what {label} gets wrong beyond its budget: " + (", ".join(_name(k) for k in worse) if len(worse)
                                                                     else "nothing the error bars resolve"))
    else:
        txt.append("no control with its budget is on the board, so its data and its algorithm cannot be told apart")
    if base and vs_base is not None:
        said = _versus(vs_base, base)
        txt.append(f"*{base}* had {budget(base)}: against it, {label} is " + "; ".join(said) if said else
                   f"*{base}* had {budget(base)}")
    if images:
        txt.append(f"the image metrics scored {images['n']} images of "
                   + (f"a held-out stack of {images['stack']} that no map was made from and no method trained on"
                      if images.get("heldout") else
                      f"the training stack of {images['stack']}, images {label} trained on (its image scores are "
                      "optimistic)"))
    return "; ".join(txt) + "."


def defects(checks: pd.DataFrame, board: pd.DataFrame, controls) -> str:
    """Does each degraded mock's metric family catch it (checks: :func:`helpers.report.leaderboard.defect_checks`;
    rows with metric "all" are preprocessing defects that must be undone), and where the
    noise-free controls rank on resolution."""
    aimed = checks[checks.metric != "all"]
    fam = aimed.groupby("mock").verdict.apply(lambda v: (v == "caught").any())
    missed = aimed[aimed.verdict != "caught"]
    rescued = [r for r in missed.itertuples() if fam.get(r.mock, False)]
    lost = [r for r in missed.itertuples() if not fam.get(r.mock, False)]
    und = checks[checks.metric == "all"]
    top = {k: board.loc[k, "rank_resolution_A"] for k in controls if k in board.index}
    return (f"**What the demo shows.** {int(fam.sum())} of {len(fam)} degraded mocks are caught by their family"
            + (f" ({', '.join(f'{r.mock}: {_name(r.metric)} {r.verdict}' for r in rescued)} — another metric of the "
               "same family catches them)" if rescued else "")
            + (f"; not caught: {', '.join(f'{r.mock} ({_name(r.metric)} {r.verdict})' for r in lost)}" if lost else "")
            + ". "
            + ("Preprocessing: " + "; ".join(f"{r.mock} {r.verdict}" for r in und.itertuples()) + ". " if len(und) else "")
            + ("The noise-free controls rank " + ", ".join(f"{k} {v:g}" for k, v in top.items())
               + " on resolution." if top else ""))


def calibration(cal: pd.DataFrame, mis: pd.DataFrame, metrics) -> str:
    """How well each GT-free image score agrees with the GT-based ranking. cal: index = metric,
    columns rho, lo, hi (95 % bootstrap interval), n, misordered, pairs; mis: index = metric,
    columns gt_better, gt_worse, significant (one row per misordered pair)."""
    def said(m):
        c = cal.loc[m]
        ms = mis.loc[[m]] if m in mis.index else mis.iloc[:0]
        sig = ms[ms.significant.astype(bool)]
        how = ("agreement beyond chance" if c.lo > 0 else
               "an anti-correlation, the score ordering the submissions against the GT" if c.hi < 0 else
               "no agreement established, the interval contains 0")
        t = (f"{_name(m)} has Spearman ρ = {c.rho:.2f} with the GT-based ranking of the {int(c.n)} submissions "
             f"(95 % bootstrap interval {c.lo:.2f} to {c.hi:.2f}; {how}) and orders {int(c.misordered)} of the "
             f"{int(c.pairs)} pairs opposite to it")
        return t + (f"; {len(sig)} of them significantly on both sides, the GT-free score putting "
                    + ", ".join(f"{b} above {a}" for a, b in zip(sig.gt_better, sig.gt_worse))
                    if len(sig) else "; none of them significantly on both sides")

    return "**What the demo shows.** " + ". ".join(said(m)[0].upper() + said(m)[1:] for m in metrics) + "."
