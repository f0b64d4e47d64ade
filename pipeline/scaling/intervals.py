"""A fit's intervals: the Laplace (Gauss-Newton) covariance, its widening by the law's own inner extrapolation
checks, the parameter intervals from the draws, and the bootstrap alternative (docs/fitting.md says why Laplace
is the default)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import nnls

from .laws import Law
from .minimise import bounded, minimise, per_fit, public, settle
from .result import ABSURD, NEGLIGIBLE, FitResult

MIN_DISTINCT_RESAMPLES = 20  # fewer distinct bootstrap resample sets make no interval (see bootstrap_draws)


def _residuals(law: Law, theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(n, R) residuals of one coordinate vector (R = 1 except for multi-stage laws)."""
    if law.resid is not None:
        return law.resid(theta[None], x, t)[0]
    return (law.predict_t(theta[None], x) - t)[0][:, None]


def boundary(law: Law, J: np.ndarray) -> tuple[int, ...]:
    """The floor coordinate (ln E) when the floor is at its limit: its residuals' sensitivity to ln E, which is
    E's share of the fit, is below NEGLIGIBLE at every point. There ln E sits anywhere down a flat valley and a
    Laplace approximation in it runs away (to E = e^600); in E itself the estimate is an ordinary boundary one."""
    if not law.floor:
        return ()
    j = law.params.index(law.floor)
    return (j,) if np.abs(J[..., j]).max() < NEGLIGIBLE else ()


def _in_e(J: np.ndarray, theta: np.ndarray, lin: tuple[int, ...]) -> np.ndarray:
    """A Jacobian in the coordinates `draws` uses: d/dE = (d/d ln E)/E for the boundary coordinates."""
    J = J.copy()
    for j in lin:
        J[..., j] /= math.exp(theta[j])
    return J


def laplace_parts(
    law: Law, x: np.ndarray, t: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray, tuple[int, ...]]:
    """Gauss-Newton (Laplace) covariance of the coordinates at an optimum, the residual degrees of freedom, the
    residual scale per column and the boundary coordinates (in E, not ln E, in the covariance: see `boundary`):
    cov = (Jᵀ W J)⁻¹ with W = 1/s² per residual column, s² = RSS/(n − p)."""
    xt, tt = torch.tensor(x), torch.tensor(t)
    th = torch.tensor(theta)
    r = _residuals(law, th, xt, tt).numpy()  # (n, R)
    J = torch.autograd.functional.jacobian(lambda v: _residuals(law, v, xt, tt), th).numpy()  # (n, R, P)
    lin = boundary(law, J)
    J = _in_e(J, theta, lin)
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
    return (V / lam) @ V.T, int(min(dof)), s, lin


def laplace(res: FitResult, law: Law, x: np.ndarray, t: np.ndarray) -> None:
    cov, res.dof, s, lin = laplace_parts(law, x, t, res._theta)
    res.cov, res.scale, res.boundary = cov, s.tolist(), [law.params[j] for j in lin]


def observed_var(law: Law, theta: np.ndarray, x: torch.Tensor, s: np.ndarray) -> np.ndarray:
    """(n,) variance of a new measurement about the curve at x, in residual space: the last stage's scatter,
    and for a chained law the earlier stages' scatter carried through the later ones (linearised)."""
    var = np.full(len(x), s[-1] ** 2)
    if law.observe is None or len(s) < 2:
        return var
    th = torch.tensor(theta[None])
    eps = torch.zeros(1, len(x), len(s) - 1, dtype=torch.float64, requires_grad=True)
    law.observe(th, x, eps).sum().backward()  # each point's prediction depends on its own eps only
    return var + (eps.grad[0].numpy() ** 2 * np.asarray(s[:-1]) ** 2).sum(-1)


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
        th = settle(law, ms.theta[k])
        if not (math.isfinite(ms.f[k]) and bounded(th)):
            continue
        cov, dof, s, lin = laplace_parts(law, x[sub], t[sub], th)
        xn = torch.tensor(x[~sub])
        g = torch.autograd.functional.jacobian(lambda v, xn=xn: law.predict_t(v[None], xn)[0], torch.tensor(th))
        g = _in_e(g.numpy(), th, lin)
        with torch.no_grad():
            pred = law.predict_t(torch.tensor(th[None]), xn).numpy()[0]
        err = t[~sub] - pred
        var = np.einsum("np,pq,nq->n", g, cov, g)
        for j in lin:  # E >= 0 at its boundary: its uncertainty explains errors on its own side only
            gc = g @ cov[:, j]  # how the prediction moves with E (the others following it)
            var = var - np.where(np.sign(gc) != np.sign(err), gc**2 / cov[j, j], 0.0)
        sd = np.sqrt(var + observed_var(law, th, xn, s))
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
    on_floor = res.boundary_index()
    for th in res._boot:
        try:
            pub = public(law, th, x0) if bounded(th) else {}
            if pub and on_floor and th[on_floor[0]] == res._theta[on_floor[0]]:  # a draw projected onto E = 0
                pub["E"] = 0.0  # every floor law reports its ln E coordinate as E
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
    theta = settle(law, mb.theta.reshape(-1, k, P)[np.arange(len(fb)), fb.argmin(1)])
    theta = theta[np.isfinite(fb.min(1)) & np.array([bounded(th) for th in theta], dtype=bool)]
    res._boot, res.n_boot = theta, len(theta)
