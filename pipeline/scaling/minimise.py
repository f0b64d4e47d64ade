"""The Huber objective and its minimisation: residual targets, the batched objective of every start, the
preconditioned L-BFGS over a law's grid, and the small helpers (centring, bounds, identifiability) a fit and
its refits share. `objective` evaluates the fitter's objective at given coordinates."""

from __future__ import annotations

import math

import numpy as np
import torch

from .laws import Law, get_law
from .optim import Fun, autograd, lbfgs


def huber(r: torch.Tensor, delta: float) -> torch.Tensor:
    # q·(|r| − q/2) with q = min(|r|, δ): ½r² inside, δ(|r| − δ/2) outside, and no inf·0 when δ = inf
    a = r.abs()
    q = a.clamp(max=delta)
    return q * (a - 0.5 * q)


def residual_target(law: Law, y: np.ndarray, q0: float) -> np.ndarray:
    with np.errstate(all="ignore"):
        if law.space == "log":
            return np.log(y)
        if law.space == "loglog":
            return np.log(-np.log((y - q0) / (1 - q0)))
        return y


def objective_fn(law: Law, x: np.ndarray, t: np.ndarray, delta: float, w: np.ndarray | None) -> Fun:
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


def prepare(law: str, x, y, law_options: dict, delta: float | None) -> tuple[Law, dict, float]:
    spec = get_law(law, law_options)
    opts = {**spec.options, **law_options}
    q0 = opts.get("q0", 0.0)
    if not (isinstance(q0, int | float) and 0 <= q0 < 1):
        raise ValueError(f"q0 must be a number in [0, 1), not {q0!r}")
    delta = spec.delta if delta is None else float(delta)
    if not delta > 0:
        raise ValueError(f"the Huber delta must be > 0, not {delta!r}")
    return spec, opts, delta


def minimise(law: Law, x: np.ndarray, t: np.ndarray, delta: float, starts: np.ndarray, w=None, groups=None):
    fun = objective_fn(law, x, t, delta, w)
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


def settle(law: Law, theta: np.ndarray) -> np.ndarray:
    """Optima (..., P) with the floor coordinate ln E raised to −MAX_COORDINATE where the optimiser ran further
    down its flat valley: E = e^−500 and E = e^−2600 are the same curve (the limit E = 0), and only one of
    them can be mapped to natural parameters and drawn around."""
    if not law.floor:
        return theta
    theta = theta.copy()
    j = law.params.index(law.floor)
    theta[..., j] = np.maximum(theta[..., j], -MAX_COORDINATE)
    return theta


def bounded(theta: np.ndarray) -> bool:
    """Finite optimised coordinates small enough that the natural parameters (exp of some) stay finite."""
    return bool(np.isfinite(theta).all() and np.abs(theta).max() <= MAX_COORDINATE)


def identifiable(law: Law, x: np.ndarray) -> bool:
    """Whether the design of a log-sum-exp law has full rank at these x (else some parameter is free)."""
    if law.design is None:
        return True
    sv = torch.linalg.svdvals(law.design(torch.log(torch.tensor(x))).reshape(-1, len(law.params)))
    return bool(sv[-1] > 1e-10 * sv[0])


def per_fit(law: Law) -> int:
    """Parameters one fit must pin down: all of them, or for a law of separate stages its largest stage."""
    return max(law.split or (len(law.params),))


def center(law: Law, x: np.ndarray) -> np.ndarray | None:
    """The geometric mean of x per column for a centred law (x is divided by it), else None."""
    return np.exp(np.log(x).mean(0)) if law.center else None


def public(law: Law, theta: np.ndarray, x0: np.ndarray | None) -> dict[str, float]:
    return law.public(theta, float(np.log(x0[0]))) if law.center else law.public(theta)


def objective(
    law: str, x, y, raw, delta: float | None = None, reduction: str = "sum", x0=None, **law_options
) -> float:
    """The fitter's objective at coordinates `raw` (a sequence in LAWS[law].params order, or a dict); `x0` is
    the centre of a centred law (default: the one `fit` uses on these x)."""
    spec, opts, delta = prepare(law, x, y, law_options, delta)
    x = np.array(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if spec.center:
        x = x / (center(spec, x) if x0 is None else np.atleast_1d(np.asarray(x0, dtype=np.float64)))
    y = np.array(y, dtype=np.float64)
    theta = np.array([raw[p] for p in spec.params] if isinstance(raw, dict) else raw, dtype=np.float64)
    fun = objective_fn(spec, x, residual_target(spec, y, opts.get("q0", 0.0)), delta, None)
    f = float(fun(theta[None], np.zeros(1, dtype=np.int64))[0][0])
    return f / len(y) if reduction == "mean" else f
