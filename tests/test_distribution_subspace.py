"""Distribution and subspace metrics against closed forms, an independent LP and analytic cases."""
import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linprog

from helpers import distribution as dist
from helpers import fourier as Fo
from helpers import preprocess as pp
from helpers import subspace as sub


def test_emd_of_distribution_with_itself_is_zero():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6))
    D = np.abs(np.subtract.outer(np.arange(6), np.arange(6))).astype(float)
    assert dist.emd_submitted(p, p, D)[0] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_lp_optimum_equals_closed_form(seed):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(7))
    D = rng.uniform(0, 5, (7, 5))
    lp, q, T = dist.emd_optimised_lp(P, D)
    cf, q_cf = dist.emd_optimised_closed_form(P, D)
    assert lp == pytest.approx(cf, abs=1e-7)
    assert q.sum() == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_pot_emd_equals_independent_lp(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(5))
    C = rng.uniform(0, 3, (4, 5))
    A_eq = np.vstack([np.kron(np.eye(4), np.ones(5)), np.kron(np.ones(4), np.eye(5))])
    ref = linprog(C.ravel(), A_eq=A_eq, b_eq=np.concatenate([a, b]), bounds=(0, None), method="highs").fun
    assert dist.emd_submitted(a, b, C)[0] == pytest.approx(ref, abs=1e-9)


def test_kl_nonnegative_and_zero_iff_equal():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(5))
        assert dist.kl(p, q) > 0
    assert dist.kl(p, p) == pytest.approx(0.0, abs=1e-15)


def test_em_increases_loglik_monotonically_and_reaches_optimum():
    rng = np.random.default_rng(1)
    A = rng.uniform(size=(30, 6))
    A /= A.sum(0)
    P = rng.dirichlet(np.ones(30))
    q, it, trace = dist.em_weights(P, A, return_trace=True)
    assert np.all(np.diff(trace) >= -1e-12)
    # KKT: at the optimum every used map has gradient 1, unused ones ≤ 1
    grad = A.T @ (P / (A @ q))
    assert np.all(grad <= 1 + 1e-4) and np.all(np.abs(grad[q > 1e-6] - 1) < 1e-4)


def test_corr_as_cost_puts_most_similar_map_first():
    corr = np.array([[0.9, 0.2, 0.5]])
    r = dist.rank_rows(dist.to_cost(corr, "corr"))
    assert r[0, 0] == 1 and r[0, 1] == 3


def test_bimodal_populations_recovered_by_optimisation():
    """A submission with all maps right but a missing middle mode: EMD with submitted
    populations > 0, optimised populations restore the middle."""
    n = 30
    pc1 = np.linspace(-1, 1, n)
    p = np.exp(-((pc1 + 0.6) / 0.15) ** 2) + 0.5 * np.exp(-(pc1 / 0.15) ** 2) + np.exp(-((pc1 - 0.6) / 0.15) ** 2)
    p /= p.sum()
    cost = np.abs(np.subtract.outer(pc1, pc1))  # submission = the GT maps themselves
    q_bi = p * (np.abs(pc1) > 0.3)
    q_bi /= q_bi.sum()
    good = dist.evaluate(cost, p, pc1, p, n_pool=1, fraction=1.0, n_replicates=1, rank_normalise=False)[0]
    bad = dist.evaluate(cost, p, pc1, q_bi, n_pool=1, fraction=1.0, n_replicates=1, rank_normalise=False)[0]
    assert good["EMD_submitted"] == pytest.approx(0.0, abs=1e-12) and bad["EMD_submitted"] > 0.05
    assert bad["q_opt_emd"][np.abs(pc1) < 0.2].sum() > 0.1


def _pca(X, r=3):
    return sub.pca(torch.as_tensor(X), r)


def test_pcv_self_is_one_and_known_subspace_value():
    rng = np.random.default_rng(0)
    D = 50
    e = np.eye(D)
    # set A varies along e0 (var 4) and e1 (var 1); set B spans e0 and e2
    a = rng.standard_normal((200, 2)) * [2.0, 1.0]
    A = a[:, :1] * e[0] + a[:, 1:] * e[1]
    b = rng.standard_normal((200, 2))
    B = b[:, :1] * e[0] + b[:, 1:] * e[2]
    pa, pb = _pca(A, 2), _pca(B, 2)
    assert sub.pcv(pa, pa) == pytest.approx(1.0)
    # B's subspace is exactly span(e0, e2): the captured share is Σ_k s_k² (V_0k² + V_2k²) / Σ s²
    s, V = pa.S.numpy() ** 2, pa.V.numpy()
    expected = (s * (V[0] ** 2 + V[2] ** 2)).sum() / s.sum()
    assert sub.pcv(pa, pb) == pytest.approx(expected, abs=1e-9)
    assert 0.75 < expected < 0.85  # ≈ 4/(4+1): the e0 part of A's variance


def test_pcv_invariant_to_order_and_scale_and_seeded_randomised_svd_repeatable():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 40)) @ rng.standard_normal((40, 200))
    Y = X + 0.3 * rng.standard_normal(X.shape)
    base = sub.pcv(_pca(X), _pca(Y))
    perm = rng.permutation(60)
    assert sub.pcv(_pca(X[perm] * 7.0), _pca(Y)) == pytest.approx(base, rel=1e-9)
    r1 = sub.pca(torch.as_tensor(X), 4, randomized=True, seed=3)
    r2 = sub.pca(torch.as_tensor(X), 4, randomized=True, seed=3)
    assert torch.equal(r1.V, r2.V) and torch.equal(r1.S, r2.S)
    exact = sub.pca(torch.as_tensor(X), 4)
    np.testing.assert_allclose(r1.S.numpy(), exact.S.numpy(), rtol=1e-3)


def test_spectrum_equalisation_helps_a_low_passed_copy():
    rng = np.random.default_rng(2)
    n, m = 16, 40
    t = rng.standard_normal((m, 1))
    base = Fo.lowpass(rng.standard_normal((3, n, n, n)), 3.0, 1.0).numpy()
    maps = base[0] + t[:, :1, None, None] * base[1] + 0.3 * rng.standard_normal((m, 1, 1, 1)) * base[2]
    maps = maps + 0.05 * rng.standard_normal(maps.shape)
    low = Fo.lowpass(maps, 5.0, 1.0, width=0.05).numpy()
    before = sub.pcv(_pca(sub.prepare(maps)), _pca(sub.prepare(low)))
    eq, _ = pp.equalise_spectra({"a": maps, "b": low})
    after = sub.pcv(_pca(sub.prepare(eq["a"])), _pca(sub.prepare(eq["b"])))
    assert after >= before - 1e-9
