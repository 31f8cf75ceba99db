"""Chapter 9's sentences, computed from its tables (``per_particle/summary.csv``, ``pairs.csv``,
``latent.csv``): nothing here states a number the tables do not hold."""
from __future__ import annotations

import numpy as np
import pandas as pd


def _f(x: float, d: int = 3) -> str:
    return f"{x:.{d}f}"


def _g(x: float) -> str:
    """Two significant digits, for differences and their errors (0.00012, not 0.000)."""
    return f"{x:.2g}"


def _degree(delta: float) -> str:
    """An information imbalance in words: below 0.1 "well", above 0.9 "not at all", else "partly"."""
    return "well" if delta < 0.1 else "not at all" if delta > 0.9 else "partly"


def _cap(text: str) -> str:
    """A sentence opening with an entry name in lower case ("one average map") capitalised; names
    such as cryoDRGN keep their spelling."""
    return "One" + text[3:] if text.startswith("one ") else text


def per_image(summary: pd.DataFrame, pairs: pd.DataFrame, gt: str = "GT map", average: str = "one average map") -> str:
    """What the per-image FSC shows: the order of the entries, the two bounds, and each paired test."""
    s = summary.sort_values("au_fsc_mean", ascending=False)
    n = int(s.n.iloc[0])
    parts = [f"On {n} particles, the mean per-image AU-FSC orders the entries "
             + ", ".join(f"{e} {_f(r.au_fsc_mean)} ± {_f(r.au_fsc_sem)}" for e, r in s.iterrows())
             + " (mean ± standard error; 0.5 is a perfect map)."]
    if gt in s.index and average in s.index:
        avg = s.loc[average, "au_fsc_mean"]
        drop = s.loc[gt, "au_fsc_mean"] - avg
        parts.append(f"Giving every particle the same noise-free average map instead of its own GT map lowers the "
                     f"AU-FSC by only {_f(drop)}: that is all the heterogeneity is worth on this score.")
        below = [e for e, r in s.iterrows() if e not in (gt, average) and r.au_fsc_mean < avg]
        if below:
            parts.append(f"{', '.join(below)} score{'s' if len(below) == 1 else ''} below that homogeneous map: "
                         "the AU-FSC mixes resolution with heterogeneity, and noise or a coarse grid costs more "
                         "than the motion gains (a map made at a coarser voxel has nothing beyond its own Nyquist).")
    for _, r in pairs.iterrows():
        if r.better == "tie":
            parts.append(_cap(f"{r.a} and {r.b} are not told apart (difference {_g(r['diff'])} ± {_g(r.se)}, "
                              f"Holm-adjusted p = {r.p_holm:.2g}; with {int(r.n)} particles a difference of "
                              f"{_g(r.mde)} would have been detected with 80 % power)."))
        else:
            win, lose = (r.a, r.b) if r.better == "a" else (r.b, r.a)
            parts.append(_cap(f"{win} beats {lose} by {_g(abs(r['diff']))} ± {_g(r.se)} (paired t-test over the "
                              f"same particles, Holm-adjusted p = {r.p_holm:.2g})."))
    return " ".join(parts)


def latent(lat: pd.DataFrame, k: int, method_latent=None) -> str:
    """What the latent scores show at neighbourhood size ``k`` (long table of
    :func:`helpers.kernels.latent.score_latent` with a ``latent`` column): each latent's
    neighbourhood similarity with the conformation and with defocus, and each method's
    (``method_latent``: one name or several) imbalances."""
    ns = lat[(lat.score == "neighbourhood_similarity") & (lat.k == k)]
    if ns.empty:
        return ""

    def v(name, ref, score_frame=ns):
        row = score_frame[(score_frame.latent == name) & (score_frame.reference == ref)]
        return float(row.value.iloc[0]) if len(row) else np.nan

    chance = float(ns.chance.iloc[0])
    out = [f"At k = {k} neighbours (chance {_f(chance)}, the fraction a latent unrelated to the reference shares), "
           f"the GT conformation shares {_f(v('GT conformation', 'conformation'), 2)} of its neighbours with itself "
           f"(below 1 only because many particles come from the same GT map: ties), a random latent "
           f"{_f(v('random', 'conformation'))}, and a latent that encodes defocus {_f(v('defocus + noise', 'conformation'))} "
           f"with the conformation but {_f(v('defocus + noise', 'defocus'), 2)} with defocus: the score exposes a latent "
           "that follows a nuisance."]
    names = [method_latent] if isinstance(method_latent, str) else list(method_latent or [])
    for method_latent in [n for n in names if (ns.latent == n).any()]:
        c = v(method_latent, "conformation")
        every = lat[(lat.score == "neighbourhood_similarity") & (lat.latent == method_latent)
                    & (lat.reference == "conformation")].sort_values("k")
        lo, hi = every.iloc[0], every.iloc[-1]
        imb = lat[lat.latent == method_latent].set_index(["reference", "score"]).value
        to_conf = float(imb[("conformation", "imbalance_latent_to_reference")])
        to_def = float(imb[("defocus", "imbalance_latent_to_reference")])
        above = bool((every.value - every.chance > 2 * every["sem"]).all())
        gt_self = v("GT conformation", "conformation")
        how = (f"above chance at every k but far below the GT's own {_f(gt_self, 2)} at k = {k}: the latent follows "
               "the conformation coarsely, not particle by particle" if above and c < 0.5 * gt_self
               else "above chance at every k" if above else "not above chance at every k")
        out.append(_cap(
            f"{method_latent} shares {_f(lo.value, 2)} of its neighbours with the GT conformation at k = {int(lo.k)} "
            f"(chance {_f(lo.chance)}) and {_f(hi.value, 2)} at k = {int(hi.k)} (chance {_f(hi.chance, 2)}): "
            f"{how}. Its neighbours predict the conformation's {_degree(to_conf)}, Δ(latent → conformation) = "
            f"{_f(to_conf, 2)}, and defocus {_degree(to_def)}, Δ(latent → defocus) = {_f(to_def, 2)} (0: fully, "
            "1: no information)."))
    shown = [n for n in names if (ns.latent == n).any()]
    if len(shown) >= 2:
        rows = ns[ns.reference == "conformation"].set_index("latent").loc[shown]
        a, b = rows.value.idxmax(), rows.value.idxmin()
        diff, se = rows.value[a] - rows.value[b], float(np.hypot(rows["sem"][a], rows["sem"][b]))
        z = diff / se if se > 0 else np.inf
        out.append(f"At k = {k}, {a} follows the conformation more closely than {b}: {_f(diff)} ± {_f(se)} more "
                   f"neighbours shared (z = {z:.1f}; z-test, the two standard errors over interleaved subsets combined "
                   "as if independent, although both latents are scored on the same subsets)."
                   if z > 2 else
                   f"At k = {k}, {a} and {b} are not told apart on the conformation ({_f(diff)} ± {_f(se)}, "
                   f"z = {z:.1f} < 2).")
    return " ".join(out)


def chapter(summary: pd.DataFrame, pairs: pd.DataFrame, lat: pd.DataFrame, k: int, why_not: str = "") -> str:
    """The chapter's "what the demo shows": per-image scores, then the latent scores; or why
    nothing was scored."""
    if summary.empty:
        return f"Nothing is scored in this run: {why_not or 'no per-particle ground truth'}."
    methods = [n for n in lat.latent.unique() if n.endswith(" latent")] if len(lat) else []
    return per_image(summary, pairs) + "\n\n" + latent(lat, k, methods)


SUMMARY_COLUMNS = {"submission": "submission", "n": "particles", "au_fsc_mean": "AU-FSC mean",
                   "au_fsc_sd": "AU-FSC sd", "au_fsc_sem": "AU-FSC s.e.", "res_0143_median_A": "res. 0.143 (Å, median)",
                   "res_05_median_A": "res. 0.5 (Å, median)", "au_fsc_cryobench_mean": "AU-FSC CryoBench mean",
                   "au_fsc_cryobench_sd": "AU-FSC CryoBench sd"}


def summary_table(summary: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``per_particle/summary.csv`` for the page: the columns named for a reader (units in the
    names), in :data:`SUMMARY_COLUMNS` order, numbers rounded to ``digits``."""
    cols = [c for c in SUMMARY_COLUMNS if c in summary.columns]
    return summary[cols].rename(columns=SUMMARY_COLUMNS).round(digits)
