"""Misalignment verdict (Isik et al. 2024, §3.5): when does downstream cross-entropy stop predicting BLEU?

With poorly aligned pretraining data, CE can keep falling with Dp while BLEU stalls, drops or zig-zags; then
the BLEU log-law either cannot be fitted or extrapolates badly, and CE is a misleading proxy. Given one
(mixture, task, Df) curve, `misalignment` fits the BLEU law on the smallest Dp points, scores the rest,
and says so in a sentence the report can print as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from .fit import fit, mean_rel_err, not_rising, rung_means


@dataclass(frozen=True)
class Misalignment:
    bleu_monotone: bool  # BLEU never drops (by more than `tol`) as Dp grows
    bleu_fit_ok: bool  # the bleu_log law could be fitted on the smallest points
    bleu_err: float  # mean relative error of the bleu_log law on the held-out larger Dp (nan: none/failed)
    ce_falling: bool  # CE never rises (by more than `tol`) and ends lower than it starts
    flag: bool  # CE falls while BLEU is non-monotone or poorly predicted
    message: str
    rho: float = math.nan  # Spearman ρ of BLEU against CE over the Dp rungs (seeds averaged); nan under 3 rungs


def misalignment(
    dp: np.ndarray,
    bleu: np.ndarray,
    ce: np.ndarray,
    *,
    n_fit: int = 4,
    max_rel_err: float = 0.1,
    tol: float = 0.0,
    law: str = "bleu_log",
    delta: float | None = None,
) -> Misalignment:
    """Verdict for one curve: BLEU and CE at each Dp (one Df; average the seeds first).

    Dp <= 0 (the no-pretraining baseline) is ignored; `tol` is the drop (BLEU) or rise (CE) still called noise;
    `law` and `delta` (None: the law's default) are those the BLEU curves are fitted with elsewhere.
    """
    dp, bleu, ce = (np.asarray(v, dtype=np.float64) for v in (dp, bleu, ce))
    keep = (dp > 0) & np.isfinite(dp) & np.isfinite(bleu) & np.isfinite(ce)
    order = np.argsort(dp[keep], kind="stable")
    dp, bleu, ce = dp[keep][order], bleu[keep][order], ce[keep][order]

    shape = not_rising(dp, bleu, tol)
    monotone = shape is None
    falling = len(ce) > 1 and bool(np.all(np.diff(ce) <= tol)) and ce[-1] < ce[0]
    res = fit(law, dp, bleu, holdout=np.arange(len(dp)) >= n_fit, delta=delta, interval="none")  # errors only
    err, undefined = mean_rel_err(res.holdout) if res.ok else (math.nan, None)

    if not monotone:
        why = f"BLEU {shape}"
    elif not res.ok:
        why = f"the BLEU law cannot be fitted ({res.reason})"
    elif undefined:
        why = f"the BLEU law's {undefined}"
    elif err > max_rel_err:
        why = f"the BLEU law fitted on the {n_fit} smallest Dp misses the larger ones by {err:.0%} on average"
    else:
        why = None
    flag = falling and why is not None
    if flag:
        message = f"CE does not predict BLEU here: CE keeps falling with Dp while {why}."
    elif why is None:
        tail = f" (held-out error {err:.0%})" if math.isfinite(err) else ""
        message = f"BLEU follows its scaling law{tail}; CE and BLEU tell the same story."
    else:
        message = f"CE does not keep falling with Dp, and {why}: the pretraining data does not help here."
    return Misalignment(monotone, res.ok, err, falling, flag, message, _rank_corr(dp, bleu, ce))


def _rank_corr(dp: np.ndarray, bleu: np.ndarray, ce: np.ndarray) -> float:
    """Spearman ρ of BLEU against CE across the rungs, each rung its seeds' mean (a seed is not a rung)."""
    rungs, (b, c) = rung_means(dp, bleu, ce)
    if len(rungs) < 3 or np.ptp(b) == 0 or np.ptp(c) == 0:
        return math.nan
    return float(spearmanr(b, c).statistic)
