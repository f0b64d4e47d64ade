"""Stage `report`: the study a researcher reads — figures, fitted laws, extrapolation errors, verdicts.

Reads `results.csv` and the fit stage's `fits.csv`/`fits.json` only, so it runs on a table copied back
from a cluster. Writes `report.md`, a self-contained `report.html` (figures embedded), the figures as
PNG. The document is built once as a list of blocks and rendered to both formats, so every number is
the same in both, and every number comes from the two CSV files (a test checks it).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_write_bytes, atomic_write_text, git_sha
from pipeline.fit import ResultsError, load_results, seed_means, usable

log = logging.getLogger(__name__)

DATA_NOTES = {
    "l10n": "the offline corpus built from the translations in Debian packages (software UI and help text, "
            "median 7-8 words a sentence); BLEU here is not comparable with WMT newstest numbers",
    "hub": "mC4 (allenai/c4) for pretraining and WMT (en-de WMT17, en-fr WMT15, en-ro WMT16) for finetuning and test",
    "local": "the user's own files (data=local)",
}
GOOD_MRE = 0.10  # a law "holds" when its held-out relative error is below this


# ---------------------------------------------------------------------------------------- formatting


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
    return fmt(int(v)) if isinstance(v, (int, float, np.number)) and math.isfinite(v) else "—"


def fmt_tokens(v: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


# ------------------------------------------------------------------------------------------- blocks


@dataclass
class Block:
    kind: str  # h1 h2 h3 p list table img note
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: str = ""


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "note":
            out.append("\n".join("> " + line for line in b.text.splitlines()))
        elif b.kind == "list":
            out.append("\n".join(f"- {x}" for x in b.items))
        elif b.kind == "table":
            out.append("\n".join(["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
                                 + ["| " + " | ".join(r) + " |" for r in b.rows]))
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """The little markdown the report uses inline (**bold**, `code`), escaped for HTML."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def to_html(blocks: list[Block], directory: Path, title: str) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
           "table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .5em;"
           "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
           "blockquote{border-left:4px solid #c60;margin:1em 0;padding:.3em 1em;background:#fff7ef}"
           "img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .2em}")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{css}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "note":
            out.append("<blockquote>" + "<br>".join(_inline(x) for x in b.text.splitlines()) + "</blockquote>")
        elif b.kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b.items) + "</ul>")
        elif b.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b.header) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in b.rows)
                       + "</table>")
        elif b.kind == "img":
            data = base64.b64encode((directory / b.path).read_bytes()).decode()
            out.append(f"<figure><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{_inline(b.text)}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ figures


def _records(fits: list[dict[str, Any]], **key) -> list[dict[str, Any]]:
    return [r for r in fits if all(str(r.get(k)) == str(v) for k, v in key.items())]


def plot_task(task: str, pts: pd.DataFrame, fits: list[dict[str, Any]], path: Path, model: str, method: str) -> None:
    """One row per mixture: BLEU vs Dp and CE vs Dp, a curve per Df, the fitted law through the fit points
    (solid) and extended over the held-out ones (dashed), held-out points hollow, Dp = 0 as a dotted line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = list(dict.fromkeys(pts["mixture"]))
    dfs = sorted(pts["df"].unique())
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, max(len(dfs), 2)))
    fig, axes = plt.subplots(len(mixes), 2, figsize=(11, 3.6 * len(mixes)), squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[pts["mixture"] == mix]
        align = g["alignment"].iloc[0]
        for j, (metric, label) in enumerate((("bleu", "BLEU"), ("ce", "downstream cross-entropy (nats/token)"))):
            ax = axes[i][j]
            for c, df_ in zip(colors, dfs):
                d = g[(g["df"] == df_) & (g["dp"] > 0)].sort_values("dp")
                base = g[(g["df"] == df_) & (g["dp"] == 0)]
                rec = next(iter(_records(fits, task=task, mixture=mix, df=df_, metric=metric, model=model, method=method)), None)
                hold = np.array(rec["points"]["holdout"], dtype=bool) if rec and rec.get("points") else np.zeros(len(d), bool)
                if len(hold) != len(d):
                    hold = np.zeros(len(d), bool)
                x, y = d["dp"].to_numpy(float), d[metric].to_numpy(float)
                ax.plot(x[~hold], y[~hold], "o", color=c, label=f"Df = {df_:,}")
                if hold.any():
                    ax.plot(x[hold], y[hold], "o", mfc="white", color=c)
                if rec and rec.get("ok") and rec["curve"]["y"]:
                    cx, cy = np.array(rec["curve"]["x"]), np.array(rec["curve"]["y"])
                    last_fit = x[~hold].max() if (~hold).any() else x.max()
                    inside = (cx >= x.min()) & (cx <= last_fit)
                    beyond = cx >= last_fit
                    ax.plot(cx[inside], cy[inside], "-", color=c, lw=1.5)
                    ax.plot(cx[beyond & (cx <= x.max() * 2)], cy[beyond & (cx <= x.max() * 2)], "--", color=c, lw=1.5)
                    if "lo" in rec["curve"]:
                        lo, hi = np.array(rec["curve"]["lo"]), np.array(rec["curve"]["hi"])
                        sel = (cx >= x.min()) & (cx <= x.max() * 2)
                        ax.fill_between(cx[sel], lo[sel], hi[sel], color=c, alpha=0.12, lw=0)
                if len(base):
                    ax.axhline(float(base[metric].iloc[0]), color=c, ls=":", lw=1.2)
            ax.set_xscale("log")
            ax.set_xlabel("pretraining data Dp (raw text tokens, log scale)")
            ax.set_ylabel(label)
            ax.set_title(f"{task} · {mix} (alignment {align:.2f}) · {label.split(' (')[0]}", fontsize=10)
            ax.grid(True, which="both", alpha=0.25)
    handles, labels = axes[0][0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles += [Line2D([], [], marker="o", ls="", color="gray", label="fit point"),
                Line2D([], [], marker="o", ls="", mfc="white", color="gray", label="held-out point"),
                Line2D([], [], ls="-", color="gray", label="fitted law"),
                Line2D([], [], ls="--", color="gray", label="law extrapolated"),
                Line2D([], [], ls=":", color="gray", label="no pretraining (Dp = 0)")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.05 if len(mixes) > 1 else 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bleu_vs_ce(task: str, pts: pd.DataFrame, path: Path) -> None:
    """Isik et al. Fig. 5: BLEU against downstream CE, one colour per mixture, marker size by Df."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    dfs = sorted(pts["df"].unique())
    sizes = {d: 25 + 60 * i for i, d in enumerate(dfs)}
    for k, (mix, g) in enumerate(pts.groupby("mixture", sort=False)):
        ax.scatter(g["ce"], g["bleu"], s=[sizes[d] for d in g["df"]], color=f"C{k}", alpha=0.8,
                   label=f"{mix} (alignment {g['alignment'].iloc[0]:.2f})", edgecolor="black", linewidth=0.4)
    for d in dfs:
        ax.scatter([], [], s=sizes[d], color="lightgray", edgecolor="black", linewidth=0.4, label=f"Df = {d:,}")
    ax.set_xlabel("downstream cross-entropy (nats/token)")
    ax.set_ylabel("BLEU")
    ax.set_title(f"{task}: BLEU against cross-entropy (every Dp, Df)", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- verdicts


def verdicts(task: str, pts: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], model: str,
             method: str) -> list[str]:
    """Plain sentences generated from the numbers."""
    out = []
    g = pts[pts["task"] == task]
    dfs = sorted(g["df"].unique())
    f = fits_df[(fits_df["task"] == task) & (fits_df["model"] == model) & (fits_df["method"] == method)]
    for mix, gm in g.groupby("mixture", sort=False):
        bl = f[(f["mixture"] == mix) & (f["law"] == "bleu_log")]
        ok = bl[bl["ok"].astype(str).str.lower() == "true"]
        good = ok[ok["holdout_mre"].fillna(np.inf) <= GOOD_MRE]
        align = gm["alignment"].iloc[0]
        if len(bl) and len(good) == len(bl):
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): BLEU follows the log-law at every Df "
                       f"(held-out relative error ≤ {GOOD_MRE:.0%}).")
        elif len(ok):
            worst = ok.sort_values("holdout_mre", na_position="first").iloc[-1]
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): the BLEU log-law fits {len(ok)} of {len(bl)} Df values; "
                       f"the worst held-out relative error is {fmt(worst['holdout_mre'] * 100, 3)}% at Df = {fmt(int(worst['df']))}.")
        else:
            reasons = "; ".join(sorted({str(r) for r in bl["reason"].dropna()})) or "no fit was possible"
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): no BLEU law could be fitted ({reasons}).")
        for r in _records(fits, task=task, mixture=mix, metric="verdict", model=model, method=method):
            if r.get("misaligned") or r.get("flag"):
                out.append(f"**{mix}**, Df = {fmt(int(r['df']))}: {r.get('sentence') or r.get('message')}")
        for _, r in ok.iterrows():
            last = gm[(gm["df"] == r["df"]) & (gm["dp"] > 0)].sort_values("dp").iloc[-1]
            gain = r["next_rung_pred"] - last["bleu"]
            out.append(f"**{mix}**, Df = {fmt(int(r['df']))}: doubling Dp to {fmt_tokens(r['next_rung'])} tokens is predicted "
                       f"to move BLEU from {fmt(last['bleu'], 3)} to {fmt(r['next_rung_pred'], 3)} ({gain:+.2f}).")
    # Does pretraining still matter at the largest Df?
    if len(dfs) >= 2:
        for mix, gm in g.groupby("mixture", sort=False):
            gains = {}
            for d in dfs:
                s = gm[gm["df"] == d].sort_values("dp")
                if len(s) >= 2 and (s["dp"] == 0).any():
                    gains[d] = float(s["bleu"].iloc[-1] - s[s["dp"] == 0]["bleu"].iloc[0])
            if len(gains) >= 2:
                lo, hi = dfs[0], dfs[-1]
                if lo in gains and hi in gains:
                    small = abs(gains[hi]) < 0.5 or (gains[lo] > 0 and gains[hi] < 0.25 * gains[lo])
                    out.append(f"**{mix}**: pretraining adds {gains[lo]:+.2f} BLEU over no pretraining at Df = {fmt(int(lo))} "
                               f"and {gains[hi]:+.2f} at Df = {fmt(int(hi))}"
                               + (" — at the largest Df pretraining no longer matters much." if small else "."))
    # Alignment: which mixture wins at the largest Dp, per Df.
    mixes = list(dict.fromkeys(g["mixture"]))
    if len(mixes) >= 2:
        for d in dfs:
            top = g[(g["df"] == d) & (g["dp"] > 0)]
            if top.empty:
                continue
            best = top.sort_values("dp").groupby("mixture").tail(1).sort_values("bleu", ascending=False)
            desc = ", ".join(f"{r['mixture']} {fmt(r['bleu'], 3)} (A = {fmt(r['alignment'], 3)})" for _, r in best.iterrows())
            out.append(f"At the largest Dp and Df = {fmt(int(d))}, BLEU by mixture: {desc}.")
    return out


# ------------------------------------------------------------------------------------------ document


def _fit_table(fits_df: pd.DataFrame, law: str, names: list[str]) -> Block:
    rows = []
    for _, r in fits_df[fits_df["law"] == law].iterrows():
        ok = str(r["ok"]).lower() == "true"
        cells = [str(r["task"]), str(r["mixture"]), str(r["model"]), str(r["method"]), fmt(r["df"]) if str(r["df"]) != "all" else "all"]
        for n in names:
            v, lo, hi = r.get(f"p_{n}"), r.get(f"ci_{n}_lo"), r.get(f"ci_{n}_hi")
            ci = f" [{fmt(lo)}, {fmt(hi)}]" if ok and lo is not None and not pd.isna(lo) else ""
            cells.append(fmt(v) + ci if ok else "—")
        cells += [fmt_count(r.get("n_fit")), fmt_count(r.get("n_holdout")), fmt(r.get("holdout_mae")),
                  fmt(r["holdout_mre"] * 100) + "%" if ok and not pd.isna(r.get("holdout_mre")) else "—",
                  "ok" if ok else f"failed: {r.get('reason')}"]
        rows.append(cells)
    return Block("table", header=["task", "mixture", "model", "method", "Df", *names, "fit points", "held-out points",
                                  "held-out abs. error", "held-out rel. error", "fit"], rows=rows)


def build(results: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], out: Path, spec: dict[str, Any],
          tracker=None) -> list[Block]:
    scale = spec.get("scale") or {}
    sweep = spec.get("sweep", "")
    ok_rows = usable(results)
    pts = seed_means(ok_rows)
    blocks = [Block("h1", f"Downstream scaling report — sweep `{sweep}`")]
    models = sorted(results["model"].dropna().unique())
    params = {m: results.loc[results["model"] == m, "params"].dropna() for m in models}
    model_desc = ", ".join(f"{m} ({fmt_tokens(float(p.iloc[0]))} parameters)" if len(p) else m for m, p in params.items())
    sigs = sorted(results["bleu_signature"].dropna().unique()) if "bleu_signature" in results else []
    shas = sorted(results["git_sha"].dropna().astype(str).unique()) if "git_sha" in results else []
    src = spec.get("data_source", "l10n")
    blocks.append(Block("note", "\n".join([
        f"**Scale: {scale.get('name', '?')}** — {scale.get('description', '')}. "
        + ("This is a toy-scale run: trends only, not the paper's numbers." if scale.get("name") in ("smoke", "cpu") else ""),
        f"Data: {DATA_NOTES.get(src, src)}.",
        f"Models: {model_desc}. Cells: {int((results['status'] == 'ok').sum())} of {len(results)} evaluated.",
        f"sacreBLEU: {'; '.join(sigs) or 'n/a'}. Code: {', '.join(shas) or git_sha()}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{spec.get('results_name', 'results.csv')}`.",
    ])))
    blocks.append(Block("h2", "Verdicts"))
    items = []
    for task in dict.fromkeys(pts["task"]):
        for model in models:
            for method in sorted(pts["method"].unique()):
                for s in verdicts(task, pts[(pts["model"] == model) & (pts["method"] == method)], fits_df, fits, model, method):
                    items.append(f"{task} · {model} · {method}: {s}")
    blocks.append(Block("list", items=items or ["No evaluated cells yet: nothing to conclude."]))

    bad = results[results["status"] != "ok"]
    blocks.append(Block("h2", "Cells"))
    blocks.append(Block("p", f"{int((results['status'] == 'ok').sum())} of {len(results)} cells evaluated; "
                             f"{int((results['status'] == 'missing').sum())} missing, {int((results['status'] == 'failed').sum())} failed."))
    if len(bad):
        blocks.append(Block("table", header=["task", "mixture", "model", "Dp rung", "Df", "seed", "method", "status", "reason"],
                            rows=[[str(r["task"]), str(r["mixture"]), str(r["model"]), fmt(r.get("dp_rung")), fmt(r["df"]),
                                   fmt(r.get("seed")), str(r.get("method")), str(r["status"]), str(r.get("reason"))]
                                  for _, r in bad.iterrows()]))

    blocks.append(Block("h2", "Mixtures and alignment"))
    al = results.drop_duplicates(["task", "mixture"])[["task", "mixture", "alignment"]]
    blocks.append(Block("p", "Alignment score A = P_src·P_dest + 0.7·P_src + 0.8·P_dest (Isik et al., Eq. 2), "
                             "computed from each mixture's language weights."))
    blocks.append(Block("table", header=["task", "mixture", "alignment"],
                        rows=[[str(r["task"]), str(r["mixture"]), fmt(r["alignment"])] for _, r in al.iterrows()]))

    blocks.append(Block("h2", "Figures"))
    for task in dict.fromkeys(pts["task"]):
        for model in models:
            for method in sorted(pts["method"].unique()):
                sel = pts[(pts["task"] == task) & (pts["model"] == model) & (pts["method"] == method)]
                if sel.empty:
                    continue
                tag = f"{task}_{model}_{method}"
                name = f"fig_{tag}_dp.png"
                plot_task(task, sel, fits, out / name, model, method)
                blocks.append(Block("img", f"{task} · {model} · {method}: BLEU and cross-entropy against Dp, one curve per Df",
                                    path=name))
                name2 = f"fig_{tag}_bleu_vs_ce.png"
                plot_bleu_vs_ce(task, sel, out / name2)
                blocks.append(Block("img", f"{task} · {model} · {method}: BLEU against cross-entropy (Isik et al. Fig. 5)",
                                    path=name2))
                if tracker is not None:
                    tracker.log_image(f"report/{tag}_dp", out / name)
                    tracker.log_image(f"report/{tag}_bleu_vs_ce", out / name2)

    blocks.append(Block("h2", "Fitted laws"))
    blocks.append(Block("p", "Fitted on the smaller Dp rungs, scored on the largest held out (extrapolation); "
                             "brackets are 90% bootstrap intervals; Dp in raw text tokens."))
    blocks.append(Block("h3", "BLEU: f(Dp) = (log(A·Dp^α))^β (Isik et al. Eq. 1, Huber δ = 0.1)"))
    blocks.append(_fit_table(fits_df, "bleu_log", _param_names(fits_df, "bleu_log")))
    blocks.append(Block("h3", "Cross-entropy: L(Dp) = E + A/Dp^α (Isik et al. Eq. 3, Huber δ = 1e-3)"))
    blocks.append(_fit_table(fits_df, "power", _param_names(fits_df, "power")))
    if (fits_df["law"] == "joint").any():
        blocks.append(Block("h3", "Joint law L(Dp, Df) = A·Dp^−α·Df^−β + E (Zhang et al. 2024), cross-entropy"))
        blocks.append(_fit_table(fits_df, "joint", _param_names(fits_df, "joint")))

    blocks.append(Block("h2", "Held-out extrapolation, per point"))
    hrows = []
    for r in fits:
        for h in r.get("holdout") or []:
            hrows.append([str(r["task"]), str(r["mixture"]), str(r["model"]), str(r.get("method")), fmt(r["df"]),
                          r["metric"], fmt_tokens(float(np.atleast_1d(h["x"])[0])), fmt(h["y"]), fmt(h["pred"]),
                          fmt(h["abs_err"]), fmt(h["rel_err"] * 100) + "%"])
    blocks.append(Block("table", header=["task", "mixture", "model", "method", "Df", "metric", "Dp", "observed",
                                         "predicted", "abs. error", "rel. error"], rows=hrows)
                  if hrows else Block("p", "No held-out points (too few rungs, or no fit succeeded)."))

    blocks.append(Block("h2", "All cells"))
    cols = ["task", "mixture", "model", "method", "dp", "df", "seed", "bleu", "chrf", "ce", "bp", "gen_len", "finetune_steps"]
    blocks.append(Block("table", header=["task", "mixture", "model", "method", "Dp", "Df", "seed", "BLEU", "chrF", "CE",
                                         "BP", "gen. length", "finetune steps"],
                        rows=[[fmt(r[c]) if not isinstance(r[c], str) else r[c] for c in cols]
                              for _, r in ok_rows.sort_values(["task", "mixture", "df", "dp"]).iterrows()]))
    return blocks


def _param_names(fits_df: pd.DataFrame, law: str) -> list[str]:
    sub = fits_df[fits_df["law"] == law]
    return [c[2:] for c in sub.columns if c.startswith("p_") and sub[c].notna().any()]


def run(task) -> None:
    from pipeline.tracking import make_tracker

    spec = task.spec
    out = Path(spec["reports_dir"])
    results_path = Path(spec["results"]) if spec.get("results") else out / "results.csv"
    if not results_path.exists():
        raise ResultsError(f"no results table at {results_path}: run the sweep (or `stage=collect`) first")
    results = load_results(results_path)
    fits_df = pd.read_csv(out / "fits.csv") if (out / "fits.csv").stat().st_size > 1 else pd.DataFrame(columns=["law"])
    fits = json.loads((out / "fits.json").read_text())
    tracker = make_tracker(out, spec.get("tracking"), run_id=f"report-{spec['sweep']}", name=f"report-{spec['sweep']}",
                           file="report-metrics.jsonl", group="report")
    try:
        blocks = build(results, fits_df, fits, out, {**spec, "results_name": results_path.name}, tracker)
    finally:
        tracker.close()
    title = f"Downstream scaling report — {spec['sweep']}"
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_bytes(out / "report.html", to_html(blocks, out, title).encode())
    print(f"report: {out / 'report.html'}")
