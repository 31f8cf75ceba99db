"""Dask task plumbing shared by every scale-out path (volume rows, transport pairs, pose search).

Two rules, each the cause of a failure seen on a real cluster:

* **Scatter one object under a fresh key.** ``client.scatter(d)`` with a *dict* ``d`` scatters
  each value under the dict's own keys (``"Cg"``, ``"pg"``, a submission's label …), which are
  global on the cluster: a second pass that scatters the same names while the first pass's
  futures are being released loses its data ("lost dependencies", "Could not find data: ['Cg',
  'pg', …]"). :func:`scatter_one` wraps the object in a list, so Dask gives it a unique key.
* **Keep the payload's future alive for the whole pass, and scatter it again on loss.** Data
  scattered to a worker that dies cannot be recomputed (dask/distributed#3149): the tasks that
  need it are cancelled. :func:`run_tasks` then scatters the payload again and resubmits those
  tasks (at most ``max_attempts`` times each), and ends with a clear error, never a hang.
"""
from __future__ import annotations

import itertools
import uuid
from concurrent.futures import CancelledError

from helpers.core.backend import progress


def scatter_one(client, obj, broadcast: bool = True, attempts: int = 3, wait_s: float = 1.0):
    """One future holding ``obj`` (any object, a dict included) under a fresh, unique key. A worker
    that dies while the data is broadcast closes the scheduler's connection (``CommClosedError``,
    an ``OSError``): the scatter is tried again, ``attempts`` times in all, ``wait_s`` × attempt
    apart, so the scheduler can drop the dead worker first."""
    import time

    for attempt in range(1, attempts + 1):
        try:
            return client.scatter([obj], broadcast=broadcast, hash=False)[0]
        except OSError as exc:
            if attempt == attempts:
                raise RuntimeError(f"scattering the data to the Dask workers failed {attempts} times ({exc}); "
                                   "check that the workers stay up (memory, logs)") from exc
            time.sleep(wait_s * attempt)


def run_tasks(client, fn, payload, args: list[tuple], desc: str, max_attempts: int = 3, retries: int = 2,
              return_exceptions: bool = False):
    """Run ``fn(payload, *a)`` for every ``a`` in ``args`` on the cluster; yield (a, result) as
    tasks finish, each ``a`` exactly once.

    ``payload`` is scattered once to every worker (:func:`scatter_one`) and its future kept for
    the pass. A task whose worker dies is rerun by Dask (``retries``); a task cancelled because
    the payload was lost with its worker is resubmitted after scattering the payload again, up
    to ``max_attempts`` times, then a RuntimeError names the task. A progress bar counts tasks
    done / total on the terminal (stderr). With ``return_exceptions`` a task's own exception is
    yielded as its result instead of raised (the other tasks go on)."""
    from distributed import as_completed

    run, serial = uuid.uuid4().hex[:12], itertools.count()
    state = {"gen": 0, "payload": scatter_one(client, payload)}
    where = {}

    def submit(a, attempt):
        f = client.submit(fn, state["payload"], *a, pure=False, retries=retries,
                          key=f"hetbook-{fn.__name__}-{run}-{next(serial)}")
        where[f.key] = (a, attempt, state["gen"])
        return f

    pending = as_completed([submit(a, 0) for a in args])
    bar = progress(total=len(args), desc=desc)
    try:
        for fut in pending:
            a, attempt, gen = where.pop(fut.key)
            try:
                res = fut.result()
            except CancelledError:
                if attempt + 1 >= max_attempts:
                    raise RuntimeError(f"{desc}: task {a} cancelled {attempt + 1} times on Dask (workers keep "
                                       "dying; check their memory and logs)") from None
                if gen == state["gen"]:  # scatter again once per loss, not once per cancelled task
                    state["gen"] += 1
                    state["payload"] = scatter_one(client, payload)
                pending.add(submit(a, attempt + 1))
                continue
            except Exception as exc:  # noqa: BLE001 — the task's own error
                if not return_exceptions:
                    raise
                res = exc
            bar.update(1)
            yield a, res
    finally:
        bar.close()
