"""Which family of questions each metric answers (the leaderboard averages families, not metrics).

``FAMILIES`` in display order; ``FAMILY`` {metric: family} for every metric chapters 3–7 report.
"""
FAMILIES = ("volume", "transport", "subspace", "distribution", "image")
FAMILY = {
    "resolution_A": "volume", "fsc_area": "volume", "l2": "volume", "corr": "volume", "bioem": "volume",
    "sw_A": "transport", "gw_coverage_A": "transport", "pw_coverage_A": "transport",
    "pcv_gt_captured": "subspace", "pcv_set_in_gt": "subspace",
    "emd_submitted": "distribution", "emd_optimised": "distribution", "kl_submitted": "distribution",
    "kl_optimised": "distribution", "loglik_per_image": "image", "best_cc": "image",
}
