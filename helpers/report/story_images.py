"""Chapter 6's result sentences, written from its tables (``image_metrics/summary.csv``, ``power.csv``).

Each function returns markdown; an ordering is stated only where the table's verdict holds it.
"""
from __future__ import annotations

import pandas as pd


def likelihood(summary: pd.DataFrame, n_images: int, named=("Sampled GT", "Averaged GT", "Reconstructed", "Noisy")) -> str:
    """The ensemble log-likelihood sentence. summary: index = label, columns ``rank`` (1 = best)
    and ``delta_per_image_vs_gt`` (nats per image relative to the GT ensemble's row "GT ensemble")."""
    dl, rank = summary["delta_per_image_vs_gt"], summary["rank"]
    gt_rank = int(rank["GT ensemble"])
    above = [k for k in summary.index if rank[k] < gt_rank]
    says = [f"the GT ensemble ranks {gt_rank} of {len(summary)}"
            + (f" (above it: {', '.join(f'{k} {dl[k]:+.3f}' for k in above)})" if above else "")]
    says += [f"{k} {dl[k]:+.3f} nat/image" for k in named if k in dl]
    low = dl.drop("GT ensemble", errors="ignore").nsmallest(3)
    return (f"**What the demo shows.** Over {n_images} images, " + "; ".join(says)
            + " (relative to the GT ensemble). The largest losses: "
            + ", ".join(f"{k} {v:+.2f}" for k, v in low.items()) + " nat/image.")


def _listing(power: pd.DataFrame, metric: str, verdict: str, need: bool = False) -> str:
    p = power[(power.metric == metric) & (power.verdict == verdict)]
    return ", ".join(f"{k} ({v:.0f} needed)" if need else k for k, v in zip(p.label, p.images_needed)) or "none"


def power_verdicts(power: pd.DataFrame, n_images: int, n_stack: int, reused: dict | None = None,
                   same: set | None = None, box: int | None = None) -> str:
    """Which submissions the GT ensemble beats at ≥ 2σ on each image metric, which are
    underpowered (with the images each would need), which show no difference and which go the
    wrong way. power: ``power.csv`` (label, metric ∈ {loglik, best_cc}, images_needed, verdict);
    reused: {label: label whose pose search it reused}; same: those whose maps and populations
    equal the reused one's after preprocessing; box: the image grid (px)."""
    text = (f"**What the demo shows.** With {n_images} of the stack's {n_stack} images, the GT ensemble's "
            f"log-likelihood is ahead at ≥ 2σ of: {_listing(power, 'loglik', 'separated')}; underpowered: "
            f"{_listing(power, 'loglik', 'underpowered', True)}; no difference within the stack: "
            f"{_listing(power, 'loglik', 'no difference')}; wrong way: {_listing(power, 'loglik', 'wrong way')}. "
            f"Best CC — ahead of: {_listing(power, 'best_cc', 'separated')}; underpowered: "
            f"{_listing(power, 'best_cc', 'underpowered', True)}; no difference within the stack: "
            f"{_listing(power, 'best_cc', 'no difference')}; wrong way: {_listing(power, 'best_cc', 'wrong way')}.")
    if reused:
        same = same or set()
        text += " " + "; ".join(
            f"{k} has the same maps as {v} on the {box}³ image grid"
            + (f" and the same populations (preprocessing undid its defect), so its verdicts are {v}'s" if k in same
               else ", so its pose search was reused; only its populations differ") for k, v in reused.items()) + "."
    return text


def gt_rank_line(gt_rank: int, above: dict, n_sets: int) -> str:
    """One line: the GT ensemble's rank among ``n_sets`` and the sets ranked above it
    ({label: log-likelihood per image relative to the GT ensemble, nats})."""
    return f"GT ensemble: rank {gt_rank} of {n_sets}" + (
        "; above it: " + ", ".join(f"{k} ({d:+.3f} nat)" for k, d in above.items()) if above else "")
