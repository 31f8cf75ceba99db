"""The book's result sentences for chapters 1–4 ("**What the demo shows.** …"), written from each
chapter's tables. A sentence asserts nothing the tables do not hold: an ordering word (lowest,
the most, worse) is printed only where the numbers, at the precision shown, bear it out; a
comparison that fails is said as such (e.g. "not worse than Reconstructed") instead of being
left out; and a mock is described by what it *is* (its recipe in :func:`helpers.datagen.mocks.build_mocks`),
never by an explanation the tables cannot check. Chapters 5 and 7 are in
:mod:`helpers.report.story_scores`.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

CONTROLS = ("Averaged GT", "Sampled GT")  # the demo's GT-derived, noise-free controls
BASE = "Reconstructed"  # the demo's realistic submission, which the other mocks degrade
WHAT = {  # what each demo mock is (helpers.datagen.mocks.build_mocks)
    "Averaged GT": "GT maps averaged in groups along MD-PC1",
    "Sampled GT": "the most populated GT map of each group along MD-PC1",
    "Reconstructed": "maps reconstructed from noisy particle images",
    "Low-pass": "the Reconstructed maps, low-passed",
    "Noisy": "the Reconstructed maps with white noise added",
    "Bimodal": "the Reconstructed maps, populations without the middle mode",
    "Middle mode": "the Reconstructed maps, populations of the middle mode only",
    "Missing open": "no maps for the open end of the motion",
    "DIMS2 path": "another path between the same end states",
}


def what(label: str) -> str | None:
    """What the demo mock ``label`` is (None for a label that is no demo mock); "<n> maps" is
    the same particles reconstructed in n groups."""
    if label in WHAT:
        return WHAT[label]
    m = re.fullmatch(r"(\d+) maps", label)
    return f"the same particles reconstructed in {m.group(1)} groups" if m else None


def controls_place(values: pd.Series, high_first: bool, nd: int):
    """Where the GT-derived controls stand among ``values``, compared at ``nd`` decimals (the
    precision the sentence prints): (the controls present, their competition ranks as text, "2
    and 3" (1 = best; ties share the better rank), the other labels ahead of at least one
    control: none means the controls hold the best places). None when no control is present."""
    ctrl = [k for k in CONTROLS if k in values.index]
    if not ctrl:
        return None
    v = values.astype(float).round(nd)
    sign = 1 if high_first else -1
    rank = {k: int((sign * v > sign * v[k]).sum()) + 1 for k in ctrl}
    ahead = [k for k in v.index if k not in ctrl and sign * v[k] > min(sign * v[c] for c in ctrl)]
    return ctrl, and_list(str(rank[k]) for k in ctrl), ahead


def and_list(items) -> str:
    """'A', 'A and B', 'A, B and C'."""
    items = list(items)
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def _vs(x: float, ref: float, nd: int) -> str:
    """'above' / 'below' / 'equal to', compared at ``nd`` decimals."""
    a, b = round(float(x), nd), round(float(ref), nd)
    return "above" if a > b else "below" if a < b else "equal to"


# ---------------------------------------------------------------- chapter 1


def data_summary(summary: dict, pc1, populations) -> str:
    """Chapter 1. summary: ``data_summary.json`` (n_gt_maps, box, voxel_size_A, n_particles, snr
    or None, md_pc1_variance_fraction (0–1) or None, n_heldout: images of a held-out stack or None); pc1: each GT map's MD-PC1 coordinate (Å);
    populations: each GT map's population (any total: shares are of the sum)."""
    pc1, w = np.asarray(pc1, float), np.asarray(populations, float)
    lo, hi = pc1.min(), pc1.max()
    thirds = np.bincount(np.digitize(pc1, [lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3]), weights=w, minlength=3)
    pct = 100 * thirds / thirds.sum()
    frac = summary.get("md_pc1_variance_fraction")
    txt = (f"**What the demo shows.** {summary['n_gt_maps']} GT maps of {summary['box']}³ at "
           f"{summary['voxel_size_A']} Å span MD-PC1 from {lo:.0f} to {hi:.0f}"
           + (f"; that one coordinate carries {100 * frac:.0f} % of the atomic motion's variance" if frac else "")
           + f". The population is split {pct[0]:.0f} / {pct[1]:.0f} / {pct[2]:.0f} % between the closed, "
           "middle and open thirds of the motion")
    shown = pct.round()
    if shown[1] < min(shown[0], shown[2]):
        txt += " (the challenge's design: three modes, the middle one weaker)."
    else:
        txt += (" — the middle third is not the least populated, unlike the challenge's design (three "
                "modes, the middle one weaker).")
    snr = summary.get("snr")
    held = summary.get("n_heldout")
    return txt + (f" {summary['n_particles']} particle images" + (f" at SNR {snr}" if snr else "")
                  + (f" are the stack methods train on; {held} more, drawn the same way and held out, are what "
                     "chapter 6 scores the maps against." if held else " are what chapter 6 scores the maps against."))


# ---------------------------------------------------------------- chapter 2


def preprocessing(report: pd.DataFrame, n_entries: int, gt_box: int, gt_voxel: float, n_failed: int = 0,
                  method_angles: dict | None = None) -> str:
    """Chapter 2. report: ``preprocessing_report.csv`` (label, input_box, input_voxel_A (Å), flip,
    align (bool), score, optional rotation_error_deg (°), alignment_doubtful (bool), method (a real
    method's name, NaN otherwise)), one row per preprocessed submission; n_entries: submissions
    in the config; gt_box / gt_voxel: the GT grid (voxels, Å); n_failed: submissions that failed;
    method_angles: {label: angle (°) of the rotation found for a real method's entry, from the
    identity}."""
    txt = [f"**What the demo shows.** {len(report)} of {n_entries} submissions are on the GT grid and frame"]
    if len(report):
        regrid = report.label[(report.input_box != gt_box) | ((report.input_voxel_A - gt_voxel).abs() > 1e-6)].tolist()
        flipped = report.label[report["flip"].astype(bool)].tolist()
        if regrid:
            txt.append(f"{', '.join(regrid)} came at another box or voxel size and "
                       f"{'was' if len(regrid) == 1 else 'were'} resampled")
        if flipped:
            txt.append(f"{', '.join(flipped)} {'was' if len(flipped) == 1 else 'were'} mirrored as the config asks")
        is_method = report.get("method", pd.Series(np.nan, index=report.index)).notna()
        for _, r in report[report["align"].astype(bool) & ~is_method].iterrows():  # methods: their own sentence
            err, doubt = r.get("rotation_error_deg", np.nan), r.get("alignment_doubtful", np.nan)
            txt.append(f"{r['label']} was aligned with score {r['score']:.3f}"
                       + (f", {err:.1f}° from the known rotation" if pd.notna(err) else "")
                       + (" — doubtful, check it above" if pd.notna(doubt) and bool(doubt) else ""))
        for _, r in report[is_method].iterrows():
            angle = (method_angles or {}).get(r["label"])
            if angle is None:
                continue
            txt.append(f"{r['label']}, a real method's output" + (f" ({r['method']})" if r["method"] != r["label"] else "")
                       + f", was aligned {angle:.1f}° from the identity (score {r['score']:.3f}): "
                       + ("its maps come in the GT's frame, as the project's cryoDRGN conventions test predicts"
                          if angle < 3 else "check the conventions of its adapter"))
        for _, r in report.iterrows():  # kernels.preprocess.voxel_size_check, after a doubtful alignment
            checks = {k: r.get(f"score_at_{k}_voxel", np.nan) for k in ("half", "double")}
            checks = {k: v for k, v in checks.items() if pd.notna(v)}
            if checks:
                k = max(checks, key=checks.get)
                size = r["input_voxel_A"] * (0.5 if k == "half" else 2.0)
                txt.append(f"{r['label']}'s alignment was doubtful (score {r['score']:.3f}); at {k} its stated voxel "
                           f"size ({size:.3f} Å) it aligns at {checks[k]:.3f}, "
                           + ("so the voxel size in its header or config is probably wrong: its metrics below use the "
                              "stated size" if pd.notna(r.get("voxel_size_suggested_A", np.nan)) else
                              "no better: the voxel size is not the problem"))
    if n_failed:
        txt.append(f"{n_failed} failed (table above) and {'is' if n_failed == 1 else 'are'} left out of every later chapter")
    return "; ".join(txt) + "."


# ---------------------------------------------------------------- chapter 3


def resolution(summary: pd.DataFrame, best_res: pd.DataFrame | None, nyquist_A: float,
               base_populations=None, base: str = BASE) -> str:
    """Chapter 3, the resolution paragraph. summary: ``volume_metrics/summary.csv`` (label, n_maps,
    best_res_median_A, best_res_median_raw_A, native_voxel_A, native_nyquist_A (Å),
    nyquist_limited, n_maps_nyquist_limited); best_res: ``volume_metrics/best_resolution.csv``
    (label, map, best_res_A (Å)); nyquist_A: the GT grid's Nyquist (2 × voxel, Å);
    base_populations: the populations of ``base``'s maps in map order (None: no base sentence)."""
    med = summary.set_index("label")["best_res_median_A"].sort_values()
    at_nyq = [k for k in med.index if med[k] <= nyquist_A + 1e-6]
    txt = [f"**What the demo shows.** {len(at_nyq)} of {len(med)} submissions reach Nyquist ({nyquist_A:.2f} Å): "
           f"{and_list(at_nyq) or 'none'}"]
    ctrl_in = [k for k in CONTROLS if k in at_nyq]
    ctrl_out = [k for k in CONTROLS if k in med.index and k not in at_nyq]
    if ctrl_in and len(ctrl_in) == len(at_nyq):
        txt[0] += f", {'a GT-derived control' if len(ctrl_in) == 1 else 'the GT-derived controls'} (GT maps or averages of a few)"
    elif ctrl_in:
        txt[0] += (f" — {and_list(ctrl_in)} {'is a GT-derived control' if len(ctrl_in) == 1 else 'are the GT-derived controls'}"
                   " (GT maps or averages of a few)")
    txt[0] += "."
    if ctrl_out:
        txt.append(f"{and_list(f'{k} ({med[k]:.2f} Å)' for k in ctrl_out)}, GT-derived "
                   f"{'control' if len(ctrl_out) == 1 else 'controls'}, {'does' if len(ctrl_out) == 1 else 'do'} not.")
    for lab, row in summary.set_index("label").iterrows():
        if row.nyquist_limited:
            txt.append(f"{lab}'s maps were made at {row.native_voxel_A:.2f} Å voxels: {row.n_maps_nyquist_limited} of "
                       f"{row.n_maps} best resolutions were finer than its own Nyquist, {row.native_nyquist_A:.2f} Å "
                       f"(median {row.best_res_median_raw_A:.2f} Å as measured), which resampling onto the GT grid "
                       f"cannot earn; they are reported as {row.native_nyquist_A:.2f} Å (Nyquist-limited).")
    if base_populations is not None and best_res is not None and base in med.index:
        b = best_res[best_res.label == base].sort_values("map").best_res_A.to_numpy(float)
        pops = np.asarray(base_populations, float)
        hi = float(np.median(b[pops >= np.quantile(pops, 0.75)]))
        lo = float(np.median(b[pops <= np.quantile(pops, 0.25)]))
        finer = round(hi, 2) < round(lo, 2)
        txt.append(f"{base}, made from noisy particle images, has a median of {np.median(b):.2f} Å, from "
                   f"{b.min():.2f} to {b.max():.2f} Å: its most populated quarter of maps (most images) reaches "
                   f"{hi:.2f} Å, " + ("finer than" if finer else "not finer than")
                   + f" its least populated quarter ({lo:.2f} Å)" + (", as in real data." if finer else "."))
    worse = [k for k in ("Noisy", "Low-pass") if k in med.index]
    if worse and base in med.index:
        cmp = {k: _vs(med[k], med[base], 2) for k in worse}
        up = [k for k in worse if cmp[k] == "above"]
        if up:
            txt.append(f"{and_list(f'{k} ({what(k)})' for k in up)} {'are' if len(up) > 1 else 'is'} worse than "
                       f"{base} (" + ", ".join(f"{k} {med[k]:.2f} Å" for k in up) + f" against {med[base]:.2f} Å).")
        for k in worse:
            if cmp[k] != "above":
                txt.append(f"{k} ({what(k)}) is not worse than {base} ({med[k]:.2f} Å against {med[base]:.2f} Å): "
                           "the median best resolution does not see its defect.")
    elif worse:
        txt.append("The noise and blur mocks: " + ", ".join(f"{k} {med[k]:.2f} Å" for k in worse) + ".")
    return " ".join(txt)


def mask_check(summary: pd.DataFrame, label: str = "Noisy") -> str:
    """Chapter 3, the mask check. summary: ``volume_metrics/summary.csv`` (label,
    best_res_median_A, best_res_corrected_median_A, best_res_unmasked_median_A, Å); label: the
    submission described (the last row where it is absent)."""
    s = summary.set_index("label")
    row = s.loc[label if label in s.index else s.index[-1]]
    m, c, u = row.best_res_median_A, row.best_res_corrected_median_A, row.best_res_unmasked_median_A
    txt = (f"**What the demo shows.** For {row.name} the median best resolution is {m:.2f} Å masked and "
           f"{c:.2f} Å after the mask correction")
    same = abs(c - m) < max(0.1 * (u - m), 0.005)  # at the precision shown, or a tenth of the mask's effect
    if same:
        txt += ": the soft mask adds no spurious correlation"
    elif c > m:
        txt += ": the soft mask inflates the FSC, trust the corrected value"
    else:
        txt += ": the corrected value is finer than the masked one"
    if round(u, 1) > round(m, 1):
        return txt + f"; without the mask it is {u:.1f} Å, worse: the unmasked FSC counts the solvent too."
    return txt + f"; without the mask it is {u:.1f} Å, no worse than with it."


# ---------------------------------------------------------------- chapter 4


def subspace_first(first: pd.Series) -> str:
    """Chapter 4, the GT's first direction. first: ``subspace/gt_pc1_captured.csv`` as a Series
    (index = label, the GT's own row included or not; % of the GT's PC1 variance captured)."""
    s = first.drop("GT", errors="ignore").astype(float)
    shown = s.round(1)
    low = [k for k in s.index if shown[k] == shown.min()]
    txt = (f"**What the demo shows.** Every submission's subspace captures between {s.min():.1f} % "
           f"({and_list(low)}) and {s.max():.1f} % ({and_list(k for k in s.index if shown[k] == shown.max())}) "
           "of the GT's first principal direction, the motion itself.")
    place = controls_place(s, high_first=True, nd=1)
    if place:
        ctrl, rank, ahead = place
        txt += " " + ", ".join(f"{k} {s[k]:.1f} %" for k in ctrl) + (
            f" — the GT-derived {'control ranks' if len(ctrl) == 1 else 'controls rank'} {rank} of {len(s)}"
            if ahead else " — the GT-derived controls capture the most") + "."
    if len(s) > 1:
        described = [f"{k} ({what(k)})" if what(k) else k for k in low]
        txt += f" The lowest: {and_list(described)}."
    return txt


def subspace_both(both: pd.DataFrame, base: str = BASE, aimed=("Missing open", "DIMS2 path")) -> str:
    """Chapter 4, both directions. both: index = submission label, columns "GT captured by set (%)"
    (row GT of the PCV matrix) and "set captured by GT (%)" (column GT), in %; aimed: mocks whose
    defect (part of the motion missing, another path) a PCV should separate from ``base``."""
    gc, sg = both["GT captured by set (%)"].astype(float), both["set captured by GT (%)"].astype(float)
    txt = ["**What the demo shows.**"]
    place = controls_place(gc, high_first=True, nd=1)
    if place:
        ctrl, rank, ahead = place
        vals = ", ".join(f"{k} {gc[k]:.1f} %" for k in ctrl)
        txt.append(f"The noise-free controls capture {vals} of the GT's variance, ranking {rank} of {len(gc)}: "
                   f"{and_list(ahead)} capture more." if ahead else
                   f"The noise-free controls capture the most of the GT's variance ({vals}).")
    if base in gc.index:
        a, b = gc[base], sg[base]
        txt.append(f"{base} ({what(base)}) captures {a:.1f} % of the GT's variance, "
                   + (f"but only {b:.1f} % of its own variance lies in the GT's subspace: the rest lies outside it."
                      if round(b, 1) < round(a, 1) else f"and {b:.1f} % of its own variance lies in the GT's subspace."))
    for k in [k for k in gc.index if k in aimed or re.fullmatch(r"\d+ maps", k)]:
        line = f"{k} ({what(k)}): {gc[k]:.1f} % / {sg[k]:.1f} % (GT captured / set in GT)"
        if base in gc.index:
            c1, c2 = _vs(gc[k], gc[base], 1), _vs(sg[k], sg[base], 1)
            line += f", {c1} / {c2} {base}'s"
            if k in aimed and "below" not in (c1, c2):
                line += f" — not separated from {base} by either PCV"
        txt.append(line + ".")
    return " ".join(txt)
