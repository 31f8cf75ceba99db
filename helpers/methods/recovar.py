"""RECOVAR (Gilles & Singer) output → :class:`MapSet` and :class:`PerParticle`.

Layout confirmed from recovar 1.0.5's source (PyPI wheel: ``recovar/output/output_paths.py``,
``output/output.py``, ``commands/analyze.py``, ``commands/pipeline.py``); a CPU run on the demo's
particles (stopped after 30 min, in covariance estimation) wrote ``output/volumes/mean*.mrc``,
``mask.mrc``, ``job.json``, ``command.txt``, ``run.log`` as named there::

    <result_dir>/                           recovar pipeline <particles> -o <result_dir> --zdim d
      model/metadata.json                   JSON: recovar_version, voxel_size (Å), volume_shape, zdims_computed
      model/zdim_<d>/latent_coords.npy      z (n, d) float, particle i = image i of the stack; NaN rows
                                            for images left out (--ind); also *_noreg, latent_precision,
                                            contrasts (.npy; no pickle)
      model/params.pkl                      (holds the argparse Namespace input_args: not read here)
      analysis_<d>/                         recovar analyze <result_dir> --zdim d [--n-clusters K]
        data/kmeans_result.pkl              pickled dict {"centers": (K, d) float32, "labels": (n,) int, 0-based}
        kmeans/center000.mrc … center{K-1:03d}.mrc   one map per k-means centre (0-based, 3 digits;
                                            beside them *_half1_unfil/_half2_unfil/_unfil.mrc, centers.txt)
        traj000/state000.mrc …, latent_coords.txt    maps along a path and its points (m, d)

Maps are read as the MRC files store them (axes z, y, x; voxel size from the header). The
populations of the k-means maps are the fraction of particles per cluster (bincount / n); those
of a trajectory, the fraction of particles whose z is nearest (Euclidean) to each path point.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from helpers.core.errors import InputError
from helpers.io import safe_pickle
from helpers.io.mapset import MapSet
from helpers.io.mrc import read_mrc
from helpers.methods.per_particle import PerParticle

RUN_FIX = "Point at the folder `recovar pipeline -o` wrote, after `recovar analyze <it> --zdim d`."


def _folder(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "folder not found.", RUN_FIX)
    return path


def find_zdim(result_dir, zdim: int | None = None) -> int:
    """The latent dimension to read: ``zdim``, or the only ``model/zdim_<d>/`` there is."""
    model = _folder(result_dir) / "model"
    found = sorted(int(m.group(1)) for p in (model.iterdir() if model.is_dir() else [])
                   if (m := re.fullmatch(r"zdim_(\d+)", p.name)) and p.is_dir())
    if not found:
        raise InputError(model, "has no zdim_<d>/ folder of latent coordinates (recovar ≥ 1.0 writes them).",
                         "Let `recovar pipeline` finish; an older recovar's model/embeddings.pkl is not read here.")
    if zdim is None and len(found) > 1:
        raise InputError(model, f"holds latents of several dimensions {found}.", "Pass zdim= one of them.")
    if zdim is not None and int(zdim) not in found:
        raise InputError(model, f"has no zdim_{zdim}/ (found {found}).", "Pass zdim= one of those.")
    return int(found[0] if zdim is None else zdim)


def read_latents(result_dir, zdim: int | None = None, noreg: bool = False) -> tuple[np.ndarray, Path]:
    """(z (n, d) float64, its file): ``model/zdim_<d>/latent_coords.npy`` (``noreg``: the
    unregularised ``latent_coords_noreg.npy``). Refuses NaN rows (images RECOVAR left out)."""
    d = find_zdim(result_dir, zdim)
    f = Path(result_dir) / "model" / f"zdim_{d}" / ("latent_coords_noreg.npy" if noreg else "latent_coords.npy")
    if not f.is_file():
        raise InputError(f, "not found.", "Let `recovar pipeline` finish (it writes one per zdim).")
    z = np.load(f, allow_pickle=False).astype(np.float64)
    z = z.reshape(len(z), 1) if z.ndim == 1 else z
    if z.ndim != 2 or z.shape[1] != d or len(z) == 0:
        raise InputError(f, f"holds an array of shape {z.shape}, not latents (n_particles, {d}).",
                         "Give the latent_coords.npy recovar wrote.")
    bad = np.flatnonzero(~np.isfinite(z).all(1))
    if len(bad):
        raise InputError(f, f"{len(bad)} particles have no latent (NaN; e.g. particle {int(bad[0])}): RECOVAR "
                            "was run on a subset of the stack.", "Run it on every image (no --ind).")
    return z, f


def _analysis(result_dir, zdim: int, analysis) -> Path:
    a = Path(analysis) if analysis is not None else Path(result_dir) / f"analysis_{zdim}"
    if not a.is_dir():
        raise InputError(a, "analysis folder not found.",
                         f"Run `recovar analyze {result_dir} --zdim {zdim}`, or pass analysis= the folder "
                         "it wrote (-o).")
    return a


def read_kmeans(analysis) -> tuple[np.ndarray, np.ndarray, Path]:
    """(centers (K, d) float64, labels (n,) int64 0-based, the file) of
    ``<analysis>/data/kmeans_result.pkl``, a pickled dict of two numpy arrays (read with
    :func:`helpers.io.safe_pickle.load`, numpy only)."""
    f = Path(analysis) / "data" / "kmeans_result.pkl"
    if not f.is_file():
        raise InputError(f, "not found.", "Let `recovar analyze` finish (it writes data/kmeans_result.pkl).")
    obj = safe_pickle.load(f, "arrays")
    if not isinstance(obj, dict) or not {"centers", "labels"} <= set(obj):
        raise InputError(f, f"holds {type(obj).__name__} {sorted(obj) if isinstance(obj, dict) else ''}, not a dict "
                            "with 'centers' and 'labels'.", "Give the kmeans_result.pkl recovar analyze wrote.")
    centers = np.asarray(obj["centers"], dtype=np.float64)
    centers = centers.reshape(len(centers), 1) if centers.ndim == 1 else centers
    labels = np.asarray(obj["labels"]).reshape(-1)
    if centers.ndim != 2 or len(centers) == 0:
        raise InputError(f, f"centers have shape {centers.shape}, not (K, d).", "Give the file recovar wrote.")
    k = len(centers)
    if labels.size == 0 or labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= k:
        lo, hi = (labels.min(), labels.max()) if labels.size else (None, None)
        raise InputError(f, f"labels ({labels.dtype}, {lo} … {hi}) are not cluster indices 0 … {k - 1} for every "
                            "particle (a negative one marks an image RECOVAR left out).",
                         "Run RECOVAR on every image of the stack, and give the file its analyze wrote.")
    return centers, labels.astype(np.int64), f


def read_series(folder, prefix: str, n: int, voxel_size: float | None = None) -> tuple[np.ndarray, float, list[Path]]:
    """(maps (n, N, N, N) float32, voxel size Å, files) of ``<folder>/<prefix>000.mrc`` …
    ``<prefix>{n-1:03d}.mrc`` (RECOVAR's names; its half maps beside them are skipped).
    ``voxel_size`` only where the headers say 0."""
    folder = _folder(folder)
    files = [folder / f"{prefix}{i:03d}.mrc" for i in range(n)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(folder, f"lacks {len(missing)} of the {n} maps {prefix}000.mrc … (e.g. {missing[0]}).",
                         "Let `recovar analyze` finish, without --skip-centers.")
    extra = sorted(p.name for p in folder.glob(f"{prefix}[0-9][0-9][0-9].mrc") if p not in files)
    if extra:
        raise InputError(folder, f"holds more maps than the {n} expected (e.g. {extra[0]}).",
                         "Give the folder written with these labels / path points.")
    maps, sizes = [], set()
    for f in files:
        m, vs = read_mrc(f)
        maps.append(m)
        sizes.add(round(vs, 4) if vs else voxel_size)
    if len({m.shape for m in maps}) > 1:
        raise InputError(folder, f"maps of different boxes {sorted({m.shape[0] for m in maps})}.", "Give one box size.")
    if len(sizes) > 1 or None in sizes:
        raise InputError(folder, f"voxel sizes {sorted(map(str, sizes))} Å in the headers.",
                         "Give maps of one voxel size, or pass voxel_size= (Å) where the headers say 0.")
    return np.stack(maps).astype(np.float32), float(sizes.pop()), files


def _metadata(result_dir) -> dict:
    f = Path(result_dir) / "model" / "metadata.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def from_recovar(result_dir, zdim: int | None = None, analysis=None, images=None, label: str = "RECOVAR",
                 voxel_size: float | None = None, noreg: bool = False,
                 map_voxel_size: float | None = None) -> PerParticle:
    """RECOVAR's per-particle output: z (n, d) from ``model/zdim_<d>/``, state (n,) = k-means
    cluster of ``<analysis>/data/kmeans_result.pkl`` and volumes = the cluster-centre maps
    ``kmeans/centerNNN.mrc`` with populations = bincount(labels) / n. ``analysis``: the folder
    ``recovar analyze`` wrote (default ``<result_dir>/analysis_<d>``). ``images``: the data set
    (or its image count) whose count the particles must match. ``map_voxel_size`` (Å): the maps'
    voxel size in place of their headers' (recorded in the provenance). recovar 1.0.5 on CPU wrote
    32-px maps whose content is at half the header's voxel size, the central half of the field:
    its own simulated data set came back at 0.98 correlation with the input magnified twice, 0.26
    at the header's scale (``benchmarks/RESULTS.md``); the images' Nyquist stays that of the
    header (``native_voxel_size``)."""
    result_dir = _folder(result_dir)
    d = find_zdim(result_dir, zdim)
    z, zf = read_latents(result_dir, d, noreg)
    a = _analysis(result_dir, d, analysis)
    centers, labels, kf = read_kmeans(a)
    if len(labels) != len(z):
        raise InputError(kf, f"holds {len(labels)} labels but {zf} holds {len(z)} latents.",
                         "Give the analysis of this pipeline run.")
    if centers.shape[1] != d:
        raise InputError(kf, f"centers are {centers.shape[1]}-D but the latents {d}-D.",
                         "Pass the zdim the analysis was run with.")
    maps, vs, files = read_series(a / "kmeans", "center", len(centers), voxel_size)
    meta = _metadata(result_dir)
    pops = np.bincount(labels, minlength=len(centers)) / len(labels)
    prov = {"source": str(a / "kmeans"), "method": "RECOVAR", "files": [f.name for f in files], "steps": [],
            "labels": str(kf), "n_particles": int(len(labels)), "zdim": d, "kmeans": len(centers),
            "recovar_version": meta.get("recovar_version"), "regularised_z": not noreg}
    native = meta.get("voxel_size") or vs
    if map_voxel_size:
        if not map_voxel_size > 0:
            raise InputError(a / "kmeans", f"map_voxel_size = {map_voxel_size} Å is not a voxel size.",
                             "Give a positive size in Å, or none to keep the headers'.")
        prov["header_voxel_size_A"], vs = vs, float(map_voxel_size)
    vols = MapSet(maps, pops, vs, label, prov, native_voxel_size=native)
    out = PerParticle(label, z=z, state=labels, volumes=vols, provenance={**prov, "per_particle_file": str(zf)})
    out.check_images(images, kf)
    return out


def recovar_kmeans(result_dir, zdim: int | None = None, analysis=None, label: str = "RECOVAR",
                   voxel_size: float | None = None, images=None, map_voxel_size: float | None = None) -> MapSet:
    """The k-means centre maps of a RECOVAR analysis with their cluster fractions (:func:`from_recovar`)."""
    return from_recovar(result_dir, zdim, analysis, images, label, voxel_size, map_voxel_size=map_voxel_size).volumes


def recovar_trajectory(result_dir, zdim: int | None = None, traj: int = 0, analysis=None, label: str = "RECOVAR",
                       voxel_size: float | None = None, noreg: bool = False) -> MapSet:
    """The maps along RECOVAR's path ``traj<NNN>/stateNNN.mrc`` (m maps, in path order), at the
    points of its ``latent_coords.txt`` (m, d); populations = fraction of particles whose z is
    nearest (Euclidean) to each point (RECOVAR assigns none itself)."""
    result_dir = _folder(result_dir)
    d = find_zdim(result_dir, zdim)
    z, zf = read_latents(result_dir, d, noreg)
    folder = _analysis(result_dir, d, analysis) / f"traj{int(traj):03d}"
    pts_file = folder / "latent_coords.txt"
    if not pts_file.is_file():
        raise InputError(pts_file, "not found.", f"Run `recovar analyze` with --n-trajectories > {traj} (or zdim 1).")
    pts = np.loadtxt(pts_file, ndmin=2)
    pts = pts.reshape(-1, 1) if d == 1 and pts.shape[1] != 1 else pts
    if pts.shape[1] != d:
        raise InputError(pts_file, f"holds {pts.shape[1]}-D points but the latents are {d}-D.",
                         "Pass the zdim of this analysis.")
    maps, vs, files = read_series(folder, "state", len(pts), voxel_size)
    near = np.argmin(((z[:, None, :] - pts[None]) ** 2).sum(-1), 1)
    meta = _metadata(result_dir)
    prov = {"source": str(folder), "method": "RECOVAR trajectory", "files": [f.name for f in files], "steps": [],
            "path_points": pts.tolist(), "latents": str(zf), "zdim": d, "recovar_version": meta.get("recovar_version")}
    return MapSet(maps, np.bincount(near, minlength=len(pts)) / len(z), vs, label, prov,
                  native_voxel_size=meta.get("voxel_size") or vs)


def find_recovar(exe=None) -> str:
    """The ``recovar`` command: ``exe``, the project's ``.venv-recovar`` or one on PATH."""
    import shutil

    from helpers.core.paths import REPO_ROOT
    for c in ([exe] if exe else [REPO_ROOT / ".venv-recovar/bin/recovar"]):
        if c and Path(c).exists():
            return str(c)
    found = shutil.which("recovar")
    if found is None:
        raise InputError(exe or "recovar", "the RECOVAR command was not found.",
                         "Install it in its own environment (python3 -m venv .venv-recovar && "
                         ".venv-recovar/bin/pip install recovar), or pass exe= the path of `recovar`.")
    return found


def recovar_version(exe=None) -> str:
    """The installed recovar's version (its environment's package metadata), e.g. "1.0.5"."""
    import subprocess

    py = Path(find_recovar(exe)).parent / "python"
    if not py.exists():
        return "unknown"
    r = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('recovar'))"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


def _run(cmd: list, where) -> float:
    """Run one RECOVAR command (at lower CPU priority), returning its wall time in seconds."""
    import subprocess
    import time

    t0 = time.perf_counter()
    r = subprocess.run(["nice", "-n", "10", *map(str, cmd)], capture_output=True, text=True)
    if r.returncode != 0:
        tail = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()][-3:]
        raise InputError(where, f"`recovar {cmd[1]}` failed: {' | '.join(tail)}",
                         "Check the particles, poses and CTF, and the recovar version (see its run.log).")
    return time.perf_counter() - t0


def _coarse_density(result_dir: Path, zdim: int, points: int = 8) -> Path:
    """A Gaussian KDE of the latents on a ``points``^d grid (1st-99th percentile box), in the pickle
    ``recovar analyze --density`` reads. Without one, analyze computes its own on a 50^d grid, only
    to plot it: on CPU at zdim 4 that is 6.25 M points in batches of 9 (~700 k jax calls, ~100 min
    measured on 2 shared cores), at zdim 2 or 3 seconds."""
    import pickle

    from scipy.stats import gaussian_kde

    z = np.load(Path(result_dir) / "model" / f"zdim_{zdim}" / "latent_coords.npy").astype(np.float64)
    bounds = np.percentile(z, [1, 99], axis=0).T
    grid = np.meshgrid(*[np.linspace(lo, hi, points) for lo, hi in bounds], indexing="ij")
    dens = gaussian_kde(z.T)(np.stack([g.ravel() for g in grid])).reshape(grid[0].shape)
    f = Path(result_dir) / f"density_{zdim}.pkl"
    with open(f, "wb") as fh:
        pickle.dump({"density": dens / dens.max(), "latent_space_bounds": bounds}, fh)
    return f


def run_recovar(star, datadir, out, zdim: int = 4, n_clusters: int = 20, box: int | None = None, exe=None,
                n_bins: int | None = None, very_low_memory: bool = False) -> dict:
    """``recovar pipeline`` on the particles of a RELION 3.1 STAR file (poses, CTF and half-sets
    read from it by RECOVAR; images under ``datadir``), on CPU, downsampled by RECOVAR to ``box``
    px (None: the images' own size), with a spherical mask (``very_low_memory``: RECOVAR's
    ``--very-low-memory-option``, 25 covariance columns instead of 300), then ``recovar analyze
    --n-clusters`` (no UMAP; ``n_bins``: its kernel-regression bins, RECOVAR's default 50) into
    ``<out>/pipeline/analysis_<zdim>`` (recovar 1.0.5 writes to ``<pipeline>/Analyze/`` unless
    told ``-o``). At zdim ≥ 4 analyze is given a coarse latent density (:func:`_coarse_density`).
    An existing finished run is reused. Returns the options and times (s: this call's wall time
    of each command, or RECOVAR's own record of a reused one, :func:`job_seconds`)."""
    exe, out = find_recovar(exe), Path(out)
    res = out / "pipeline"
    times = {}
    if not (res / "model" / f"zdim_{zdim}" / "latent_coords.npy").is_file():
        out.mkdir(parents=True, exist_ok=True)
        size = ["--downsample", box] if box else ["--no-downsample"]
        times["pipeline_s"] = _run([exe, "pipeline", star, "--datadir", datadir, "--mask", "sphere", "-o", res,
                                    "--zdim", zdim, "--accept-cpu", *size,
                                    *(["--very-low-memory-option"] if very_low_memory else [])], star)
    analysis = res / f"analysis_{zdim}"
    if not (analysis / "kmeans" / f"center{n_clusters - 1:03d}.mrc").is_file():
        extra = ["--density", _coarse_density(res, zdim)] if zdim >= 4 else []
        times["analyze_s"] = _run([exe, "analyze", res, "-o", analysis, "--zdim", zdim, "--n-clusters", n_clusters,
                                   "--skip-umap", *(["--n-bins", n_bins] if n_bins else []), *extra], res)
    for key, folder in (("pipeline_s", res), ("analyze_s", analysis)):
        times.setdefault(key, job_seconds(folder))  # a reused step: RECOVAR's own record of it
    return {"result_dir": res, "zdim": zdim, "n_clusters": n_clusters, "box": box, "n_bins": n_bins,
            "very_low_memory": very_low_memory, **{k: round(v, 1) for k, v in times.items() if v is not None}}


def job_seconds(folder) -> float | None:
    """How long the RECOVAR command that wrote ``folder`` ran (s): ``timing.duration_seconds`` of
    its ``job.json`` (recovar ≥ 1.0), or None when absent."""
    f = Path(folder) / "job.json"
    try:
        return float(json.loads(f.read_text())["timing"]["duration_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def add_recovar_entry(data_dir, zdim: int = 4, n_clusters: int = 20, box: int | None = 32, name: str = "recovar",
                      label: str = "RECOVAR", exe=None, n_bins: int | None = None, very_low_memory: bool = False,
                      map_voxel_size: float | None = None) -> dict:
    """A real method's entry in a data folder with ``particles/`` and ``submissions/``: RECOVAR
    run on ``particles/particles.star`` (:func:`run_recovar`; ``box`` px, 32 by default: at the
    demo's 64 px RECOVAR takes over 30 min on 2 cores; 32 px is not yet timed), its k-means centre
    maps with the cluster fractions (:func:`recovar_kmeans`; ``map_voxel_size``: see :func:`from_recovar`)
    added as submission ``name`` with ``align=True``.
    Files go to ``<data_dir>/recovar/``; ``recovar/run.json`` records the version, options and
    times (s) and is returned. An existing entry is left alone (its record returned); nothing is
    overwritten. Raises :class:`InputError` when RECOVAR is absent."""
    from helpers.methods.adapters import write_submission

    data = Path(data_dir)
    record = data / "recovar" / "run.json"
    if (data / "submissions" / name).exists():
        return json.loads(record.read_text()) if record.is_file() else {"name": name}
    exe = find_recovar(exe)
    parts = data / "particles"
    run = run_recovar(parts / "particles.star", parts, data / "recovar", zdim, n_clusters, box, exe, n_bins,
                      very_low_memory)
    ms = recovar_kmeans(run["result_dir"], zdim, label=label, images=_count(parts / "particles.star"),
                        map_voxel_size=map_voxel_size)
    rec = {"name": name, "label": label, "recovar_version": recovar_version(exe), "zdim": zdim,
           "n_clusters": n_clusters, "voxel_size_A": ms.native_voxel_size, "map_voxel_size_A": ms.voxel_size,
           "mask": "sphere",
           "workdir": str(Path(run.pop("result_dir")).relative_to(data)), **run}
    write_submission(ms, data / "submissions", name=name, align=True)
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=2))
    tmp.replace(record)
    return rec


def _count(star) -> int:
    from helpers.io.labels import count_particles
    return count_particles(star)
