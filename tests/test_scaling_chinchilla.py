"""Chinchilla (Epoch's 240 points): the default fit reaches Hoffmann's procedure's true optimum."""

import math

import numpy as np
import pandas as pd
import pytest
from _shared_data import shared_file

from pipeline.scaling import fit, objective


@pytest.fixture(scope="module")
def data():
    df = pd.read_csv(shared_file("chinchilla", "chinchilla_nd_loss.csv"))
    df = df[df.epoch_used == 1]
    assert len(df) == 240
    return df[["N_params", "D_tokens"]].to_numpy(), df["loss"].to_numpy()


@pytest.fixture(scope="module")
def result(data):
    return fit("chinchilla", *data, interval="bootstrap", bootstrap=40, seed=0)


def test_objective_at_hoffmanns_printed_parameters(data):
    raw = [math.log(406.4), math.log(410.7), math.log(1.69), 0.34, 0.28]  # (a, b, e, alpha, beta)
    assert objective("chinchilla", *data, raw) == pytest.approx(4.12100914e-3, rel=1e-6)
    assert objective("chinchilla", *data, raw, reduction="mean") == pytest.approx(
        4.12100914e-3 / 240, rel=1e-6
    )


def test_default_fit_reaches_the_true_optimum(result):
    # 1.163e-3 is where scipy's default tolerances "converge"; the optimum is 1.01827402e-3
    assert result.ok, result.reason
    assert result.n_fit == 240
    assert result.objective <= 1.01828e-3
    assert result.objective == pytest.approx(1.01827402e-3, rel=1e-6)
    p = result.params
    assert abs(p["E"] - 1.8172) < 0.002
    assert abs(p["alpha"] - 0.3473) < 0.002
    assert abs(p["beta"] - 0.3672) < 0.002
    assert p["A"] == pytest.approx(477.84, rel=0.01) and p["B"] == pytest.approx(2143.86, rel=0.01)


def test_bootstrap_intervals_bracket_the_fit(result, data):
    assert result.n_boot >= 35
    for name, (lo, hi) in result.intervals.items():
        assert lo < result.params[name] < hi, name
    lo, hi = result.intervals["E"]
    assert lo > 1.7 and hi < 1.95  # Epoch's 95% bootstrap CI is 1.769 to 1.871
    x = data[0][:5]
    blo, bhi = result.band(x)
    pred = result.predict(x)
    assert np.all(blo <= pred) and np.all(pred <= bhi) and np.all(bhi - blo < 0.1)


def test_laplace_intervals_agree_with_epochs_bootstrap(data, result):
    # 240 points: the Laplace approximation and the bootstrap should tell the same story about the noise;
    # the Laplace interval is then widened by the law's own extrapolation errors (the bootstrap's is not)
    lap = fit("chinchilla", *data)
    assert lap.interval == "laplace" and lap.objective == pytest.approx(result.objective, rel=1e-9)
    assert lap.inflation >= 1 and lap.n_checks > 0
    for name in ("E", "alpha", "beta"):
        lo, hi = lap.intervals[name]
        blo, bhi = result.intervals[name]
        assert lo < lap.params[name] < hi
        assert 0.5 < (hi - lo) / lap.inflation / (bhi - blo) < 2.0, (name, (lo, hi), (blo, bhi))
    lo, hi = lap.intervals["E"]
    assert lo > 1.7 and hi < 1.95  # Epoch's 95% bootstrap CI is 1.769 to 1.871


@pytest.mark.slow
def test_holdout_scores_the_largest_runs(data):
    x, y = data
    hold = x[:, 1] > 1e11
    res = fit("chinchilla", x, y, holdout=hold)
    assert res.ok and res.n_fit == int((~hold).sum()) and len(res.holdout) == int(hold.sum())
    for h in res.holdout:
        assert h["abs_err"] == pytest.approx(abs(h["pred"] - h["y"]))
        assert h["rel_err"] == pytest.approx(h["abs_err"] / h["y"])
        assert h["rel_err"] < 0.05  # the law extrapolates these to within a few percent
    print("held-out mean rel. error", np.mean([h["rel_err"] for h in res.holdout]))


@pytest.mark.slow
def test_mean_reaches_the_same_optimum_as_sum(data, result):
    mean = fit("chinchilla", *data, reduction="mean")
    assert mean.objective * 240 == pytest.approx(result.objective, rel=1e-9)
    for k, v in result.params.items():
        assert mean.params[k] == pytest.approx(v, rel=1e-4)
