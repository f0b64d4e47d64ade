"""Predict and invert a fitted law, with intervals: what y at this x, and what x for this y.

    predict_at(res, x)          -> Prediction: the value, the interval a measurement there falls in, the curve's band
    invert(res, target, column) -> Inversion: the x (in one column, the others fixed) where the law reaches target,
                                   its interval from the curve's band, or why the law never gets there

The CLI (`python -m pipeline.scaling predict`) and the report call these, on a FitResult or on a fits.json record
(`FitResult.from_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from .fit import FitResult

SEARCH_BELOW = 1e3  # inversion searches x from the smallest fit x / SEARCH_BELOW ...
SEARCH_ABOVE = 1e12  # ... to the largest × SEARCH_ABOVE: beyond that "never" is the honest answer
GRID = 2000


@dataclass(frozen=True)
class Prediction:
    x: tuple[float, ...]
    value: float
    lo: float  # a measurement at x falls in [lo, hi] with probability `level`
    hi: float
    curve_lo: float  # the fitted curve's own band at x
    curve_hi: float
    level: float


@dataclass(frozen=True)
class Inversion:
    target: float
    column: int
    reached: bool
    x: float  # where the fitted curve reaches target (NaN when it does not)
    lo: float  # the band's crossings; inf where the band's slow side never gets there
    hi: float
    level: float
    message: str


def _row(res: FitResult, x) -> np.ndarray:
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    return x[None, :]


def predict_at(res: FitResult, x) -> Prediction:
    """The law at one input x (k values, k = the law's inputs)."""
    row = _row(res, x)
    v = float(res.predict(row)[0])
    lo, hi = res.band(row, observed=True)
    clo, chi = res.band(row)
    return Prediction(tuple(row[0].tolist()), v, float(lo[0]), float(hi[0]), float(clo[0]), float(chi[0]), res.level)


def _crossing(lx: np.ndarray, f: np.ndarray, target: float) -> float | None:
    """ln x where f (on the grid lx) first crosses target, refined between grid points; None if it never does."""
    d = f - target
    ok = np.isfinite(d)
    hit = np.flatnonzero(ok[:-1] & ok[1:] & (np.sign(d[:-1]) != np.sign(d[1:])))
    if len(hit) == 0:
        return None
    i = hit[0]
    return float(lx[i] + (lx[i + 1] - lx[i]) * d[i] / (d[i] - d[i + 1]))


def invert(res: FitResult, target: float, column: int = 0, fixed=None, x_range=None) -> Inversion:
    """Where the law reaches `target`, varying input `column` (the other inputs at `fixed`), searched from the
    smallest fit x / SEARCH_BELOW to the largest × SEARCH_ABOVE (`x_range` overrides: (lo, hi))."""
    k = res._law.nx if res._law else 1
    base = np.full(k, np.nan) if fixed is None else np.atleast_1d(np.asarray(fixed, dtype=np.float64)).copy()
    lo_x, hi_x = x_range or (res.x_range[0][column] / SEARCH_BELOW, res.x_range[1][column] * SEARCH_ABOVE)
    lx = np.linspace(math.log(lo_x), math.log(hi_x), GRID)
    grid = np.repeat(base[None], GRID, 0)
    grid[:, column] = np.exp(lx)
    f = res.predict(grid)
    blo, bhi = res.band(grid)

    def at(lnx: float) -> float:
        row = base.copy()
        row[column] = math.exp(lnx)
        return float(res.predict(row[None])[0]) - target

    c = _crossing(lx, f, target)
    if c is None:
        fin = f[np.isfinite(f)]
        tend = f"; over that range it goes from {fin[0]:.4g} to {fin[-1]:.4g}" if len(fin) else ""
        msg = f"the law never reaches {target:g} for x between {lo_x:.3g} and {hi_x:.3g}{tend}"
        return Inversion(target, column, False, math.nan, math.nan, math.nan, res.level, msg)
    i = int(np.searchsorted(lx, c))
    a, b = lx[max(i - 1, 0)], lx[min(i, GRID - 1)]
    if a < b and np.sign(at(a)) != np.sign(at(b)):
        c = brentq(at, a, b, xtol=1e-12)
    rising = f[min(i, GRID - 1)] >= f[max(i - 1, 0)]
    # the band side that reaches the target first gives the smallest x, the other the largest
    fast, slow = (bhi, blo) if rising else (blo, bhi)
    first, last = _crossing(lx, fast, target), _crossing(lx, slow, target)
    lo = math.exp(min(first, c)) if first is not None else 0.0  # the band is past the target already: no floor
    hi = math.exp(max(last, c)) if last is not None else math.inf
    msg = f"reaches {target:g} at x = {math.exp(c):.4g}, {res.level:.0%} interval [{lo:.4g}, " + (
        f"{hi:.4g}]" if math.isfinite(hi) else "unbounded]"
    )
    return Inversion(target, column, True, math.exp(c), lo, hi, res.level, msg)
