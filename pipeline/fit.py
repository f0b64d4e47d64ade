"""Stage `fit`: the scaling laws of a results table, and the three research questions of issue #10.

Per curve (task, mixture, model, method, Df): BLEU vs Dp with Isik et al.'s log-law, CE vs Dp with the power
law, each fitted on the smaller rungs and scored on the `holdout_largest` largest (extrapolation error), with
bootstrap intervals, and the misalignment verdict where BLEU and CE disagree. Then:
  1. upstream loss -> downstream: Pearson and Spearman correlations of BLEU, chrF and CE with the upstream
     (pretraining held-out) loss, with bootstrap intervals (`correlations.csv`); and the two-stage route to
     the held-out BLEU (Dp -> upstream loss by the power law, upstream loss -> BLEU by a linear link) beside
     the direct log-law, both fitted on the same rungs;
  2. model size: Chinchilla's E + A/N^α + B/Dp^β on the upstream loss against (params, Dp), and Zhang et al.'s
     A·N^-α·Df^-β + E on CE against (params, Df) at the largest Dp, where there are two or more sizes;
  3. finetuning method: the gap between each method and full finetuning per curve (`methods.csv`), and
     whether their fitted exponents' bootstrap intervals overlap.
Zhang et al.'s joint law over (Dp, Df) is fitted per (task, mixture, model, method) where there are enough Df.
Reads only the results table, so it runs anywhere (on a table copied back from a cluster). A fit that cannot
be made is a row with `ok = False` and its reason, never an exception; rows that cannot be used are listed.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_write_json, atomic_write_text
from pipeline.config import FitConfig
from pipeline.metrics import corr_metrics, curve_metrics
from pipeline.results import (  # noqa: F401 (fit.load_results: its old home)
    GROUP,
    UPSTREAM,
    ReadSpec,
    ResultsError,
    excluded,
    is_ok,
    load_results,
    seed_means,
    usable,
)
from pipeline.tracking import make_tracker, read_stage_run_id
from pipeline.typed import to_dict

log = logging.getLogger(__name__)

MIN_DF_FOR_JOINT = 3
MIN_MODELS_FOR_SIZE = 2
REFERENCE_METHOD = "full"


def _holdout_mask(n: int, k: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if 0 < k < n:
        mask[n - k:] = True
    return mask


def _curve_grid(x: np.ndarray) -> np.ndarray:
    return np.geomspace(max(x.min() / 2, 1.0), x.max() * 4, 60) if len(x) else np.array([])


def _interval_args(fit_cfg: FitConfig) -> dict[str, Any]:
    """The fitter's interval settings from the `fit:` config."""
    return {"interval": fit_cfg.interval, "level": fit_cfg.level, "bootstrap": fit_cfg.bootstrap}


def fit_group(points: pd.DataFrame, metric: str, law: str, delta: float, holdout: int, fit_cfg: FitConfig,
              seed: int = 0) -> dict[str, Any]:
    """One law on one curve (Dp > 0), with the largest `holdout` points held out."""
    from pipeline.scaling import fit

    pts = points[points["dp"] > 0]
    x = pts["dp"].to_numpy(float)
    y = pts[metric].to_numpy(float)
    res = fit(law, x, y, holdout=_holdout_mask(len(x), holdout), delta=delta, seed=seed, **_interval_args(fit_cfg))
    return _with_curve(res, x, y, holdout, "dp")


def _with_curve(res, x: np.ndarray, y: np.ndarray, holdout: int, xname: str, xs: np.ndarray | None = None
                ) -> dict[str, Any]:
    """The fit's record with its curve and band over Dp, the next rung's prediction and the points. `xs`: the
    law's full inputs when it takes more than Dp (they are NaN beyond the data: the law predicts from Dp alone)."""
    d = res.to_dict()
    grid = _curve_grid(x)
    gx = grid if xs is None else np.c_[grid, np.full((len(grid), xs.shape[1] - 1), np.nan)]
    d["x"] = xname
    d["curve"] = {"x": grid.tolist(), "y": res.predict(gx).tolist() if res.ok else []}
    if res.ok and res.intervals:
        lo, hi = res.band(gx)
        d["curve"]["lo"], d["curve"]["hi"] = np.asarray(lo).tolist(), np.asarray(hi).tolist()
    next_rung = float(x.max() * 2) if len(x) else math.nan
    nx = np.array([next_rung]) if xs is None else np.array([[next_rung, *([np.nan] * (xs.shape[1] - 1))]])
    d["next_rung"] = next_rung
    d["next_rung_pred"] = float(res.predict(nx)[0]) if res.ok else math.nan
    d["points"] = {"x": x.tolist(), "y": y.tolist(), "holdout": _holdout_mask(len(x), holdout).tolist()}
    return d


def two_stage_route(points: pd.DataFrame, upstream: str, holdout: int, fit_cfg: FitConfig) -> dict[str, Any]:
    """BLEU from Dp through the upstream loss: the `two_stage` law (Dp -> loss by the power law with E, loss ->
    BLEU by a linear link), fitted on the same smaller rungs as the direct log-law; a held-out prediction uses
    no measurement at its Dp (the loss there is the stage-1 prediction too), so the two routes compare fairly."""
    from pipeline.scaling import fit

    pts = points[points["dp"] > 0]
    x, up, y = (pts[c].to_numpy(float) for c in ("dp", UPSTREAM[upstream], "bleu"))
    xname = f"dp>upstream_{upstream}"  # the route's name in the report: Dp, through the upstream loss
    if not np.isfinite(up).all():
        hold = _holdout_mask(len(x), holdout)
        return {"law": "two_stage", "x": xname, "ok": False, "n_fit": int((~hold).sum()), "params": {},
                "holdout": [], "points": {"x": x.tolist(), "y": y.tolist(), "holdout": hold.tolist()},
                "reason": f"no upstream loss ({upstream}) at every rung (a table from before it was recorded?)"}
    xs = np.c_[x, up]
    res = fit("two_stage", xs, y, holdout=_holdout_mask(len(x), holdout), **_interval_args(fit_cfg))
    rec = _with_curve(res, x, y, holdout, xname, xs)
    for h in rec["holdout"]:  # a held-out rung is its Dp, as for the direct law (the loss there is not used)
        h["x"] = h["x"][0]
    return rec


def fit_table(df: pd.DataFrame, fit_cfg: FitConfig) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """fits.csv rows and the full fit records (curves, points, verdicts, excluded rows) for the report."""
    from pipeline.scaling import misalignment

    bad = excluded(df)
    records: list[dict[str, Any]] = [{"metric": "excluded", "law": None, **r} for r in bad.to_dict("records")]
    if len(bad):
        log.warning("fit: %d row(s) left out: %s", len(bad), "; ".join(sorted(set(bad["why"]))))
    pts = seed_means(usable(df))
    rows = []
    hold = fit_cfg.holdout_largest
    bleu_law, bleu_delta = fit_cfg.curve_law("bleu")  # the misalignment verdict refits BLEU by the same law
    for key, g in pts.groupby(GROUP, dropna=False):
        meta = {**dict(zip(GROUP, key)), "alignment": float(g["alignment"].iloc[0])}
        base = g[g["dp"] == 0]
        for metric, law, delta in fit_cfg.curve_laws():
            rec = fit_group(g, metric, law, delta, hold, fit_cfg)
            rec.update(meta, metric=metric, baseline=float(base[metric].iloc[0]) if len(base) else math.nan)
            records.append(rec)
            rows.append(_row(rec))
        for up in UPSTREAM:
            rec = {**two_stage_route(g, up, hold, fit_cfg), **meta, "metric": "bleu"}
            records.append(rec)
            rows.append(_row(rec))
        curve = g[g["dp"] > 0]
        n_fit = max(len(curve) - hold, 1)
        verdict = misalignment(curve["dp"].to_numpy(float), curve["bleu"].to_numpy(float), curve["ce"].to_numpy(float),
                               n_fit=n_fit, max_rel_err=fit_cfg.good_rel_err, law=bleu_law, delta=bleu_delta)
        records.append({**meta, "metric": "verdict", "law": "misalignment", **_as_dict(verdict)})
    for rec in _joint_fits(pts, fit_cfg):
        records.append(rec)
        rows.append(_row(rec))
    return pd.DataFrame(rows), records


def _joint_fits(pts: pd.DataFrame, fit_cfg: FitConfig) -> list[dict[str, Any]]:
    """The laws over two inputs: Zhang et al. over (Dp, Df) per model; Chinchilla over (params, Dp) on the
    upstream loss and Zhang et al. over (params, Df) at the largest Dp, across model sizes."""
    from pipeline.scaling import fit

    def attempt(rec: dict[str, Any], law: str, x: np.ndarray, y: np.ndarray, holdout: np.ndarray | None = None) -> None:
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            rec.update(ok=False, reason="missing values (parameter counts or upstream losses) in the results table")
            return
        res = fit(law, x, y, holdout=holdout, delta=fit_cfg.ce_delta, **_interval_args(fit_cfg))
        rec.update(res.to_dict())

    out = []
    curves = pts[pts["dp"] > 0]
    for key, g in curves.groupby(["task", "mixture", "model", "method"], dropna=False):
        rec = {**dict(zip(["task", "mixture", "model", "method"], key)), "df": "all", "metric": "ce", "law": "joint",
               "x": "dp,df", "alignment": float(g["alignment"].iloc[0])}
        n_df = g["df"].nunique()
        if n_df < MIN_DF_FOR_JOINT:
            rec.update(ok=False, reason=f"needs at least {MIN_DF_FOR_JOINT} Df values, the sweep has {n_df}")
        else:
            attempt(rec, "joint", g[["dp", "df"]].to_numpy(float), g["ce"].to_numpy(float))
        out.append(rec)
    for (task, mix), g in curves.groupby(["task", "mixture"], dropna=False):
        meta = {"task": task, "mixture": mix, "alignment": float(g["alignment"].iloc[0])}
        n_models = g["model"].nunique()
        too_few = f"needs at least {MIN_MODELS_FOR_SIZE} model sizes, the sweep has {n_models}"
        # The upstream loss depends on (model, Dp) only: one point each, whatever the method and Df.
        up = g.groupby(["model", "dp"]).agg(params=("params", "first"), upstream=("upstream", "mean")).reset_index()
        rec = {**meta, "model": "all", "method": "all", "df": "all", "metric": "upstream", "law": "chinchilla",
               "x": "params,dp"}
        if n_models < MIN_MODELS_FOR_SIZE:
            rec.update(ok=False, reason=too_few)
        else:
            # hold out each size's largest Dp when the rest still over-determines the 5 parameters
            largest = up["dp"] == up.groupby("model")["dp"].transform("max")
            holdout = largest.to_numpy() if (~largest).sum() >= 6 else None
            attempt(rec, "chinchilla", up[["params", "dp"]].to_numpy(float), up["upstream"].to_numpy(float), holdout)
        out.append(rec)
        for method, gm in g.groupby("method", dropna=False):
            top = gm[gm["dp"] == gm.groupby("model")["dp"].transform("max")]
            rec = {**meta, "model": "all", "method": method, "df": "all", "metric": "ce", "law": "joint",
                   "x": "params,df"}
            n_df = top["df"].nunique()
            if n_models < MIN_MODELS_FOR_SIZE:
                rec.update(ok=False, reason=too_few)
            elif n_df < 2:
                rec.update(ok=False, reason=f"needs at least 2 Df values, the sweep has {n_df}")
            else:
                attempt(rec, "joint", top[["params", "df"]].to_numpy(float), top["ce"].to_numpy(float))
            out.append(rec)
    return out


# ------------------------------------------------------------------------------ correlations (Q1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of (B, n) arrays; NaN where either row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(all="ignore"):
        return np.where(den > 1e-12, (a * b).sum(1) / den, np.nan)


def correlation(x: np.ndarray, y: np.ndarray, bootstrap: int, seed: int = 0, level: float = 0.9) -> dict[str, Any]:
    """Pearson and Spearman correlation of y with x, with bootstrap percentile intervals (pairs resampled)."""
    from scipy.stats import rankdata

    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, float)[keep], np.asarray(y, float)[keep]
    out: dict[str, Any] = {"n": int(len(x)), "reason": None}
    for k in ("pearson", "spearman"):
        out |= {k: math.nan, f"{k}_lo": math.nan, f"{k}_hi": math.nan}
    out["n_boot"] = 0
    if len(x) < 3:
        out["reason"] = f"needs at least 3 points, has {len(x)}"
        return out
    if np.ptp(y) <= 1e-12 * max(1.0, np.abs(y).max()) or np.ptp(x) <= 1e-12 * max(1.0, np.abs(x).max()):
        out["reason"] = "constant over these points" + (f" ({y[0]:.4g})" if np.ptp(y) == 0 else "")
        return out
    out["pearson"] = float(_pearson_rows(x[None], y[None])[0])
    out["spearman"] = float(_pearson_rows(rankdata(x)[None], rankdata(y)[None])[0])
    if bootstrap > 0:
        idx = np.random.default_rng(seed).integers(0, len(x), (bootstrap, len(x)))
        bx, by = x[idx], y[idx]
        boots = {"pearson": _pearson_rows(bx, by),
                 "spearman": _pearson_rows(rankdata(bx, axis=1), rankdata(by, axis=1))}
        q = ((1 - level) / 2, (1 + level) / 2)
        for k, v in boots.items():
            v = v[np.isfinite(v)]
            out["n_boot"] = int(len(v))
            if len(v):
                out[f"{k}_lo"], out[f"{k}_hi"] = (float(u) for u in np.quantile(v, q))
    return out


def correlation_table(df: pd.DataFrame, bootstrap: int, seed: int = 0) -> pd.DataFrame:
    """correlations.csv: each downstream metric against each upstream loss over the Dp > 0 points, per curve
    (task, mixture, model, method, Df) and pooled over mixtures and Df per (task, model, method)."""
    pts = seed_means(usable(df))
    pts = pts[pts["dp"] > 0]
    rows = []
    pooled = pts.assign(mixture="all", df="all")
    for g_key, g in [*pts.groupby(GROUP, dropna=False), *pooled.groupby(GROUP, dropna=False)]:
        for up, col in UPSTREAM.items():
            for metric in corr_metrics():
                rows.append({**dict(zip(GROUP, g_key)), "upstream": up, "metric": metric,
                             **correlation(g[col].to_numpy(float), g[metric].to_numpy(float), bootstrap, seed)})
    cols = [*GROUP, "upstream", "metric", "n", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo",
            "spearman_hi", "n_boot", "reason"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------ methods (Q3)


def method_table(df: pd.DataFrame, fits: pd.DataFrame, fit_cfg: FitConfig) -> pd.DataFrame:
    """methods.csv: per curve (task, mixture, model, Df) and metric, each method against full finetuning:
    the gap (method − full) at Dp = 0, at the smallest and the largest Dp > 0, where it is largest, and
    whether the two fitted laws' exponents have disjoint bootstrap intervals."""
    pts = seed_means(usable(df))
    rows = []
    laws = {metric: law for metric, law, _ in fit_cfg.curve_laws()}
    for key, g in pts.groupby(["task", "mixture", "model", "df"], dropna=False):
        methods = sorted(g["method"].unique())
        ref = REFERENCE_METHOD if REFERENCE_METHOD in methods else methods[0]
        for method in (m for m in methods if m != ref):
            a = g[g["method"] == ref].set_index("dp")
            b = g[g["method"] == method].set_index("dp")
            common = sorted(set(a.index) & set(b.index))
            for metric in curve_metrics():
                row = {**dict(zip(["task", "mixture", "model", "df"], key)), "metric": metric, "method": method,
                       "reference": ref, "n_dp": len(common)}
                d = pd.Series({dp: b.at[dp, metric] - a.at[dp, metric] for dp in common}, dtype=float).dropna()
                pos = d[d.index > 0]
                row["delta_dp0"] = float(d.get(0, math.nan))
                row["delta_first"] = float(pos.iloc[0]) if len(pos) else math.nan
                row["delta_last"] = float(pos.iloc[-1]) if len(pos) else math.nan
                row["delta_mean"] = float(pos.mean()) if len(pos) else math.nan
                row["dp_maxabs"] = float(d.abs().idxmax()) if len(d) else math.nan
                row["delta_maxabs"] = float(d[row["dp_maxabs"]]) if len(d) else math.nan
                row["law"] = laws[metric]
                for who, m in (("ref", ref), ("", method)):
                    f = fits[(fits["law"] == laws[metric]) & (fits["task"] == key[0]) & (fits["mixture"] == key[1])
                             & (fits["model"] == key[2]) & (fits["method"] == m)
                             & (fits["df"].astype(str) == str(key[3]))]
                    r = f.iloc[0] if len(f) else {}
                    ok = len(f) and is_ok(r["ok"])
                    pre = f"{who}_" if who else ""
                    row[f"{pre}ok"] = bool(ok)
                    for c in ("alpha", "ci_alpha_lo", "ci_alpha_hi", "holdout_mre"):
                        src = "p_alpha" if c == "alpha" else c
                        row[f"{pre}{c}"] = float(r[src]) if ok and src in f.columns else math.nan
                lo = [row["ref_ci_alpha_lo"], row["ci_alpha_lo"]]
                hi = [row["ref_ci_alpha_hi"], row["ci_alpha_hi"]]
                if all(math.isfinite(v) for v in lo + hi):
                    row["alpha_differs"] = bool(lo[0] > hi[1] or lo[1] > hi[0])
                else:
                    row["alpha_differs"] = None
                rows.append(row)
    return pd.DataFrame(rows)


def _as_dict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    from pipeline.scaling.fit import mean_rel_err

    row = {k: rec.get(k) for k in ("task", "mixture", "alignment", "model", "method", "df", "metric", "law", "x", "ok",
                                   "reason", "n_fit", "objective", "form")}
    # identifiability: the curve stands, these parameters do not (see pipeline.scaling.flags)
    row["flags"] = "; ".join(rec.get("flags") or [])
    hold = rec.get("holdout") or []
    row["n_holdout"] = len(hold)
    row["holdout_mae"] = float(np.mean([h["abs_err"] for h in hold])) if hold else math.nan
    row["holdout_mre"], undefined = mean_rel_err(hold)
    if undefined:  # reported beside the fit's own flags; the fit and its curve still stand
        row["flags"] = "; ".join(f for f in (row["flags"], undefined) if f)
    # the largest held-out Dp: where the routes to BLEU are compared
    last = max(hold, key=lambda h: np.atleast_1d(h["x"])[-1]) if hold and rec.get("x") != "params,dp" else None
    row["largest_dp"] = float(np.atleast_1d(last["x"])[0]) if last else math.nan
    row["largest_obs"] = last["y"] if last else math.nan
    row["largest_pred"] = last["pred"] if last else math.nan
    row["largest_abs_err"] = last["abs_err"] if last else math.nan
    row["largest_lo"], row["largest_hi"] = (last.get("lo"), last.get("hi")) if last else (math.nan, math.nan)
    for name, v in (rec.get("params") or {}).items():
        row[f"p_{name}"] = v
        lo_hi = (rec.get("intervals") or {}).get(name)
        if lo_hi:
            row[f"ci_{name}_lo"], row[f"ci_{name}_hi"] = lo_hi
    row["baseline"] = rec.get("baseline")
    row["next_rung"], row["next_rung_pred"] = rec.get("next_rung"), rec.get("next_rung_pred")
    return row


def run(task) -> None:
    spec: ReadSpec = task.spec
    out = Path(spec.reports_dir)
    _, df = spec.table()
    table, records = fit_table(df, spec.fit)
    corr = correlation_table(df, spec.fit.bootstrap)
    methods = method_table(df, table, spec.fit)
    for name, t in (("fits.csv", table), ("correlations.csv", corr), ("methods.csv", methods)):
        atomic_write_text(out / name, t.to_csv(index=False, float_format="%.10g"))
    atomic_write_json(out / "fits.json", json.loads(json.dumps(records, default=_json_default)))
    n_ok = int(table["ok"].fillna(False).astype(bool).sum()) if len(table) else 0
    with make_tracker(out, spec.tracking, run_id=read_stage_run_id("fit", spec.to_dict()),
                      name=getattr(task, "name", f"fit-{spec.sweep}"), config={"fit": to_dict(spec.fit)},
                      file="fit-metrics.jsonl", group=spec.sweep) as tracker:
        tracker.log({"fits": len(table), "fits_ok": n_ok, "cells_left_out": len(excluded(df)), **fit_metrics(table)},
                    step=0)
    log.info("fit %s: %d of %d fits succeeded -> %s", spec.sweep, n_ok, len(table), out / "fits.csv")


def fit_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Each fitted law's parameters and held-out errors under one flat key per law and curve, for the tracker."""
    out = {}
    for _, r in table.iterrows():
        if str(r["ok"]).lower() != "true":
            continue
        key = "/".join(str(r[c]) for c in ("law", "x", "task", "mixture", "model", "method")) + f"/df={r['df']}"
        for c in (c for c in table.columns if c.startswith("p_") or c in ("holdout_mae", "holdout_mre")):
            if isinstance(r[c], (int, float)) and math.isfinite(r[c]):
                out[f"{key}/{c.removeprefix('p_')}"] = float(r[c])
    return out


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.bool_):
        return bool(v)
    return str(v)
