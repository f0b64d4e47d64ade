"""Misalignment verdict: flag "CE does not predict BLEU here" only when CE falls and BLEU does not follow."""

import math

import numpy as np
import pytest

from pipeline.scaling import misalignment
from pipeline.scaling.fit import not_rising

DP = np.array([0.0, 1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7, 6.4e7, 1.28e8])  # Dp = 0 is the baseline, ignored
CE = 2.0 + 50.0 / np.maximum(DP, 1.0) ** 0.3


def law_bleu(dp):
    return np.log(1e-3 * np.maximum(dp, 1e6) ** 0.6) ** 1.8  # (Dp = 0 is dropped by the verdict)


def test_aligned_data_is_not_flagged():
    v = misalignment(DP, law_bleu(DP), CE)
    assert v.bleu_monotone and v.bleu_fit_ok and v.ce_falling
    assert v.bleu_err < 0.01 and not v.flag
    assert "CE does not predict BLEU" not in v.message


def test_non_monotone_bleu_with_falling_ce_is_flagged():
    bleu = law_bleu(DP)
    bleu[6] = bleu[4] - 1.0  # a drop at larger Dp
    v = misalignment(DP, bleu, CE)
    assert not v.bleu_monotone and v.ce_falling and v.flag
    assert v.message.startswith("CE does not predict BLEU here")


def test_bleu_that_falls_with_dp_is_said_to_fall_not_to_zigzag():
    # the desk study's Df 16,000 curves: every doubling of Dp lowers BLEU while CE falls
    bleu = law_bleu(DP)[::-1].copy()
    v = misalignment(DP, bleu, CE)
    assert not v.bleu_monotone and v.flag
    assert "BLEU falls as Dp grows" in v.message and "not monotone" not in v.message
    zig = law_bleu(DP)
    zig[6] = zig[4] - 1.0
    assert "BLEU is not monotone in Dp" in misalignment(DP, zig, CE).message


def test_seed_spread_at_one_dp_is_not_a_drop():
    dp = np.repeat(DP[1:5], 2)
    bleu = np.repeat(law_bleu(DP[1:5]), 2) + np.tile([-0.05, 0.05], 4)  # two seeds, each rung above the last
    assert not_rising(dp, bleu) is None
    assert not_rising(dp, bleu[::-1]) == "falls as Dp grows"


def test_stalling_bleu_is_flagged_by_its_extrapolation_error():
    bleu = law_bleu(DP)
    bleu[5:] = bleu[4] + np.array([0.01, 0.02, 0.03, 0.04])  # flat: monotone, but the law overshoots
    v = misalignment(DP, bleu, CE)
    assert v.bleu_monotone and v.bleu_fit_ok and v.bleu_err > 0.1 and v.flag
    assert "CE does not predict BLEU here" in v.message


def test_rising_ce_is_not_a_misalignment_flag():
    bleu = law_bleu(DP)
    bleu[6] = bleu[4] - 1.0
    v = misalignment(DP, bleu, CE[::-1])
    assert not v.ce_falling and not v.flag


def test_rank_correlation_of_bleu_against_ce_is_over_rungs_with_seeds_averaged():
    assert misalignment(DP, law_bleu(DP), CE).rho == pytest.approx(-1.0)  # BLEU rises as CE falls
    dp = np.r_[0.0, np.repeat(DP[1:5], 2)]
    bleu = np.r_[9.0, np.repeat([2.0, 1.8, 1.5, 1.0], 2) + np.tile([-0.5, 0.5], 4)]
    ce = np.r_[9.0, np.repeat([3.0, 3.1, 3.3, 3.6], 2)]  # both get worse with Dp: they still move together
    assert misalignment(dp, bleu, ce).rho == pytest.approx(-1.0)
    assert math.isnan(misalignment(DP[:3], law_bleu(DP[:3]), CE[:3]).rho)  # the baseline and two rungs: too few
