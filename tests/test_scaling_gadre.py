"""Gadre et al. 2024: their loss and downstream-error laws, fitted their way, give their published errors."""

import numpy as np
import pandas as pd
import pytest
from _shared_data import shared_file

from pipeline.scaling import fit

SMALL = ["d=96_l=8_h=4", "d=512_l=8_h=4", "d=576_l=24_h=8", "d=1024_l=24_h=8"]


def split(df: pd.DataFrame, ds: str):
    d = df[df.train_dataset == ds]
    # fit set: the four small models at M = 20 plus the 11M model at M = 320
    fitset = d[
        (d.model_name.isin(SMALL) & (d.tok_mult_M == 20))
        | ((d.model_name == "d=96_l=8_h=4") & (d.tok_mult_M == 320))
    ]
    big = d[d.model_name.isin(["open_lm_1b", "open_lm_7b"])]
    one_b_20 = big[(big.model_name == "open_lm_1b") & (big.tok_mult_M == 20)]
    return fitset, big.drop(one_b_20.index), one_b_20


@pytest.fixture(scope="module")
def models():
    return pd.read_csv(shared_file("gadre-overtraining", "models.csv"))


def rel_pct(pred, actual):
    return 100 * np.abs(pred - actual) / actual


def test_rpj_relative_errors_match_the_paper(models):
    fitset, tests, one_b_20 = split(models, "rpj")
    assert len(fitset) == 5
    tests = tests.sort_values("N_params")  # 1.4B at M = 640, then 6.9B at M = 20
    assert list(tests.tok_mult_M) == [640, 20]
    loss = fit("gadre_loss", fitset[["N_params", "tok_mult_M"]], fitset.loss_c4_val)
    assert loss.ok, loss.reason
    pred_loss = loss.predict(tests[["N_params", "tok_mult_M"]].to_numpy())
    np.testing.assert_allclose(rel_pct(pred_loss, tests.loss_c4_val.to_numpy()), [0.7103, 0.7320], atol=6e-5)
    # the downstream law is fitted on the measured losses of the same 5 runs plus the 1.4B at M = 20 ...
    errset = pd.concat([fitset, one_b_20])
    err = fit("gadre_err", errset.loss_c4_val, errset.err_avg_subset_17)
    assert err.ok, err.reason
    # ... and predicts from the *predicted* loss
    pred_err = err.predict(pred_loss)
    np.testing.assert_allclose(
        rel_pct(pred_err, tests.err_avg_subset_17.to_numpy()), [3.6365, 0.0464], atol=6e-5
    )


@pytest.mark.parametrize(
    "ds, a, c, b, E",
    [
        ("rpj", 166.21099, 366.6872, -0.27285071, 1.8366484),
        ("c4_original", 113.6926, 189.51552, -0.24247224, 1.5082605),
        ("rw_original", 125.09569, 246.20668, -0.25439484, 1.7344621),
    ],
)
def test_loss_law_parameters(models, ds, a, c, b, E):
    fitset, _, _ = split(models, ds)
    p = fit("gadre_loss", fitset[["N_params", "tok_mult_M"]], fitset.loss_c4_val).params
    assert p["a"] == pytest.approx(a, rel=1e-5) and p["c"] == pytest.approx(c, rel=1e-5)
    assert p["b"] == pytest.approx(b, rel=1e-5) and p["E"] == pytest.approx(E, rel=1e-5)


@pytest.mark.parametrize(
    "ds, col, k, gamma, eps",
    [
        ("rpj", "err_avg_subset_17", 2.2064901, 0.71459055, 0.85699193),
        ("rpj", "err_avg_46", 1.3228989, 0.89070785, 0.76084951),
        ("c4_original", "err_avg_subset_17", 2.0789072, 0.75612088, 0.84974201),
    ],
)
def test_error_law_parameters(models, ds, col, k, gamma, eps):
    fitset, _, one_b_20 = split(models, ds)
    errset = pd.concat([fitset, one_b_20])
    p = fit("gadre_err", errset.loss_c4_val, errset[col]).params
    assert p["k"] == pytest.approx(k, rel=1e-4) and p["gamma"] == pytest.approx(gamma, rel=1e-4)
    assert p["eps"] == pytest.approx(eps, rel=1e-5)
