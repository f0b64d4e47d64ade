"""Issue 17: an additive floor E at its limit (E → 0) and a chained two-stage law get intervals that mean something.

At E = 0 the fitter stops anywhere down the flat valley ln E → −∞; a Laplace approximation in ln E there runs
away (draws of E = e^600, bands of −3e260). In E itself the estimate is an ordinary boundary one: the interval
of E starts at 0 and the other parameters keep their finite intervals. A two-stage prediction from compute
alone carries stage 1's scatter through the link, so a new measurement's interval covers what it should.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from _shared_data import shared_file

from pipeline.scaling import fit
from pipeline.scaling.fit import FitResult

DP = np.geomspace(1e6, 1e10, 12)


def _pure_power(seed: int = 0) -> np.ndarray:
    return 40.0 * DP**-0.3 * np.exp(0.01 * np.random.default_rng(seed).standard_normal(len(DP)))


def test_a_floor_at_its_limit_has_an_interval_from_zero_and_the_rest_stay_bounded():
    res = fit("power", DP, _pure_power(), holdout=DP > 1e9)
    assert res.ok, res.reason
    assert res.boundary == ["e"] and res.params["E"] < 1e-6
    lo, hi = res.intervals["E"]
    assert lo == 0 and 0 < hi < 40.0 * 1e9**-0.3, (lo, hi)  # E cannot exceed the smallest loss fitted
    for k in ("A", "alpha"):  # these the data do pin down (in ln E they were unbounded with E)
        lo, hi = res.intervals[k]
        assert math.isfinite(lo) and math.isfinite(hi) and lo < res.params[k] < hi, (k, lo, hi)
    assert any(f.startswith("E is at its limit 0") for f in res.flags), res.flags
    assert not any(f.startswith(("E is not bounded", "A is not", "alpha is not")) for f in res.flags), res.flags
    for h in res.holdout:
        assert 0 < h["lo"] < h["pred"] < h["hi"] < 2 * h["pred"], h


def test_a_record_of_a_boundary_fit_bands_as_the_fit_did():
    res = fit("power", DP, _pure_power(1), holdout=DP > 1e9)
    assert res.boundary == ["e"]
    back = FitResult.from_dict(json.loads(json.dumps(res.to_dict(), allow_nan=False)))
    x = np.geomspace(1e5, 1e12, 6)
    for a, b in zip(back.band(x, observed=True), res.band(x, observed=True)):
        np.testing.assert_allclose(a, b, rtol=1e-9)


def test_an_interior_floor_is_not_a_boundary():
    y = (1.7 + 40.0 * DP**-0.3) * np.exp(0.01 * np.random.default_rng(2).standard_normal(len(DP)))
    res = fit("power", DP, y)
    assert res.ok and res.boundary == [] and 1.0 < res.intervals["E"][0] < 1.7 < res.intervals["E"][1] < 2.5


def test_a_floor_run_down_its_valley_is_a_fit_at_the_limit_not_a_divergence():
    # the logistic two-stage law on Apple's SciQ: its stage-1 E ran to ln E = −2624 and main said "the
    # optimiser diverged"; every ln E below −500 is the same curve, E = 0
    df = pd.read_csv(shared_file("apple-downstream-metrics", "dclm_selected_wide.csv"))
    g = df[df.tpr == 20].dropna(subset=["sciq/acc", "sciq/neg_loglikelihood_norm"])
    x = g[["flops_nominal", "sciq/neg_loglikelihood_norm"]].to_numpy(float)
    res = fit("two_stage", x, g["sciq/acc"].to_numpy(float), holdout=x[:, 0] > 2.5e20, link="logistic")
    assert res.ok, res.reason
    assert res.raw["e"] == -500 and res.boundary == ["e"] and res.intervals["E"][0] == 0
    assert any(f.startswith("E is at its limit 0") for f in res.flags), res.flags


def test_two_stage_measurement_interval_carries_stage_one_scatter():
    # stage 1 scatters by 5% in nll, the link is almost exact: the accuracy of a new model varies mostly
    # through its own nll. An interval with only the link's scatter would cover far less than 90%
    rng = np.random.default_rng(5)
    E, A, alpha, a, b = 0.3, 40.0, 0.15, 1.1, -0.6

    def draw(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nll = (E + A * c**-alpha) * np.exp(0.05 * rng.standard_normal(len(c)))
        return nll, a + b * nll + 0.002 * rng.standard_normal(len(c))

    c = np.geomspace(1e18, 1e21, 20)
    nll, acc = draw(c)
    res = fit("two_stage", np.c_[c, nll], acc)
    assert res.ok, res.reason
    new = np.repeat(np.geomspace(2e18, 5e20, 10), 40)
    new_nll, new_acc = draw(new)
    lo, hi = res.band(np.c_[new, new_nll], observed=True)  # the band reads C only: a prediction from compute
    covered = np.mean((lo <= new_acc) & (new_acc <= hi))
    assert 0.8 <= covered <= 0.99, covered
