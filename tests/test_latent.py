"""Latent-space scores (helpers/kernels/latent.py) against independent numbers: brute-force float64
numpy references (argsort ranks, set intersections), closed forms (chance k/(m − 1), tied labels,
(k + 1)/N for identical spaces, a non-central χ² expectation), scipy's Wahba solver, dadapy when
installed, and the image formation itself for the pose conventions."""
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.transform import Rotation

from helpers.kernels import latent as L
from helpers.kernels.geometry import random_rotations, rotate_volume, rotvec_to_matrix
from helpers.kernels.projection import FourierSliceProjector
from tests.conftest import blob_volume

CPU = torch.device("cpu")


def _dist(x):
    x = np.asarray(x, float).reshape(len(x), -1)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    return d


def ns_brute(a, b, k):
    """Mean over points of |kNN_a ∩ kNN_b| / k (self excluded; tie-free data)."""
    na, nb = np.argsort(_dist(a), 1)[:, :k], np.argsort(_dist(b), 1)[:, :k]
    return np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)])


def imb_brute(a, b, k):
    """2/N · mean rank in b (1 = nearest) of each point's k nearest neighbours in a."""
    da, db = _dist(a), _dist(b)
    rank_b = np.argsort(np.argsort(db, 1), 1) + 1
    nn = np.argsort(da, 1)[:, :k]
    return 2 / len(a) * np.take_along_axis(rank_b, nn, 1).mean()


def chance_sigma(k, m, n_points):
    """σ of the mean fraction under independence: hypergeometric overlap of two k-subsets of m − 1."""
    p = k / (m - 1)
    return np.sqrt(p * (1 - p) * (m - 1 - k) / ((m - 2) * k) / n_points)


# --- neighbourhood similarity ---------------------------------------------------------------

def test_ns_matches_brute_force_per_split():
    """Each interleaved subset i::3 against the set-intersection reference; mean and standard error
    across subsets; a 7-row chunk gives the same numbers."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 3))
    b = a[:, :2] + 0.3 * rng.normal(size=(300, 2))
    ks = [1, 5, 20]
    r = L.neighbourhood_similarity(a, b, ks, n_splits=3, dev=CPU)
    ref = np.array([[ns_brute(a[i::3], b[i::3], k) for k in ks] for i in range(3)])
    np.testing.assert_allclose(r.per_split, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(r.mean, ref.mean(0), atol=1e-12)
    np.testing.assert_allclose(r.sem, ref.std(0, ddof=1) / np.sqrt(3), atol=1e-12)
    assert np.all((r.mean > 2 * r.chance) & (r.mean < 0.9))   # neither chance nor trivial
    np.testing.assert_allclose(L.neighbourhood_similarity(a, b, ks, 3, chunk=7, dev=CPU).per_split, ref, atol=1e-12)


def test_ns_self_is_one_random_is_chance():
    """a against itself: 1 at every k. An independent b: k/(m − 1) within 5 σ of the hypergeometric
    spread of the overlap (σ² = p(1 − p)(m − 1 − k)/((m − 2) k) / n, p = k/(m − 1))."""
    rng = np.random.default_rng(1)
    n, s, ks = 1000, 5, np.array([2, 10, 40])
    a = rng.normal(size=(n, 3))
    same = L.neighbourhood_similarity(a, a, ks, s, dev=CPU)
    np.testing.assert_allclose(same.mean, 1.0, atol=1e-12)
    np.testing.assert_allclose(same.ceiling, 1.0, atol=1e-12)
    r = L.neighbourhood_similarity(a, rng.normal(size=(n, 2)), ks, s, dev=CPU)
    m = n // s
    np.testing.assert_allclose(r.chance, ks / (m - 1), rtol=1e-12)
    assert r.split_size == m
    assert np.all(np.abs(r.mean - ks / (m - 1)) < 5 * chance_sigma(ks, m, n)), (r.mean, ks / (m - 1))


def test_ns_tied_labels_closed_form():
    """A 1-D discrete label (G classes of s particles, spacing 1): the g tied classmates share the k
    places, so label vs itself, and vs any tie-free latent that keeps classes apart, reads
    k/(s − 1) for k ≤ s − 1 (that is the ceiling); for k = s − 1 + r (0 < r ≤ s) the adjacent classes
    (2s particles for the G − 2 inner classes, s for the two end ones) share r places:
    ((G − 2)(s − 1 + r²/2s) + 2(s − 1 + r²/s)) / (G k)."""
    G, s = 8, 20
    lab = np.repeat(np.arange(G), s).astype(float)
    ks = np.array([1, 5, s - 1, s + 4, 2 * s - 1])
    r = L.neighbourhood_similarity(lab, lab, ks, n_splits=1, dev=CPU)
    rr = ks - (s - 1)
    beyond = ((G - 2) * (s - 1 + rr ** 2 / (2 * s)) + 2 * (s - 1 + rr ** 2 / s)) / (G * ks)
    expect = np.where(ks <= s - 1, ks / (s - 1), beyond)
    np.testing.assert_allclose(r.mean, expect, rtol=1e-12)
    np.testing.assert_allclose(r.ceiling, expect, rtol=1e-12)
    latent = lab + 1e-3 * np.random.default_rng(2).normal(size=lab.shape)   # perfect, tie-free
    np.testing.assert_allclose(L.neighbourhood_similarity(lab, latent, ks[:3], 1, dev=CPU).mean,
                               ks[:3] / (s - 1), rtol=1e-12)


def test_ns_ties_do_not_depend_on_particle_order():
    """Expectation over random tie-breaking is invariant to reordering the particles; breaking ties
    by index (a stable sort, CryoBench's rule) is not when the files come in label blocks."""
    rng = np.random.default_rng(3)
    lab = np.repeat(np.arange(10), 30).astype(float)
    z = np.arange(300.0) + 0.1 * rng.normal(size=300)   # acquisition order, e.g. a drifting defocus
    p = rng.permutation(300)
    ks = [3, 10, 29]
    r0 = L.neighbourhood_similarity(lab, z, ks, 1, dev=CPU).mean
    r1 = L.neighbourhood_similarity(lab[p], z[p], ks, 1, dev=CPU).mean
    np.testing.assert_allclose(r0, r1, rtol=1e-12)


# --- information imbalance -------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 3])
def test_imbalance_matches_brute_force(k):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 3))
    b = np.c_[a[:, 0] ** 2, a[:, 1]] + 0.2 * rng.normal(size=(200, 2))
    ab, ba = L.information_imbalance(a, b, k=k, dev=CPU)
    assert ab == pytest.approx(imb_brute(a, b, k), abs=1e-12)
    assert ba == pytest.approx(imb_brute(b, a, k), abs=1e-12)
    assert tuple(L.information_imbalance(a, b, k=k, chunk=9, dev=CPU)) == pytest.approx((ab, ba), abs=1e-12)


def test_imbalance_matches_dadapy():
    dadapy = pytest.importorskip("dadapy.metric_comparisons")
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 3))
    b = a[:, :2] + 0.3 * rng.normal(size=(300, 2))
    for k in (1, 3):
        mc = dadapy.MetricComparisons(a, maxk=299, n_jobs=1)
        ref = mc.return_inf_imb_two_selected_coords([0, 1, 2], [0, 1, 2], k=k)  # a with itself
        assert ref[0] == pytest.approx((k + 1) / 300, abs=1e-12)
        (ab, _), (ba, _) = mc.return_information_imbalace(b, k=k, subset_size=300)
        assert tuple(L.information_imbalance(a, b, k=k, dev=CPU)) == pytest.approx((ab, ba), abs=1e-12)


def test_imbalance_closed_cases():
    """Identical spaces: (k + 1)/N both ways. Independent: 1 within 5 σ (per-point 2r/N ~ U(0, 2),
    variance 1/3). A = (x, y) Gaussian, B = x: Δ(A→B) small; Δ(B→A) → 2 E[F(|y_j − y_i|)] with F the
    non-central χ²₂ CDF of the A-distance from point i (λ = x_i² + y_i²): B's nearest neighbour has
    the same x and an independent y — ≈ 0.56 in 2-D, not 1."""
    rng = np.random.default_rng(6)
    N = 1000
    A = rng.normal(size=(N, 2))
    for k in (1, 3):
        assert tuple(L.information_imbalance(A, 2 * A + 1, k=k, dev=CPU)) == pytest.approx(((k + 1) / N,) * 2, abs=1e-12)
    ab, ba = L.information_imbalance(A, rng.normal(size=(N, 3)), dev=CPU)
    assert abs(ab - 1) < 5 / np.sqrt(3 * N) and abs(ba - 1) < 5 / np.sqrt(3 * N), (ab, ba)
    xy_to_x, x_to_xy = L.information_imbalance(A, A[:, 0], dev=CPU)
    xi, yi, yj = np.random.default_rng(7).normal(size=(3, 50_000))
    expect = 2 * stats.ncx2.cdf((yj - yi) ** 2, 2, xi ** 2 + yi ** 2).mean()
    assert xy_to_x < 0.1
    assert abs(x_to_xy - expect) < 4 / np.sqrt(3 * N), (x_to_xy, expect)


def test_imbalance_tied_labels_closed_form():
    """G classes of s particles (1-D label, N = G s) and a tie-free latent that keeps the classes
    apart: the label's nearest neighbours are its s − 1 classmates (weight 1/(s − 1) each) and they
    hold ranks 1 … s − 1 in the latent, or share the mean rank s/2 in the label itself — so
    Δ = 2/N · s/2 = 1/G in every direction, label against itself included."""
    G, s = 6, 25
    lab = np.repeat(np.arange(G), s).astype(float)
    z = lab + 1e-3 * np.random.default_rng(16).normal(size=lab.shape)
    assert tuple(L.information_imbalance(lab, lab, dev=CPU)) == pytest.approx((1 / G,) * 2, rel=1e-12)
    assert tuple(L.information_imbalance(lab, z, dev=CPU)) == pytest.approx((1 / G,) * 2, rel=1e-12)


def test_imbalance_subsets():
    """subset_size: N // size disjoint subsets of a seeded permutation, each scored alone."""
    rng = np.random.default_rng(8)
    a = rng.normal(size=(1030, 2))
    b = a + 0.5 * rng.normal(size=(1030, 2))
    r = L.information_imbalance(a, b, k=3, subset_size=250, seed=11, dev=CPU)
    perm = np.random.default_rng(11).permutation(1030)
    per = np.array([[imb_brute(a[g], b[g], 3), imb_brute(b[g], a[g], 3)]
                    for g in (perm[i * 250:(i + 1) * 250] for i in range(4))])
    assert (r.n_subsets, r.subset_size) == (4, 250)
    assert (r.a_to_b, r.b_to_a) == pytest.approx(tuple(per.mean(0)), abs=1e-12)
    assert (r.a_to_b_sem, r.b_to_a_sem) == pytest.approx(tuple(per.std(0, ddof=1) / 2), abs=1e-12)


# --- pose error ----------------------------------------------------------------------------

def _perturbations(rng, n, max_deg):
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    theta = rng.uniform(0.05, max_deg, n)
    return rotvec_to_matrix(axis * np.deg2rad(theta)[:, None]), theta


def test_pose_error_recovers_known_perturbations():
    """R_est = Q0 R E with perturbations in ± pairs (Σ R E Rᵀ symmetric positive definite, so the
    best global rotation is exactly Q0ᵀ): the angles are the perturbations' angles, and equal
    arccos((tr E − 1)/2)."""
    rng = np.random.default_rng(9)
    R = random_rotations(100, rng)
    E, theta = _perturbations(rng, 100, 8.0)
    R, E, theta = np.r_[R, R], np.r_[E, np.swapaxes(E, 1, 2)], np.r_[theta, theta]
    Q0 = random_rotations(1, rng)[0]
    r = L.pose_error(R, Q0 @ R @ E)
    np.testing.assert_allclose(r.angles, theta, atol=1e-9)
    np.testing.assert_allclose(r.angles, np.rad2deg(np.arccos((np.trace(E, axis1=1, axis2=2) - 1) / 2)), atol=1e-6)
    np.testing.assert_allclose(r.rotation, Q0.T, atol=1e-12)
    assert not r.mirrored
    assert (r.median, r.mean) == pytest.approx((np.median(theta), theta.mean()), abs=1e-9)


@pytest.mark.parametrize("spread", [10.0, 180.0])
def test_pose_alignment_is_wahba_optimum(spread):
    """The global rotation equals scipy's Wahba solution on the matrices' columns (a proper rotation
    even when the estimates are unrelated to the truth, where the sign fix matters), and the RMS
    Frobenius residual matches the definition."""
    rng = np.random.default_rng(11)
    R = random_rotations(60, rng)
    E, _ = _perturbations(rng, 60, spread)
    Q0 = random_rotations(1, rng)[0]
    Rest = Q0 @ R @ E if spread < 90 else random_rotations(60, rng)
    if spread > 90:   # this case needs the sign fix: the unconstrained polar factor is improper
        U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", R, Rest))
        assert np.linalg.det(U @ Vt) < 0
    r = L.pose_error(R, Rest, mirror="ignore")
    a = np.swapaxes(R, 1, 2).reshape(-1, 3)      # columns of every R_true
    b = np.swapaxes(Rest, 1, 2).reshape(-1, 3)
    ref = Rotation.align_vectors(a, b)[0].as_matrix()
    np.testing.assert_allclose(r.rotation, ref, atol=1e-8)
    assert np.linalg.det(r.rotation) == pytest.approx(1.0, abs=1e-12)
    resid = np.sqrt(np.mean(np.sum((R - r.rotation @ Rest) ** 2, axis=(1, 2))))
    assert r.rms_frobenius == pytest.approx(resid, abs=1e-9)


def test_pose_error_mirror_detected():
    """Estimates of the mirror-image map, R_est = Q0 J R E K: detected, and the perturbation angles
    recovered; ignoring the hand leaves errors of tens of degrees."""
    rng = np.random.default_rng(12)
    R = random_rotations(100, rng)
    E, theta = _perturbations(rng, 100, 3.0)
    R, E, theta = np.r_[R, R], np.r_[E, np.swapaxes(E, 1, 2)], np.r_[theta, theta]
    J = np.diag([-1.0, 1, 1])
    Rest = random_rotations(1, rng)[0] @ J @ R @ E @ L.K_FLIP
    r = L.pose_error(R, Rest)
    assert r.mirrored
    np.testing.assert_allclose(r.angles, theta, atol=1e-9)
    wrong = L.pose_error(R, Rest, mirror="ignore")
    assert not wrong.mirrored and wrong.median > 30


def test_pose_conventions_against_projections():
    """The conventions pose_error and nuisance_embeddings state, checked on images
    (I = Σ_t V(R (x, y, t)ᵀ)): the map rotated by Q gives the images of V at R at poses Q R (a
    left multiplication; R Q does not); the mirror map V(J r) gives them at J R K (K = K_FLIP); a
    blob moved along the view vector R (0, 0, 1)ᵀ projects to the same image."""
    n = 16
    V = blob_volume(n, [((2, -1, 0), 1.0), ((-2, 2, 1), 0.7), ((0, -2, -3), 0.5)], sigma=1.3)
    R = random_rotations(3, np.random.default_rng(13))
    Q = Rotation.from_rotvec([0.4, -0.9, 0.5]).as_matrix()
    ref = FourierSliceProjector(V, dev=CPU).project(R)[0].double()
    rot = FourierSliceProjector(rotate_volume(V, Q), dev=CPU)

    def corr(x, y):
        x, y = x - x.mean(), y - y.mean()
        return float((x * y).sum() / (x.norm() * y.norm()))

    assert corr(rot.project(Q @ R)[0].double(), ref) > 0.99
    assert corr(rot.project(R @ Q)[0].double(), ref) < 0.9
    J = np.diag([-1.0, 1, 1])                          # x → −x: index i → −i mod n on the grid
    Vm = V[:, :, (-np.arange(n)) % n]
    mir = FourierSliceProjector(Vm, dev=CPU).project(J @ R @ L.K_FLIP)[0].double()
    assert float((mir - ref).norm() / ref.norm()) < 1e-4
    view = L.nuisance_embeddings(rotations=R[:1])["view"][0]
    moved = blob_volume(n, [(tuple(3 * view), 1.0)], sigma=1.3)
    side = blob_volume(n, [(tuple(3 * R[0][:, 0]), 1.0)], sigma=1.3)
    one = FourierSliceProjector(np.stack([blob_volume(n, [((0, 0, 0), 1.0)], sigma=1.3), moved, side]),
                                dev=CPU).project(R[:1])[:, 0].double()
    assert float((one[1] - one[0]).norm() / one[0].norm()) < 0.02
    assert float((one[2] - one[0]).norm() / one[0].norm()) > 0.5


# --- nuisances and the score table ---------------------------------------------------------------

def test_nuisance_embeddings():
    rng = np.random.default_rng(14)
    R = random_rotations(50, rng)
    df = rng.uniform(8000, 25000, size=(50, 2))
    e = L.nuisance_embeddings(defocus=df, rotations=R)
    np.testing.assert_allclose(e["defocus"], (df - df.mean(0)) / df.std(0), atol=1e-12)
    np.testing.assert_allclose(e["view"], R @ np.array([0, 0, 1.0]), atol=1e-15)
    np.testing.assert_allclose(e["pose"][:, 3:6], R[:, 1], atol=0)
    assert e["defocus"].shape == (50, 2) and e["view"].shape == (50, 3) and e["pose"].shape == (50, 9)


def test_score_latent_tells_defocus_from_conformation():
    """A latent = defocus + tiny noise scores near its ceiling and Δ ≈ 0 against defocus and chance
    (within 5 σ) against the conformation and the view; a latent = conformation the reverse."""
    rng = np.random.default_rng(15)
    n, s = 1000, 5
    conf = rng.uniform(0, 1, n)
    R = random_rotations(n, rng)
    nuis = L.nuisance_embeddings(defocus=rng.uniform(8000, 25000, n), rotations=R)
    nuis.pop("pose")
    m, k_sig = n // s, 5 / np.sqrt(3 * n)
    for truth, z in [("defocus", nuis["defocus"] + 1e-3 * rng.normal(size=(n, 1))),
                     ("conformation", conf[:, None] + 1e-4 * rng.normal(size=(n, 1)))]:
        t = L.score_latent(z, conf, nuis, ks=[2, 10], n_splits=s, subset_size=250, dev=CPU)
        assert list(t.columns) == L.SCORE_COLUMNS
        assert set(t.reference) == {"conformation", "defocus", "view"} and len(t) == 3 * 4
        for ref, g in t.groupby("reference"):
            ns = g[g.score == "neighbourhood_similarity"]
            imb = g[g.score != "neighbourhood_similarity"].value.to_numpy()
            if ref == truth:
                assert np.all(ns.value > 0.8) and np.all(imb < 0.05), g
            else:
                sig = chance_sigma(ns.k.to_numpy(), m, n)
                assert np.all(np.abs(ns.value - ns.k / (m - 1)) < 5 * sig), g
                assert np.all(np.abs(imb - 1) < k_sig), g
