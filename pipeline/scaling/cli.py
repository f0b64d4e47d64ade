"""Command line: fit one law to columns of a CSV, predict or invert a fit, backtest the interval method.

    python -m pipeline.scaling fit --csv FILE --law chinchilla --x N_params,D_tokens --y loss \\
        [--where "epoch_used == 1"] [--holdout "D_tokens > 1e11"] [--delta 1e-3] \\
        [--interval laplace|bootstrap|none] [--bootstrap 200] [--opt q0=0.25] [--seed 0] [--json]
    python -m pipeline.scaling predict --fits reports/en_de/fits.json --at dp=1e9 [--target bleu=25] \\
        [--select law=bleu_log --select mixture=en50_de50] [--json]
    python -m pipeline.scaling predict --csv FILE --law bleu_log --x dp --y bleu --at dp=1e9 [--target bleu=25]
    python -m pipeline.scaling backtest [--data DIR] [--fits reports/en_de/fits.json ...] [--level 0.9] [--out points.csv]

Exit status: 0 done, 1 the fit could not be made / no fit to predict from (the reason is printed), 2 bad input
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import pandas as pd

from . import backtest, calibration
from .fit import INTERVALS, FitResult, fit
from .laws import LAWS
from .predict import invert, predict_at


class BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        raise BadInput(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m pipeline.scaling", description="Fit a scaling law to a CSV.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    f = sub.add_parser("fit", help="fit one law")
    _fit_args(f, required=True)
    f.add_argument("--json", action="store_true", help="print one JSON object")
    pr = sub.add_parser("predict", help="predict (and invert) a fitted law, with intervals")
    pr.add_argument("--fits", help="a fits.json written by the fit stage (or by `fit --json`)")
    _fit_args(pr, required=False)
    pr.add_argument("--at", required=True, help="inputs, e.g. dp=1e9 or N_params=1e9,D_tokens=2e10")
    pr.add_argument("--target", help="NAME=VALUE: the input (the first in --at) at which the law reaches VALUE")
    pr.add_argument("--select", action="append", default=[], metavar="KEY=VALUE",
                    help="keep the fits.json records with this field value (law, metric, mixture, ...)")
    pr.add_argument("--json", action="store_true", help="print one JSON object per prediction")
    b = sub.add_parser("backtest", help="coverage of the prediction intervals on published data")
    b.add_argument("--data", default=str(backtest.default_data()), help="the shared data folder")
    b.add_argument("--fits", action="append", default=[],
                   help="a fits.json of one of our sweeps (the fit stage's): its per-curve fits are backtested too")
    b.add_argument("--level", type=float, default=0.9)
    b.add_argument("--out", help="write every held-out point to this CSV")
    b.add_argument("--record", action="store_true",
                   help="keep the summary beside the code (pipeline/scaling/coverage.json) for the report to quote")
    return p


def _fit_args(f: argparse.ArgumentParser, required: bool) -> None:
    f.add_argument("--csv", required=required, help="input table")
    f.add_argument("--law", required=required, help=f"one of: {', '.join(LAWS)}")
    f.add_argument("--x", required=required, help="comma-separated input column(s)")
    f.add_argument("--y", required=required, help="output column")
    f.add_argument("--where", help="pandas query selecting the rows to use")
    f.add_argument("--holdout", help="pandas query selecting, among those, the rows to hold out")
    f.add_argument("--delta", type=float, help="Huber delta (default: the law's)")
    f.add_argument("--interval", default="laplace", help=f"one of: {', '.join(INTERVALS)}")
    f.add_argument("--bootstrap", type=int, default=200, help="resamples for --interval bootstrap")
    f.add_argument("--level", type=float, default=0.9, help="interval level")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="law option, e.g. q0=0.25")


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


def _bound(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else "unbounded"


def _print(res) -> None:
    delta = "least squares" if math.isinf(res.delta) else f"Huber delta {res.delta:g}"
    print(f"law {res.law}: {'ok' if res.ok else 'FAILED: ' + str(res.reason)}")
    print(f"  {res.to_dict()['formula']}")
    print(f"points fitted {res.n_fit}, objective {_num(res.objective)} ({delta})")
    if not res.ok:
        return
    if res.form:
        print(f"  form: {res.form}")
    for k, v in res.params.items():
        lo_hi = res.intervals.get(k)
        ci = f"  {res.level:.0%} interval [{_bound(lo_hi[0])}, {_bound(lo_hi[1])}]" if lo_hi else ""
        print(f"  {k:>8} = {_num(v)}{ci}")
    if res.intervals:
        how = f"{res.n_boot} bootstrap resamples" if res.interval == "bootstrap" else (
            f"Laplace, widened ×{res.inflation:.3g} by {res.n_checks} inner extrapolation check(s)")
        print(f"intervals: {how}")
    for flag in res.flags:
        print(f"  ! {flag}")
    if res.holdout:
        print(f"held out {len(res.holdout)}:  x | y | pred [{res.level:.0%} interval] | abs_err | rel_err")
        for h in res.holdout:
            print(
                f"  {h['x']} | {_num(h['y'])} | {_num(h['pred'])} [{_bound(h['lo'])}, {_bound(h['hi'])}] | "
                f"{_num(h['abs_err'])} | {h['rel_err']:.2%}"
            )


def _pairs(text: str, flag: str) -> dict[str, float]:
    out = {}
    for kv in (t.strip() for t in text.split(",") if t.strip()):
        key, sep, val = kv.partition("=")
        try:
            out[key.strip()] = float(val)
        except ValueError:
            sep = ""
        if not sep:
            raise BadInput(f"{flag} {kv!r} must be NAME=NUMBER")
    return out


def _fit_csv(a: argparse.Namespace) -> FitResult:
    if a.law not in LAWS:
        raise BadInput(f"unknown law {a.law!r}; known: {', '.join(LAWS)}")
    if a.bootstrap < 0:
        raise BadInput("--bootstrap must be >= 0")
    x, y, hold = _load(a)
    try:
        return fit(a.law, x, y, holdout=hold, delta=a.delta, interval=a.interval, bootstrap=a.bootstrap,
                   seed=a.seed, level=a.level, **_options(a.opt))
    except ValueError as e:  # unknown law option or a bad option value
        raise BadInput(str(e)) from e


def _records(a: argparse.Namespace) -> list[tuple[str, list[str], str, FitResult]]:
    """(label, input names, output name, result) of every fit to predict from."""
    if a.csv:
        res = _fit_csv(a)
        return [(f"{a.law} on {a.csv}", [c.strip() for c in a.x.split(",")], a.y, res)]
    if not a.fits:
        raise BadInput("predict needs --fits FILE or --csv FILE --law --x --y")
    try:
        with open(a.fits) as fh:
            recs = json.load(fh)
    except (OSError, ValueError) as e:
        raise BadInput(f"cannot read --fits {a.fits}: {e}".splitlines()[0]) from e
    recs = recs if isinstance(recs, list) else [recs]
    want = {}
    for kv in a.select:
        key, sep, val = kv.partition("=")
        if not sep:
            raise BadInput(f"--select {kv!r} must be KEY=VALUE")
        want[key] = val
    out = []
    for r in recs:
        if not (isinstance(r, dict) and r.get("ok") and r.get("law") in LAWS and r.get("raw")):
            continue
        if any(str(r.get(k)) != v for k, v in want.items()):
            continue
        keys = ("task", "mixture", "model", "method", "df", "metric")
        label = " ".join([r["law"], *(f"{k}={r[k]}" for k in keys if r.get(k) is not None)])
        # the record's inputs: "dp", "params,dp", or a route "dp>upstream_mixture" (Dp, through that loss)
        names = str(r.get("x") or "x").replace(">", ",").split(",")
        out.append((label, names, str(r.get("metric") or "y"), FitResult.from_dict(r)))
    return out


def _predict(a: argparse.Namespace) -> int:
    at = _pairs(a.at, "--at")
    target = _pairs(a.target, "--target") if a.target else {}
    if len(target) > 1:
        raise BadInput("--target takes one NAME=VALUE")
    recs = _records(a)
    shown = []
    for label, names, yname, res in recs:
        if not res.ok:
            print(f"{label}: FAILED: {res.reason}")
            continue
        if not set(at) <= set(names) or (target and next(iter(target)) != yname):
            continue
        x = [at.get(n, math.nan) for n in names]
        p = predict_at(res, x)
        where = ", ".join(f"{n}={v:g}" for n, v in zip(names, x) if n in at)
        line = {"fit": label, "at": dict(zip(names, x)), "value": p.value, "lo": p.lo, "hi": p.hi,
                "curve_lo": p.curve_lo, "curve_hi": p.curve_hi, "level": p.level, "flags": res.flags}
        text = (f"{label}: {yname} at {where} = {p.value:.4g}, {p.level:.0%} interval for a measurement "
                f"[{_bound(p.lo)}, {_bound(p.hi)}] (curve [{_bound(p.curve_lo)}, {_bound(p.curve_hi)}])")
        if target:
            col = names.index(next(iter(at)))
            inv = invert(res, next(iter(target.values())), col, fixed=x)
            line["inverse"] = {"input": names[col], "reached": inv.reached, "x": inv.x, "lo": inv.lo,
                               "hi": inv.hi, "message": inv.message}
            text += f"\n  {names[col]} for {yname}={inv.target:g}: " + (
                f"{inv.x:.4g}, {inv.level:.0%} interval [{_bound(inv.lo)}, {_bound(inv.hi)}]" if inv.reached
                else inv.message.replace("x between", f"{names[col]} between"))
        shown.append(line)
        print(json.dumps(line, default=_json_num) if a.json else text)
    if not shown:
        print(f"no fit to predict from: {len(recs)} fitted law(s) read, none with inputs {', '.join(at)}"
              + (f" and output {next(iter(target))}" if target else ""))
        return 1
    return 0


def _json_num(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _backtest(a: argparse.Namespace) -> int:
    from pathlib import Path

    if not 0 < a.level < 1:
        raise BadInput("--level must be in (0, 1)")
    root = Path(a.data)
    if not root.is_dir():
        raise BadInput(f"--data {root} is not a folder (the shared data: chinchilla/, nmt-gordon2021/, ...)")
    ours = []
    for f in map(Path, a.fits):
        try:
            recs = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"cannot read --fits {f}: {e}".splitlines()[0]) from e
        if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
            raise BadInput(f"--fits {f} is not a fits.json of the fit stage (a list of fit records)")
        ours += list(backtest.fit_records(recs, f"ours: {f.parent.name or f.name}"))
    points = backtest.run(list(backtest.cases(root, ours)), a.level)
    if a.out:
        points.to_csv(a.out, index=False)
    table = backtest.summary(points)
    if a.record:
        calibration.record(table, a.level, backtest.EXTRAPOLATION)
    print(backtest.markdown(table, a.level))
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        a = _parser().parse_args(argv)
        if a.cmd == "predict":
            return _predict(a)
        if a.cmd == "backtest":
            return _backtest(a)
        res = _fit_csv(a)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res.to_dict(), allow_nan=False))
    else:
        _print(res)
    return 0 if res.ok else 1
