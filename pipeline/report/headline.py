"""The report's first paragraph: what the study shows, in three sentences generated from the numbers, for the
(task, model, method) it reads first (`primary`): what pretraining does to BLEU at the largest Df, with the
test behind it and the noise that test covers; what it does to the cross-entropy (seed means, no test: said so);
and which per-curve laws stand. The scale it ran at comes first, so a toy run cannot be read as the paper's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.fit import REFERENCE_METHOD
from pipeline.metrics import curve_metrics
from pipeline.report.document import Block
from pipeline.report.fmt import and_list, breaking_flags, fmt, fmt_pct, fmt_tokens, law_name, plain_reason
from pipeline.report.tables import curve_fits, of_group, standing
from pipeline.report.verdicts import BLEU_FLOOR, _method, comparison, length_flag, noise_of
from pipeline.results import ReadSpec, is_ok
from pipeline.significance import NOISE_TEST, p_is

LEAD = "What the study shows."


def primary(pts: pd.DataFrame) -> tuple[str, str, str]:
    """The (task, model, method) the headline reads: the first task, the largest model, full finetuning if run."""
    task = str(next(iter(dict.fromkeys(pts["task"]))))
    g = pts[pts["task"] == task]
    model = str(g.sort_values("params", na_position="first")["model"].iloc[-1])
    methods = sorted(g.loc[g["model"] == model, "method"].unique())
    return task, model, REFERENCE_METHOD if REFERENCE_METHOD in methods else str(methods[0])


def headline(results: pd.DataFrame, pts: pd.DataFrame, fits_df: pd.DataFrame, comp: pd.DataFrame | None,
             spec: ReadSpec) -> Block:
    """One paragraph of three sentences (scale and BLEU; cross-entropy; laws)."""
    n_ok = int((results["status"] == "ok").sum())
    if pts.empty:
        return Block("p", f"**{LEAD}** Nothing yet at {spec.scale.name} scale: {n_ok} of {len(results)} cells "
                          "evaluated, none usable.")
    task, model, method = primary(pts)
    g = of_group(pts, (task, model, method))
    others = len(pts.groupby(["task", "model", "method"])) - 1
    params = float(g["params"].iloc[0])
    size = f", {fmt_tokens(params)} parameters" if np.isfinite(params) else ""
    scope = (f"At {spec.scale.name} scale ({model}{size}, {method} "
             f"finetuning{f', {task}' if pts['task'].nunique() > 1 else ''}; Dp up to {fmt_tokens(g['dp'].max())} "
             f"tokens, Df up to {fmt(int(g['df'].max()))} pairs; {n_ok} of {len(results)} cells evaluated"
             + (f"; {others} other (task, model, method) combination{'s' if others > 1 else ''} below" if others else "")
             + ")")
    f = of_group(fits_df, (task, model, method))
    sentences = [_bleu(scope, g, comp, task, model, method, spec.fit.length_ratio_flag), _ce(g), _laws(f)]
    return Block("p", f"**{LEAD}** " + " ".join(s for s in sentences if s))


def _bleu(scope: str, g: pd.DataFrame, comp: pd.DataFrame | None, task: str, model: str, method: str,
          flag: float | None) -> str:
    """Pretraining's effect on BLEU at the largest Df, each mixture's difference quoted from its test."""
    top = float(g["bleu"].max())
    if not np.isfinite(top) or top < BLEU_FLOOR:
        return (f"{scope}, the models do not translate yet: BLEU stays below {BLEU_FLOOR:g} in every cell (at most "
                f"{fmt(top, 3)}), so its differences are stray n-grams, not translation.")
    d = g["df"].max()
    parts, tests = [], []
    for mix, gm in g[g["df"] == d].groupby("mixture", sort=False):
        c = comparison(comp, "pretraining", task, model, method, d, mixture_b=mix)
        if c is not None:
            tests.append(c)
            parts.append(f"{mix} {float(c['delta']):+.2f} BLEU [{float(c['delta_lo']):+.2f}, "
                         f"{float(c['delta_hi']):+.2f}], {p_is(c['p_value'])}{length_flag(c, flag)}")
        elif (gm["dp"] == 0).any() and (gm["dp"] > 0).any():
            a, b = float(gm.loc[gm["dp"] == 0, "bleu"].iloc[0]), float(gm.sort_values("dp")["bleu"].iloc[-1])
            parts.append(f"{mix} {b - a:+.2f} BLEU (untested)")
    if not parts:
        return f"{scope}, BLEU reaches {fmt(top, 3)}; no curve has both a Dp = 0 and a pretrained cell to compare."
    sig = [is_ok(c["significant"]) for c in tests]
    signs = {np.sign(float(c["delta"])) for c in tests}
    noise = " / ".join(dict.fromkeys(noise_of(c) for c in tests))
    if len(tests) < len(parts):
        verb = "pretraining changes BLEU (not every difference was tested: predictions missing)"
    elif all(sig) and signs == {-1.0}:
        verb = f"pretraining lowers BLEU beyond the noise of the {noise}"
    elif all(sig) and signs == {1.0}:
        verb = f"pretraining raises BLEU beyond the noise of the {noise}"
    elif not any(sig):
        verb = f"pretraining moves BLEU by no more than the noise of the {noise}"
    else:
        verb = f"pretraining's effect on BLEU differs by mixture (the noise of the {noise})"
    how = and_list(list(dict.fromkeys(_method(c) for c in tests))) if tests else ""
    only = ("; one seed a side, so training randomness is not covered" if tests
            and all(noise_of(c) == NOISE_TEST for c in tests) else "")
    rung = max((float(c["dp_rung_b"]) for c in tests), default=float(g["dp"].max()))
    return (f"{scope}, {verb}: at the largest Df and Dp ({fmt(int(d))} pairs, {fmt_tokens(rung)} tokens) against none, "
            + "; ".join(parts) + (f" ({how}, 95% intervals{only})" if how else "") + ".")


def _ce(g: pd.DataFrame) -> str:
    """Pretraining's effect on CE from Dp = 0 to the largest Dp, at the smallest and the largest Df."""
    dfs = sorted(g["df"].unique())
    at: dict[Any, dict[str, float]] = {}
    for d in dict.fromkeys([dfs[0], dfs[-1]]):
        for mix, c in g[(g["df"] == d) & g["ce"].notna()].groupby("mixture", sort=False):
            c = c.sort_values("dp")
            if (c["dp"] == 0).any() and c["dp"].iloc[-1] > 0:
                at.setdefault(d, {})[mix] = float(c["ce"].iloc[-1] - c.loc[c["dp"] == 0, "ce"].iloc[0])
    if not at:
        return ""
    said = [" and ".join(f"{v:+.3f} ({mix})" for mix, v in ch.items()) + f" at Df = {fmt(int(d))}"
            for d, ch in at.items()]
    said[0] = said[0].replace(" at Df", " nats a token at Df", 1)
    first, last = list(at.values())[0], list(at.values())[-1]
    if len(at) == 2 and all(v < 0 for v in first.values()) and all(v >= 0 for v in last.values()):
        reading = ": pretraining helps it with little finetuning data, not with the most"
    elif all(v < 0 for ch in at.values() for v in ch.values()):
        reading = ": pretraining lowers it at " + ("both ends of the Df ladder" if len(at) == 2 else "this Df")
    elif all(v > 0 for ch in at.values() for v in ch.values()):
        reading = ": pretraining raises it at " + ("both ends of the Df ladder" if len(at) == 2 else "this Df")
    else:
        reading = ""
    return ("From no pretraining to the largest Dp, the cross-entropy (seed means; descriptive, no test) changes by "
            + " and by ".join(said) + f"{reading}.")


def _laws(f: pd.DataFrame) -> str:
    """Which per-curve laws stand (fitted, no flag that breaks the curve), which were fitted but flagged, which
    could not be fitted, with the commonest reason."""
    parts = []
    for metric in curve_metrics():
        c = curve_fits(f, metric)
        if c.empty:
            continue
        ok, stands = c["ok"].map(is_ok), standing(c)
        s = (f"the {law_name(c['law'].iloc[0], metric)} " + ("on" if parts else "stands on")
             + f" {int(stands.sum())} of {len(c)} curves")
        more = []
        if stands.any():
            worst = c.loc[stands, "holdout_mre"].max()
            if np.isfinite(worst):
                more.append(f"held-out relative error at most {fmt_pct(worst)}")
        weak = c[ok & ~stands]
        if len(weak):
            kinds = pd.Series([breaking_flags(x)[0] for x in weak["flags"]]).value_counts()
            more.append(f"{len(weak)} fitted but flagged: " + ", ".join(f"{n} with {k}" for k, n in kinds.items()))
        failed = c[~ok]
        if len(failed):
            reasons = pd.Series([plain_reason(r, metric) for r in failed["reason"]]).value_counts()
            more.append(f"{len(failed)} not fitted: {reasons.index[0]}"
                        + (f" on {reasons.iloc[0]}" if len(reasons) > 1 else ""))
        parts.append(s + (f" ({'; '.join(more)})" if more else ""))
    if not parts:
        return ""
    none = not standing(pd.concat([curve_fits(f, m) for m in curve_metrics()])).any()
    return ("Of the per-curve laws, " + and_list(parts)
            + (": none is fit to extrapolate from." if none else "."))
