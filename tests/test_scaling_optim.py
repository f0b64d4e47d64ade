"""The batched optimiser and the objective: exact gradients, independence of rows, sum vs mean."""

from dataclasses import replace

import numpy as np
import pytest

from pipeline.scaling import LAWS, fit
from pipeline.scaling.fit import _objective_fn
from pipeline.scaling.optim import lbfgs


@pytest.mark.parametrize("name", [n for n, law in LAWS.items() if law.design is not None])
@pytest.mark.parametrize("delta", [0.3, np.inf])
def test_analytic_gradient_matches_autograd(name, delta):
    law = LAWS[name]
    rng = np.random.default_rng(0)
    x = np.exp(rng.uniform(1, 20, size=(30, law.nx)))
    t, th = rng.normal(size=30), rng.normal(size=(7, len(law.params)))
    w = rng.integers(0, 3, size=(7, 30)).astype(float)
    idx = np.arange(7)
    f1, g1 = _objective_fn(law, x, t, delta, w)(th, idx)
    as_model = replace(law, design=None, model=lambda th, x: law.predict_t(th, x))  # same law, autograd path
    f2, g2 = _objective_fn(as_model, x, t, delta, w)(th, idx)
    np.testing.assert_allclose(f1, f2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-9 * np.abs(g2).max())


def rosenbrock(th, idx):
    a, b = th[:, 0], th[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)], 1)
    return f, g


def test_every_row_reaches_the_minimum_on_its_own():
    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [-3.0, 5.0]])
    m = lbfgs(rosenbrock, starts, groups=np.arange(4))  # four problems: no row is another's rival
    np.testing.assert_allclose(m.theta, 1.0, atol=1e-5)
    # a row's path does not depend on the others in the batch
    one = lbfgs(rosenbrock, starts[1:2])
    np.testing.assert_array_equal(one.theta[0], m.theta[1])
    assert one.iters[0] == m.iters[1]


def test_clearly_beaten_starts_are_dropped_and_the_best_kept():
    # one problem, many starts: those far above the best after a step stop, the best still converges
    starts = np.array([[-1.2, 1.0], [2.0, 2.0], [0.0, 0.0], [-3.0, 5.0], [1.1, 1.2], [-2.0, -2.0]])
    alone = lbfgs(rosenbrock, starts, groups=np.arange(6))
    together = lbfgs(rosenbrock, starts)
    assert together.f.min() <= 1e-10
    assert together.evals < alone.evals
    assert (together.iters < alone.iters).any()


def test_non_finite_region_is_a_wall_not_a_crash():
    def fun(th, idx):  # defined for th > 0 only, minimum at th = 1
        with np.errstate(all="ignore"):
            return (th[:, 0] - np.log(th[:, 0])), (1 - 1 / th[:, :1])

    m = lbfgs(fun, np.array([[5.0], [0.01], [-1.0]]))
    np.testing.assert_allclose(m.theta[:2, 0], 1.0, atol=1e-5)
    assert np.isinf(m.f[2])  # a start outside the domain stays there, marked inf


def test_sum_and_mean_reach_the_same_optimum():
    # the tolerance trap: a tiny summed Huber objective must not look "converged" early
    x = np.geomspace(1e6, 1e11, 30)
    y = (1.7 + 300 * x**-0.3) * (1 + 3e-4 * np.random.default_rng(1).standard_normal(30))
    s, m = fit("power", x, y), fit("power", x, y, reduction="mean")
    assert s.objective < 1e-5 and m.objective == pytest.approx(s.objective / 30, rel=1e-9)
    for k in s.params:
        assert m.params[k] == pytest.approx(s.params[k], rel=1e-6)
