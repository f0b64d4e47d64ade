"""The interval method's measured calibration: the last recorded backtest (coverage.json), what the report
quotes of it, and the flag a fit carries when its law's intervals were measured to cover less than they claim.

Kept apart from `backtest` (which runs fits) so that `fit` can read it without an import cycle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

COVERAGE_FILE = Path(__file__).with_name("coverage.json")  # the last recorded backtest (see `record`)
GOAL = (0.80, 0.95)  # the coverage a 90% interval should reach on held-out runs (issue 17)
MIN_HELD_OUT = 10  # fewer held-out points than this do not measure a coverage


def law_label(law: str, options: dict) -> str:
    """The law's name in the backtest table: a non-default link makes the two-stage law a different model."""
    link = options.get("link", "linear")
    return f"{law} ({link})" if law == "two_stage" and link != "linear" else law


def record(table: pd.DataFrame, level: float, extrapolation: float, path: Path | None = None) -> None:
    """Keep a backtest's summary beside the code, for the report to quote (`interval_note`) and fits to
    check themselves against (`coverage_flags`)."""
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in table.to_dict("records")]
    (path or COVERAGE_FILE).write_text(json.dumps({"level": level, "extrapolation": extrapolation, "rows": rows}, indent=1) + "\n")


def recorded(path: Path | None = None) -> dict | None:
    path = path or COVERAGE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def coverage_flags(label: str, level: float, path: Path | None = None) -> list[str]:
    """A warning for each published dataset on which this law's `level` prediction intervals were measured to
    cover less than GOAL's lower end of at least MIN_HELD_OUT held-out points: there they are too narrow.
    (Over-coverage is conservative and not flagged; coverage measured at another level says nothing here.)"""
    rec = recorded(path)
    if rec is None or rec.get("level") != level:
        return []
    return [
        f"backtested, this law's {level:.0%} prediction intervals covered {r['coverage']:.0%} of {r['held out']} "
        f"held-out points on {r['dataset']} (goal {GOAL[0]:.0%}–{GOAL[1]:.0%}; docs/fitting.md): beyond the fit "
        "range they are too narrow"
        for r in rec["rows"]
        if r["law"] == label and r.get("coverage") is not None and r["held out"] >= MIN_HELD_OUT
        and r["coverage"] < GOAL[0]
    ]


def interval_note(method: str, level: float, laws: tuple[str, ...] = ("bleu_log", "power")) -> str:
    """One sentence on what the report's brackets and bands are, with their measured coverage where the
    backtest recorded it for these laws at this level."""
    if method == "none":
        return "No intervals were computed (fit.interval=none)."
    if method == "bootstrap":
        what = f"{level:.0%} bootstrap percentile intervals (points resampled and refitted; refused on too few points)"
    else:
        what = (f"{level:.0%} intervals from the Laplace approximation, widened by each law's own extrapolation "
                f"errors inside its fit")
    s = f"Brackets and bands are {what}; 'unbounded' where the data do not bound a parameter."
    rec = recorded()
    if method != "laplace" or rec is None:
        return s + " Their coverage has not been measured."
    if rec.get("level") != level:
        return s + f" Their coverage was measured at {rec.get('level'):.0%}, not at this level."
    got = [f"{r['coverage']:.0%} of {r['held out']} ({r['dataset']}, {r['law']})" for r in rec["rows"]
           if r["law"] in laws and r.get("coverage") is not None and r["held out"]]
    if not got:
        return s
    return s + (f" Backtested on larger runs than they were fitted on (up to {rec['extrapolation']:g}×), the "
                f"prediction intervals covered {', '.join(got)} held-out points (docs/fitting.md).")
