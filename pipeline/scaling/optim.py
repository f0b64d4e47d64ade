"""Batched L-BFGS: many independent starts of one small problem, minimised at once.

`fun(theta, idx)` takes a (s, P) tensor of parameter vectors (the rows `idx` of the batch) and returns the
(s,) objective of each row and its (s, P) gradient; `autograd(value)` builds such a `fun` from a function
that returns values only. Rows never interact, so the gradient of the sum is every row's own gradient and
one autograd call serves the whole batch. Each row keeps its own history, step and stopping state; rows that
have stopped drop out of the batch, so late iterations only pay for the stragglers.

Stopping is relative, never absolute: a row stops when its objective falls by less than `ftol * |f|` on two
iterations running, when no step along its direction (even steepest descent) lowers it, or when it is at
`fatol`, the level the caller calls exact (a law through its points would otherwise creep toward 0 forever). That is what makes
the summed and the mean objective reach the same optimum, and what avoids the trap of an absolute gradient
tolerance that calls a summed Huber objective of ~1e-3 "converged" long before it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

CHUNK = 256
Fun = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class Minimum:
    theta: torch.Tensor  # (S, P) final parameters of each start
    f: torch.Tensor  # (S,) final objective (inf where a start never had a finite value)
    iters: torch.Tensor  # (S,) iterations each start took
    evals: int  # rows evaluated in all (the cost: one row-eval is one objective + gradient of one start)


def autograd(value: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Fun:
    """Wrap a values-only objective (s, P) -> (s,) into one that also returns its gradient."""

    def fun(theta: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            f = value(theta, idx)
            (g,) = torch.autograd.grad(f.sum(), theta)
        return f.detach(), g.detach()

    return fun


def _value_and_grad(fun: Fun, theta: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # a few hundred rows at a time keep the (K, rows, n) temporaries in cache: 3x faster than one big batch
    if len(idx) > CHUNK:
        parts = [fun(theta[i : i + CHUNK], idx[i : i + CHUNK]) for i in range(0, len(idx), CHUNK)]
        f, g = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    else:
        f, g = fun(theta, idx)
    # a non-finite value or gradient is a wall: the line search backs away from it
    bad = ~torch.isfinite(f) | ~torch.isfinite(g).all(1)
    return torch.where(bad, torch.inf, f), torch.where(bad[:, None], 0.0, g)


def lbfgs(
    fun: Fun,
    theta0: torch.Tensor,
    *,
    max_iter: int = 500,
    history: int = 10,
    ftol: float = 1e-10,
    fatol: float = 0.0,
    c1: float = 1e-4,
    max_backtrack: int = 40,
) -> Minimum:
    """Minimise every row of `theta0` (S, P) independently; returns the final point of each row."""
    # one thread: the work is many small ops, where OpenMP's fork/join costs more than it saves (and on a
    # busy machine its spinning threads make it several times slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _lbfgs(fun, theta0, max_iter, history, ftol, fatol, c1, max_backtrack)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(fun: Fun, theta0: torch.Tensor, max_iter: int, history: int, ftol: float, fatol: float, c1: float,
           max_backtrack: int) -> Minimum:
    th = theta0.detach().clone().to(torch.float64)
    S, P = th.shape
    f, g = _value_and_grad(fun, th, torch.arange(S))
    evals = S
    out_th, out_f, out_it = th.clone(), f.clone(), torch.zeros(S, dtype=torch.long)
    # the live rows: state is kept compact (live rows only) so no per-iteration gather of the history
    live = torch.isfinite(f) & (g != 0).any(1) & (f > fatol)
    ids, th, f, g = live.nonzero().squeeze(1), th[live], f[live], g[live]
    L = ids.numel()
    sh = torch.zeros(history, L, P, dtype=th.dtype)  # s_k = step, in a ring of `history` slots
    yh = torch.zeros(history, L, P, dtype=th.dtype)  # y_k = change of gradient
    rho = torch.zeros(history, L, dtype=th.dtype)  # 1 / (y_k . s_k); 0 marks an empty or discarded slot
    gamma = torch.ones(L, dtype=th.dtype)  # H0 = gamma I, from the newest good pair
    has = torch.zeros(L, dtype=torch.bool)  # any good pair since the last reset
    stalls = torch.zeros(L, dtype=torch.long)
    iters = torch.zeros(L, dtype=torch.long)
    frozen = torch.zeros(L, dtype=torch.bool)

    for k in range(max_iter):
        if L == 0:
            break
        # two-loop recursion, newest slot first: d = -H g
        slots = [(k - 1 - j) % history for j in range(min(k, history))]
        q, alphas = -g, []
        for p in slots:
            a = rho[p] * (sh[p] * q).sum(1)
            q = q - a[:, None] * yh[p]
            alphas.append(a)
        q = q * gamma[:, None]
        for p, a in zip(reversed(slots), reversed(alphas)):
            b = rho[p] * (yh[p] * q).sum(1)
            q = q + sh[p] * (a - b)[:, None]
        # no history: a scale-free first step, Newton-like toward f = 0 but at most 1 in any coordinate
        first = torch.minimum(f.abs() / (g * g).sum(1).clamp_min(1e-300), 1.0 / g.abs().amax(1).clamp_min(1e-300))
        sd = -g * first[:, None]
        d = torch.where(has[:, None], q, sd)
        gd = (g * d).sum(1)
        uphill = ~(gd < 0)  # a spoiled history: forget it and go down the gradient
        if uphill.any():
            d = torch.where(uphill[:, None], sd, d)
            gd = (g * d).sum(1)
            has, rho = has & ~uphill, torch.where(uphill, 0.0, rho)

        # backtracking Armijo line search over the running rows; rows leave as they succeed
        t = torch.ones(L, dtype=th.dtype)
        fn, gn = f.clone(), g.clone()
        done = torch.zeros(L, dtype=torch.bool)
        todo = (~frozen).nonzero().squeeze(1)
        for _ in range(max_backtrack):
            ft, gt = _value_and_grad(fun, th[todo] + t[todo, None] * d[todo], ids[todo])
            evals += todo.numel()
            okk = ft <= f[todo] + c1 * t[todo] * gd[todo]
            acc = todo[okk]
            fn[acc], gn[acc], done[acc] = ft[okk], gt[okk], True
            todo, ft = todo[~okk], ft[~okk]
            if todo.numel() == 0:
                break
            # quadratic interpolation of the step, kept within [0.1, 0.5] of the last one
            tt, g0 = t[todo], gd[todo]
            tq = -g0 * tt * tt / (2 * (ft - f[todo] - g0 * tt))
            tq = torch.where(torch.isfinite(tq), tq, 0.1 * tt)
            t[todo] = torch.minimum(torch.maximum(tq, 0.1 * tt), 0.5 * tt)

        # a failed search after an L-BFGS step clears the history (next try is steepest descent);
        # a failed steepest-descent search means nothing can be gained here: the row stops
        failed = ~frozen & ~done
        stop = failed & ~has
        has, rho = has & ~failed, torch.where(failed, 0.0, rho)

        step = torch.where(done[:, None], t[:, None] * d, 0.0)
        yv = gn - g
        sy, yy = (step * yv).sum(1), (yv * yv).sum(1)
        good = done & (sy > 1e-12 * step.norm(dim=1) * yv.norm(dim=1))
        p = k % history
        sh[p], yh[p] = torch.where(good[:, None], step, 0.0), torch.where(good[:, None], yv, 0.0)
        rho[p] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        gamma = torch.where(good, sy / torch.where(good, yy, 1.0), gamma)
        has = has | good

        stalls = torch.where(done & (f - fn <= ftol * f.abs()), stalls + 1, 0)
        th, f, g = th + step, fn, gn
        iters += ~frozen
        frozen = frozen | stop | (stalls >= 2) | (f <= fatol)

        # hand finished rows back once they are a tenth of the batch (or at the end)
        if frozen.sum() > 0.1 * L or k == max_iter - 1:
            out_th[ids[frozen]], out_f[ids[frozen]], out_it[ids[frozen]] = th[frozen], f[frozen], iters[frozen]
            keep = ~frozen
            ids, th, f, g, gamma, has, stalls, iters = (v[keep] for v in (ids, th, f, g, gamma, has, stalls, iters))
            sh, yh, rho = sh[:, keep], yh[:, keep], rho[:, keep]
            frozen = frozen[keep]
            L = ids.numel()
    out_th[ids], out_f[ids], out_it[ids] = th, f, iters
    return Minimum(out_th, out_f, out_it, evals)
