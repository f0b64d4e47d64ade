"""The report's figures. The question sections and `build` describe the figures they need as `Figure` specs
(file name, drawing function, its data); `render` draws them all at the end, so assembling the document
draws nothing and the figures can be drawn, or skipped, in one place."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_write_bytes
from pipeline.metrics import METRICS, curve_metrics
from pipeline.report.fmt import (
    CE_LABEL,
    DP_LABEL,
    METRIC,
    UP_LABEL,
    breaking_flags,
    finite,
    fmt_tokens,
    plain_reason,
)


@dataclass(frozen=True)
class Figure:
    name: str  # file name in the reports directory, fig_*.png
    draw: Callable[..., None]  # one of the plot_* functions below; called with `path=` and `args`
    args: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def render(figures: list[Figure], out: Path) -> None:
    for f in figures:
        f.draw(**f.args, path=out / f.name)


def records(fits: list[dict[str, Any]], **key) -> list[dict[str, Any]]:
    """The fit records (fits.json) whose fields equal `key`, compared as strings (Df is 'all' or a count)."""
    return [r for r in fits if all(str(r.get(k)) == str(v) for k, v in key.items())]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def law_style(rec: dict[str, Any]) -> dict[str, Any]:
    """How a fitted law is drawn: a curve that stands solid over its fit points, dashed beyond, with its band; a
    flagged one (fmt.breaking_flags: α < 0, a parameter the points do not bound) dash-dotted and faded over the
    whole range, without a band, so it is not read as a law."""
    if breaking_flags(rec.get("flags")):
        return {"fit": "-.", "beyond": "-.", "alpha": 0.4, "lw": 1.2, "band": False}
    return {"fit": "-", "beyond": "--", "alpha": 1.0, "lw": 1.5, "band": True}


def _draw_law(ax, rec: dict[str, Any] | None, color, x_pts: np.ndarray) -> None:
    """A fitted law through its fit points, extended over the held-out ones and one rung beyond, with its
    interval band, in `law_style`; nothing when the fit failed."""
    if not rec or not rec.get("ok") or not (rec.get("curve") or {}).get("y") or not len(x_pts):
        return
    style = law_style(rec)
    cx, cy = np.array(rec["curve"]["x"]), np.array(rec["curve"]["y"], dtype=float)
    hold = np.array((rec.get("points") or {}).get("holdout") or [], dtype=bool)
    fit_x = np.array((rec.get("points") or {}).get("x") or x_pts, dtype=float)
    last_fit = fit_x[~hold].max() if len(hold) == len(fit_x) and (~hold).any() else x_pts.max()
    end = x_pts.max() * 2
    # A law that runs away from its points (a rising power law extrapolated to 1e19) must not rescale the
    # panel until the measurements sit flat: the line stops, and the band is cut, at twice the points' spread.
    ys = np.array((rec.get("points") or {}).get("y") or [], dtype=float)
    ys = ys[np.isfinite(ys)]
    if len(ys):
        span = max(ys.max() - ys.min(), 0.05 * abs(ys.max()), 1e-9)
        window = (ys.min() - 2 * span, ys.max() + 2 * span)
        cy = np.where((cy >= window[0]) & (cy <= window[1]), cy, np.nan)
    inside, beyond = (cx >= x_pts.min()) & (cx <= last_fit), (cx >= last_fit) & (cx <= end)
    for part, ls in ((inside, style["fit"]), (beyond, style["beyond"])):
        ax.plot(cx[part], cy[part], ls, color=color, lw=style["lw"], alpha=style["alpha"])
    if style["band"] and "lo" in rec["curve"]:
        lo, hi = np.array(rec["curve"]["lo"], dtype=float), np.array(rec["curve"]["hi"], dtype=float)
        if len(ys):
            lo, hi = np.clip(lo, *window), np.clip(hi, *window)
        sel = (cx >= x_pts.min()) & (cx <= end) & np.isfinite(lo) & np.isfinite(hi)
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
        _token_ticks(ax)
    else:
        ax.text(0.5, 0.5, "no evaluated Dp > 0 point", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.set_xlabel(DP_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.25)
    if bleu:
        _bleu_ylim(ax)


def _token_ticks(ax) -> None:
    """Dp ticks as a reader writes token counts (500k, 1M, 2M): on a ladder spanning less than two decades the
    log axis's own minor labels (2×10⁶, 3×10⁶, 4×10⁶ …) run into each other, so only the 2s and 5s are labelled."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _pos) -> str:
        lo, hi = ax.get_xlim()
        if v <= 0 or lo <= 0 or hi / lo > 100:
            return ""
        return fmt_tokens(v) if round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_tokens(v) if v > 0 else ""))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))


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
            Line2D([], [], ls="-", color="gray", label="fitted law (band: 90% interval)"),
            Line2D([], [], ls="--", color="gray", label="law extrapolated"),
            Line2D([], [], ls="-.", color="gray", alpha=0.4, label="flagged law (does not stand)"),
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
    metrics = curve_metrics()
    fig, axes = plt.subplots(len(mixes), len(metrics), figsize=(5 * len(metrics), 3.6 * len(mixes) + 1.2),
                             squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[pts["mixture"] == mix]
        align = g["alignment"].iloc[0]
        for j, (metric, label) in enumerate((m, METRICS[m].axis) for m in metrics):
            ax, recs = axes[i][j], []
            for c, df_ in zip(colors, dfs):
                d = g[(g["df"] == df_) & (g["dp"] > 0)].sort_values("dp")
                base = g[(g["df"] == df_) & (g["dp"] == 0)]
                rec = next(iter(records(fits, task=task, mixture=mix, df=df_, model=model, method=method,
                                         metric=metric, x="dp")), None)
                recs.append(rec)
                x, y = d["dp"].to_numpy(float), d[metric].to_numpy(float)
                _draw_points(ax, x, y, _holdout_of(rec, len(d)), c, f"Df = {df_:,}")
                _draw_law(ax, rec, c, x)
                if len(base):
                    ax.axhline(float(base[metric].iloc[0]), color=c, ls=":", lw=1.2)
            _style_dp_axis(ax, label, f"{mix} (alignment {align:.2f}) · {METRIC[metric]}", bleu=metric == "bleu")
            _no_fit_note(ax, _dp_fit_reasons(recs, metric))
    handles = [h for h in axes[0][0].get_legend_handles_labels()[0]]
    _save(fig, path, handles + _legend_keys(), f"{task} · {model} · {method} finetuning: BLEU and CE against Dp",
          ncol=4)


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
        ch = next(iter(records(fits, task=task, mixture=mix, law="chinchilla")), None)
        recs: dict[str, list] = {"ce": [], "bleu": []}
        for k, model in enumerate(models):
            c = f"C{k}"
            gm = g[g["model"] == model]
            d = gm[gm["dp"] > 0].sort_values("dp")
            x = d["dp"].to_numpy(float)
            base = gm[gm["dp"] == 0]
            params = gm["params"].iloc[0] if len(gm) else math.nan
            axes[i][0].plot(x, d["upstream"], "o", color=c, label=f"{model} ({fmt_tokens(params)} parameters)"
                            if finite(params) else model)
            if ch and ch.get("ok") and finite(params) and len(x):
                grid = np.geomspace(x.min(), x.max() * 2, 40)
                axes[i][0].plot(grid, _chinchilla(ch["params"], params, grid), "-", color=c, lw=1.2)
            for j, metric in enumerate(("ce", "bleu"), start=1):
                rec = next(iter(records(fits, task=task, mixture=mix, model=model, method=method, df=df_max,
                                         metric=metric, x="dp")), None)
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
    metrics = curve_metrics()
    gap_ax = len(metrics)  # the last column: the CE gap
    fig, axes = plt.subplots(len(mixes), gap_ax + 1, figsize=(14 * (gap_ax + 1) / 3, 3.6 * len(mixes) + 1.2),
                             squeeze=False)
    for i, mix in enumerate(mixes):
        g = pts[pts["mixture"] == mix]
        for k, method in enumerate(methods):
            for ls, d in zip(styles, dfs):
                s = g[(g["method"] == method) & (g["df"] == d)].sort_values("dp")
                pos = s[s["dp"] > 0]
                for j, metric in enumerate(metrics):
                    axes[i][j].plot(pos["dp"], pos[metric], ls, marker="o", ms=4, color=f"C{k}")
                    base = s[s["dp"] == 0]
                    if len(base):  # Dp = 0 cannot sit on a log axis: a marker at the left edge
                        axes[i][j].plot([pos["dp"].min() / 2 if len(pos) else 1], [base[metric].iloc[0]], "<",
                                        color=f"C{k}", ms=7)
                if method != methods[0]:
                    ref = g[(g["method"] == methods[0]) & (g["df"] == d)].set_index("dp")["ce"]
                    gap = (s.set_index("dp")["ce"] - ref).dropna()
                    gp = gap[gap.index > 0]
                    axes[i][gap_ax].plot(gp.index, gp.values, ls, marker="o", ms=4, color=f"C{k}")
                    if 0 in gap.index:
                        axes[i][gap_ax].plot([gp.index.min() / 2 if len(gp) else 1], [gap.loc[0]], "<", color=f"C{k}",
                                             ms=7)
        axes[i][gap_ax].axhline(0, color="black", lw=0.8)
        align = g["alignment"].iloc[0]
        for j, (label, what, metric) in enumerate([*((METRICS[m].axis, METRICS[m].label, m) for m in metrics),
                                                   (f"CE gap to {methods[0]} (nats/token)",
                                                    f"CE, method − {methods[0]}", None)]):
            _style_dp_axis(axes[i][j], label, f"{mix} (alignment {align:.2f}) · {what}", bleu=metric == "bleu")
    legend = [Line2D([], [], color=f"C{k}", label=m) for k, m in enumerate(methods)]
    legend += [Line2D([], [], ls=ls, color="gray", label=f"Df = {d:,}") for ls, d in zip(styles, dfs)]
    legend += [Line2D([], [], marker="<", ls="", color="gray", label="no pretraining (Dp = 0), drawn at the left edge")]
    _save(fig, path, legend, f"{task} · {model}: finetuning methods side by side", ncol=6)

