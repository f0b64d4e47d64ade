"""Translation data (Gordon, Duh & Kaplan 2021): the single-variable laws of Isik et al. on real NMT curves.

CE vs training-data size with `power`, BLEU vs data size with `bleu_log`, fitted on the smaller sizes and
scored on the three largest, for one model size per language pair. The test checks that our fit is the best
that independent scipy L-BFGS-B runs from a spread of starts can find on the same objective (a fit that stops
at a local optimum, or a wrong gradient, fails here), and that held-out errors are reported per point.
"""

import numpy as np
import pandas as pd
import pytest
from _shared_data import shared_file
from scipy.optimize import minimize

from pipeline.scaling import LAWS, fit, objective

HELD_OUT = 3


@pytest.fixture(scope="module")
def curves():
    df = pd.read_csv(shared_file("nmt-gordon2021", "data_scaling.csv"))
    big = df[(df.layers == 6) & (df.d_model == 512)]
    return {lang: g.sort_values("data_bytes") for lang, g in big.groupby("lang")}


def _scipy_best(law: str, x: np.ndarray, y: np.ndarray, starts: np.ndarray) -> float:
    best = np.inf
    for s in starts:
        r = minimize(lambda th: objective(law, x, y, th), s, method="L-BFGS-B")
        if np.isfinite(r.fun):
            best = min(best, float(r.fun))
    return best


@pytest.mark.parametrize("law,metric", [("power", "ent_dev"), ("bleu_log", "bleu_dev")])
@pytest.mark.parametrize("lang", ["deen", pytest.param("zhen", marks=pytest.mark.slow)])
def test_fit_is_the_best_scipy_can_find_and_scores_the_held_out_sizes(curves, lang, law, metric):
    g = curves[lang]
    x, y = g["data_bytes"].to_numpy(float), g[metric].to_numpy(float)
    hold = np.arange(len(x)) >= len(x) - HELD_OUT
    res = fit(law, x, y, holdout=hold)
    assert res.ok, res.reason
    assert res.n_fit == len(x) - HELD_OUT
    assert all(np.isfinite(v) for v in res.params.values())
    # our objective is the one `objective` computes at the returned coordinates
    theta = [res.raw[p] for p in LAWS[law].params]
    assert objective(law, x[~hold], y[~hold], theta) == pytest.approx(res.objective, rel=1e-9, abs=1e-15)
    # independent scipy runs from our optimum perturbed, and from a spread around it, never do better
    rng = np.random.default_rng(0)
    starts = np.asarray(theta) + rng.normal(scale=[0.5] * len(theta), size=(12, len(theta)))
    assert res.objective <= _scipy_best(law, x[~hold], y[~hold], starts) * (1 + 1e-6) + 1e-12
    # one held-out record per held-out size, errors consistent with the prediction
    assert [h["x"] if np.isscalar(h["x"]) else h["x"][0] for h in res.holdout] == pytest.approx(x[hold].tolist())
    pred = res.predict(x[hold])
    for h, p, t in zip(res.holdout, pred, y[hold]):
        assert h["abs_err"] == pytest.approx(abs(p - t), rel=1e-6)
        assert h["rel_err"] == pytest.approx(abs(p - t) / abs(t), rel=1e-6)
