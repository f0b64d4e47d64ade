"""The scaling laws, each a small object: its parameters, its prediction, its starts, its residual space.

A law predicts in *residual space*: the quantity the Huber residual is taken on. `space` says which:
  "log"     r = pred − ln y               (losses, BLEU: relative errors, any magnitude)
  "loglog"  r = pred − ln(−ln Q̃)         (accuracies, Krajewski et al.; Q̃ = (Q − q0)/(1 − q0))
  "linear"  r = pred − y                  (Gadre's least squares, the two-stage accuracy link)
Parameters are optimised in unconstrained coordinates (`params`, e.g. a = ln A); `public` maps them to the
natural ones (A, α, ...). Most laws are a log-sum-exp of terms linear in the coordinates,
pred = LSE_k(Φ_k θ) with Φ_k built from ln x; for those `design` gives Φ and the fitter uses the exact
gradient without autograd (the 4,500-start Chinchilla grid lives on this path). The others give `model`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

LN6 = math.log(6.0)


@dataclass(frozen=True)
class Law:
    name: str
    params: tuple[str, ...]  # optimised coordinates, in order
    nx: int  # columns of x
    space: str  # "log" | "loglog" | "linear": what the residual is taken on (see module doc)
    delta: float  # default Huber delta in residual space; inf = least squares
    starts: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x (n,k), target t (n,)) -> (S, P) starts
    public: Callable[[np.ndarray], dict[str, float]]  # coordinates (P,) -> natural parameters
    design: Callable[[torch.Tensor], torch.Tensor] | None = None  # ln x (n,k) -> Φ (K, n, P)
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (θ (S,P), x (n,k)) -> (S,n)
    resid: Callable | None = None  # (θ, x, t) -> (S, n, R) residuals, when they are not model − t
    logx: bool = True  # the law takes ln x, so x must be > 0
    center: bool = False  # x is divided by the geometric mean of the fit points (public then takes its ln)
    split: tuple[int, ...] = ()  # laws with several residual columns: parameters per column, in order
    # the coordinate that is ln E of an additive floor E >= 0, whose limit E -> 0 is a boundary of the law
    # (the fitter keeps it finite there, and intervals treat it as a boundary: see intervals.laplace_parts)
    floor: str = ""
    # multi-stage laws: the prediction with noise eps (S, n, R - 1) added to the earlier stages' outputs, in
    # their residual units, so that a new measurement's interval carries every stage's scatter
    observe: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    options: dict = field(default_factory=dict)  # law options and their defaults
    formula: str = ""

    def predict_t(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Prediction in residual space for every row of theta (S, P) at every x (n, k): (S, n)."""
        if self.design is None:
            return self.model(theta, x)
        z = torch.einsum("knp,sp->ksn", self.design(torch.log(x)), theta)
        return z[0] if z.shape[0] == 1 else torch.logsumexp(z, 0)


def _lstsq(phi: np.ndarray, t: np.ndarray) -> np.ndarray:
    sol, *_ = np.linalg.lstsq(phi, t, rcond=None)
    return sol


# --- Isik et al. 2024 -------------------------------------------------------------------------------
#
# Isik's form f = (ln A + α ln Dp)^β is optimised in coordinates (c, γ, κ) on L = ln(Dp/Dp̄), Dp̄ the
# geometric mean of the fit points (the law is `center`ed):
#     ln f = c + γ·ln(1 + κL)/κ        (the κ → 0 limit is the pure power law ln f = c + γL)
# which is Isik's with u = ln(A·Dp^α) = u0·(1 + κL), u0 = e^(c/β), β = γ/κ, α = κ·u0, ln A = u0 − α ln Dp̄.
# On saturating BLEU curves Isik's optimum sits where ln A → −∞ and α → ∞ together (u0 huge, κ finite):
# unreachable in (ln A, α, β), an ordinary point here. Every (c, γ, κ ≠ 0) is an Isik curve, and κ = 0
# (β → ∞, a pure power law) is its limit, reported as such.


def _log1p_over(k: torch.Tensor, lx: torch.Tensor) -> torch.Tensor:
    """ln(1 + k·L)/k, continuous through k = 0 (where it is L); NaN where 1 + k·L <= 0 (outside the law)."""
    kl = k * lx
    small = kl.abs() < 1e-4
    safe_k = torch.where(small, torch.ones_like(k), k)
    big = torch.log1p(torch.where(small, torch.zeros_like(kl), kl)) / safe_k
    return torch.where(small, lx * (1 - kl / 2 + kl * kl / 3), big)


def _bleu_model(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    c, gamma, kappa = th[:, :1], th[:, 1:2], th[:, 2:3]
    return c + gamma * _log1p_over(kappa, torch.log(x[:, 0]))


def _bleu_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    # κ on a grid inside its domain (1 + κL > 0 at every point); for a given κ the law is linear in (c, γ)
    lx = np.log(x[:, 0])
    kmax = 1.0 / max(-lx.min(), 1e-12)
    kmin = -1.0 / max(lx.max(), 1e-12)
    rows = []
    for k in (*(f * kmax for f in (0.3, 0.6, 0.9, 0.99, 0.999)), 0.0, *(f * kmin for f in (0.3, 0.6, 0.9))):
        g = _log1p_over(torch.tensor(k), torch.tensor(lx)).numpy()
        c, gamma = _lstsq(np.stack([np.ones_like(g), g], 1), t)
        rows.append((c, gamma, k))
    return np.array(rows)


KAPPA_LIMIT = 1e-6  # |κ| below this (κL < 1e-5 over any data) is the pure-power limit: β = γ/κ means nothing


def bleu_isik(p: np.ndarray, lnx0: float) -> dict[str, float] | None:
    """Isik's (ln A, α, β) of the coordinates (c, γ, κ) centred at ln Dp̄ = lnx0; None where they are not
    finite numbers (κ = 0, the pure-power limit, or u0 = e^(c/β) beyond a float's range). ln A, not A: on
    saturating curves A = e^(−9000) is a true optimum that no float can hold."""
    c, gamma, kappa = (float(v) for v in p)
    if abs(kappa) < KAPPA_LIMIT or gamma == 0:
        return None
    beta = gamma / kappa
    if abs(c / beta) > 700:
        return None
    u0 = math.exp(c / beta)
    alpha = kappa * u0
    lna = u0 - alpha * lnx0
    return {"lnA": lna, "alpha": alpha, "beta": beta} if math.isfinite(lna) else None


def _bleu_public(p: np.ndarray, lnx0: float = 0.0) -> dict[str, float]:
    # Isik's parameters where they are numbers; else the limit form BLEU = B0·exp(γ·ln(1 + κL)/κ)
    return bleu_isik(p, lnx0) or {"B0": math.exp(p[0]), "gamma": float(p[1]), "kappa": float(p[2])}


BLEU_LOG = Law(
    name="bleu_log",
    params=("c", "gamma", "kappa"),
    nx=1,
    space="log",
    delta=0.1,
    starts=_bleu_starts,
    public=_bleu_public,
    model=_bleu_model,
    center=True,
    options={"monotone_tol": 0.0},
    formula="BLEU(Dp) = (lnA + alpha·ln Dp)^beta",
)


def _power_starts(lx: np.ndarray, t: np.ndarray) -> list[tuple[float, float, float]]:
    # (e, a, α) with E a fraction of the smallest value and A·x^-α matching the rest at the mean ln x
    q = np.exp(t)
    qmin, qgm = q.min(), math.exp(t.mean())
    rows = []
    for frac in (0.0, 0.3, 0.6, 0.9, 0.99):
        e = math.log(frac * qmin) if frac > 0 else math.log(qmin) - 10
        rest = max(qgm - frac * qmin, 1e-3 * qgm)
        for alpha in (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0):
            rows.append((e, math.log(rest) + alpha * lx.mean(), alpha))
    return rows


def _power_design(lx: torch.Tensor) -> torch.Tensor:  # (e, a, α): LSE(e, a − α ln x)
    one, zero = torch.ones_like(lx[:, 0]), torch.zeros_like(lx[:, 0])
    return torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, one, -lx[:, 0]], 1)])


POWER = Law(
    name="power",
    params=("e", "a", "alpha"),
    nx=1,
    space="log",
    delta=1e-3,
    starts=lambda x, t: np.array(_power_starts(np.log(x[:, 0]), t)),
    public=lambda p: {"E": math.exp(p[0]), "A": math.exp(p[1]), "alpha": p[2]},
    design=_power_design,
    floor="e",
    formula="L(Dp) = E + A/Dp^alpha",
)


# --- Hoffmann et al. 2022 ---------------------------------------------------------------------------


def hoffmann_grid() -> np.ndarray:
    """The 4,500 starts of Hoffmann et al. as Epoch describes them, as (a, b, e, α, β) rows."""
    grid = itertools.product(
        np.arange(0, 2.5, 0.5),
        np.arange(0, 2.5, 0.5),
        np.arange(-1, 1.5, 0.5),
        np.arange(0, 30, 5),
        np.arange(0, 30, 5),
    )
    return np.array([(a, b, e, alpha, beta) for alpha, beta, e, a, b in grid], dtype=float)


def _chinchilla_design(lx: torch.Tensor) -> torch.Tensor:  # (a, b, e, α, β): LSE(a − α ln N, b − β ln D, e)
    one, zero = torch.ones_like(lx[:, 0]), torch.zeros_like(lx[:, 0])
    return torch.stack(
        [
            torch.stack([one, zero, zero, -lx[:, 0], zero], 1),
            torch.stack([zero, one, zero, zero, -lx[:, 1]], 1),
            torch.stack([zero, zero, one, zero, zero], 1),
        ]
    )


CHINCHILLA = Law(
    name="chinchilla",
    params=("a", "b", "e", "alpha", "beta"),
    nx=2,
    space="log",
    delta=1e-3,
    starts=lambda x, t: hoffmann_grid(),
    public=lambda p: {
        "A": math.exp(p[0]),
        "B": math.exp(p[1]),
        "E": math.exp(p[2]),
        "alpha": p[3],
        "beta": p[4],
    },
    design=_chinchilla_design,
    floor="e",
    formula="L(N, D) = E + A/N^alpha + B/D^beta",
)


# --- Zhang et al. 2024 ------------------------------------------------------------------------------


def _joint_design(lx: torch.Tensor) -> torch.Tensor:  # (a, α, β, e): LSE(a − α ln X − β ln Df, e)
    one, zero = torch.ones_like(lx[:, 0]), torch.zeros_like(lx[:, 0])
    return torch.stack(
        [torch.stack([one, -lx[:, 0], -lx[:, 1], zero], 1), torch.stack([zero, zero, zero, one], 1)]
    )


def _joint_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    lx = np.log(x)
    rows = []
    for e, a, alpha in _power_starts(lx[:, 0], t):
        for beta in (0.05, 0.2, 0.5, 1.0):
            rows.append((a + beta * lx[:, 1].mean(), alpha, beta, e))
    return np.array(rows)


JOINT = Law(
    name="joint",
    params=("a", "alpha", "beta", "e"),
    nx=2,
    space="log",
    delta=1e-3,
    starts=_joint_starts,
    public=lambda p: {"A": math.exp(p[0]), "alpha": p[1], "beta": p[2], "E": math.exp(p[3])},
    design=_joint_design,
    floor="e",
    formula="L(X, Df) = A·X^-alpha·Df^-beta + E",
)


# --- Krajewski et al. 2025: -ln Q̃ as a power law -----------------------------------------------------

CHANCE = {"q0": 0.0}  # Q̃ = (Q − q0)/(1 − q0): the chance shift


def _direct_design(lx: torch.Tensor) -> torch.Tensor:  # (a, α): a − α ln C
    return torch.stack([torch.ones_like(lx[:, 0]), -lx[:, 0]], 1)[None]


def _direct_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    lx = np.log(x[:, 0])
    a, alpha = _lstsq(np.stack([np.ones_like(lx), -lx], 1), t)
    return np.array([(a, alpha), (t.mean(), 0.0), (t.mean() + 0.3 * lx.mean(), 0.3)])


DIRECT = Law(
    name="direct",
    params=("a", "alpha"),
    nx=1,
    space="loglog",
    delta=math.inf,
    starts=_direct_starts,
    public=lambda p: {"A": math.exp(p[0]), "alpha": p[1]},
    design=_direct_design,
    options=dict(CHANCE),
    formula="-ln Q~ = A·C^-alpha",
)

DIRECT_SAT = Law(
    name="direct_sat",
    params=("e", "a", "alpha"),
    nx=1,
    space="loglog",
    delta=1e-3,
    starts=lambda x, t: np.array(_power_starts(np.log(x[:, 0]), t)),
    public=lambda p: {"E": math.exp(p[0]), "A": math.exp(p[1]), "alpha": p[2]},
    design=_power_design,
    options=dict(CHANCE),
    floor="e",
    formula="-ln Q~ = A·C^-alpha + E",
)


def _multi_design(lx: torch.Tensor) -> torch.Tensor:  # (a, α, b, β): LSE(a − α ln N, b − β ln D)
    one, zero = torch.ones_like(lx[:, 0]), torch.zeros_like(lx[:, 0])
    return torch.stack(
        [torch.stack([one, -lx[:, 0], zero, zero], 1), torch.stack([zero, zero, one, -lx[:, 1]], 1)]
    )


def _multi_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    lx = np.log(x)
    rows = []
    for alpha, beta, w in itertools.product((0.1, 0.3, 0.6, 1.0), (0.1, 0.3, 0.6, 1.0), (0.2, 0.5, 0.8)):
        rows.append(
            (
                t.mean() + math.log(w) + alpha * lx[:, 0].mean(),
                alpha,
                t.mean() + math.log(1 - w) + beta * lx[:, 1].mean(),
                beta,
            )
        )
    return np.array(rows)


MULTI_TPR = Law(
    name="multi_tpr",
    params=("a", "alpha", "b", "beta"),
    nx=2,
    space="loglog",
    delta=1e-3,
    starts=_multi_starts,
    public=lambda p: {"A": math.exp(p[0]), "alpha": p[1], "B": math.exp(p[2]), "beta": p[3]},
    design=_multi_design,
    options=dict(CHANCE),
    formula="-ln Q~ = A·N^-alpha + B·D^-beta",
)


def _passk_design(lx: torch.Tensor) -> torch.Tensor:  # (ln A, α, β, δ): ln A + α ln C + β ln k + δ ln C ln k
    lc, lk = lx[:, 0], lx[:, 1]
    return torch.stack([torch.ones_like(lc), lc, lk, lc * lk], 1)[None]


def _passk_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    lc, lk = np.log(x[:, 0]), np.log(x[:, 1])
    return np.array([_lstsq(np.stack([np.ones_like(lc), lc, lk, lc * lk], 1), t), (t.mean(), 0.0, 0.0, 0.0)])


PASSK = Law(
    name="passk",
    params=("lnA", "alpha", "beta", "delta"),
    nx=2,
    space="loglog",
    delta=math.inf,
    starts=_passk_starts,
    public=lambda p: {"A": math.exp(p[0]), "alpha": p[1], "beta": p[2], "delta": p[3]},
    design=_passk_design,
    options=dict(CHANCE),
    formula="ln(-ln pass@k) = ln A + alpha ln C + beta ln k + delta ln C ln k",
)


# --- two-stage baseline: compute -> task loss (power law) -> accuracy (linear, quadratic or logistic link)


def _link_linear(th: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    return th[:, :1] + th[:, 1:2] * nll


def _link_quadratic(th: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    # the least a link must add to bend: accuracy rose faster than linearly as nll fell on Apple's data
    return th[:, :1] + th[:, 1:2] * nll + th[:, 2:3] * nll**2


def _link_logistic(th: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    a, b, k, l0 = (th[:, i : i + 1] for i in range(4))
    return a * torch.sigmoid(k * (nll - l0)) + b


def _stage1(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # ln nll = ln(E + A·C^-α): the power law of `POWER`, on (C, nll)
    lc = torch.log(x[:, 0])
    return torch.logaddexp(th[:, :1], th[:, 1:2] - th[:, 2:3] * lc)


def _two_stage(link: Callable) -> tuple[Callable, Callable, Callable]:
    # θ = (e, ln A, α, link...): stage 1 nll = E + A·C^-α in log space, stage 2 acc = link(nll). Stage 1 is
    # fitted on the measured (C, nll), stage 2 on the measured (nll, acc); a prediction chains them from C alone.
    def model(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return link(th[:, 3:], torch.exp(_stage1(th, x)))

    def observe(th: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # a new model's nll scatters about stage 1's curve as the measured ones do, and its accuracy follows
        # its own nll through the link: that scatter is part of what a measurement of accuracy can be
        return link(th[:, 3:], torch.exp(_stage1(th, x) + eps[..., 0]))

    def resid(th: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r1 = _stage1(th, x) - torch.log(x[:, 1])
        r2 = link(th[:, 3:], x[:, 1]) - t
        return torch.stack([r1, r2], -1)

    return model, resid, observe


def _stage1_starts(x: np.ndarray, k: int = 4) -> list[tuple[float, float, float]]:
    # the k power-law starts of the best least-squares fit to ln nll, scored before any optimisation
    lc, tn = np.log(x[:, 0]), np.log(x[:, 1])
    rows = np.array(_power_starts(lc, tn))
    pred = np.logaddexp(rows[:, :1], rows[:, 1:2] - rows[:, 2:3] * lc)
    return [tuple(r) for r in rows[np.argsort(((pred - tn) ** 2).sum(1))[:k]]]


def _two_linear_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    link = _lstsq(np.stack([np.ones_like(t), x[:, 1]], 1), t)
    return np.array([(*s1, *link) for s1 in _stage1_starts(x)])


def _two_quadratic_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    link = _lstsq(np.stack([np.ones_like(t), x[:, 1], x[:, 1] ** 2], 1), t)
    return np.array([(*s1, *link) for s1 in _stage1_starts(x)])


def _two_logistic_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    nll = x[:, 1]
    span = max(np.ptp(t), 1e-6)
    rows = []
    for s1, a, k, q in itertools.product(
        _stage1_starts(x, 2), (span, 2 * span, 4 * span), (-30.0, -10.0, -3.0, -1.0, 1.0), (0.1, 0.5, 0.9)
    ):
        rows.append((*s1, a, t.min() - (a - span) / 2, k / max(np.ptp(nll), 1e-6), np.quantile(nll, q)))
    return np.array(rows)


def _two_public(names: tuple[str, ...]) -> Callable[[np.ndarray], dict[str, float]]:
    return lambda p: {
        "E": math.exp(p[0]),
        "A": math.exp(p[1]),
        "alpha": p[2],
        **dict(zip(names, (float(v) for v in p[3:]))),
    }


def _two_stage_law(link: str, fn: Callable, names: tuple[str, ...], starts: Callable, formula: str) -> Law:
    m, r, o = _two_stage(fn)
    return Law(
        name="two_stage",
        params=("e", "lnA", "alpha", *names),
        nx=2,
        space="linear",
        delta=math.inf,
        starts=starts,
        public=_two_public(names),
        model=m,
        resid=r,
        observe=o,
        split=(3, len(names)),
        options={"link": link},
        floor="e",
        formula=f"nll = E + A·C^-alpha (x = C, nll), acc = {formula}",
    )


TWO_STAGE = _two_stage_law("linear", _link_linear, ("a", "b"), _two_linear_starts, "a + b·nll")
TWO_STAGE_QUADRATIC = _two_stage_law(
    "quadratic", _link_quadratic, ("a", "b", "c"), _two_quadratic_starts, "a + b·nll + c·nll^2"
)
TWO_STAGE_LOGISTIC = _two_stage_law(
    "logistic", _link_logistic, ("a", "b", "k", "l0"), _two_logistic_starts, "a·sigmoid(k·(nll - l0)) + b"
)
# the two-stage law by its `link` option, the default first (the backtest measures each)
TWO_STAGE_LINKS = {law.options["link"]: law for law in (TWO_STAGE, TWO_STAGE_QUADRATIC, TWO_STAGE_LOGISTIC)}


# --- Gadre et al. 2024 ------------------------------------------------------------------------------


def _gadre_loss_model(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # L(N, M) = E + a·N^b + c·6^(b/2)·(M·N)^b with b = −η < 0, in coordinates (ln a, ln c, η, E)
    la, lc, eta, e = (th[:, i : i + 1] for i in range(4))
    ln_n, ln_m = torch.log(x[:, 0]), torch.log(x[:, 1])
    return e + torch.exp(la - eta * ln_n) + torch.exp(lc - eta * (LN6 / 2 + ln_m + ln_n))


def _gadre_loss_starts(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    # their grid: a, c in {1e2, 3e2, 1e3, 3e3}, b in {-0.1, -0.3}, E in {0, 1, 2, 10}
    ac = np.log([1e2, 3e2, 1e3, 3e3])
    return np.array(list(itertools.product(ac, ac, (0.1, 0.3), (0.0, 1.0, 2.0, 10.0))))


GADRE_LOSS = Law(
    name="gadre_loss",
    params=("lna", "lnc", "eta", "E"),
    nx=2,
    space="linear",
    delta=math.inf,
    starts=_gadre_loss_starts,
    public=lambda p: {
        "a": math.exp(p[0]),
        "c": math.exp(p[1]),
        "b": -p[2],
        "E": p[3],
        "B": math.exp(p[1] - p[2] * LN6 / 2),
    },
    model=_gadre_loss_model,
    formula="L(N, M) = E + a·N^b + c·6^(b/2)·(M·N)^b  (x = N, M = D/N)",
)


def _gadre_err_model(th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    k, gamma, eps = th[:, :1], th[:, 1:2], th[:, 2:3]
    return eps - k * torch.exp(-gamma * x[:, 0])


GADRE_ERR = Law(
    name="gadre_err",
    params=("k", "gamma", "eps"),
    nx=1,
    space="linear",
    delta=math.inf,
    starts=lambda x, t: np.array(
        list(itertools.product((0.5, 1.0, 2.0, 4.0), (0.25, 0.5, 1.0, 2.0), (1.0, t.max())))
    ),
    public=lambda p: {"k": p[0], "gamma": p[1], "eps": p[2]},
    model=_gadre_err_model,
    logx=False,
    formula="Err(L) = eps - k·exp(-gamma·L)",
)


LAWS: dict[str, Law] = {
    law.name: law
    for law in (
        BLEU_LOG,
        POWER,
        CHINCHILLA,
        DIRECT,
        DIRECT_SAT,
        MULTI_TPR,
        PASSK,
        TWO_STAGE,
        JOINT,
        GADRE_LOSS,
        GADRE_ERR,
    )
}


def get_law(name: str, options: dict) -> Law:
    """The law called `name`, configured by `options`; unknown names or options raise ValueError."""
    if name not in LAWS:
        raise ValueError(f"unknown law {name!r}; known: {', '.join(LAWS)}")
    law = LAWS[name]
    bad = set(options) - set(law.options)
    if bad:
        allowed = ", ".join(law.options) or "none"
        raise ValueError(f"law {name!r} has no option {', '.join(sorted(bad))}; allowed: {allowed}")
    if name == "two_stage":
        link = options.get("link", "linear")
        if link not in TWO_STAGE_LINKS:
            raise ValueError(f"two_stage link must be one of {', '.join(TWO_STAGE_LINKS)}, not {link!r}")
        return TWO_STAGE_LINKS[link]
    return law
