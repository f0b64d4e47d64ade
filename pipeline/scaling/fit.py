"""The fitter: Huber loss in a law's residual space, L-BFGS from every start of its grid at once.

Public API (the report and the CLI call exactly this):

    from pipeline.scaling import fit, objective, LAWS, FitResult

    res = fit(law, x, y, *, holdout=None, delta=None, bootstrap=0, seed=0, level=0.9, reduction="sum",
              **law_options)
        law       a name in LAWS (bleu_log, power, chinchilla, direct, direct_sat, multi_tpr, passk,
                  two_stage, joint, gadre_loss, gadre_err)
        x         (n,) or (n, k) inputs, k = LAWS[law].nx (chinchilla: N, D; two_stage: C, nll; passk: C, k)
        y         (n,) observed values (loss, BLEU, accuracy, error)
        holdout   (n,) bool: points kept out of the fit and scored as extrapolations
        delta     Huber delta in residual space (default: the law's; inf = least squares)
        bootstrap number of resamples of the fit points, each refitted, for intervals and bands
        law_options  q0 (chance shift: direct, direct_sat, multi_tpr, passk), link ("linear" | "logistic":
                  two_stage), monotone_tol (bleu_log)
    res.ok, res.reason            False and a one-line reason when the fit cannot be made; never raises on data
    res.params                    natural parameters {name: float}; res.raw: optimised coordinates
    res.objective, res.n_fit      summed (or mean) Huber at the optimum over the fit points, their number
    res.predict(x) -> (m,)        prediction in y's units (NaN when not ok)
    res.holdout                   [{x, y, pred, abs_err, rel_err}] for the held-out points
    res.intervals                 {param: (lo, hi)} bootstrap percentile intervals at `level`
    res.band(x, level=0.9)        (lo, hi) bootstrap prediction band
    res.to_dict()                 JSON-safe dict (non-finite numbers become null; delta null = least squares)

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

from .laws import LAWS, Law, get_law
from .optim import Fun, autograd, lbfgs

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
    n_boot: int = 0
    _law: Law | None = field(default=None, repr=False)
    _theta: np.ndarray | None = field(default=None, repr=False)
    _boot: np.ndarray | None = field(default=None, repr=False)  # (B, P) coordinates of the resample fits

    def _predict(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        x = x[:, None] if x.ndim == 1 else x
        with torch.no_grad(), np.errstate(all="ignore"):
            p = self._law.predict_t(torch.tensor(np.atleast_2d(theta)), torch.tensor(x)).numpy()
        return _natural(self._law, p, self.options.get("q0", 0.0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted y at x ((m,) or (m, k)); NaN everywhere when the fit failed."""
        if not self.ok:
            return np.full(len(np.asarray(x)), np.nan)
        return self._predict(self._theta, x)[0]

    def band(self, x: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap prediction band (lo, hi) at x; NaN when there is no bootstrap."""
        if not self.ok or self._boot is None or len(self._boot) == 0:
            nan = np.full(len(np.asarray(x)), np.nan)
            return nan, nan.copy()
        p = self._predict(self._boot, x)
        lo, hi = np.nanquantile(p, [(1 - level) / 2, (1 + level) / 2], axis=0)
        return lo, hi

    def to_dict(self) -> dict:
        def clean(v):
            if isinstance(v, dict):
                return {k: clean(u) for k, u in v.items()}
            if isinstance(v, list | tuple):
                return [clean(u) for u in v]
            if isinstance(v, float | np.floating):
                return float(v) if math.isfinite(v) else None
            if isinstance(v, np.integer | np.bool_):
                return v.item()
            return v

        d = {
            k: getattr(self, k)
            for k in ("law", "ok", "reason", "params", "raw", "objective", "n_fit", "delta")
        }
        d |= {
            "formula": self._law.formula if self._law else "",
            "options": self.options,
            "holdout": self.holdout,
            "intervals": self.intervals,
            "level": self.level,
            "bootstrap": self.n_boot,
        }
        return clean(d)


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
    P, nf = len(law.params), int(fit_mask.sum())
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


def objective(
    law: str, x, y, raw, delta: float | None = None, reduction: str = "sum", **law_options
) -> float:
    """The fitter's objective at coordinates `raw` (a sequence in LAWS[law].params order, or a dict)."""
    spec, opts, delta = _prepare(law, x, y, law_options, delta)
    x = np.array(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
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
    bootstrap: int = 0,
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
    res = FitResult(law=law, delta=delta, options=opts, level=level, _law=spec)
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
    xf, t = x[fit_mask], _target(spec, y[fit_mask], q0)
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
    params = {k: float(v) for k, v in spec.public(theta).items()} if _bounded(theta) else {}
    if not params or not all(math.isfinite(v) for v in params.values()):
        res.reason = f"the optimiser diverged: {dict(zip(spec.params, theta.round(3).tolist()))}"
        return res
    res._theta = theta
    with torch.no_grad(), np.errstate(all="ignore"):
        pt = spec.predict_t(torch.tensor(theta[None]), torch.tensor(x)).numpy()[0]
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
    res.objective = f / res.n_fit if reduction == "mean" else f
    pred = _natural(spec, pt, q0)
    for i in np.flatnonzero(hold):
        err = abs(pred[i] - y[i])
        xi = x[i].tolist()
        res.holdout.append(
            {
                "x": xi[0] if len(xi) == 1 else xi,
                "y": float(y[i]),
                "pred": float(pred[i]),
                "abs_err": float(err),
                "rel_err": float(err / abs(y[i])) if y[i] != 0 else math.inf,
            }
        )
    if bootstrap > 0:
        _bootstrap(res, spec, xf, t, delta, m, bootstrap, seed)
    return res


def _bootstrap(
    res: FitResult, law: Law, x: np.ndarray, t: np.ndarray, delta: float, m, B: int, seed: int
) -> None:
    """Resample the fit points B times and refit each resample, all at once, from the best few optima."""
    n, P = len(t), len(law.params)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=B).astype(np.float64)  # (B, n) weights
    # a resample needs P + 1 distinct x among its points, like any fit
    keep = np.array([len(np.unique(x[c > 0], axis=0)) > P for c in counts])
    counts = counts[keep]
    if len(counts) == 0:  # no resample has enough distinct x: no intervals, the fit itself stands
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
    pub = [law.public(th) for th in theta]
    finite = np.array([all(math.isfinite(v) for v in p.values()) for p in pub], dtype=bool)
    theta, pub = theta[finite] if len(theta) else theta, [p for p, f in zip(pub, finite) if f]
    res._boot, res.n_boot = theta, len(theta)
    if len(theta):
        q = ((1 - res.level) / 2, (1 + res.level) / 2)
        for name in res.params:
            lo, hi = np.nanquantile([p[name] for p in pub], q)
            res.intervals[name] = (float(lo), float(hi))
