"""How the report prints numbers and names things: significant digits, counts, percentages, intervals, token
counts, and the axis labels and metric names every other module of the report uses (the metrics' and the data
sources' own from their registries). The bottom floor of the package: it imports nothing from the rest of it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from pipeline.data_sources import SOURCES
from pipeline.metrics import METRICS

DATA_NOTES = {name: s.description for name, s in SOURCES.items()}  # what each data source's corpus is
DP_LABEL = "pretraining data Dp (raw text tokens, log scale)"
CE_LABEL = METRICS["ce"].axis
UP_LABEL = {"mixture": "upstream loss on the pretraining mixture (nats/token)",
            "tgt": "upstream loss on target-language text (nats/token)"}


class _MetricNames(Mapping[str, str]):
    """A metric's name as the report prints it: the registry's label (pipeline.metrics, looked up when asked, so
    a metric declared there is named with no edit here), and the upstream loss."""

    OTHER = {"upstream": "upstream loss"}

    def __getitem__(self, metric: str) -> str:
        return METRICS[metric].label if metric in METRICS else self.OTHER[metric]

    def __iter__(self) -> Iterator[str]:
        return iter([*METRICS, *self.OTHER])

    def __len__(self) -> int:
        return len(METRICS) + len(self.OTHER)


METRIC = _MetricNames()


# The report's names of the default per-curve laws (fit.bleu_law, fit.ce_law); any other law is named after
# its metric and its name in pipeline.scaling.LAWS, so a new law needs no edit here.
LAW_NAMES = {("bleu", "bleu_log"): "BLEU log-law", ("ce", "power"): "CE power law"}
LAW_FORMULAS = {("bleu", "bleu_log"): "f(Dp) = (log(A·Dp^α))^β (Isik et al. Eq. 1)",
                ("ce", "power"): "L(Dp) = E + A/Dp^α (Isik et al. Eq. 3)"}


def law_name(law: Any, metric: str) -> str:
    return LAW_NAMES.get((metric, str(law)), f"{METRIC.get(metric, metric)} law ({law})")


def law_formula(law: str, metric: str) -> str:
    """How the report writes a law: the paper's form for the defaults, the registry's formula otherwise."""
    if (metric, law) in LAW_FORMULAS:
        return LAW_FORMULAS[(metric, law)]
    from pipeline.scaling.laws import LAWS  # loads torch: only when a report is built

    return LAWS[law].formula if law in LAWS else law


def fmt(v: Any, digits: int = 4) -> str:
    """Numbers as the report prints them: `digits` significant digits, '—' for missing."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if v == 0:
            return "0"
        if abs(v) >= 1e6 or abs(v) < 1e-3:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))}f}"
    return str(v)


def fmt_count(v: Any) -> str:
    """A count read back from a CSV column that also holds blanks (so pandas made it float)."""
    if isinstance(v, str) and re.fullmatch(r"\d+(\.0*)?", v):
        v = float(v)
    return fmt(int(v)) if isinstance(v, (int, float, np.number)) and math.isfinite(v) else "—"


def fmt_df(v: Any) -> str:
    """A Df key: a count, or 'all' for laws pooled over Df (fits.csv holds both, so pandas reads strings)."""
    return "all" if str(v) == "all" else fmt_count(v)


def fmt_pct(v: Any) -> str:
    """A relative error (0.05) as a percentage (5.000%)."""
    return fmt(float(v) * 100) + "%" if finite(v) else "—"


def fmt_ci(v: Any, lo: Any, hi: Any) -> str:
    """A value with its interval, `v [lo, hi]` (an infinite end: "unbounded"), or the value alone when there is
    no interval (NaN ends)."""
    def end(e: Any) -> str | None:
        return fmt(e) if finite(e) else ("unbounded" if is_inf(e) else None)

    ends = end(lo), end(hi)
    return fmt(v) + (f" [{ends[0]}, {ends[1]}]" if None not in ends else "")


def is_inf(v: Any) -> bool:
    try:
        return math.isinf(float(v))
    except (TypeError, ValueError):
        return False


def fmt_tokens(v: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def fmt_g(v: float) -> str:
    """A config constant as a person writes it: 0.1, 1e-3 (not 0.001), 2.5."""
    v = float(v)
    if v != 0 and abs(v) < 0.01:
        mantissa, exp = f"{v:e}".split("e")
        return f"{float(mantissa):g}e{int(exp)}"
    return f"{v:g}"


def finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def num(v: Any) -> float:
    return float(v) if finite(v) else math.nan


def plain_reason(reason: Any, metric: str = "") -> str:
    """A fitter's reason in the words a reader of this study needs."""
    r = str(reason)
    if r.startswith("y must be > 0") and metric == "bleu":
        return "BLEU is 0 at some Dp, and the log-law needs BLEU > 0"
    return r


# The identifiability flags (pipeline.scaling.flags) under which a fitted curve does not stand: a decaying law
# fitted rising (α < 0 rises without bound), a parameter the points leave unbounded (E at its limit with A
# unbounded is one), a term of the law at its limit. Other flags (near-collinear parameters, an interval spanning
# orders of magnitude, an uncalibrated interval) leave the curve standing and name parameters it does not pin down.
BREAKS_CURVE = {"rises without bound": "α < 0 (rises without bound)", "not bounded by the data":
                "a parameter the points do not bound", "are not identified": "a term at its limit"}


def breaking_flags(flags: Any) -> list[str]:
    """Why a fitted curve does not stand, in short words (BREAKS_CURVE), from its flags (a list, as in
    fits.json, or fits.csv's '; '-joined string); empty when it stands."""
    items = flags if isinstance(flags, list) else str(flags).split("; ") if isinstance(flags, str) else []
    return list(dict.fromkeys(why for f in items for key, why in BREAKS_CURVE.items() if key in f))


def and_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]

