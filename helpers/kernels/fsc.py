"""Fourier shell correlation at GEMM speed: FSC curves, mask correction and resolution.

Maps are (n, N, N, N) real-space stacks, masks (N, N, N) weights; curves are (…, N//2) over
shells 1 … N//2 (``helpers.kernels.fourier`` shells), resolutions in Å (``voxel_size`` Å/voxel).
Everything is computed from batched matrix products, never pair by pair:

* **FSC** of every GT map g with every submitted map s, per shell i:
  FSC_i(g, s) = Re Σ_{k∈i} G(k) S*(k) / sqrt(Σ_{k∈i}|G|² Σ_{k∈i}|S|²).
  Each map is Fourier transformed once (real FFT; half-spectrum multiplicities applied), the
  voxels are grouped by shell (:class:`ShellLayout`), and the numerator of all pairs for one
  shell is one real GEMM of [Re G, Im G] with [Re S, Im S]. The GT is streamed in chunks sized
  to free memory (:func:`helpers.kernels.gt_cache.gt_step`). With a mask, each map's solvent
  background is subtracted before it is multiplied by the mask weights
  (:func:`helpers.kernels.volume_input.background_level`, where the reasons are given): the FSC,
  FSC distance and resolution are then invariant to a per-map affine change a·s + b (a > 0).
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
* **FSC distance** (:func:`fsc_distance`): 1 − mean FSC over shells (optionally only shells up
  to ``fsc_cutoff_A``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from helpers.core.backend import available_bytes, device, progress, sub_step
from helpers.kernels.fourier import as_tensor, rfft_weights, shell_frequencies, shell_index
from helpers.kernels.gt_cache import _as_cache, _fingerprint, gt_step
from helpers.kernels.volume_input import _check_finite, _check_nonconstant, solvent_index, subtract_background

NO_SIGNAL = 1e-6  # shell power below this fraction of a map's strongest shell: no signal, FSC undefined


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
    def make(cls, n: int, dev=None, shells: torch.Tensor | None = None, last: int | None = None) -> "ShellLayout":
        """Shells 1..``last`` (default N//2) of the rfft grid; ``shells``: the shell number of every
        half-spectrum voxel (default round(|k|), :func:`helpers.kernels.fourier.shell_index`)."""
        s = (shell_index(n, dev) if shells is None else shells).flatten()
        last = n // 2 if last is None else last
        w = rfft_weights(n, dev).expand(n, n, -1).flatten()
        keep = (s >= 1) & (s <= last)
        idx = torch.nonzero(keep).flatten()
        order = idx[torch.argsort(s[idx], stable=True)]
        ss = s[order].cpu().numpy()
        bounds = [(int(np.searchsorted(ss, i)), int(np.searchsorted(ss, i, side="right"))) for i in range(1, last + 1)]
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


def fsc_distance(curves, n: int, voxel_size: float, fsc_cutoff_A: float | None = None) -> np.ndarray:
    """1 − :func:`fsc_area` of curves (..., n//2) of box ``n``: over every shell, or only the
    shells up to the frequency 1/``fsc_cutoff_A`` (Å) when given. Shells without signal count as 0."""
    use = np.ones(n // 2, bool)
    if fsc_cutoff_A:
        use = shell_frequencies(n, voxel_size)[1:] <= 1.0 / fsc_cutoff_A
    return 1.0 - fsc_area(curves[..., use])


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
    as in :func:`helpers.kernels.volume_metrics.distance_matrices`; each map's solvent background is subtracted first
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


