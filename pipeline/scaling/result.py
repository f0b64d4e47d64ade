"""A fit's result: its parameters, the draws its intervals come from, and how it predicts, bands and serialises.

A leaf of the fitter: `minimise`, `intervals`, `flags` and `fit` import it, it imports only `laws`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .laws import Law, get_law

DRAWS = 4000  # draws from the Laplace approximation: quantiles to ±0.01 at 90%
# An interval end six orders of magnitude from the estimate is not information but the approximation running
# away along a direction the data do not constrain (a floored variance, or Cauchy tails at 1 degree of
# freedom through an exponential): it is reported unbounded, like an end that is not finite or overflows.
ABSURD = 1e6
NEGLIGIBLE = 1e-6  # a term contributing less than this share at every fit point is at its limit (→ 0)


def _clean(v):
    """JSON-safe: non-finite floats become None, numpy scalars plain Python."""
    if isinstance(v, dict):
        return {k: _clean(u) for k, u in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_clean(u) for u in v]
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer | np.bool_):
        return v.item()
    return v


def natural(law: Law, p: np.ndarray, q0: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        if law.space == "log":
            return np.exp(p)
        if law.space == "loglog":
            return q0 + (1 - q0) * np.exp(-np.exp(p))
        return p


def draws(theta: np.ndarray, cov: np.ndarray, dof: int, seed: int, boundary: tuple[int, ...] = ()) -> np.ndarray:
    """Multivariate-t draws around theta: the Laplace approximation with the residual scale's uncertainty
    (dof degrees of freedom), so that 4 points and 3 parameters give the wide intervals they should.

    Coordinates in `boundary` are ln E of a floor at its limit: cov is then in E itself, and a draw below the
    estimate (≈ 0) is projected onto it in the metric of the approximation, the other coordinates moving to
    their conditional values: the distribution of an estimate on a boundary (Self & Liang 1987)."""
    rng = np.random.default_rng(seed)
    lam, V = np.linalg.eigh(cov)
    z = rng.standard_normal((DRAWS, len(theta))) * np.sqrt(np.maximum(lam, 0.0))
    w = np.sqrt(max(dof, 1) / rng.chisquare(max(dof, 1), size=(DRAWS, 1)))
    d = (z @ V.T) * w
    out = theta + d
    for j in boundary:
        below = d[:, j] < 0
        d[below] -= np.outer(d[below, j] / cov[j, j], cov[:, j])  # d_j -> 0, the others to their conditionals
        out = theta + d
        # back to ln E; a projected draw sits exactly on the estimate (E ≈ 0), not a rounding away from it
        out[:, j] = np.where(below, theta[j], np.log(math.exp(theta[j]) + d[:, j].clip(min=0.0)))
    return out


@dataclass
class FitResult:
    law: str
    ok: bool = False
    reason: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    raw: dict[str, float] = field(default_factory=dict)
    objective: float = math.nan
    n_fit: int = 0
    delta: float = math.nan
    options: dict = field(default_factory=dict)
    holdout: list[dict] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    level: float = 0.9
    interval: str = "laplace"  # the method that made `intervals` and the bands
    n_boot: int = 0
    flags: list[str] = field(default_factory=list)
    form: str = ""
    x0: list[float] | None = None  # the centre x is divided by (centred laws), per column
    x_range: list[list[float]] | None = None  # [min, max] of the fit points' x, per column
    cov: np.ndarray | None = None  # Laplace covariance of the raw coordinates (before the t scaling)
    dof: int = 0  # residual degrees of freedom of the Laplace approximation
    scale: list[float] = field(default_factory=list)  # residual scale per residual column (measurement noise)
    seed: int = 0
    inflation: float = 1.0  # the factor the Laplace interval was widened by (see intervals.inflation)
    drift: float = 0.0  # the law's extra error per e-fold of extrapolation past the fit points (ditto)
    n_checks: int = 0  # the inner extrapolation checks that factor rests on
    boundary: list[str] = field(default_factory=list)  # coordinates at a boundary (see draws), cov in E for them
    _law: Law | None = field(default=None, repr=False)
    _theta: np.ndarray | None = field(default=None, repr=False)
    _boot: np.ndarray | None = field(default=None, repr=False)  # (B, P) coordinates of the interval draws

    def boundary_index(self) -> tuple[int, ...]:
        return tuple(self._law.params.index(p) for p in self.boundary)

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        return x / np.asarray(self.x0) if self.x0 is not None else x

    def _predict_t(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), np.errstate(all="ignore"):
            return self._law.predict_t(torch.tensor(np.atleast_2d(theta)), torch.tensor(self._x(x))).numpy()

    def _predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return natural(self._law, self._predict_t(theta, x), self.options.get("q0", 0.0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted y at x ((m,) or (m, k)); NaN everywhere when the fit failed."""
        if not self.ok:
            return np.full(len(np.asarray(x)), np.nan)
        return self._predict(self._theta, x)[0]

    def band(
        self, x: np.ndarray, level: float | None = None, observed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) at x: the band of the fitted curve, or with `observed` the interval a new measurement falls
        in (the curve's uncertainty plus the residual scatter); ±inf where unbounded, NaN without intervals."""
        level = self.level if level is None else level
        m = len(np.asarray(x))
        if not self.ok or self._boot is None or len(self._boot) == 0:
            return np.full(m, np.nan), np.full(m, np.nan)
        p = self._predict_t(self._boot, x)
        rng = np.random.default_rng(self.seed + 1)
        if observed and self._law.observe is not None and len(self.scale) > 1:
            # a chained law: the earlier stages' scatter passes through the later ones
            eps = np.stack([s * rng.standard_t(max(self.dof, 1), size=p.shape) for s in self.scale[:-1]], -1)
            with torch.no_grad(), np.errstate(all="ignore"):
                p = self._law.observe(torch.tensor(self._boot), torch.tensor(self._x(x)), torch.tensor(eps)).numpy()
        if self.drift > 0 and self.x_range is not None:  # beyond the fit points the law's bias grows
            xx = np.asarray(x, dtype=np.float64)
            xx = xx if xx.ndim == 1 else xx[:, 0]
            far = np.maximum(np.log(xx / self.x_range[1][0]), 0.0)
            p = p + self.drift * far * rng.standard_t(max(self.dof, 1), size=p.shape)
        if observed and self.scale:
            p = p + self.scale[-1] * rng.standard_t(max(self.dof, 1), size=p.shape)
        p = np.where(np.isnan(p), np.inf, p)  # a draw whose curve is undefined there bounds nothing
        # "nearest": interpolating between two infinite draws would give NaN
        q = np.quantile(p, [(1 - level) / 2, (1 + level) / 2], axis=0, method="nearest")
        # residual space is relative (ln y, ln(-ln Q~)) for all but the linear laws: ln(ABSURD) from the
        # estimate there is a million-fold; such an end, or one that is not finite, is unbounded
        centre = self._predict_t(self._theta, x)[0]
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(q) | (np.abs(q - centre) > math.log(ABSURD))
        q0 = self.options.get("q0", 0.0)
        (lo, hi), (bad_lo, bad_hi) = natural(self._law, q, q0), bad
        if self._law.space == "loglog":  # maps decreasingly: the low residual is the high accuracy
            lo, hi, bad_lo, bad_hi = hi, lo, bad_hi, bad_lo
        bad_lo, bad_hi = bad_lo | ~np.isfinite(lo), bad_hi | ~np.isfinite(hi)  # overflowed on the way back
        return np.where(bad_lo, -np.inf, lo), np.where(bad_hi, np.inf, hi)

    def to_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in ("law", "ok", "reason", "params", "raw", "objective", "n_fit", "delta", "form", "flags")
        }
        d |= {
            "formula": self._law.formula if self._law else "",
            "options": self.options,
            "holdout": self.holdout,
            "intervals": self.intervals,
            "level": self.level,
            "interval": self.interval,
            "bootstrap": self.n_boot,
            "x0": self.x0,
            "x_range": self.x_range,
            "cov": None if self.cov is None else self.cov.tolist(),
            "dof": self.dof,
            "scale": self.scale,
            "seed": self.seed,
            "inflation": self.inflation,
            "drift": self.drift,
            "n_checks": self.n_checks,
            "boundary": self.boundary,
        }
        return _clean(d)

    @classmethod
    def from_dict(cls, d: dict) -> FitResult:
        """A result from its `to_dict` record (a fits.json entry): it predicts, bands and inverts as the original
        did (for bootstrap intervals: as a Laplace approximation, since the resample fits are not stored)."""
        law = get_law(d["law"], {k: v for k, v in (d.get("options") or {}).items() if k == "link"})
        none = lambda v, dflt: dflt if v is None else v  # noqa: E731 (null is how JSON writes inf/NaN)
        res = cls(
            law=d["law"],
            ok=bool(d.get("ok")),
            reason=d.get("reason"),
            params={k: none(v, math.nan) for k, v in (d.get("params") or {}).items()},
            raw=d.get("raw") or {},
            objective=none(d.get("objective"), math.nan),
            n_fit=int(d.get("n_fit") or 0),
            delta=none(d.get("delta"), math.inf),
            options=d.get("options") or {},
            holdout=d.get("holdout") or [],
            intervals={
                k: (none(lo, -math.inf), none(hi, math.inf))
                for k, (lo, hi) in (d.get("intervals") or {}).items()
            },
            level=float(d.get("level") or 0.9),
            interval=d.get("interval") or "laplace",
            flags=d.get("flags") or [],
            form=d.get("form") or "",
            x0=d.get("x0"),
            x_range=d.get("x_range"),
            dof=int(d.get("dof") or 0),
            scale=[none(v, math.inf) for v in d.get("scale") or []],
            seed=int(d.get("seed") or 0),
            inflation=float(d.get("inflation") or 1.0),
            drift=float(d.get("drift") or 0.0),
            n_checks=int(d.get("n_checks") or 0),
            boundary=list(d.get("boundary") or []),
            _law=law,
        )
        if res.ok:
            res._theta = np.array([res.raw[p] for p in law.params], dtype=np.float64)
            if d.get("cov") is not None and res.dof > 0:
                res.cov = np.array(d["cov"], dtype=np.float64)
                res._boot = draws(res._theta, res.cov, res.dof, res.seed, res.boundary_index())
        return res
