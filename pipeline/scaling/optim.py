"""Batched L-BFGS: many independent starts of one small problem, minimised at once.

`fun(theta, idx)` takes an (s, P) array of parameter vectors (the rows `idx` of the batch) and returns the
(s,) objective of each row and its (s, P) gradient; `autograd(value)` builds such a `fun` from a torch
function that returns values only. Rows never interact, so the gradient of the sum is every row's own
gradient and one autograd call serves the whole batch. Each row keeps its own history, step and stopping
state; finished rows leave the batch, so late iterations only pay for the stragglers. The optimiser's own
bookkeeping is numpy (its per-call overhead is a fraction of torch's on these tiny arrays); the objective,
where the work is, is torch.

Stopping is relative, never absolute: a row stops when its objective falls by less than `ftol * |f|` on two
iterations running, when no step along its direction (even steepest descent) lowers it, or when it is at
`fatol`, the level the caller calls exact (a law through its points would otherwise creep toward 0 forever).
That is what makes the summed and the mean objective reach the same optimum, and what avoids the trap of an
absolute gradient tolerance that calls a summed Huber objective of ~1e-3 "converged" long before it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

CHUNK = 256
BEATEN = 3.0
Fun = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class Minimum:
    theta: np.ndarray  # (S, P) final parameters of each start
    f: np.ndarray  # (S,) final objective (inf where a start never had a finite value)
    iters: np.ndarray  # (S,) iterations each start took
    evals: int  # rows evaluated in all (the cost: one row-eval is one objective + gradient of one start)


def autograd(value: Callable[[torch.Tensor, np.ndarray], torch.Tensor]) -> Fun:
    """Wrap a values-only torch objective (s, P) -> (s,) into a numpy one that also returns its gradient."""

    def fun(theta: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            f = value(th, idx)
            (g,) = torch.autograd.grad(f.sum(), th)
        return f.detach().numpy(), g.numpy()

    return fun


def _value_and_grad(fun: Fun, theta: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # a few hundred rows at a time keep the (K, rows, n) temporaries in cache: 3x faster than one big batch
    if len(idx) > CHUNK:
        parts = [fun(theta[i : i + CHUNK], idx[i : i + CHUNK]) for i in range(0, len(idx), CHUNK)]
        f, g = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    else:
        f, g = fun(theta, idx)
    # a non-finite value or gradient is a wall: the line search backs away from it
    bad = ~np.isfinite(f) | ~np.isfinite(g).all(1)
    if bad.any():
        f, g = np.where(bad, np.inf, f), np.where(bad[:, None], 0.0, g)
    return f, g


def lbfgs(
    fun: Fun,
    theta0: np.ndarray,
    *,
    max_iter: int = 500,
    history: int = 10,
    ftol: float = 1e-10,
    fatol: float = 0.0,
    window: int = 20,
    wtol: float = 1e-6,
    groups: np.ndarray | None = None,
    c1: float = 1e-4,
    max_backtrack: int = 40,
) -> Minimum:
    """Minimise every row of `theta0` (S, P) independently; returns the final point of each row.

    `groups` (S,) says which rows are starts of the same problem (default: all); only the best row of each
    problem matters, so a row far above its problem's best that has stopped making real progress is let go.
    """
    # one thread: the work is many small ops, where OpenMP's fork/join costs more than it saves (and on a
    # busy machine its spinning threads make it several times slower)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        th = np.array(theta0, dtype=np.float64)
        grp = np.zeros(len(th), dtype=np.int64) if groups is None else np.asarray(groups)
        return _lbfgs(fun, th, grp, max_iter, history, ftol, fatol, window, wtol, c1, max_backtrack)
    finally:
        torch.set_num_threads(threads)


def _lbfgs(fun, th, grp, max_iter, history, ftol, fatol, window, wtol, c1, max_backtrack) -> Minimum:
    S, P = th.shape
    f, g = _value_and_grad(fun, th, np.arange(S))
    evals = S
    out_th, out_f, out_it = th.copy(), f.copy(), np.zeros(S, dtype=np.int64)
    # the live rows: state is kept compact (live rows only), so no per-iteration gather of the history
    live = np.isfinite(f) & (g != 0).any(1) & (f > fatol)
    gbest = np.full(grp.max() + 1 if len(grp) else 0, np.inf)  # best objective so far of each group
    np.minimum.at(gbest, grp, f)
    ids, th, f, g = np.flatnonzero(live), th[live], f[live], g[live]
    L = len(ids)
    sh = np.zeros((history, L, P))  # s_k = step, in a ring of `history` slots
    yh = np.zeros((history, L, P))  # y_k = change of gradient
    rho = np.zeros((history, L))  # 1 / (y_k . s_k); 0 marks an empty or discarded slot
    gamma = np.ones(L)  # H0 = gamma I, from the newest good pair
    has = np.zeros(L, dtype=bool)  # any good pair since the last reset
    stalls = np.zeros(L, dtype=np.int64)
    iters = np.zeros(L, dtype=np.int64)
    frozen = np.zeros(L, dtype=bool)
    f_ago = np.full(L, np.inf)  # objective `window` iterations ago

    for k in range(max_iter):
        if L == 0:
            break
        # two-loop recursion, newest slot first: d = -H g
        slots = [(k - 1 - j) % history for j in range(min(k, history))]
        with np.errstate(all="ignore"):  # inf/nan from a spoiled history is caught below, as "uphill"
            q, alphas = -g, []
            for p in slots:
                a = rho[p] * np.einsum("ij,ij->i", sh[p], q)
                q = q - a[:, None] * yh[p]
                alphas.append(a)
            q = q * gamma[:, None]
            for p, a in zip(reversed(slots), reversed(alphas)):
                b = rho[p] * np.einsum("ij,ij->i", yh[p], q)
                q = q + sh[p] * (a - b)[:, None]
            # no history: a scale-free first step, Newton-like toward f = 0 but at most 1 in any coordinate
            first = np.minimum(np.abs(f) / np.einsum("ij,ij->i", g, g), 1.0 / np.abs(g).max(1))
            sd = -g * np.where(np.isfinite(first), first, 0.0)[:, None]
            d = np.where(has[:, None], q, sd)
            gd = np.einsum("ij,ij->i", g, d)
            uphill = ~(gd < 0)  # a spoiled history: forget it and go down the gradient
            if uphill.any():
                d[uphill] = sd[uphill]
                gd = np.einsum("ij,ij->i", g, d)
                has &= ~uphill
                rho[:, uphill] = 0.0

        # backtracking Armijo line search over the running rows; rows leave as they succeed
        t = np.ones(L)
        fn, gn = f.copy(), g.copy()
        done = np.zeros(L, dtype=bool)
        todo = np.flatnonzero(~frozen)
        for _ in range(max_backtrack):
            ft, gt = _value_and_grad(fun, th[todo] + t[todo, None] * d[todo], ids[todo])
            evals += len(todo)
            okk = ft <= f[todo] + c1 * t[todo] * gd[todo]
            acc = todo[okk]
            fn[acc], gn[acc], done[acc] = ft[okk], gt[okk], True
            todo, ft = todo[~okk], ft[~okk]
            if len(todo) == 0:
                break
            # quadratic interpolation of the step, kept within [0.1, 0.5] of the last one
            tt, g0 = t[todo], gd[todo]
            with np.errstate(all="ignore"):
                tq = -g0 * tt * tt / (2 * (ft - f[todo] - g0 * tt))
            tq = np.where(np.isfinite(tq), tq, 0.1 * tt)
            t[todo] = np.clip(tq, 0.1 * tt, 0.5 * tt)

        # a failed search after an L-BFGS step clears the history (next try is steepest descent);
        # a failed steepest-descent search means nothing can be gained here: the row stops
        failed = ~frozen & ~done
        stop = failed & ~has
        if failed.any():
            has &= ~failed
            rho[:, failed] = 0.0

        step = np.where(done[:, None], t[:, None] * d, 0.0)
        yv = gn - g
        sy, yy = np.einsum("ij,ij->i", step, yv), np.einsum("ij,ij->i", yv, yv)
        good = done & (sy > 1e-12 * np.sqrt(np.einsum("ij,ij->i", step, step) * yy)) & (sy > 1e-300)
        p = k % history
        sh[p], yh[p] = np.where(good[:, None], step, 0.0), np.where(good[:, None], yv, 0.0)
        with np.errstate(all="ignore"):
            rho[p] = np.where(good, 1.0 / sy, 0.0)
            gamma = np.where(good, sy / yy, gamma)
        has |= good

        stalls = np.where(done & (f - fn <= ftol * np.abs(f)), stalls + 1, 0)
        th, f, g = th + step, fn, gn
        iters += ~frozen
        # a row that gained less than wtol·|f| over the last `window` iterations is crawling along a flat
        # valley (often toward a parameter at infinity): it stops where it is; so does one that gained
        # less than 1% while at more than twice its group's best, as it will not be the one kept
        crawl = np.zeros(L, dtype=bool)
        np.minimum.at(gbest, grp[ids], f)
        if (k + 1) % window == 0:
            gain = f_ago - f
            crawl = (gain < wtol * np.abs(f)) | ((gain < 1e-2 * np.abs(f)) & (f > 2 * gbest[grp[ids]]))
            f_ago = f.copy()
        # a start more than BEATEN times above its problem's best after a step is clearly beaten: Hoffmann's
        # 4,500 starts fall into a few basins, hundreds of starts each, and only the best basin is kept
        crawl |= f > BEATEN * gbest[grp[ids]]
        frozen |= stop | (stalls >= 2) | (f <= fatol) | crawl

        # hand finished rows back once they are a tenth of the batch (or at the end)
        if frozen.sum() > 0.1 * L:
            out_th[ids[frozen]], out_f[ids[frozen]], out_it[ids[frozen]] = (
                th[frozen],
                f[frozen],
                iters[frozen],
            )
            keep = ~frozen
            ids, th, f, g, gamma, has, stalls, iters, f_ago = (
                v[keep] for v in (ids, th, f, g, gamma, has, stalls, iters, f_ago)
            )
            sh, yh, rho, frozen = sh[:, keep], yh[:, keep], rho[:, keep], frozen[keep]
            L = len(ids)
    out_th[ids], out_f[ids], out_it[ids] = th, f, iters
    return Minimum(out_th, out_f, out_it, evals)
