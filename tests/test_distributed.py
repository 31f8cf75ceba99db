"""Dask scale-out of the volume metrics: same numbers as in-process, and a killed worker loses
or duplicates no chunk."""
import os
import signal

import numpy as np
import pytest

from helpers.pipeline import distributed as hd
from helpers.kernels import gt_pass

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
            # not an exact affine copy: for one, BioEM's residual term T2 is pure rounding (clamped
            # near 0), so its value depends on how the products were blocked, not on the maps
            "b": (0.5 * g[[2, 9, 11]] + 0.2 + 0.05 * rng.standard_normal((3, n, n, n))).astype(np.float32),
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
    ref, ref_failed = gt_pass.distance_matrices_many(g, subs, mask, voxel_size=2.0)
    got, failed = hd.distance_matrices_dask(client, path, subs, mask, voxel_size=2.0, rows_per_task=4)
    assert set(failed) == set(ref_failed) == {"flat"}
    _same(got, ref)


def test_a_killed_worker_loses_and_duplicates_nothing(client, data):
    """Kill one worker process while tasks run (each sleeps 0.4 s): Dask reruns its tasks on the
    other worker (the nanny restarts the dead one); every GT row is filled exactly once and the
    matrices equal the in-process ones."""
    path, g, subs, mask = data
    subs = {k: v for k, v in subs.items() if k != "flat"}
    ref, _ = gt_pass.distance_matrices_many(g, subs, mask, voxel_size=2.0)
    pids = client.run(os.getpid)  # {worker address: pid}
    victim = sorted(pids.values())[0]
    import threading

    threading.Timer(0.6, lambda: os.kill(victim, signal.SIGKILL)).start()
    got, _ = hd.distance_matrices_dask(client, path, subs, mask, voxel_size=2.0, rows_per_task=1, _delay=0.4)
    assert victim not in client.run(os.getpid).values()  # the worker really died (and was replaced)
    _same(got, ref)


def test_submissions_lost_with_a_dead_worker_are_scattered_again(client, data, monkeypatch):
    """Scattered data dies with its worker and Dask cannot recompute it: the tasks needing it are
    cancelled ("lost dependencies", seen once in a full test run). Forced here: the first scatter
    goes to one worker only, which is killed before any task runs; the submissions are scattered
    again, the chunks rerun, and every row is filled once with the in-process numbers."""
    import time

    path, g, subs, mask = data
    subs = {k: v for k, v in subs.items() if k != "flat"}
    ref, _ = gt_pass.distance_matrices_many(g, subs, mask, voxel_size=2.0)
    pids = client.run(os.getpid)  # {worker address: pid}
    victim_addr, victim = sorted(pids.items())[0]
    orig, calls = client.scatter, []

    def scatter_then_kill(data, **kw):
        calls.append(kw.get("broadcast"))
        if len(calls) == 1:  # the payload (submissions and mask): on the victim alone, which dies
            kw.update(broadcast=False, workers=[victim_addr])
        fut = orig(data, **kw)
        if len(calls) == 1:
            os.kill(victim, signal.SIGKILL)
            time.sleep(0.5)
        return fut

    monkeypatch.setattr(client, "scatter", scatter_then_kill)
    got, _ = hd.distance_matrices_dask(client, path, subs, mask, voxel_size=2.0, rows_per_task=4)
    assert len(calls) == 2  # scattered twice: the first copy was lost
    _same(got, ref)


def test_scattered_payloads_get_fresh_keys(client):
    """A dict given to client.scatter is scattered value by value under its own keys ("Cg",
    "pg", a label …), shared by the whole cluster: a second pass scattering the same names
    while the first pass's are released lost its data (issue 36: "Could not find data: ['Cg',
    'pg', …]"). scatter_one gives every payload a fresh key and keeps it whole."""
    from helpers.core.dask_tasks import scatter_one

    a, b = scatter_one(client, {"Cg": 1, "pg": 2}), scatter_one(client, {"Cg": 1, "pg": 2})
    assert a.key != b.key and "Cg" not in (a.key, b.key)
    assert client.submit(lambda d: sorted(d), a).result() == ["Cg", "pg"]


def test_transport_pairs_on_dask_equal_in_process(client):
    """GW/PW rows as Dask tasks: the same matrices as the in-process loop (float64 POT solvers,
    deterministic), every row once."""
    from conftest import blob_volume
    from helpers.kernels import transport

    n = 16
    gt = np.stack([blob_volume(n, [((-3 + t, 0, 0), 1.0), ((3, t - 2, 1), 0.7)]) for t in range(5)]).astype(np.float32)
    sub = np.stack([blob_volume(n, [((-2 + t, 1, 0), 1.0), ((3, t - 1, 0), 0.6)]) for t in range(3)]).astype(np.float32)
    kw = dict(top_k=30, voxel_size=2.0, downsample=12)
    for sub_k in (sub, sub[::-1].copy(), sub[:2].copy()):  # pass after pass on one client, as chapter 3
        ref = transport.transport_matrices(gt, sub_k, n_jobs=1, **kw)   # scores submission after submission
        got = transport.transport_matrices(gt, sub_k, client=client, **kw)
        for m in ("gw", "pw"):
            np.testing.assert_allclose(got[m], ref[m], rtol=1e-10, atol=1e-12, err_msg=m)
    assert ref["pw"].std() > 0.1  # the maps differ: a test that could fail


def test_image_search_on_dask_equals_in_process(client):
    """Blocks of maps searched on Dask workers (each building its own ImageSearch) give the
    in-process search's arrays; a set that cannot be searched is returned as its error, the
    others are still scored."""
    from conftest import blob_volume
    from helpers.kernels import image_metrics as im

    n, M = 12, 6
    rng = np.random.default_rng(2)
    maps = np.stack([blob_volume(n, [((t - 2, 0, 1), 1.0), ((2, -t, 0), 0.8)], sigma=1.5) for t in range(5)]).astype(np.float32)
    imgs = rng.standard_normal((M, n, n))
    ctf = dict(defocus_u=rng.uniform(1e4, 2e4, M), defocus_v=rng.uniform(1e4, 2e4, M), defocus_angle=rng.uniform(0, 180, M),
               voltage=300.0, cs=2.7, amplitude_contrast=0.1)
    kw = dict(n_directions=12, n_inplane=4, max_shift=1, shift_step=1.0, refine_levels=1)
    ref = im.ImageSearch(imgs, 3.0, ctf, **kw).search(maps)
    got = hd.image_search_dask(client, imgs, 3.0, ctf, {"maps": maps, "bad": maps[:, :-1]}, maps_per_task=2, **kw)
    assert isinstance(got["bad"], Exception)
    for k, v in ref.items():
        if k != "seconds":
            assert got["maps"][k].shape == v.shape, k
            np.testing.assert_allclose(got["maps"][k], v, rtol=1e-4, atol=1e-4, err_msg=k)
    assert np.ptp(ref["logp_integrated"]) > 1.0  # the maps are told apart: a test that could fail


def test_a_scatter_cut_by_a_dying_worker_is_tried_again():
    """The separately-started-scheduler test once failed here: the killed worker closed the
    scheduler's stream mid-broadcast (``CommClosedError: ... ConnectionPool.scatter``)."""
    from distributed.comm.core import CommClosedError

    from helpers.core.dask_tasks import scatter_one

    class Flaky:
        def __init__(self, fails):
            self.fails, self.calls = fails, 0

        def scatter(self, objs, broadcast, hash):
            self.calls += 1
            if self.calls <= self.fails:
                raise CommClosedError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")
            return [("future", objs[0])]

    c = Flaky(fails=2)
    assert scatter_one(c, {"a": 1}, wait_s=0) == ("future", {"a": 1}) and c.calls == 3
    with pytest.raises(RuntimeError, match="failed 3 times"):
        scatter_one(Flaky(fails=3), {"a": 1}, wait_s=0)
