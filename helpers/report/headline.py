"""The book's front-page sentence about the leaderboard, written from chapter 8's tables.

Nothing is asserted that the tables do not hold: places are never ordered where the overall
rank intervals overlap, a submission is "behind" only those whose interval lies wholly ahead of
its own, and every aimed metric that misses its defect is named.
"""
from __future__ import annotations

import pandas as pd

from helpers.core import catalogue
from helpers.report.leaderboard import overall_ties


def front_page(board: pd.DataFrame, checks: pd.DataFrame, methods=(), base: str = "Reconstructed",
               matched: str | None = None) -> str:
    """One paragraph for ``book/intro.md``.

    board: chapter 8's leaderboard (index = label, sorted by ``mean_rank``; ``mean_rank_lo`` /
    ``mean_rank_hi``); checks: :func:`helpers.report.leaderboard.defect_checks` (mock, metric, verdict);
    methods: labels of real methods' entries; base: the realistic reference submission; matched:
    the control with the methods' own images and box (:mod:`helpers.pipeline.matched`), if on the board."""
    ties = overall_ties(board)
    winner = board.index[0]
    lead = [winner] + ties[winner]

    def overlaps(lab):
        return f" (its rank interval overlaps {', '.join(ties[lab])})" if ties[lab] else ""

    head = [f"On this run, **{winner}** leads the leaderboard of {len(board)} submissions alone (no rank interval "
            "overlaps its own)" if len(lead) == 1 else
            f"On this run, {' and '.join(f'**{k}**' for k in lead)} share the lead of the leaderboard of "
            f"{len(board)} submissions (overlapping rank intervals)"]
    if base in board.index:
        ahead = [k for k in board.index if board.loc[k, "mean_rank_hi"] < board.loc[base, "mean_rank_lo"]]
        head.append(f"the realistic *{base}* submission (noisy maps from simulated particle images) ranks "
                    f"{board.index.get_loc(base) + 1}{overlaps(base)}"
                    + (f", behind {', '.join(ahead)} (rank intervals apart)" if ahead else ""))
    real = [k for k in board.index if k in set(methods)]

    def place(lab):
        return f"{board.index.get_loc(lab) + 1} of {len(board)}{overlaps(lab)}"

    ideal = (f", the ideal reconstruction from exactly {'its' if len(real) == 1 else 'their'} images and box "
             f"({matched}) {board.index.get_loc(matched) + 1}{overlaps(matched)}" if matched in board.index else "")
    if len(real) == 1:
        head.append(f"{real[0]}, a real method trained on the demo's particle images, ranks {place(real[0])}{ideal}")
    elif real:
        head.append(f"the {len(real)} real methods run on the demo's particle images rank "
                    + ", ".join(f"{lab} {place(lab)}" for lab in real) + ideal)
    aimed = checks[checks.metric != "all"] if len(checks) else checks
    if len(aimed):
        caught = aimed.groupby("mock").verdict.apply(lambda v: (v == "caught").any())
        missed = aimed[aimed.verdict != "caught"]
        head.append(f"{int(caught.sum())} of {len(caught)} deliberately degraded submissions are caught by the "
                    "metric family aimed at their defect"
                    + (" (" + ", ".join(f"{r.mock} {r.verdict} by {catalogue.label(r.metric, with_unit=False)}"
                                        for r in missed.itertuples()) + ")" if len(missed) else
                       ", each by every metric aimed at it"))
    return "; ".join(head) + " (chapter 8, computed by the last build)."
