"""Dask scale-out of the volume metrics: same numbers as in-process, and a killed worker loses
or duplicates no chunk."""
import os
import signal

import numpy as np
import pytest

from helpers import distributed as hd
from helpers import volume_metrics as vm

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    c = hd.make_client(n_workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(5)
    n = 10
    g = rng.standard_normal((13, n, n, n)).astype(np.float32)
    path = tmp_path_factory.mktemp("gt") / "maps_gt.npy"
    np.save(path, g)
    subs = {"a": (g[[1, 6]] + rng.standard_normal((2, n, n, n))).astype(np.float32),
            "b": (0.5 * g[[2, 9, 11]] + 0.2).astype(np.float32),
            "flat": np.zeros((2, n, n, n), np.float32)}
    c = np.arange(n) - n // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    mask = np.clip((4 - r) / 2, 0, 1).astype(np.float32)
    return path, g, subs, mask


def _same(got, ref):
    for lab in ref:
        for m in ("l2", "corr", "bioem", "fsc", "res", "fsc_curves"):
            np.testing.assert_allclose(got[lab][m], ref[lab][m], rtol=1e-6, atol=1e-6, err_msg=f"{lab} {m}")


def test_dask_equals_in_process(client, data):
    path, g, subs, mask = data
    ref, ref_failed = vm.distance_matrices_many(g, subs, mask, voxel_size=2.0)
    got, failed = hd.distance_matrices_dask(client, path, subs, mask, voxel_size=2.0, rows_per_task=4)
    assert set(failed) == set(ref_failed) == {"flat"}
    _same(got, ref)


def test_a_killed_worker_loses_and_duplicates_nothing(client, data):
    """Kill one worker process while tasks run (each sleeps 0.4 s): Dask reruns its tasks on the
    other worker (the nanny restarts the dead one); every GT row is filled exactly once and the
    matrices equal the in-process ones."""
    path, g, subs, mask = data
    subs = {k: v for k, v in subs.items() if k != "flat"}
    ref, _ = vm.distance_matrices_many(g, subs, mask, voxel_size=2.0)
    pids = client.run(os.getpid)  # {worker address: pid}
    victim = sorted(pids.values())[0]
    import threading

    threading.Timer(0.6, lambda: os.kill(victim, signal.SIGKILL)).start()
    got, _ = hd.distance_matrices_dask(client, path, subs, mask, voxel_size=2.0, rows_per_task=1, _delay=0.4)
    assert victim not in client.run(os.getpid).values()  # the worker really died (and was replaced)
    _same(got, ref)
