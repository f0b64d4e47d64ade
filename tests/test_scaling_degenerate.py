"""Degenerate input never crashes and never comes back as an ok fit with non-finite parameters."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.scaling import LAWS, fit

DP = np.geomspace(1e6, 1e9, 8)
BLEU = np.log(1e-3 * DP**0.6) ** 1.8


@pytest.mark.parametrize(
    "law, x, y, kw, why",
    [
        ("power", DP, np.r_[2.0, np.nan, 1.8, 1.7, 1.6, 1.5, 1.45, 1.4], {}, "non-finite"),
        ("power", DP, np.r_[2.0, np.inf, 1.8, 1.7, 1.6, 1.5, 1.45, 1.4], {}, "non-finite"),
        ("power", np.r_[DP[:7], np.inf], np.linspace(2, 1.4, 8), {}, "non-finite"),
        ("power", DP[:3], [2.0, 1.9, 1.8], {}, "too few points"),
        ("chinchilla", np.c_[DP, DP][:5], np.linspace(3, 2, 5), {}, "too few points"),
        ("power", DP, np.full(8, 1.7), {}, "constant"),
        ("power", np.full(8, 1e8), np.linspace(2, 1.4, 8), {}, "single x value"),
        ("power", np.repeat(DP[:3], 3), np.linspace(2, 1.4, 9), {}, "distinct x"),
        ("power", DP, -np.linspace(2, 1.4, 8), {}, "y must be > 0"),
        ("power", -DP, np.linspace(2, 1.4, 8), {}, "x must be > 0"),
        ("bleu_log", DP, BLEU[[0, 1, 2, 5, 3, 4, 6, 7]], {}, "BLEU is not monotone in Dp"),
        ("bleu_log", DP, BLEU[::-1], {}, "BLEU falls as Dp grows"),
        ("direct", DP, np.linspace(0.2, 0.6, 8), {"q0": 0.25}, "chance"),
        ("direct", DP, np.linspace(0.3, 1.0, 8), {}, "strictly between"),
        ("power", DP, np.linspace(2, 1.4, 8), {"holdout": np.ones(8, bool)}, "too few points"),
        ("power", DP, np.linspace(2, 1.4, 7), {}, "shapes"),
        ("chinchilla", DP, np.linspace(2, 1.4, 8), {}, "shapes"),
        ("passk", np.c_[DP, np.full(8, 4.0)], np.linspace(0.1, 0.5, 8), {}, "identifiable"),
    ],
)
def test_degenerate_input_gives_a_reason(law, x, y, kw, why):
    res = fit(law, x, y, **kw)
    assert not res.ok and why in res.reason
    assert np.isnan(res.predict(np.asarray(x)[:2])).all()
    d = res.to_dict()
    assert d["ok"] is False and d["reason"] == res.reason


def test_bleu_log_argument_turning_negative_is_a_failure():
    # fitted on Dp >= 1e6, the law's ln(A·Dp^alpha) is negative at a held-out Dp of 1: BLEU is undefined there
    x, y = np.r_[DP, 1.0], np.r_[BLEU, 1.0]
    res = fit("bleu_log", x, y, holdout=np.r_[np.zeros(8, bool), True])
    assert not res.ok and "ln(A·Dp^alpha) <= 0" in res.reason


def test_unknown_law_or_option_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown law"):
        fit("nope", DP, BLEU)
    with pytest.raises(ValueError, match="no option"):
        fit("power", DP, BLEU, q0=0.1)
    with pytest.raises(ValueError, match="link"):
        fit("two_stage", np.c_[DP, DP], BLEU, link="cubic")


magnitude = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    st.floats(min_value=1e-12, max_value=1e-9),
    st.sampled_from([0.0, math.nan, math.inf, -math.inf, 1e-12, 1e12]),
)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    law=st.sampled_from(sorted(set(LAWS) - {"chinchilla"})),
    n=st.integers(0, 9),
    data=st.data(),
)
def test_any_input_gives_ok_with_finite_numbers_or_a_reason(law, n, data):
    k = LAWS[law].nx
    x = np.array(data.draw(st.lists(magnitude, min_size=n * k, max_size=n * k))).reshape(n, k)
    y = np.array(data.draw(st.lists(magnitude, min_size=n, max_size=n)))
    res = fit(law, x, y)
    if res.ok:
        assert all(math.isfinite(v) for v in res.params.values())
        assert math.isfinite(res.objective) and np.isfinite(res.predict(x)).all()
    else:
        assert isinstance(res.reason, str) and res.reason
        assert res.params == {}


@settings(max_examples=10, deadline=None, derandomize=True)
@given(scale=st.sampled_from([1e-12, 1e-6, 1.0, 1e6, 1e12]), xscale=st.sampled_from([1e-12, 1.0, 1e12]))
def test_magnitudes_from_1e_minus_12_to_1e12(scale, xscale):
    # a clean power law at any scale of x and y: either recovered, or refused with a reason; never NaN
    x = np.geomspace(1, 1e4, 10) * xscale
    y = scale * (1.0 + 3.0 * (x / xscale) ** -0.4)
    res = fit("power", x, y)
    assert res.ok, res.reason
    assert res.params["alpha"] == pytest.approx(0.4, rel=1e-3)
    assert res.params["E"] == pytest.approx(scale, rel=1e-3)
    np.testing.assert_allclose(res.predict(x), y, rtol=1e-6)
