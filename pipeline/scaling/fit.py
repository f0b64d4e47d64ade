"""The fitter: Huber loss in a law's residual space, L-BFGS from every start of its grid at once.

This module checks the data and runs a fit; the jobs it calls live beside it: `minimise` (the objective and
its L-BFGS), `intervals` (Laplace covariance, inner-check widening, bootstrap), `flags` (identifiability) and
`result` (FitResult, its draws, bands and JSON form).

Public API (the report and the CLI call exactly this):

    from pipeline.scaling import fit, objective, LAWS, FitResult

    res = fit(law, x, y, *, holdout=None, delta=None, interval="laplace", bootstrap=200, seed=0, level=0.9,
              reduction="sum", **law_options)
        law       a name in LAWS (bleu_log, power, chinchilla, direct, direct_sat, multi_tpr, passk,
                  two_stage, joint, gadre_loss, gadre_err)
        x         (n,) or (n, k) inputs, k = LAWS[law].nx (chinchilla: N, D; two_stage: C, nll; passk: C, k)
        y         (n,) observed values (loss, BLEU, accuracy, error)
        holdout   (n,) bool: points kept out of the fit and scored as extrapolations
        delta     Huber delta in residual space (default: the law's; inf = least squares)
        interval  "laplace" (default; docs/fitting.md says why), "bootstrap" (resamples of the fit points, each
                  refitted; refused, with a flag, when the resamples are too few distinct sets) or "none"
        bootstrap number of resamples when interval="bootstrap"
        law_options  q0 (chance shift: direct, direct_sat, multi_tpr, passk), link ("linear" | "quadratic" | "logistic":
                  two_stage), monotone_tol (bleu_log)
    res.ok, res.reason            False and a one-line reason when the fit cannot be made; never raises on data
    res.params                    natural parameters {name: float}; res.raw: optimised coordinates
    res.objective, res.n_fit      summed (or mean) Huber at the optimum over the fit points, their number
    res.predict(x) -> (m,)        prediction in y's units (NaN when not ok)
    res.holdout                   [{x, y, pred, abs_err, rel_err, lo, hi}] for the held-out points (rel_err NaN where
                                  y = 0: `mean_rel_err` says so); (lo, hi) is
                                  the `level` prediction interval of a measurement there
    res.intervals                 {param: (lo, hi)} at `level`; ±inf where the data do not bound the parameter
    res.flags                     identifiability warnings (a parameter at a limit, an interval spanning orders of
                                  magnitude, near-collinear parameters); the curve and predictions stand regardless
    res.form                      "isik" or "limit" for bleu_log (which parameters `params` holds), else ""
    res.band(x, level=None, observed=False)  (lo, hi): the curve's band, or (observed) a measurement's interval
    res.to_dict()                 JSON-safe dict (non-finite numbers become null; delta null = least squares);
                                  FitResult.from_dict(d) rebuilds a result that predicts and bands identically

    objective(law, x, y, raw, delta=None, reduction="sum", **law_options) -> float
        the fitter's objective at given coordinates (e.g. Hoffmann's printed parameters).

Unknown law names or options are programming errors and raise ValueError; everything about the data
(NaN, too few or duplicated points, constant y, values outside the law's domain, non-monotone BLEU, a
diverging optimiser) gives ok=False with the reason.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .calibration import coverage_flags, law_label
from .flags import identifiability_flags
from .intervals import bootstrap_draws, inflation, laplace, param_intervals
from .laws import LAWS, Law
from .minimise import (
    bounded,
    center,
    identifiable,
    minimise,
    objective,
    objective_fn,
    per_fit,
    prepare,
    public,
    residual_target,
    settle,
)
from .result import FitResult, draws, natural

INTERVALS = ("laplace", "bootstrap", "none")
_objective_fn = objective_fn  # the name tests/test_scaling_optim.py imports

__all__ = ["INTERVALS", "LAWS", "FitResult", "fit", "mean_rel_err", "objective"]


def _check(law: Law, x: np.ndarray, y: np.ndarray, fit_mask: np.ndarray, opts: dict) -> str | None:
    """The reason this data cannot be fitted by this law, or None."""
    P, nf = per_fit(law), int(fit_mask.sum())
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return "non-finite values (NaN or inf) in x or y"
    if law.logx and (x <= 0).any():
        return "x must be > 0 (the law takes its logarithm)"
    if law.space == "log" and (y <= 0).any():
        return "y must be > 0 (the residual is taken on ln y)"
    q0 = opts.get("q0", 0.0)
    if law.space == "loglog" and ((y <= q0) | (y >= 1)).any():
        return f"accuracy must lie strictly between the chance level q0={q0:g} and 1"
    xf, yf = x[fit_mask], y[fit_mask]
    if nf < P + 1:
        return f"too few points to fit: {nf}, the law has {P} parameters and needs at least {P + 1}"
    distinct = len(np.unique(xf, axis=0))
    if distinct == 1:
        return "a single x value: nothing to fit a trend on"
    if distinct < P + 1:
        return f"only {distinct} distinct x values; the law has {P} parameters and needs at least {P + 1}"
    if np.ptp(yf) <= 1e-12 * np.abs(yf).max():
        return "y is constant over the fit points"
    if law.name == "bleu_log" and (why := not_rising(xf[:, 0], yf, opts["monotone_tol"])):
        return f"BLEU {why} over the fit points"
    return None


def not_rising(x: np.ndarray, y: np.ndarray, tol: float = 0.0) -> str | None:
    """Why y is not a rising curve of x (the only shape the BLEU log-law has), or None when it is.

    A drop of more than `tol` anywhere makes it not rising (repeated x, e.g. seeds, sorted lowest y first, so
    seed spread alone is no drop); it "falls as Dp grows" when the mean at each x never rises and ends lower,
    and "is not monotone in Dp" otherwise: a curve that falls and one that zig-zags are different findings.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    order = np.lexsort((y, x))
    if not (np.diff(y[order]) < -tol).any():
        return None
    _, (means,) = rung_means(x, y)
    if (np.diff(means) <= tol).all() and means[-1] < means[0]:
        return "falls as Dp grows"
    return "is not monotone in Dp"


def mean_rel_err(holdout: list[dict]) -> tuple[float, str | None]:
    """Mean held-out relative error, and why it is undefined when it is: a held-out observation of 0 (a BLEU of 0
    on a model that does not translate yet) has no relative error, and averaging over the others would hide it.
    `holdout` as in `res.holdout` or its JSON form (an undefined error there is null)."""
    if not holdout:
        return math.nan, None
    errs = [h.get("rel_err") for h in holdout]
    if any(e is None or not math.isfinite(e) for e in errs):
        zero = sum(1 for h in holdout if h.get("y") == 0)
        return math.nan, (f"held-out relative error undefined: {zero} held-out value(s) are 0" if zero
                          else "held-out relative error undefined: a held-out value is not finite")
    return float(np.mean(errs)), None


def rung_means(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct x, ascending, and each y's mean at each of them (a rung's seeds are one point of a curve)."""
    x = np.asarray(x, dtype=np.float64)
    xs = np.unique(x)
    return xs, [np.array([np.asarray(y, dtype=np.float64)[x == v].mean() for v in xs]) for y in ys]


def fit(
    law: str,
    x: np.ndarray,
    y: np.ndarray,
    *,
    holdout: np.ndarray | None = None,
    delta: float | None = None,
    interval: str = "laplace",
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.9,
    reduction: str = "sum",
    **law_options,
) -> FitResult:
    """Fit `law` to (x, y) from every start of its grid; see the module docstring."""
    spec, opts, delta = prepare(law, x, y, law_options, delta)
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, not {interval!r}")
    res = FitResult(law=law, delta=delta, options=opts, level=level, interval=interval, seed=seed, _law=spec)
    try:
        x = np.array(x, dtype=np.float64)
        y = np.array(y, dtype=np.float64)
        hold = np.zeros(len(y), bool) if holdout is None else np.asarray(holdout, dtype=bool)
    except (TypeError, ValueError) as e:
        res.reason = f"x, y and holdout must be numeric arrays ({e})"
        return res
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != spec.nx or y.ndim != 1 or len(x) != len(y) or hold.shape != y.shape:
        res.reason = f"shapes do not match: x {x.shape} (law wants {spec.nx} column(s)), y {y.shape}, holdout {hold.shape}"
        return res
    fit_mask = ~hold
    res.n_fit = int(fit_mask.sum())
    if (reason := _check(spec, x, y, fit_mask, opts)) is not None:
        res.reason = reason
        return res

    q0 = opts.get("q0", 0.0)
    x0 = center(spec, x[fit_mask])
    xs = x / x0 if x0 is not None else x  # the law's own x (centred laws: relative to the fit points' centre)
    xf, t = xs[fit_mask], residual_target(spec, y[fit_mask], q0)
    if not identifiable(spec, xf):
        res.reason = "x does not vary in every direction the law needs: some parameter is not identifiable"
        return res
    starts = np.asarray(spec.starts(xf, t), dtype=np.float64)
    starts = starts[np.isfinite(starts).all(1)]
    if len(starts) == 0:
        res.reason = "no finite starting point for this data"
        return res
    m = minimise(spec, xf, t, delta, starts)
    best = int(np.argmin(m.f))
    theta, f = settle(spec, m.theta[best].copy()), float(m.f[best])
    if not math.isfinite(f):
        res.reason = "no start reached a finite objective"
        return res
    # coordinates are logs and exponents: beyond ±500 the natural parameters over- or underflow (checked
    # before mapping them: math.exp raises OverflowError past ~709)
    params = {k: float(v) for k, v in public(spec, theta, x0).items()} if bounded(theta) else {}
    if not params or not all(math.isfinite(v) for v in params.values()):
        res.reason = f"the optimiser diverged: {dict(zip(spec.params, theta.round(3).tolist()))}"
        return res
    res._theta = theta
    res.x0 = None if x0 is None else x0.tolist()
    res.x_range = [x[fit_mask].min(0).tolist(), x[fit_mask].max(0).tolist()]
    with torch.no_grad(), np.errstate(all="ignore"):
        pt = spec.predict_t(torch.tensor(theta[None]), torch.tensor(xs)).numpy()[0]
    if not np.isfinite(pt).all():
        where = x[~np.isfinite(pt)][0].tolist()
        why = (
            "ln(A·Dp^alpha) <= 0 there, so (ln(A·Dp^alpha))^beta is undefined"
            if spec.name == "bleu_log"
            else "overflow"
        )
        res.reason = f"the fitted law has no finite prediction at x={where}: {why}"
        return res

    res.ok = True
    res.params, res.raw = params, dict(zip(spec.params, theta.tolist()))
    if spec.name == "bleu_log":
        res.form = "limit" if "B0" in params else "isik"
    res.objective = f / res.n_fit if reduction == "mean" else f
    if interval == "bootstrap":
        bootstrap_draws(res, spec, xf, t, delta, m, bootstrap, seed)
    if interval != "none":
        laplace(res, spec, xf, t)
        res.inflation, res.n_checks, res.drift = inflation(spec, xf, t, delta, m)
        if res.n_checks == 0:
            res.flags.append(
                "the interval is not calibrated: too few points to test extrapolation within the fit (it assumes "
                "the law is exact)"
            )
        if res.inflation > 1:  # the scale now rests on the checks: their number is its degrees of freedom
            res.dof = min(res.dof, res.n_checks)
        res.cov = res.cov * res.inflation**2
        res.scale = [v * res.inflation for v in res.scale]
        if res._boot is None or len(res._boot) == 0:
            res._boot = draws(theta, res.cov, res.dof, seed, res.boundary_index())
        res.intervals = param_intervals(res, spec, x0)
        if interval == "laplace":  # the method the backtest measured
            res.flags += coverage_flags(law_label(law, opts), level)
    res.flags += identifiability_flags(res, spec, xf, t, y[fit_mask])
    pred = natural(spec, pt, q0)
    lo, hi = res.band(x[hold], observed=True)
    for j, i in enumerate(np.flatnonzero(hold)):
        err = abs(pred[i] - y[i])
        xi = x[i].tolist()
        res.holdout.append(
            {
                "x": xi[0] if len(xi) == 1 else xi,
                "y": float(y[i]),
                "pred": float(pred[i]),
                "abs_err": float(err),
                "rel_err": float(err / abs(y[i])) if y[i] != 0 else math.nan,  # undefined at 0: mean_rel_err
                "lo": float(lo[j]),
                "hi": float(hi[j]),
            }
        )
    return res
