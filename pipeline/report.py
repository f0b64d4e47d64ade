"""Stage `report`: the study a researcher reads — figures, fitted laws, extrapolation errors, verdicts, and
the three questions of issue #10 (upstream loss -> downstream, model size, finetuning method).

Reads `results.csv` and the fit stage's `fits.csv`, `fits.json`, `correlations.csv` and `methods.csv` only, so
it runs on a table copied back from a cluster. Writes `report.md`, a self-contained `report.html` (figures
embedded), the figures as PNG. The document is built once as a list of blocks and rendered to both formats,
so every number is the same in both, and every number in a table comes from those files (a test checks it).
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_write_bytes, atomic_write_text, git_sha
from pipeline.fit import excluded, seed_means, stage_results, usable
from pipeline.results import is_ok

log = logging.getLogger(__name__)

DATA_NOTES = {
    "l10n": "the offline corpus built from the translations in Debian packages (software UI and help text, "
            "median 7-8 words a sentence); BLEU here is not comparable with WMT newstest numbers",
    "hub": "mC4 (allenai/c4) for pretraining and WMT (en-de WMT17, en-fr WMT15, en-ro WMT16) for finetuning and test",
    "local": "the user's own files (data=local)",
}
LONG = 12  # tables with more rows than this are collapsed in the HTML (and on GitHub)
GOOD_MRE = 0.10  # a law "holds" when its held-out relative error is below this
DP_LABEL = "pretraining data Dp (raw text tokens, log scale)"
CE_LABEL = "downstream cross-entropy (nats/token)"
UP_LABEL = {"mixture": "upstream loss on the pretraining mixture (nats/token)",
            "tgt": "upstream loss on target-language text (nats/token)"}
METRIC = {"bleu": "BLEU", "ce": "CE", "chrf": "chrF", "upstream": "upstream loss"}


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
    if isinstance(v, str) and re.fullmatch(r"\d+(\.0*)?", v):
        v = float(v)
    return fmt(int(v)) if isinstance(v, (int, float, np.number)) and math.isfinite(v) else "—"


def fmt_df(v: Any) -> str:
    """A Df key: a count, or 'all' for laws pooled over Df (fits.csv holds both, so pandas reads strings)."""
    return "all" if str(v) == "all" else fmt_count(v)


def fmt_pct(v: Any) -> str:
    """A relative error (0.05) as a percentage (5.000%)."""
    return fmt(float(v) * 100) + "%" if _finite(v) else "—"


def fmt_ci(v: Any, lo: Any, hi: Any) -> str:
    """A value with its bootstrap interval, `v [lo, hi]`, or the value alone when there is no interval."""
    return fmt(v) + (f" [{fmt(lo)}, {fmt(hi)}]" if _finite(lo) and _finite(hi) else "")


def fmt_tokens(v: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.0f}"


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _num(v: Any) -> float:
    return float(v) if _finite(v) else math.nan


def plain_reason(reason: Any, metric: str = "") -> str:
    """A fitter's reason in the words a reader of this study needs."""
    r = str(reason)
    if r.startswith("y must be > 0") and metric == "bleu":
        return "BLEU is 0 at some Dp, and the log-law needs BLEU > 0"
    return r


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# ------------------------------------------------------------------------------------------- blocks


@dataclass
class Block:
    kind: str  # h1 h2 h3 p list table img note details
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: str = ""
    children: list[Block] = field(default_factory=list)  # details: collapsed until clicked (GitHub renders it too)


def details(summary: str, blocks: list[Block]) -> Block:
    return Block("details", summary, children=blocks)


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
                                 + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in b.rows]))
        elif b.kind == "img":
            out.append(f"![{b.text}]({b.path})")
        elif b.kind == "details":
            out.append(f"<details><summary>{html.escape(b.text)}</summary>\n\n{to_markdown(b.children)}\n</details>")
        out.append("")
    return "\n".join(out)


def _inline(text: str) -> str:
    """The little markdown the report uses inline (**bold**, `code`), escaped for HTML."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def to_html(blocks: list[Block], directory: Path, title: str) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
           "table{border-collapse:collapse;margin:.6em 0;font-size:.88em}td,th{border:1px solid #ccc;padding:.25em .5em;"
           "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
           "blockquote{border-left:4px solid #c60;margin:1em 0;padding:.3em 1em;background:#fff7ef}"
           "img{max-width:100%;border:1px solid #eee}code{background:#f4f4f4;padding:0 .2em}")
    css += "details{margin:.6em 0}summary{cursor:pointer;color:#345;font-weight:600}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{css}</style></head><body>\n{_html_blocks(blocks, directory)}\n</body></html>")


def _html_blocks(blocks: list[Block], directory: Path) -> str:
    out = []
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
        elif b.kind == "details":
            out.append(f"<details><summary>{_inline(b.text)}</summary>{_html_blocks(b.children, directory)}</details>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ figures


def _records(fits: list[dict[str, Any]], **key) -> list[dict[str, Any]]:
    return [r for r in fits if all(str(r.get(k)) == str(v) for k, v in key.items())]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_law(ax, rec: dict[str, Any] | None, color, x_pts: np.ndarray) -> None:
    """A fitted law through its fit points (solid), extended over the held-out ones and one rung beyond
    (dashed), with its bootstrap band; nothing when the fit failed."""
    if not rec or not rec.get("ok") or not (rec.get("curve") or {}).get("y") or not len(x_pts):
        return
    cx, cy = np.array(rec["curve"]["x"]), np.array(rec["curve"]["y"], dtype=float)
    hold = np.array((rec.get("points") or {}).get("holdout") or [], dtype=bool)
    fit_x = np.array((rec.get("points") or {}).get("x") or x_pts, dtype=float)
    last_fit = fit_x[~hold].max() if len(hold) == len(fit_x) and (~hold).any() else x_pts.max()
    end = x_pts.max() * 2
    inside, beyond = (cx >= x_pts.min()) & (cx <= last_fit), (cx >= last_fit) & (cx <= end)
    ax.plot(cx[inside], cy[inside], "-", color=color, lw=1.5)
    ax.plot(cx[beyond], cy[beyond], "--", color=color, lw=1.5)
    if "lo" in rec["curve"]:
        lo, hi = np.array(rec["curve"]["lo"], dtype=float), np.array(rec["curve"]["hi"], dtype=float)
        sel = (cx >= x_pts.min()) & (cx <= end)
        ax.fill_between(cx[sel], lo[sel], hi[sel], color=color, alpha=0.12, lw=0)


def _draw_points(ax, x: np.ndarray, y: np.ndarray, hold: np.ndarray, color, label: str, marker: str = "o") -> None:
    ax.plot(x[~hold], y[~hold], marker, color=color, label=label)
    if hold.any():
        ax.plot(x[hold], y[hold], marker, mfc="white", color=color)


def _holdout_of(rec: dict[str, Any] | None, n: int) -> np.ndarray:
    hold = np.array((rec or {}).get("points", {}).get("holdout") or [], dtype=bool)
    return hold if len(hold) == n else np.zeros(n, bool)


def _style_dp_axis(ax, ylabel: str, title: str, bleu: bool = False) -> None:
    # a log axis with no positive x raises at draw time: say what is missing instead
    if np.isfinite(ax.dataLim.x1) and ax.dataLim.x1 > 0:
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no evaluated Dp > 0 point", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_xlabel(DP_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.25)
    if bleu:
        _bleu_ylim(ax)


def _bleu_ylim(ax) -> None:
    # BLEU is on [0, 100]: from 0, and at least one point tall, so a flat 0 is not drawn as 1e-17 noise
    top = ax.dataLim.y1 if np.isfinite(ax.dataLim.y1) else 1.0
    ax.set_ylim(0, max(1.0, top * 1.08))


def _no_fit_note(ax, reasons: list[str]) -> None:
    """A failed fit says why inside its panel (a reader of the figure alone should not think it was forgotten)."""
    if reasons:
        text = "no law: " + "; ".join(dict.fromkeys(reasons))
        ax.text(0.02, 0.97, textwrap.fill(text, 60), transform=ax.transAxes, ha="left", va="top", fontsize=7.5,
                color="dimgray", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})


def _legend_keys(extra: list[tuple[str, dict]] | None = None) -> list:
    from matplotlib.lines import Line2D

    keys = [Line2D([], [], marker="o", ls="", color="gray", label="fit point"),
            Line2D([], [], marker="o", ls="", mfc="white", color="gray", label="held-out point"),
            Line2D([], [], ls="-", color="gray", label="fitted law (band: 90% bootstrap)"),
            Line2D([], [], ls="--", color="gray", label="law extrapolated"),
            Line2D([], [], ls=":", color="gray", label="no pretraining (Dp = 0)")]
    return keys + [Line2D([], [], label=label, **kw) for label, kw in (extra or [])]


def _save(fig, path: Path, legend: list, title: str, ncol: int = 5) -> None:
    """Suptitle on top, the legend below the panels (never over data), PNG at 100 dpi in 128 colours:
    the reports are committed as examples, so a figure is a few tens of kB. Margins are fixed in inches
    (tight_layout costs seconds a figure on a busy CPU)."""
    from PIL import Image

    w, h = fig.get_size_inches()
    nrows, ncols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / h, va="top")
    rows = math.ceil(len(legend) / ncol) if legend else 0
    if legend:
        fig.legend(handles=legend, loc="lower center", ncol=min(len(legend), ncol), frameon=False, fontsize=9)
    top, bottom, left, right, gap_v, gap_h = 0.75, 0.75 + 0.25 * rows, 0.8, 0.2, 0.95, 0.9
    ax_h = (h - top - bottom - (nrows - 1) * gap_v) / nrows
    ax_w = (w - left - right - (ncols - 1) * gap_h) / ncols
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h,
                        hspace=gap_v / ax_h, wspace=gap_h / ax_w)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100)
    _plt().close(fig)
    im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    buf = io.BytesIO()
    im.save(buf, "PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())


def _dp_fit_reasons(recs: list[dict[str, Any] | None], metric: str) -> list[str]:
    return [plain_reason(r.get("reason"), metric) for r in recs if r and not r.get("ok")]


def plot_task(task: str, pts: pd.DataFrame, fits: list[dict[str, Any]], path: Path, model: str, method: str) -> None:
    """One row per mixture: BLEU vs Dp and CE vs Dp, a colour per Df, the fitted law through the fit points
    (solid) and extended over the held-out ones (dashed), held-out points hollow, Dp = 0 as a dotted line."""
    plt = _plt()
    mixes = list(dict.fromkeys(pts["mixture"]))
    dfs = sorted(pts["df"].unique())
    colors = plt.cm.viridis(np.linspace(0.05, 0.85, max(len(dfs), 2)))
    fig, axes = plt.subplots(len(mixes), 2, figsize=(10, 3.6 * len(mixes) + 1.2), squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[pts["mixture"] == mix]
        align = g["alignment"].iloc[0]
        for j, (metric, label) in enumerate((("bleu", "BLEU"), ("ce", CE_LABEL))):
            ax, recs = axes[i][j], []
            for c, df_ in zip(colors, dfs):
                d = g[(g["df"] == df_) & (g["dp"] > 0)].sort_values("dp")
                base = g[(g["df"] == df_) & (g["dp"] == 0)]
                rec = next(iter(_records(fits, task=task, mixture=mix, df=df_, model=model, method=method,
                                         law={"bleu": "bleu_log", "ce": "power"}[metric])), None)
                recs.append(rec)
                x, y = d["dp"].to_numpy(float), d[metric].to_numpy(float)
                _draw_points(ax, x, y, _holdout_of(rec, len(d)), c, f"Df = {df_:,}")
                _draw_law(ax, rec, c, x)
                if len(base):
                    ax.axhline(float(base[metric].iloc[0]), color=c, ls=":", lw=1.2)
            _style_dp_axis(ax, label, f"{mix} (alignment {align:.2f}) · {METRIC[metric]}", bleu=metric == "bleu")
            _no_fit_note(ax, _dp_fit_reasons(recs, metric))
    handles = [h for h in axes[0][0].get_legend_handles_labels()[0]]
    _save(fig, path, handles + _legend_keys(), f"{task} · {model} · {method} finetuning: BLEU and CE against Dp")


def plot_bleu_vs_ce(task: str, pts: pd.DataFrame, path: Path, model: str, method: str) -> None:
    """Isik et al. Fig. 5: BLEU against downstream CE, one colour per mixture, marker size by Df, hollow at Dp = 0."""
    from matplotlib.lines import Line2D

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5.6))
    dfs = sorted(pts["df"].unique())
    sizes = {d: 25 + 60 * i for i, d in enumerate(dfs)}
    legend = []
    for k, (mix, g) in enumerate(pts.groupby("mixture", sort=False)):
        for base, d in ((False, g[g["dp"] > 0]), (True, g[g["dp"] == 0])):
            ax.scatter(d["ce"], d["bleu"], s=[sizes[v] for v in d["df"]], alpha=0.8, linewidth=0.8 if base else 0.4,
                       color="white" if base else f"C{k}", edgecolor=f"C{k}" if base else "black")
        legend.append(Line2D([], [], marker="o", ls="", color=f"C{k}", mec="black", mew=0.4,
                             label=f"{mix} (alignment {g['alignment'].iloc[0]:.2f})"))
    legend += [Line2D([], [], marker="o", ls="", color="lightgray", mec="black", mew=0.4, ms=math.sqrt(sizes[d]),
                      label=f"Df = {d:,}") for d in dfs]
    legend.append(Line2D([], [], marker="o", ls="", mfc="white", color="gray", label="no pretraining (Dp = 0)"))
    ax.set_xlabel(CE_LABEL)
    ax.set_ylabel("BLEU")
    ax.grid(True, alpha=0.25)
    _bleu_ylim(ax)
    _save(fig, path, legend, f"{task} · {model} · {method}: BLEU against CE, every Dp and Df", ncol=3)


MARKERS = "osD^vP*X"


def plot_upstream(task: str, pts: pd.DataFrame, path: Path, model: str, method: str) -> None:
    """Question 1: CE and BLEU against the upstream loss (mixture and target language), a colour per mixture,
    a marker per Df, each (mixture, Df) joined in Dp order (larger Dp: lower upstream loss)."""
    from matplotlib.lines import Line2D

    plt = _plt()
    p = pts[pts["dp"] > 0]
    dfs = sorted(p["df"].unique())
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), squeeze=False)
    for i, (up, col) in enumerate((("mixture", "upstream"), ("tgt", "upstream_tgt"))):
        for j, metric in enumerate(("ce", "bleu")):
            ax = axes[i][j]
            for k, (_, g) in enumerate(p.groupby("mixture", sort=False)):
                for m, d in zip(MARKERS, dfs):
                    s = g[g["df"] == d].sort_values("dp")
                    ax.plot(s[col], s[metric], "-" + m, color=f"C{k}", alpha=0.85, ms=5, lw=0.8)
            if not np.isfinite(p[col].to_numpy(float)).any():
                ax.text(0.5, 0.5, "no upstream loss recorded", transform=ax.transAxes, ha="center", color="gray")
            ax.set_xlabel(UP_LABEL[up])
            ax.set_ylabel(CE_LABEL if metric == "ce" else "BLEU")
            ax.set_title(f"{METRIC[metric]} against {UP_LABEL[up].split(' (')[0]}", fontsize=10)
            ax.grid(True, alpha=0.25)
            if metric == "bleu":
                _bleu_ylim(ax)
    legend = [Line2D([], [], color=f"C{k}", label=f"{mix} (alignment {g['alignment'].iloc[0]:.2f})")
              for k, (mix, g) in enumerate(p.groupby("mixture", sort=False))]
    legend += [Line2D([], [], marker=m, ls="", color="gray", label=f"Df = {d:,}") for m, d in zip(MARKERS, dfs)]
    _save(fig, path, legend, f"{task} · {model} · {method}: downstream metrics against the upstream loss "
                             "(points joined in Dp order)")


def plot_sizes(task: str, pts: pd.DataFrame, fits: list[dict[str, Any]], path: Path, method: str) -> None:
    """Question 2: per mixture, the upstream loss, CE and BLEU against Dp at the largest Df, a colour per model
    size, with each size's fitted laws (upstream loss: Chinchilla's joint fit evaluated at the model's size)."""
    plt = _plt()
    mixes = list(dict.fromkeys(pts["mixture"]))
    models = list(dict.fromkeys(pts.sort_values("params")["model"]))
    df_max = pts["df"].max()
    fig, axes = plt.subplots(len(mixes), 3, figsize=(14, 3.6 * len(mixes) + 1.2), squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[(pts["mixture"] == mix) & (pts["df"] == df_max)]
        ch = next(iter(_records(fits, task=task, mixture=mix, law="chinchilla")), None)
        recs: dict[str, list] = {"ce": [], "bleu": []}
        for k, model in enumerate(models):
            c = f"C{k}"
            gm = g[g["model"] == model]
            d = gm[gm["dp"] > 0].sort_values("dp")
            x = d["dp"].to_numpy(float)
            base = gm[gm["dp"] == 0]
            params = gm["params"].iloc[0] if len(gm) else math.nan
            axes[i][0].plot(x, d["upstream"], "o", color=c, label=f"{model} ({fmt_tokens(params)} parameters)"
                            if _finite(params) else model)
            if ch and ch.get("ok") and _finite(params) and len(x):
                grid = np.geomspace(x.min(), x.max() * 2, 40)
                axes[i][0].plot(grid, _chinchilla(ch["params"], params, grid), "-", color=c, lw=1.2)
            for j, (metric, law) in enumerate((("ce", "power"), ("bleu", "bleu_log")), start=1):
                rec = next(iter(_records(fits, task=task, mixture=mix, model=model, method=method, df=df_max,
                                         law=law)), None)
                recs[metric].append(rec)
                _draw_points(axes[i][j], x, d[metric].to_numpy(float), _holdout_of(rec, len(d)), c, model)
                _draw_law(axes[i][j], rec, c, x)
                if len(base):
                    axes[i][j].axhline(float(base[metric].iloc[0]), color=c, ls=":", lw=1.2)
        align = g["alignment"].iloc[0] if len(g) else math.nan
        for j, (label, what, metric) in enumerate((("upstream loss, mixture (nats/token)", "upstream loss", None),
                                                   (CE_LABEL, f"CE at Df = {df_max:,}", "ce"),
                                                   ("BLEU", f"BLEU at Df = {df_max:,}", "bleu"))):
            _style_dp_axis(axes[i][j], label, f"{mix} (alignment {align:.2f}) · {what}", bleu=metric == "bleu")
            if metric:
                _no_fit_note(axes[i][j], _dp_fit_reasons(recs[metric], metric))
        if ch and not ch.get("ok"):
            _no_fit_note(axes[i][0], [str(ch.get("reason"))])
    handles, _ = axes[0][0].get_legend_handles_labels()
    _save(fig, path, handles + _legend_keys(), f"{task} · {method} finetuning: model sizes side by side "
                                                "(upstream loss: Chinchilla's law fitted across sizes)", ncol=4)


def _chinchilla(p: dict[str, float], n: float, dp: np.ndarray) -> np.ndarray:
    return p["E"] + p["A"] / n ** p["alpha"] + p["B"] / dp ** p["beta"]


def plot_methods(task: str, pts: pd.DataFrame, path: Path, model: str) -> None:
    """Question 3: per mixture, BLEU and CE against Dp, a colour per method and a line style per Df, and the
    gap to full finetuning against Dp (where the methods' curves differ)."""
    from matplotlib.lines import Line2D

    plt = _plt()
    mixes = list(dict.fromkeys(pts["mixture"]))
    methods = sorted(pts["method"].unique(), key=lambda m: (m != "full", m))
    dfs = sorted(pts["df"].unique())
    styles = ["-", "--", "-.", ":"] * 4
    fig, axes = plt.subplots(len(mixes), 3, figsize=(14, 3.6 * len(mixes) + 1.2), squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[pts["mixture"] == mix]
        for k, method in enumerate(methods):
            for ls, d in zip(styles, dfs):
                s = g[(g["method"] == method) & (g["df"] == d)].sort_values("dp")
                pos = s[s["dp"] > 0]
                for j, metric in enumerate(("bleu", "ce")):
                    axes[i][j].plot(pos["dp"], pos[metric], ls, marker="o", ms=4, color=f"C{k}")
                    base = s[s["dp"] == 0]
                    if len(base):  # Dp = 0 cannot sit on a log axis: a marker at the left edge
                        axes[i][j].plot([pos["dp"].min() / 2 if len(pos) else 1], [base[metric].iloc[0]], "<",
                                        color=f"C{k}", ms=7)
                if method != methods[0]:
                    ref = g[(g["method"] == methods[0]) & (g["df"] == d)].set_index("dp")["ce"]
                    gap = (s.set_index("dp")["ce"] - ref).dropna()
                    gp = gap[gap.index > 0]
                    axes[i][2].plot(gp.index, gp.values, ls, marker="o", ms=4, color=f"C{k}")
                    if 0 in gap.index:
                        axes[i][2].plot([gp.index.min() / 2 if len(gp) else 1], [gap.loc[0]], "<", color=f"C{k}",
                                        ms=7)
        axes[i][2].axhline(0, color="black", lw=0.8)
        align = g["alignment"].iloc[0]
        for j, (label, what) in enumerate((("BLEU", "BLEU"), (CE_LABEL, "CE"),
                                           (f"CE gap to {methods[0]} (nats/token)", f"CE, method − {methods[0]}"))):
            _style_dp_axis(axes[i][j], label, f"{mix} (alignment {align:.2f}) · {what}", bleu=j == 0)
    legend = [Line2D([], [], color=f"C{k}", label=m) for k, m in enumerate(methods)]
    legend += [Line2D([], [], ls=ls, color="gray", label=f"Df = {d:,}") for ls, d in zip(styles, dfs)]
    legend += [Line2D([], [], marker="<", ls="", color="gray", label="no pretraining (Dp = 0), drawn at the left edge")]
    _save(fig, path, legend, f"{task} · {model}: finetuning methods side by side", ncol=6)


# ----------------------------------------------------------------------------------------- verdicts


def _curve_name(mix: str, df: Any) -> str:
    return f"{mix} at Df = {fmt_df(df)}"


def _grouped(pairs: list[tuple[str, str]]) -> list[str]:
    """(sentence, curve) pairs -> one line per sentence listing its curves: said once, not once a curve."""
    by: dict[str, list[str]] = {}
    for sentence, curve in pairs:
        by.setdefault(sentence, []).append(curve)
    return [s.replace("{where}", _and(c)) for s, c in by.items()]  # not format(): reasons may hold braces


def _law_status(f: pd.DataFrame, law: str, metric: str, n_curves: int) -> list[str]:
    """Failed fits of one law, one line per reason; all curves failing for one reason is one line."""
    bad = f[(f["law"] == law) & ~f["ok"].map(is_ok)]
    name = {"bleu_log": "The BLEU log-law", "power": "The CE power law"}[law]
    if len(bad) == n_curves and bad["reason"].nunique() == 1:
        return [f"{name} could not be fitted on any curve: {plain_reason(bad['reason'].iloc[0], metric)}."]
    return _grouped([(f"{name} could not be fitted for {{where}}: {plain_reason(r['reason'], metric)}.",
                      _curve_name(r["mixture"], r["df"])) for _, r in bad.iterrows()])


BLEU_FLOOR = 1.0  # below this no cell translates: BLEU counts a few stray n-grams


def verdicts(task: str, pts: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], model: str,
             method: str) -> list[str]:
    """Plain sentences generated from the numbers, for one (task, model, method); each said once."""
    out: list[str] = []
    g = pts[pts["task"] == task]
    dfs = sorted(g["df"].unique())
    f = fits_df[(fits_df["task"] == task) & (fits_df["model"] == model) & (fits_df["method"] == method)
                & (fits_df["x"].astype(str) == "dp")]
    n_curves = len(g.groupby(["mixture", "df"]))
    top = g["bleu"].max() if len(g) else np.nan
    if np.isfinite(top) and top < BLEU_FLOOR:
        out.append(f"BLEU stays below {BLEU_FLOOR:g} in every cell (at most {fmt(top, 3)}): the models do not translate "
                   f"yet at this scale, so BLEU's ups and downs are noise; read the cross-entropy, or run a larger "
                   f"scale.")
    for law, metric in (("bleu_log", "bleu"), ("power", "ce")):
        out += _law_status(f, law, metric, n_curves)
    for mix, gm in g.groupby("mixture", sort=False):
        bl = f[(f["mixture"] == mix) & (f["law"] == "bleu_log")]
        ok = bl[bl["ok"].map(is_ok)]
        if not len(ok):
            continue
        align = gm["alignment"].iloc[0]
        good = ok[ok["holdout_mre"].fillna(np.inf) <= GOOD_MRE]
        if len(good) == len(bl):
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): BLEU follows the log-law at every Df "
                       f"(held-out relative error ≤ {GOOD_MRE:.0%}).")
        else:
            worst = ok.sort_values("holdout_mre", na_position="first").iloc[-1]
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): the BLEU log-law fits {len(ok)} of {len(bl)} Df "
                       f"values; the worst held-out relative error is {fmt_pct(worst['holdout_mre'])} at Df = "
                       f"{fmt_df(worst['df'])}.")
        for _, r in ok.iterrows():
            curve = gm[(gm["df"].astype(str) == str(r["df"])) & (gm["dp"] > 0)].sort_values("dp")
            if curve.empty:  # fits.csv from another table than this one
                continue
            last = curve.iloc[-1]
            gain = r["next_rung_pred"] - last["bleu"]
            out.append(f"**{mix}**, Df = {fmt_df(r['df'])}: doubling Dp to {fmt_tokens(r['next_rung'])} tokens is "
                       f"predicted to move BLEU from {fmt(last['bleu'], 3)} to {fmt(r['next_rung_pred'], 3)} "
                       f"({gain:+.2f}).")
    # Misalignment (Isik et al. §3.5): CE falls while BLEU does not follow; one line per kind of disagreement.
    flagged = []
    for r in _records(fits, task=task, metric="verdict", model=model, method=method):
        if not r.get("flag") or (np.isfinite(top) and top < BLEU_FLOOR):  # no BLEU signal to disagree with
            continue
        if not r.get("bleu_monotone"):
            s = "CE keeps falling with Dp while BLEU goes up and down, for {where}: CE is a misleading proxy there."
        elif not r.get("bleu_fit_ok"):
            s = "CE keeps falling with Dp while BLEU follows no log-law (see above), for {where}."
        else:
            s = (f"CE keeps falling with Dp while the BLEU law misses the held-out Dp by more than {GOOD_MRE:.0%}, "
                 "for {where}.")
        flagged.append((s, _curve_name(r["mixture"], r["df"])))
    out += _grouped(flagged)
    # Does pretraining still matter at the largest Df?
    if len(dfs) >= 2:
        for mix, gm in g.groupby("mixture", sort=False):
            gains = {}
            for d in (dfs[0], dfs[-1]):
                s = gm[gm["df"] == d].sort_values("dp")
                if len(s) >= 2 and (s["dp"] == 0).any():
                    gains[d] = float(s["bleu"].iloc[-1] - s[s["dp"] == 0]["bleu"].iloc[0])
            if len(gains) < 2:
                continue
            lo, hi = gains[dfs[0]], gains[dfs[-1]]
            head = f"**{mix}**: the largest Dp changes BLEU by {lo:+.2f} over no pretraining at Df = {fmt(int(dfs[0]))}"
            if max(abs(lo), abs(hi)) < 0.5:
                out.append(f"{head} and {hi:+.2f} at Df = {fmt(int(dfs[-1]))}: pretraining makes no visible "
                           "difference to BLEU at any Df here.")
            else:
                fades = hi < 0.25 * lo if lo > 0 else False
                out.append(f"{head} and {hi:+.2f} at Df = {fmt(int(dfs[-1]))}"
                           + (": at the largest Df pretraining no longer matters much." if fades else "."))
    # The cross-entropy side of the same question (the signal that remains when BLEU is at its floor).
    for mix, gm in g.groupby("mixture", sort=False):
        drops = []
        for d in dfs:
            c = gm[(gm["df"] == d) & gm["ce"].notna()].sort_values("dp")
            if len(c) >= 2 and (c["dp"] == 0).any() and c["dp"].iloc[-1] > 0:
                drops.append((d, float(c["ce"].iloc[-1] - c[c["dp"] == 0]["ce"].iloc[0])))
        if drops:
            out.append(f"**{mix}**: from no pretraining to the largest Dp, CE changes by "
                       + ", ".join(f"{v:+.3f} at Df = {fmt(int(d))}" for d, v in drops) + " (nats a token).")
    # Alignment: which mixture wins at the largest Dp, per Df.
    if g["mixture"].nunique() >= 2:
        for d in dfs:
            top = g[(g["df"] == d) & (g["dp"] > 0)]
            if top.empty:
                continue
            best = top.sort_values("dp").groupby("mixture").tail(1).sort_values("bleu", ascending=False)
            if best["bleu"].nunique() == 1:
                out.append(f"At the largest Dp and Df = {fmt(int(d))}, every mixture has the same BLEU "
                           f"({fmt(best['bleu'].iloc[0], 3)}).")
                continue
            desc = ", ".join(f"{r['mixture']} {fmt(r['bleu'], 3)} (A = {fmt(r['alignment'], 3)})" for _, r in best.iterrows())
            out.append(f"At the largest Dp and Df = {fmt(int(d))}, BLEU by mixture: {desc}.")
    return out


# ------------------------------------------------------------------------------------------ document


def _fit_table(fits_df: pd.DataFrame, law: str, names: list[str], x: str | None = None) -> Block:
    sel = fits_df[fits_df["law"] == law]
    if x is not None:
        sel = sel[sel["x"].astype(str) == x]
    rows = []
    for _, r in sel.iterrows():
        ok = is_ok(r["ok"])
        cells = [str(r["task"]), str(r["mixture"]), str(r["model"]), str(r["method"]), fmt_df(r["df"])]
        for n in names:
            cells.append(fmt_ci(r.get(f"p_{n}"), r.get(f"ci_{n}_lo"), r.get(f"ci_{n}_hi")) if ok else "—")
        cells += [fmt_count(r.get("n_fit")), fmt_count(r.get("n_holdout")), fmt(_num(r.get("holdout_mae"))),
                  fmt_pct(r.get("holdout_mre")) if ok else "—",
                  "ok" if ok else f"failed: {plain_reason(r.get('reason'), str(r.get('metric')))}"]
        rows.append(cells)
    return Block("table", header=["task", "mixture", "model", "method", "Df", *names, "fit points", "held-out points",
                                  "held-out abs. error", "held-out rel. error", "fit"], rows=rows)


def _param_names(fits_df: pd.DataFrame, law: str, x: str | None = None) -> list[str]:
    sub = fits_df[fits_df["law"] == law]
    if x is not None:
        sub = sub[sub["x"].astype(str) == x]
    return [c[2:] for c in sub.columns if c.startswith("p_") and sub[c].notna().any()]


def _header(results: pd.DataFrame, spec: dict[str, Any]) -> Block:
    scale = spec.get("scale") or {}
    models = sorted(results["model"].dropna().unique())
    params = {m: results.loc[results["model"] == m, "params"].dropna() for m in models}
    model_desc = ", ".join(f"{m} ({fmt_tokens(float(p.iloc[0]))} parameters)" if len(p) else m for m, p in params.items())
    sigs = sorted(results["bleu_signature"].dropna().unique()) if "bleu_signature" in results else []
    shas = sorted(results["git_sha"].dropna().astype(str).unique()) if "git_sha" in results else []
    src = spec.get("data_source", "l10n")
    return Block("note", "\n".join([
        f"**Scale: {scale.get('name', '?')}** — {scale.get('description', '')}. "
        + ("This is a toy-scale run: trends only, not the paper's numbers."
           if scale.get("name") in ("smoke", "cpu") and "trends only" not in scale.get("description", "") else ""),
        f"Corpus: {DATA_NOTES.get(src, src)}.",
        f"Models: {model_desc}. Finetuning: {', '.join(sorted(results['method'].dropna().unique()))}. "
        f"Cells: {int((results['status'] == 'ok').sum())} of {len(results)} evaluated.",
        f"sacreBLEU signature: {'; '.join(sigs) or 'n/a'}.",
        f"Git SHA: {', '.join(shas) or git_sha() + ' (of the report; the table records none)'}. "
        f"Written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{spec.get('results_name', 'results.csv')}`.",
    ]))


def _cells(results: pd.DataFrame) -> list[Block]:
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
        blocks.append(table if len(bad) <= LONG else details(f"The {len(bad)} cells left out, with why", [table]))
    return blocks


def _corr_cell(c: pd.DataFrame, metric: str, kind: str) -> str:
    r = c[c["metric"] == metric]
    if not len(r):
        return "—"
    r = r.iloc[0]
    if not _finite(r[kind]):
        return f"— ({r['reason']})" if isinstance(r["reason"], str) and r["reason"] else "—"
    return fmt_ci(r[kind], r[f"{kind}_lo"], r[f"{kind}_hi"])


def question_upstream(pts: pd.DataFrame, fits_df: pd.DataFrame, corr: pd.DataFrame, out: Path, figs: list,
                      summary: list[str]) -> list[Block]:
    blocks = [Block("h2", "Question 1: does the upstream loss predict downstream quality?"),
              Block("p", "The upstream loss is the pretraining checkpoint's held-out span-corruption loss, on the "
                         "pretraining mixture and on target-language text. r is Pearson's correlation, ρ Spearman's, "
                         "over the Dp > 0 rungs of each curve (per mixture and Df), and pooled over every mixture and Df "
                         "(mixture 'all'); brackets are 90% bootstrap intervals (points resampled). A good predictor "
                         "has CE rising and BLEU falling with the upstream loss: r, ρ near +1 for CE, near −1 for BLEU.")]
    for task in dict.fromkeys(pts["task"]):
        for (model, method), sel in pts[pts["task"] == task].groupby(["model", "method"]):
            name = f"fig_{task}_{model}_{method}_upstream.png"
            plot_upstream(task, sel, out / name, model, method)
            figs.append(name)
            blocks.append(Block("img", f"{task} · {model} · {method}: CE and BLEU against the upstream loss", path=name))
    if corr.empty:
        blocks.append(Block("p", "No correlations were computed (no fit-stage `correlations.csv`: rerun `stage=fit`)."))
    else:
        rows = []
        keys = ["task", "model", "method", "mixture", "df", "upstream"]
        for key, c in corr.groupby(keys, sort=False):
            rows.append([*(str(k) for k in key[:4]), fmt_df(key[4]), str(key[5]), fmt_count(c["n"].iloc[0]),
                         *(_corr_cell(c, m, k) for m in ("bleu", "chrf", "ce") for k in ("pearson", "spearman"))])
        table = Block("table", header=["task", "model", "method", "mixture", "Df", "upstream loss", "points",
                                       "BLEU r", "BLEU ρ", "chrF r", "chrF ρ", "CE r", "CE ρ"], rows=rows)
        blocks.append(table if len(rows) <= LONG else details(f"Correlations per curve and pooled ({len(rows)} rows)",
                                                              [table]))
        per_curve, pooled = _corr_verdicts(corr)
        summary += per_curve
        blocks.append(Block("list", items=per_curve + pooled))
    routes = _routes(fits_df)
    summary += routes[-1].items[:1]
    return blocks + routes


def _corr_verdicts(corr: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Sentences on the per-curve correlations, and on the pooled ones."""
    out: list[str] = []
    per_curve = corr[corr["mixture"].astype(str) != "all"]
    for (up, metric), c in per_curve.groupby(["upstream", "metric"], sort=False):
        v = c["spearman"].dropna()
        name = f"{METRIC[metric]} against the upstream loss on the {'mixture' if up == 'mixture' else 'target language'}"
        if not len(v):
            reasons = sorted({str(r) for r in c["reason"].dropna()})
            out.append(f"{name}: undefined on every curve ({'; '.join(reasons)}).")
            continue
        sign = 1 if metric == "ce" else -1
        good = int((sign * v >= 0.8).sum())
        out.append(f"{name}: Spearman ρ from {fmt(v.min(), 3)} to {fmt(v.max(), 3)} (median {fmt(v.median(), 3)}) over "
                   f"{len(v)} curves; {good} of {len(v)} show the expected monotone relation (ρ {'≥ 0.8' if sign > 0 else '≤ −0.8'}).")
    per_curve, out = out, []
    pooled = corr[(corr["mixture"].astype(str) == "all") & (corr["metric"] == "ce")]
    for _, r in pooled.iterrows():
        if _finite(r["pearson"]):
            out.append(f"Pooled over mixtures and Df ({r['model']}, {r['method']}, {'mixture' if r['upstream'] == 'mixture' else 'target-language'} "
                       f"loss): CE r = {fmt(r['pearson'], 3)}, ρ = {fmt(r['spearman'], 3)} over {fmt_count(r['n'])} points"
                       + (" — one upstream loss does not rank curves across mixtures." if r["spearman"] < 0.8 else "."))
    return per_curve, out


def _routes(fits_df: pd.DataFrame) -> list[Block]:
    """The direct log-law against the two-stage route, per curve, at the largest (held-out) Dp."""
    blocks = [Block("h3", "Predicting the largest-Dp BLEU: direct log-law against the two-stage route"),
              Block("p", "Direct: BLEU(Dp) = (log(A·Dp^α))^β. Two-stage: the upstream loss L(Dp) = E + A/Dp^α, then "
                         "BLEU = a + b·L (least squares). Both are fitted on the same smaller rungs; the error is on the "
                         "held-out larger rungs, where the two-stage route uses its own predicted loss, not the measured one.")]
    direct = fits_df[(fits_df["law"] == "bleu_log") & (fits_df["x"].astype(str) == "dp")]
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
                                 f"{plain_reason(r['reason'], 'bleu')}.", _curve_name(key[1], key[4])
                                 + f" ({key[2]}, {key[3]})"))
        if not ok:
            continue
        first = next(iter(ok.values()))
        cells = [*(str(k) for k in key[:4]), fmt_df(key[4]), fmt(_num(first["largest_dp"])),
                 fmt(_num(first["largest_obs"]))]
        for k in routes:
            r = ok.get(k)
            cells += [fmt(_num(r["largest_pred"])), fmt(_num(r["holdout_mae"]))] if r is not None else ["—", "—"]
        if len(ok) >= 2:
            best = min(ok, key=lambda k: _num(ok[k]["holdout_mae"]))
            wins[best] += 1
            cells.append(best)
        else:
            cells.append("—")
        rows.append(cells)
    if rows:
        blocks.append(Block("table", header=["task", "mixture", "model", "method", "Df", "largest Dp", "observed BLEU",
                                             *(f"{k}: {c}" for k in routes for c in ("predicted", "held-out abs. error")),
                                             "better"], rows=rows))
    items = _grouped(failures)
    compared = sum(wins.values())
    if compared:
        items.insert(0, f"Where two or more routes could be fitted ({compared} curves), the smaller held-out error: "
                        + ", ".join(f"{k} on {n}" for k, n in wins.items()) + ".")
    elif not rows:
        items.insert(0, "No route could be fitted on any curve, so they cannot be compared here.")
    blocks.append(Block("list", items=items))
    return blocks


def question_size(pts: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], out: Path,
                  figs: list, summary: list[str]) -> list[Block]:
    models = list(dict.fromkeys(pts.sort_values("params")["model"]))
    blocks = [Block("h2", "Question 2: how do the laws change with model size?")]
    if len(models) < 2:
        blocks.append(Block("p", f"The sweep has one model preset ({_and(models) if models else 'none'}); compare sizes "
                                 "with a list, e.g. `model=[t5_tiny,t5_mini]` (see `+sweep=questions`)."))
    else:
        for task in dict.fromkeys(pts["task"]):
            for method in sorted(pts["method"].unique()):
                sel = pts[(pts["task"] == task) & (pts["method"] == method)]
                name = f"fig_{task}_{method}_sizes.png"
                plot_sizes(task, sel, fits, out / name, method)
                figs.append(name)
                blocks.append(Block("img", f"{task} · {method}: upstream loss, CE and BLEU against Dp per model size",
                                    path=name))
        blocks.append(Block("h3", "The laws side by side, per size"))
        blocks.append(Block("p", "Exponent α and held-out relative error of each per-curve law, one column pair a size "
                                 f"({', '.join(models)}, smallest first)."))
        for law, metric in (("bleu_log", "BLEU log-law"), ("power", "CE power law")):
            f = fits_df[(fits_df["law"] == law) & (fits_df["x"].astype(str) == "dp")]
            rows = []
            for key, g in f.groupby(["task", "mixture", "method", "df"], sort=False):
                cells = [str(key[0]), str(key[1]), str(key[2]), fmt_df(key[3])]
                for m in models:
                    r = g[g["model"] == m]
                    ok = len(r) and is_ok(r["ok"].iloc[0])
                    cells += [fmt(_num(r["p_alpha"].iloc[0])) if ok and "p_alpha" in r else "—",
                              fmt_pct(r["holdout_mre"].iloc[0]) if ok else "—"]
                rows.append(cells)
            blocks.append(Block("p", f"**{metric}**"))
            blocks.append(Block("table", header=["task", "mixture", "method", "Df",
                                                 *(f"{m}: {c}" for m in models for c in ("α", "held-out rel. error"))],
                                rows=rows))
    blocks.append(Block("h3", "Upstream loss across sizes: L(N, Dp) = E + A/N^α + B/Dp^β (Hoffmann et al. 2022)"))
    blocks.append(Block("p", "N is the parameter count, Dp the pretraining tokens; the largest Dp of each size is held "
                             "out when at least six points remain for the five parameters."))
    blocks.append(_fit_table(fits_df, "chinchilla", _param_names(fits_df, "chinchilla")))
    blocks.append(Block("h3", "Downstream CE across sizes: L(N, Df) = A·N^−α·Df^−β + E (Zhang et al. 2024), at the largest Dp"))
    blocks.append(_fit_table(fits_df, "joint", _param_names(fits_df, "joint", "params,df"), x="params,df"))
    items = _size_verdicts(pts, fits_df, models)
    summary += items
    blocks.append(Block("list", items=items))
    return blocks


def _size_verdicts(pts: pd.DataFrame, fits_df: pd.DataFrame, models: list[str]) -> list[str]:
    out = []
    if len(models) >= 2:
        p = pts[pts["dp"] > 0]
        for (task, mix), g in p.groupby(["task", "mixture"], sort=False):
            top = g[g["dp"] == g.groupby("model")["dp"].transform("max")]
            up = top.groupby("model")["upstream"].mean().reindex(models)
            ce = top[top["df"] == top["df"].max()].groupby("model")["ce"].mean().reindex(models)
            if up.notna().all():
                order = "falls" if (np.diff(up.to_numpy()) < 0).all() else "does not fall"
                out.append(f"{task} · **{mix}**: at the largest Dp the upstream loss {order} with size ("
                           + ", ".join(f"{m} {fmt(v, 3)}" for m, v in up.items()) + "); CE at the largest Df: "
                           + ", ".join(f"{m} {fmt(v, 3)}" for m, v in ce.items()) + ".")
    for law, x, what in (("chinchilla", "params,dp", "upstream loss"), ("joint", "params,df", "downstream CE")):
        f = fits_df[(fits_df["law"] == law) & (fits_df["x"].astype(str) == x)]
        ok = f[f["ok"].map(is_ok)]
        for _, r in ok.iterrows():
            if law == "chinchilla":
                out.append(f"{r['task']} · **{r['mixture']}**: {what} falls as N^−{fmt(r['p_alpha'], 3)} with size and "
                           f"Dp^−{fmt(r['p_beta'], 3)} with data, towards E = {fmt(r['p_E'], 3)}.")
            else:
                out.append(f"{r['task']} · **{r['mixture']}** · {r['method']}: {what} falls as N^−{fmt(r['p_alpha'], 3)} "
                           f"with size and Df^−{fmt(r['p_beta'], 3)} with finetuning data.")
        out += _grouped([(f"The {what} law across sizes could not be fitted for {{where}}: {r['reason']}.",
                          f"{r['mixture']}" + (f" ({r['method']})" if law == "joint" else ""))
                         for _, r in f[~f["ok"].map(is_ok)].iterrows()])
    return out


def question_methods(pts: pd.DataFrame, methods: pd.DataFrame, out: Path, figs: list,
                     summary: list[str]) -> list[Block]:
    names = sorted(pts["method"].unique(), key=lambda m: (m != "full", m))
    blocks = [Block("h2", "Question 3: does the finetuning method change the laws?")]
    if len(names) < 2:
        blocks.append(Block("p", f"The sweep finetunes one way ({_and(names) if names else 'none'}); compare methods with "
                                 "`finetune.methods=[full,lora]` (see `+sweep=questions`)."))
        return blocks
    for task in dict.fromkeys(pts["task"]):
        for model in dict.fromkeys(pts.sort_values("params")["model"]):
            sel = pts[(pts["task"] == task) & (pts["model"] == model)]
            name = f"fig_{task}_{model}_methods.png"
            plot_methods(task, sel, out / name, model)
            figs.append(name)
            blocks.append(Block("img", f"{task} · {model}: BLEU and CE against Dp per finetuning method, and the CE gap",
                                path=name))
    if methods.empty:
        blocks.append(Block("p", "No method comparison was computed (no fit-stage `methods.csv`: rerun `stage=fit`)."))
        return blocks
    blocks.append(Block("p", "Gap = method − reference, on the seed means at the same Dp. α is the exponent of each "
                             "method's law (BLEU log-law, CE power law) with its 90% bootstrap interval; the exponents "
                             "differ when the intervals are disjoint."))
    rows = []
    for _, r in methods.iterrows():
        rows.append([str(r["task"]), str(r["mixture"]), str(r["model"]), fmt_df(r["df"]), METRIC[r["metric"]],
                     f"{r['method']} − {r['reference']}", fmt(_num(r["delta_dp0"])), fmt(_num(r["delta_first"])),
                     fmt(_num(r["delta_last"])), fmt(_num(r["delta_maxabs"])), fmt(_num(r["dp_maxabs"])),
                     fmt_ci(r["ref_alpha"], r["ref_ci_alpha_lo"], r["ref_ci_alpha_hi"]),
                     fmt_ci(r["alpha"], r["ci_alpha_lo"], r["ci_alpha_hi"]),
                     {"true": "yes", "false": "no"}.get(str(r["alpha_differs"]).lower(), "—")])
    table = Block("table", header=["task", "mixture", "model", "Df", "metric", "gap", "gap at Dp = 0",
                                   "gap at smallest Dp", "gap at largest Dp", "largest gap", "largest gap at Dp",
                                   "reference α", "method α", "exponents differ"], rows=rows)
    blocks.append(table if len(rows) <= LONG else details(f"The gaps per curve ({len(rows)} rows)", [table]))
    summary += _method_summary(methods)
    items = _method_verdicts(methods)
    blocks.append(Block("list", items=items) if len(items) <= LONG
                  else details(f"The gaps in sentences, per curve ({len(items)})", [Block("list", items=items)]))
    return blocks


def _gap_trend(first: float, last: float) -> str:
    a, b = abs(first), abs(last)
    if np.sign(first) != np.sign(last) and min(a, b) > 0:
        return "changes sign as Dp grows"
    if b < 0.8 * a:
        return "narrows as Dp grows"
    if b > 1.25 * a:
        return "widens as Dp grows"
    return "stays about the same across Dp"


def _method_summary(methods: pd.DataFrame) -> list[str]:
    """One sentence per (method against its reference, metric): how the gaps move over the curves."""
    out = []
    m = methods[methods["delta_first"].map(_finite)] if len(methods) else methods
    for (method, ref, metric), g in m.groupby(["method", "reference", "metric"], sort=False):
        trends = pd.Series([_gap_trend(r["delta_first"], r["delta_last"]) for _, r in g.iterrows()]).value_counts()
        differs = g["alpha_differs"].astype(str).str.lower()
        n_cmp = int(differs.isin(["true", "false"]).sum())
        out.append(f"{method} − {ref}, {METRIC[metric]}: the mean gap over Dp > 0 is {fmt(g['delta_mean'].mean(), 3)} "
                   f"(over {len(g)} curves); the gap " + ", ".join(f"{t} on {n}" for t, n in trends.items())
                   + (f"; the fitted exponents differ on {int((differs == 'true').sum())} of {n_cmp} curves where both "
                      "laws were fitted." if n_cmp else "; no curve has both laws fitted, so no exponents to compare."))
    return out


def _method_verdicts(methods: pd.DataFrame) -> list[str]:
    out = []
    for _, r in methods.iterrows():
        if not _finite(r["delta_first"]):
            continue
        trend = _gap_trend(r["delta_first"], r["delta_last"])
        where = "at Dp = 0 (no pretraining)" if r["dp_maxabs"] == 0 else f"at Dp = {fmt_tokens(r['dp_maxabs'])}"
        line = (f"{r['task']} · {r['model']} · **{r['mixture']}**, Df = {fmt_df(r['df'])}, {METRIC[r['metric']]}: "
                f"{r['method']} − {r['reference']} is {r['delta_first']:+.3g} at the smallest Dp and "
                f"{r['delta_last']:+.3g} at the largest; the gap {trend}, largest {where}")
        differs = str(r["alpha_differs"]).lower()
        if differs in ("true", "false"):
            line += ("; the fitted exponents differ (disjoint intervals)" if differs == "true"
                     else "; the fitted exponents agree within their intervals")
        out.append(line + ".")
    return out


def build(results: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], out: Path, spec: dict[str, Any],
          tracker=None, corr: pd.DataFrame | None = None, methods: pd.DataFrame | None = None) -> list[Block]:
    """The report as blocks, read top down: verdicts and key tables first, figures and the three questions,
    then the long per-point tables (collapsed). Figures are written to `out` as it goes (and logged)."""
    corr = pd.DataFrame() if corr is None else corr
    methods = pd.DataFrame() if methods is None else methods
    if "x" not in fits_df.columns:  # fits.csv from before the question laws: every law was in Dp
        fits_df = fits_df.assign(x=np.where(fits_df["law"] == "joint", "dp,df", "dp"))
    ok_rows = usable(results)
    pts = seed_means(ok_rows)
    figs: list[str] = []
    models = list(dict.fromkeys(pts.sort_values("params")["model"])) or sorted(results["model"].dropna().unique())
    summary = [Block("h2", "Summary"), Block("p", _fit_counts(results, fits_df))]
    for task in dict.fromkeys(pts["task"]):
        for model in models:
            for method in sorted(pts["method"].unique()):
                sel = pts[(pts["model"] == model) & (pts["method"] == method)]
                if sel.empty:
                    continue
                summary.append(Block("p", f"**{task} · {model} · {method}**"))
                summary.append(Block("list", items=verdicts(task, sel, fits_df, fits, model, method)
                                     or ["Nothing to conclude yet."]))
    if pts.empty:
        summary.append(Block("p", "No evaluated cells yet: nothing to conclude."))

    body = [Block("h2", "Mixtures and alignment")]
    al = results.drop_duplicates(["task", "mixture"])[["task", "mixture", "alignment"]]
    body.append(Block("p", "Alignment score A = P_src·P_dest + 0.7·P_src + 0.8·P_dest (Isik et al., Eq. 2), "
                           "computed from each mixture's language weights."))
    body.append(Block("table", header=["task", "mixture", "alignment"],
                      rows=[[str(r["task"]), str(r["mixture"]), fmt(r["alignment"])] for _, r in al.iterrows()]))

    body.append(Block("h2", "Fitted laws"))
    body.append(Block("p", "Fitted on the smaller Dp rungs, scored on the largest held out (extrapolation); "
                           "brackets are 90% bootstrap intervals; Dp in raw text tokens."))
    body.append(Block("h3", "BLEU: f(Dp) = (log(A·Dp^α))^β (Isik et al. Eq. 1, Huber δ = 0.1)"))
    body.append(_fit_table(fits_df, "bleu_log", _param_names(fits_df, "bleu_log")))
    body.append(Block("h3", "Cross-entropy: L(Dp) = E + A/Dp^α (Isik et al. Eq. 3, Huber δ = 1e-3)"))
    body.append(_fit_table(fits_df, "power", _param_names(fits_df, "power")))
    if (fits_df["x"].astype(str) == "dp,df").any():
        body.append(Block("h3", "Joint law L(Dp, Df) = A·Dp^−α·Df^−β + E (Zhang et al. 2024), cross-entropy"))
        body.append(_fit_table(fits_df, "joint", _param_names(fits_df, "joint", "dp,df"), x="dp,df"))

    body.append(Block("h2", "Figures"))
    if pts.empty:
        body.append(Block("p", "No figures: no cell was evaluated."))
    for task in dict.fromkeys(pts["task"]):
        for model in models:
            for method in sorted(pts["method"].unique()):
                sel = pts[(pts["task"] == task) & (pts["model"] == model) & (pts["method"] == method)]
                if sel.empty:
                    continue
                tag = f"{task}_{model}_{method}"
                name = f"fig_{tag}_dp.png"
                plot_task(task, sel, fits, out / name, model, method)
                body.append(Block("img", f"{task} · {model} · {method}: BLEU and cross-entropy against Dp, one colour "
                                         "per Df", path=name))
                name2 = f"fig_{tag}_bleu_vs_ce.png"
                plot_bleu_vs_ce(task, sel, out / name2, model, method)
                body.append(Block("img", f"{task} · {model} · {method}: BLEU against cross-entropy (Isik et al. Fig. 5)",
                                  path=name2))
                figs += [name, name2]

    if not pts.empty:
        q: dict[str, list[str]] = {k: [] for k in ("upstream", "size", "methods")}
        body += question_upstream(pts, fits_df, corr, out, figs, q["upstream"])
        body += question_size(pts, fits_df, fits, out, figs, q["size"])
        body += question_methods(pts, methods, out, figs, q["methods"])
        for key, title in (("upstream", "Question 1: upstream loss → downstream"), ("size", "Question 2: model size"),
                           ("methods", "Question 3: finetuning method")):
            if q[key]:
                summary += [Block("p", f"**{title}** (details below)"), Block("list", items=q[key])]

    appendix = [Block("h2", "Appendix: the per-point tables")]
    hrows = []
    for r in fits:
        for h in r.get("holdout") or []:
            hrows.append([str(r["task"]), str(r["mixture"]), str(r["model"]), str(r.get("method")), fmt_df(r["df"]),
                          str(r["law"]) + (f" ({r['x']})" if str(r.get("x", "dp")) != "dp" else ""),
                          _inputs(r.get("x", "dp"), h["x"]), fmt(h["y"]), fmt(h["pred"]),
                          fmt(h["abs_err"]), fmt_pct(h["rel_err"])])
    appendix.append(Block("h3", "Held-out extrapolation, per point"))
    table = Block("table", header=["task", "mixture", "model", "method", "Df", "law", "held-out point", "observed",
                                   "predicted", "abs. error", "rel. error"], rows=hrows)
    appendix.append((table if len(hrows) <= LONG else details(f"Every held-out point ({len(hrows)} rows)", [table]))
                    if hrows else Block("p", "No held-out points (too few rungs, or no fit succeeded)."))

    appendix.append(Block("h3", "All evaluated cells"))
    cols = ["task", "mixture", "model", "method", "dp", "df", "seed", "bleu", "chrf", "ce", "bp", "gen_len",
            "upstream_loss_mixture", "finetune_steps"]
    counts = {"dp", "df", "seed", "finetune_steps"}
    rows = [[str(r[c]) if isinstance(r[c], str) else fmt_count(r[c]) if c in counts else fmt(_num(r.get(c)))
             for c in cols] for _, r in ok_rows.sort_values(["task", "mixture", "model", "method", "df", "dp"]).iterrows()]
    table = Block("table", header=["task", "mixture", "model", "method", "Dp", "Df", "seed", "BLEU", "chrF", "CE", "BP",
                                   "gen. length", "upstream loss", "finetune steps"], rows=rows)
    appendix.append(table if len(rows) <= LONG else details(f"Every evaluated cell ({len(rows)} rows)", [table]))
    if tracker is not None:
        for name in figs:
            tracker.log_image(f"report/{name.removeprefix('fig_').removesuffix('.png')}", out / name)
    head = [Block("h1", f"Downstream scaling report — sweep `{spec.get('sweep', '')}`"), _header(results, spec)]
    return head + summary + _cells(results) + body + appendix


def _inputs(x: str, v: Any) -> str:
    """A held-out point's inputs by name: `Dp = 4.194e+06`, or `N = 3.000e+06, Df = 1,000` for joint laws."""
    names = {"dp": "Dp", "df": "Df", "params": "N"}
    keys = str(x).split(">")[0].split(",")
    vals = np.atleast_1d(v)
    return ", ".join(f"{names.get(k, k)} = {fmt_count(u) if k == 'df' else fmt(float(u))}" for k, u in zip(keys, vals))


def _fit_counts(results: pd.DataFrame, fits_df: pd.DataFrame) -> str:
    """The state of the study in one sentence: how many cells, how many laws fitted."""
    n_ok = int((results["status"] == "ok").sum())
    parts = []
    for law, x, name in (("bleu_log", "dp", "BLEU log-law"), ("power", "dp", "CE power law"),
                         ("two_stage", None, "two-stage route"), ("joint", "dp,df", "joint (Dp, Df) law"),
                         ("chinchilla", None, "Chinchilla law across sizes"), ("joint", "params,df", "joint (N, Df) law")):
        f = fits_df[fits_df["law"] == law]
        if x is not None:
            f = f[f["x"].astype(str) == x]
        if len(f):
            parts.append(f"the {name} on {int(f['ok'].map(is_ok).sum())} of {len(f)}")
    return (f"{n_ok} of {len(results)} cells evaluated (see Cells). Fitted: " + "; ".join(parts) + "."
            if parts else f"{n_ok} of {len(results)} cells evaluated; no law was fitted.")


def _read_csv(path: Path) -> pd.DataFrame:
    """A fit-stage table, or an empty one when it is absent or has no rows (a fit stage of an older version)."""
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def run(task) -> None:
    from pipeline.tracking import make_tracker, read_stage_run_id

    spec = task.spec
    out, results_path, results = stage_results(spec)
    fits_df = _read_csv(out / "fits.csv")
    if fits_df.empty:
        fits_df = pd.DataFrame(columns=["task", "mixture", "model", "method", "df", "metric", "law", "x", "ok", "reason"])
    fits = json.loads((out / "fits.json").read_text()) if (out / "fits.json").exists() else []
    tracker = make_tracker(out, spec.get("tracking"), run_id=read_stage_run_id("report", spec),
                           name=getattr(task, "name", f"report-{spec['sweep']}"),
                           config={"sweep": spec["sweep"], "results": str(results_path)}, file="report-metrics.jsonl",
                           group=spec["sweep"])
    try:
        blocks = build(results, fits_df, fits, out, {**spec, "results_name": results_path.name}, tracker,
                       corr=_read_csv(out / "correlations.csv"), methods=_read_csv(out / "methods.csv"))
        title = f"Downstream scaling report — {spec['sweep']}"
        atomic_write_text(out / "report.md", to_markdown(blocks))
        atomic_write_bytes(out / "report.html", to_html(blocks, out, title).encode())
        tracker.log({"cells": len(results), "cells_ok": int((results["status"] == "ok").sum()),
                     "cells_left_out": len(excluded(results)), "fits": len(fits_df),
                     "fits_ok": int(fits_df["ok"].map(is_ok).sum()) if len(fits_df) else 0,
                     "figures": len(list(out.glob("fig_*.png")))}, step=0)
    finally:
        tracker.close()
    print(f"report: {out / 'report.html'}")
