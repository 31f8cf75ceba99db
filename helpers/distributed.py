"""Scale-out of the volume metrics on Dask (``dask.distributed``): GT chunks × all submissions.

The GT is cut into row ranges; each task opens the GT file itself (a memory-mapped ``.npy`` or
``.pt``, or a folder of MRC maps: no GT bytes pass through the scheduler), reads its rows once
and scores them against every submission for every fused metric
(:func:`helpers.volume_metrics.distance_matrices_many`); the submissions' maps are scattered to
the workers once. Tasks are pure functions of their row range, so Dask simply reruns a task
whose worker died, and the client writes each returned block into the rows it names: a chunk is
never lost or counted twice (tested by killing a worker mid-run).

Where to run (the ``dask_scheduler`` / ``dask_workers`` parameters of chapter 3):

* in-process (default, no Dask at all);
* a ``LocalCluster`` of N worker processes on this machine (``dask_workers: N``);
* an existing cluster by its scheduler address (``dask_scheduler: "tcp://host:8786"``), e.g. a
  SLURM allocation started with ``dask-jobqueue`` (README, "Scale out").

On a multi-GPU workstation start one worker per GPU (``CUDA_VISIBLE_DEVICES=i dask worker
<scheduler> --nthreads 1`` for each i): each worker's kernels use the one GPU it sees.
"""
from __future__ import annotations

import numpy as np

from .backend import progress


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


def _score_rows(gt_path, a: int, b: int, subs: dict, mask, metrics, voxel_size: float, delay: float = 0.0):
    """Worker side: rows a:b of the GT at ``gt_path`` against every submission."""
    import time

    from .io import read_gt_maps
    from .volume_metrics import distance_matrices_many

    if delay:  # tests only: keep a task running long enough to kill its worker
        time.sleep(delay)
    gt = read_gt_maps(gt_path, check_finite=False)
    block = np.asarray(gt[a:b], dtype=np.float32)
    res, failed = distance_matrices_many(block, subs, mask, metrics, voxel_size=voxel_size, gt_chunk=b - a,
                                         gt_label=f"GT rows {a}–{b - 1}")
    return a, b, res, {k: str(v) for k, v in failed.items()}


def distance_matrices_dask(client, gt_path, subs: dict, mask=None, metrics=("l2", "corr", "bioem", "fsc", "res"),
                           voxel_size: float = 1.0, rows_per_task: int = 64, _delay: float = 0.0):
    """:func:`helpers.volume_metrics.distance_matrices_many` on a Dask cluster.

    gt_path: the GT stack file or MRC folder (read by the workers); subs {label: maps on the GT
    grid}. Returns (results {label: {metric: (n_gt, n_l) array, "fsc_curves", "n_voxels"}},
    failures {label: message}), equal to the in-process result.
    """
    from distributed import as_completed

    from .io import read_gt_maps

    n_gt = read_gt_maps(gt_path, check_finite=False).shape[0]
    subs_f = client.scatter({k: np.asarray(v, dtype=np.float32) for k, v in subs.items()}, broadcast=True)
    mask_f = client.scatter(None if mask is None else np.asarray(mask, dtype=np.float32), broadcast=True)
    bounds = [(a, min(n_gt, a + rows_per_task)) for a in range(0, n_gt, rows_per_task)]
    futures = [client.submit(_score_rows, str(gt_path), a, b, subs_f, mask_f, list(metrics), voxel_size, _delay,
                             pure=False, retries=2, key=f"hetbook-rows-{a}-{b}-{id(subs_f)}") for a, b in bounds]
    out, failures, filled = {}, {}, np.zeros(n_gt, dtype=int)
    for fut in progress(as_completed(futures), total=len(futures), desc="GT chunks on Dask"):
        a, b, res, failed = fut.result()
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
