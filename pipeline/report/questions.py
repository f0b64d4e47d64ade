"""The three questions of issue #10, one section each: does the upstream loss predict downstream quality,
how do the laws change with model size, does the finetuning method change them. Each returns a `Section`:
its blocks, the sentences it adds to the summary, and the figures its blocks show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipeline.metrics import corr_metrics, curve_metrics
from pipeline.report.document import Block, collapsed
from pipeline.report.figures import Figure, plot_methods, plot_sizes, plot_upstream
from pipeline.report.fmt import (
    METRIC,
    and_list,
    finite,
    fmt,
    fmt_ci,
    fmt_count,
    fmt_df,
    fmt_pct,
    law_formula,
    law_name,
    num,
    plain_reason,
)
from pipeline.report.tables import curve_fits, fit_table, param_names
from pipeline.report.verdicts import (
    corr_verdicts,
    curve_name,
    grouped,
    method_summary,
    method_verdicts,
    size_verdicts,
)
from pipeline.results import is_ok


@dataclass
class Section:
    blocks: list[Block]
    summary: list[str] = field(default_factory=list)  # sentences for the report's summary
    figures: list[Figure] = field(default_factory=list)  # the figures its img blocks show


def _corr_cell(c: pd.DataFrame, metric: str, kind: str) -> str:
    r = c[c["metric"] == metric]
    if not len(r):
        return "—"
    r = r.iloc[0]
    if not finite(r[kind]):
        return f"— ({r['reason']})" if isinstance(r["reason"], str) and r["reason"] else "—"
    return fmt_ci(r[kind], r[f"{kind}_lo"], r[f"{kind}_hi"])


def question_upstream(pts: pd.DataFrame, fits_df: pd.DataFrame, corr: pd.DataFrame) -> Section:
    q = Section([Block("h2", "Question 1: does the upstream loss predict downstream quality?"),
              Block("p", "The upstream loss is the pretraining checkpoint's held-out span-corruption loss, on the "
                         "pretraining mixture and on target-language text. r is Pearson's correlation, ρ Spearman's, "
                         "over the Dp > 0 rungs of each curve (per mixture and Df), and pooled over every mixture and Df "
                         "(mixture 'all'); brackets are 90% bootstrap intervals (points resampled). A good predictor "
                         "has CE rising and BLEU falling with the upstream loss: r, ρ near +1 for CE, near −1 for BLEU.")])
    for task in dict.fromkeys(pts["task"]):
        for (model, method), sel in pts[pts["task"] == task].groupby(["model", "method"]):
            name = f"fig_{task}_{model}_{method}_upstream.png"
            q.figures.append(Figure(name, plot_upstream, dict(task=task, pts=sel, model=model, method=method)))
            q.blocks.append(Block("img", f"{task} · {model} · {method}: CE and BLEU against the upstream loss", path=name))
    if corr.empty:
        q.blocks.append(Block("p", "No correlations were computed (no fit-stage `correlations.csv`: rerun `stage=fit`)."))
    else:
        rows = []
        keys = ["task", "model", "method", "mixture", "df", "upstream"]
        for key, c in corr.groupby(keys, sort=False):
            rows.append([*(str(k) for k in key[:4]), fmt_df(key[4]), str(key[5]), fmt_count(c["n"].iloc[0]),
                         *(_corr_cell(c, m, k) for m in corr_metrics() for k in ("pearson", "spearman"))])
        table = Block("table", header=["task", "model", "method", "mixture", "Df", "upstream loss", "points",
                                       *(f"{METRIC[m]} {k}" for m in corr_metrics() for k in ("r", "ρ"))], rows=rows)
        q.blocks.append(collapsed(f"Correlations per curve and pooled ({len(rows)} rows)", table, len(rows)))
        per_curve, pooled = corr_verdicts(corr)
        q.summary += per_curve
        q.blocks.append(Block("list", items=per_curve + pooled))
    routes = _routes(fits_df)
    q.summary += routes[-1].items[:1]
    q.blocks += routes
    return q


def _routes(fits_df: pd.DataFrame) -> list[Block]:
    """The direct log-law against the two-stage route, per curve, at the largest (held-out) Dp."""
    direct = curve_fits(fits_df, "bleu")
    law = direct["law"].iloc[0] if len(direct) else "bleu_log"
    blocks = [Block("h3", f"Predicting the largest-Dp BLEU: direct {law_name(law, 'bleu')} against the two-stage route"),
              Block("p", f"Direct: {law_formula(law, 'bleu')}. Two-stage: the upstream loss L(Dp) = E + A/Dp^α, then "
                         "BLEU = a + b·L (least squares). Both are fitted on the same smaller rungs; the error is on the "
                         "held-out larger rungs, where the two-stage route uses its own predicted loss, not the measured one.")]
    routes = {"direct": direct, "two-stage (mixture loss)": fits_df[fits_df["x"].astype(str) == "dp>upstream_mixture"],
              "two-stage (target-language loss)": fits_df[fits_df["x"].astype(str) == "dp>upstream_tgt"]}
    keys = ["task", "mixture", "model", "method", "df"]
    idx = {k: v.assign(df=v["df"].astype(str)).set_index(keys) for k, v in routes.items()}
    rows, wins, failures = [], {k: 0 for k in routes}, []
    for key in idx["direct"].index:
        got = {k: v.loc[key] for k, v in idx.items() if key in v.index}
        ok = {k: r for k, r in got.items() if is_ok(r["ok"])}
        for k, r in got.items():
            if not is_ok(r["ok"]):
                failures.append((f"{k[0].upper() + k[1:]} route not fitted for {{where}}: "
                                 f"{plain_reason(r['reason'], 'bleu')}.", curve_name(key[1], key[4])
                                 + f" ({key[2]}, {key[3]})"))
        if not ok:
            continue
        first = next(iter(ok.values()))
        cells = [*(str(k) for k in key[:4]), fmt_df(key[4]), fmt(num(first["largest_dp"])),
                 fmt(num(first["largest_obs"]))]
        for k in routes:
            r = ok.get(k)
            cells += [fmt(num(r["largest_pred"])), fmt(num(r["holdout_mae"]))] if r is not None else ["—", "—"]
        if len(ok) >= 2:
            best = min(ok, key=lambda k: num(ok[k]["holdout_mae"]))
            wins[best] += 1
            cells.append(best)
        else:
            cells.append("—")
        rows.append(cells)
    if rows:
        blocks.append(Block("table", header=["task", "mixture", "model", "method", "Df", "largest Dp", "observed BLEU",
                                             *(f"{k}: {c}" for k in routes for c in ("predicted", "held-out abs. error")),
                                             "better"], rows=rows))
    items = grouped(failures)
    compared = sum(wins.values())
    if compared:
        items.insert(0, f"Where two or more routes could be fitted ({compared} curves), the smaller held-out error: "
                        + ", ".join(f"{k} on {n}" for k, n in wins.items()) + ".")
    elif not rows:
        items.insert(0, "No route could be fitted on any curve, so they cannot be compared here.")
    blocks.append(Block("list", items=items))
    return blocks


def question_size(pts: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]]) -> Section:
    models = list(dict.fromkeys(pts.sort_values("params")["model"]))
    blocks = [Block("h2", "Question 2: how do the laws change with model size?")]
    figures: list[Figure] = []
    if len(models) < 2:
        blocks.append(Block("p", f"The sweep has one model preset ({and_list(models) if models else 'none'}); compare sizes "
                                 "with a list, e.g. `model=[t5_tiny,t5_mini]` (see `+sweep=questions`)."))
    else:
        for task in dict.fromkeys(pts["task"]):
            for method in sorted(pts["method"].unique()):
                sel = pts[(pts["task"] == task) & (pts["method"] == method)]
                name = f"fig_{task}_{method}_sizes.png"
                figures.append(Figure(name, plot_sizes, dict(task=task, pts=sel, fits=fits, method=method)))
                blocks.append(Block("img", f"{task} · {method}: upstream loss, CE and BLEU against Dp per model size",
                                    path=name))
        blocks.append(Block("h3", "The laws side by side, per size"))
        blocks.append(Block("p", "Exponent α and held-out relative error of each per-curve law, one column pair a size "
                                 f"({', '.join(models)}, smallest first)."))
        for metric in curve_metrics():
            f = curve_fits(fits_df, metric)
            if f.empty:
                continue
            rows = []
            for key, g in f.groupby(["task", "mixture", "method", "df"], sort=False):
                cells = [str(key[0]), str(key[1]), str(key[2]), fmt_df(key[3])]
                for m in models:
                    r = g[g["model"] == m]
                    ok = len(r) and is_ok(r["ok"].iloc[0])
                    cells += [fmt(num(r["p_alpha"].iloc[0])) if ok and "p_alpha" in r else "—",
                              fmt_pct(r["holdout_mre"].iloc[0]) if ok else "—"]
                rows.append(cells)
            blocks.append(Block("p", f"**{law_name(f['law'].iloc[0], metric)}**"))
            blocks.append(Block("table", header=["task", "mixture", "method", "Df",
                                                 *(f"{m}: {c}" for m in models for c in ("α", "held-out rel. error"))],
                                rows=rows))
    blocks.append(Block("h3", "Upstream loss across sizes: L(N, Dp) = E + A/N^α + B/Dp^β (Hoffmann et al. 2022)"))
    blocks.append(Block("p", "N is the parameter count, Dp the pretraining tokens; the largest Dp of each size is held "
                             "out when at least six points remain for the five parameters."))
    blocks.append(fit_table(fits_df, "chinchilla", param_names(fits_df, "chinchilla")))
    blocks.append(Block("h3", "Downstream CE across sizes: L(N, Df) = A·N^−α·Df^−β + E (Zhang et al. 2024), at the largest Dp"))
    blocks.append(fit_table(fits_df, "joint", param_names(fits_df, "joint", "params,df"), x="params,df"))
    items = size_verdicts(pts, fits_df, models)
    blocks.append(Block("list", items=items))
    return Section(blocks, items, figures)


def question_methods(pts: pd.DataFrame, methods: pd.DataFrame) -> Section:
    names = sorted(pts["method"].unique(), key=lambda m: (m != "full", m))
    blocks = [Block("h2", "Question 3: does the finetuning method change the laws?")]
    figures: list[Figure] = []
    if len(names) < 2:
        blocks.append(Block("p", f"The sweep finetunes one way ({and_list(names) if names else 'none'}); compare methods with "
                                 "`finetune.methods=[full,lora]` (see `+sweep=questions`)."))
        return Section(blocks)
    for task in dict.fromkeys(pts["task"]):
        for model in dict.fromkeys(pts.sort_values("params")["model"]):
            sel = pts[(pts["task"] == task) & (pts["model"] == model)]
            name = f"fig_{task}_{model}_methods.png"
            figures.append(Figure(name, plot_methods, dict(task=task, pts=sel, model=model)))
            blocks.append(Block("img", f"{task} · {model}: BLEU and CE against Dp per finetuning method, and the CE gap",
                                path=name))
    if methods.empty:
        blocks.append(Block("p", "No method comparison was computed (no fit-stage `methods.csv`: rerun `stage=fit`)."))
        return Section(blocks, [], figures)
    laws = ", ".join(law_name(r["law"], r["metric"]) for _, r in methods[["metric", "law"]].drop_duplicates().iterrows())
    blocks.append(Block("p", "Gap = method − reference, on the seed means at the same Dp. α is the exponent of each "
                             f"method's law ({laws}) with its 90% interval; the exponents "
                             "differ when the intervals are disjoint."))
    rows = []
    for _, r in methods.iterrows():
        rows.append([str(r["task"]), str(r["mixture"]), str(r["model"]), fmt_df(r["df"]), METRIC[r["metric"]],
                     f"{r['method']} − {r['reference']}", fmt(num(r["delta_dp0"])), fmt(num(r["delta_first"])),
                     fmt(num(r["delta_last"])), fmt(num(r["delta_maxabs"])), fmt(num(r["dp_maxabs"])),
                     fmt_ci(r["ref_alpha"], r["ref_ci_alpha_lo"], r["ref_ci_alpha_hi"]),
                     fmt_ci(r["alpha"], r["ci_alpha_lo"], r["ci_alpha_hi"]),
                     {"true": "yes", "false": "no"}.get(str(r["alpha_differs"]).lower(), "—")])
    table = Block("table", header=["task", "mixture", "model", "Df", "metric", "gap", "gap at Dp = 0",
                                   "gap at smallest Dp", "gap at largest Dp", "largest gap", "largest gap at Dp",
                                   "reference α", "method α", "exponents differ"], rows=rows)
    blocks.append(collapsed(f"The gaps per curve ({len(rows)} rows)", table, len(rows)))
    items = method_verdicts(methods)
    blocks.append(collapsed(f"The gaps in sentences, per curve ({len(items)})", Block("list", items=items), len(items)))
    return Section(blocks, method_summary(methods), figures)

