"""Device choice, memory-sized chunking and progress bars.

All kernels are written in torch and run where :func:`device` says: the first CUDA GPU when
one is visible (unless ``HETBOOK_DEVICE`` overrides it), the CPU otherwise.
"""
from __future__ import annotations

import os

import torch
from tqdm.auto import tqdm  # noqa: F401  (re-exported: one progress-bar style everywhere)


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


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that stays quiet when ``HETBOOK_QUIET`` is set (tests)."""
    kwargs.setdefault("disable", bool(os.environ.get("HETBOOK_QUIET")))
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)
