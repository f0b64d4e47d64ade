"""Command line: fit one law to columns of a CSV.

    python -m pipeline.scaling fit --csv FILE --law chinchilla --x N_params,D_tokens --y loss \\
        [--where "epoch_used == 1"] [--holdout "D_tokens > 1e11"] [--delta 1e-3] [--bootstrap 200] \\
        [--opt q0=0.25] [--seed 0] [--json]

Exit status: 0 fitted, 1 the fit could not be made (the reason is printed), 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd

from .fit import fit
from .laws import LAWS


class BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pipeline.scaling", description="Fit a scaling law to a CSV.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    f = sub.add_parser("fit", help="fit one law")
    f.add_argument("--csv", required=True, help="input table")
    f.add_argument("--law", required=True, help=f"one of: {', '.join(LAWS)}")
    f.add_argument("--x", required=True, help="comma-separated input column(s)")
    f.add_argument("--y", required=True, help="output column")
    f.add_argument("--where", help="pandas query selecting the rows to use")
    f.add_argument("--holdout", help="pandas query selecting, among those, the rows to hold out")
    f.add_argument("--delta", type=float, help="Huber delta (default: the law's)")
    f.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples for intervals")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="law option, e.g. q0=0.25")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _query(df: pd.DataFrame, expr: str, flag: str) -> pd.Series:
    try:
        mask = df.eval(expr)
    except Exception as e:  # pandas raises many kinds for a bad expression
        raise BadInput(
            f"{flag} {expr!r} is not a valid expression: {type(e).__name__}: {e}".splitlines()[0]
        ) from e
    if not isinstance(mask, pd.Series) or mask.dtype != bool:
        raise BadInput(f"{flag} {expr!r} does not give True/False per row")
    return mask


def _options(pairs: list[str]) -> dict:
    opts = {}
    for kv in pairs:
        key, sep, val = kv.partition("=")
        if not sep:
            raise BadInput(f"--opt {kv!r} must be KEY=VALUE")
        try:
            opts[key] = float(val)
        except ValueError:
            opts[key] = val
    return opts


def _load(a: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        df = pd.read_csv(a.csv)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read --csv {a.csv}: {e}".splitlines()[0]) from e
    xcols = [c.strip() for c in a.x.split(",") if c.strip()]
    missing = [c for c in [*xcols, a.y] if c not in df.columns]
    if missing:
        raise BadInput(
            f"column(s) {', '.join(missing)} not in {a.csv}; it has: {', '.join(map(str, df.columns))}"
        )
    if a.where:
        df = df[_query(df, a.where, "--where")]
    if len(df) == 0:
        raise BadInput(f"no rows selected{f' by --where {a.where!r}' if a.where else f' in {a.csv}'}")
    hold = _query(df, a.holdout, "--holdout").to_numpy() if a.holdout else None
    try:
        x, y = df[xcols].to_numpy(dtype=float), df[a.y].to_numpy(dtype=float)
    except ValueError as e:
        raise BadInput(f"non-numeric values in the x or y columns: {e}".splitlines()[0]) from e
    return x, y, hold


def _num(v: float) -> str:
    return f"{v:.8g}" if math.isfinite(v) else str(v)


def _print(res) -> None:
    delta = "least squares" if math.isinf(res.delta) else f"Huber delta {res.delta:g}"
    print(f"law {res.law}: {'ok' if res.ok else 'FAILED: ' + str(res.reason)}")
    print(f"  {res.to_dict()['formula']}")
    print(f"points fitted {res.n_fit}, objective {_num(res.objective)} ({delta})")
    if not res.ok:
        return
    for k, v in res.params.items():
        lo_hi = res.intervals.get(k)
        ci = f"  {res.level:.0%} interval [{_num(lo_hi[0])}, {_num(lo_hi[1])}]" if lo_hi else ""
        print(f"  {k:>8} = {_num(v)}{ci}")
    if res.intervals:
        print(f"bootstrap resamples: {res.n_boot}")
    if res.holdout:
        print(f"held out {len(res.holdout)}:  x | y | pred | abs_err | rel_err")
        for h in res.holdout:
            print(
                f"  {h['x']} | {_num(h['y'])} | {_num(h['pred'])} | {_num(h['abs_err'])} | {h['rel_err']:.2%}"
            )


def main(argv: list[str] | None = None) -> int:
    try:
        a = _parser().parse_args(argv)
        if a.law not in LAWS:
            raise BadInput(f"unknown law {a.law!r}; known: {', '.join(LAWS)}")
        if a.bootstrap < 0:
            raise BadInput("--bootstrap must be >= 0")
        x, y, hold = _load(a)
        try:
            res = fit(
                a.law,
                x,
                y,
                holdout=hold,
                delta=a.delta,
                bootstrap=a.bootstrap,
                seed=a.seed,
                **_options(a.opt),
            )
        except ValueError as e:  # unknown law option or a bad option value
            raise BadInput(str(e)) from e
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res.to_dict(), allow_nan=False))
    else:
        _print(res)
    return 0 if res.ok else 1
