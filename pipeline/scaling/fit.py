"""The fitter: Huber loss in a law's residual space, L-BFGS from every start of its grid at once.

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
        law_options  q0 (chance shift: direct, direct_sat, multi_tpr, passk), link ("linear" | "logistic":
                  two_stage), monotone_tol (bleu_log)
    res.ok, res.reason            False and a one-line reason when the fit cannot be made; never raises on data
    res.params                    natural parameters {name: float}; res.raw: optimised coordinates
    res.objective, res.n_fit      summed (or mean) Huber at the optimum over the fit points, their number
    res.predict(x) -> (m,)        prediction in y's units (NaN when not ok)
    res.holdout                   [{x, y, pred, abs_err, rel_err, lo, hi}] for the held-out points; (lo, hi) is
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
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import nnls

from .laws import LAWS, Law, get_law
from .optim import Fun, autograd, lbfgs

DRAWS = 4000  # draws from the Laplace approximation: quantiles to ±0.01 at 90%
INTERVALS = ("laplace", "bootstrap", "none")
MIN_DISTINCT_RESAMPLES = 20  # fewer distinct bootstrap resample sets make no interval (see _bootstrap)

__all__ = ["LAWS", "FitResult", "fit", "objective"]


def huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    # q·(|r| − q/2) with q = min(|r|, δ): ½r² inside, δ(|r| − δ/2) outside, and no inf·0 when δ = inf
    a = r.abs()
    q = a.clamp(max=delta)
    return q * (a - 0.5 * q)


def _target(law: Law, y: np.ndarray, q0: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        if law.space == "log":
            return np.log(y)
        if law.space == "loglog":
            return np.log(-np.log((y - q0) / (1 - q0)))
        return y


def _natural(law: Law, p: np.ndarray, q0: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        if law.space == "log":
            return np.exp(p)
        if law.space == "loglog":
            return q0 + (1 - q0) * np.exp(-np.exp(p))
        return p


def _objective_fn(law: Law, x: np.ndarray, t: np.ndarray, delta: float, w: np.ndarray | None) -> Fun:
    """Weighted summed Huber of every start; exact gradient for log-sum-exp laws, autograd otherwise.

    x (n, k), t (n,) the targets in residual space, w (S, n) per-start point weights (bootstrap) or None."""
    x, t = torch.tensor(x, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    if law.design is None:

        def value(th: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
            r = law.resid(th, x, t) if law.resid is not None else law.predict_t(th, x) - t
            h = huber(r, delta)
            h = h.sum(-1) if h.dim() == 3 else h
            return (h if w is None else h * torch.from_numpy(w[idx])).sum(1)

        return autograd(value)

    phi = law.design(torch.log(x))  # (K, n, P)
    phi_t = phi.transpose(1, 2).contiguous()

    # written in place: these (K, S, n) arrays are the whole cost of a fit, so no temporaries
    def fun(theta: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = torch.matmul(torch.from_numpy(np.ascontiguousarray(theta)), phi_t)  # (K, S, n)
        if z.shape[0] == 1:
            r, s, e = z[0].sub_(t), None, None
        else:
            m = z.amax(0)
            e = z.sub_(m).exp_()
            s = e.sum(0)
            r = s.log().add_(m).sub_(t)
        a = r.abs()
        q = a.clamp(max=delta)
        h = a.sub_(q, alpha=0.5).mul_(q)
        psi = r.clamp_(-delta, delta)  # d huber / d pred
        if w is not None:
            wi = torch.from_numpy(w[idx])
            h.mul_(wi)
            psi.mul_(wi)
        if e is None:
            return h.sum(1).numpy(), (psi @ phi[0]).numpy()
        e.mul_(psi.div_(s))  # d pred / d z_k = e_k / s
        return h.sum(1).numpy(), torch.matmul(e, phi).sum(0).numpy()

    return fun


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
    inflation: float = 1.0  # the factor the Laplace interval was widened by (see _inflation)
    drift: float = 0.0  # the law's extra error per e-fold of extrapolation beyond the fit points (see _inflation)
    n_checks: int = 0  # the inner extrapolation checks that factor rests on
    _law: Law | None = field(default=None, repr=False)
    _theta: np.ndarray | None = field(default=None, repr=False)
    _boot: np.ndarray | None = field(default=None, repr=False)  # (B, P) coordinates of the interval draws

    def _x(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        return x / np.asarray(self.x0) if self.x0 is not None else x

    def _predict_t(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        with torch.no_grad(), np.errstate(all="ignore"):
            return self._law.predict_t(torch.tensor(np.atleast_2d(theta)), torch.tensor(self._x(x))).numpy()

    def _predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        return _natural(self._law, self._predict_t(theta, x), self.options.get("q0", 0.0))

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
        lo, hi = (_natural(self._law, v, self.options.get("q0", 0.0)) for v in q)
        return np.minimum(lo, hi), np.maximum(lo, hi)  # loglog maps decreasingly

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
            intervals={k: (none(lo, -math.inf), none(hi, math.inf)) for k, (lo, hi) in
                       (d.get("intervals") or {}).items()},
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
            _law=law,
        )
        if res.ok:
            res._theta = np.array([res.raw[p] for p in law.params], dtype=np.float64)
            if d.get("cov") is not None and res.dof > 0:
                res.cov = np.array(d["cov"], dtype=np.float64)
                res._boot = _draws(res._theta, res.cov, res.dof, res.seed)
        return res


def _prepare(law: str, x, y, law_options: dict, delta: float | None) -> tuple[Law, dict, float]:
    spec = get_law(law, law_options)
    opts = {**spec.options, **law_options}
    q0 = opts.get("q0", 0.0)
    if not (isinstance(q0, int | float) and 0 <= q0 < 1):
        raise ValueError(f"q0 must be a number in [0, 1), not {q0!r}")
    delta = spec.delta if delta is None else float(delta)
    if not delta > 0:
        raise ValueError(f"the Huber delta must be > 0, not {delta!r}")
    return spec, opts, delta


def _check(law: Law, x: np.ndarray, y: np.ndarray, fit_mask: np.ndarray, opts: dict) -> str | None:
    """The reason this data cannot be fitted by this law, or None."""
    P, nf = _per_fit(law), int(fit_mask.sum())
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
    if law.name == "bleu_log":
        order = np.lexsort((yf, xf[:, 0]))
        if (np.diff(yf[order]) < -opts["monotone_tol"]).any():
            return "BLEU is not monotone in Dp over the fit points"
    return None


def _minimise(law: Law, x: np.ndarray, t: np.ndarray, delta: float, starts: np.ndarray, w=None, groups=None):
    fun = _objective_fn(law, x, t, delta, w)
    # residuals below 1e-9 of the target's scale are rounding: a fit that good is exact
    fatol = 0.5 * len(t) * (1e-9 * max(1.0, float(np.abs(t).max()))) ** 2
    if law.design is None:
        return lbfgs(fun, starts, fatol=fatol, groups=groups)
    # precondition: optimise u = T⁻¹θ, with T making the stacked design's columns orthogonal and of unit RMS,
    # so that a pair as correlated as a and α (through a − α·ln N) is not a narrow valley to the optimiser
    phi = law.design(torch.log(torch.tensor(x))).numpy()
    K, n, P = phi.shape
    T = np.linalg.inv(np.linalg.qr(phi.reshape(-1, P), mode="r")) * math.sqrt(K * n)

    def pre(u: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, g = fun(u @ T.T, idx)
        return f, g @ T

    m = lbfgs(pre, starts @ np.linalg.inv(T).T, fatol=fatol, groups=groups)
    m.theta = m.theta @ T.T
    return m


MAX_COORDINATE = 500.0


def _bounded(theta: np.ndarray) -> bool:
    """Finite optimised coordinates small enough that the natural parameters (exp of some) stay finite."""
    return bool(np.isfinite(theta).all() and np.abs(theta).max() <= MAX_COORDINATE)


def _identifiable(law: Law, x: np.ndarray) -> bool:
    """Whether the design of a log-sum-exp law has full rank at these x (else some parameter is free)."""
    if law.design is None:
        return True
    sv = torch.linalg.svdvals(law.design(torch.log(torch.tensor(x))).reshape(-1, len(law.params)))
    return bool(sv[-1] > 1e-10 * sv[0])


def _per_fit(law: Law) -> int:
    """Parameters one fit must pin down: all of them, or for a law of separate stages its largest stage."""
    return max(law.split or (len(law.params),))


def _center(law: Law, x: np.ndarray) -> np.ndarray | None:
    """The geometric mean of x per column for a centred law (x is divided by it), else None."""
    return np.exp(np.log(x).mean(0)) if law.center else None


def _public(law: Law, theta: np.ndarray, x0: np.ndarray | None) -> dict[str, float]:
    return law.public(theta, float(np.log(x0[0]))) if law.center else law.public(theta)


def objective(
    law: str, x, y, raw, delta: float | None = None, reduction: str = "sum", x0=None, **law_options
) -> float:
    """The fitter's objective at coordinates `raw` (a sequence in LAWS[law].params order, or a dict); `x0` is
    the centre of a centred law (default: the one `fit` uses on these x)."""
    spec, opts, delta = _prepare(law, x, y, law_options, delta)
    x = np.array(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if spec.center:
        x = x / (_center(spec, x) if x0 is None else np.atleast_1d(np.asarray(x0, dtype=np.float64)))
    y = np.array(y, dtype=np.float64)
    theta = np.array([raw[p] for p in spec.params] if isinstance(raw, dict) else raw, dtype=np.float64)
    fun = _objective_fn(spec, x, _target(spec, y, opts.get("q0", 0.0)), delta, None)
    f = float(fun(theta[None], np.zeros(1, dtype=np.int64))[0][0])
    return f / len(y) if reduction == "mean" else f


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
    spec, opts, delta = _prepare(law, x, y, law_options, delta)
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
    x0 = _center(spec, x[fit_mask])
    xs = x / x0 if x0 is not None else x  # the law's own x (centred laws: relative to the fit points' centre)
    xf, t = xs[fit_mask], _target(spec, y[fit_mask], q0)
    if not _identifiable(spec, xf):
        res.reason = "x does not vary in every direction the law needs: some parameter is not identifiable"
        return res
    starts = np.asarray(spec.starts(xf, t), dtype=np.float64)
    starts = starts[np.isfinite(starts).all(1)]
    if len(starts) == 0:
        res.reason = "no finite starting point for this data"
        return res
    m = _minimise(spec, xf, t, delta, starts)
    best = int(np.argmin(m.f))
    theta, f = m.theta[best].copy(), float(m.f[best])
    if not math.isfinite(f):
        res.reason = "no start reached a finite objective"
        return res
    # coordinates are logs and exponents: beyond ±500 the natural parameters over- or underflow (checked
    # before mapping them: math.exp raises OverflowError past ~709)
    params = {k: float(v) for k, v in _public(spec, theta, x0).items()} if _bounded(theta) else {}
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
        _bootstrap(res, spec, xf, t, delta, m, bootstrap, seed)
    if interval != "none":
        _laplace(res, spec, xf, t)
        res.inflation, res.n_checks, res.drift = _inflation(spec, xf, t, delta, m)
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
            res._boot = _draws(theta, res.cov, res.dof, seed)
        res.intervals = _param_intervals(res, spec, x0)
    res.flags += _flags(res, spec, xf, t, y[fit_mask])
    pred = _natural(spec, pt, q0)
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
                "rel_err": float(err / abs(y[i])) if y[i] != 0 else math.inf,
                "lo": float(lo[j]),
                "hi": float(hi[j]),
            }
        )
    return res


# ------------------------------------------------------------------------------ intervals


def _residuals(law: Law, theta: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(n, R) residuals of one coordinate vector (R = 1 except for multi-stage laws)."""
    if law.resid is not None:
        return law.resid(theta[None], x, t)[0]
    return (law.predict_t(theta[None], x) - t)[0][:, None]


def _laplace_parts(law: Law, x: np.ndarray, t: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
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


def _laplace(res: FitResult, law: Law, x: np.ndarray, t: np.ndarray) -> None:
    cov, res.dof, s = _laplace_parts(law, x, t, res._theta)
    res.cov, res.scale = cov, s.tolist()


MAX_CHECKS = 3  # inner extrapolation checks per fit (each a refit on fewer points)


def _inflation(law: Law, x: np.ndarray, t: np.ndarray, delta: float, m) -> tuple[float, int, float]:
    """How much wider the Laplace interval must be to cover the law's own extrapolation errors inside the fit:
    refit on the points up to each of the last MAX_CHECKS distinct values of x's first column (the smaller
    runs), predict the larger fit points, and take the RMS of their errors in units of the refit's predicted
    standard deviation (curve and scatter). A law that bends away from the data as it extrapolates gets a
    factor > 1; an exact law keeps 1. Returns (factor >= 1, number of predictions it rests on)."""
    P = _per_fit(law)
    levels = np.unique(x[:, 0])
    f, order = m.f, np.argsort(m.f)
    starts = m.theta[order[: min(4, len(order))]]
    starts = starts[np.isfinite(f[order[: len(starts)]])]
    z, excess = [], []
    for cut in levels[::-1][1 : MAX_CHECKS + 1]:
        sub = x[:, 0] <= cut
        if sub.sum() < P + 1 or len(np.unique(x[sub], axis=0)) < P + 1:
            break
        ms = _minimise(law, x[sub], t[sub], delta, starts)
        k = int(np.argmin(ms.f))
        th = ms.theta[k]
        if not (math.isfinite(ms.f[k]) and _bounded(th)):
            continue
        cov, dof, s = _laplace_parts(law, x[sub], t[sub], th)
        xn = torch.tensor(x[~sub])
        g = torch.autograd.functional.jacobian(lambda v, xn=xn: law.predict_t(v[None], xn)[0], torch.tensor(th))
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


def _draws(theta: np.ndarray, cov: np.ndarray, dof: int, seed: int) -> np.ndarray:
    """Multivariate-t draws around theta: the Laplace approximation with the residual scale's uncertainty
    (dof degrees of freedom), so that 4 points and 3 parameters give the wide intervals they should."""
    rng = np.random.default_rng(seed)
    lam, V = np.linalg.eigh(cov)
    z = rng.standard_normal((DRAWS, len(theta))) * np.sqrt(np.maximum(lam, 0.0))
    w = np.sqrt(max(dof, 1) / rng.chisquare(max(dof, 1), size=(DRAWS, 1)))
    return theta + (z @ V.T) * w


def _param_intervals(res: FitResult, law: Law, x0) -> dict[str, tuple[float, float]]:
    """Each natural parameter's interval from the draws; (−inf, inf) when more than the interval's tail share of
    the draws have no finite value for it (the data do not bound it)."""
    vals: dict[str, list[float]] = {k: [] for k in res.params}
    for th in res._boot:
        try:
            pub = _public(law, th, x0) if _bounded(th) else {}
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
            out[k] = (float(lo), float(hi))
    return out


COLLINEAR = 0.9999  # |correlation| of two coordinates' estimates above which neither is pinned down alone
SPAN = 100.0  # an interval whose ends differ by this factor or more spans orders of magnitude
NEGLIGIBLE = 1e-6  # a term contributing less than this share at every fit point is at its limit (→ 0)


def _flags(res: FitResult, law: Law, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> list[str]:
    """Identifiability warnings: a parameter at a limit of the law, an interval spanning orders of magnitude or
    unbounded, near-collinear parameters."""
    flags = []
    if res.form == "limit":
        flags.append(
            "at the pure-power limit of Isik's law (kappa = 0, beta → ∞): A, alpha and beta are not finite; "
            "reported as B0·exp(gamma·ln(1 + kappa·L)/kappa), L = ln(Dp/x0)"
        )
    if law.design is not None:
        phi = law.design(torch.log(torch.tensor(x)))  # (K, n, P)
        if phi.shape[0] > 1:
            z = torch.einsum("knp,p->kn", phi, torch.tensor(res._theta))
            share = torch.exp(z - torch.logsumexp(z, 0)).amax(1).numpy()
            for k in np.flatnonzero(share < NEGLIGIBLE):
                names = [p for p, c in zip(law.params, phi[k].abs().sum(0).tolist()) if c > 0]
                flags.append(
                    f"the term in {', '.join(names)} is at its limit (contributes < {NEGLIGIBLE:g} of the fit at "
                    f"every point): those parameters are not identified"
                )
    for k, (lo, hi) in res.intervals.items():
        if not (math.isfinite(lo) and math.isfinite(hi)):
            flags.append(f"{k} is not bounded by the data (its {res.level:.0%} interval is unbounded)")
        elif (lo * hi > 0 and max(abs(lo), abs(hi)) >= SPAN * min(abs(lo), abs(hi))) or (
            lo * hi <= 0 and hi - lo >= SPAN * abs(res.params[k])
        ):
            flags.append(f"{k}'s {res.level:.0%} interval [{lo:.3g}, {hi:.3g}] spans orders of magnitude")
    if res.cov is not None:
        sd = np.sqrt(np.diag(res.cov))
        corr = res.cov / np.outer(sd, sd)
        for i, j in zip(*np.triu_indices(len(sd), 1)):
            if abs(corr[i, j]) > COLLINEAR:
                flags.append(
                    f"{law.params[i]} and {law.params[j]} are near-collinear (correlation {corr[i, j]:+.5f}): "
                    "the data pin down a combination of them, not each"
                )
    return flags


def _bootstrap(
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
    mb = _minimise(law, x, t, delta, np.tile(starts, (len(counts), 1)), np.repeat(counts, k, axis=0), groups)
    fb = mb.f.reshape(-1, k)
    theta = mb.theta.reshape(-1, k, P)[np.arange(len(fb)), fb.argmin(1)]
    theta = theta[np.isfinite(fb.min(1)) & np.array([_bounded(th) for th in theta], dtype=bool)]
    res._boot, res.n_boot = theta, len(theta)

