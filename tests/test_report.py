"""The report stage on a results table drawn from known laws: every file is written, every figure is a real
image, the HTML stands alone, the header says what was run, and every number in report.md's tables is the
number in fits.csv / correlations.csv / methods.csv / fits.json / results.csv at the precision shown (the
checker is itself tested: it must catch one altered digit in every kind of table)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose
from test_fit_stage import DP, synthetic_results

from pipeline import fit, report
from pipeline.config import load_config
from pipeline.plan import build_read_plan
from pipeline.results import GROUP, seed_means, usable
from pipeline.task import typed

SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"


def run_fit_and_report(table: Path, reports: Path, *overrides: str) -> Path:
    """fit + report from a table through the real config and plan (`stage=report paths.results=TABLE`)."""
    cfg = load_config(compose(["+sweep=questions", "scale=smoke", "stage=report", f"paths.results={table}",
                               f"paths.reports={reports}", *overrides]))
    for task in build_read_plan(cfg).tasks:
        {"fit": fit.run, "report": report.run}[task.stage](typed(task))  # the spec as pipeline.task gives it
    return reports / "questions"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    # one size (the size laws fail and say why), two methods, an aligned mixture following the laws and a
    # misaligned one whose BLEU zig-zags; one failed and one missing cell
    df = synthetic_results(methods=("full", "lora"), dfs=(1000,), dp=DP[:6], misaligned="en100", noise=0.01)
    df.loc[3, ["status", "reason", "bleu", "ce"]] = ["failed", "evaluate failed: out of memory", np.nan, np.nan]
    df.loc[10, ["status", "reason"]] = ["missing", "no evaluate directory"]
    root = tmp_path_factory.mktemp("report")
    df.to_csv(root / "results.csv", index=False)
    return run_fit_and_report(root / "results.csv", root / "reports", "fit.bootstrap=5")


# ------------------------------------------------------------------------------------- the checker

NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?%?")


def shown(token: str) -> tuple[float, float]:
    """A number as printed and half a unit of its last digit (the rounding it can hide)."""
    pct = token.endswith("%")
    t = token.rstrip("%").replace(",", "")
    mant, _, exp = t.partition("e")
    decimals = len(mant.partition(".")[2])
    scale = (10.0 ** int(exp) if exp else 1.0) / (100 if pct else 1)
    return float(t) / (100 if pct else 1), 0.5 * 10.0**-decimals * scale


def numbers(cell: str) -> list[tuple[float, float]]:
    return [shown(t) for t in NUMBER.findall(cell)]


# a number in running text: not a digit of a name (t5_mini, en50_de50); token counts as fmt_tokens writes them
TEXT_NUMBER = re.compile(r"(?<![\w.])([-+]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?)([kMB%]?)(?!\w)")


def headline_numbers(text: str) -> list[tuple[str, tuple[float, float]]]:
    """(token, (value, half a unit of its last digit)) of every number in a sentence."""
    out = []
    for m in TEXT_NUMBER.finditer(text):
        v, half = shown(m.group(1))
        scale = {"k": 1e3, "M": 1e6, "B": 1e9, "%": 0.01, "": 1.0}[m.group(2)]
        out.append((m.group(0), (v * scale, half * scale)))
    return out


def finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def ok(v) -> bool:
    return str(v).lower() == "true"


class Checker:
    """Compares report.md's tables with the files they come from; collects every mismatch."""

    def __init__(self, out: Path, results: Path):
        self.results = fit.load_results(results)
        self.fits, self.corr, self.methods = (read(out / n) for n in ("fits.csv", "correlations.csv", "methods.csv"))
        self.records = json.loads((out / "fits.json").read_text())
        # written by collect beside the results table (the report reads it there); absent for a table copied alone
        comp = next((p for p in (Path(results).with_name("comparisons.csv"), out / "comparisons.csv") if p.exists()),
                    None)
        self.comparisons = pd.read_csv(comp) if comp is not None else pd.DataFrame()
        self.errors: list[str] = []
        self.checked = 0

    # -- cells
    def num(self, where: str, cell: str, *values) -> None:
        """`cell` shows `values` in order (a value, or a value with its [lo, hi]); '—' where there is none."""
        self.checked += 1
        got = numbers(cell) if not cell.startswith("—") else []
        want = [float(v) for v in values if finite(v)]
        if not want and not cell.startswith("—"):
            self.errors.append(f"{where}: shows {cell!r}, the source has no value ({values})")
            return
        if want and len(got) != len(want) and not (len(want) > 1 and len(got) == 1):
            self.errors.append(f"{where}: shows {cell!r}, the source has {want}")
            return
        for (g, half), w in zip(got, want):
            if abs(g - w) > half * 1.001 + 1e-12:
                self.errors.append(f"{where}: shows {cell!r}, the source has {w!r}")

    def count(self, where: str, cell: str, v) -> None:
        self.num(where, cell, v)
        if finite(v) and cell != "—" and numbers(cell)[0][0] != float(v):
            self.errors.append(f"{where}: count {cell!r} != {v}")

    def text(self, where: str, cell: str, want: str) -> None:
        self.checked += 1
        if cell != want:
            self.errors.append(f"{where}: shows {cell!r}, expected {want!r}")

    def one(self, frame: pd.DataFrame, where: str, **key) -> pd.Series | None:
        sel = frame
        for k, v in key.items():
            sel = sel[pd.to_numeric(sel[k], errors="coerce") == v] if isinstance(v, float) else sel[sel[k].astype(str) == str(v)]
        if len(sel) != 1:
            self.errors.append(f"{where}: {len(sel)} source rows for {key}")
            return None
        return sel.iloc[0]

    # -- tables
    def fit_table(self, where: str, row: dict[str, str], law: str, x: str) -> None:
        r = self.one(self.fits, where, task=row["task"], mixture=row["mixture"], model=row["model"],
                     method=row["method"], df=row["Df"].replace(",", ""), law=law, x=x)
        if r is None:
            return
        good = ok(r["ok"])
        skip = {"task", "mixture", "model", "method", "Df"}
        for col, cell in row.items():
            w = f"{where} [{col}]"
            if col in skip:
                continue
            if col == "fit points":
                self.count(w, cell, r["n_fit"])
            elif col == "held-out points":
                self.count(w, cell, r["n_holdout"])
            elif col == "held-out abs. error":
                self.num(w, cell, r["holdout_mae"])
            elif col == "held-out rel. error":
                self.num(w, cell, r["holdout_mre"] if good else math.nan)
            elif col == "fit":
                self.checked += 1
                if good != (cell == "ok") or (not good and not (cell.startswith("failed: ") and len(cell) > 12)):
                    self.errors.append(f"{w}: {cell!r} for ok={r['ok']} reason={r['reason']!r}")
            elif f"p_{col}" in r.index:
                self.num(w, cell, *((r[f"p_{col}"], r.get(f"ci_{col}_lo"), r.get(f"ci_{col}_hi")) if good else ()))
            else:
                self.errors.append(f"{w}: a column the checker does not know")

    def check(self, md: str) -> None:
        self.headline(md)
        for ctx, bold, header, rows in tables(md):
            for i, cells in enumerate(rows):
                row = dict(zip(header, cells))
                where = f"{ctx} / {bold} row {i}"
                self.table_row(where, ctx, bold, header, row)

    def headline(self, md: str) -> None:
        """Every number of the headline paragraph is a number of the sources at the precision shown: a comparison's
        (BLEU levels, difference, interval, p, sentences, rung), a seed mean's (BLEU, CE, Dp, Df, parameters) or a
        CE change along a curve, a fit's held-out error, a count, or a threshold the text names."""
        from pipeline.report.headline import LEAD
        from pipeline.report.verdicts import BLEU_FLOOR
        from pipeline.significance import ALPHA

        para = next((line for line in md.splitlines() if line.startswith(f"**{LEAD}**")), None)
        if para is None:
            return self.errors.append("no headline paragraph")
        para = para.replace("p < 0.001", "p below its floor")  # a bound, not a number of the sources
        pts = seed_means(usable(self.results))
        values = [BLEU_FLOOR, ALPHA, 0.95, *pts[["bleu", "ce", "dp", "df", "params"]].to_numpy(float).ravel()]
        for _, g in pts.groupby(GROUP):
            base = g[g["dp"] == 0]
            if len(base):
                values += list(g["ce"].to_numpy(float) - float(base["ce"].iloc[0]))
                values += list(g["bleu"].to_numpy(float) - float(base["bleu"].iloc[0]))
        if len(self.comparisons):
            cols = ["bleu_a", "bleu_b", "delta", "delta_lo", "delta_hi", "p_value", "n", "dp_rung_b"]
            values += list(self.comparisons[cols].to_numpy(float).ravel())
        if "holdout_mre" in self.fits:
            values += list(pd.to_numeric(self.fits["holdout_mre"], errors="coerce"))
        values = np.array([v for v in values if finite(v)])
        counts = max(len(self.results), len(self.fits))
        for token, (g, half) in headline_numbers(para):
            self.checked += 1
            if float(g).is_integer() and "." not in token and token[-1].isdigit() and 0 <= g <= counts:
                continue  # a count
            if not (np.abs(values - g) <= half * 1.001 + 1e-12).any():
                self.errors.append(f"headline: {token} is no number of the sources")

    def table_row(self, where: str, ctx: str, bold: str, header: list[str], row: dict[str, str]) -> None:
        law = {"BLEU:": ("bleu_log", "dp"), "Cross-entropy:": ("power", "dp"), "Joint law L(Dp, Df)": ("joint", "dp,df"),
               "Upstream loss across sizes": ("chinchilla", "params,dp"),
               "Downstream CE across sizes": ("joint", "params,df")}
        if "fit points" in header:
            for k, (name, x) in law.items():
                if ctx.startswith(k):
                    return self.fit_table(where, row, name, x)
            self.errors.append(f"{where}: a fit table under an unknown heading")
        elif header == ["task", "mixture", "alignment"]:
            r = self.results[(self.results["task"] == row["task"]) & (self.results["mixture"] == row["mixture"])]
            self.num(where, row["alignment"], r["alignment"].iloc[0])
        elif "why" in header:
            self.left_out(where, row)
        elif "upstream loss" in header and "BLEU r" in header:
            self.correlation(where, row)
        elif "observed BLEU" in header:
            self.routes(where, row)
        elif "gap at Dp = 0" in header:
            self.method(where, row)
        elif "held-out point" in header:
            self.held_out(where, row)
        elif "gen. length" in header:
            self.cell(where, row)
        elif any(h.endswith(": α") for h in header):
            self.sizes(where, bold, row)
        elif "Δ [95% CI]" in header:
            self.comparison(where, row)
        elif header[-1] == "cap" and "best step" in header:
            self.capped(where, row)
        elif "unique tokens" in header:
            self.rung_read(where, row)
        elif header[:3] == ["task", "mixture", "Dp rung"] and all(h.startswith("Df ") for h in header[3:]):
            self.rates(where, header, row)
        elif header[:3] == ["#", "claim (Isik et al. 2024)", "at this scale"]:
            self.claim(where, row)
        else:
            self.errors.append(f"{where}: a table the checker does not know: {header}")

    def claim(self, where: str, row: dict[str, str]) -> None:
        """A row of the claims table: a verdict of the three, and every number of its `numbers` a number of the
        sources: a comparison's (either orientation), a seed mean's (BLEU, CE) or a difference of two (CE along Dp,
        between mixtures), the gap of two comparisons' differences and its z-test's p, a median of those, a
        held-out error, a Dp rung or Df, a count."""
        from pipeline.report.verdicts import BLEU_FLOOR
        from pipeline.significance import gap_test

        self.checked += 1
        if row["at this scale"].strip("*") not in ("reproduced", "contradicted", "inconclusive"):
            self.errors.append(f"{where}: verdict {row['at this scale']!r}")
        ok_rows = usable(self.results)
        fit_cfg = compose(["+sweep=questions", "scale=smoke"]).fit  # the thresholds the text names
        values = [BLEU_FLOOR, float(fit_cfg.get("good_rel_err", 0.1)), float(fit_cfg.get("length_ratio_flag", 0.1)),
                  *ok_rows["alignment"].dropna().astype(float)]
        for _, g in ok_rows.groupby(["task", "model", "method"]):
            cells = g.groupby(["mixture", "df", "dp_rung"])[["bleu", "ce"]].mean().reset_index()
            values += list(cells[["bleu", "ce", "df", "dp_rung"]].to_numpy(float).ravel())
            for _, curve in cells.groupby(["mixture", "df"]):  # CE along one curve: any rung against another
                v = curve["ce"].to_numpy(float)
                values += list((v[:, None] - v[None, :]).ravel())
            pivot = cells[cells["dp_rung"] > 0].pivot_table(index=["df", "dp_rung"], columns="mixture", values="ce")
            for a in pivot.columns:
                for b in pivot.columns:
                    values.append(float((pivot[a] - pivot[b]).dropna().median()))
        c = self.comparisons
        if len(c):
            values += list(c[["bleu_a", "bleu_b", "delta", "delta_lo", "delta_hi", "p_value"]].to_numpy(float).ravel())
            values += [float(v) for k in ("len_ratio_a", "len_ratio_b") if k in c for v in c[k]]  # a length warning
            # a mixture comparison is read as the less aligned mixture minus the aligned one: either sign
            values += list(-c.loc[c["kind"] == "mixture", ["delta", "delta_lo", "delta_hi"]].to_numpy(float).ravel())
            pre = c[c["kind"] == "pretraining"]
            def t_df(r) -> float:
                return float(r["t_df"]) if "t_df" in r and finite(r["t_df"]) else float("inf")

            for _, x in pre.iterrows():  # the gap of two Df values' differences (significance.gap_test: tested)
                for _, y in pre[pre["mixture_b"] == x["mixture_b"]].iterrows():
                    values += list(gap_test(*(float(x[k]) for k in ("delta", "delta_lo", "delta_hi")),
                                            *(float(y[k]) for k in ("delta", "delta_lo", "delta_hi")), t_df(x), t_df(y)))
            mix = c[c["kind"] == "mixture"]
            for sign in (1, -1):
                values.append(float(np.median(sign * mix["delta"].to_numpy(float)))) if len(mix) else None
        if "holdout_mre" in self.fits:
            values += list(pd.to_numeric(self.fits["holdout_mre"], errors="coerce"))
        values = np.array([v for v in values if finite(v)])
        mixtures = set(self.results["mixture"].astype(str))
        for name in re.findall(r"\b[a-z]+\d+(?:_[a-z]+\d+)*\b", row["numbers"]):
            if name not in mixtures:
                self.errors.append(f"{where}: {name} is no mixture of the results")
        text = row["numbers"].replace("p < 0.001", "p below its floor")
        for token, (g, half) in headline_numbers(text):
            self.checked += 1
            if float(g).is_integer() and "." not in token and 0 <= g <= max(len(self.results), len(self.fits), 100):
                continue  # a count
            if not (np.abs(values - g) <= half * 1.001 + 1e-12).any():
                self.errors.append(f"{where}: {token} in {row['numbers']!r} is no number of the sources")

    def comparison(self, where: str, row: dict[str, str]) -> None:
        """A row of the significance table is one of comparisons.csv's, every number printed from it."""
        from pipeline.report.fmt import fmt, fmt_df, fmt_tokens
        from pipeline.significance import p_text

        self.checked += 1

        def side(mixture, dp) -> str:
            return f"{mixture} Dp {fmt_tokens(dp) if dp else '0'}"

        for _, r in self.comparisons.iterrows():
            printed = [str(r["kind"]), str(r["task"]), str(r["model"]), str(r["method"]), fmt_df(r["df"]),
                       side(r["mixture_a"], r["dp_rung_a"]),
                       side(r["mixture_b"], r["dp_rung_b"]), f"{fmt(r['bleu_a'], 3)} → {fmt(r['bleu_b'], 3)}",
                       f"{r['delta']:+.2f} [{r['delta_lo']:+.2f}, {r['delta_hi']:+.2f}]", p_text(r["p_value"]),
                       "yes" if str(r["significant"]).lower() == "true" else "no"]
            names = ["kind", "task", "model", "method", "Df", "a", "b", "BLEU a → b", "Δ [95% CI]", "p", "significant"]
            if [row[n] for n in names] == printed:
                return
        self.errors.append(f"{where}: {row} is no row of comparisons.csv as printed")

    def _ok_rows(self, row: dict[str, str], **cols: str) -> pd.DataFrame:
        """The selected ok rows of results.csv that a control table's row names (counts as the report prints them)."""
        r = self.results
        sel = (r["status"] == "ok") & r["selected"].astype(bool) & (r["task"] == row["task"])
        for col, cell in cols.items():
            sel &= pd.to_numeric(r[col], errors="coerce") == float(cell.replace(",", ""))
        for col in ("model", "method"):
            if col in row:
                sel &= r[col] == row[col]
        if "mixture" in row and row["mixture"] != "none":
            sel &= r["mixture"] == row["mixture"]
        return r[sel]

    def capped(self, where: str, row: dict[str, str]) -> None:
        sel = self._ok_rows(row, dp_rung=row["Dp rung"], df=row["Df"], seed=row["seed"])
        self.checked += 1
        if sel.empty:
            return self.errors.append(f"{where}: {row} is no selected cell of results.csv")
        r = sel.iloc[0]
        if not (sel["hit_cap"].astype(str).str.lower() == "true").all() or row["cap"] != str(r["stopped"]):
            self.errors.append(f"{where}: {row} did not hit a cap as results.csv says ({r['stopped']})")
        self.count(f"{where} [steps]", row["steps"], r["finetune_steps"])
        self.count(f"{where} [best step]", row["best step"], r["best_step"])
        self.num(f"{where} [epochs]", row["epochs"], r["ft_epochs"])

    def rung_read(self, where: str, row: dict[str, str]) -> None:
        sel = self._ok_rows(row, dp_rung=row["Dp rung"])
        self.checked += 1
        if sel.empty:
            return self.errors.append(f"{where}: {row} is no rung of results.csv")
        r = sel.iloc[0]
        self.count(f"{where} [Dp seen]", row["Dp seen"], r["dp"])
        self.count(f"{where} [unique tokens]", row["unique tokens"], r["pt_unique_tokens"])
        self.num(f"{where} [epochs]", row["epochs"], r["pt_epochs"])

    def rates(self, where: str, header: list[str], row: dict[str, str]) -> None:
        for h in header[3:]:
            sel = self._ok_rows(row, dp_rung=row["Dp rung"], df=h.removeprefix("Df "))
            self.checked += 1
            want = {f"{v:g}" for v in sel["lr"]}
            got = {c.strip().rstrip("*") for c in row[h].split(",") if c.strip()}
            if got != want:
                self.errors.append(f"{where} [{h}]: rates {sorted(got)} != results.csv's chosen {sorted(want)}")

    def left_out(self, where: str, row: dict[str, str]) -> None:
        r = self.results

        def eq(col: str, cell: str) -> pd.Series:
            v = pd.to_numeric(r[col], errors="coerce")
            return v.isna() if cell == "—" else v == float(cell.replace(",", ""))

        sel = r[(r["task"] == row["task"]) & (r["mixture"] == row["mixture"]) & (r["model"] == row["model"])
                & (r["method"] == row["method"]) & eq("dp_rung", row["Dp rung"]) & eq("df", row["Df"])
                & eq("seed", row["seed"])]
        self.checked += 1
        left_out = fit.excluded(r)
        if len(sel) != 1 or sel.index[0] not in left_out.index:
            self.errors.append(f"{where}: {row} is not one left-out row of results.csv")
        elif left_out.at[sel.index[0], "why"] not in row["why"] or str(sel["reason"].iloc[0]) not in row["why"] + "nan":
            self.errors.append(f"{where}: the reason {left_out.at[sel.index[0], 'why']!r} is not shown in full")

    def correlation(self, where: str, row: dict[str, str]) -> None:
        key = {"task": row["task"], "model": row["model"], "method": row["method"], "mixture": row["mixture"],
               "df": row["Df"].replace(",", ""), "upstream": row["upstream loss"]}
        for metric, name in (("bleu", "BLEU"), ("chrf", "chrF"), ("ce", "CE")):
            r = self.one(self.corr, where, **key, metric=metric)
            if r is None:
                return
            self.count(f"{where} [points]", row["points"], r["n"])
            for kind, sym in (("pearson", "r"), ("spearman", "ρ")):
                self.num(f"{where} [{name} {sym}]", row[f"{name} {sym}"], r[kind], r[f"{kind}_lo"], r[f"{kind}_hi"])

    def routes(self, where: str, row: dict[str, str]) -> None:
        key = {"task": row["task"], "mixture": row["mixture"], "model": row["model"], "method": row["method"],
               "df": row["Df"].replace(",", "")}
        routes = {"direct": ("bleu_log", "dp"), "two-stage (mixture loss)": ("two_stage", "dp>upstream_mixture"),
                  "two-stage (target-language loss)": ("two_stage", "dp>upstream_tgt")}
        maes = {}
        for name, (law, x) in routes.items():
            r = self.one(self.fits, where, **key, law=law, x=x)
            if r is None:
                return
            good = ok(r["ok"])
            self.num(f"{where} [{name}: predicted]", row[f"{name}: predicted"], r["largest_pred"] if good else math.nan)
            self.num(f"{where} [{name}: mae]", row[f"{name}: held-out abs. error"], r["holdout_mae"] if good else math.nan)
            if good:
                maes[name] = r["holdout_mae"]
                self.num(f"{where} [largest Dp]", row["largest Dp"], r["largest_dp"])
                self.num(f"{where} [observed BLEU]", row["observed BLEU"], r["largest_obs"])
        self.text(f"{where} [better]", row["better"], min(maes, key=maes.get) if len(maes) >= 2 else "—")

    def method(self, where: str, row: dict[str, str]) -> None:
        method, _, ref = row["gap"].partition(" − ")
        r = self.one(self.methods, where, task=row["task"], mixture=row["mixture"], model=row["model"],
                     df=row["Df"].replace(",", ""), metric={"BLEU": "bleu", "CE": "ce"}[row["metric"]], method=method,
                     reference=ref)
        if r is None:
            return
        for col, src in (("gap at Dp = 0", "delta_dp0"), ("gap at smallest Dp", "delta_first"),
                         ("gap at largest Dp", "delta_last"), ("largest gap", "delta_maxabs"),
                         ("largest gap at Dp", "dp_maxabs")):
            self.num(f"{where} [{col}]", row[col], r[src])
        self.num(f"{where} [reference α]", row["reference α"], r["ref_alpha"], r["ref_ci_alpha_lo"], r["ref_ci_alpha_hi"])
        self.num(f"{where} [method α]", row["method α"], r["alpha"], r["ci_alpha_lo"], r["ci_alpha_hi"])
        self.text(f"{where} [exponents differ]", row["exponents differ"],
                  {"true": "yes", "false": "no"}.get(str(r["alpha_differs"]).lower(), "—"))

    def held_out(self, where: str, row: dict[str, str]) -> None:
        recs = [r for r in self.records if r.get("holdout") and str(r["task"]) == row["task"]
                and str(r["mixture"]) == row["mixture"] and str(r["model"]) == row["model"]
                and str(r.get("method")) == row["method"]
                and (str(int(r["df"])) if finite(r["df"]) else str(r["df"])) == row["Df"].replace(",", "")
                and (str(r["law"]) if str(r.get("x", "dp")) == "dp" else f"{r['law']} ({r['x']})") == row["law"]]
        at = numbers(row["held-out point"])
        hits = [h for r in recs for h in r["holdout"]
                if len(np.atleast_1d(h["x"])) == len(at)
                and all(abs(float(v) - g) <= half * 1.001 for v, (g, half) in zip(np.atleast_1d(h["x"]), at))]
        if len(hits) != 1:
            self.errors.append(f"{where}: {len(hits)} held-out points in fits.json match {row}")
            return
        h = hits[0]
        for col, src in (("observed", "y"), ("predicted", "pred"), ("abs. error", "abs_err")):
            self.num(f"{where} [{col}]", row[col], h[src])
        self.num(f"{where} [rel. error]", row["rel. error"], h["rel_err"])

    def cell(self, where: str, row: dict[str, str]) -> None:
        u = fit.usable(self.results)
        r = self.one(u, where, task=row["task"], mixture=row["mixture"], model=row["model"], method=row["method"],
                     dp=float(row["Dp"].replace(",", "")), df=float(row["Df"].replace(",", "")), seed=float(row["seed"]))
        if r is None:
            return
        for col, src in (("BLEU", "bleu"), ("chrF", "chrf"), ("CE", "ce"), ("BP", "bp"), ("gen. length", "gen_len"),
                         ("length ratio", "len_ratio"), ("runaway share", "runaway"),
                         ("upstream loss", "upstream_loss_mixture")):
            self.num(f"{where} [{col}]", row[col], r[src])
        self.count(f"{where} [finetune steps]", row["finetune steps"], r["finetune_steps"])

    def sizes(self, where: str, bold: str, row: dict[str, str]) -> None:
        law = {"BLEU log-law": "bleu_log", "CE power law": "power"}.get(bold)
        if law is None:
            self.errors.append(f"{where}: a per-size table under {bold!r}")
            return
        for col in (c for c in row if c.endswith(": α")):
            model = col.removesuffix(": α")
            r = self.one(self.fits, where, task=row["task"], mixture=row["mixture"], model=model, method=row["method"],
                         df=row["Df"].replace(",", ""), law=law, x="dp")
            if r is not None:
                good = ok(r["ok"])
                self.num(f"{where} [{col}]", row[col], r["p_alpha"] if good else math.nan)
                self.num(f"{where} [{model}: rel]", row[f"{model}: held-out rel. error"],
                         r["holdout_mre"] if good else math.nan)


def read(path: Path) -> pd.DataFrame:
    t = pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame(columns=["df"])
    t["df"] = t["df"].map(lambda v: str(int(float(v))) if finite(v) else str(v))  # 1000, 1000.0 and "all"
    return t


def split_row(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables(md: str) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(last heading, last bold paragraph, header, rows) of every markdown table."""
    out, ctx, bold = [], "", ""
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            ctx, bold = line.lstrip("#").strip(), ""
        elif re.fullmatch(r"\*\*[^*]+\*\*", line.strip()):
            bold = line.strip().strip("*")
        elif line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, rows = split_row(line), []
            i += 2
            while i < len(lines) and lines[i].startswith("| "):
                rows.append(split_row(lines[i]))
                i += 1
            out.append((ctx, bold, header, rows))
            continue
        i += 1
    return out


def check_numbers(out: Path, md: str | None = None, results: Path | None = None) -> Checker:
    c = Checker(out, results or out.parent.parent / "results.csv")
    c.check((out / "report.md").read_text() if md is None else md)
    return c


# ----------------------------------------------------------------------------------------- tests


def test_every_file_is_written(study):
    for name in ("fits.csv", "fits.json", "correlations.csv", "methods.csv", "report.md", "report.html"):
        assert (study / name).stat().st_size > 0, name
    md = (study / "report.md").read_text()
    pngs = sorted(study.glob("fig_*.png"))
    linked = set(re.findall(r"!\[[^]]*\]\((fig_[^)]+\.png)\)", md))
    # the paper's two figures per (model, method), the upstream figure per (model, method), the methods figure
    assert {p.name for p in pngs} == linked and len(linked) == 2 * 2 + 2 + 1, linked


def test_every_figure_is_a_real_image(study):
    import matplotlib.image as mpimg

    for p in study.glob("fig_*.png"):
        img = mpimg.imread(p)
        h, w = img.shape[:2]
        assert h >= 300 and w >= 300, (p.name, img.shape)
        rgb = (img[..., :3].reshape(-1, 3) * 255).round().astype(np.int64)
        colours, n = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2], return_counts=True)
        assert len(colours) > 20, (p.name, len(colours))
        # a plot is mostly background: no single colour covers (nearly) everything, and there are lines
        share = n.max() / len(rgb)
        assert 0.3 < share < 0.97, (p.name, share)
        assert p.stat().st_size < 120_000, (p.name, p.stat().st_size)  # small enough to commit as an example


def test_html_is_self_contained(study):
    page = (study / "report.html").read_text()
    srcs = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]""", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    assert len(srcs) == len(list(study.glob("fig_*.png")))
    assert "<details>" in page and "<link" not in page and "<script" not in page


def test_every_number_in_the_tables_is_the_source_number(study):
    c = check_numbers(study)
    assert not c.errors, "\n".join(c.errors[:20])
    assert c.checked > 300, c.checked


def test_the_checker_catches_one_altered_digit_in_every_kind_of_table(study):
    c = Checker(study, study.parent.parent / "results.csv")
    kinds = set()
    for ctx, bold, header, rows in tables((study / "report.md").read_text()):
        kind = ctx if "fit points" in header else header[-1] + bold
        for row in rows:
            # the first cell past the key columns that holds a number: one digit changed
            j = next((j for j, (h, v) in enumerate(zip(header, row)) if NUMBER.search(v) and h not in KEYS), None)
            if j is None:
                continue
            digit = list(re.finditer(r"\d", row[j]))[-1]
            bad = row[j][:digit.start()] + str((int(digit.group()) + 3) % 10) + row[j][digit.end():]
            c.errors = []
            c.table_row("as written", ctx, bold, header, dict(zip(header, row)))
            assert not c.errors, c.errors
            c.table_row("altered", ctx, bold, header, dict(zip(header, [*row[:j], bad, *row[j + 1:]])))
            assert c.errors, (kind, row[j], bad)
            kinds.add(kind)
            break
    # the BLEU, CE and joint laws; the two size laws; alignment; left-out cells; correlations; routes; gaps;
    # held-out points; all cells
    assert len(kinds) >= 12, sorted(kinds)


KEYS = ("task", "mixture", "model", "method", "Df", "upstream loss", "law", "why", "gap", "metric", "fit", "#",
        "claim (Isik et al. 2024)")


def test_header_states_scale_corpus_signature_and_sha(study):
    head = (study / "report.md").read_text().split("## Findings")[0]
    assert "**Scale: smoke**" in head and "toy-scale" in head
    assert "Debian packages" in head
    assert f"sacreBLEU signature: {SIGNATURE}" in head
    # the cells' code and the report's code are both named: a report regenerated later says which wrote it
    from pipeline.artifacts import git_sha

    assert "Git SHA of the cells: 0123abcd; of the code that wrote this report: " + git_sha() in head


def test_failed_fits_and_left_out_cells_are_said(study):
    md = (study / "report.md").read_text()
    fits = pd.read_csv(study / "fits.csv")
    bad = fits[~fits["ok"].map(ok)]
    assert len(bad) and bad["reason"].notna().all()
    # the zig-zag BLEU, and the size laws of a one-size sweep
    assert "BLEU is not monotone in Dp" in md
    assert "needs at least 2 model sizes, the sweep has 1" in md
    cells = md.split("## Cells")[1].split("\n## ")[0]
    assert "0 missing" not in cells and "1 missing, 1 failed" in cells
    assert "evaluate failed: out of memory" in cells and "no evaluate directory" in cells
    # verdicts come before the long tables, which are collapsed
    assert md.index("## Findings") < md.index("## Question 1") < md.index("## Fitted laws") < md.index("## Appendix")
    assert md.index("<details>") > md.index("## Question 1")


# ------------------------------------------------------------------------------ tables that break the report


def _degenerate(kind: str) -> pd.DataFrame:
    df = synthetic_results(dp=DP[:4], dfs=(1000,), bleu_law=False)
    if kind == "mixture_without_dp":  # every Dp > 0 cell of one mixture has a non-finite BLEU
        df.loc[(df["mixture"] == "en100") & (df["dp"] > 0), "bleu"] = np.inf
    elif kind == "only_baseline":
        df = df[df["dp"] == 0]
    elif kind == "one_dp":
        df = synthetic_results(dp=DP[:1], dfs=(1000, 4000), models=("t5_tiny", "t5_mini"), bleu_law=False)
    elif kind == "df_not_a_number":
        df["df"] = df["df"].astype(float)
        df.loc[0, "df"] = np.nan
    elif kind == "no_ce":
        df["ce"] = np.nan
    elif kind == "all_failed":
        df["status"], df["reason"] = "failed", "finetune diverged"
    return df


@pytest.mark.parametrize("kind", ["mixture_without_dp", "only_baseline", "one_dp", "df_not_a_number", "no_ce",
                                  "all_failed"])
def test_degenerate_tables_give_a_report_that_says_what_is_missing(tmp_path, kind):
    _degenerate(kind).to_csv(tmp_path / "results.csv", index=False)
    out = run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0")
    md = (out / "report.md").read_text()
    assert "## Findings" in md and "## Cells" in md
    said = {"mixture_without_dp": "bleu is not a finite number", "only_baseline": "too few points",
            "one_dp": "too few points", "df_not_a_number": "df is not a finite number",
            "no_ce": "ce is not a finite number", "all_failed": "finetune diverged"}[kind]
    assert said in md, kind
    assert not check_numbers(out).errors, check_numbers(out).errors[:5]


def test_bleu_at_its_floor_is_called_noise_and_the_ce_signal_is_said(tmp_path, study):
    # a tiny model that does not translate yet: BLEU < 1 everywhere; the verdicts must not read trends into it
    df = synthetic_results(dp=DP[:6], dfs=(1000,), misaligned="en100", noise=0.01)
    df["bleu"] = df["bleu"] / 100
    df.to_csv(tmp_path / "results.csv", index=False)
    md = (run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0") / "report.md").read_text()
    assert "BLEU stays below 1 in every cell" in md and "misleading proxy" not in md
    assert "from no pretraining to the largest Dp, CE changes by" in md
    normal = (study / "report.md").read_text()  # a study whose BLEU moves: no floor sentence, the proxy verdict
    assert "BLEU stays below 1" not in normal and "CE keeps falling with Dp" in normal


def test_the_huber_deltas_in_the_text_are_the_fitted_ones(tmp_path):
    # the law headings name the Huber δ the fit used: read from the config, so they follow an override
    synthetic_results(dp=DP[:5], dfs=(1000,)).to_csv(tmp_path / "results.csv", index=False)
    md = (run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0", "fit.bleu_delta=0.25",
                             "fit.ce_delta=2e-4") / "report.md").read_text()
    assert "(Isik et al. Eq. 1), Huber δ = 0.25" in md and "(Isik et al. Eq. 3), Huber δ = 2e-4" in md
    assert "δ = 0.1)" not in md and "δ = 1e-3)" not in md


def test_another_bleu_law_is_named_and_written_from_the_registry(tmp_path):
    # fit.bleu_law is the one place a law is chosen: the fits, headings, sentences and figures follow it
    synthetic_results(dp=DP[:5], dfs=(1000,)).to_csv(tmp_path / "results.csv", index=False)
    out = run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0", "fit.bleu_law=power")
    md = (out / "report.md").read_text()
    fits = pd.read_csv(out / "fits.csv")
    assert set(fits[(fits["metric"] == "bleu") & (fits["x"] == "dp")]["law"]) == {"power"}
    assert "BLEU: L(Dp) = E + A/Dp^alpha, Huber δ = 0.1" in md  # the registry's formula, not Isik's
    assert "BLEU law (power)" in md and "log-law" not in md.split("## Fitted laws")[1].split("## Figures")[0]


# ------------------------------------------------------------------------------------------- tracking


def test_tracking_wandb_gets_the_fit_metrics_and_every_figure(tmp_path, monkeypatch):
    """With tracking=wandb, fit and report log through the one tracker: the fake wandb backend receives the
    fitted laws' numbers and every report figure; its run id is a hash of the task, the same on a rerun."""
    import pipeline.tracking as tracking

    runs: list[dict] = []

    class FakeWandb(tracking.Backend):
        def __init__(self, run_id, name, config, project, entity, mode, directory, group=None):
            self.run = {"id": run_id, "mode": mode, "metrics": {}, "images": {}, "closed": False}
            runs.append(self.run)

        def log(self, metrics, step):
            self.run["metrics"].update(metrics)

        def log_image(self, key, path):
            self.run["images"][key] = Path(path)

        def close(self):
            self.run["closed"] = True

    monkeypatch.setattr(tracking, "WandbBackend", FakeWandb)
    df = synthetic_results(dp=DP[:6], dfs=(1000,), mixtures=("en50_de50",), bleu_law=False)
    df.to_csv(tmp_path / "results.csv", index=False)
    args = (tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0", "tracking=wandb")
    out = run_fit_and_report(*args)
    fit_run, report_run = runs
    assert fit_run["id"].startswith("fit-questions-") and report_run["id"].startswith("report-questions-")
    assert fit_run["mode"] == "offline" and fit_run["closed"] and report_run["closed"]
    fits = pd.read_csv(out / "fits.csv")
    power = fits[(fits["law"] == "power") & fits["ok"].map(ok)].iloc[0]
    assert fit_run["metrics"]["fits"] == len(fits)
    assert fit_run["metrics"]["power/dp/en-de/en50_de50/t5_tiny/full/df=1000/alpha"] == pytest.approx(power["p_alpha"], rel=1e-9)
    figures = sorted(p.name for p in out.glob("fig_*.png"))
    assert sorted(f"fig_{k.removeprefix('report/')}.png" for k in report_run["images"]) == figures
    assert all(p.exists() for p in report_run["images"].values())
    assert report_run["metrics"]["figures"] == len(figures)
    # the local file says the same (it is the source of truth)
    lines = [json.loads(x) for x in (out / "report-metrics.jsonl").read_text().splitlines()]
    assert sorted(x["image"] for x in lines if "image" in x) == sorted(report_run["images"])
    # a rerun of the same task continues the same runs
    run_fit_and_report(*args)
    assert [r["id"] for r in runs[2:]] == [fit_run["id"], report_run["id"]]


def test_a_curve_that_does_not_translate_is_said_so_while_the_others_are_read(tmp_path):
    # the desk study's shape: nothing translates at the smallest Df (BLEU < 1 on that curve), the larger Df does.
    # The smallest Df's BLEU moves must not be read as a disagreement with CE, nor its mixture ranking as one of
    # translation; the larger Df keeps the ordinary verdicts.
    df = synthetic_results(dp=DP[:6], dfs=(1000, 4000), misaligned="en100")
    small = df["df"] == 1000
    df.loc[small, "bleu"] = df.loc[small, "bleu"] / 100
    df.to_csv(tmp_path / "results.csv", index=False)
    md = (run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0") / "report.md").read_text()
    assert "BLEU stays below 1 in every cell" not in md
    floor = [line for line in md.splitlines() if line.startswith("- BLEU stays below 1 at every Dp for")]
    assert len(floor) == 1 and "Df = 1,000" in floor[0] and "Df = 4,000" not in floor[0], floor
    proxy = [line for line in md.splitlines() if "misleading proxy" in line or "BLEU law misses" in line
             or "follows no" in line]
    assert proxy and all("Df = 1,000" not in line for line in proxy), proxy  # en100 at Df 4,000 still flagged
    ranks = {d: line for line in md.splitlines() for d in ("1,000", "4,000")
             if line.startswith(f"- At the largest Dp and Df = {d}, BLEU by mixture")}
    assert "Neither cell translates" in ranks["1,000"]
    assert "Neither cell translates" not in ranks["4,000"]
    washes = [line for line in md.splitlines() if "from no pretraining to the largest Dp, BLEU changes by" in line]
    assert len(washes) == 2, washes  # one per mixture, each reading every Df and judging on the one that translates
    for line in washes:
        assert "at Df = 1,000 (" in line and "; no cell translates at this Df)" in line
        assert line.count("no cell translates") == 1 and "at Df = 4,000 (" in line
        assert "BLEU measures translation only at Df = 4,000, so it cannot tell" in line


def test_whether_bleu_and_ce_move_together_is_said_per_curve_with_its_rank_test(tmp_path):
    # the desk study's two findings on curves that translate: at one Df BLEU falls with Dp while CE barely moves
    # and ranks the rungs otherwise; at the other both get worse together. Neither is a "CE falls while BLEU does
    # not" flag, and both must still be read, each with its exact permutation test: over 6 rungs ρ = -1 is beyond
    # chance (p = 1/720), ρ = -0.09 is not, and is said to be descriptive, not "apart".
    from scipy.stats import spearmanr

    df = synthetic_results(dp=DP[:6], dfs=(1000, 4000), mixtures=("en50_de50",), bleu_law=False)
    ces = {1000: [4.59, 4.58, 4.61, 4.62, 4.53, 4.60], 4000: [3.85, 3.86, 3.93, 4.04, 4.05, 4.06]}
    for d, ce in ces.items():
        m = (df["dp"] > 0) & (df["df"] == d)
        df.loc[m, "bleu"], df.loc[m, "ce"] = np.linspace(3.0, 1.5, 6), ce
    df.to_csv(tmp_path / "results.csv", index=False)
    md = (run_fit_and_report(tmp_path / "results.csv", tmp_path / "reports", "fit.bootstrap=0") / "report.md").read_text()
    rho = {d: spearmanr(np.linspace(3.0, 1.5, 6), ce).statistic for d, ce in ces.items()}
    assert rho[4000] == pytest.approx(-1.0) and rho[1000] > -0.8
    together = [line for line in md.splitlines() if line.startswith("- BLEU and CE move together across Dp")]
    unknown = [line for line in md.splitlines() if line.startswith("- Whether BLEU and CE move together")]
    assert len(together) == 1 and (f"en50_de50 at Df = 4,000 (ρ = {rho[4000]:+.2f} over 6 rungs, exact permutation "
                                   "p = 0.001)") in together[0], together
    assert len(unknown) == 1 and f"en50_de50 at Df = 1,000 (ρ = {rho[1000]:+.2f} over 6 rungs" in unknown[0], unknown
    assert "descriptive" in unknown[0] and "do not move together" not in md
    assert "Df = 1,000" not in together[0] and "Df = 4,000" not in unknown[0]
    assert "misleading proxy" not in md  # CE does not keep falling on either curve: no flag


def test_dp_ticks_on_a_short_ladder_are_token_counts_that_do_not_collide():
    # the desk ladder (0.5M-8M) spans little more than a decade: the log axis's own minor labels (2×10⁶,
    # 3×10⁶, 4×10⁶ ...) ran into each other
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.report.figures import _style_dp_axis

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([5e5, 1e6, 2e6, 4e6, 8e6], [6.2, 6.1, 5.9, 5.6, 5.2], "o")
    _style_dp_axis(ax, "CE", "t")
    fig.canvas.draw()
    labels = [t for t in [*ax.get_xticklabels(), *ax.get_xticklabels(minor=True)]
              if t.get_text() and ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
    assert {t.get_text() for t in labels} == {"500k", "1M", "2M", "5M"}
    boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [(b.x0, b.x1) for b in boxes]
    ax.set_xlim(1e6, 1e11)  # many decades: majors only
    fig.canvas.draw()
    assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    plt.close(fig)


def test_the_training_controls_say_which_runs_hit_their_cap_the_chosen_rates_and_the_rungs_repeats(tmp_path):
    from pipeline.report.tables import controls_section
    from pipeline.results import load_results

    base = {"task": "en-de", "model": "t5_tiny", "method": "full", "bleu": 1.0, "ce": 4.0, "status": "ok",
            "mixture": "en50_de50", "best_step": 400, "finetune_steps": 500}
    rows = [  # (dp_rung, dp, df, seed, lr, selected, hit_cap, stopped, lr_search, pt_unique_tokens, pt_epochs)
        (0, 0, 2000, 0, 1e-3, True, False, "early_stopping", "own seed", 0, 0.0),
        (0, 0, 2000, 0, 3e-3, False, True, "max_steps", "own seed", 0, 0.0),
        (0, 0, 2000, 1, 1e-3, True, False, "early_stopping", "seed 0", 0, 0.0),
        (8000, 8192, 2000, 0, 3e-3, True, True, "max_steps", "own seed", 4096, 2.0),
        (8000, 8192, 2000, 0, 1e-3, False, False, "early_stopping", "own seed", 4096, 2.0)]
    keys = ["dp_rung", "dp", "df", "seed", "lr", "selected", "hit_cap", "stopped", "lr_search", "pt_unique_tokens",
            "pt_epochs"]
    table = [{**base, **dict(zip(keys, r)), "ft_epochs": 3.5} for r in rows]
    table.append({**table[3], "mixture": "en100", "hit_cap": False, "stopped": "early_stopping"})  # same Dp rung
    pd.DataFrame(table).to_csv(tmp_path / "r.csv")
    blocks = controls_section(load_results(tmp_path / "r.csv"))
    text = " ".join(str(b.text) for b in blocks)
    assert "3 of 4 runs stopped early" in text and "1 hit a cap" in text  # selected runs, one per mixture and rung
    capped = blocks[2].rows  # a short table is shown as is
    assert capped == [["en-de", "en50_de50", "t5_tiny", "full", "8,000", "2,000", "0", "500", "3.50", "400", "max_steps"]]
    lr = blocks[4].rows
    assert lr == [["en-de", "en100", "8,000", "0.003"], ["en-de", "en50_de50", "0", "0.001, 0.001*"],
                  ["en-de", "en50_de50", "8,000", "0.003"]]
    assert "1 cells that reuse the rate searched on the first seed" in text
    assert blocks[6].rows == [["en-de", "en100", "t5_tiny", "8,000", "8,192", "4,096", "2.00"],
                              ["en-de", "en50_de50", "t5_tiny", "8,000", "8,192", "4,096", "2.00"]]
    # a table written before the controls were recorded: no section
    old = pd.read_csv(tmp_path / "r.csv").drop(columns=["hit_cap", "lr_search", "pt_unique_tokens", "pt_epochs",
                                                        "ft_epochs"])
    old.to_csv(tmp_path / "old.csv")
    assert controls_section(load_results(tmp_path / "old.csv").query("lr == 0.001")) == []


# ------------------------------------------------------------------------------ the headline and claims


def test_the_headline_leads_with_the_dp_figure_and_every_number_in_it_is_a_source_number(study):
    from pipeline.report.headline import LEAD

    md = (study / "report.md").read_text()
    lines = md.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith(f"**{LEAD}**"))
    first_table = next(i for i, line in enumerate(lines) if line.startswith("| "))
    first_img = next(i for i, line in enumerate(lines) if line.startswith("!["))
    assert lines[0].startswith("# ") and head < first_img < first_table and head < lines.index("## Findings")
    assert lines[first_img].endswith("_t5_tiny_full_dp.png)")  # the Dp figure of the study's first read
    assert "At smoke scale (t5_tiny" in lines[head] and lines[head].count(". ") >= 2
    c = Checker(study, study.parent.parent / "results.csv")
    c.headline(md)
    assert not c.errors and c.checked >= 8, (c.errors, c.checked)
    # one altered digit in the headline is caught
    token = next(t for t, _ in headline_numbers(lines[head]) if "." in t)
    digit = list(re.finditer(r"\d", token))[-1]
    bad = token[:digit.start()] + str((int(digit.group()) + 3) % 10) + token[digit.end():]
    c.errors = []
    c.headline(md.replace(lines[head], lines[head].replace(token, bad, 1)))
    assert c.errors, (token, bad)
    # in the HTML the headline and the figure come before any table or folded section; the tables are folded
    page = (study / "report.html").read_text()
    assert page.index(LEAD) < page.index("<img class='lead'") < min(page.index("<table"), page.index("<details"))
    assert page.count("<details class='section'>") >= 5


def _spec(scale: str = "desk"):
    from types import SimpleNamespace

    return SimpleNamespace(scale=SimpleNamespace(name=scale), fit=SimpleNamespace(length_ratio_flag=0.2))


def _pts(bleu_scale: float = 1.0) -> pd.DataFrame:
    rows = []
    for mix in ("en50_de50", "en100"):
        for df_, ce in ((1000, (5.0, 4.6, 4.4)), (4000, (4.0, 4.1, 4.2))):
            for dp, b, c in zip((0, 1e6, 2e6), (3.0, 2.4, 2.0), ce):
                rows.append({"task": "en-de", "model": "t5_mini", "method": "full", "mixture": mix, "df": df_, "dp": dp,
                             "bleu": b * bleu_scale, "ce": c, "params": 3.39e6, "alignment": 1.0})
    return pd.DataFrame(rows)


def _comp(significant: bool = True) -> pd.DataFrame:
    return pd.DataFrame([{"kind": "pretraining", "task": "en-de", "model": "t5_mini", "method": "full", "df": 4000,
                          "mixture_a": mix, "dp_rung_a": 0, "mixture_b": mix, "dp_rung_b": 2_000_000, "seeds": "0",
                          "bleu_a": 3.0, "bleu_b": 2.0, "delta": -1.0, "delta_lo": -1.4, "delta_hi": -0.6,
                          "p_value": 0.001 if significant else 0.3, "significant": significant, "n": 2000,
                          "resamples": 1000, "noise": "test sentences", "len_ratio_a": 1.0, "len_ratio_b": 1.05}
                         for mix in ("en50_de50", "en100")])


def test_the_headline_says_the_scale_the_tested_bleu_difference_its_noise_and_which_laws_stand():
    from pipeline.report.headline import headline

    results = pd.DataFrame({"status": ["ok"] * 12 + ["failed"]})
    fits = pd.DataFrame([
        {"task": "en-de", "model": "t5_mini", "method": "full", "mixture": m, "df": d, "metric": metric, "law": law,
         "x": "dp", "ok": ok_, "reason": reason, "flags": flags, "holdout_mre": 0.02}
        for m in ("en50_de50", "en100") for d in (1000, 4000) for metric, law, ok_, reason, flags in (
            ("bleu", "bleu_log", False, "BLEU falls as Dp grows over the fit points", ""),
            ("ce", "power", True, None, "alpha = -0.05 < 0: the term grows with its input instead of decaying, so the "
                                        "law rises without bound as it extrapolates"))])
    text = headline(results, _pts(), fits, _comp(), _spec()).text
    assert text.startswith("**What the study shows.** At desk scale (t5_mini, 3.39M parameters, full finetuning; "
                           "Dp up to 2M tokens, Df up to 4,000 pairs; 12 of 13 cells evaluated)")
    assert ("pretraining lowers BLEU beyond the noise of the test sentences: at the largest Df and Dp (4,000 pairs, 2M "
            "tokens) against none, en50_de50 -1.00 BLEU [-1.40, -0.60], p = 0.001; en100 -1.00 BLEU") in text
    assert "paired bootstrap over 2,000 sentences, 95% intervals; one seed a side, so training randomness" in text
    assert ("From no pretraining to the largest Dp, the cross-entropy (seed means; descriptive, no test) changes by "
            "-0.600 (en50_de50) and -0.600 (en100) nats a token at Df = 1,000 and by +0.200 (en50_de50) and +0.200 "
            "(en100) at Df = 4,000: pretraining helps it with little finetuning data, not with the most.") in text
    assert "the BLEU log-law stands on 0 of 4 curves (4 not fitted: BLEU falls as Dp grows over the fit points)" in text
    assert "the CE power law on 0 of 4 curves (4 fitted but flagged: 4 with α < 0 (rises without bound))" in text
    assert text.endswith("none is fit to extrapolate from.") and "on 4 of" not in text
    inside = headline(results, _pts(), fits, _comp(significant=False), _spec()).text
    assert "pretraining moves BLEU by no more than the noise of the test sentences" in inside
    floor = headline(results, _pts(bleu_scale=0.1), fits, _comp(), _spec("cpu")).text
    assert "At cpu scale" in floor and "the models do not translate yet: BLEU stays below 1 in every cell" in floor


def test_a_flagged_fit_is_drawn_faded_without_a_band_and_never_said_to_stand():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from pipeline.report.document import to_markdown
    from pipeline.report.figures import _draw_law, law_style
    from pipeline.report.tables import fit_counts, flag_list

    rising = "alpha = -1.04 < 0: the term grows with its input instead of decaying, so the law rises without bound"
    unbounded = "A is not bounded by the data (its 90% interval is unbounded)"
    collinear = "e and a are near-collinear (correlation -0.99997): the data pin down a combination of them, not each"
    x = np.geomspace(1e6, 8e6, 20)
    rec = {"ok": True, "curve": {"x": list(x), "y": list(4 + 0.01 * np.log(x)), "lo": list(3.9 + 0.01 * np.log(x)),
                                 "hi": list(4.1 + 0.01 * np.log(x))},
           "points": {"x": [1e6, 2e6, 4e6, 8e6], "y": [4.14, 4.15, 4.15, 4.16], "holdout": [False] * 3 + [True]}}
    for flags, stands in (([], True), ([collinear], True), ([rising], False), ([unbounded], False)):
        style = law_style({**rec, "flags": flags})
        assert style["band"] is stands and (style["alpha"] == 1.0) is stands and (style["fit"] == "-") is stands
        fig, ax = plt.subplots()
        _draw_law(ax, {**rec, "flags": flags}, "C0", np.array([1e6, 2e6, 4e6, 8e6]))
        assert any(isinstance(c, PolyCollection) for c in ax.collections) is stands
        assert {ln.get_alpha() or 1.0 for ln in ax.lines} == ({1.0} if stands else {0.4})
        plt.close(fig)
    fits = pd.DataFrame([{"task": "en-de", "model": "m", "method": "full", "mixture": "en100", "df": d, "metric": "ce",
                          "law": "power", "x": "dp", "ok": True, "reason": None, "flags": f}
                         for d, f in ((1000, rising + "; " + unbounded), (2000, collinear))])
    text = to_markdown(flag_list(fits, "power"))
    broken, fine = text.split("The curve stands")
    assert "does not stand" in broken and "Df = 1,000" in broken and "Df = 2,000" not in broken
    assert "Df = 2,000" in fine and "still stand" not in text
    assert "the CE power law on 2 of 2 (1 flagged: the curve does not stand)" in fit_counts(
        pd.DataFrame({"status": ["ok"]}), fits)


def test_the_significance_table_names_model_and_method(study):
    rows = [(ctx, header) for ctx, _, header, _ in tables((study / "report.md").read_text()) if "Δ [95% CI]" in header]
    assert all(header[:5] == ["kind", "task", "model", "method", "Df"] for _, header in rows)
    from pipeline.report.tables import significance_section

    comp = _comp()
    comp.loc[1, ["model", "method"]] = ["t5_tiny", "lora"]
    table = significance_section(comp)[-1].children[0]
    assert table.header[:5] == ["kind", "task", "model", "method", "Df"]
    assert [r[2:4] for r in table.rows] == [["t5_mini", "full"], ["t5_tiny", "lora"]]


def _claims_study(gain: dict, weak_gap: float, half: float = 0.3, holdout: float = 0.02) -> tuple:
    """Results rows, comparisons and fits of a two-mixture study whose BLEU gain from pretraining (top rung, 2M
    tokens, against none) is gain[(mixture, df)] (linear in the rung), en100 `weak_gap` BLEU below en50_de50 at each
    pretrained cell, CE falling with Df and Dp (en100 0.05 above); every comparison's interval ± `half`."""
    from pipeline.significance import planned

    rows = []
    for mix, al in (("en50_de50", 1.0), ("en100", 0.7)):
        for df_, base, ce0 in ((1000, 2.0, 5.0), (4000, 5.0, 4.5), (16000, 8.0, 4.0)):
            for rung in (0, 1_000_000, 2_000_000):
                for seed in (0, 1):
                    frac = rung / 2_000_000
                    rows.append({"task": "en-de", "model": "t5_mini", "method": "full", "mixture": mix, "alignment": al,
                                 "df": df_, "dp": rung, "dp_rung": rung, "seed": seed, "status": "ok", "selected": True,
                                 "bleu": base + gain[(mix, df_)] * frac - (weak_gap if mix == "en100" and rung else 0),
                                 "ce": ce0 - 0.3 * frac + (0.05 if mix == "en100" and rung else 0),
                                 "config_hash": f"{mix}{df_}{rung}{seed}"})
    results = pd.DataFrame(rows)
    comp = []
    for kind, a, b in planned(results):
        ra, rb = results.loc[a], results.loc[b]
        if ra["seed"] != 0:
            continue
        d = float(rb["bleu"] - ra["bleu"])
        sig = abs(d) > half
        comp.append({"kind": kind, "task": "en-de", "model": "t5_mini", "method": "full", "df": ra["df"],
                     "mixture_a": ra["mixture"], "dp_rung_a": ra["dp_rung"], "mixture_b": rb["mixture"],
                     "dp_rung_b": rb["dp_rung"], "bleu_a": ra["bleu"], "bleu_b": rb["bleu"], "delta": d,
                     "delta_lo": d - half, "delta_hi": d + half, "p_value": 0.001 if sig else 0.4, "significant": sig,
                     "noise": "seeds + test sentences"})
    fits = pd.DataFrame([{"task": "en-de", "model": "t5_mini", "method": "full", "mixture": m, "df": d, "metric": metric,
                          "law": law, "x": "dp", "ok": True, "flags": "", "holdout_mre": holdout}
                         for m in ("en50_de50", "en100") for d in (1000, 4000, 16000)
                         for metric, law in (("bleu", "bleu_log"), ("ce", "power"))])
    return results, pd.DataFrame(comp), fits


FIT = __import__("types").SimpleNamespace(good_rel_err=0.1, length_ratio_flag=0.1)  # what the claims read


def _verdicts(*study) -> dict[int, str]:
    from pipeline.report.claims import claims

    return {c.number: c.verdict for c in claims(study[0], study[1], study[2], FIT)}


def test_a_study_like_the_papers_reproduces_every_claim():
    # en100's pretrained cells sit 0.8 BLEU below en50_de50's: its differences against none are +1.2, +0.4 and
    # -0.25 (inside the noise, and below a quarter of en50_de50's +0.5 there); at Df 16,000 no rung step is beyond
    # the noise (+0.25 and +0.275 inside ± 0.3)
    paper = _claims_study({("en50_de50", 1000): 3.0, ("en50_de50", 4000): 1.5, ("en50_de50", 16000): 0.5,
                           ("en100", 1000): 2.0, ("en100", 4000): 1.2, ("en100", 16000): 0.55}, weak_gap=0.8)
    assert _verdicts(*paper) == dict.fromkeys(range(1, 8), "reproduced")
    results, comp, fits = paper  # fits.csv read back with Df as text (a table whose Df column holds "all")
    assert _verdicts(results, comp, fits.assign(df=fits["df"].astype(str)))[6] == "reproduced"


def test_a_study_where_pretraining_lowers_bleu_contradicts_the_papers_claims_and_says_why():
    from pipeline.report.claims import claims

    desk = _claims_study({("en50_de50", 1000): -0.2, ("en50_de50", 4000): -1.0, ("en50_de50", 16000): -1.5,
                          ("en100", 1000): -0.2, ("en100", 4000): -1.0, ("en100", 16000): -1.5}, weak_gap=-0.5,
                         holdout=0.5)
    v = _verdicts(*desk)
    assert v[2] == v[4] == "contradicted"  # significant losses at the larger Df
    assert v[3] == "inconclusive"  # no gain at the small Df to shrink, although the loss grows with Df
    assert v[5] == "contradicted"  # en100 scores higher BLEU than en50_de50 beyond the noise
    assert v[6] == "contradicted"  # every held-out error 50%
    assert v[7] == "reproduced"  # CE falls with pretraining while BLEU does not rise
    by = {c.number: c for c in claims(*desk, FIT)}
    assert "Df 16,000: BLEU -1.50 [-1.80, -1.20], p = 0.001, CE -0.300" in by[2].evidence
    assert "seeds + test sentences" in by[2].test and "descriptive" in by[2].test
    assert "BLEU lower beyond the noise in 0, higher in 6" in by[5].evidence
    # a difference whose two sides' output lengths differ is flagged where it is quoted
    results, comp, fits = desk
    top = (comp["kind"] == "pretraining") & (comp["df"] == 16000) & (comp["mixture_b"] == "en50_de50") & (
        comp["dp_rung_b"] == 2_000_000)
    comp = comp.assign(len_ratio_a=1.0, len_ratio_b=np.where(top, 1.42, 1.0))
    said = claims(results, comp, fits, FIT)[1].evidence
    assert "Df 16,000: BLEU -1.50 [-1.80, -1.20], p = 0.001; ⚠ output lengths differ (length ratio 1.00 → 1.42" in said
    assert said.count("⚠") == 1


def test_claims_say_inconclusive_where_nothing_translates_or_the_noise_covers_the_difference():
    quiet = _claims_study({(m, d): 0.2 for m in ("en50_de50", "en100") for d in (1000, 4000, 16000)}, weak_gap=0.1)
    v = _verdicts(*quiet)
    # every BLEU difference inside ± 0.3: no gain to fade (4), no BLEU that fails to follow a CE gain (7)
    assert v[2] == v[3] == v[4] == v[5] == v[7] == "inconclusive"
    results, comp, fits = _claims_study({(m, d): 3.0 for m in ("en50_de50", "en100") for d in (1000, 4000, 16000)},
                                        weak_gap=0.8)
    low = results.assign(bleu=results["bleu"] / 100)  # no cell reaches BLEU 1
    low_comp = comp.assign(**{k: comp[k] / 100 for k in ("bleu_a", "bleu_b")})
    v = _verdicts(low, low_comp, fits)
    assert v[1] == v[2] == v[3] == v[5] == v[7] == "inconclusive"  # CE falls with Df, but BLEU orders stray n-grams
    # where BLEU cannot read the gain's trend over Df, the CE at both ends still shows it, as a description
    from pipeline.report.claims import claims

    said = {c.number: c.evidence for c in claims(low, low_comp, fits, FIT)}
    assert ("en100: BLEU reads translation at fewer than two Df values (CE with pretraining -0.250 at Df 1,000, "
            "-0.250 at Df 16,000: descriptive)") in said[3]
    # BLEU below the floor at the smallest Df only: claim 2 reads the Df values where BLEU measures translation
    small = results["df"] == 1000
    partly = results.assign(bleu=np.where(small, results["bleu"] / 100, results["bleu"]))
    c2 = comp.assign(**{k: np.where(comp["df"] == 1000, comp[k] / 100, comp[k]) for k in ("bleu_a", "bleu_b")})
    assert _verdicts(partly, c2, fits)[2] == "reproduced"


def test_the_claims_table_is_in_the_report_and_its_numbers_are_source_numbers(study):
    md = (study / "report.md").read_text()
    assert "## The paper's claims at this scale" in md
    found = [t for t in tables(md) if t[2][:3] == ["#", "claim (Isik et al. 2024)", "at this scale"]]
    assert found and all(len(rows) == 7 for *_, rows in found)
    c = Checker(study, study.parent.parent / "results.csv")
    for _, _, header, rows in found:
        for i, cells in enumerate(rows):
            c.claim(f"claims row {i}", dict(zip(header, cells)))
    assert not c.errors and c.checked > 7 * len(found), c.errors
    row = dict(zip(found[0][2], found[0][3][4]))  # claim 5: CE medians of the mixtures
    token = next(t for t, _ in headline_numbers(row["numbers"]) if "." in t)
    c.errors = []
    dot = token.index(".") + 1  # the first decimal moved by 3
    c.claim("altered", {**row, "numbers": row["numbers"].replace(
        token, token[:dot] + str((int(token[dot]) + 3) % 10) + token[dot + 1:])})
    assert c.errors, token


def test_a_mixture_comparison_reads_the_same_whichever_side_the_aligned_mixture_is_on():
    from pipeline.report.claims import claims

    results, comp, fits = _claims_study({(m, d): 1.0 for m in ("en50_de50", "en100") for d in (1000, 4000, 16000)},
                                        weak_gap=0.8)
    mix = comp["kind"] == "mixture"
    assert (comp.loc[mix, "mixture_a"] == "en50_de50").all()
    swapped = comp.copy()
    swapped.loc[mix, ["mixture_a", "mixture_b"]] = comp.loc[mix, ["mixture_b", "mixture_a"]].to_numpy()
    swapped.loc[mix, ["bleu_a", "bleu_b"]] = comp.loc[mix, ["bleu_b", "bleu_a"]].to_numpy()
    swapped.loc[mix, "delta"] = -comp.loc[mix, "delta"]
    swapped.loc[mix, "delta_lo"], swapped.loc[mix, "delta_hi"] = -comp.loc[mix, "delta_hi"], -comp.loc[mix, "delta_lo"]
    one, other = claims(results, comp, fits, FIT)[4], claims(results, swapped, fits, FIT)[4]
    assert one == other and one.verdict == "reproduced"
    assert "BLEU lower beyond the noise in 6, higher in 0" in one.evidence and "median difference -0.80" in one.evidence


def test_a_table_cell_of_running_text_is_left_aligned_and_a_number_is_not(tmp_path):
    from pipeline.report.document import Block, to_html

    page = to_html([Block("table", header=["claim", "BLEU Δ"], rows=[["x", "-1.55 [-1.87, -1.24]"], [
        "y", "en100 at Df 137,102: top rung against none -1.55 [-1.87, -1.24], p < 0.001"]])], tmp_path, "t")
    assert "<td>-1.55 [-1.87, -1.24]</td>" in page
    assert "<td class='text'>en100 at Df 137,102: top rung" in page and "td.text{text-align:left}" in page
