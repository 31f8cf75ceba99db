"""Run the chapters as a dependency graph: up to ``jobs`` at once, each as soon as the chapters it
reads (:data:`helpers.pipeline.fingerprint.DEPENDS`) have finished.

On the demo the chapters' graph is wide: 01 and 07 read no other chapter, and 03, 04 and 06 read only
02. Run one after another, the eight chapters used ~1.4 of 2 cores (the kernels' Python-bound parts
use one); run two at a time, each kernel limited to ``cpus // jobs`` threads, the cores stay busy.
Each chapter's results still go through its own staging folder and are committed to the run's
manifest one chapter at a time (:func:`run_graph` serialises ``commit``), so a chapter never reads a
half-written result, and a failure stops new chapters from starting while those running finish.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable


def effective_jobs(jobs: int | None, n_items: int) -> int:
    """The number of chapters to run at once: ``jobs`` (≥ 1), at most the CPU count and the number
    of chapters."""
    return max(1, min(int(jobs or 1), os.cpu_count() or 1, n_items))


def kernel_threads(jobs: int) -> int:
    """Threads per kernel (``OMP_NUM_THREADS`` for torch and BLAS) when ``jobs`` run at once."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


# seconds each chapter took in the demo book, two at a time (2026-12-07, 2 cores; the methods step:
# cryoDRGN's training and maps): the scheduler's guess for a run folder that has no timings of its
# own yet (the manifest's ``seconds`` win)
TYPICAL_SECONDS = {"00_methods": 110, "01_data": 10, "02_preprocessing": 27, "03_volume_metrics": 84, "04_subspace": 36,
                   "05_distribution": 52, "06_image_metrics": 149, "07_robustness": 158, "08_summary": 33,
                   "09_per_particle": 45}


METHODS_STEP = "00_methods"  # the real methods' entries (cryoDRGN, RECOVAR) added to the demo data
METHOD_PARTS = ("submissions", "cryodrgn", "recovar")  # what that step writes in the data folder


def with_step(items: list[str], depends: dict, reads: dict, step: str = METHODS_STEP,
              writes: tuple = METHOD_PARTS, beside: bool = True) -> tuple[list[str], dict]:
    """``items`` with a data step first and ``depends`` with the step added to every item that
    reads (``reads``: item -> parts of the data folder) what the step writes: the chapters that
    read only the GT and the particles (the data overview, the robustness study) run beside it.
    ``beside=False``: every item waits for the step. On 2 cores that is the faster way: cryoDRGN
    on one thread beside the robustness study took 18 s per epoch (5 s alone on two) and both
    slowed (240 s and 212 s against ~115 s and ~165 s; the whole run 462 s either way, 2026-12-07),
    so the runner puts chapters beside it only with 3 or more jobs."""
    deps = {k: list(v) for k, v in depends.items()}
    for i in items:
        if not beside or any(r.split("/")[0] in writes for r in reads.get(i, ())):
            deps[i] = [*deps.get(i, []), step]
    return [step, *items], {**deps, step: []}


def critical_path(items: list[str], depends: dict[str, Iterable[str]], cost: dict[str, float]) -> dict[str, float]:
    """{item: its cost plus the longest chain of items that wait for it} (the "bottom level" of list
    scheduling); an item without a cost counts 1 s. Starting the ready item with the longest chain
    first keeps the long chapters off the end of the run."""
    chosen = set(items)
    users = {i: [j for j in items if i in depends.get(j, ())] for i in items}
    level: dict[str, float] = {}

    def bottom(i: str, seen: tuple = ()) -> float:
        if i in seen:
            raise ValueError(f"the dependencies of {list(seen)} form a cycle")
        if i not in level:
            level[i] = float(cost.get(i, 1.0)) + max((bottom(j, seen + (i,)) for j in users[i] if j in chosen), default=0.0)
        return level[i]

    for i in items:
        bottom(i)
    return level


def run_graph(items: list[str], depends: dict[str, Iterable[str]], work: Callable[[str], str], jobs: int,
              cost: dict[str, float] | None = None) -> dict[str, str]:
    """Run ``work(item)`` for every item, never before the items it depends on (dependencies
    outside ``items`` are taken as done) and with at most ``jobs`` running at once. One at a time,
    in list order where free to choose; several at a time, the ready item with the longest
    :func:`critical_path` under ``cost`` (seconds) first, list order breaking ties. ``work``
    returns "ran", "skipped" or "failed"; after a failure nothing new starts and the running ones
    finish. Returns {item: outcome} for the items that were started."""
    chosen = set(items)
    needs = {i: {d for d in depends.get(i, ()) if d in chosen} for i in items}
    outcome: dict[str, str] = {}
    pending = list(items)
    if jobs <= 1:  # in this thread (Ctrl-C stops the chapter that runs): the first item whose inputs are done
        while pending:
            i = next((i for i in pending if needs[i] <= outcome.keys()), None)
            if i is None:
                raise ValueError(f"the dependencies of {pending} form a cycle")
            pending.remove(i)
            outcome[i] = work(i)
            if outcome[i] == "failed":
                break
        return outcome
    level = critical_path(items, depends, cost or {})
    running: dict = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            failed = any(v == "failed" for v in outcome.values())
            ready = [] if failed else sorted((i for i in pending if needs[i] <= outcome.keys()),
                                             key=lambda i: (-level[i], items.index(i)))
            for i in ready[: max(0, jobs - len(running))]:
                pending.remove(i)
                running[pool.submit(work, i)] = i
            if not running:
                break  # a failure left the rest unstartable
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                outcome[running.pop(f)] = f.result()
    return outcome


def expected_seconds(results: Path | None) -> dict[str, float]:
    """Each chapter's seconds in this run folder's last run (the manifest), else the demo's typical
    ones (:data:`helpers.pipeline.schedule.TYPICAL_SECONDS`): the scheduler's costs."""
    from helpers.io import manifest

    seen = {}
    if results is not None and (results / manifest.NAME).is_file():
        seen = {k: v["seconds"] for k, v in manifest.read(results).get("chapters", {}).items() if v.get("seconds")}
    return {**TYPICAL_SECONDS, **seen}


def ipc_kernel_manager(env: dict):
    """A jupyter KernelManager on local IPC sockets whose kernel gets the environment ``env``
    (given per kernel, so that chapters run at once in threads never share ``os.environ`` edits):
    the kernel is on this machine anyway, and over TCP ipykernel prints a warning about
    unencrypted traffic for every chapter."""
    import tempfile
    import uuid

    from jupyter_client.manager import KernelManager

    class IPCKernelManager(KernelManager):
        def __init__(self, **kw):
            kw.setdefault("transport", "ipc")
            # the socket files' prefix, unique per kernel: two kernels started at once would
            # otherwise pick the same names (ports 1, 2, …) and read each other's messages
            kw.setdefault("ip", os.path.join(tempfile.gettempdir(), f"hetbook-{uuid.uuid4().hex[:12]}"))
            super().__init__(**kw)

        def start_kernel(self, **kw):
            kw.setdefault("env", env)
            return super().start_kernel(**kw)

        async def _async_interrupt_kernel(self):  # sent before every shutdown: an idle kernel then printed
            if not self.shutting_down:  # "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel."
                await super()._async_interrupt_kernel()
    return IPCKernelManager
