"""Scale-out on Dask (``dask.distributed``): GT chunks × all submissions (chapter 3's volume
metrics), rows of GW/PW pairs (chapter 3, through ``transport.transport_matrices(client=…)``)
and blocks of maps in the image pose search (chapter 6, :func:`image_search_dask`).

The GT is cut into row ranges; each task opens the GT file itself (a memory-mapped ``.npy`` or
``.pt``, or a folder of MRC maps: no GT bytes pass through the scheduler), reads its rows once
and scores them against every submission for every fused metric
(:func:`helpers.kernels.gt_pass.distance_matrices_many`); the submissions' maps are scattered to
the workers once, as one object under a fresh key (:mod:`helpers.core.dask_tasks`). Tasks are pure
functions of their row range, so Dask simply reruns a task whose worker died, and the client
writes each returned block into the rows it names: a chunk is never lost or counted twice
(tested by killing a worker mid-run). Scattered data lost with a dead worker cancels the tasks
that need it (Dask cannot recompute it): it is then scattered again and those tasks
resubmitted (up to three times each), or a clear error ends the pass.

Where to run (the ``dask_scheduler`` / ``dask_workers`` parameters of chapters 3 and 6):

* in-process (default, no Dask at all);
* a ``LocalCluster`` of N worker processes on this machine (``dask_workers: N``);
* an existing cluster by its scheduler address (``dask_scheduler: "tcp://host:8786"``), e.g. a
  SLURM allocation started with ``dask-jobqueue`` (README, "Scale out").

On a multi-GPU workstation start one worker per GPU (``CUDA_VISIBLE_DEVICES=i dask worker
<scheduler> --nthreads 1`` for each i): each worker's kernels use the one GPU it sees.
"""
from __future__ import annotations

import numpy as np



def make_client(scheduler: str = "", n_workers: int = 0):
    """A ``distributed.Client`` for an existing scheduler address, or for a new LocalCluster of
    ``n_workers`` single-threaded worker processes; None when neither is asked for."""
    if not scheduler and not n_workers:
        return None
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    return Client(cluster)


def _score_rows(payload: dict, gt_path, a: int, b: int, metrics, voxel_size: float, delay: float = 0.0):
    """Worker side: rows a:b of the GT at ``gt_path`` against every submission of ``payload``
    (dict(subs={label: maps}, mask))."""
    import time

    from helpers.io.gt import read_gt_maps
    from helpers.kernels.gt_pass import distance_matrices_many

    if delay:  # tests only: keep a task running long enough to kill its worker
        time.sleep(delay)
    gt = read_gt_maps(gt_path, check_finite=False)
    block = np.asarray(gt[a:b], dtype=np.float32)
    res, failed = distance_matrices_many(block, payload["subs"], payload["mask"], metrics, voxel_size=voxel_size,
                                         gt_chunk=b - a, gt_label=f"GT rows {a}–{b - 1}")
    return a, b, res, {k: str(v) for k, v in failed.items()}


def distance_matrices_dask(client, gt_path, subs: dict, mask=None, metrics=("l2", "corr", "bioem", "fsc", "res"),
                           voxel_size: float = 1.0, rows_per_task: int = 64, _delay: float = 0.0):
    """:func:`helpers.kernels.gt_pass.distance_matrices_many` on a Dask cluster.

    gt_path: the GT stack file or MRC folder (read by the workers); subs {label: maps on the GT
    grid}. Returns (results {label: {metric: (n_gt, n_l) array, "fsc_curves", "n_voxels"}},
    failures {label: message}), equal to the in-process result.
    """
    from helpers.core.dask_tasks import run_tasks
    from helpers.io.gt import read_gt_maps

    n_gt = read_gt_maps(gt_path, check_finite=False).shape[0]
    payload = {"subs": {k: np.asarray(v, dtype=np.float32) for k, v in subs.items()},
               "mask": None if mask is None else np.asarray(mask, dtype=np.float32)}
    bounds = [(str(gt_path), a, min(n_gt, a + rows_per_task), list(metrics), voxel_size, _delay)
              for a in range(0, n_gt, rows_per_task)]
    out, failures, filled = {}, {}, np.zeros(n_gt, dtype=int)
    for _, (a, b, res, failed) in run_tasks(client, _score_rows, payload, bounds, "GT chunks on Dask"):
        failures.update(failed)
        filled[a:b] += 1
        for lab, r in res.items():
            dst = out.setdefault(lab, {})
            for k, v in r.items():
                if isinstance(v, np.ndarray):
                    if k not in dst:
                        dst[k] = np.full((n_gt, *v.shape[1:]), np.nan, dtype=v.dtype)
                    dst[k][a:b] = v
                else:
                    dst[k] = v
    if not (filled == 1).all():  # every row exactly once (a rerun task replaces, never adds)
        raise RuntimeError(f"GT rows scored {filled.min()}–{filled.max()} times: a chunk was lost or duplicated")
    return out, failures


_SEARCHES: dict = {}  # worker side: the ImageSearch of the current images (built once per worker)


def _search_block(spec: dict, label: str, a: int, b: int, maps):
    """Worker side: maps a:b of one set (``maps``, that block) searched against the particle images of ``spec``."""
    from helpers.kernels.image_metrics import ImageSearch

    s = _SEARCHES.get(spec["key"])
    if s is None:
        _SEARCHES.clear()
        s = _SEARCHES[spec["key"]] = ImageSearch(spec["images"], spec["pixel_size"], spec["ctf"], **spec["kwargs"])
    return label, a, b, s.search(np.asarray(maps), f"{label} {a}–{b - 1}")


def image_search_dask(client, images, pixel_size: float, ctf_params: dict, sets: dict, maps_per_task: int = 8,
                      **search_kwargs) -> dict:
    """:meth:`helpers.kernels.image_metrics.ImageSearch.search` of every map set on a Dask cluster.

    images (M, n, n), pixel_size Å, ctf_params and ``search_kwargs`` as for ``ImageSearch``;
    sets {label: maps (L, n, n, n) on the images' grid}. Tasks are blocks of ``maps_per_task``
    maps of one set (the block travels with its task, so a rerun task needs nothing that died
    with a worker); each worker builds the search (CTFs, shifted image spectra) once and keeps
    it. Returns {label: the dict ``search`` returns ((M, L) arrays; ``seconds`` summed over the
    tasks), or the exception that set's tasks raised}. A rerun task (its worker died) replaces
    its columns; every column is filled exactly once or an error says which were not.
    """
    import hashlib

    from helpers.core.dask_tasks import run_tasks

    imgs = np.asarray(images, dtype=np.float64)
    key = hashlib.sha1(imgs.tobytes() + repr((pixel_size, sorted(search_kwargs.items()))).encode()).hexdigest()
    spec = {"key": key, "images": imgs, "pixel_size": float(pixel_size),
            "ctf": {k: np.asarray(v) if np.ndim(v) else v for k, v in ctf_params.items()}, "kwargs": search_kwargs}
    tasks, sizes = [], {}
    for lab, maps in sets.items():
        maps = np.asarray(maps, dtype=np.float32)
        sizes[lab] = len(maps)
        tasks += [(lab, a, min(len(maps), a + maps_per_task), maps[a:a + maps_per_task])
                  for a in range(0, len(maps), maps_per_task)]
    out, filled, errors = {}, {lab: np.zeros(n, dtype=int) for lab, n in sizes.items()}, {}
    for (lab, a, b, _), got in run_tasks(client, _search_block, spec, tasks, "pose search on Dask",
                                         return_exceptions=True):
        if isinstance(got, BaseException):  # a set's failure is reported for that set, the others go on
            errors.setdefault(lab, got)
            continue
        r = got[3]
        dst = out.setdefault(lab, {"seconds": 0.0})
        for k, v in r.items():
            if k == "seconds":
                dst[k] += v
                continue
            if k not in dst:
                dst[k] = np.full((v.shape[0], sizes[lab], *v.shape[2:]), np.nan, dtype=v.dtype)
            dst[k][:, a:b] = v
        filled[lab][a:b] += 1
    for lab in sets:
        if lab in errors:
            out[lab] = errors[lab]
        elif not (filled[lab] == 1).all():
            out[lab] = RuntimeError(f"{lab}: maps searched {filled[lab].min()}–{filled[lab].max()} times")
    return out
