"""Streaming a GT set: its cached per-chunk statistics and the size of its chunks.

**GT cache** (:class:`GTCache`): the GT's statistics for one mask and set of options, with
their own chunk boundaries, reused for every submission; a call with another mask, GT, box or
options rebuilds it (never mixes layouts). Arrays are identified by :func:`_fingerprint` (shape,
dtype and a hash of their bytes, or of three maps of a large stack).

**Chunk sizes** (:func:`gt_step`): GT maps per chunk from the bytes of work each costs, capped
by a quarter of the device's free memory and by ``CHUNK_BYTES`` (CPU) / ``CHUNK_BYTES_GPU``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from helpers.core.backend import chunk_size

def _fingerprint(x) -> str:
    """Cheap identity of an array: shape, dtype and a hash of (a sample of) its bytes."""
    if x is None:
        return "none"
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    h = hashlib.sha1(repr((tuple(a.shape), str(a.dtype))).encode())
    if a.size * a.itemsize <= 64 * 2 ** 20:
        h.update(np.ascontiguousarray(a).tobytes())
    else:  # a large stack (a memory map): first, middle and last map
        for i in sorted({0, a.shape[0] // 2, a.shape[0] - 1}):
            h.update(np.ascontiguousarray(a[i]).tobytes())
    return h.hexdigest()


@dataclass
class _Entry:
    signature: tuple
    bounds: list        # [(start, stop)] GT rows of each cached part
    parts: list


@dataclass
class GTCache:
    """The GT's per-chunk statistics, reused for every submission scored against one GT.

    Each kind (``"stats"``, ``"fsc"``, ``"sw"``, ``"sw_binning"``) is stored with a *signature* (GT and mask
    fingerprints, box, mode, normalisation, background, options) and the GT row range of every
    part, so a later call iterates over the cached parts whatever its own chunk size, and a call
    whose signature differs rebuilds the entry instead of reading another layout. A plain
    ``dict`` passed as ``cache`` is wrapped (one GTCache is stored inside it)."""
    entries: dict = field(default_factory=dict)

    def lookup(self, kind: str, signature: tuple):
        e = self.entries.get(kind)
        if e is not None and e.signature != signature:
            del self.entries[kind]  # another GT/mask/options: never reuse
            return None
        return e

    def store(self, kind: str, signature: tuple, bounds: list, parts: list) -> _Entry:
        e = _Entry(signature, list(bounds), list(parts))
        self.entries[kind] = e
        return e


def _as_cache(cache) -> GTCache | None:
    if cache is None or isinstance(cache, GTCache):
        return cache
    return cache.setdefault("__gt_cache__", GTCache())



CHUNK_BYTES = 2 ** 30  # working memory per GT chunk in distance_matrices_many (CPU)
# on a GPU, larger chunks: fewer, larger products and copies (measured on an H200, 3000 × 128³
# against 320 submitted maps, with 2.7–2.9 s to stream the GT to the GPU at all: 18-map chunks
# 7.5 s; these 4 GiB = 72-map chunks 5.4–6.3 s; 64-map chunks 5.0–5.1 s)
CHUNK_BYTES_GPU = 4 * 2 ** 30


def gt_step(per_map: int, dev) -> int:
    """GT maps per chunk when each costs ``per_map`` bytes of work: what fits in a quarter of the
    free memory of ``dev``, at most :data:`CHUNK_BYTES` (CPU) / :data:`CHUNK_BYTES_GPU` of work, ≤ 1024.
    (Uncapped, a 224³ chunk took ~5 GB on a 24 GiB host: 6.7 GiB peak for the reference-mode FSC.)"""
    cap = CHUNK_BYTES_GPU if dev.type == "cuda" else CHUNK_BYTES
    return max(1, min(chunk_size(per_map, dev, maximum=1024), cap // per_map))


