"""Per-particle latent-space scores: neighbourhood similarity, information imbalance, pose error
(CryoBench, Jeon et al. 2024), and a table of them against the GT conformation and nuisances.

Conventions:

* An *embedding* is an (n, d) array (a 1-D array is one column); row i is particle i, in the same
  order in every embedding. Distances are Euclidean, float64, from coordinate differences
  (``torch.cdist`` without the matrix-product shortcut, whose cancellation blurs near neighbours
  and makes duplicated points unequal), ``chunk`` rows at a time (memory O(chunk × n)); the
  particle itself is never its own neighbour.
* **Ties** (a discrete GT label shared by many particles, duplicated latents): distances equal to
  a relative ``TIE_RTOL`` (1e-12, ~5000 ulp) are equal, and every
  score is its *expectation over uniformly random tie-breaking*, exactly and without a seed: the
  g particles tied at the k-th distance share the k − L places left by the L strictly closer ones
  (weight (k − L)/g each), and a particle tied with others in a ranking gets their mean rank.
  CryoBench instead breaks ties by index (a stable argsort) in the neighbourhood similarity and,
  for the information imbalance, drops duplicated rows and smears the discrete GT with noise.
* Neighbourhood similarity (CryoBench ``metrics/neighborhood_similarity/cal_neighb_hit_werror.py``,
  after Boggust et al. 2022): per point, the fraction of its k nearest neighbours in ``a`` that are
  also among its k nearest in ``b``, averaged over points; computed within each of ``n_splits``
  interleaved subsets ``i::n_splits`` (neighbours among the subset only, as CryoBench) and
  reported as mean ± standard error over the subsets. Where hetbook differs: CryoBench counts the
  point itself in both neighbour sets (k + 1 points, self always matches) and plots the matched
  count / k × 100 (so it reads (k + 1)/k · 100 % at best) with the error bar ``np.std`` (ddof 0)
  over 5 subsets, at k = 200, 400, … 4000 (1–20 % of a 20 000-point subset); hetbook excludes
  self, reports a fraction in [0, 1] and the standard error (``per_split`` holds the subsets'
  values for CryoBench's bar). Chance (b independent of a):
  k/(m − 1) for subsets of m points; ceiling: the similarity of a with itself, the most any b
  can reach (1 unless a has ties at the k-th neighbour).
* Information imbalance (Glielmo et al., PNAS Nexus 2022): Δ(A→B) = 2/(N k) · Σ_i mean rank in B
  of i's k nearest neighbours in A, rank 1 = nearest; 0 ≈ A predicts B's neighbours, 1 = A
  says nothing about B. Identical spaces: (k + 1)/N; independent: 1 in expectation. Equals dadapy's
  ``MetricComparisons.return_information_imbalace`` (the one CryoBench
  ``metrics/information_imbalance/compute_information_imbalance.py`` calls with k ∈ {1, 3},
  ``subset_size`` 2000: random disjoint subsets, mean ± standard error) on tie-free data.
* Pose error: see :func:`pose_error`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from helpers.core.backend import device
from helpers.kernels.fourier import as_tensor

TIE_RTOL = 1e-12
CHUNK_ELEMENTS = 2 ** 21  # rows per chunk × n: 16 MB per float64 (chunk, n) array, ~8 arrays live


def _embedding(x, name: str, n: int | None = None, dev=None) -> torch.Tensor:
    """(n, d) float64 tensor centred on its mean; 1-D input is one column."""
    t = as_tensor(x, dev, dtype=torch.float64)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2 or (n is not None and t.shape[0] != n):
        raise ValueError(f"{name}: shape {tuple(t.shape)}; expected (n, d) with n = {n} (one row per particle).")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: non-finite values. Fix: drop or impute those particles in every embedding.")
    return t - t.mean(0)


def _dist(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Distances (hi − lo, n) of rows lo:hi to all rows; self = +inf."""
    d = torch.cdist(x[lo:hi].contiguous(), x.contiguous(), compute_mode="donot_use_mm_for_euclid_dist")
    r = torch.arange(hi - lo, device=x.device)
    d[r, r + lo] = float("inf")
    return d


def _knn_weights(v: torch.Tensor, d: torch.Tensor, dk: torch.Tensor, k: int) -> torch.Tensor:
    """Fractional k-NN membership of distances v (r, c) from each row's point, given the rows' full
    distances d (r, n) and k-th smallest dk (r, 1): 1 strictly inside dk, (k − L)/g for the g tied
    at dk (L strictly closer), else 0; over a full row the weights sum to k."""
    below, above = dk * (1 - TIE_RTOL), dk * (1 + TIE_RTOL)
    closer = (d < below).sum(1, keepdim=True)
    upto = (d <= above).sum(1, keepdim=True)
    share = (k - closer).double() / (upto - closer).double()
    return torch.where(v < below, 1.0, torch.where(v <= above, share, 0.0))


def _ranks(d: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Rank (1 = nearest) of every entry of each row of ``d`` among the row; ties get their mean rank."""
    closer = torch.searchsorted(s, d * (1 - TIE_RTOL))
    upto = torch.searchsorted(s, d * (1 + TIE_RTOL), right=True)
    return (closer + 1 + upto).double() / 2


def _chunks(n: int, chunk: int | None):
    step = chunk or max(1, CHUNK_ELEMENTS // max(n, 1))
    return ((lo, min(n, lo + step)) for lo in range(0, n, step))


@dataclass
class NeighbourhoodSimilarity:
    """ks (K,); mean, sem, ceiling, chance (K,) fractions in [0, 1] (×100 for CryoBench's
    percent); per_split (n_splits, K); split_size: the smallest subset's number of points."""
    ks: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    ceiling: np.ndarray
    chance: np.ndarray
    per_split: np.ndarray
    split_size: int


def neighbourhood_similarity(a, b, ks, n_splits: int = 5, chunk: int | None = None,
                             dev=None) -> NeighbourhoodSimilarity:
    """Neighbourhood similarity of embeddings a (n, d_a) and b (n, d_b) at each k in ``ks``
    (module docstring), within ``n_splits`` interleaved subsets ``i::n_splits``; 1 ≤ k < subset size."""
    dev = dev or device()
    A = _embedding(a, "a", dev=dev)
    n = len(A)
    B = _embedding(b, "b", n, dev)
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    m_min = n // n_splits
    if n_splits < 1 or len(ks) == 0 or ks.min() < 1 or ks.max() > m_min - 1:
        raise ValueError(f"neighbourhood_similarity: ks {ks.tolist()} with {n} points in {n_splits} subsets; "
                         f"each k must be in 1 … {m_min - 1}.")
    per, ceil, chance = (np.zeros((n_splits, len(ks))) for _ in range(3))
    for i in range(n_splits):
        x, y = A[i::n_splits], B[i::n_splits]
        m = len(x)
        for lo, hi in _chunks(m, chunk):
            dx, dy = _dist(x, lo, hi), _dist(y, lo, hi)
            tx = torch.topk(dx, int(ks.max()), 1, largest=False).values
            ty = torch.topk(dy, int(ks.max()), 1, largest=False).values
            for j, k in enumerate(ks.tolist()):
                wx = _knn_weights(dx, dx, tx[:, k - 1:k], k)
                wy = _knn_weights(dy, dy, ty[:, k - 1:k], k)
                per[i, j] += float((wx * wy).sum())
                ceil[i, j] += float((wx * wx).sum())
        per[i] /= m * ks
        ceil[i] /= m * ks
        chance[i] = ks / (m - 1)
    sem = per.std(0, ddof=1) / np.sqrt(n_splits) if n_splits > 1 else np.full(len(ks), np.nan)
    return NeighbourhoodSimilarity(ks, per.mean(0), sem, ceil.mean(0), chance.mean(0), per, m_min)


@dataclass
class Imbalance:
    """Δ(a→b), Δ(b→a) (dimensionless, ~0 … ~1) with their standard errors over ``n_subsets``
    subsets of ``subset_size`` points (NaN for one). Unpacks as (a_to_b, b_to_a)."""
    a_to_b: float
    b_to_a: float
    a_to_b_sem: float
    b_to_a_sem: float
    k: int
    n_subsets: int
    subset_size: int

    def __iter__(self):
        return iter((self.a_to_b, self.b_to_a))


def _rank_sum(d: torch.Tensor, s: torch.Tensor, order: torch.Tensor, d_other: torch.Tensor,
              s_other: torch.Tensor, k: int) -> float:
    """Σ_i Σ_j w_ij · rank_other(i, j) over the fractional k nearest j of each row i (distances d,
    sorted s, ``order``), ranked in the other space; only the leading sorted columns that hold them."""
    dk = s[:, k - 1:k]
    c = int((d <= dk * (1 + TIE_RTOL)).sum(1).max())
    w = _knn_weights(s[:, :c], d, dk, k)
    return float((w * _ranks(d_other.gather(1, order[:, :c]), s_other)).sum())


def _imbalance_one(x: torch.Tensor, y: torch.Tensor, k: int, chunk: int | None) -> tuple[float, float]:
    m = len(x)
    ab = ba = 0.0
    for lo, hi in _chunks(m, chunk):
        dx, dy = _dist(x, lo, hi), _dist(y, lo, hi)
        (sx, ox), (sy, oy) = dx.sort(1), dy.sort(1)
        ab += _rank_sum(dx, sx, ox, dy, sy, k)
        ba += _rank_sum(dy, sy, oy, dx, sx, k)
    return 2 * ab / (m * m * k), 2 * ba / (m * m * k)


def information_imbalance(a, b, k: int = 1, subset_size: int | None = None, seed: int = 0,
                          chunk: int | None = None, dev=None) -> Imbalance:
    """Information imbalance Δ(a→b), Δ(b→a) of embeddings a (n, d_a), b (n, d_b) (module
    docstring). ``subset_size``: as CryoBench/dadapy, n // subset_size disjoint random subsets
    (seeded permutation) scored separately, mean ± standard error; None: all n points at once."""
    dev = dev or device()
    A = _embedding(a, "a", dev=dev)
    n = len(A)
    B = _embedding(b, "b", n, dev)
    size = n if subset_size is None or subset_size >= n else int(subset_size)
    if not 1 <= k < size:
        raise ValueError(f"information_imbalance: k = {k} with subsets of {size} points; need 1 ≤ k < {size}.")
    if size == n:
        groups = [np.arange(n)]
    else:
        perm = np.random.default_rng(seed).permutation(n)
        groups = [perm[i * size:(i + 1) * size] for i in range(n // size)]
    vals = np.array([_imbalance_one(A[g], B[g], k, chunk) for g in (torch.as_tensor(g, device=dev) for g in groups)])
    sem = vals.std(0, ddof=1) / np.sqrt(len(vals)) if len(vals) > 1 else np.full(2, np.nan)
    return Imbalance(float(vals[:, 0].mean()), float(vals[:, 1].mean()), float(sem[0]), float(sem[1]),
                     int(k), len(vals), size)


@dataclass
class PoseError:
    """angles (n,) degrees after alignment; median, mean (degrees); rotation P (3, 3): the aligned
    estimate of particle i is P @ R_est[i] (of K R_est[i] K when mirrored); mirrored: the estimates
    fit the mirror-image map better; rms_frobenius: sqrt(mean ‖R_true − aligned‖²_F)."""
    angles: np.ndarray
    median: float
    mean: float
    rotation: np.ndarray
    mirrored: bool
    rms_frobenius: float


K_FLIP = np.diag([1.0, 1.0, -1.0])  # t → −t along the beam: leaves every projection unchanged


def _angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees) of (..., 3, 3): atan2(sin, cos), accurate near 0° and 180° alike."""
    c = (np.trace(R, axis1=-2, axis2=-1) - 1) / 2
    s = np.linalg.norm(R - np.swapaxes(R, -1, -2), axis=(-2, -1)) / (2 * np.sqrt(2))
    return np.rad2deg(np.arctan2(s, c))


def _fit_left(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, float]:
    """Proper P maximising Σ tr(Pᵀ A_i B_iᵀ) (= minimising Σ ‖A_i − P B_i‖²_F); returns (P, the max)."""
    U, S, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", A, B))
    sign = np.sign(np.linalg.det(U @ Vt)) or 1.0
    return U @ np.diag([1.0, 1.0, sign]) @ Vt, float(S[0] + S[1] + sign * S[2])


def pose_error(R_true, R_est, mirror: str = "detect") -> PoseError:
    """Geodesic angle (degrees) between R_true[i] and the aligned R_est[i], both (n, 3, 3) in the
    :mod:`helpers.kernels.geometry` convention (image = Σ_t V(R (x, y, t)ᵀ)).

    Alignment: one proper rotation P on the **left**, aligned_i = P R_est[i], P from the SVD of
    Σ R_true[i] R_est[i]ᵀ with the determinant sign fixed. Left, because a reconstruction is
    determined up to a rotation of its map: the map rotated by Q (V'(r) = V(Qᵀ r),
    ``rotate_volume``) gives the same images at poses Q R, so its estimates are R_est = Q R_true.
    Hand: the mirror map V(J r) (J improper) gives the same images at poses J R K, K = diag(1, 1, −1),
    so mirrored estimates are R_est = Q J R_true K and K R_est K = (K Q J) R_true is again a proper
    left rotation of the truth. ``mirror="detect"`` fits both R_est and K R_est K, keeps the better fit
    and sets ``mirrored``; ``"ignore"`` fits R_est only."""
    A = np.asarray(R_true, dtype=np.float64).reshape(-1, 3, 3)
    B = np.asarray(R_est, dtype=np.float64).reshape(-1, 3, 3)
    if A.shape != B.shape or not len(A):
        raise ValueError(f"pose_error: R_true {A.shape} and R_est {B.shape} must both be (n, 3, 3), n ≥ 1.")
    if mirror not in ("detect", "ignore"):
        raise ValueError(f"pose_error: mirror={mirror!r}; use 'detect' or 'ignore'.")
    P, score = _fit_left(A, B)
    mirrored = False
    if mirror == "detect":
        Bm = K_FLIP @ B @ K_FLIP
        Pm, score_m = _fit_left(A, Bm)
        if score_m > score:
            P, score, B, mirrored = Pm, score_m, Bm, True
    aligned = P @ B
    ang = _angle_deg(A @ np.swapaxes(aligned, -1, -2))
    rms = float(np.sqrt(max(0.0, (6 * len(A) - 2 * score) / len(A))))
    return PoseError(ang, float(np.median(ang)), float(ang.mean()), P, mirrored, rms)


def nuisance_embeddings(defocus=None, rotations=None) -> dict:
    """Embeddings of what a latent should *not* encode, {name: (n, d) float64}: ``"defocus"``
    (n,) or (n, c) (e.g. dfU, dfV in Å), each column z-scored (CryoBench's ``ctf_zscore``);
    from rotations (n, 3, 3): ``"view"`` the beam direction in the map frame R (0, 0, 1)ᵀ
    (unit vectors, (n, 3)) and ``"pose"`` the flattened matrix (n, 9) (CryoBench's ``pose-R3x3``)."""
    out = {}
    if defocus is not None:
        d = np.asarray(defocus, dtype=np.float64)
        d = d[:, None] if d.ndim == 1 else d
        sd = d.std(0)
        out["defocus"] = (d - d.mean(0)) / np.where(sd > 0, sd, 1.0)
    if rotations is not None:
        R = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
        out["view"] = R[:, :, 2].copy()
        out["pose"] = R.reshape(len(R), 9)
    return out


SCORE_COLUMNS = ["reference", "score", "k", "value", "sem", "chance", "ceiling"]


def score_latent(z, conformation, nuisances: dict | None = None, ks=None, k_imbalance: int = 1,
                 n_splits: int = 5, subset_size: int | None = None, seed: int = 0,
                 dev=None) -> pd.DataFrame:
    """Score a latent z (n, d) against the GT ``conformation`` (n,) or (n, c) and each nuisance
    embedding (e.g. :func:`nuisance_embeddings`). ks: neighbourhood sizes (default 1 %, 5 %, 10 %
    of a subset). Long table, columns :data:`SCORE_COLUMNS`: reference ("conformation" or the
    nuisance's name), score ("neighbourhood_similarity" at each k; "imbalance_reference_to_latent"
    and "imbalance_latent_to_reference" at k_imbalance), value, sem, chance (k/(m − 1); 1 for the
    imbalances), ceiling (the neighbourhood similarity's maximum; NaN for the imbalances).
    A latent that encodes the reference: similarity near its ceiling, both imbalances near 0."""
    refs = {"conformation": conformation, **(nuisances or {})}
    if ks is None:
        m = len(np.asarray(z)) // n_splits
        ks = sorted({max(1, min(m - 1, round(f * m))) for f in (0.01, 0.05, 0.10)})
    rows = []
    for name, ref in refs.items():
        ns = neighbourhood_similarity(ref, z, ks, n_splits, dev=dev)
        rows += [dict(reference=name, score="neighbourhood_similarity", k=int(k), value=float(v), sem=float(e),
                      chance=float(c), ceiling=float(cl))
                 for k, v, e, c, cl in zip(ns.ks, ns.mean, ns.sem, ns.chance, ns.ceiling)]
        imb = information_imbalance(ref, z, k_imbalance, subset_size, seed, dev=dev)
        rows += [dict(reference=name, score="imbalance_reference_to_latent", k=imb.k, value=imb.a_to_b,
                      sem=imb.a_to_b_sem, chance=1.0, ceiling=np.nan),
                 dict(reference=name, score="imbalance_latent_to_reference", k=imb.k, value=imb.b_to_a,
                      sem=imb.b_to_a_sem, chance=1.0, ceiling=np.nan)]
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)
