"""Chapter 9 (``notebooks/09_per_particle.py``): CryoBench's view, what a method says about each
particle. For ``n_particles`` particles of the training stack (CryoBench's stride), each method's
map of that particle is compared with the particle's GT map (per-image FSC and AU-FSC,
:mod:`helpers.kernels.per_image`), and each method's latent coordinates are compared with the GT
conformation and with the nuisances (defocus, viewing direction) (:mod:`helpers.kernels.latent`).

The methods scored ("entries"):

* ``GT map``: the particle's own GT map (the upper bound: FSC = 1 in every shell);
* ``one average map``: the population-weighted mean of the GT maps for every particle (the
  lower bound: a homogeneous reconstruction that knew the GT);
* submissions with per-particle labels, through their preprocessed maps (chapter 2): the
  Averaged GT control and Reconstructed, whose map k was made from the particles of GT group k
  (:func:`helpers.datagen.mocks.group_of_map`: a perfect classifier into the submission's maps),
  cryoDRGN's volume series (each particle labelled by the series point nearest its latent) and
  RECOVAR's k-means centre maps (each particle labelled by its cluster;
  :mod:`helpers.pipeline.chapters.per_particle_methods`);
* ``cryoDRGN per particle``: cryoDRGN's decoder evaluated at each particle's latent
  (``cryodrgn eval_vol`` once with a z file of all of them), put on the GT grid and frame exactly as
  chapter 2 put cryoDRGN's submission (the same regridding, hand and rotation).

Outputs under ``<results_dir>/per_particle``: ``per_image.csv`` (one row per entry and particle:
entry, particle (row of the STAR file), gt_index, pc1 (the GT map's MD-PC1), au_fsc (cycles/px),
res_0143_A, res_05_A), ``curves.npz`` (``<slug>``: (n_particles, N//2) FSC curves; ``freq``
cycles/px), ``summary.csv`` (per entry: the submission it stands for on the leaderboard, n, au_fsc_mean, au_fsc_sd, au_fsc_sem, res_0143_median_A,
res_05_median_A, the same AU-FSC under CryoBench's convention ``au_fsc_cryobench_mean``),
``by_state.csv`` (entry × MD-PC1 bin: mean and sd of the AU-FSC), ``pairs.csv`` (paired tests
between entries, Holm-adjusted), ``latent.csv`` (:func:`helpers.kernels.latent.score_latent`) and
``story.md`` (the page's "what the demo shows", :func:`write_story`)."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import io
from helpers.core.errors import InputError
from helpers.core.paths import atomic_write, save_csv, save_npz
from helpers.io import manifest
from helpers.io.mapset import MapSet, slug
from helpers.kernels import per_image as pi
from helpers.pipeline.chapters import per_particle_methods as methods

CHAPTER = "09_per_particle"
GT_MAP, AVERAGE = "GT map", "one average map"
DRGN_PER_PARTICLE = "cryoDRGN per particle"


def load_inputs(data_dir, results_dir, voxel_size: float, particles: str = "particles/particles.star") -> dict:
    """GT maps (memory-mapped), mask, MD-PC1 per GT map, the particle table (None, with the reason in
    ``why_not``, when the particles or their GT maps are unknown: the chapter then scores nothing),
    this run's preprocessed submissions, chapter 2's report and the submissions' config. Writes nothing."""
    data, out = Path(data_dir), Path(results_dir)
    gtf = io.find_gt(data)
    gt = io.read_gt(gtf["maps"], gtf["metadata"], voxel_size, check_finite=False)
    star, table, why = data / particles, None, ""
    if not star.is_file():
        why = f"{particles} is not in the data folder: per-particle scores need the particles the methods were trained on"
    else:
        table = io.read_particles(star).table
        if "hetbookTrueMapIndex" not in table:
            table, why = None, (f"{particles} has no hetbookTrueMapIndex column, so the GT map of each particle is "
                                "unknown (a simulated data set names it)")
    cfg_path = data / "submissions" / "submission_config.json"
    return {"gt": gt, "mask": io.read_mask(gtf["mask"], gt.box), "pc1": np.asarray(gt.pc1, float),
            "table": table, "subs": manifest.load_submissions(out, mmap=True),
            "report": pd.read_csv(out / "preprocessing_report.csv"),
            "config": json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}, "data_dir": data,
            "why_not": why}


def select(n_total: int, n: int) -> np.ndarray:
    """CryoBench's particle choice: every (n_total // n)-th particle from the first, n of them."""
    n = min(n, n_total)
    return np.arange(0, n_total, max(1, n_total // n))[:n]


def entries(inp: dict, idx: np.ndarray, labels=("Averaged GT", "Reconstructed"), cryodrgn: str = "cryoDRGN") -> dict:
    """{entry: (maps, map_index or None)} for the chosen particles (see the module docstring);
    submissions absent from this run are skipped."""
    from helpers.datagen.mocks import group_of_map

    gt, pc1 = inp["gt"], inp["pc1"]
    g = inp["table"].hetbookTrueMapIndex.to_numpy()[idx].astype(int)
    w = np.asarray(gt.populations, np.float64)
    mean = np.tensordot(w / w.sum(), np.asarray(gt.maps, np.float32), 1)[None].astype(np.float32)
    out = {GT_MAP: (gt.maps, g), AVERAGE: (mean, np.zeros(len(idx), int))}
    for lab in labels:
        if lab in inp["subs"]:
            s = inp["subs"][lab]
            out[lab] = (s.maps, group_of_map(pc1, s.n_maps)[g])
    if cryodrgn in inp["subs"]:
        prov = _provenance(inp["config"], cryodrgn)
        z = _latents(inp["data_dir"], prov)
        if z is not None and "pc1_points" in prov:
            t = _pc1_coordinate(z)[idx]
            pts = np.asarray(prov["pc1_points"])
            out[f"{cryodrgn} ({len(pts)} maps)"] = (inp["subs"][cryodrgn].maps, np.argmin(np.abs(t[:, None] - pts[None]), 1))
    out.update(methods.recovar_entry(inp, idx))
    return out


def _provenance(config: dict, label: str) -> dict:
    for v in config.values():
        if isinstance(v, dict) and v.get("flavor_name") == label:
            return v.get("hetbook_provenance", {}) or {}
    return {}


def training_folder(data_dir: Path, prov: dict):
    """(cryoDRGN's training folder, its last epoch) from ``cryodrgn/run.json`` (the folder relative to
    the data folder, so a moved data folder still works), else from the submission's provenance;
    None when neither names one that exists."""
    rec = Path(data_dir) / "cryodrgn" / "run.json"
    if rec.is_file():
        r = json.loads(rec.read_text())
        work, epoch = Path(data_dir) / r["workdir"], r.get("epochs")
    else:
        work, epoch = Path(prov.get("workdir", "")), prov.get("epoch")
    return (work, int(epoch)) if epoch is not None and (work / f"z.{epoch}.pkl").is_file() else None


def _latents(data_dir: Path, prov: dict):
    """cryoDRGN's per-particle latents (n, zdim) of its training folder, or None."""
    from helpers.io.labels import load_pickled_array

    found = training_folder(data_dir, prov)
    if found is None:
        return None
    z = load_pickled_array(found[0] / f"z.{found[1]}.pkl")
    return z.reshape(len(z), -1)


def _pc1_coordinate(z: np.ndarray) -> np.ndarray:
    """The latent's coordinate along its first principal axis, as :func:`adapters.cryodrgn_workdir`
    placed the series points (same centring and sign)."""
    z = z.reshape(len(z), -1).astype(np.float64)
    mu = z.mean(0)
    v = np.linalg.svd(z - mu, full_matrices=False)[2][0]
    return (z - mu) @ v


def cryodrgn_per_particle(inp: dict, idx: np.ndarray, results_dir, cryodrgn: str = "cryoDRGN", exe=None):
    """cryoDRGN's decoder at each chosen particle's latent (one ``cryodrgn eval_vol`` with a z file),
    regridded, mirrored and rotated as chapter 2 did cryoDRGN's submission. Returns (n, N, N, N)
    float32 on the GT grid, or None when cryoDRGN or its training folder is absent."""
    from helpers.io.mrc import read_map_folder
    from helpers.kernels.geometry import rotate_volume
    from helpers.kernels.preprocess import flip_hand, to_gt_grid
    from helpers.methods import adapters

    prov = _provenance(inp["config"], cryodrgn)
    z = _latents(inp["data_dir"], prov)
    if z is None:
        return None
    try:
        exe = adapters.find_cryodrgn(exe)
    except InputError:
        return None
    work, epoch = training_folder(inp["data_dir"], prov)
    vs = float(_entry(inp["config"], cryodrgn).get("native_pixel_size") or _entry(inp["config"], cryodrgn)["pixel_size"])
    tmp = Path(tempfile.mkdtemp(prefix="hetbook-evalvol-"))
    try:
        np.savetxt(tmp / "z.txt", z[idx])
        adapters._run([exe, "eval_vol", work / f"weights.{epoch}.pkl", "-c", work / "config.yaml", "--zfile",
                       tmp / "z.txt", "-o", tmp / "vols", "--Apix", vs], work)
        maps, _, _ = read_map_folder(tmp / "vols", vs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms = to_gt_grid(MapSet(np.asarray(maps, np.float32), np.full(len(idx), 1 / len(idx)), vs, DRGN_PER_PARTICLE,
                           {}, native_voxel_size=vs), inp["gt"].box, inp["gt"].voxel_size)
    row = inp["report"].set_index("label").loc[cryodrgn]
    if bool(row.get("flip", False)):
        ms = flip_hand(ms)
    if isinstance(row.get("rotation_matrix"), str):
        R = np.asarray(json.loads(row["rotation_matrix"]))
        moved = rotate_volume(ms.maps, R, shift_in=json.loads(row["shift_in"]), shift_out=json.loads(row["shift_out"]))
        return moved.numpy()
    return np.asarray(ms.maps, np.float32)


def _entry(config: dict, label: str) -> dict:
    return next((v for v in config.values() if isinstance(v, dict) and v.get("flavor_name") == label), {})


def _native_voxel(entry: str, subs: dict):
    """The voxel size (Å) an entry's maps were made at (None for the GT-made bounds): no resolution
    finer than twice it (a coarser method's maps have nothing beyond its Nyquist)."""
    lab = methods.method_of(entry, subs)
    return subs[lab].native_voxel_size if lab is not None else None


def nyquist_lines(entries, subs: dict, voxel_size: float) -> dict:
    """{entry: 2 × its maps' native voxel (Å)} for the entries made at a coarser voxel than the
    GT's (their curves stop there: the figure marks it)."""
    out = {}
    for e in entries:
        native = _native_voxel(e, subs)
        if native and native > voxel_size * (1 + 1e-6):
            out[e] = 2 * native
    return out


def _stands_for(entry: str, subs: dict, cryodrgn: str = "cryoDRGN") -> str:
    """The submission an entry scores on the leaderboard ("" for the bounds and cryoDRGN's series:
    cryoDRGN is scored by its decoder at each particle, as CryoBench does; RECOVAR by its k-means
    series, each particle given its cluster's centre map)."""
    if entry == DRGN_PER_PARTICLE:
        return cryodrgn
    lab = methods.method_of(entry, subs)
    return "" if lab is None or (lab == cryodrgn and entry != cryodrgn) else lab


def score(results_dir, inp: dict, idx: np.ndarray, ents: dict, n_bins: int = 8, batch: int = 32) -> dict:
    """Per-image FSC of every entry on the chosen particles, under the mask (hetbook's convention)
    and without it under CryoBench's; writes the files of the module docstring except
    ``pairs.csv`` and ``latent.csv``. Returns {"per_image", "summary", "by_state", "curves"}."""
    gt, out = inp["gt"], Path(results_dir) / "per_particle"
    g = inp["table"].hetbookTrueMapIndex.to_numpy()[idx].astype(int)
    pc1 = inp["pc1"][g]
    rows, curves, summ, cache = [], {}, [], {}  # cache: each GT map transformed once per convention
    for name, (maps, map_index) in ents.items():
        c = pi.per_image_fsc(maps, gt.maps, g, map_index=map_index, mask=inp["mask"], batch=batch, desc=name,
                             gt_cache=cache)
        cb = pi.per_image_fsc(maps, gt.maps, g, map_index=map_index, convention="cryobench", batch=batch, desc=name,
                              gt_cache=cache)
        native = _native_voxel(name, inp["subs"])
        if native:  # beyond the map's own Nyquist only interpolation remains: no signal (NaN, counted 0)
            for x in (c, cb):
                x[:, np.arange(1, x.shape[1] + 1) / (gt.box * gt.voxel_size) > 1 / (2 * native) + 1e-9] = np.nan
        au, au_cb = pi.au_fsc(c), pi.au_fsc(cb, "cryobench")
        r143, r05 = (pi.image_resolution(c, gt.voxel_size, t, native_voxel_size=native) for t in (0.143, 0.5))
        curves[slug(name)] = c.astype(np.float32)
        rows.append(pd.DataFrame({"entry": name, "particle": idx, "gt_index": g, "pc1": pc1, "au_fsc": au,
                                  "au_fsc_cryobench": au_cb, "res_0143_A": r143, "res_05_A": r05}))
        summ.append({"entry": name, "submission": _stands_for(name, inp["subs"]), "n": len(au),
                     "au_fsc_mean": au.mean(), "au_fsc_sd": au.std(ddof=1),
                     "au_fsc_sem": au.std(ddof=1) / np.sqrt(len(au)), "res_0143_median_A": np.median(r143),
                     "res_05_median_A": np.median(r05), "au_fsc_cryobench_mean": au_cb.mean(),
                     "au_fsc_cryobench_sd": au_cb.std(ddof=1)})
    per = pd.concat(rows, ignore_index=True)
    summary = pd.DataFrame(summ).set_index("entry")
    edges = np.quantile(inp["pc1"], np.linspace(0, 1, n_bins + 1))
    per["state_bin"] = np.clip(np.searchsorted(edges, per.pc1, side="right") - 1, 0, n_bins - 1)
    by_state = per.groupby(["entry", "state_bin"], sort=False).au_fsc.agg(["mean", "std", "count"]).reset_index()
    by_state["pc1_mid"] = ((edges[:-1] + edges[1:]) / 2)[by_state.state_bin]
    save_csv(out / "per_image.csv", per)
    save_csv(out / "summary.csv", summary)
    save_csv(out / "by_state.csv", by_state)
    save_npz(out / "curves.npz", freq=pi.frequencies(gt.box)[1:], **curves)
    return {"per_image": per, "summary": summary, "by_state": by_state, "curves": curves}


def pair_tests(results_dir, per: pd.DataFrame, pairs, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """Paired t-tests of the per-particle AU-FSC of entry a against entry b over the same particles,
    for each (a, b) in ``pairs`` present in ``per``; Holm-adjusted over the table (the false calls
    of the whole table held at ``alpha``). Columns a, b, n, diff (mean of a − b, cycles/px), se, t,
    p, p_holm, better ("a", "b" or "tie" at the Holm level), mde (the smallest mean difference this
    n detects with ``power`` at the table's strictest Holm level: a larger true difference would
    have been called). Writes ``per_particle/pairs.csv``."""
    from scipy import stats

    from helpers.kernels.verdicts import holm

    wide = per.pivot(index="particle", columns="entry", values="au_fsc")
    rows = []
    for a, b in pairs:
        if a in wide and b in wide:
            d = (wide[a] - wide[b]).dropna().to_numpy()
            se = d.std(ddof=1) / np.sqrt(len(d))
            t = d.mean() / se if se > 0 else np.inf * np.sign(d.mean())
            p = 2 * stats.t.sf(abs(t), len(d) - 1) if np.isfinite(t) else float(d.mean() == 0)
            rows.append({"a": a, "b": b, "n": len(d), "diff": d.mean(), "se": se, "t": t, "p": p})
    tab = pd.DataFrame(rows, columns=["a", "b", "n", "diff", "se", "t", "p"])
    if len(tab):
        tab["p_holm"] = holm(tab.p.to_numpy())
        tab["better"] = np.where(tab.p_holm < alpha, np.where(tab["diff"] > 0, "a", "b"), "tie")
        z = stats.norm.ppf(1 - alpha / len(tab) / 2) + stats.norm.ppf(power)
        tab["mde"] = z * tab.se
    save_csv(Path(results_dir) / "per_particle" / "pairs.csv", tab)
    return tab


def nuisances(table: pd.DataFrame) -> dict:
    """The nuisance variables of each particle: mean defocus (Å) and viewing direction (unit vector
    from the RELION rot/tilt angles)."""
    rot, tilt = (np.radians(table[c].to_numpy(float)) for c in ("rlnAngleRot", "rlnAngleTilt"))
    view = np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)], 1)
    return {"defocus": ((table.rlnDefocusU + table.rlnDefocusV) / 2).to_numpy(float)[:, None], "viewing direction": view}


def latent_scores(results_dir, inp: dict, ks, seed: int = 0, cryodrgn: str = "cryoDRGN") -> tuple[pd.DataFrame, dict]:
    """Latent-space scores (:func:`helpers.kernels.latent.score_latent`) of every particle's latent
    against its GT conformation (MD-PC1 of its GT map) and the nuisances, for cryoDRGN's and
    RECOVAR's latents (those that ran) and three references: the GT conformation itself (the
    ceiling), a random latent (chance) and a latent that encodes defocus (the failure the scores
    must expose). Returns (table with an ``latent`` column, {latent name: (n, d) array}); writes
    ``per_particle/latent.csv``."""
    from helpers.kernels.latent import score_latent

    tab = inp["table"]
    conf = inp["pc1"][tab.hetbookTrueMapIndex.to_numpy().astype(int)][:, None]
    nuis = nuisances(tab)
    rng = np.random.default_rng(seed)
    lat = {"GT conformation": conf, "random": rng.normal(size=(len(tab), 1)),
           "defocus + noise": nuis["defocus"] + rng.normal(0, 0.01 * nuis["defocus"].std(), nuis["defocus"].shape)}
    z = _latents(inp["data_dir"], _provenance(inp["config"], cryodrgn)) if cryodrgn in inp["subs"] else None
    mine = {f"{cryodrgn} latent": z} if z is not None and len(z) == len(tab) else {}
    lat = {**mine, **methods.recovar_latent(inp), **lat}  # the methods' latents first, then the references
    frames = []
    for name, x in lat.items():
        s = score_latent(x, conf, nuis, ks=ks)
        s.insert(0, "latent", name)
        frames.append(s)
    out = pd.concat(frames, ignore_index=True)
    save_csv(Path(results_dir) / "per_particle" / "latent.csv", out)
    return out, lat


PAIRS = [(DRGN_PER_PARTICLE, "cryoDRGN ("), (DRGN_PER_PARTICLE, "Reconstructed"), (DRGN_PER_PARTICLE, AVERAGE),
         ("Reconstructed", "Averaged GT"), ("Reconstructed", AVERAGE), (DRGN_PER_PARTICLE, "RECOVAR ("),
         ("RECOVAR (", "Reconstructed")]


def analyse(results_dir, inp: dict, *, n_particles: int, n_bins: int, ks, batch: int = 32) -> dict:
    """The whole chapter: choose the particles, build the entries (cryoDRGN's per-particle maps
    included when it ran, RECOVAR's k-means series when it ran), score them (:func:`score`), test
    the pairs of :data:`PAIRS` present (an entry name ending in "(" matches by prefix) and score
    the latents (cryoDRGN's and RECOVAR's when they ran). With no per-particle GT
    (``inp["table"]`` None) it writes an empty ``per_particle/summary.csv`` and returns empty
    tables. Returns {"per_image", "summary", "by_state", "curves", "pairs", "latent", "latents",
    "entries", "idx"}."""
    if inp["table"] is None:
        empty = pd.DataFrame(columns=["entry", "submission", "n", "au_fsc_mean", "au_fsc_sem"]).set_index("entry")
        save_csv(Path(results_dir) / "per_particle" / "summary.csv", empty)
        return {"per_image": pd.DataFrame(), "summary": empty, "by_state": pd.DataFrame(), "curves": {},
                "pairs": pd.DataFrame(), "latent": pd.DataFrame(), "latents": {}, "entries": [], "idx": np.array([], int)}
    idx = select(len(inp["table"]), n_particles)
    ents = entries(inp, idx)
    drgn = cryodrgn_per_particle(inp, idx, results_dir)
    if drgn is not None:
        ents[DRGN_PER_PARTICLE] = (drgn, None)
    res = score(results_dir, inp, idx, ents, n_bins=n_bins, batch=batch)
    res["summary"] = res["summary"].sort_values("au_fsc_mean", ascending=False)
    names = list(ents)

    def full(x):  # a name ending in "(" stands for the entry it begins
        return next((e for e in names if e.startswith(x)), x) if x.endswith("(") else x

    pairs = [(full(a), full(b)) for a, b in PAIRS]
    res["pairs"] = pair_tests(results_dir, res["per_image"], pairs)
    res["latent"], res["latents"] = latent_scores(results_dir, inp, ks)
    res.update(entries=names, idx=idx)
    return res


def write_story(results_dir, text: str) -> Path:
    """Write ``per_particle/story.md``: the chapter's "what the demo shows" (Markdown), for pages
    that quote a run's results (e.g. ``book/with_recovar/``)."""
    f = Path(results_dir) / "per_particle" / "story.md"
    with atomic_write(f, "w") as fh:
        fh.write(text + "\n")
    return f


frequencies = pi.frequencies  # cycles/px of FSC(0) and each shell (the curves' x axis)


def colour_by(inp: dict, latents: dict) -> tuple:
    """({name: latent (n, d)}, GT conformation (n,) Å, {title: values (n,)}) for the latent
    browser: every method's latent (names ending in " latent"), else the GT conformation; coloured
    by the conformation, defocus (Å) and the viewing direction's tilt (°)."""
    tab = inp["table"]
    conf = inp["pc1"][tab.hetbookTrueMapIndex.to_numpy().astype(int)]
    names = [k for k in latents if k.endswith(" latent")] or ["GT conformation"]
    colour = {"GT conformation (MD-PC1, Å)": conf, "defocus (Å)": nuisances(tab)["defocus"][:, 0],
              "viewing direction: tilt (°)": tab.rlnAngleTilt.to_numpy(float)}
    return {k: latents[k] for k in names}, conf, colour


def latent_summary(lat: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per latent and reference: neighbourhood similarity at ``k`` (± its standard error,
    chance and ceiling) and the two information imbalances: the table the chapter shows."""
    ns = lat[(lat.score == "neighbourhood_similarity") & (lat.k == k)].set_index(["latent", "reference"])
    imb = lat[lat.score != "neighbourhood_similarity"].pivot_table(index=["latent", "reference"], columns="score",
                                                                  values="value", sort=False)
    out = pd.DataFrame({f"NS at k={k}": ns.value, "NS s.e.": ns["sem"], "chance": ns.chance, "ceiling": ns.ceiling})
    out["Δ(reference → latent)"] = imb["imbalance_reference_to_latent"]
    out["Δ(latent → reference)"] = imb["imbalance_latent_to_reference"]
    return out
