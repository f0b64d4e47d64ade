"""The report's tables that are not a question's: the header note, the cells left out, the fitted laws with
their intervals, the held-out points, every evaluated cell, and the one-sentence state of the study."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import git_sha
from pipeline.metrics import METRICS, curve_metrics
from pipeline.report.document import Block, collapsed
from pipeline.report.fmt import (
    DATA_NOTES,
    breaking_flags,
    finite,
    fmt,
    fmt_ci,
    fmt_count,
    fmt_df,
    fmt_pct,
    fmt_tokens,
    law_name,
    num,
    plain_reason,
)
from pipeline.results import ReadSpec, excluded, is_ok


def of_group(table: pd.DataFrame | None, key: tuple) -> pd.DataFrame | None:
    """The rows of one (task, model, method) of a table that has those columns (seed means, fits.csv,
    comparisons.csv); None or an empty table as given."""
    if table is None or not len(table):
        return table
    task, model, method = key
    return table[(table["task"] == task) & (table["model"] == model) & (table["method"] == method)]


def curve_fits(fits_df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The per-curve fits of one metric against Dp (fit.bleu_law / fit.ce_law, whichever law that is): the
    rows of fits.csv with that metric and x = dp (the two-stage routes and joint laws have other x)."""
    return fits_df[(fits_df["metric"] == metric) & (fits_df["x"].astype(str) == "dp")]


def flag_list(fits_df: pd.DataFrame, law: str) -> list[Block]:
    """The identifiability flags of one law's fits (fits.csv `flags`): first the fits whose curve does not stand
    (fmt.breaking_flags; drawn faded, without a band), then those whose curve stands but some parameters not."""
    if "flags" not in fits_df:
        return []
    sel = fits_df[(fits_df["law"] == law) & fits_df["ok"].map(is_ok) & fits_df["flags"].fillna("").astype(bool)]
    broken = sel["flags"].map(breaking_flags).astype(bool)
    out = []
    for rows, intro in ((sel[broken], "Fitted, but the curve does not stand (drawn faded and dash-dotted, without a "
                                      "band; its parameters and predictions are not to be read):"),
                        (sel[~broken], "The curve stands within its points; these parameters are not pinned down:")):
        if len(rows):
            out += [Block("p", intro), Block("list", items=[f"{r['mixture']}, Df = {fmt_df(r['df'])}: {r['flags']}."
                                                            for _, r in rows.iterrows()])]
    return out


def standing(fits: pd.DataFrame) -> pd.Series:
    """Which rows of fits.csv are fitted and stand (no flag that breaks the curve)."""
    flags = fits["flags"] if "flags" in fits else pd.Series("", index=fits.index)
    return fits["ok"].map(is_ok) & ~flags.fillna("").map(breaking_flags).astype(bool)


def fit_table(fits_df: pd.DataFrame, law: str, names: list[str], x: str | None = None) -> Block:
    sel = fits_df[fits_df["law"] == law]
    if x is not None:
        sel = sel[sel["x"].astype(str) == x]
    rows = []
    for _, r in sel.iterrows():
        ok = is_ok(r["ok"])
        cells = [str(r["task"]), str(r["mixture"]), str(r["model"]), str(r["method"]), fmt_df(r["df"])]
        for n in names:
            cells.append(fmt_ci(r.get(f"p_{n}"), r.get(f"ci_{n}_lo"), r.get(f"ci_{n}_hi")) if ok else "—")
        cells += [fmt_count(r.get("n_fit")), fmt_count(r.get("n_holdout")), fmt(num(r.get("holdout_mae"))),
                  fmt_pct(r.get("holdout_mre")) if ok else "—",
                  "ok" if ok else f"failed: {plain_reason(r.get('reason'), str(r.get('metric')))}"]
        rows.append(cells)
    return Block("table", header=["task", "mixture", "model", "method", "Df", *names, "fit points", "held-out points",
                                  "held-out abs. error", "held-out rel. error", "fit"], rows=rows)


def param_names(fits_df: pd.DataFrame, law: str, x: str | None = None) -> list[str]:
    sub = fits_df[fits_df["law"] == law]
    if x is not None:
        sub = sub[sub["x"].astype(str) == x]
    return [c[2:] for c in sub.columns if c.startswith("p_") and sub[c].notna().any()]


TEST_SPLIT_NOTES = {
    "test": "whole source packages held out: a domain the model never saw",
    "test_indomain": "a sample of the training packages' own domains, every near-duplicate out of training",
}


def precision_note(ok: pd.DataFrame) -> str:
    """The precision the evaluated cells were finetuned, scored and decoded in (and their checkpoints pretrained in);
    a study that mixed fp32 and bf16 says so, with the counts."""
    def counts(col: str) -> str:
        c = ok[col].dropna().astype(str).value_counts() if col in ok else pd.Series(dtype=int)
        return ", ".join(f"{k} ({v} cells)" for k, v in c.sort_index().items()) if len(c) > 1 else \
            (str(c.index[0]) if len(c) else "not recorded")
    text = (f"Precision: cells finetuned (and their CE scored) in {counts('dtype')}; decoded in "
            f"{counts('decode_dtype')}; pretrained in {counts('pretrain_dtype')}.")
    mixed = [col for col in ("dtype", "decode_dtype", "pretrain_dtype") if col in ok and ok[col].dropna().nunique() > 1]
    return text + (" **The study mixes precisions**: bf16 and fp32 cells differ a little (docs/benchmarks.md), "
                   "compare within one precision." if mixed else "")


def header(results: pd.DataFrame, spec: ReadSpec, results_name: str) -> Block:
    scale = spec.scale
    models = sorted(results["model"].dropna().unique())
    params = {m: results.loc[results["model"] == m, "params"].dropna() for m in models}
    model_desc = ", ".join(f"{m} ({fmt_tokens(float(p.iloc[0]))} parameters)" if len(p) else m for m, p in params.items())
    sigs = sorted(results["bleu_signature"].dropna().unique()) if "bleu_signature" in results else []
    shas = sorted(results["git_sha"].dropna().astype(str).unique()) if "git_sha" in results else []
    src = spec.data_source
    split = results["test_split"].dropna().iloc[0] if "test_split" in results and results["test_split"].notna().any() \
        else "test"
    other = results["other_split"].dropna() if "other_split" in results else pd.Series(dtype=object)
    ok = results[results["status"] == "ok"]
    test_note = (f"BLEU, chrF and CE on the `{split}` split ({TEST_SPLIT_NOTES.get(split, split)})"
                 + (f"; beside it `{other.iloc[0]}` ({TEST_SPLIT_NOTES.get(other.iloc[0], other.iloc[0])}), best "
                    f"BLEU {fmt(ok['other_bleu'].max(), 3)} there against {fmt(ok['bleu'].max(), 3)}"
                    if len(other) and len(ok) else "") + ".")
    return Block("note", "\n".join([
        f"**Scale: {scale.name}** — {scale.description}. "
        + ("This is a toy-scale run: trends only, not the paper's numbers."
           if scale.name in ("smoke", "cpu") and "trends only" not in scale.description else ""),
        f"Corpus: {DATA_NOTES.get(src, src)}.",
        test_note,
        f"Models: {model_desc}. Finetuning: {', '.join(sorted(results['method'].dropna().unique()))}. "
        f"Cells: {int((results['status'] == 'ok').sum())} of {len(results)} evaluated.",
        precision_note(ok),
        f"sacreBLEU signature: {'; '.join(sigs) or 'n/a'}.",
        f"Git SHA of the cells: {', '.join(shas) or 'none recorded'}; of the code that wrote this report: "
        f"{git_sha()}. Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{results_name}`.",
    ]))


def cells_section(results: pd.DataFrame) -> list[Block]:
    n_ok = int((results["status"] == "ok").sum())
    blocks = [Block("h2", "Cells"),
              Block("p", f"{n_ok} of {len(results)} cells evaluated; {int((results['status'] == 'missing').sum())} "
                         f"missing, {int((results['status'] == 'failed').sum())} failed.")]
    bad = excluded(results)
    if len(bad):
        reasons = results.loc[bad.index, "reason"].fillna("").astype(str)
        table = (Block("table", header=["task", "mixture", "model", "method", "Dp rung", "Df", "seed", "why"],
                            rows=[[str(r["task"]), str(r["mixture"]), str(r["model"]), str(r.get("method")),
                                   fmt_count(results.at[i, "dp_rung"] if "dp_rung" in results else r["dp"]),
                                   fmt_count(r["df"]), fmt_count(r.get("seed")),
                                   r["why"] + (f": {reasons[i]}" if reasons[i] and reasons[i] != "nan" else "")]
                                  for i, r in bad.iterrows()]))
        why = "; ".join(f"{n} {w}" for w, n in bad["why"].value_counts().items())
        blocks.append(Block("p", f"{len(bad)} cell(s) are left out of the fits ({why}):"))
        blocks.append(collapsed(f"The {len(bad)} cells left out, with why", table, len(bad)))
    return blocks



def inputs(x: str, v: Any) -> str:
    """A held-out point's inputs by name: `Dp = 4.194e+06`, or `N = 3.000e+06, Df = 1,000` for joint laws."""
    names = {"dp": "Dp", "df": "Df", "params": "N"}
    keys = str(x).split(">")[0].split(",")
    vals = np.atleast_1d(v)
    return ", ".join(f"{names.get(k, k)} = {fmt_count(u) if k == 'df' else fmt(float(u))}" for k, u in zip(keys, vals))


def fit_counts(results: pd.DataFrame, fits_df: pd.DataFrame) -> str:
    """The state of the study in one sentence: how many cells, how many laws fitted."""
    n_ok = int((results["status"] == "ok").sum())
    groups = [(f, law_name(f["law"].iloc[0], m)) for m in curve_metrics() if len(f := curve_fits(fits_df, m))]
    for law, x, name in (("two_stage", None, "two-stage route"), ("joint", "dp,df", "joint (Dp, Df) law"),
                         ("chinchilla", None, "Chinchilla law across sizes"), ("joint", "params,df", "joint (N, Df) law")):
        f = fits_df[fits_df["law"] == law]
        groups.append((f if x is None else f[f["x"].astype(str) == x], name))
    parts = []
    for f, name in groups:
        if len(f):
            weak = int(f["ok"].map(is_ok).sum() - standing(f).sum())
            parts.append(f"the {name} on {int(f['ok'].map(is_ok).sum())} of {len(f)}"
                         + (f" ({weak} flagged: the curve does not stand)" if weak else ""))
    return (f"{n_ok} of {len(results)} cells evaluated (see Cells). Fitted: " + "; ".join(parts) + "."
            if parts else f"{n_ok} of {len(results)} cells evaluated; no law was fitted.")


def holdout_table(fits: list[dict[str, Any]]) -> Block:
    """Every held-out point of every fitted law: observed, predicted, error."""
    rows = []
    for r in fits:
        for h in r.get("holdout") or []:
            rows.append([str(r["task"]), str(r["mixture"]), str(r["model"]), str(r.get("method")), fmt_df(r["df"]),
                         str(r["law"]) + (f" ({r['x']})" if str(r.get("x", "dp")) != "dp" else ""),
                         inputs(r.get("x", "dp"), h["x"]), fmt(h["y"]), fmt(h["pred"]),
                         fmt(h["abs_err"]), fmt_pct(h["rel_err"])])
    if not rows:
        return Block("p", "No held-out points (too few rungs, or no fit succeeded).")
    table = Block("table", header=["task", "mixture", "model", "method", "Df", "law", "held-out point", "observed",
                                   "predicted", "abs. error", "rel. error"], rows=rows)
    return collapsed(f"Every held-out point ({len(rows)} rows)", table, len(rows))


def cells_table(ok_rows: pd.DataFrame) -> Block:
    """Every evaluated cell with its metrics (each declared metric, printed to its digits)."""
    cols = ["task", "mixture", "model", "method", "dp", "df", "seed", *METRICS, "bp", "gen_len",
            "len_ratio", "runaway", "upstream_loss_mixture", "finetune_steps"]
    counts = {"dp", "df", "seed", "finetune_steps"}

    def cell(r: pd.Series, c: str) -> str:
        if isinstance(r[c], str):
            return str(r[c])
        if c in counts:
            return fmt_count(r[c])
        return fmt(num(r.get(c)), METRICS[c].digits) if c in METRICS else fmt(num(r.get(c)))

    rows = [[cell(r, c) for c in cols]
            for _, r in ok_rows.sort_values(["task", "mixture", "model", "method", "df", "dp"]).iterrows()]
    table = Block("table", header=["task", "mixture", "model", "method", "Dp", "Df", "seed",
                                   *(m.label for m in METRICS.values()), "BP", "gen. length", "length ratio",
                                   "runaway share", "upstream loss", "finetune steps"],
                  rows=rows)
    return collapsed(f"Every evaluated cell ({len(rows)} rows)", table, len(rows))


def significance_section(comp: pd.DataFrame | None, length_flag: float | None = None) -> list[Block]:
    """Every BLEU comparison collect tested (pipeline.significance): against Dp = 0, rung to rung, between
    mixtures; how many are beyond the noise (and which noise each test covers), then the table (collapsed), where
    a comparison whose output/reference length ratios differ by more than `length_flag` is marked."""
    from pipeline.significance import ALPHA, NOISE_TEST, p_text

    out = [Block("h2", "Which BLEU differences are real")]
    if comp is None or comp.empty:
        return out + [Block("p", "No significance tests: collect found no stored predictions to compare (a results "
                                 "table copied without its evaluation directories).")]
    sig = comp["significant"].map(is_ok)
    noise = comp["noise"].fillna(NOISE_TEST) if "noise" in comp.columns else pd.Series(NOISE_TEST, index=comp.index)
    ratio = [(num(r.get("len_ratio_a")), num(r.get("len_ratio_b"))) for _, r in comp.iterrows()]
    flagged = [length_flag is not None and finite(a) and finite(b) and abs(b - a) > length_flag for a, b in ratio]
    methods = []
    if (noise == NOISE_TEST).any():
        methods.append(f"with one seed a side, sacreBLEU's paired bootstrap resampling ({int(comp['resamples'].iloc[0]):,} "
                       "resamples of the test sentences), which covers the noise of the test sentences only")
    if (noise != NOISE_TEST).any():
        methods.append("with two or more seeds a side, a Welch t-test on the seed-averaged BLEU whose variance adds the "
                       "seeds' spread to a paired bootstrap over the test sentences (pipeline.significance), which "
                       "covers the noise of the seeds + test sentences")
    out.append(Block("p", "Tests: " + "; ".join(methods) + f". A difference is called significant when p < {ALPHA:g} "
                          "and its 95% interval excludes 0. "
                          + "; ".join(f"{k}: {int(sig[comp['kind'] == k].sum())} of {int((comp['kind'] == k).sum())} "
                                      f"beyond the noise of the {' / '.join(dict.fromkeys(noise[comp['kind'] == k]))}"
                                      for k in dict.fromkeys(comp["kind"])) + "."
                          + (f" ⚠ {sum(flagged)} comparison(s) pair outputs whose length ratios (output/reference) "
                             f"differ by more than {length_flag:g}: their BLEU gap may be length, not translation."
                             if any(flagged) else "")))
    rows = []
    for (_, r), nz, (la, lb), fl in zip(comp.iterrows(), noise, ratio, flagged):
        rows.append([str(r["kind"]), str(r["task"]), str(r["model"]), str(r["method"]), fmt_df(r["df"]),
                     f"{r['mixture_a']} Dp {fmt_tokens(r['dp_rung_a']) if r['dp_rung_a'] else '0'}",
                     f"{r['mixture_b']} Dp {fmt_tokens(r['dp_rung_b']) if r['dp_rung_b'] else '0'}",
                     f"{fmt(r['bleu_a'], 3)} → {fmt(r['bleu_b'], 3)}",
                     f"{r['delta']:+.2f} [{r['delta_lo']:+.2f}, {r['delta_hi']:+.2f}]", p_text(r["p_value"]),
                     "yes" if is_ok(r["significant"]) else "no", nz,
                     (f"{la:.2f} → {lb:.2f}" if finite(la) and finite(lb) else "—") + (" ⚠" if fl else "")])
    out.append(Block("details", "All comparisons", children=[Block("table", header=[
        "kind", "task", "model", "method", "Df", "a", "b", "BLEU a → b", "Δ [95% CI]", "p", "significant", "noise",
        "length ratio a → b"], rows=rows)]))
    return out


def controls_section(results: pd.DataFrame) -> list[Block]:
    """The training controls of the cells the fits read: what ended each finetuning run (early stopping on
    validation CE, or a cap: the step guard or max_epochs), the learning rate chosen for each (Dp, Df) and on
    which seed's search, and what each rung's pretraining read (unique tokens among the Dp seen, epochs).
    Nothing for a table written before these were recorded."""
    ok = results[(results["status"] == "ok") & results["selected"]]
    if ok.empty or not any(c in ok and ok[c].notna().any() for c in ("hit_cap", "lr_chosen", "pt_epochs")):
        return []
    out = [Block("h2", "Training controls")]
    if "hit_cap" in ok and ok["hit_cap"].notna().any():
        # one row per finetuning run: the Dp = 0 baseline is a row of every mixture
        run = ["task", "model", "method", "start", "df", "seed"]
        ok = ok.assign(start=np.where(ok["dp_rung"] > 0, ok["mixture"].astype(str) + " " + ok["dp_rung"].astype(str), "0"))
        cap = ok[ok["hit_cap"].map(is_ok)].drop_duplicates(run)
        n = len(ok.drop_duplicates(run))
        out.append(Block("p", f"Finetuning: {n - len(cap)} of {n} runs stopped early on validation CE (limited by "
                              f"their data); {len(cap)} hit a cap before validation CE stopped improving"
                              + (", so their numbers are those of a run cut short:" if len(cap) else ".")))
        if len(cap):
            rows = [[str(r["task"]), str(r["mixture"]) if r["dp_rung"] else "none", str(r["model"]), str(r["method"]),
                     fmt_count(r["dp_rung"]), fmt_df(r["df"]), fmt_count(r["seed"]), fmt_count(r["finetune_steps"]),
                     fmt(num(r["ft_epochs"]), 3), fmt_count(r["best_step"]), str(r["stopped"])]
                    for _, r in cap.iterrows()]
            out.append(collapsed(f"The {len(cap)} runs that hit their cap", Block("table", header=[
                "task", "mixture", "model", "method", "Dp rung", "Df", "seed", "steps", "epochs", "best step", "cap"],
                rows=rows), len(rows)))
    reused = ok["lr_search"].astype(str).str.startswith("seed")
    if results.loc[results["status"] == "ok", "lr"].nunique() > 1 or reused.any():  # a grid was searched
        out.append(Block("p", "Learning rate: each cell's rate chosen from the grid by validation CE "
                              + (f"on its own seed, except {int(reused.sum())} cells that reuse the rate searched "
                                 "on the first seed (marked *)" if reused.any() else "on its own seed") + "."))
        dfs = sorted(ok["df"].unique())
        rows = []
        for (task, mixture, dp), g in ok.groupby(["task", "mixture", "dp_rung"], sort=True):
            cell = {df: ", ".join(sorted({f"{r['lr']:g}" + ("*" if str(r["lr_search"]).startswith("seed") else "")
                                          for _, r in h.iterrows()})) for df, h in g.groupby("df")}
            rows.append([str(task), str(mixture), fmt_count(dp), *[cell.get(df, "") for df in dfs]])
        out.append(Block("table", header=["task", "mixture", "Dp rung", *[f"Df {fmt_df(d)}" for d in dfs]], rows=rows))
    if "pt_epochs" in ok and ok["pt_epochs"].notna().any():
        rungs = ok[ok["dp_rung"] > 0].drop_duplicates(["task", "mixture", "model", "dp_rung"]).sort_values(
            ["task", "mixture", "model", "dp_rung"])
        if len(rungs):
            out.append(Block("p", "Pretraining: the tokens each rung saw (Dp), the unique ones among them and the "
                                  "passes over the most repeated language's text (epochs; below 1: nothing read twice)."))
            out.append(Block("table", header=["task", "mixture", "model", "Dp rung", "Dp seen", "unique tokens",
                                              "epochs"],
                             rows=[[str(r["task"]), str(r["mixture"]), str(r["model"]), fmt_count(r["dp_rung"]),
                                    fmt_count(r["dp"]), fmt_count(r["pt_unique_tokens"]), fmt(num(r["pt_epochs"]), 3)]
                                   for _, r in rungs.iterrows()]))
    return out
