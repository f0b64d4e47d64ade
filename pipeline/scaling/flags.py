"""Identifiability flags: which of a fit's parameters the data do not pin down. The curve stands regardless."""

from __future__ import annotations

import math

import numpy as np
import torch

from .laws import Law
from .result import NEGLIGIBLE, FitResult

COLLINEAR = 0.9999  # |correlation| of two coordinates' estimates above which neither is pinned down alone
SPAN = 100.0  # an interval whose ends differ by this factor or more spans orders of magnitude


def identifiability_flags(res: FitResult, law: Law, x: np.ndarray, t: np.ndarray, y: np.ndarray) -> list[str]:
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
                if names == res.boundary:
                    continue  # the floor E, said below
                flags.append(
                    f"the term in {', '.join(names)} is at its limit (contributes < {NEGLIGIBLE:g} of the fit at "
                    f"every point): those parameters are not identified"
                )
    if law.name in ("power", "chinchilla", "joint"):  # laws written as a floor plus terms that decay
        for k in (k for k in res.params if k in ("alpha", "beta") and res.params[k] < 0):
            flags.append(
                f"{k} = {res.params[k]:.3g} < 0: the term grows with its input instead of decaying, so the law "
                "rises without bound as it extrapolates (the data do not follow the law's decaying form)"
            )
    for name in res.boundary:
        flags.append(
            f"E is at its limit 0 (the term in {name} contributes < {NEGLIGIBLE:g} of the fit at every point): "
            "a boundary estimate, so its interval starts at 0"
        )
    for k, (lo, hi) in res.intervals.items():
        if k == "E" and res.boundary and lo == 0 and math.isfinite(hi):
            continue  # [0, hi] is what a boundary estimate is, not a span of orders of magnitude
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
