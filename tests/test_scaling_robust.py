"""The fitter on hostile data, for every law of one input (x 1-D): random positive values, repeated x,
a single x, magnitudes from 1e-12 to 1e12. Whatever comes in, a fit is either ok with finite parameters,
objective, predictions, intervals and a JSON-safe record, or not ok with a one-line reason; never an
exception, never NaN or inf marked ok. Example counts are small: every fit runs its whole grid of starts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.scaling import LAWS, fit

LAWS_1D = sorted(name for name, law in LAWS.items() if law.nx == 1)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def check(res, x: np.ndarray) -> None:
    """The contract of a FitResult, ok or not."""
    d = res.to_dict()
    json.dumps(d, allow_nan=False)  # non-finite numbers are null in the record, never NaN/Infinity
    if res.ok:
        assert res.reason is None
        assert res.params and all(math.isfinite(v) for v in res.params.values()), res.params
        assert all(math.isfinite(v) for v in res.raw.values()), res.raw
        assert math.isfinite(res.objective) and res.objective >= 0
        assert np.isfinite(res.predict(x)).all()
        for name, (lo, hi) in res.intervals.items():  # ±inf: the data do not bound it; never NaN
            assert lo <= hi and lo < math.inf and hi > -math.inf, (name, lo, hi)
        for h in res.holdout:
            assert math.isfinite(h["pred"]), h
    else:
        assert isinstance(res.reason, str) and res.reason.strip() and "\n" not in res.reason
        assert res.params == {} and np.isnan(res.predict(x)).all()
        assert d["ok"] is False and d["reason"] == res.reason


def domain(law: str, y: np.ndarray) -> np.ndarray:
    """Map positive values into the range the law's y lives in (accuracies and errors are in (0, 1))."""
    if LAWS[law].space == "loglog" or law == "gadre_err":
        return y / (1.0 + y)
    return y


positive = st.builds(lambda e, m: m * 10.0**e, st.floats(-12, 12), st.floats(1.0, 9.99))


@settings(max_examples=15, **SETTINGS)
@given(law=st.sampled_from(LAWS_1D), n=st.integers(0, 9), data=st.data(), boot=st.sampled_from([0, 4]))
def test_random_positive_data_gives_finite_fit_or_reason(law, n, data, boot):
    x = np.array(data.draw(st.lists(positive, min_size=n, max_size=n)))
    y = domain(law, np.array(data.draw(st.lists(positive, min_size=n, max_size=n))))
    hold = np.zeros(n, bool)
    if n > 4:
        hold[-1] = True
    check(fit(law, x, y, holdout=hold, bootstrap=boot), x)


def clean_curve(law: str, x: np.ndarray) -> np.ndarray:
    """A curve of the law's shape (increasing BLEU, falling loss, rising accuracy, falling error)."""
    u = np.log(x / x.min() + 1.0)
    if law == "bleu_log":
        return 2.0 + 3.0 * u
    if LAWS[law].space == "loglog" or law == "gadre_err":
        return 0.8 - 0.6 / (1.0 + u) if law != "gadre_err" else 0.1 + 0.6 / (1.0 + u)
    return 1.0 + 3.0 / (1.0 + u)


@pytest.mark.parametrize("law", LAWS_1D)
def test_repeated_x_values_like_seeds(law):
    # five Dp values, three seeds each: as many points as a sweep gives, fit or refused with a reason
    x = np.repeat(np.geomspace(1e4, 1e8, 5), 3)
    y = clean_curve(law, x) * (1 + 0.01 * np.tile([-1.0, 0.0, 1.0], 5))
    res = fit(law, x, y, bootstrap=4)
    check(res, x)
    # only two distinct x: every law here has more parameters than that can pin down
    x2 = np.repeat([1e5, 1e6], 4)
    res2 = fit(law, x2, clean_curve(law, x2))
    check(res2, x2)
    assert not res2.ok and "distinct x" in res2.reason


@pytest.mark.parametrize("law", LAWS_1D)
def test_a_single_x_value_is_refused(law):
    x = np.full(6, 3e7)
    y = clean_curve(law, np.geomspace(1e4, 1e8, 6))
    res = fit(law, x, y)
    check(res, x)
    assert not res.ok and "single x value" in res.reason


@settings(max_examples=12, **SETTINGS)
@given(law=st.sampled_from(LAWS_1D), xscale=st.sampled_from([1e-12, 1e-6, 1.0, 1e6, 1e12]),
       yscale=st.sampled_from([1e-12, 1e-6, 1.0, 1e6, 1e12]))
def test_huge_and_tiny_magnitudes(law, xscale, yscale):
    x = np.geomspace(1.0, 1e4, 8) * xscale
    y = clean_curve(law, x)
    if LAWS[law].space != "loglog" and law != "gadre_err":
        y = y * yscale  # accuracies and errors stay in (0, 1); the other laws take any positive scale
    check(fit(law, x, y, holdout=np.r_[np.zeros(7, bool), True], bootstrap=4), x)


@settings(max_examples=6, **SETTINGS)
@given(n=st.integers(1, 6), data=st.data())
def test_the_fit_stage_on_a_table_with_bad_numbers_never_raises(n, data):
    """pipeline.fit reads a results table: NaN, inf, zero and negative metrics are reported, not fatal."""
    import pandas as pd

    from pipeline.config import FitConfig
    from pipeline.fit import fit_table

    bad = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0])
    metric = st.one_of(positive, bad)
    dps = [0] + sorted(set(data.draw(st.lists(st.integers(1, 10**9), min_size=n, max_size=n))))
    rows = [{"task": "en-de", "mixture": "m", "model": "t", "method": "full", "df": 100, "dp": dp,
             "bleu": data.draw(metric), "ce": data.draw(metric), "chrf": data.draw(metric), "params": 1e6,
             "status": "ok", "selected": True,
             "alignment": 1.0, "upstream_loss_mixture": math.nan, "upstream_loss_tgt": math.nan}
            for dp in dps]
    table, records = fit_table(pd.DataFrame(rows), FitConfig(bleu_delta=0.1, ce_delta=1e-3, holdout_largest=1,
                                                             bootstrap=0))
    for r in records:
        if r.get("metric") == "excluded":  # a row left out of the fits: listed with its reason
            assert r.get("why"), r
        elif r.get("ok"):
            assert all(v is not None and math.isfinite(v) for v in r["params"].values()), r
        elif r.get("law") != "misalignment":
            assert r.get("reason"), r


def test_bleu_values_of_1e8_and_more_do_not_overflow():
    # found by this suite: the optimum's ln A passed 709 and math.exp raised OverflowError in the fitter
    x = np.array([2.88e-09, 3.05e-05, 0.0144, 7.33e07, 5.86e10, 6.47e10])
    y = np.array([3.51e07, 2.54e08, 4.10e08, 9.66e08, 1.16e09, 1.09e09])
    res = fit("bleu_log", x, y, holdout=np.r_[np.zeros(5, bool), True], bootstrap=4)
    check(res, x)
