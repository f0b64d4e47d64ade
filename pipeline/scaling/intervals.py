"""A fit's intervals: the Laplace (Gauss-Newton) covariance, its widening by the law's own inner extrapolation
checks, the parameter intervals from the draws, and the bootstrap alternative (docs/fitting.md says why Laplace
is the default)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import nnls

from .laws import Law
from .minimise import bounded, minimise, per_fit, public
from .result import ABSURD, FitResult

MIN_DISTINCT_RESAMPLES = 20  # fewer distinct bootstrap resample sets make no interval (see bootstrap_draws)


def _residuals(law: Law, theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(n, R) residuals of one coordinate vector (R = 1 except for multi-stage laws)."""
    if law.resid is not None:
        return law.resid(theta[None], x, t)[0]
    return (law.predict_t(theta[None], x) - t)[0][:, None]


def laplace_parts(
    law: Law, x: np.ndarray, t: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """Gauss-Newton (Laplace) covariance of the coordinates at an optimum, the residual degrees of freedom and
    the residual scale per column: cov = (Jᵀ W J)⁻¹ with W = 1/s² per residual column, s² = RSS/(n − p)."""
    xt, tt = torch.tensor(x), torch.tensor(t)
    th = torch.tensor(theta)
    r = _residuals(law, th, xt, tt).numpy()  # (n, R)
    J = torch.autograd.functional.jacobian(lambda v: _residuals(law, v, xt, tt), th).numpy()  # (n, R, P)
    n, R = r.shape
    split = law.split or (len(law.params),)
    dof = [n - p for p in split]
    s = np.sqrt((r**2).sum(0) / np.maximum(dof, 1))
    # an exact fit (s = 0) would claim certainty: its scale is the fit's own rounding instead
    s = np.maximum(s, 1e-9 * np.maximum(1.0, np.abs(t).max()))
    Jw = (J / s[None, :, None]).reshape(n * R, -1)
    lam, V = np.linalg.eigh(Jw.T @ Jw)
    # directions the data do not constrain keep a variance of 1e12× the best one: their draws run away,
    # which is what "unbounded" means
    lam = np.maximum(lam, 1e-12 * max(lam.max(), 1e-300))
    return (V / lam) @ V.T, int(min(dof)), s


def laplace(res: FitResult, law: Law, x: np.ndarray, t: np.ndarray) -> None:
    cov, res.dof, s = laplace_parts(law, x, t, res._theta)
    res.cov, res.scale = cov, s.tolist()


MAX_CHECKS = 3  # inner extrapolation checks per fit (each a refit on fewer points)


def inflation(law: Law, x: np.ndarray, t: np.ndarray, delta: float, m) -> tuple[float, int, float]:
    """How much wider the Laplace interval must be to cover the law's own extrapolation errors inside the fit:
    refit on the points up to each of the last MAX_CHECKS distinct values of x's first column (the smaller
    runs), predict the larger fit points, and take the RMS of their errors in units of the refit's predicted
    standard deviation (curve and scatter). A law that bends away from the data as it extrapolates gets a
    factor > 1; an exact law keeps 1. Returns (factor >= 1, number of predictions it rests on)."""
    P = per_fit(law)
    levels = np.unique(x[:, 0])
    f, order = m.f, np.argsort(m.f)
    starts = m.theta[order[: min(4, len(order))]]
    starts = starts[np.isfinite(f[order[: len(starts)]])]
    z, excess = [], []
    for cut in levels[::-1][1 : MAX_CHECKS + 1]:
        sub = x[:, 0] <= cut
        if sub.sum() < P + 1 or len(np.unique(x[sub], axis=0)) < P + 1:
            break
        ms = minimise(law, x[sub], t[sub], delta, starts)
        k = int(np.argmin(ms.f))
        th = ms.theta[k]
        if not (math.isfinite(ms.f[k]) and bounded(th)):
            continue
        cov, dof, s = laplace_parts(law, x[sub], t[sub], th)
        xn = torch.tensor(x[~sub])
        g = torch.autograd.functional.jacobian(
            lambda v, xn=xn: law.predict_t(v[None], xn)[0], torch.tensor(th)
        )
        g = g.numpy()
        with torch.no_grad():
            pred = law.predict_t(torch.tensor(th[None]), xn).numpy()[0]
        sd = np.sqrt(np.einsum("np,pq,nq->n", g, cov, g) + s[-1] ** 2)
        err = t[~sub] - pred
        zk = err / sd
        # the error the refit's own uncertainty does not explain, per e-fold of extrapolation beyond it
        dist = np.log(x[~sub, 0] / cut)
        keep = np.isfinite(zk) & np.isfinite(dist / sd)
        z.extend(zk[keep].tolist())
        excess.extend(((dist / sd)[keep] ** 2).tolist())
    if not z:
        return 1.0, 0, 0.0
    # err² ≈ k²·sd² + drift²·dist², i.e. z² ≈ k² + drift²·(dist/sd)², both non-negative: k widens the
    # interval everywhere, drift only beyond the fit points, in proportion to how far
    (k2, d2), _ = nnls(np.c_[np.ones(len(z)), excess], np.square(z))
    return max(1.0, math.sqrt(k2)), len(z), math.sqrt(d2)


def param_intervals(res: FitResult, law: Law, x0) -> dict[str, tuple[float, float]]:
    """Each natural parameter's interval from the draws; (−inf, inf) when more than the interval's tail share of
    the draws have no finite value for it, or when its ends are ABSURD-fold apart (the data do not bound it)."""
    vals: dict[str, list[float]] = {k: [] for k in res.params}
    for th in res._boot:
        try:
            pub = public(law, th, x0) if bounded(th) else {}
        except (OverflowError, ValueError, ZeroDivisionError):
            pub = {}
        for k in vals:
            v = pub.get(k, math.nan)
            vals[k].append(v if math.isfinite(v) else math.nan)
    out = {}
    tail = (1 - res.level) / 2
    for k, v in vals.items():
        v = np.asarray(v)
        bad = np.isnan(v).mean()
        if bad > tail:
            out[k] = (-math.inf, math.inf)
        else:  # the undefined draws count against both ends: the lowest and the highest they could be
            lo, hi = np.nanquantile(v, [(tail - bad) / (1 - bad), (1 - tail) / (1 - bad)])
            runaway = lo * hi > 0 and max(abs(lo), abs(hi)) >= ABSURD * min(abs(lo), abs(hi))
            out[k] = (-math.inf, math.inf) if runaway else (float(lo), float(hi))
    return out


def bootstrap_draws(
    res: FitResult, law: Law, x: np.ndarray, t: np.ndarray, delta: float, m, B: int, seed: int
) -> None:
    """Resample the fit points B times and refit each resample, all at once, from the best few optima. Too few
    distinct resample sets (few points: most resamples are permutations of the data, all refitting to the same
    optimum) make no interval: the result keeps the Laplace one and says why."""
    n, P = len(t), len(law.params)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(np.float64)  # (B, n) weights
    # a resample needs P + 1 distinct x among its points, like any fit
    keep = np.array([len(np.unique(x[c > 0], axis=0)) > P for c in counts])
    counts = counts[keep]
    distinct = len(np.unique(counts, axis=0))
    if distinct < MIN_DISTINCT_RESAMPLES:
        res.flags.append(
            f"bootstrap refused: only {distinct} distinct resample set(s) of {n} points can be fitted (at least "
            f"{MIN_DISTINCT_RESAMPLES} are needed for an interval); the intervals are Laplace ones"
        )
        res.interval = "laplace"
        return
    # starts: the full-data optimum and up to three other distinct local optima
    f, order = m.f, np.argsort(m.f)
    picked = [order[0]]
    for i in order[1:]:
        if len(picked) == 4 or not math.isfinite(f[i]):
            break
        if all(abs(f[i] - f[j]) > 1e-6 * abs(f[j]) for j in picked):
            picked.append(i)
    starts = m.theta[picked]
    k = len(starts)
    groups = np.repeat(np.arange(len(counts)), k)  # one problem per resample
    mb = minimise(law, x, t, delta, np.tile(starts, (len(counts), 1)), np.repeat(counts, k, axis=0), groups)
    fb = mb.f.reshape(-1, k)
    theta = mb.theta.reshape(-1, k, P)[np.arange(len(fb)), fb.argmin(1)]
    theta = theta[np.isfinite(fb.min(1)) & np.array([bounded(th) for th in theta], dtype=bool)]
    res._boot, res.n_boot = theta, len(theta)
