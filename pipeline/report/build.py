"""Stage `report`: the study a researcher reads, assembled from the modules of this package.

Reads `results.csv` and the fit stage's `fits.csv`, `fits.json`, `correlations.csv` and `methods.csv` only, so
it runs on a table copied back from a cluster. `build` turns them into blocks and figure specs (drawing
nothing); `run` draws the figures, renders the blocks to `report.md` and a self-contained `report.html`, and
logs to the tracker. Every number in the text comes from those files or from the fit config (a test checks
the tables against the files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.artifacts import atomic_write_bytes, atomic_write_text
from pipeline.metrics import METRICS
from pipeline.report.claims import claims_blocks
from pipeline.report.document import Block, sections, to_html, to_markdown
from pipeline.report.figures import Figure, plot_bleu_vs_ce, plot_task, render
from pipeline.report.fmt import fmt, fmt_g, law_formula
from pipeline.report.headline import headline, primary
from pipeline.report.questions import question_methods, question_size, question_upstream
from pipeline.report.tables import (
    cells_section,
    cells_table,
    controls_section,
    fit_counts,
    fit_table,
    flag_list,
    header,
    holdout_table,
    of_group,
    param_names,
    significance_section,
)
from pipeline.report.verdicts import verdicts
from pipeline.results import ReadSpec, excluded, is_ok, seed_means, usable
from pipeline.scaling.calibration import interval_note


@dataclass
class Report:
    blocks: list[Block]
    figures: list[Figure]


def build(results: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], spec: ReadSpec,
          results_name: str = "results.csv", corr: pd.DataFrame | None = None,
          methods: pd.DataFrame | None = None, comp: pd.DataFrame | None = None) -> Report:
    """The report as blocks, read top down: the finding in three sentences (headline), the Dp figure it reads,
    what was run, the paper's claims marked at this scale, the findings per (task, model, method) and per question, the other figures; then the tables,
    fit flags and methods, each a section folded away in the HTML. And the figures those blocks show, not drawn."""
    corr = pd.DataFrame() if corr is None else corr
    methods = pd.DataFrame() if methods is None else methods
    if "x" not in fits_df.columns:  # fits.csv from before the question laws: every law was in Dp
        fits_df = fits_df.assign(x=np.where(fits_df["law"] == "joint", "dp,df", "dp"))
    ok_rows = usable(results)
    pts = seed_means(ok_rows)
    figures: list[Figure] = []
    models = list(dict.fromkeys(pts.sort_values("params")["model"])) or sorted(results["model"].dropna().unique())
    findings = [Block("h2", "Findings"), Block("p", fit_counts(results, fits_df))]
    shown = [Block("h2", "Figures")]
    lead = primary(pts) if not pts.empty else None
    lead_fig: list[Block] = []
    for task in dict.fromkeys(pts["task"]):
        for model in models:
            for method in sorted(pts["method"].unique()):
                sel = of_group(pts, (task, model, method))
                if sel.empty:
                    continue
                findings.append(Block("p", f"**{task} · {model} · {method}**"))
                findings.append(Block("list", items=verdicts(task, sel, fits_df, fits, model, method, spec.fit, comp)
                                      or ["Nothing to conclude yet."]))
                tag = f"{task}_{model}_{method}"
                args = dict(task=task, pts=sel, model=model, method=method)
                figures += [Figure(f"fig_{tag}_dp.png", plot_task, {**args, "fits": fits}),
                            Figure(f"fig_{tag}_bleu_vs_ce.png", plot_bleu_vs_ce, args)]
                dp_fig = Block("img", f"{task} · {model} · {method}: BLEU and cross-entropy against Dp, one colour "
                                      "per Df", path=figures[-2].name, lead=(task, model, method) == lead)
                (lead_fig if dp_fig.lead else shown).append(dp_fig)
                shown.append(Block("img", f"{task} · {model} · {method}: BLEU against cross-entropy (Isik et al. "
                                          "Fig. 5)", path=figures[-1].name))
    if pts.empty:
        findings.append(Block("p", "No evaluated cells yet: nothing to conclude."))
        shown.append(Block("p", "No figures: no cell was evaluated."))

    questions: list[Block] = []
    if not pts.empty:
        for title, q in (("Question 1: upstream loss → downstream", question_upstream(pts, fits_df, corr)),
                         ("Question 2: model size", question_size(pts, fits_df, fits)),
                         ("Question 3: finetuning method", question_methods(pts, methods))):
            questions += q.blocks
            figures += q.figures
            if q.summary:
                findings += [Block("p", f"**{title}** (details below)"), Block("list", items=q.summary)]

    laws = [Block("h2", "Fitted laws")]
    laws.append(Block("p", "Fitted on the smaller Dp rungs, scored on the largest held out (extrapolation); Dp in "
                           "raw text tokens. " + interval_note(spec.fit.interval, spec.fit.level,
                                                               tuple(law for _, law, _ in spec.fit.curve_laws()))))
    for metric, law, delta in spec.fit.curve_laws():
        laws.append(Block("h3", f"{METRICS[metric].title}: {law_formula(law, metric)}, Huber δ = {fmt_g(delta)}"))
        laws.append(fit_table(fits_df, law, param_names(fits_df, law)))
        laws += flag_list(fits_df, law)
    if (fits_df["x"].astype(str) == "dp,df").any():
        laws.append(Block("h3", "Joint law L(Dp, Df) = A·Dp^−α·Df^−β + E (Zhang et al. 2024), cross-entropy"))
        laws.append(fit_table(fits_df, "joint", param_names(fits_df, "joint", "dp,df"), x="dp,df"))

    al = results.drop_duplicates(["task", "mixture"])[["task", "mixture", "alignment"]]
    mixtures = [Block("h2", "Mixtures and alignment"),
                Block("p", "Alignment score A = P_src·P_dest + 0.7·P_src + 0.8·P_dest (Isik et al., Eq. 2), "
                           "computed from each mixture's language weights."),
                Block("table", header=["task", "mixture", "alignment"],
                      rows=[[str(r["task"]), str(r["mixture"]), fmt(r["alignment"])] for _, r in al.iterrows()])]
    appendix = [Block("h2", "Appendix: the per-point tables"),
                Block("h3", "Held-out extrapolation, per point"), holdout_table(fits),
                Block("h3", "All evaluated cells"), cells_table(ok_rows)]
    top = [Block("h1", f"Downstream scaling report — sweep `{spec.sweep}`"),
           headline(results, pts, fits_df, comp, spec), *lead_fig, header(results, spec, results_name)]
    details = (questions + significance_section(comp, spec.fit.length_ratio_flag) + laws + cells_section(results)
               + controls_section(results) + mixtures + appendix)
    claims = claims_blocks(ok_rows, comp, fits_df, spec.fit, spec.scale.name) if not pts.empty else []
    return Report(top + claims + findings + shown + sections(details), figures)


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

    spec: ReadSpec = task.spec
    out = Path(spec.reports_dir)
    results_path, results = spec.table()
    fits_df = _read_csv(out / "fits.csv")
    if fits_df.empty:
        fits_df = pd.DataFrame(columns=["task", "mixture", "model", "method", "df", "metric", "law", "x", "ok", "reason"])
    fits = json.loads((out / "fits.json").read_text()) if (out / "fits.json").exists() else []
    tracker = make_tracker(out, spec.tracking, run_id=read_stage_run_id("report", spec.to_dict()),
                           name=getattr(task, "name", f"report-{spec.sweep}"),
                           config={"sweep": spec.sweep, "results": str(results_path)}, file="report-metrics.jsonl",
                           group=spec.sweep)
    try:
        report = build(results, fits_df, fits, spec, results_path.name, corr=_read_csv(out / "correlations.csv"),
                       methods=_read_csv(out / "methods.csv"), comp=_read_csv(results_path.with_name("comparisons.csv")))
        render(report.figures, out)
        for f in report.figures:
            tracker.log_image(f"report/{f.name.removeprefix('fig_').removesuffix('.png')}", out / f.name)
        title = f"Downstream scaling report — {spec.sweep}"
        atomic_write_text(out / "report.md", to_markdown(report.blocks))
        atomic_write_bytes(out / "report.html", to_html(report.blocks, out, title).encode())
        tracker.log({"cells": len(results), "cells_ok": int((results["status"] == "ok").sum()),
                     "cells_left_out": len(excluded(results)), "fits": len(fits_df),
                     "fits_ok": int(fits_df["ok"].map(is_ok).sum()) if len(fits_df) else 0,
                     "figures": len(list(out.glob("fig_*.png")))}, step=0)
    finally:
        tracker.close()
    print(f"report: {out / 'report.html'}")
