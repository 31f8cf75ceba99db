"""Euler angles, rotations, the Fourier-slice projector and the CTF against independent oracles."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from conftest import REPO, blob_volume
from helpers.kernels import geometry as G
from helpers.kernels import projection as P

BLOBS = [((0, 8, 0), 1.0), ((5, -3, 4), 0.7), ((-6, -2, -5), 1.3)]


def test_euler_matches_scipy_intrinsic_zyz():
    rng = np.random.default_rng(1)
    e = np.column_stack([rng.uniform(-180, 180, 20), rng.uniform(0, 180, 20), rng.uniform(-180, 180, 20)])
    ref = Rotation.from_euler("ZYZ", e, degrees=True).as_matrix()
    np.testing.assert_allclose(G.euler_to_matrix(*e.T), ref, atol=1e-12)
    back = G.matrix_to_euler(ref)
    np.testing.assert_allclose(G.euler_to_matrix(*back.T), ref, atol=1e-9)


def test_haar_rotations_are_uniform():
    R = G.random_rotations(20000, np.random.default_rng(0))
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape), atol=1e-10)
    # Haar: E[trace] = 0 (the trace of a uniform rotation has mean 0) and E[R] = 0
    assert abs(np.trace(R, axis1=1, axis2=2).mean()) < 0.03
    assert np.abs(R.mean(0)).max() < 0.02


def test_identity_projection_is_exact_line_sum():
    V = blob_volume(32, BLOBS).astype(np.float32)
    img = P.FourierSliceProjector(V, gridding_correction=False).project(np.eye(3)[None])[0, 0].numpy()
    np.testing.assert_allclose(img, V.sum(0), atol=1e-4 * V.sum(0).max())


@pytest.mark.parametrize("angles", [(30, 60, 90), (120, 45, -30), (-70, 150, 10)])
def test_rotated_projection_matches_real_space(angles):
    n = 48
    V = blob_volume(n, BLOBS).astype(np.float32)
    M = G.euler_to_matrix(*angles)
    # I(x, y) = Σ_t V(M r): blobs at c appear where M r = c, i.e. at Mᵀ c
    ref = blob_volume(n, [(tuple(M.T @ np.array(c)), w) for c, w in BLOBS]).sum(0)
    img = P.FourierSliceProjector(V).project(M[None])[0, 0].numpy()
    assert np.linalg.norm(img - ref) / np.linalg.norm(ref) < 0.015


def test_psi_90_moves_plus_y_to_plus_x():
    """image-formation.md §3.1: a blob at volume (x, y) = (0, +8) appears at image (+8, 0) for psi = 90."""
    n = 32
    V = blob_volume(n, [((0, 8, 0), 1.0)]).astype(np.float32)
    img = P.FourierSliceProjector(V).project(G.euler_to_matrix(0, 0, 90)[None])[0, 0].numpy()
    y, x = np.unravel_index(img.argmax(), img.shape)
    assert (x - n // 2, y - n // 2) == (8, 0)


def test_rotate_volume_matches_rotated_blobs():
    n = 40
    V = blob_volume(n, BLOBS, sigma=2.5).astype(np.float32)
    R = G.axis_angle_to_matrix([1, 2, 3], 40)
    out = G.rotate_volume(V, R).numpy()
    ref = blob_volume(n, [(tuple(R @ np.array(c)), w) for c, w in BLOBS], sigma=2.5)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.04
    # 90° about z maps grid points to grid points (odd box: centre exact): V'(x, y) = V(y, -x)
    W = blob_volume(41, BLOBS, sigma=2.5).astype(np.float32)
    out90 = G.rotate_volume(W, G.axis_angle_to_matrix([0, 0, 1], 90)).numpy()
    np.testing.assert_allclose(out90, np.rot90(W, -1, axes=(1, 2)), atol=1e-5)


def test_ctf_closed_form_and_sign():
    n, px = 64, 1.5
    c = P.ctf(n, px, [15000.0], [13000.0], [30.0], voltage=300, cs=2.7, amplitude_contrast=0.07)[0].numpy()
    assert c[0, 0] == pytest.approx(0.07, abs=1e-12)  # RELION sign: +A at k = 0
    lam = 12.2643247 / math.sqrt(300e3 * (1 + 0.978466e-6 * 300e3))
    assert lam == pytest.approx(0.019687, abs=1e-5)
    # an independent evaluation at one frequency (kx index 5, ky index 3)
    kx, ky = 5 / (n * px), 3 / (n * px)
    k2, th = kx ** 2 + ky ** 2, math.atan2(ky, kx)
    df = 0.5 * (28000 + 2000 * math.cos(2 * (th - math.radians(30))))
    chi = math.pi * lam * df * k2 - 0.5 * math.pi * 2.7e7 * lam ** 3 * k2 ** 2 + math.asin(0.07)
    assert c[3, 5] == pytest.approx(math.sin(chi), abs=1e-10)


def test_shift_phase_moves_image_by_whole_pixels():
    n = 32
    img = np.zeros((n, n))
    img[n // 2, n // 2] = 1.0
    f = P.image_rfft(torch.as_tensor(img)) * P.shift_phase(n, [(3, -2)])[0]
    out = P.image_irfft(f, n).numpy()
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert (x - n // 2, y - n // 2) == (3, -2)


def test_pose_grid_weights_and_spacing():
    eul, R, w = G.pose_grid(100, 12)
    assert R.shape == (1200, 3, 3) and w.sum() == pytest.approx(1.0)
    d = G.sphere_directions(100)
    nn = np.sort(np.degrees(np.arccos(np.clip(d @ d.T, -1, 1))), 1)[:, 1]
    assert nn.max() < G.grid_spacing_deg(100, 1) * 1.2


# ----------------------------------------- accuracy of the default projector on the demo's maps
def _adk_maps(box=32, voxel=4.292, frames=(0, 40)):
    """Two real AdK frames rendered as the demo renders them (sharp atoms: much power near Nyquist)."""
    from helpers.datagen.ensemble import load_adk, render_maps

    adk = load_adk(REPO / "data/adk/adk_paths.npz")
    el = adk.pop("elements")
    xyz = adk["dims"][list(frames)]
    xyz = xyz - xyz.mean(1, keepdims=True)
    return render_maps(xyz, el, box, voxel, bfactor=30.0)


def _direct_slice(V, R):
    """float64 direct Fourier sum of the map at the rotated slice frequencies M (kx, ky, 0) on the
    rfft2 grid (the exact transform of the trigonometric interpolant): an independent projector."""
    n = V.shape[-1]
    kx, ky = P.image_freqs(n)
    k = np.stack([kx.numpy(), ky.numpy(), np.zeros(kx.shape)], -1).reshape(-1, 3)
    c = np.arange(n) - n // 2
    Z, Y, X = np.meshgrid(c, c, c, indexing="ij")
    r = np.stack([X.ravel(), Y.ravel(), Z.ravel()], 1).astype(np.float64)
    F = np.exp(-2j * np.pi * ((k @ R.T) @ r.T) / n) @ V.astype(np.float64).ravel()
    disc = np.hypot(kx.numpy(), ky.numpy()) < n / 2
    return F.reshape(n, n // 2 + 1), disc


def test_default_projector_is_within_one_percent_on_demo_maps():
    """Default path (gridding correction on): at the identity against the exact discrete line sum
    (whole image, Nyquist included: reading the Nyquist column as 0 cost 3–6 %), and at random
    poses against the direct Fourier sum within the Nyquist disc. Measured: ≤ 0.6 %."""
    maps = _adk_maps()
    proj = P.FourierSliceProjector(maps)
    img = proj.project(np.eye(3)[None]).double().numpy()[:, 0]
    ref = maps.astype(np.float64).sum(1)  # Σ over z of (z, y, x)
    err = np.linalg.norm(img - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))
    assert err.max() < 0.01
    rots = G.random_rotations(3, np.random.default_rng(7))
    for R in rots:
        got = proj.project_ft(R[None]).numpy()[:, 0]
        for m in range(len(maps)):
            F, disc = _direct_slice(maps[m], R)
            a = P.image_irfft(torch.as_tensor(np.where(disc, got[m], 0)), 32).numpy()
            b = P.image_irfft(torch.as_tensor(np.where(disc, F, 0)), 32).numpy()
            assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.01


def test_ungridded_projector_is_exact_at_the_identity_including_nyquist():
    maps = _adk_maps(frames=(10,))
    img = P.FourierSliceProjector(maps, gridding_correction=False).project(np.eye(3)[None])[0, 0].double().numpy()
    np.testing.assert_allclose(img, maps[0].astype(np.float64).sum(0), atol=1e-5 * maps[0].sum(0).max())


def test_rigid_motion_shift_matches_an_integer_roll():
    """rotate_volume(V, I, shift_in=s) samples V at r + s: for an integer s it is np.roll by −s
    (x, y, z) → array axes (2, 1, 0); shift_out moves the result back (interior voxels)."""
    V = blob_volume(24, BLOBS, sigma=2.0).astype(np.float32)
    s = np.array([2.0, -1.0, 3.0])  # (x, y, z) voxels
    got = G.rotate_volume(V, np.eye(3), shift_in=s).numpy()
    ref = np.roll(V, (-3, 1, -2), axis=(0, 1, 2))
    np.testing.assert_allclose(got[4:-4, 4:-4, 4:-4], ref[4:-4, 4:-4, 4:-4], atol=1e-5)
    back = G.rotate_volume(V, np.eye(3), shift_in=s, shift_out=s).numpy()
    np.testing.assert_allclose(back, V, atol=1e-5)
    R = G.axis_angle_to_matrix([0, 0, 1], 90)
    c = np.array([1.0, 2.0, 0.0])  # the point c of V lands on c after rotating about it
    about = G.rotate_volume(V, R, shift_in=c, shift_out=c).numpy()
    moved = blob_volume(24, [(tuple(R @ (np.array(p) - c) + c), w) for p, w in BLOBS], sigma=2.0)
    inner = (slice(5, -5),) * 3  # away from voxels sampled from outside the box; a quarter turn about a grid point is exact
    np.testing.assert_allclose(about[inner], moved[inner], atol=1e-4)


def test_rotate_volume_equals_a_float64_trilinear_reference_for_one_and_many_rotations():
    """rotate_volume against scipy's float64 trilinear interpolation (zeros outside the box):
    one R shared by a batch (one grid, maps as channels) and one R per map (grids built a few
    maps at a time: chunk_bytes forcing one map per chunk must give the same numbers)."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(3)
    n = 14
    maps = rng.standard_normal((5, n, n, n)).astype(np.float32)
    Rs = np.stack([G.axis_angle_to_matrix(rng.standard_normal(3), a) for a in (10, 35, 80, 120, 200)])
    s_in, s_out = np.array([0.7, -1.2, 0.4]), np.array([-0.5, 0.3, 1.1])
    c = np.arange(n) - n // 2
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    r = np.stack([xx, yy, zz], -1).reshape(-1, 3) - s_out

    def ref(v, R):
        src = r @ R + s_in + n // 2  # Rᵀ (r − s_out) + s_in, as array coordinates (x, y, z)
        return map_coordinates(v.astype(np.float64), src[:, ::-1].T, order=1, mode="grid-constant",
                               cval=0.0).reshape(n, n, n)

    one = G.rotate_volume(maps, Rs[1], shift_in=s_in, shift_out=s_out).numpy()
    np.testing.assert_allclose(one, np.stack([ref(v, Rs[1]) for v in maps]), atol=2e-5)
    want = np.stack([ref(v, R) for v, R in zip(maps, Rs)])
    for chunk in (1, 2 ** 28):
        many = G.rotate_volume(maps, Rs, shift_in=s_in, shift_out=s_out, chunk_bytes=chunk).numpy()
        np.testing.assert_allclose(many, want, atol=2e-5)
    # in place (out= the maps' own memory), a map or two at a time: the same numbers
    for R, expect in ((Rs[1], one), (Rs, want)):
        for chunk in (1, 2 * n ** 3 * 4 * 3):
            x = torch.from_numpy(maps.copy())
            got = G.rotate_volume(x, R, shift_in=s_in, shift_out=s_out, chunk_bytes=chunk, out=x)
            assert got.data_ptr() == x.data_ptr()
            np.testing.assert_allclose(x.numpy(), expect, atol=2e-5)


def _extent_map(n, frac, seed):
    """Low-passed noise inside a sphere of radius frac · n/2 (a map reaching that far from the centre)."""
    from helpers.kernels.fourier import lowpass

    rng = np.random.default_rng(seed)
    x = lowpass(torch.as_tensor(rng.standard_normal((1, n, n, n))), 3.0, 1.0)[0].numpy()
    c = np.arange(n) - n // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    return (x * (r < frac * n / 2)).astype(np.float32)


# (fraction of the half-box the map reaches, documented % error at the identity, at random poses)
DOCUMENTED = [(0.25, 0.37, 0.14), (0.5, 1.45, 0.62), (0.75, 3.5, 1.44), (0.9, 5.1, 1.9)]


@pytest.mark.parametrize("frac,at_identity,at_random", DOCUMENTED)
def test_projector_accuracy_is_as_documented_against_map_extent(frac, at_identity, at_random):
    """The helpers.kernels.projection docstring's accuracy table, point by point (default pad 3, 32 px):
    the measured error is within 15 % of the documented figure (issue 32: the docs promised
    ≤ 0.6 % for every map; maps reaching 75 % of the half-box measure 3.5 %)."""
    n = 32
    maps = np.stack([_extent_map(n, frac, s) for s in range(2)])
    proj = P.FourierSliceProjector(maps)
    img = proj.project(np.eye(3)[None]).double().numpy()[:, 0]
    ref = maps.astype(np.float64).sum(1)
    e_id = 100 * (np.linalg.norm(img - ref, axis=(1, 2)) / np.linalg.norm(ref, axis=(1, 2))).max()
    e_r = 0.0
    for R in G.random_rotations(3, np.random.default_rng(7)):
        got = proj.project_ft(R[None]).numpy()[:, 0]
        for m in range(len(maps)):
            F, disc = _direct_slice(maps[m], R)
            a = P.image_irfft(torch.as_tensor(np.where(disc, got[m], 0)), n).numpy()
            b = P.image_irfft(torch.as_tensor(np.where(disc, F, 0)), n).numpy()
            e_r = max(e_r, 100 * np.linalg.norm(a - b) / np.linalg.norm(b))
    assert e_id == pytest.approx(at_identity, rel=0.15) and e_r == pytest.approx(at_random, rel=0.15), (e_id, e_r)
