"""Volume metrics at GEMM speed: FSC, resolution and GT × submission distance matrices.

Everything is computed from batched matrix products, never pair by pair:

* **FSC** of every GT map g with every submitted map s, per shell i (``helpers.kernels.fourier``
  shells, 1 … N//2):  FSC_i(g, s) = Re Σ_{k∈i} G(k) S*(k) / sqrt(Σ_{k∈i}|G|² Σ_{k∈i}|S|²).
  Each map is Fourier transformed once (real FFT; half-spectrum multiplicities applied), the
  voxels are grouped by shell, and the numerator of all pairs for one shell is one real GEMM of
  [Re G, Im G] with [Re S, Im S]. The GT is streamed in chunks sized to free memory.
  With a mask, each map's **solvent background** is subtracted before it is multiplied by the
  mask weights (:func:`background_level`: the median over the voxels where the mask weight is
  ≤ 0.01). An offset b left in a map would be multiplied by the mask and stamp the mask's own
  shape into the map, which changes every shell's FSC (a submission ``5·s + 3`` lost 20 Å of
  resolution on the demo, a small positive offset *gained* some). Subtracting the background
  makes the FSC, FSC distance and resolution invariant to a per-map affine change a·s + b
  (a > 0) of either map, and leaves a map that is zero in its solvent unchanged. The median of
  the solvent (not the mean under the mask) is used because the mean under the mask includes
  the molecule's own density (its removal would change the FSC of an offset-free map) and the
  median is robust to noise and stray density outside the mask. z-scoring before masking is
  not a fix: the subtracted median is a protein-dependent value, again stamped by the mask.
* **Shells without signal**: where either map has (almost) no power in a shell (below
  ``NO_SIGNAL`` × its strongest shell's power, e.g. beyond a low-pass filter's cutoff) the FSC
  is undefined and returned as NaN, not as the ±0.4 that rounding noise correlates to. The
  resolution treats such a shell as failing the threshold, the FSC distance and the FSC area
  (:func:`fsc_area`) count it as 0, and :func:`best_match` picks each submitted map's GT
  match by the largest FSC area (not by the smallest resolution, which ties at Nyquist).
* **Mask correction** (:func:`mask_corrected_fsc`, for chosen pairs such as each submitted map
  and its best GT match): RELION's phase-randomisation test (Chen et al. 2013) of how much of
  a masked FSC the mask itself creates; the pairs' FSCs are computed batched (:func:`paired_fsc`).
* **Resolution** (Å) from each FSC curve at a threshold (0.5, 0.143): the first shell whose
  FSC drops below the threshold, with the crossing linearly interpolated in frequency between
  it and the previous shell (FSC at DC taken as 1); a curve that never drops below the
  threshold is resolved to Nyquist (2 × voxel size). The published rule (first failing shell
  index, "never fails" → worst value N·voxel) is ``rule="published"``.
* **Distances** from the *centred* sufficient statistics of each pair over the N voxels with
  mask weight > 0.5: the mean μ, V = Σ(x − μ)² (two passes, float64) and the cross products
  Σ(g − μ_g)(s − μ_s) (one GEMM). ``l2`` = V_g + V_s − 2·Cov + N(μ_g − μ_s)²: no cancellation
  between uncentred sums of squares (Σg² + Σs² − 2Σgs lost all digits for near-identical maps
  with a +1000 offset); the remaining rounding error is ≤ ~1e-15·(V_g + V_s), and values below
  it are clamped at 0. All after per-map median z-scoring of *both* sets:
  ``l2`` = Σ(g − s)²; ``corr`` = Pearson correlation (a similarity; cost = 1 − corr);
  ``bioem`` = −log P(g | s) (Cossio & Hummer 2013: g = a s + b + noise, a, b, σ marginalised;
  constant + ½ ln π; asymmetric); ``fsc`` = 1 − mean FSC over shells (optionally only shells up
  to ``fsc_cutoff_A``); ``res`` = resolution at FSC 0.5.
* **Sliced Wasserstein** (``sw``): maps as mass distributions over voxel positions (with a
  mask, the solvent background subtracted first, so an intensity offset adds no mass; negative
  values clipped to 0, each normalised to unit mass, so the scale does not matter either); for L random directions the mass is
  histogrammed along the direction (bins of one voxel) and W1 of the two 1-D distributions is
  Σ|CDF_g − CDF_s|·Δ (Å). Averaged over directions. Cost: O((n_gt + n_sub)·N³·L) to project and
  O(n_gt·n_sub·L·B) for the pairwise L1 between CDFs (B bins). Tolerant to small misalignments
  and deformations (mass moved a little costs a little); not rotation invariant.

``mode="reference"`` reproduces the published code (``challenge-metrics.md`` §6): mask
``!= 0``, torch lower median, ``corr`` = Σ g·s (a similarity), BioEM constant +π/2, resolution
by the first failing shell, no background subtraction.

**Degenerate maps** (constant inside the mask, or with non-finite voxels) raise
:class:`DegenerateMapError` naming the set and the map indices; no NaN reaches a result.

**GT cache** (:class:`GTCache`): the GT's statistics for one mask and set of options, with
their own chunk boundaries, reused for every submission; a call with another mask, GT, box or
options rebuilds it (never mixes layouts).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from helpers.core.backend import available_bytes, chunk_size, device, progress, sub_step
from helpers.core.errors import InputError
from helpers.kernels.fourier import as_tensor, rfft_weights, shell_frequencies, shell_index
from helpers.kernels.normalise import median_zscore

METRICS = ("l2", "corr", "bioem", "fsc", "res")
COST_METRICS = {"l2": "l2", "corr": "1 - corr", "bioem": "bioem", "fsc": "fsc", "res": "res", "sw": "sw"}
BACKGROUND_WEIGHT = 0.01  # mask weights at or below this are solvent, where the background is estimated
NO_SIGNAL = 1e-6  # shell power below this fraction of a map's strongest shell: no signal, FSC undefined


class DegenerateMapError(InputError):
    """A map that no metric can score (constant inside the mask, or non-finite values)."""


def _check_finite(x: torch.Tensor, label: str, first_index: int = 0):
    flat = x.reshape(x.shape[0], -1)
    if bool(torch.isfinite(flat.sum(1)).all()):  # NaN and ±inf survive a sum: one cheap pass
        return                                  # (a finite sum that overflowed is checked in full)
    bad = ~torch.isfinite(flat).all(1)
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten() + first_index).tolist()
        raise DegenerateMapError(label, f"map(s) {idx[:10]} contain NaN or infinite voxels.",
                                 "Replace or drop these maps (check the file they came from).")


def _check_nonconstant(var: torch.Tensor, label: str, first_index: int = 0, scale=None):
    """var (n,): a variance-like statistic per map; zero (or ≤ 1e-12 of ``scale``) = constant."""
    lim = 0.0 if scale is None else 1e-12 * scale
    bad = var <= lim
    if bool(bad.any()):
        idx = (torch.nonzero(bad).flatten() + first_index).tolist()
        raise DegenerateMapError(label, f"map(s) {idx[:10]} are constant inside the mask (no contrast to compare).",
                                 "Drop these maps, or check that the mask and the maps are on the same grid.")


def solvent_index(mask, dev=None) -> torch.Tensor | None:
    """Flat indices (int64, ascending) of the solvent voxels — mask weight ≤ ``BACKGROUND_WEIGHT``
    — where :func:`background_level` takes its median; None when there are fewer than 8 (a mask
    that covers the box). Computed once per mask by the streaming kernels and passed on as
    ``solvent=``: a boolean selection recounts its mask on every call (at 224³ on 2 CPU cores,
    ~60 ms per chunk to count and select, before the median)."""
    dev = dev or device()
    idx = torch.nonzero(as_tensor(mask, dev).flatten() <= BACKGROUND_WEIGHT).flatten()
    return idx if idx.numel() >= 8 else None


def background_level(maps, mask, dev=None, solvent: torch.Tensor | None = None) -> torch.Tensor:
    """Per-map solvent background (n,): the median of each map over the voxels whose mask
    weight is ≤ ``BACKGROUND_WEIGHT`` (numpy's median convention). With fewer than 8 such voxels
    (a mask that covers the box) the mask-weighted mean Σ w x / Σ w is used instead (still
    exact for an offset: a·s + b → a·level(s) + b). maps (n, N, N, N), mask (N, N, N);
    ``solvent``: :func:`solvent_index` of ``mask``, when the caller has it."""
    from helpers.kernels.normalise import _numpy_median

    dev = dev or device()
    x = as_tensor(maps, dev)
    flat = x.reshape(x.shape[0], -1)
    if solvent is None:
        solvent = solvent_index(mask, dev)
    if solvent is not None:
        return _numpy_median(flat[:, solvent]).float()  # a selection: float32 gives the same values as float64
    wf = as_tensor(mask, dev).clamp(0, 1).flatten().double()
    return ((flat.double() @ wf) / wf.sum().clamp_min(1e-300)).float()


def subtract_background(maps, mask, dev=None, solvent: torch.Tensor | None = None) -> torch.Tensor:
    """maps − :func:`background_level` (per map), float32 on ``dev`` (``solvent``: see there)."""
    x = as_tensor(maps, dev or device())
    return x - background_level(x, mask, x.device, solvent).reshape(-1, *([1] * (x.dim() - 1)))


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


# ------------------------------------------------------------------------------ FSC
@dataclass
class ShellLayout:
    """Half-spectrum voxels within shells 1..N//2, sorted by shell.

    A spectrum in this layout (:func:`_shell_sorted`) is real, (n, 2K): the K selected voxels'
    (Re, Im) pairs interleaved, √multiplicity folded in, so Re Σ_{k∈shell} G(k) S*(k) is the dot
    product of the shell's slice ``[2·lo, 2·hi)`` of the two spectra (one GEMM per shell)."""
    n: int
    order: torch.Tensor      # indices into the flattened half spectrum
    weights: torch.Tensor    # multiplicity (1 or 2) of each selected voxel
    bounds: list             # [start, stop) of each shell in the sorted selection
    counts: np.ndarray       # number of (full-spectrum) voxels per shell
    root2: torch.Tensor = None  # √weights, repeated for (Re, Im): (2K,)

    @classmethod
    def make(cls, n: int, dev=None) -> "ShellLayout":
        s = shell_index(n, dev).flatten()
        w = rfft_weights(n, dev).expand(n, n, -1).flatten()
        keep = (s >= 1) & (s <= n // 2)
        idx = torch.nonzero(keep).flatten()
        order = idx[torch.argsort(s[idx], stable=True)]
        ss = s[order].cpu().numpy()
        bounds = [(int(np.searchsorted(ss, i)), int(np.searchsorted(ss, i, side="right"))) for i in range(1, n // 2 + 1)]
        counts = np.array([w[order][a:b].sum().item() for a, b in bounds])
        weights = w[order].to(torch.float32)
        return cls(n, order, weights, bounds, counts, weights.sqrt().repeat_interleave(2))

    @property
    def slices(self) -> list:
        """[start, stop) of each shell in a (n, 2K) interleaved spectrum."""
        return [(2 * a, 2 * b) for a, b in self.bounds]


SAFE_SCALE = (1e-6, 1e6)  # max |voxel| range in which float32 spectra and their products cannot overflow


def _spectra(maps, mask, layout: ShellLayout, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked maps -> (shell-sorted spectra (n, 2K) float32 (see :class:`ShellLayout`), per-shell
    power (n, n_shells) float64)."""
    x = as_tensor(maps, dev)
    if mask is not None:
        x = x * as_tensor(mask, dev)
    x = _unit_scale(x)
    # no ifftshift: a shift common to both maps multiplies both spectra by the same phase ramp,
    # which cancels in Re Σ G S*, and the copy costs more than the transform
    return _shell_sorted(torch.fft.rfftn(x, dim=(-3, -2, -1)), layout)


def _unit_scale(x: torch.Tensor) -> torch.Tensor:
    """Maps whose largest |value| lies outside ``SAFE_SCALE`` divided by it (the FSC is scale
    invariant): float32 products of maps with huge values (1e30) would overflow to inf and give
    NaN FSCs, tiny ones underflow. Maps in ordinary units are returned as they are (no pass)."""
    m = x.reshape(x.shape[0], -1).abs().amax(1)
    if bool(((m >= SAFE_SCALE[0]) & (m <= SAFE_SCALE[1])).all()):
        return x
    return x / m.clamp_min(1e-30).reshape(-1, *([1] * (x.dim() - 1)))


def _shell_sorted(f: torch.Tensor, layout: ShellLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """rfft spectra (n, N, N, N//2+1) complex64 -> the pair :func:`_spectra` returns."""
    flat = f.reshape(f.shape[0], -1)
    # one gather of the (Re, Im) pairs, read as one 64-bit word each
    g = torch.gather(flat.view(torch.int64), 1, layout.order.expand(flat.shape[0], -1))
    g = torch.view_as_real(g.view(torch.complex64)).reshape(flat.shape[0], -1)
    g *= layout.root2
    power = torch.stack([torch.linalg.vector_norm(g[:, a:b], dim=1) for a, b in layout.slices], 1).double() ** 2
    return g, power


def fsc_matrix(gt_maps, sub_maps, mask=None, dev=None, gt_chunk: int | None = None,
               prep=None, cache=None, key=None, background: bool = True,
               labels: tuple = ("GT", "submission")) -> np.ndarray:
    """FSC curves of every GT map against every submitted map.

    gt_maps (n_gt, N, N, N) (a memory map is streamed in chunks), sub_maps (n_sub, N, N, N), mask
    (N, N, N) real-space weights or None. By default each map's solvent background is
    subtracted before masking (:func:`subtract_background`; ``background=False`` only masks).
    ``prep`` (optional) maps a chunk of maps to the arrays to transform (replaces the default).
    ``cache`` (a :class:`GTCache` or a dict) with a hashable ``key`` describing ``prep``: the GT
    spectra are kept for the next submission when they fit in a quarter of free memory.
    Returns float32 (n_gt, n_sub, N//2): shells 1..N//2. A map with no power in shells 1..N//2
    (constant inside the mask) raises :class:`DegenerateMapError`.
    """
    dev = dev or device()
    if prep is None:
        w = None if mask is None else as_tensor(mask, dev)

        solvent = solvent_index(w, dev) if (w is not None and background) else None

        def prep(x):
            x = as_tensor(x, dev)
            if w is None:
                return x
            return (subtract_background(x, w, dev, solvent) if background else x) * w
        key = ("fsc-default", background, _fingerprint(mask)) if key is None else key
    n = sub_maps.shape[-1]
    n_gt = gt_maps.shape[0]
    layout = ShellLayout.make(n, dev)
    fs, ps = _sub_spectra(sub_maps, prep, layout, dev, labels[1])
    K = layout.order.numel()
    gcache = _as_cache(cache)
    sig = (key, _fingerprint(gt_maps), n, str(dev))
    entry = gcache.lookup("fsc", sig) if gcache is not None else None
    if entry is None:
        gt_chunk = gt_chunk or gt_step(n ** 3 * 4 * 6, dev)
        bounds = [(a, min(n_gt, a + gt_chunk)) for a in range(0, n_gt, gt_chunk)]
    else:
        bounds = entry.bounds

    def gt_part(a, b):
        g = as_tensor(gt_maps[a:b], dev)
        _check_finite(g, labels[0], a)
        fg, pg = _spectra(prep(g), None, layout, dev)
        _check_nonconstant(pg.sum(1), labels[0], a)
        return fg, pg
    if entry is None and gcache is not None and n_gt * 2 * K * 4 < 0.25 * available_bytes(dev):
        entry = gcache.store("fsc", sig, bounds, [gt_part(a, b) for a, b in bounds])
    out = np.empty((n_gt, fs.shape[0], n // 2), dtype=np.float32)
    for ci, (a, b) in enumerate(progress(bounds, desc="FSC (GT chunks)")):
        fg, pg = entry.parts[ci] if entry is not None else gt_part(a, b)
        out[a:b] = _fsc_block(fg, pg, fs, ps, layout)
    return out


def _sub_spectra(sub_maps, prep, layout: ShellLayout, dev, label, step: int | None = None):
    """:func:`_spectra` of ``prep(maps)`` (checked finite and non-constant), ``step`` maps at a time
    (default :func:`sub_step`), written into one preallocated pair: (n, 2K) float32, (n, N//2) float64."""
    n_s, n = sub_maps.shape[0], sub_maps.shape[-1]
    fs = torch.empty((n_s, 2 * layout.order.numel()), dtype=torch.float32, device=dev)
    ps = torch.empty((n_s, n // 2), dtype=torch.float64, device=dev)
    step = step or sub_step(n)
    for a in range(0, n_s, step):
        x = as_tensor(sub_maps[a:a + step], dev)
        _check_finite(x, label, a)
        f, p = _spectra(prep(x), None, layout, dev)
        _check_nonconstant(p.sum(1), label, a)
        fs[a:a + len(x)], ps[a:a + len(x)] = f, p
        del x, f
    return fs, ps


def _stats_chunked(maps, sel, normalise, convention, dev, dtype, label, step: int | None = None):
    """:func:`_stats` of a whole set, ``step`` maps at a time (default :func:`sub_step`), into
    preallocated (n, V), (n,), (n,) arrays (``sel``: ascending flat indices)."""
    n_s, n = maps.shape[0], maps.shape[-1]
    v = torch.empty((n_s, sel.numel()), dtype=dtype, device=dev)
    mu, V = (torch.empty(n_s, dtype=dtype, device=dev) for _ in range(2))
    step = step or sub_step(n)
    for a in range(0, n_s, step):
        b = min(n_s, a + step)
        v[a:b], mu[a:b], V[a:b] = _stats(maps[a:b], sel, normalise, convention, dev, dtype, label, a)
    return v, mu, V


def _fsc_block(fg, pg, fs, ps, layout: ShellLayout) -> np.ndarray:
    """FSC curves (n_g, n_s, N//2) float32 of two sets of :func:`_spectra`: one real GEMM per
    shell for the numerators; NaN in shells where either map has no signal."""
    num = torch.stack([fg[:, lo:hi] @ fs[:, lo:hi].T for lo, hi in layout.slices], -1).double()
    f = num / torch.sqrt(pg[:, None, :] * ps[None, :, :]).clamp_min(1e-300)
    dead = _no_signal(pg)[:, None, :] | _no_signal(ps)[None, :, :]
    return torch.where(dead, torch.full_like(f, float("nan")), f).float().cpu().numpy()


def _no_signal(power: torch.Tensor) -> torch.Tensor:
    """(n, shells) bool: shells whose power is below NO_SIGNAL × the map's strongest shell."""
    return power <= NO_SIGNAL * power.amax(1, keepdim=True)


def fsc_area(curves) -> np.ndarray:
    """Mean FSC over the shells (NaN — no signal — counted as 0): 1 for identical maps, ~0 for
    unrelated ones. curves (..., N//2) → (...)."""
    return np.nan_to_num(np.asarray(curves, dtype=np.float64), nan=0.0).mean(-1)


def best_match(curves) -> np.ndarray:
    """For each submitted map (column of (n_gt, n_sub, N//2) curves), the GT map with the largest
    FSC area. Unlike the smallest resolution, this does not tie when several GT maps reach
    Nyquist: the whole curve decides."""
    return np.argmax(fsc_area(curves), axis=0)


def paired_fsc(a, b, mask=None, dev=None, background: bool = True) -> np.ndarray:
    """FSC of a[k] with b[k] (both (n, N, N, N); ``mask`` real-space weights applied to both,
    after each map's solvent background is subtracted unless ``background=False``).

    Returns float64 (n, N//2), shells 1..N//2 — the diagonal of :func:`fsc_matrix`, at O(n) cost."""
    dev = dev or device()
    layout = ShellLayout.make(a.shape[-1], dev)
    if mask is not None and background:
        a, b = subtract_background(a, mask, dev), subtract_background(b, mask, dev)
    return _paired(_spectra(a, mask, layout, dev), _spectra(b, mask, layout, dev), layout)


def _paired(sa, sb, layout: ShellLayout) -> np.ndarray:
    """Paired FSC curves from two :func:`_spectra` results."""
    (fa, pa), (fb, pb) = sa, sb
    prod = (fa * fb).double()
    num = torch.stack([prod[:, lo:hi].sum(1) for lo, hi in layout.slices], 1)
    f = num / torch.sqrt(pa * pb).clamp_min(1e-300)
    return torch.where(_no_signal(pa) | _no_signal(pb), torch.full_like(f, float("nan")), f).cpu().numpy()


def phase_randomise(maps, from_shell, seed: int = 0, dev=None, first_index: int = 0) -> torch.Tensor:
    """Replace the Fourier phases of every map at shells ≥ ``from_shell`` by random phases
    (amplitudes kept), as RELION does for its mask correction.

    maps (n, N, N, N); from_shell: an int or one shell per map ((n,) ints; ≤ 0 or > N//2
    leaves that map unchanged). The random phases are those of the FFT of real white noise, so
    the result stays real; map k's noise is seeded by (``seed``, ``first_index`` + k), so a
    stack processed in chunks gets the same phases as in one piece. Returns float32 (n, N, N, N).
    """
    dev = dev or device()
    x = as_tensor(maps, dev)
    return _replace_phases(torch.fft.rfftn(x, dim=(-3, -2, -1)), x.shape[-1], from_shell, seed, first_index)


def _replace_phases(f: torch.Tensor, n: int, from_shell, seed: int, first_index: int) -> torch.Tensor:
    """:func:`phase_randomise` on rfft spectra f (m, n, n, n//2+1) (unshifted transforms: the
    phases are replaced, so the maps' origin is irrelevant); returns the real maps."""
    dev, dims = f.device, (-3, -2, -1)
    # one generator per map (a loop over maps, but only to draw noise): results do not depend on chunking
    noise = torch.stack([torch.randn((n, n, n), dtype=torch.float32,
                                     generator=torch.Generator().manual_seed(seed * 1_000_003 + first_index + k))
                         for k in range(f.shape[0])]).to(dev)
    w = torch.fft.rfftn(noise, dim=dims)
    u = w / w.abs().clamp_min(1e-30)
    s0 = torch.as_tensor(np.broadcast_to(np.asarray(from_shell), (f.shape[0],)).copy(), device=dev)
    s0 = torch.where(s0 <= 0, n, s0)  # "never" → beyond the corner of the box
    sel = shell_index(n, dev)[None] >= s0[:, None, None, None]
    return torch.fft.irfftn(torch.where(sel, f.abs() * u, f), s=(n, n, n), dim=dims).float()


def mask_corrected_fsc(a, b, mask, threshold: float = 0.8, seed: int = 0, dev=None, a_index=None,
                       chunk: int | None = None, background: bool = True) -> dict:
    """Masked FSC of pairs (a[a_index[k]], b[k]) corrected for mask-induced correlation by
    phase randomisation (Chen et al. 2013), with RELION's conventions.

    For each pair: ``randomize_at`` = the first shell whose *unmasked* FSC drops below
    ``threshold`` (0.8); both maps get independent random phases from that shell on, are
    masked, and give FSC_n. Corrected FSC = masked FSC below ``randomize_at + 2`` and
    (FSC_t − FSC_n)/(1 − FSC_n) (0 where FSC_n > FSC_t) from there. A pair whose unmasked FSC
    never drops below ``threshold`` keeps its unmasked curve (``randomize_at`` = −1).
    a (n_a, N, N, N) (a memory map is read pair-chunk by pair-chunk), b (n, N, N, N),
    ``a_index`` (n,) ints (default: a[k] with b[k]); mask (N, N, N) weights, clipped to [0, 1]
    as in :func:`distance_matrices`; each map's solvent background is subtracted first
    (:func:`subtract_background`, as in :func:`fsc_matrix`) unless ``background=False``. Returns float64 (n, N//2) curves ``corrected``,
    ``masked``, ``unmasked``, ``randomised`` (FSC_n) and int (n,) ``randomize_at``.
    """
    dev = dev or device()
    n, N = b.shape[0], b.shape[-1]
    a_index = np.arange(n) if a_index is None else np.asarray(a_index)
    chunk = chunk or gt_step(N ** 3 * 4 * 16, dev)  # pairs per chunk: ≤ ~1 GiB of work (CPU)
    layout = ShellLayout.make(N, dev)
    w = as_tensor(mask, dev).clamp(0, 1)
    parts = []
    for s in progress(range(0, n, chunk), desc="mask correction (pair chunks)"):
        ai, bi = a_index[s:s + chunk], np.arange(s, min(n, s + chunk))
        aa = a[ai] if isinstance(a, np.ndarray) else a[torch.as_tensor(ai)]
        bb = b[bi] if isinstance(b, np.ndarray) else b[torch.as_tensor(bi)]
        aa, bb = as_tensor(aa, dev), as_tensor(bb, dev)
        if background:
            aa, bb = subtract_background(aa, w, dev), subtract_background(bb, w, dev)
        parts.append(_mask_corrected_chunk(aa, bb, w, threshold, seed, layout, s))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _mask_corrected_chunk(a, b, w, threshold, seed, layout, first_index) -> dict:
    N, dev, dims = a.shape[-1], a.device, (-3, -2, -1)
    a, b = _unit_scale(a), _unit_scale(b)
    fa, fb = torch.fft.rfftn(a, dim=dims), torch.fft.rfftn(b, dim=dims)  # reused for the randomisation
    unmasked = _paired(_shell_sorted(fa, layout), _shell_sorted(fb, layout), layout)
    masked = _paired(_spectra(a, w, layout, dev), _spectra(b, w, layout, dev), layout)
    below = np.nan_to_num(unmasked, nan=0.0) < threshold
    at = np.where(below.any(1), np.argmax(below, 1) + 1, -1)  # shell number (1-based), −1: never
    ra = _replace_phases(fa, N, at, seed, first_index)
    rb = _replace_phases(fb, N, at, seed + 1, first_index)
    rand = _paired(_spectra(ra, w, layout, dev), _spectra(rb, w, layout, dev), layout)
    shells = np.arange(1, unmasked.shape[1] + 1)[None]
    fix = (shells >= at[:, None] + 2) & (at[:, None] > 0)
    true = np.where(rand > masked, 0.0, (masked - rand) / np.maximum(1 - rand, 1e-12))
    corrected = np.where(fix, true, masked)
    corrected = np.where(at[:, None] > 0, corrected, unmasked)
    return {"corrected": corrected, "masked": masked, "unmasked": unmasked, "randomised": rand,
            "randomize_at": at}


def resolution(fsc, voxel_size: float, threshold: float = 0.5, rule: str = "interpolated",
               native_voxel_size: float | None = None) -> np.ndarray:
    """Resolution (Å) of FSC curves (..., N//2) (shells 1..N//2) at ``threshold``.
    ``native_voxel_size`` (Å, the submission's before regridding): the result is no finer than
    its Nyquist, 2 × native voxel (:func:`helpers.kernels.nyquist.clip_resolution`).

    rule "interpolated" (default): first shell below threshold, crossing interpolated linearly in
    frequency from the previous shell (FSC(0) = 1); never below → Nyquist (2·voxel).
    rule "published": first shell i (1-based) with FSC ≤ threshold → N·voxel/i; never → N·voxel.
    """
    fsc = np.asarray(fsc, dtype=np.float64)
    ns = fsc.shape[-1]
    n = 2 * ns
    fsc = np.nan_to_num(fsc, nan=0.0)  # a shell without signal: no correlation (fails any threshold > 0)
    if native_voxel_size is not None:
        from helpers.kernels.nyquist import clip_resolution
        return clip_resolution(resolution(fsc, voxel_size, threshold, rule), native_voxel_size)[0]
    if rule == "published":
        idx = np.argmin(fsc > threshold, axis=-1)  # 0 if never fails (the published defect)
        return n * voxel_size / (idx + 1)
    if rule != "interpolated":
        raise ValueError(f"unknown rule {rule!r}")
    f = shell_frequencies(n, voxel_size)  # shells 0..ns
    below = fsc < threshold
    first = np.where(below.any(-1), np.argmax(below, axis=-1), ns)  # 0-based shell index (shell first+1)
    curve = np.concatenate([np.ones(fsc.shape[:-1] + (1,)), fsc], -1)  # index j = shell j
    j = np.clip(first + 1, 1, ns)
    hi, lo = np.take_along_axis(curve, j[..., None], -1)[..., 0], np.take_along_axis(curve, j[..., None] - 1, -1)[..., 0]
    frac = np.clip((lo - threshold) / np.where(lo - hi == 0, 1, lo - hi), 0, 1)
    freq = f[j - 1] + frac * (f[j] - f[j - 1])
    res = 1.0 / np.maximum(freq, 1e-12)
    return np.where(first >= ns, 2 * voxel_size, res)


# ------------------------------------------------------------------------ distances
def _stats(maps, sel, normalise: str | None, convention: str, dev, dtype, label="maps", first_index=0):
    """Masked (normalised) vectors of a chunk of maps, centred: (v − μ (n, V), μ (n,), Σ(v − μ)² (n,)).
    ``sel``: the masked voxels, a boolean (N³,) selection or (faster, for many chunks) its
    ascending flat indices.

    The median z-score z = (x − median)/std is affine, so it is applied to the centred statistics
    of the raw masked voxels (v/std, (μ − median)/std, V/std²) instead of to the whole maps: the
    same numbers (std with n − 1 from the float64 V; the published convention's lower median
    with ``convention="published"``) from one selection of the masked voxels.
    Raises :class:`DegenerateMapError` for non-finite maps and maps constant inside the mask."""
    from helpers.kernels.normalise import _numpy_median

    x = as_tensor(maps, dev)
    _check_finite(x, label, first_index)
    picked = x.reshape(x.shape[0], -1)[:, sel]
    v = picked.to(dtype)
    mu = v.mean(1)
    v -= mu[:, None]
    V = (v * v).sum(1)
    N = v.shape[1]
    _check_nonconstant(V, label, first_index, scale=V + N * mu ** 2)  # Σ x² = V + N μ²
    if normalise == "median_zscore":
        if convention == "published":
            med = picked.median(dim=1).values.to(dtype)
        elif convention == "numpy":
            med = _numpy_median(picked).to(dtype)
        else:
            raise ValueError(f"unknown convention {convention!r}")
        sd = torch.sqrt(V / max(N - 1, 1))
        v /= sd[:, None]
        mu = (mu - med) / sd
        V = V / sd ** 2
    elif normalise is not None:
        raise ValueError(f"unknown normalisation {normalise!r}")
    return v, mu, V


RESIDUAL_FLOOR = 1e-12  # BioEM's T2/T3 relative to N·Ccc·Coo (N·Ccc): float64 rounding of the sums is ~1e-14


def bioem_logp(N, Co, Cc, Coo, Ccc, Coc, constant: str = "correct"):
    """BioEM log P(g | s) with g observed (Co, Coo), s calculated (Cc, Ccc), Coc = Σ g s over N
    voxels (Cossio & Hummer 2013). constant "correct" = +½ ln π; "published" = +π/2."""
    T2 = N * (Ccc * Coo - Coc ** 2) + 2 * Co * Coc * Cc - Ccc * Co ** 2 - Coo * Cc ** 2
    T3 = (N - 2) * (N * Ccc - Cc ** 2)
    tiny = torch.finfo(torch.float64).tiny
    # below 1e-12 of its terms' scale a T2 (T3) is zero within float64 rounding (an exact copy,
    # an affine copy): floored there, so such a pair scores the same however the sums were blocked
    T2 = torch.maximum(T2, RESIDUAL_FLOOR * N * Ccc * Coo).clamp_min(tiny)
    T3 = torch.maximum(T3, RESIDUAL_FLOOR * (N - 2) * N * Ccc).clamp_min(tiny)
    c = 0.5 * math.log(math.pi) if constant == "correct" else math.pi / 2
    return (c + (1 - N / 2) * math.log(2 * math.pi * math.e) + (1.5 - N / 2) * torch.log(T2)
            + (N / 2 - 2) * torch.log(T3))


def _stat_scores(gt_stats, sub_stats, N: int, want, ref: bool = False) -> dict:
    """l2 / corr / bioem blocks (n_g, n_s) from two sets of :func:`_stats` over N voxels."""
    (g, mu_g, Vg), (s, mu_s, Vs) = gt_stats, sub_stats
    cov = g @ s.T  # Σ (g − μg)(s − μs)
    out = {}
    if "l2" in want:
        # centred form: no cancellation between large uncentred sums of squares; the rounding
        # error is ~1e-15·(Vg + Vs), so tiny negative values are clamped to 0
        l2 = Vg[:, None] + Vs[None] - 2 * cov + N * (mu_g[:, None] - mu_s[None]) ** 2
        out["l2"] = l2.clamp_min(0).cpu().numpy()
    if "corr" in want:
        c = cov + N * mu_g[:, None] * mu_s[None] if ref else cov / torch.sqrt(Vg[:, None] * Vs[None]).clamp_min(1e-300)
        out["corr"] = c.cpu().numpy()  # reference mode: Σ g·s
    if "bioem" in want:
        # T2 and T3 are invariant to centring both maps: evaluate them centred (better conditioned)
        zero = torch.zeros((), dtype=cov.dtype, device=cov.device)
        lp = bioem_logp(N, zero, zero, Vg[:, None], Vs[None], cov, constant="published" if ref else "correct")
        out["bioem"] = (-lp).cpu().numpy()
    return out


def distance_matrices(gt_maps, sub_maps, mask=None, metrics=METRICS, mode: str = "default",
                      voxel_size: float = 1.0, fsc_cutoff_A: float | None = None,
                      normalise: str | None = "median_zscore", dev=None, gt_chunk: int | None = None,
                      sw_directions: int = 64, seed: int = 0, cache=None, background: bool = True,
                      label: str = "submission", gt_label: str = "GT") -> dict:
    """GT × submission matrices for ``metrics`` (subset of l2, corr, bioem, fsc, res, sw).

    Returns {metric: (n_gt, n_sub) float64 array, "fsc_curves": (n_gt, n_sub, N//2) if fsc/res
    asked, "n_voxels": N}. ``corr`` is a similarity (use ``1 − corr`` as cost; in reference mode
    it is Σ g·s). Both sets are normalised the same way (the published code forgets the GT in
    its default mode).

    ``cache``: pass the same :class:`GTCache` (or dict) for every submission scored against
    one GT and the GT's statistics (normalised masked vectors, FSC spectra when they fit in a
    quarter of free memory, sliced-Wasserstein CDFs) are computed once, not once per
    submission; a different GT, mask or option set rebuilds them. ``background``: subtract each
    map's solvent background before masking for the FSC (default; never in reference mode).
    ``label``/``gt_label`` name the two sets in the error raised for a degenerate map.
    """
    dev = dev or device()
    n = sub_maps.shape[-1]
    ref = mode == "reference"
    convention = "published" if ref else "numpy"
    if mask is None:
        sel_mask = torch.ones(n ** 3, dtype=torch.bool, device=dev)
    else:
        m = as_tensor(mask, dev).flatten()
        sel_mask = (m != 0) if ref else (m > 0.5)
    out: dict = {}
    n_gt = gt_maps.shape[0]
    want = set(metrics)
    gcache = _as_cache(cache)
    gt_print = _fingerprint(gt_maps) if gcache is not None else None
    mask_print = _fingerprint(mask) if gcache is not None else None
    if want & {"l2", "corr", "bioem"}:
        dtype = torch.float64
        sel_idx = torch.nonzero(sel_mask).flatten()  # (an index list: one count of the mask, not one per chunk)
        s, mu_s, Vs = _stats_chunked(sub_maps, sel_idx, normalise, convention, dev, dtype, label)
        N = sel_idx.numel()
        out["n_voxels"] = N
        res = {k: np.empty((n_gt, s.shape[0])) for k in want & {"l2", "corr", "bioem"}}
        sig = (gt_print, mask_print, n, mode, normalise, str(dev))
        entry = gcache.lookup("stats", sig) if gcache is not None else None
        if entry is None:
            step = gt_chunk or gt_step(n ** 3 * 8 * 3, dev)
            bounds = [(a, min(n_gt, a + step)) for a in range(0, n_gt, step)]
            if gcache is not None and n_gt * N * 8 < 0.25 * available_bytes(dev):
                entry = gcache.store("stats", sig, bounds, [
                    _stats(gt_maps[a:b], sel_idx, normalise, convention, dev, dtype, gt_label, a) for a, b in bounds])
        else:
            bounds = entry.bounds
        for ci, (a, b) in enumerate(progress(bounds, desc="distances (GT chunks)")):
            g, mu_g, Vg = entry.parts[ci] if entry is not None else _stats(
                gt_maps[a:b], sel_idx, normalise, convention, dev, dtype, gt_label, a)
            for m, v in _stat_scores((g, mu_g, Vg), (s, mu_s, Vs), N, want, ref).items():
                res[m][a:b] = v
        out.update(res)
    if want & {"fsc", "res"}:
        sel3 = sel_mask.reshape(n, n, n).float()
        # real-space mask: soft weights by default, the binary selection in reference mode
        weight = sel3 if (ref or mask is None) else as_tensor(mask, dev).clamp(0, 1)

        use_bg = background and not ref and mask is not None
        solvent = solvent_index(weight, dev) if use_bg else None

        def prep(x):
            # The FSC is scale invariant but not offset invariant under a mask: the solvent
            # background is subtracted before masking (see the module docstring); the published
            # code z-scores before masking instead (reference mode only).
            x = as_tensor(x, dev)
            if ref and normalise == "median_zscore":
                x = median_zscore(x, sel3, convention)
            if use_bg:
                x = subtract_background(x, weight, dev, solvent)
            return x * weight
        curves = fsc_matrix(gt_maps, sub_maps, dev=dev, gt_chunk=gt_chunk, prep=prep, cache=gcache,
                            key=("fsc", mode, normalise, use_bg, mask_print), labels=(gt_label, label))
        out["fsc_curves"] = curves
        if "fsc" in want:
            use = np.ones(n // 2, bool)
            if fsc_cutoff_A:
                use = shell_frequencies(n, voxel_size)[1:] <= 1.0 / fsc_cutoff_A
            out["fsc"] = 1.0 - fsc_area(curves[..., use])  # shells without signal count as 0
        if "res" in want:
            out["res"] = resolution(curves, voxel_size, 0.5, "published" if ref else "interpolated")
    if "sw" in want:
        out["sw"] = sliced_wasserstein(gt_maps, sub_maps, voxel_size, sw_directions, seed, mask, dev, cache)
    return out


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


def distance_matrices_many(gt_maps, subs: dict, mask=None, metrics=METRICS, voxel_size: float = 1.0,
                           fsc_cutoff_A: float | None = None, normalise: str | None = "median_zscore",
                           dev=None, gt_chunk: int | None = None, background: bool = True,
                           gt_label: str = "GT", sub_chunk: int | None = None,
                           sub_memory: int | None = None) -> tuple[dict, dict]:
    """:func:`distance_matrices` for many submissions in **one pass over the GT**.

    subs {label: (n_l, N, N, N) maps on the GT grid; memory maps are read ``sub_chunk`` maps at a
    time}. Each GT chunk is read once and scored against every submission for every metric (l2,
    corr, bioem, fsc, res; default mode): its masked statistics and its shell-sorted spectrum
    come from the same chunk in memory, and the submissions' statistics and spectra (computed
    and checked once, per submission) are stacked so each metric is one matrix product per
    chunk. A challenge-scale GT stored as a memory map is read once for all submissions instead
    of twice per submission. ``sw`` (and ``mode="reference"``) are not fused: use
    :func:`distance_matrices`.

    Memory: the submissions' statistics (float64, masked voxels) and spectra (float32, ~N³) —
    :func:`submission_bytes` per submitted map, ~80 MB at 224³ — plus two GT chunks of ≤ ~1 GiB
    of work each; the submitted maps are transformed ``sub_chunk`` at a time (default: ~0.5 GiB
    of temporaries). When all submissions' statistics exceed ``sub_memory`` bytes (default: 40 %
    of the free memory of ``dev``; chapter 3's ``memory_gib``), they are scored in groups that
    fit, one GT pass per group (a submission is never split), and a line says so.

    Returns (results {label: dict as distance_matrices returns}, failures {label:
    DegenerateMapError}): a degenerate submission is reported, the others are scored.
    A degenerate or non-finite *GT* map raises.
    """
    dev = dev or device()
    n = gt_maps.shape[-1]
    n_sel = n ** 3 if mask is None else int((as_tensor(mask, torch.device("cpu")).flatten() > 0.5).sum())
    per_map = submission_bytes(n, n_sel, metrics)
    budget = sub_memory if sub_memory is not None else int(0.4 * available_bytes(dev))
    groups, cur, used = [], {}, 0
    for lab, maps in subs.items():
        need = per_map * maps.shape[0]
        if cur and used + need > budget:
            groups.append(cur)
            cur, used = {}, 0
        cur[lab], used = maps, used + need
    groups.append(cur)
    if len(groups) > 1:
        print(f"{len(subs)} submissions in {len(groups)} passes over the GT: their statistics take "
              f"{per_map * sum(m.shape[0] for m in subs.values()) / 2 ** 30:.1f} GiB, "
              f"{budget / 2 ** 30:.1f} GiB allowed (sub_memory)")
    results, failures = {}, {}
    for group in groups:
        r, f = _one_gt_pass(gt_maps, group, mask, metrics, voxel_size, fsc_cutoff_A, normalise, dev,
                            gt_chunk, background, gt_label, sub_chunk)
        results.update(r)
        failures.update(f)
    return results, failures


def submission_bytes(n: int, n_masked: int, metrics=METRICS) -> int:
    """Bytes :func:`distance_matrices_many` holds per submitted map of box ``n``: its centred
    masked voxels (float64) for l2/corr/bioem, its shell-sorted spectrum (float32, (Re, Im) of
    the half-spectrum voxels in shells 1..n//2, ~0.52·n³/2 of them) and shell powers for the FSC."""
    want = set(metrics)
    k = int(math.pi / 6 * (n + 1) ** 3 / 2)  # ≈ half-spectrum voxels in shells 1..n//2 (radius n/2 + ½)
    return (n_masked * 8 if want & {"l2", "corr", "bioem"} else 0) + \
        ((2 * k * 4 + (n // 2) * 8) if want & {"fsc", "res"} else 0)


def _one_gt_pass(gt_maps, subs: dict, mask, metrics, voxel_size, fsc_cutoff_A, normalise, dev,
                 gt_chunk, background, gt_label, sub_chunk) -> tuple[dict, dict]:
    """The single GT pass of :func:`distance_matrices_many` for one group of submissions."""
    unknown = set(metrics) - {"l2", "corr", "bioem", "fsc", "res"}
    if unknown:
        raise ValueError(f"distance_matrices_many: {sorted(unknown)} are not fused; use distance_matrices")
    want = set(metrics)
    n = gt_maps.shape[-1]
    n_gt = gt_maps.shape[0]
    # the mask's selections as index lists, made once: a boolean selection recounts its mask on
    # every chunk (at 224³ on 2 CPU cores, 3 maps: 77 ms by a boolean mask, 44 ms by an index list)
    if mask is None:
        sel = torch.arange(n ** 3, device=dev)
        weight = None
    else:
        sel = torch.nonzero(as_tensor(mask, dev).flatten() > 0.5).flatten()
        weight = as_tensor(mask, dev).clamp(0, 1)
    use_bg = background and mask is not None
    solvent = solvent_index(weight, dev) if use_bg else None
    layout = ShellLayout.make(n, dev)
    dtype = torch.float64

    def fsc_input(x):
        if weight is None:
            return x
        return (subtract_background(x, weight, dev, solvent) if use_bg else x) * weight

    # the submissions' statistics and spectra, written straight into one preallocated array each
    # (no per-submission parts concatenated afterwards: that held both, ~2× their size), a few
    # maps at a time (the FFT's temporaries stay ~0.5 GiB whatever the submission's size)
    want_stats, want_spec = bool(want & {"l2", "corr", "bioem"}), bool(want & {"fsc", "res"})
    N = sel.numel()
    failures, rows = {}, {}
    for lab, maps in subs.items():
        if maps.shape[-1] != n:
            failures[lab] = DegenerateMapError(lab, f"box {maps.shape[-1]} differs from the GT's {n}.",
                                               "Preprocess the submission onto the GT grid first.")
        else:
            rows[lab] = maps.shape[0]
    total = sum(rows.values())
    if want_stats:
        S = torch.empty((total, N), dtype=dtype, device=dev)
        mu_s = torch.empty(total, dtype=dtype, device=dev)
        Vs = torch.empty(total, dtype=dtype, device=dev)
    if want_spec:
        fs = torch.empty((total, 2 * layout.order.numel()), dtype=torch.float32, device=dev)
        ps = torch.empty((total, n // 2), dtype=torch.float64, device=dev)
    step_sub = sub_chunk or sub_step(n)
    labels, sizes, r0, keep = [], [], 0, []
    for lab, k in rows.items():
        maps = subs[lab]
        try:
            for c0 in range(0, k, step_sub):
                c1 = min(k, c0 + step_sub)
                x = as_tensor(maps[c0:c1], dev)
                if want_stats:
                    v, mu, V = _stats(x, sel, normalise, "numpy", dev, dtype, lab, c0)
                    S[r0 + c0:r0 + c1], mu_s[r0 + c0:r0 + c1], Vs[r0 + c0:r0 + c1] = v, mu, V
                    del v
                if want_spec:
                    if not want_stats:
                        _check_finite(x, lab, c0)
                    f, p = _spectra(fsc_input(x), None, layout, dev)
                    _check_nonconstant(p.sum(1), lab, c0)
                    fs[r0 + c0:r0 + c1], ps[r0 + c0:r0 + c1] = f, p
                    del f
        except DegenerateMapError as e:
            failures[lab] = e
        else:
            labels.append(lab)
            sizes.append(k)
            keep.append(torch.arange(r0, r0 + k))
        r0 += k
    results = {lab: {} for lab in labels}
    if not labels:
        return results, failures
    if len(labels) < len(rows):  # drop a failed submission's rows (a copy, only then)
        idx = torch.cat(keep).to(dev)
        if want_stats:
            S, mu_s, Vs = S[idx], mu_s[idx], Vs[idx]
        if want_spec:
            fs, ps = fs[idx], ps[idx]
    cols = np.cumsum([0] + sizes)
    if want_stats:
        mats = {m: np.empty((n_gt, len(mu_s))) for m in want & {"l2", "corr", "bioem"}}
    if want_spec:
        curves = np.empty((n_gt, fs.shape[0], n // 2), dtype=np.float32)
    # bytes per GT map in a chunk: its copies (float32 map, float64 masked statistics, spectrum)
    # and its row of every FSC numerator/denominator (float64, all submitted maps × shells)
    n_cols = int(sum(sizes))
    per_map = n ** 3 * 4 * 6 + N * 8 * 2 + n_cols * (n // 2) * 8 * 3
    # at most ~1 GiB of GT work per chunk (two chunks are in flight: one scored, one being read):
    # bigger chunks gain nothing once the matrix products are this large, and the peak memory
    # stays bounded by the submissions' statistics plus two chunks
    step = gt_chunk or gt_step(per_map, dev)
    starts = list(range(0, n_gt, step))

    # two reusable host buffers (pinned for a GPU: an asynchronous copy, and no page-locking of
    # fresh memory per chunk): the GT rows are copied once, from the file (or page cache)
    # straight into the buffer the device reads
    bufs = [torch.empty((min(step, n_gt), n, n, n), dtype=torch.float32,
                        pin_memory=dev.type == "cuda") for _ in range(min(2, len(starts)))]

    def load(i, a):  # the only read of these GT maps
        k = min(n_gt, a + step) - a
        buf = bufs[i % len(bufs)][:k]
        np.copyto(buf.numpy(), np.asarray(gt_maps[a:a + k]), casting="same_kind")
        return buf

    # the next chunk is read (from disk or the page cache) while this one is scored
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(1)
    nxt = pool.submit(load, 0, starts[0])
    for i, a in enumerate(progress(starts, desc="GT chunks (all submissions, all metrics)")):
        b = min(n_gt, a + step)
        host = nxt.result()
        if i + 1 < len(starts):  # into the other buffer: the previous chunk is finished with it (below)
            nxt = pool.submit(load, i + 1, starts[i + 1])
        x = host.to(dev, non_blocking=True)
        if not want_stats:  # (_stats checks it otherwise: one check per chunk)
            _check_finite(x, gt_label, a)
        if want_stats:
            gst = _stats(x, sel, normalise, "numpy", dev, dtype, gt_label, a)
            for m, v in _stat_scores(gst, (S, mu_s, Vs), N, want).items():
                mats[m][a:b] = v
        if want_spec:
            fg, pg = _spectra(fsc_input(x), None, layout, dev)
            _check_nonconstant(pg.sum(1), gt_label, a)
            curves[a:b] = _fsc_block(fg, pg, fs, ps, layout)
        if dev.type == "cuda":  # this chunk's buffer is reused two chunks later: its copy must be done
            torch.cuda.current_stream(dev).synchronize()
        del x, host
    pool.shutdown()
    use = np.ones(n // 2, bool)
    if fsc_cutoff_A:
        use = shell_frequencies(n, voxel_size)[1:] <= 1.0 / fsc_cutoff_A
    for i, lab in enumerate(labels):
        c0, c1 = cols[i], cols[i + 1]
        r = results[lab]
        if want_stats:
            r["n_voxels"] = N
            for m, M in mats.items():
                r[m] = M[:, c0:c1]
        if want_spec:
            r["fsc_curves"] = curves[:, c0:c1]
            if "fsc" in want:
                r["fsc"] = 1.0 - fsc_area(r["fsc_curves"][..., use])
            if "res" in want:
                r["res"] = resolution(r["fsc_curves"], voxel_size, 0.5, "interpolated")
    return results, failures


def sliced_wasserstein(gt_maps, sub_maps, voxel_size: float = 1.0, n_directions: int = 64,
                       seed: int = 0, mask=None, dev=None, cache=None, background: bool = True,
                       chunk: int | None = None) -> np.ndarray:
    """Sliced W1 distance (Å) between every GT and submitted map (see module docstring).
    ``background=False``: the submitted maps' solvent background is already subtracted.
    GT and submitted maps are binned ``chunk`` maps at a time (default :func:`gt_step`: ≤ ~1 GiB
    of work on a CPU): an 80-map set at 224³ binned at once held ~9 GB of copies.

    Only voxels with mask weight > 0 enter (all voxels without a mask), weighted by it; each
    voxel's mass goes to its nearest bin along each direction (one scatter-add per direction:
    ~18× faster than a sparse binning matrix at 224³, whose ~10⁸ entries took ~8 GB to build);
    GT CDFs are cached in ``cache``."""
    dev = dev or device()
    n = sub_maps.shape[-1]
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_directions, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    gcache = _as_cache(cache)
    bsig = (n_directions, seed, _fingerprint(mask) if mask is not None else None, n, str(dev))
    bentry = gcache.lookup("sw_binning", bsig) if gcache is not None else None
    if bentry is not None:  # the bins depend on the mask and directions only
        sel, ws, bins, B = bentry.parts
    else:
        w = torch.ones(n ** 3, device=dev) if mask is None else as_tensor(mask, dev).flatten().clamp(0, 1)
        sel = torch.nonzero(w > 0).flatten()
        ws = w[sel]
        # positions (x, y, z) of the selected voxels only, from their flat index (z slowest)
        r = torch.stack([sel % n, (sel // n) % n, sel // (n * n)], -1).to(torch.float32) - n // 2
        half = math.ceil(math.sqrt(3) * n / 2) + 1
        B = 2 * half + 1  # bins per direction: every |r·d| ≤ √3·n/2 fits
        # (L, V) bin of every voxel along every direction, int16 (B < 32768 up to n = 18000):
        # 2 bytes per voxel and direction, ~190 MB at 224³ with 32 directions
        bins = (torch.as_tensor(d, dtype=torch.float32, device=dev) @ r.T).round_().add_(half).to(torch.int16 if B < 2 ** 15 else torch.int32)
        del r
        if gcache is not None:
            gcache.store("sw_binning", bsig, [], [sel, ws, bins, B])

    def cdfs(maps, label, first=0, subtract=True):
        x = as_tensor(maps, dev)
        _check_finite(x, label, first)
        if mask is not None and subtract:  # an intensity offset would add uniform mass: the solvent level is 0 mass
            x = subtract_background(x, mask, dev)
        x = x.reshape(maps.shape[0], -1)[:, sel].clamp_min_(0).mul_(ws)
        h = torch.zeros(x.shape[0], n_directions, B, device=dev)  # mass per direction and bin
        for i in range(n_directions):  # a scatter-add per direction: no (maps, V, L) copy
            h[:, i].index_add_(1, bins[i].long(), x)
        mass = h.sum(-1, keepdim=True)
        if bool((mass[:, 0, 0] <= 0).any()):
            idx = (torch.nonzero(mass[:, 0, 0] <= 0).flatten() + first).tolist()
            raise DegenerateMapError(label, f"map(s) {idx[:10]} have no positive density inside the mask: "
                                     "the sliced Wasserstein distance treats a map as a mass distribution.",
                                     "Check the maps' sign convention (protein positive) and the mask.")
        return torch.cumsum(h / mass, -1)

    step = chunk or gt_step(n ** 3 * 4 * 3, dev)  # maps per chunk: ≤ ~1 GiB of work (CPU)
    sig = (n_directions, seed, _fingerprint(gt_maps), _fingerprint(mask), n, str(dev))
    entry = gcache.lookup("sw", sig) if gcache is not None else None
    if entry is not None:
        cg_all = entry.parts[0]
    else:
        cg_all = torch.cat([cdfs(gt_maps[a:a + step], "GT", a) for a in range(0, gt_maps.shape[0], step)])
        if gcache is not None:
            gcache.store("sw", sig, [(0, gt_maps.shape[0])], [cg_all])
    cs = torch.cat([cdfs(sub_maps[a:a + step], "submission", a, subtract=background)
                    for a in range(0, sub_maps.shape[0], step)])
    out = np.empty((gt_maps.shape[0], sub_maps.shape[0]))
    for a in range(0, len(cg_all), 64):
        dist = torch.cdist(cg_all[a:a + 64].permute(1, 0, 2), cs.permute(1, 0, 2), p=1)  # (L, g, s)
        out[a:a + 64] = (dist.mean(0) * voxel_size).cpu().numpy()
    return out
