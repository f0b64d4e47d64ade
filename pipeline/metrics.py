"""The downstream metrics, each declared once: its column in results.csv (and key in an evaluate task's
metrics.json), how a point's seeds aggregate, the law fitted to its curve against Dp, how the report names
and prints it, which direction is better, and whether it enters the correlations with the upstream loss.

Every stage that handles metrics reads this declaration, never a list of its own: evaluate checks that it
computed each one, collect copies each into the table (pipeline/results.py derives the columns), the fit stage
fits and correlates them, the report and its figures name and print them. Adding a metric is an entry in
`METRICS` plus its computation in pipeline/evaluate.py (docs/ARCHITECTURE.md, "How to add a metric").

Readers look the registry up when they run (`METRICS[name]`, `curve_metrics()`), not at import, so a test can
declare a metric with `monkeypatch.setitem(METRICS, ...)`. A leaf: stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str  # its key in metrics.json and its column in results.csv (the second test split's: other_<name>)
    label: str  # its short name in the report's sentences and table headers
    title: str  # the heading of its fitted law in the report
    axis: str  # its axis label in the figures
    higher_is_better: bool  # which direction is better (a good upstream predictor correlates negatively)
    seeds: str = "mean"  # how the seeds of one (curve, Dp) point aggregate (a pandas aggregation; spread: <name>_sd)
    # The law fitted to its curve against Dp per (task, mixture, model, method, Df): a one-input name in
    # pipeline.scaling.LAWS, None for no per-curve fit. The fit config's `fit.<name>_law` and `fit.<name>_delta`
    # override the law and its Huber delta where FitConfig has those keys (bleu and ce: FitConfig.curve_laws).
    law: str | None = None
    delta: float | None = None
    correlate: bool = True  # enters correlations.csv against the upstream losses (the report's question 1)
    required: bool = False  # a results table without this column cannot be fitted (results.required())
    digits: int = 4  # significant digits in the report's tables


# In the order of the table's columns.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("bleu", "BLEU", "BLEU", "BLEU", higher_is_better=True, law="bleu_log", required=True),
    Metric("chrf", "chrF", "chrF", "chrF", higher_is_better=True),
    Metric("ce", "CE", "Cross-entropy", "downstream cross-entropy (nats/token)", higher_is_better=False,
           law="power", required=True),
)}


def names() -> tuple[str, ...]:
    """Every declared metric, in the table's order."""
    return tuple(METRICS)


def curve_metrics() -> tuple[str, ...]:
    """The metrics fitted per curve against Dp, each by its own law (FitConfig.curve_laws gives the laws)."""
    return tuple(m.name for m in METRICS.values() if m.law is not None)


def corr_metrics() -> tuple[str, ...]:
    """The metrics correlated with the upstream losses (correlations.csv)."""
    return tuple(m.name for m in METRICS.values() if m.correlate)


def required_metrics() -> tuple[str, ...]:
    """The metrics a results table must have (and a row must have finite to be fitted)."""
    return tuple(m.name for m in METRICS.values() if m.required)
