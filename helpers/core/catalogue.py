"""Every metric the book reports, defined once: key, label, unit, direction, family and meaning.

Chapters 3–7 and 9, the leaderboard (chapter 8), the robustness study and the figures read
labels, units and directions from :data:`METRICS` (keys as in the results CSVs). ``FAMILIES``
lists the families of questions in display order (the leaderboard averages families, not
metrics); ``FAMILY`` {metric: family} is derived from :data:`METRICS`.

Units as the code computes them: the L2 cost is the mean over masked voxels of the squared
difference of the two maps after per-map median z-scoring (``z²``: squared z-score units), and
the EMD moves the GT's population mass over that cost, so it has the same unit; KL divergences
and log-likelihoods are natural logarithms (nat); correlations and the FSC area have none.
"""
from __future__ import annotations

import dataclasses

DIRECTIONS = ("low", "high")
FAMILIES = ("volume", "transport", "subspace", "distribution", "image", "per-particle")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str       # column name in the results CSVs
    label: str     # readable name, without unit
    unit: str      # "" when dimensionless
    better: str    # "low" or "high"
    family: str    # one of FAMILIES
    meaning: str   # one line: what the number is

    def __post_init__(self):
        if self.better not in DIRECTIONS:
            raise ValueError(f"{self.key}: better must be 'low' or 'high', got {self.better!r}")
        if self.family not in FAMILIES:
            raise ValueError(f"{self.key}: unknown family {self.family!r}")


METRICS = {m.key: m for m in (
    Metric("resolution_A", "resolution", "Å", "low", "volume",
           "median over the submitted maps of the best FSC = 0.5 resolution against any GT map"),
    Metric("fsc_area", "FSC area", "", "high", "volume",
           "median over the submitted maps of the mean FSC over shells against the best-matching GT map"),
    Metric("l2", "L2 per voxel", "z²", "low", "volume",
           "median over the submitted maps of the smallest mean squared difference per masked voxel to a GT map "
           "(both maps median-z-scored)"),
    Metric("corr", "correlation", "", "high", "volume",
           "median over the submitted maps of the largest Pearson correlation with a GT map in the mask"),
    Metric("bioem", "BioEM −log P", "nat", "low", "volume",
           "median over the submitted maps of the smallest BioEM −log P(GT map | map), scale, offset and noise "
           "marginalised"),
    Metric("sw_A", "sliced W", "Å", "low", "transport",
           "median over the submitted maps of the smallest sliced Wasserstein distance between the maps' "
           "densities to a GT map"),
    Metric("gw_coverage_A", "GW coverage", "Å", "low", "transport",
           "mean over a GT subset of the Gromov–Wasserstein distance to the closest submitted map"),
    Metric("pw_coverage_A", "PW coverage", "Å", "low", "transport",
           "mean over a GT subset of the Procrustes–Wasserstein distance to the closest submitted map"),
    Metric("pcv_gt_captured", "PCV: GT captured", "%", "high", "subspace",
           "share of the GT's principal-component variance captured by the submission's subspace"),
    Metric("pcv_set_in_gt", "PCV: set in GT", "%", "high", "subspace",
           "share of the submission's principal-component variance lying in the GT's subspace"),
    Metric("emd_submitted", "EMD submitted", "z²", "low", "distribution",
           "earth mover's distance from the GT's population windows to the submitted populations on the L2 cost"),
    Metric("emd_optimised", "EMD optimised", "z²", "low", "distribution",
           "the same EMD with the populations chosen to minimise it: what the maps alone allow"),
    Metric("kl_submitted", "KL submitted", "nat", "low", "distribution",
           "KL(P‖A q) from the GT's windows P to the submitted populations q through the assignment A"),
    Metric("kl_optimised", "KL optimised", "nat", "low", "distribution",
           "the same KL with the populations fitted by EM: what the maps alone allow"),
    Metric("loglik_per_image", "log-likelihood / image", "nat", "high", "image",
           "mean over images of the ensemble log-likelihood per image relative to a reference ensemble "
           "(the GT ensemble on the leaderboard, the base in the robustness study)"),
    Metric("au_fsc", "per-image AU-FSC", "", "high", "per-particle",
           "mean over particles of the area under |FSC| (0–0.5 cycles/px) of the map the method gives a particle "
           "against that particle's GT map (0.5: perfect); only for methods with per-particle output"),
    Metric("best_cc", "best CC", "", "high", "image",
           "median over images of the best cross-correlation of the image with a projection of any map"),
)}

FAMILY = {k: m.family for k, m in METRICS.items()}


def label(key: str, with_unit: bool = True) -> str:
    """Readable name of a metric: "resolution (Å)", or "resolution" without its unit (prose)."""
    m = METRICS[key]
    return f"{m.label} ({m.unit})" if with_unit and m.unit else m.label


def unit(key: str) -> str:
    """A metric's unit ("" when dimensionless)."""
    return METRICS[key].unit


def better(key: str) -> str:
    """"low" or "high": which values of a metric are better."""
    return METRICS[key].better


def family(key: str) -> str:
    """The family of questions a metric answers (one of :data:`FAMILIES`)."""
    return METRICS[key].family


def directions(keys=None) -> dict:
    """{metric: "low" | "high"} for ``keys`` in their order (default: every metric, catalogue order)."""
    return {k: METRICS[k].better for k in (METRICS if keys is None else keys)}

