"""Stage `fit`: the scaling laws of a results table, per (task, mixture, model, method, Df).

BLEU vs Dp with Isik et al.'s log-law, CE vs Dp with the power law, each fitted on the smaller rungs and
scored on the `holdout_largest` largest (extrapolation error), with bootstrap intervals; the misalignment
verdict where BLEU and CE disagree; Zhang et al.'s joint Dp x Df law where there are enough Df values.
Reads only the results table, so it runs anywhere (on a table copied back from a cluster). A fit that
cannot be made is a row with `ok = False` and its reason, never an exception.
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

log = logging.getLogger(__name__)

GROUP = ["task", "mixture", "model", "method", "df"]
REQUIRED = ["task", "mixture", "model", "dp", "df", "bleu", "ce", "status"]
MIN_DF_FOR_JOINT = 3


class ResultsError(ValueError):
    """A results table the fitter cannot read (missing columns, unreadable file)."""


def load_results(path: Path) -> pd.DataFrame:
    """Read a results table, old or new: missing optional columns get defaults; required ones must exist."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read the results table ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; a results table has {', '.join(REQUIRED)}")
    defaults = {"method": "full", "seed": 0, "selected": True, "alignment": np.nan, "src": None, "tgt": None,
                "upstream_loss_mixture": np.nan, "upstream_loss_tgt": np.nan, "params": np.nan}
    for k, v in defaults.items():
        if k not in df.columns:
            df[k] = v
    df["selected"] = df["selected"].astype(str).str.lower().isin(["true", "1"])
    return df


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluated, selected (learning-rate grid) rows with finite metrics; the rest is reported, not fitted."""
    ok = (df["status"] == "ok") & df["selected"]
    for c in ("bleu", "ce", "dp"):
        ok &= np.isfinite(pd.to_numeric(df[c], errors="coerce"))
    return df[ok].copy()


def seed_means(df: pd.DataFrame) -> pd.DataFrame:
    """One point per Dp: the mean over seeds, with its spread."""
    agg = df.groupby([*GROUP, "dp"], dropna=False).agg(
        bleu=("bleu", "mean"), bleu_sd=("bleu", "std"), ce=("ce", "mean"), ce_sd=("ce", "std"),
        n_seeds=("bleu", "size"), alignment=("alignment", "first"),
        upstream=("upstream_loss_mixture", "mean"), upstream_tgt=("upstream_loss_tgt", "mean")).reset_index()
    return agg.sort_values([*GROUP, "dp"])


def _holdout_mask(n: int, k: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if 0 < k < n:
        mask[n - k:] = True
    return mask


def fit_group(points: pd.DataFrame, metric: str, law: str, delta: float, holdout: int, bootstrap: int,
              seed: int = 0) -> dict[str, Any]:
    """One law on one curve (Dp > 0), with the largest `holdout` points held out."""
    from pipeline.scaling import fit

    pts = points[points["dp"] > 0]
    x = pts["dp"].to_numpy(float)
    y = pts[metric].to_numpy(float)
    res = fit(law, x, y, holdout=_holdout_mask(len(x), holdout), delta=delta, bootstrap=bootstrap, seed=seed)
    d = res.to_dict()
    grid = np.geomspace(max(x.min() / 2, 1.0), x.max() * 4, 60) if len(x) else np.array([])
    d["curve"] = {"x": grid.tolist(), "y": res.predict(grid).tolist() if res.ok else []}
    if res.ok and bootstrap:
        lo, hi = res.band(grid)
        d["curve"]["lo"], d["curve"]["hi"] = np.asarray(lo).tolist(), np.asarray(hi).tolist()
    next_rung = float(x.max() * 2) if len(x) else math.nan
    d["next_rung"] = next_rung
    d["next_rung_pred"] = float(res.predict(np.array([next_rung]))[0]) if res.ok else math.nan
    d["points"] = {"x": x.tolist(), "y": y.tolist(), "holdout": _holdout_mask(len(x), holdout).tolist()}
    return d


def fit_table(df: pd.DataFrame, fit_cfg: dict[str, Any]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """fits.csv rows and the full fit records (curves, points, verdicts) for the report."""
    from pipeline.scaling import misalignment

    pts = seed_means(usable(df))
    rows, records = [], []
    for key, g in pts.groupby(GROUP, dropna=False):
        meta = dict(zip(GROUP, key))
        base = g[g["dp"] == 0]
        for metric, law, delta in (("bleu", "bleu_log", fit_cfg["bleu_delta"]), ("ce", "power", fit_cfg["ce_delta"])):
            rec = fit_group(g, metric, law, delta, fit_cfg["holdout_largest"], fit_cfg["bootstrap"])
            rec.update(meta, metric=metric, alignment=float(g["alignment"].iloc[0]),
                       baseline=float(base[metric].iloc[0]) if len(base) else math.nan)
            records.append(rec)
            rows.append(_row(rec))
        curve = g[g["dp"] > 0]
        n_fit = max(len(curve) - fit_cfg["holdout_largest"], 1)
        verdict = misalignment(curve["dp"].to_numpy(float), curve["bleu"].to_numpy(float), curve["ce"].to_numpy(float),
                               n_fit=n_fit)
        records.append({**meta, "metric": "verdict", "law": "misalignment", **_as_dict(verdict)})
    # Zhang et al.'s joint law over (Dp, Df), per (task, mixture, model, method).
    for key, g in pts[pts["dp"] > 0].groupby(["task", "mixture", "model", "method"], dropna=False):
        meta = dict(zip(["task", "mixture", "model", "method"], key))
        rec = {**meta, "df": "all", "metric": "ce", "law": "joint"}
        n_df = g["df"].nunique()
        if n_df < MIN_DF_FOR_JOINT:
            rec.update(ok=False, reason=f"needs at least {MIN_DF_FOR_JOINT} Df values, the sweep has {n_df}")
        else:
            from pipeline.scaling import fit

            res = fit("joint", g[["dp", "df"]].to_numpy(float), g["ce"].to_numpy(float), delta=fit_cfg["ce_delta"],
                      bootstrap=fit_cfg["bootstrap"])
            rec.update(res.to_dict())
        records.append(rec)
        rows.append(_row(rec))
    return pd.DataFrame(rows), records


def _as_dict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj)


def _row(rec: dict[str, Any]) -> dict[str, Any]:
    row = {k: rec.get(k) for k in ("task", "mixture", "alignment", "model", "method", "df", "metric", "law", "ok",
                                   "reason", "n_fit", "objective")}
    hold = rec.get("holdout") or []
    row["n_holdout"] = len(hold)
    row["holdout_mae"] = float(np.mean([h["abs_err"] for h in hold])) if hold else math.nan
    row["holdout_mre"] = float(np.mean([h["rel_err"] for h in hold])) if hold else math.nan
    for name, v in (rec.get("params") or {}).items():
        row[f"p_{name}"] = v
        lo_hi = (rec.get("intervals") or {}).get(name)
        if lo_hi:
            row[f"ci_{name}_lo"], row[f"ci_{name}_hi"] = lo_hi
    row["baseline"] = rec.get("baseline")
    row["next_rung"], row["next_rung_pred"] = rec.get("next_rung"), rec.get("next_rung_pred")
    return row


def run(task) -> None:
    spec = task.spec
    out = Path(spec["reports_dir"])
    results = Path(spec["results"]) if spec.get("results") else out / "results.csv"
    if not results.exists():
        raise ResultsError(f"no results table at {results}: run the sweep (or `stage=collect`) first")
    df = load_results(results)
    table, records = fit_table(df, spec["fit"])
    atomic_write_text(out / "fits.csv", table.to_csv(index=False, float_format="%.10g"))
    atomic_write_json(out / "fits.json", json.loads(json.dumps(records, default=_json_default)))
    n_ok = int(table["ok"].fillna(False).astype(bool).sum()) if len(table) else 0
    log.info("fit %s: %d of %d fits succeeded -> %s", spec["sweep"], n_ok, len(table), out / "fits.csv")


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.bool_):
        return bool(v)
    return str(v)
