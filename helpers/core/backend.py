"""Device choice, memory-sized chunking and progress bars.

All kernels are written in torch and run where :func:`device` says: the first CUDA GPU when
one is visible (unless ``HETBOOK_DEVICE`` overrides it), the CPU otherwise.

**Large temporaries on the CPU** (:func:`reuse_large_allocations`, applied on import): glibc
serves every allocation over 32 MiB (one 128³ map chunk, its FFT, its masked copy …) with
fresh pages from the kernel and returns them on free, so each temporary is page-faulted and
zeroed again: at 128³ the volume metrics spent more time in the kernel than computing (62.5 ms
per GT map against 80 maps; 14.2 ms with the pages kept). hetbook lets glibc serve allocations
up to 256 MiB from its heap and keep up to 1 GiB of free memory at the heap's top for reuse;
larger allocations are still mapped and returned (a 1 GiB limit for both was ~15 % faster on
chapter 3 at 96³ but raised its peak memory from 5.6 to 9.2 GiB). ``HETBOOK_MALLOC=system``
leaves glibc's defaults; ``HETBOOK_MALLOC=M,T`` sets the two limits in bytes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch
from tqdm.auto import tqdm  # noqa: F401  (re-exported: one progress-bar style everywhere)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MMAP_BYTES = 1 << 28  # allocations up to 256 MiB come from the heap and are reused when freed
TRIM_BYTES = 1 << 30  # free memory at the top of the heap kept for reuse (beyond it: returned)


def reuse_large_allocations(mmap_bytes: int | None = None, trim_bytes: int | None = None) -> bool:
    """Let glibc reuse freed allocations up to ``mmap_bytes`` instead of mapping fresh pages for
    each one, and keep up to ``trim_bytes`` of free memory at the top of the heap (see the module
    docstring). ``HETBOOK_MALLOC`` = ``"system"`` leaves glibc's defaults; ``"M,T"`` (bytes)
    overrides the two defaults. Returns True when applied (Linux with glibc), else False."""
    env = os.environ.get("HETBOOK_MALLOC", "")
    if env == "system" or not sys.platform.startswith("linux"):
        return False
    m, t = (int(v) for v in env.split(",")) if "," in env else (MMAP_BYTES, TRIM_BYTES)
    mmap_bytes, trim_bytes = mmap_bytes or m, trim_bytes or t
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries: leave them alone
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_bytes)) and mallopt(M_TRIM_THRESHOLD, int(trim_bytes)))


MALLOC_TUNED = reuse_large_allocations()


def device(prefer: str | None = None) -> torch.device:
    """Return the torch device to compute on.

    ``prefer`` (or the environment variable ``HETBOOK_DEVICE``) may be ``"cpu"``, ``"cuda"``
    or ``"cuda:1"``; by default CUDA is used when available.
    """
    choice = prefer or os.environ.get("HETBOOK_DEVICE")
    if choice:
        return torch.device(choice)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_bytes(dev: torch.device) -> int:
    """Free memory on ``dev`` in bytes (GPU: free device memory; CPU: available RAM)."""
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


def chunk_size(bytes_per_item: int, dev: torch.device, fraction: float = 0.25,
               minimum: int = 1, maximum: int | None = None) -> int:
    """How many items of ``bytes_per_item`` fit in ``fraction`` of the free memory of ``dev``."""
    n = max(minimum, int(available_bytes(dev) * fraction) // max(1, bytes_per_item))
    return min(n, maximum) if maximum else n


_TERMINAL: dict = {}


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that stays quiet when ``HETBOOK_QUIET`` is set (tests).

    Inside a chapter run by :mod:`helpers.pipeline.run` (``HETBOOK_PROGRESS`` names a file the runner
    copies to its terminal as it grows) the bar is drawn there, not into the notebook's output:
    the reader of the book sees no progress bars, the person running it sees every one."""
    kwargs.setdefault("disable", bool(os.environ.get("HETBOOK_QUIET")))
    kwargs.setdefault("leave", False)
    path = os.environ.get("HETBOOK_PROGRESS")
    if path and "file" not in kwargs:
        from tqdm.std import tqdm as text_tqdm  # tqdm.auto would draw a widget in the notebook instead

        if _TERMINAL.get("path") != path:
            _TERMINAL.update(path=path, fh=open(path, "a", buffering=1, encoding="utf-8"))
        kwargs.update(file=_TERMINAL["fh"], ncols=kwargs.get("ncols", 100))
        return text_tqdm(iterable, **kwargs)
    return tqdm(iterable, **kwargs)


SUB_CHUNK_BYTES = 2 ** 29  # working memory for a chunk of submitted maps (their copies and transforms)


def sub_step(n: int, copies: int = 8) -> int:
    """Submitted maps of box ``n`` prepared at a time: ``copies`` float32 copies of each fit in
    :data:`SUB_CHUNK_BYTES` (1 map at 224³, 64 at 64³). A whole 80-map set at 224³ prepared at
    once held ~12 GB of copies in :func:`fsc_matrix` and ~8 GB in :func:`distance_matrices`."""
    return max(1, SUB_CHUNK_BYTES // (n ** 3 * 4 * copies))
