"""Subspace metrics: PCA of each map set, percentage of captured variance, common subspace
(``challenge-metrics.md`` §4–§5).

Per set (a submission, the GT, a mock): maps × mask → optional Fourier downsampling → flatten →
unit L2 norm per map → optional power-spectrum equalisation to a common spectrum (done by the
caller with :func:`helpers.kernels.normalise.equalise_spectra`) → centre → SVD X̃ = U S Vᵀ, keeping
rank r (exact SVD, or seeded randomised SVD for large sets).

* PCV(i, j) = ‖V_jᵀ V_i S_i‖²_F / ‖S_i‖²_F: the fraction of set i's rank-r variance lying in the
  span of set j's top-r directions (squared, asymmetric, in [0, 1]; ×100 for percent). The
  published main-branch variant ½[cv(i,j) + cv(j,i)] with cv unsquared is ``variant="published_main"``.
* Common subspace: SVD of the stacked [S_i V_iᵀ] of all submissions (column-mean removed);
  embedding of set i = U_i S_i V_iᵀ V_E (its centred rank-r maps in the common basis).
* Projection onto the GT axes: U_i S_i (V_iᵀ V_gt).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers.kernels.fourier import as_tensor, fourier_resample


@dataclass
class PCA:
    """PCA of one set: mean (D,), U (n, r), S (r,), V (D, r) (columns = principal directions)."""
    mean: torch.Tensor
    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor

    @property
    def variance_fraction(self) -> np.ndarray:
        s2 = (self.S.double() ** 2).numpy()
        return s2 / s2.sum()


def masked_downsample(maps, mask, box_ds: int, chunk_bytes: int | None = None, label: str = "maps",
                      background: bool = True) -> torch.Tensor:
    """maps (n, N, N, N) × mask, Fourier-resampled to ``box_ds``: (n, box_ds, box_ds, box_ds)
    float32; each map's solvent background (:func:`helpers.kernels.volume_input.background_level`) is
    subtracted before the mask is applied (``background=False``: already done), so an intensity
    offset changes nothing. A memory-mapped (or lazy MRC-folder) stack is streamed ``chunk_bytes`` at a time,
    so only the downsampled stack is ever held in memory (a 3861-map GT at 224³ is 174 GB; at
    box 64 it is 4 GB). Non-finite maps raise :class:`~helpers.core.errors.InputError` naming ``label``
    and the map indices (checked on the chunk in hand: no extra pass over the stack).
    ``chunk_bytes`` default: 512 MiB on a GPU; 256 MiB on a CPU, where the chunk's complex FFT
    then stays within the heap's reuse limit (``backend.MMAP_BYTES``: 800 maps at 96³ in 8.3 s,
    15.7 s with 512 MiB chunks)."""
    from helpers.core.backend import device

    dev = device()  # each chunk is masked and resampled on the GPU when there is one; the result stays on the host
    chunk_bytes = chunk_bytes or (2 ** 29 if dev.type == "cuda" else 2 ** 28)
    n, N = maps.shape[0], maps.shape[-1]
    step = max(1, chunk_bytes // (N ** 3 * 4 * 4))
    from helpers.kernels.volume_input import _check_finite, solvent_index, subtract_background

    w = torch.as_tensor(np.asarray(mask, dtype=np.float32), device=dev) if mask is not None else None
    solvent = solvent_index(w, dev) if (w is not None and background) else None  # once, not per chunk
    out = torch.empty((n, box_ds, box_ds, box_ds), dtype=torch.float32)
    for a in range(0, n, step):
        x = torch.from_numpy(np.array(maps[a:a + step], dtype=np.float32)).to(dev)  # a copy: memory maps are read-only
        _check_finite(x, label, a)  # one cheap sum, the full check only when it flags
        if w is not None:  # solvent background off before the mask (an offset would stamp the mask's shape)
            x = (subtract_background(x, w, dev, solvent) if background else x) * w
        out[a:a + step] = fourier_resample(x, box_ds).cpu()
    return out


LARGE_BYTES = 2 ** 30  # a float64 copy of the stack above this: float32 rows, Gram-matrix PCA


def prepare(maps, mask=None, box_ds: int | None = None, dtype=None) -> torch.Tensor:
    """maps (n, N, N, N) → (n, D) rows: mask weights, downsample, unit norm per map. float64,
    or float32 when a float64 copy would exceed ``LARGE_BYTES`` (a challenge-size GT: 3861 maps
    at 64³ are 8 GB in float64)."""
    x = as_tensor(maps)
    if mask is not None:
        x = x * as_tensor(mask)
    if box_ds and box_ds != x.shape[-1]:
        x = fourier_resample(x, box_ds)
    x = x.reshape(x.shape[0], -1)
    if dtype is None:
        dtype = torch.float64 if x.numel() * 8 <= LARGE_BYTES else torch.float32
    x = x.to(dtype)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)


def _pca_gram(X: torch.Tensor, rank: int, block: int = 2 ** 16) -> "PCA":
    """PCA from the n × n Gram matrix of the centred rows, accumulated in float64 over blocks of
    ``block`` columns: no centred (or float64) copy of X is made, so the memory is X itself +
    n² + D·r numbers. Same result as the SVD (X̃ = U S Vᵀ: X̃X̃ᵀ = U S² Uᵀ, V = X̃ᵀ U / S)."""
    n, D = X.shape
    dev = X.device
    mean = torch.zeros(D, dtype=torch.float64, device=dev)
    for c in range(0, D, block):
        mean[c:c + block] = X[:, c:c + block].double().mean(0)
    G = torch.zeros((n, n), dtype=torch.float64, device=dev)
    for c in range(0, D, block):
        xb = X[:, c:c + block].double() - mean[c:c + block]
        G += xb @ xb.T
    evals, evecs = torch.linalg.eigh(G)
    order = torch.argsort(evals, descending=True)
    r = min(rank, n - 1, D)
    S = evals[order].clamp_min(0).sqrt()
    U = evecs[:, order]
    V = torch.empty((D, r), dtype=torch.float64, device=dev)
    for c in range(0, D, block):
        xb = X[:, c:c + block].double() - mean[c:c + block]
        V[c:c + block] = (xb.T @ U[:, :r]) / S[:r].clamp_min(1e-300)
    sgn = torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))[0]
    sgn[sgn == 0] = 1
    return PCA(mean, U[:, :r] * sgn, S[:r], V * sgn)


def pca(X: torch.Tensor, rank: int, randomized: bool = False, seed: int = 0, n_iter: int = 4,
        method: str = "auto") -> PCA:
    """PCA of rows X (n, D): centre, then exact (or seeded randomised) SVD truncated to ``rank``.
    ``method="gram"`` (automatic when a float64 copy of X would exceed ``LARGE_BYTES`` and
    n ≤ 20000, or when X is wide, D ≥ 8 n, as for 80 maps of 32³ voxels: 6× faster than the SVD,
    the same S and V to ~1e-13): the exact PCA from the n × n Gram matrix, streamed over column
    blocks. ``method="svd"``: always the SVD."""
    auto = method == "auto" and not randomized and X.shape[0] <= 20000 and (
        X.numel() * 8 > LARGE_BYTES or X.shape[1] >= 8 * X.shape[0])
    if method == "gram" or auto:
        return _pca_gram(X, rank)
    X = X.double()
    mean = X.mean(0)
    Xc = X - mean
    r = min(rank, X.shape[0] - 1, X.shape[1])
    if randomized:
        g = torch.Generator().manual_seed(seed)
        omega = torch.randn(X.shape[1], r + 10, generator=g, dtype=X.dtype)
        Y = Xc @ omega
        for _ in range(n_iter):
            Y = Xc @ (Xc.T @ Y)
            Y, _ = torch.linalg.qr(Y)
        Q, _ = torch.linalg.qr(Y)
        Ub, S, Vt = torch.linalg.svd(Q.T @ Xc, full_matrices=False)
        U = Q @ Ub
    else:
        U, S, Vt = torch.linalg.svd(Xc, full_matrices=False)
    # deterministic signs: largest-|.| entry of each direction positive
    V = Vt[:r].T
    sgn = torch.sign(V.gather(0, V.abs().argmax(0, keepdim=True)))[0]
    sgn[sgn == 0] = 1
    return PCA(mean, U[:, :r] * sgn, S[:r], V * sgn)


def pcv(a: PCA, b: PCA) -> float:
    """Fraction of a's rank-r variance captured by b's subspace: ‖V_bᵀ V_a S_a‖² / ‖S_a‖²."""
    M = b.V.T @ (a.V * a.S)
    return float((M ** 2).sum() / (a.S ** 2).sum())


def pcv_matrix(pcas: dict, variant: str = "squared") -> tuple[np.ndarray, list]:
    """PCV between all sets: M[i, j] = fraction of i's variance captured by j (rows = reference,
    columns = capturing set). ``variant="published_main"``: symmetric mean of unsquared ratios."""
    labels = list(pcas)
    n = len(labels)
    M = np.eye(n)
    for i, a in enumerate(labels):
        for j, b in enumerate(labels):
            if i != j:
                M[i, j] = pcv(pcas[a], pcas[b])
    if variant == "published_main":
        R = np.sqrt(M)
        M = 0.5 * (R + R.T)
    elif variant != "squared":
        raise ValueError(variant)
    return M, labels


def common_subspace(pcas: dict, rank: int):
    """Common basis from the stacked weighted directions [S_i V_iᵀ] (column mean removed).
    Returns (V_E (D, rank), singular values)."""
    E = torch.cat([(p.V * p.S).T for p in pcas.values()], 0)
    E = E - E.mean(0)
    _, S, Vt = torch.linalg.svd(E, full_matrices=False)
    return Vt[:rank].T, S[:rank]


def embed(p: PCA, basis: torch.Tensor) -> np.ndarray:
    """Coordinates (n, k) of a set's centred rank-r maps U S Vᵀ in an orthonormal basis (D, k)."""
    return ((p.U * p.S) @ (p.V.T @ basis)).numpy()


def project_on(p: PCA, ref: PCA, k: int = 2) -> np.ndarray:
    """Coordinates (n, k) of a set's rank-r maps on ``ref``'s first k principal axes, measured
    from ``ref``'s mean: (U S Vᵀ + mean_p − mean_ref) V_ref. Every set shares the GT's origin, so a
    submission whose maps sit where the GT's do lands on the same coordinates (centring each set
    on its own mean, as :func:`embed` does, shifts a set with another population balance)."""
    X = (p.U * p.S) @ p.V.T + (p.mean - ref.mean)[None]
    return (X @ ref.V[:, :k]).numpy()
