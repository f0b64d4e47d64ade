"""Synthetic recovery: data drawn from each law with small noise gives back its parameters."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.scaling import LAWS, fit

SETTINGS = settings(max_examples=4, deadline=None, derandomize=True)
u = st.floats  # short alias: u(lo, hi) is a uniform-ish draw


def noisy(y, seed, rel=2e-4):
    return y * (1 + rel * np.random.default_rng(seed).standard_normal(y.shape))


def close(params, truth, rel):
    for k, v in truth.items():
        assert params[k] == pytest.approx(v, rel=rel), (k, params, truth)


@SETTINGS
@given(E=u(1.5, 3.0), r0=u(0.5, 3.0), alpha=u(0.15, 0.6), seed=st.integers(0, 99))
def test_power(E, r0, alpha, seed):
    x = np.geomspace(1e6, 1e11, 16)
    A = r0 * E * x[0] ** alpha  # the reducible part is r0·E at the smallest x
    res = fit("power", x, noisy(E + A * x**-alpha, seed))
    assert res.ok, res.reason
    close(res.params, {"E": E, "alpha": alpha, "A": A}, 0.05)


def test_chinchilla():  # one draw here (4,500 starts per fit); more in test_chinchilla_many (slow)
    check_chinchilla(1.9, 0.31, 0.4, 1.3, 0.7, 5)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, derandomize=True)
@given(
    E=u(1.5, 2.5),
    alpha=u(0.25, 0.45),
    beta=u(0.25, 0.45),
    ra=u(0.5, 2.0),
    rb=u(0.5, 2.0),
    seed=st.integers(0, 99),
)
def test_chinchilla_many(E, alpha, beta, ra, rb, seed):
    check_chinchilla(E, alpha, beta, ra, rb, seed)


def check_chinchilla(E, alpha, beta, ra, rb, seed):
    n, d = np.meshgrid(np.geomspace(1e7, 1e10, 7), np.geomspace(1e8, 1e12, 7))
    x = np.c_[n.ravel(), d.ravel()]
    A, B = ra * E * 1e7**alpha, rb * E * 1e8**beta
    res = fit("chinchilla", x, noisy(E + A / x[:, 0] ** alpha + B / x[:, 1] ** beta, seed))
    assert res.ok, res.reason
    close(res.params, {"E": E, "alpha": alpha, "beta": beta}, 0.03)


@SETTINGS
@given(alpha=u(0.1, 0.6), u0=u(1.0, 3.0), beta=u(1.0, 3.0), seed=st.integers(0, 99))
def test_bleu_log(alpha, u0, beta, seed):
    x = np.geomspace(1e6, 1e10, 10)
    la = u0 - alpha * np.log(x[0])  # ln(A·Dp^alpha) = u0 at the smallest Dp
    res = fit("bleu_log", x, noisy((la + alpha * np.log(x)) ** beta, seed))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "beta": beta}, 0.1)


@SETTINGS
@given(alpha=u(0.05, 0.3), nl0=u(0.5, 2.0), q0=st.sampled_from([0.0, 0.25]), seed=st.integers(0, 99))
def test_direct(alpha, nl0, q0, seed):
    c = np.geomspace(1e18, 1e22, 12)
    A = nl0 * c[0] ** alpha  # -ln Q~ = nl0 at the smallest C
    acc = q0 + (1 - q0) * np.exp(-A * c**-alpha)
    res = fit("direct", c, noisy(acc, seed, 1e-4), q0=q0)
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "A": A}, 0.05)


@SETTINGS
@given(alpha=u(0.2, 0.5), nl0=u(1.0, 3.0), efrac=u(0.1, 0.3), seed=st.integers(0, 99))
def test_direct_sat(alpha, nl0, efrac, seed):
    c = np.geomspace(1e16, 1e22, 16)
    E, A = efrac * nl0, (1 - efrac) * nl0 * c[0] ** alpha
    acc = np.exp(-(A * c**-alpha + E))
    res = fit("direct_sat", c, noisy(acc, seed, 1e-5))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "E": E}, 0.05)


@SETTINGS
@given(alpha=u(0.15, 0.5), beta=u(0.15, 0.5), w=u(0.3, 0.7), seed=st.integers(0, 99))
def test_multi_tpr(alpha, beta, w, seed):
    n, tpr = np.meshgrid(np.geomspace(1e7, 1e10, 6), [5.0, 20.0, 80.0, 320.0])
    x = np.c_[n.ravel(), (n * tpr).ravel()]
    A, B = w * 2 * 1e7**alpha, (1 - w) * 2 * 5e7**beta
    acc = np.exp(-(A * x[:, 0] ** -alpha + B * x[:, 1] ** -beta))
    res = fit("multi_tpr", x, noisy(acc, seed, 1e-5))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "beta": beta}, 0.05)


@SETTINGS
@given(alpha=u(-0.3, -0.05), beta=u(-0.6, -0.1), delta=u(-0.01, 0.01), seed=st.integers(0, 99))
def test_passk(alpha, beta, delta, seed):
    c, k = np.meshgrid(np.geomspace(1e19, 1e22, 6), 2.0 ** np.arange(8))
    x = np.c_[c.ravel(), k.ravel()]
    lc, lk = np.log(x[:, 0]), np.log(x[:, 1])
    lnA = -alpha * np.log(1e20)  # -ln pass@1 = 1 at C = 1e20
    acc = np.exp(-np.exp(lnA + alpha * lc + beta * lk + delta * lc * lk))
    res = fit("passk", x, noisy(acc, seed, 1e-6))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "beta": beta}, 0.02)
    assert res.params["delta"] == pytest.approx(delta, abs=2e-4)


@SETTINGS
@given(alpha=u(0.03, 0.15), a=u(0.8, 1.2), b=u(-0.6, -0.3), seed=st.integers(0, 99))
def test_two_stage_linear(alpha, a, b, seed):
    c = np.geomspace(1e18, 1e21, 12)
    nll = 20 * c**-alpha / (20 * 1e18**-alpha)  # nll = 1 at the smallest C
    res = fit("two_stage", np.c_[c, noisy(nll, seed, 1e-4)], noisy(a + b * nll, seed + 1, 1e-4))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "a": a, "b": b}, 0.03)
    assert np.allclose(res.predict(c), a + b * nll, rtol=1e-3)  # from C alone


@SETTINGS
@given(k=u(-12.0, -4.0), l0=u(0.6, 0.9), seed=st.integers(0, 99))
def test_two_stage_logistic(k, l0, seed):
    c = np.geomspace(1e18, 1e22, 16)
    nll = c**-0.1 / 1e18**-0.1
    acc = 0.7 / (1 + np.exp(-k * (nll - l0))) + 0.25
    res = fit("two_stage", np.c_[c, nll], noisy(acc, seed, 1e-5), link="logistic")
    assert res.ok, res.reason
    close(res.params, {"alpha": 0.1, "k": k, "l0": l0, "a": 0.7, "b": 0.25}, 0.05)


@SETTINGS
@given(alpha=u(0.1, 0.5), beta=u(0.1, 0.5), E=u(0.5, 2.0), seed=st.integers(0, 99))
def test_joint(alpha, beta, E, seed):
    xx, df = np.meshgrid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e3, 1e6, 5))
    x = np.c_[xx.ravel(), df.ravel()]
    A = 2 * E * 1e6**alpha * 1e3**beta
    res = fit("joint", x, noisy(A * x[:, 0] ** -alpha * x[:, 1] ** -beta + E, seed))
    assert res.ok, res.reason
    close(res.params, {"alpha": alpha, "beta": beta, "E": E}, 0.05)


@SETTINGS
@given(b=u(-0.35, -0.2), E=u(1.5, 2.5), seed=st.integers(0, 99))
def test_gadre_loss(b, E, seed):
    n, m = np.meshgrid(np.geomspace(1e7, 1e9, 4), [10.0, 20.0, 80.0, 320.0])
    x = np.c_[n.ravel(), m.ravel()]
    a, c = 150.0, 300.0
    y = E + a * x[:, 0] ** b + c * 6 ** (b / 2) * (x[:, 0] * x[:, 1]) ** b
    res = fit("gadre_loss", x, noisy(y, seed, 1e-5))
    assert res.ok, res.reason
    close(res.params, {"b": b, "E": E, "a": a, "c": c}, 0.05)


@SETTINGS
@given(k=u(1.0, 3.0), gamma=u(0.5, 1.0), eps=u(0.7, 0.9), seed=st.integers(0, 99))
def test_gadre_err(k, gamma, eps, seed):
    loss = np.linspace(2.0, 5.0, 10)
    res = fit("gadre_err", loss, noisy(eps - k * np.exp(-gamma * loss), seed, 1e-5))
    assert res.ok, res.reason
    close(res.params, {"k": k, "gamma": gamma, "eps": eps}, 0.05)


def test_every_law_has_a_recovery_test():
    tested = {name[5:] for name in globals() if name.startswith("test_")}
    assert set(LAWS) <= tested | {"two_stage"} and {"two_stage_linear", "two_stage_logistic"} <= tested
