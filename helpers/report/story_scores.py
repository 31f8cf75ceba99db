"""The book's result sentences for chapters 5 and 7, written from each chapter's tables: the
distribution metrics of the demo's mocks and the robustness verdicts. As in
:mod:`helpers.report.story`, a sentence asserts nothing the tables do not hold: "lowest", "caught" or
"like Reconstructed" are printed only where the numbers, at the precision shown, bear them out,
and a defect a metric does not separate from the base is named as missed.
"""
from __future__ import annotations

import pandas as pd

from helpers.core import catalogue
from helpers.pipeline.robustness import DEGRADATIONS
from helpers.report.story import BASE, and_list, controls_place, what

DETECTED = ("detects", "saturates")  # the verdicts that see a defect (helpers.kernels.verdicts)


def _name(m: str) -> str:
    """A metric's name in a sentence (:mod:`helpers.core.catalogue`; units go with values, not names)."""
    return catalogue.label(m, with_unit=False)


def _worse(x: float, ref: float, nd: int) -> bool:
    """x is higher (worse, for a cost) than ref at ``nd`` decimals."""
    return round(float(x), nd) > round(float(ref), nd)


# ---------------------------------------------------------------- chapter 5


def distribution(l2m: pd.DataFrame, n_maps: dict, base: str = BASE) -> str:
    """Chapter 5. l2m: ``distribution/summary.csv`` rows of the L2 cost (index = label; columns
    EMD_submitted_mean, EMD_opt_mean (L2 per masked voxel), KL_pq_submitted_mean (nats),
    max_q_opt_mean (0–1: the largest share of the optimised mass on one map)); n_maps: {label:
    number of submitted maps}."""
    sub, opt, kl = l2m.EMD_submitted_mean.astype(float), l2m.EMD_opt_mean.astype(float), l2m.KL_pq_submitted_mean
    txt = ["**What the demo shows** (L2 cost per masked voxel, mean over replicates and window sizes; "
           "a submission with the GT's own maps and populations scores 0)."]
    ctrl, rank, lower = controls_place(sub, high_first=False, nd=3) or ([], "", [])
    if ctrl:
        vals = ", ".join(f"{k} {sub[k]:.3f}" for k in ctrl)
        txt.append(f"The GT-derived controls score {vals} (EMD with their populations), ranking {rank} of {len(sub)}: "
                   f"{and_list(lower)} {'scores' if len(lower) == 1 else 'score'} lower." if lower else
                   f"The GT-derived controls score lowest: {vals} (EMD with their populations).")
    if base in l2m.index:
        not_above = [k for k in ctrl if not _worse(sub[base], sub[k], 3)]
        txt.append(f"{base} (maps from {n_maps[base]} noisy reconstructions) scores {sub[base]:.3f}"
                   + (": its maps and populations are farther from the GT's than the noise-free controls'."
                      if ctrl and not not_above else
                      f", not above {and_list(not_above)}." if not_above else "."))
        for bad in ("Bimodal", "Middle mode"):
            if bad in l2m.index:
                emd_sees, kl_sees = _worse(sub[bad], sub[base], 3), _worse(kl[bad], kl[base], 2)
                same_opt = round(opt[bad], 3) == round(opt[base], 3)
                txt.append(f"{bad}, the same maps with wrong populations, scores {sub[bad]:.3f} with its populations, "
                           f"{'above' if emd_sees else 'not above'} {base}'s {sub[base]:.3f} (KL {kl[bad]:.2f}, "
                           f"{'above' if kl_sees else 'not above'} {kl[base]:.2f}), and {opt[bad]:.3f} optimised"
                           + (f", like {base}: the optimised EMD sees only the maps." if same_opt else
                              f", against {base}'s {opt[base]:.3f}.")
                           + ("" if emd_sees or kl_sees else
                              f" Neither the EMD nor the KL with its populations separates it from {base}."))
        if "Missing open" in l2m.index:
            caught_opt, caught_sub = _worse(opt["Missing open"], opt[base], 3), _worse(sub["Missing open"], sub[base], 3)
            both = f"({opt['Missing open']:.3f} against {opt[base]:.3f})"
            txt.append(f"Missing open ({what('Missing open')}) is "
                       + (f"caught by the optimised EMD{' too' if caught_sub else ''} {both}: no choice of populations "
                          "can move GT mass onto maps that do not exist." if caught_opt else
                          f"not separated from {base} by the optimised EMD {both}.")
                       + ("" if caught_sub and caught_opt else
                          f" With its populations it scores {sub['Missing open']:.3f} against {sub[base]:.3f}: "
                          + ("caught there." if caught_sub else "not separated either." if not caught_opt
                             else "not separated.")))
    hub = l2m.max_q_opt_mean.astype(float).sort_values(ascending=False)
    if len(hub):
        also = ", ".join(f"{k} {hub[k]:.0%}" for k in (base, "Averaged GT") if k in hub.index and k != hub.index[0])
        txt.append(f"**Hub maps.** The optimised populations put up to {hub.iloc[0]:.0%} of the mass on one map "
                   f"({hub.index[0]}" + (f"; {also}" if also else "") + "): the optimised EMD gives each GT window to "
                   "its cheapest map, so a map that is the cheapest for many windows takes all their mass.")
    return " ".join(txt)


# ---------------------------------------------------------------- chapter 7


def metric_table(summary: pd.DataFrame, metrics) -> pd.DataFrame:
    """Chapter 7's per-metric table. summary: ``robustness/summary.csv`` (degradation, metric,
    verdict; "not measured" rows are ignored); metrics: the metric keys shown, in order. One row
    per metric: its name, how many defects it detects, and the defects it is blind to,
    underpowered for, wrong way on, not invariant to ("—": none); most detections first."""
    S = summary[summary.verdict != "not measured"]
    rows = []
    for m in metrics:
        s_ = S[S.metric == m]
        rows.append({"metric": _name(m), "detects": int(s_.verdict.isin(DETECTED).sum()),
                     **{col: ", ".join(DEGRADATIONS[d].title for d in s_[s_.verdict == v].degradation) or "—"
                        for col, v in (("blind to", "blind"), ("underpowered for", "underpowered"),
                                       ("wrong way", "wrong way"), ("not invariant to", "not invariant"))}})
    return pd.DataFrame(rows).sort_values("detects", ascending=False)


def _defect_line(d, s_: pd.DataFrame) -> str:
    """One degradation's line: the metrics that see it first, and every one that misses it."""
    dd = DEGRADATIONS[d]
    if s_.empty:
        return f"- **{dd.title}**: not measured in this run."
    if dd.expect == "invariant":
        bad = s_[s_.verdict == "not invariant"]
        return (f"- **{dd.title}** (should change nothing): "
                + ("every metric is invariant." if bad.empty else
                   f"{len(s_) - len(bad)} of {len(s_)} metrics are invariant; not: "
                   + ", ".join(f"{_name(m)} (from {dd.format(t)})" for m, t in zip(bad.metric, bad.threshold))
                   + "."))
    det = s_[s_.verdict.isin(DETECTED)].sort_values("threshold_index")
    first = det[det.threshold_index == det.threshold_index.min()]
    txt = f"- **{dd.title}**: "
    txt += ((("seen by " if s_.n_levels.max() == 1 else f"first seen at {dd.format(first.threshold.iloc[0])} by ")
             + ", ".join(_name(m) for m in first.metric) + f"; {len(det)} of {len(s_)} metrics detect it")
            if len(det) else "no metric detects it")
    blind = s_[s_.verdict == "blind"].metric
    if len(blind):
        txt += "; blind: " + ", ".join(_name(m) for m in blind)
    under = s_[s_.verdict == "underpowered"]
    if len(under):
        txt += "; **underpowered** (too few images to tell): " + ", ".join(
            f"{_name(m)} (needs ~{n:,.0f} images, {k:.0f} scored)"
            for m, n, k in zip(under.metric, under.images_needed, under.n_images))
    wrong = s_[s_.verdict == "wrong way"].metric
    if len(wrong):
        txt += "; **wrong way** (the defect looks like an improvement): " + ", ".join(_name(m) for m in wrong)
    return txt + "."


def robustness(summary: pd.DataFrame, names, per_metric: pd.DataFrame) -> str:
    """Chapter 7. summary: ``robustness/summary.csv`` (degradation, metric, verdict, threshold (the
    degradation's unit), threshold_index, n_levels, n_images, images_needed); names: the
    degradations run, in order; per_metric: :func:`metric_table`."""
    S = summary[summary.verdict != "not measured"]
    lines = [_defect_line(d, S[S.degradation == d]) for d in names]
    n_detect = sum(DEGRADATIONS[d].expect == "detect" for d in names)
    txt = "**What the demo shows, per defect.**\n\n" + "\n".join(lines)
    if len(per_metric):
        top = per_metric[per_metric.detects == per_metric.detects.max()].metric.tolist()
        txt += (f"\n\n**Per metric.** {and_list(top)} {'detects' if len(top) == 1 else 'detect'} the most defects "
                f"({per_metric.detects.max()} of {n_detect}{'' if len(top) == 1 else ' each'}); the table below "
                "lists what each is blind to.")
    return txt
