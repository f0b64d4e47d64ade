"""Plain sentences generated from the numbers: per (task, model, method) the laws' state, extrapolation,
misalignment, what pretraining changes and which mixture wins; and the sentences of the three questions
(correlations, model sizes, finetuning methods). Each sentence is said once, listing the curves it covers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import FitConfig
from pipeline.metrics import METRICS, curve_metrics
from pipeline.report.figures import records
from pipeline.report.fmt import (
    METRIC,
    and_list,
    breaking_flags,
    finite,
    fmt,
    fmt_ci,
    fmt_count,
    fmt_df,
    fmt_pct,
    fmt_tokens,
    law_name,
    plain_reason,
)
from pipeline.report.tables import curve_fits, of_group, standing
from pipeline.results import is_ok
from pipeline.significance import ALPHA, NOISE_SEEDS, NOISE_TEST, RankTest, p_is, rank_test

BLEU_FLOOR = 1.0  # below this no cell translates: BLEU counts a few stray n-grams
MONOTONE_RHO = 0.8  # |Spearman ρ| at least this: an upstream loss that ranks a curve's points (descriptive)


def curve_name(mix: str, df: Any) -> str:
    return f"{mix} at Df = {fmt_df(df)}"


def grouped(pairs: list[tuple[str, str]]) -> list[str]:
    """(sentence, curve) pairs -> one line per sentence listing its curves: said once, not once a curve."""
    by: dict[str, list[str]] = {}
    for sentence, curve in pairs:
        by.setdefault(sentence, []).append(curve)
    return [s.replace("{where}", and_list(c)) for s, c in by.items()]  # not format(): reasons may hold braces


def _law_status(f: pd.DataFrame, metric: str, n_curves: int) -> list[str]:
    """Failed per-curve fits of one metric, one line per reason; all curves failing for one reason is one line."""
    bad = curve_fits(f, metric)
    bad = bad[~bad["ok"].map(is_ok)]
    if bad.empty:
        return []
    name = "The " + law_name(bad["law"].iloc[0], metric)
    if len(bad) == n_curves and bad["reason"].nunique() == 1:
        return [f"{name} could not be fitted on any curve: {plain_reason(bad['reason'].iloc[0], metric)}."]
    return grouped([(f"{name} could not be fitted for {{where}}: {plain_reason(r['reason'], metric)}.",
                      curve_name(r["mixture"], r["df"])) for _, r in bad.iterrows()])


def comparison(comp: pd.DataFrame | None, kind: str, task: str, model: str, method: str, df: Any,
               mixture_a: str | None = None, mixture_b: str | None = None) -> pd.Series | None:
    """The paired-bootstrap comparison (pipeline.significance, from comparisons.csv) of this kind at the largest
    rung it covers, or None when collect made none (a results table copied without its predictions)."""
    if comp is None or comp.empty:
        return None
    c = comp[(comp["kind"] == kind) & (comp["task"] == task) & (comp["model"] == model) & (comp["method"] == method)
             & (comp["df"].astype(str) == str(df))]
    if mixture_a is not None:
        c = c[c["mixture_a"] == mixture_a]
    if mixture_b is not None:
        c = c[c["mixture_b"] == mixture_b]
    return c.sort_values("dp_rung_b").iloc[-1] if len(c) else None


def rung_steps(comp: pd.DataFrame | None, task: str, model: str, method: str, df: Any,
               mixture: str) -> tuple[int, int, str] | None:
    """(rung-to-rung BLEU changes beyond the noise, all of them, the noise their tests cover) along one curve;
    None without comparisons."""
    if comp is None or comp.empty:
        return None
    c = comp[(comp["kind"] == "rung") & (comp["task"] == task) & (comp["model"] == model)
             & (comp["method"] == method) & (comp["df"].astype(str) == str(df)) & (comp["mixture_a"] == mixture)]
    return (int(c["significant"].map(is_ok).sum()), len(c), noises([r for _, r in c.iterrows()])) if len(c) else None


def noise_of(c: pd.Series) -> str:
    """The noise a comparison's test covers: 'test sentences' or 'seeds + test sentences' (comparisons.csv from
    before the seeds test has no column: its bootstrap covered the test sentences)."""
    v = c.get("noise")
    return v if isinstance(v, str) and v else NOISE_TEST


def noises(cs: list[pd.Series]) -> str:
    """The noises a group of comparisons covers, each named once ('test sentences' or 'seeds + test sentences')."""
    return " / ".join(dict.fromkeys(noise_of(c) for c in cs)) or NOISE_TEST


def length_flag(c: pd.Series | None, threshold: float | None) -> str:
    """'; output lengths differ (length ratio 0.98 → 1.42): part of the gap may be length, not translation' where
    the two sides' output/reference length ratios differ by more than `threshold` (fit.length_ratio_flag)."""
    if c is None or threshold is None or not (finite(c.get("len_ratio_a")) and finite(c.get("len_ratio_b"))):
        return ""
    a, b = float(c["len_ratio_a"]), float(c["len_ratio_b"])
    if abs(b - a) <= threshold:
        return ""
    return (f"; ⚠ output lengths differ (length ratio {a:.2f} → {b:.2f}, more than {threshold:g} apart): part of "
            "the BLEU gap may be length, not translation")


def _interval(c: pd.Series) -> str:
    """'[+1.20, +5.00], p = 0.002': a comparison's 95% interval and p-value (printed so p < 0.05 reads off it)."""
    return f"[{float(c['delta_lo']):+.2f}, {float(c['delta_hi']):+.2f}], {p_is(c['p_value'])}"


def _method(c: pd.Series) -> str:
    if noise_of(c) == NOISE_SEEDS:
        seeds = len(str(c.get("seeds", "")).split("+"))
        return f"t-test over {seeds} seeds a side with a bootstrap over {int(c['n']):,} sentences"
    return f"paired bootstrap over {int(c['n']):,} sentences"


def sig_text(c: pd.Series | None, flag: float | None = None) -> str:
    """'+3.10 BLEU [+1.20, +5.00], p = 0.002, paired bootstrap over 2,000 sentences: beyond the noise of the test
    sentences', with a length warning (length_flag); a note when no test could be made."""
    if c is None:
        return "no significance test (the cells' predictions were not collected)"
    iv = f"{float(c['delta']):+.2f} BLEU {_interval(c)}, {_method(c)}"
    return (iv + (": beyond" if is_ok(c["significant"]) else ": inside") + f" the noise of the {noise_of(c)}"
            + length_flag(c, flag))


def sig_brief(c: pd.Series | None, flag: float | None = None) -> str:
    """sig_text without the difference itself, for a sentence that has just stated it: '95% CI [+1.20, +5.00],
    p = 0.002: beyond the noise of the test sentences'."""
    if c is None:
        return "no significance test"
    return (f"95% CI {_interval(c)}: " + ("beyond" if is_ok(c["significant"]) else "inside")
            + f" the noise of the {noise_of(c)}" + length_flag(c, flag))


def _more_pretraining(recs: list[dict[str, Any]], dp: float, bleu_now: float) -> str:
    """What more pretraining would buy: the BLEU law's prediction at `dp`, with the interval a measurement
    there would fall in (pipeline.scaling.predict, the same function as `python -m pipeline.scaling predict`)."""
    from pipeline.scaling.fit import FitResult
    from pipeline.scaling.predict import predict_at

    p = predict_at(FitResult.from_dict(recs[0]), [dp]) if recs and recs[0].get("ok") else None
    if p is None or not finite(p.value):
        return f"no prediction at Dp = {fmt_tokens(dp)} tokens."
    band = fmt_ci(p.value, p.lo, p.hi)[len(fmt(p.value)):]
    return (f"doubling Dp to {fmt_tokens(dp)} tokens is predicted to move BLEU from {fmt(bleu_now, 3)} to "
            f"{fmt(p.value, 3)}{band} ({p.value - bleu_now:+.2f}; {p.level:.0%} interval for a measurement).")


def curve_rank_test(pts: pd.DataFrame, mixture: str, df: Any) -> RankTest:
    """Do BLEU and CE rank one curve's Dp > 0 rungs (seed means) alike? Spearman's ρ of BLEU against CE with its
    exact permutation p-values (pipeline.significance.rank_test)."""
    c = pts[(pts["mixture"] == mixture) & (pts["df"].astype(str) == str(df)) & (pts["dp"] > 0)].sort_values("dp")
    return rank_test(c["ce"].to_numpy(float), c["bleu"].to_numpy(float))


def rank_text(rt: RankTest) -> str:
    """'ρ = −0.70 over 5 rungs, exact permutation p = 0.117': ρ with the one-sided p of its own sign."""
    p = rt.p_neg if rt.rho <= 0 else rt.p_pos
    return f"ρ = {rt.rho:+.2f} over {rt.n} rungs, {'exact' if rt.exact else 'sampled'} permutation {p_is(p)}"


def verdicts(task: str, pts: pd.DataFrame, fits_df: pd.DataFrame, fits: list[dict[str, Any]], model: str,
             method: str, fit_cfg: FitConfig, comp: pd.DataFrame | None = None) -> list[str]:
    """Plain sentences generated from the numbers, for one (task, model, method); each said once. Every BLEU
    difference read carries its paired-bootstrap test from `comp` (comparisons.csv); a law "holds" within
    `fit_cfg.good_rel_err`, the threshold the fit stage's misalignment verdict used."""
    good_err = fit_cfg.good_rel_err
    out: list[str] = []
    g = pts[pts["task"] == task]
    dfs = sorted(g["df"].unique())
    f = of_group(fits_df, (task, model, method))
    f = f[f["x"].astype(str) == "dp"]
    n_curves = len(g.groupby(["mixture", "df"]))
    top = g["bleu"].max() if len(g) else np.nan
    # a (mixture, Df) curve whose best cell is below the floor does not translate: its BLEU moves are stray n-grams
    curve_top = {(m, float(d)): v for (m, d), v in g.groupby(["mixture", "df"])["bleu"].max().items()}

    def floored(mix: str, df: Any) -> bool:
        return curve_top.get((mix, float(df)), np.inf) < BLEU_FLOOR

    nothing_translates = bool(np.isfinite(top) and top < BLEU_FLOOR)
    if nothing_translates:
        out.append(f"BLEU stays below {BLEU_FLOOR:g} in every cell (at most {fmt(top, 3)}): the models do not translate "
                   f"yet at this scale, so BLEU's ups and downs are noise; read the cross-entropy, or run a larger "
                   f"scale.")
    for metric in curve_metrics():
        out += _law_status(f, metric, n_curves)
    for mix, gm in g.groupby("mixture", sort=False):
        bl = curve_fits(f[f["mixture"] == mix], "bleu")
        ok = bl[standing(bl)]  # a fit whose curve does not stand (fmt.breaking_flags) is no law to read
        if not len(ok):
            continue
        align = gm["alignment"].iloc[0]
        name = law_name(ok["law"].iloc[0], "bleu")
        good = ok[ok["holdout_mre"].fillna(np.inf) <= good_err]
        if len(good) == len(bl):
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): BLEU follows the {name} at every Df "
                       f"(held-out relative error ≤ {good_err:.0%}).")
        else:
            worst = ok.sort_values("holdout_mre", na_position="first").iloc[-1]
            out.append(f"**{mix}** (alignment {fmt(align, 3)}): the {name} stands on {len(ok)} of {len(bl)} Df "
                       f"values; the worst held-out relative error is {fmt_pct(worst['holdout_mre'])} at Df = "
                       f"{fmt_df(worst['df'])}.")
        for _, r in ok.iterrows():
            curve = gm[(gm["df"].astype(str) == str(r["df"])) & (gm["dp"] > 0)].sort_values("dp")
            if curve.empty:  # fits.csv from another table than this one
                continue
            last = curve.iloc[-1]
            out.append(f"**{mix}**, Df = {fmt_df(r['df'])}: " + _more_pretraining(
                records(fits, task=task, model=model, method=method, mixture=mix, df=r["df"], metric="bleu",
                        x="dp"), r["next_rung"], last["bleu"]))
    # Misalignment (Isik et al. §3.5): CE falls while BLEU does not follow; one line per kind of disagreement.
    flagged = []
    for r in records(fits, task=task, metric="verdict", model=model, method=method):
        if not r.get("flag") or nothing_translates:  # no BLEU signal to disagree with
            continue
        if floored(r["mixture"], r["df"]):
            s = (f"BLEU stays below {BLEU_FLOOR:g} at every Dp for {{where}}: the models do not translate at that Df, "
                 "so BLEU can neither follow CE nor contradict it there, whatever its tests say; read the CE.")
        elif not r.get("bleu_monotone"):
            steps = rung_steps(comp, task, model, method, r["df"], r["mixture"])
            if steps is not None and not steps[0]:  # no rung-to-rung change is beyond the noise
                s = (f"CE keeps falling with Dp while BLEU's ups and downs are all inside the noise of the {steps[2]}, "
                     "for {where}: BLEU does not move there.")
            else:
                s = ("CE keeps falling with Dp while BLEU does not rise with it"
                     + (f" (rung-to-rung changes beyond the noise of the {steps[2]})" if steps is not None else "")
                     + ", for {where}: CE is a misleading proxy there.")
        elif not r.get("bleu_fit_ok"):
            s = f"CE keeps falling with Dp while BLEU follows no {law_name(fit_cfg.curve_law('bleu')[0], 'bleu')} (see above), for {{where}}."
        else:
            s = (f"CE keeps falling with Dp while the BLEU law misses the held-out Dp by more than {good_err:.0%}, "
                 "for {where}.")
        flagged.append((s, curve_name(r["mixture"], r["df"])))
    out += grouped(flagged)
    # Where CE is not flagged, do BLEU and CE still rank the rungs alike? (On a curve that translates: the verdict
    # the paper draws, read both ways, not only "CE falls while BLEU does not".)
    moves = []
    for r in records(fits, task=task, metric="verdict", model=model, method=method):
        if r.get("flag") or not finite(r.get("rho")) or floored(r["mixture"], r["df"]) or nothing_translates:
            continue
        steps = rung_steps(comp, task, model, method, r["df"], r["mixture"])
        rt = curve_rank_test(g, r["mixture"], r["df"])
        noise = ("" if steps is None else
                 f"; {steps[0]} of {steps[1]} rung-to-rung BLEU changes beyond the noise of the {steps[2]}")
        where = f"{curve_name(r['mixture'], r['df'])} ({rank_text(rt)}{noise})"
        if rt.p_neg < ALPHA:
            s = ("BLEU and CE move together across Dp for {where}: the rungs with the lower CE have the higher BLEU, "
                 "so CE tells BLEU's story there.")
        elif steps is not None and not steps[0]:
            s = ("BLEU and CE do not rank the Dp rungs alike for {where}, but BLEU's changes from rung to rung are "
                 f"inside the noise of the {steps[2]} there: nothing for CE to miss.")
        elif rt.p_pos < ALPHA:
            s = ("BLEU and CE move against each other across Dp for {where}: the rungs with the lower CE have the "
                 "lower BLEU, so CE is no proxy for BLEU there.")
        else:
            s = ("Whether BLEU and CE move together across Dp cannot be told for {where}: over so few rungs neither "
                 f"ranking is beyond chance (one-sided p ≥ {ALPHA:g} each way), so this is descriptive.")
        moves.append((s, where))
    out += grouped(moves)
    # Does pretraining still matter at the largest Df? BLEU from no pretraining to the largest Dp at every Df, then
    # the smallest Df at which BLEU measures translation (a curve below the floor cannot) against the largest.
    if len(dfs) >= 2:
        for mix, gm in g.groupby("mixture", sort=False):
            gains = {}
            for d in dfs:
                s = gm[gm["df"] == d].sort_values("dp")
                if len(s) >= 2 and (s["dp"] == 0).any() and s["dp"].iloc[-1] > 0:
                    gains[d] = float(s["bleu"].iloc[-1] - s[s["dp"] == 0]["bleu"].iloc[0])
            if len(gains) < 2:
                continue
            tests = {d: comparison(comp, "pretraining", task, model, method, d, mixture_b=mix) for d in gains}
            # a difference and its interval computed the same way: the test's own difference where there is one
            gains = {d: float(tests[d]["delta"]) if tests[d] is not None else v for d, v in gains.items()}
            head = f"**{mix}**: from no pretraining to the largest Dp, BLEU changes by " + ", ".join(
                f"{v:+.2f} at Df = {fmt(int(d))} ({sig_brief(tests[d], fit_cfg.length_ratio_flag)}"
                + ("; no cell translates at this Df" if floored(mix, d) else "") + ")" for d, v in gains.items())
            read = [d for d in gains if not floored(mix, d)]
            if len(read) < 2:
                where = f"only at Df = {fmt(int(read[0]))}" if read else "at no Df"
                out.append(f"{head}: BLEU measures translation {where}, so it cannot tell whether pretraining matters "
                           "less at the largest Df; the CE can (below).")
                continue
            lo, hi = gains[read[0]], gains[read[-1]]
            c_lo, c_hi = tests[read[0]], tests[read[-1]]
            sig = [c for c in (c_lo, c_hi) if c is not None]
            if sig and not any(is_ok(c["significant"]) for c in sig):
                out.append(f"{head}: pretraining makes no difference to BLEU beyond the noise of the {noises(sig)} "
                           f"at Df = {fmt(int(read[0]))} or {fmt(int(read[-1]))}.")
            elif not sig and max(abs(lo), abs(hi)) < 0.5:
                out.append(f"{head}: pretraining makes no visible difference to BLEU at any Df here.")
            else:
                # "washes out" is about a gain at the smaller Df that the largest Df no longer shows
                fades = lo > 0 and (hi < 0.25 * lo or (
                    c_lo is not None and c_hi is not None and is_ok(c_lo["significant"]) and not is_ok(c_hi["significant"])))
                hurts = [d for d in read if gains[d] < 0 and tests[d] is not None and is_ok(tests[d]["significant"])]
                out.append(head + (": at the largest Df pretraining no longer matters much." if fades else
                                   f": pretraining lowers BLEU beyond the noise of the "
                                   f"{noises([tests[d] for d in hurts])} at Df = "
                                   f"{and_list([fmt(int(d)) for d in hurts])}." if hurts else "."))
    # The cross-entropy side of the same question (the signal that remains when BLEU is at its floor).
    for mix, gm in g.groupby("mixture", sort=False):
        drops = []
        for d in dfs:
            c = gm[(gm["df"] == d) & gm["ce"].notna()].sort_values("dp")
            if len(c) >= 2 and (c["dp"] == 0).any() and c["dp"].iloc[-1] > 0:
                drops.append((d, float(c["ce"].iloc[-1] - c[c["dp"] == 0]["ce"].iloc[0])))
        if drops:
            out.append(f"**{mix}**: from no pretraining to the largest Dp, CE changes by "
                       + ", ".join(f"{v:+.3f} at Df = {fmt(int(d))}" for d, v in drops) + " (nats a token; seed means, no test: descriptive).")
    # Alignment: which mixture wins at the largest Dp, per Df.
    if g["mixture"].nunique() >= 2:
        for d in dfs:
            top = g[(g["df"] == d) & (g["dp"] > 0)]
            # the mixtures compared at one Dp that each of them reached (a sweep still running has gaps)
            shared = set.intersection(*(set(x["dp"]) for _, x in top.groupby("mixture"))) if len(top) else set()
            if top["mixture"].nunique() < 2 or not shared:
                continue
            best = top[top["dp"] == max(shared)].sort_values("bleu", ascending=False)
            if best["bleu"].nunique() == 1:
                out.append(f"At the largest Dp and Df = {fmt(int(d))}, every mixture has the same BLEU "
                           f"({fmt(best['bleu'].iloc[0], 3)}).")
                continue
            found = [c for c in (comparison(comp, "mixture", task, model, method, d, mixture_b=m)
                                 for m in best["mixture"]) if c is not None]
            # each mixture's BLEU as its test computed it (seed-averaged corpus BLEU; a table from before the seeds
            # test pooled the seeds' sentences), so the levels and the differences in this sentence agree
            level = {**{c["mixture_a"]: c["bleu_a"] for c in found}, **{c["mixture_b"]: c["bleu_b"] for c in found}}
            desc = ", ".join(f"{r['mixture']} {fmt(float(level.get(r['mixture'], r['bleu'])), 3)} "
                             f"(A = {fmt(r['alignment'], 3)})" for _, r in best.iterrows())
            tests = [f"{c['mixture_b']} against {c['mixture_a']}: {sig_text(c, fit_cfg.length_ratio_flag)}" for c in found]
            none = (f" Neither cell translates (BLEU below {BLEU_FLOOR:g}): the ranking is of stray n-grams, not of "
                    "translation." if (best["bleu"] < BLEU_FLOOR).all() else "")
            out.append(f"At the largest Dp and Df = {fmt(int(d))}, BLEU by mixture: {desc}"
                       + (f" ({'; '.join(tests)})." if tests else ".") + none)
    return out


def corr_verdicts(corr: pd.DataFrame) -> tuple[list[str], list[str]]:
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
        sign = -1 if METRICS[metric].higher_is_better else 1  # a better model has a lower upstream loss
        good = int((sign * v >= MONOTONE_RHO).sum())
        out.append(f"{name}: Spearman ρ from {fmt(v.min(), 3)} to {fmt(v.max(), 3)} (median {fmt(v.median(), 3)}) over "
                   f"{len(v)} curves; {good} of {len(v)} show the expected monotone relation (ρ {'≥ ' if sign > 0 else '≤ −'}{MONOTONE_RHO:g}; "
                   f"descriptive: {fmt_count(c['n'].max())} points a curve at most, no test).")
    per_curve, out = out, []
    pooled = corr[(corr["mixture"].astype(str) == "all") & (corr["metric"] == "ce")]
    for _, r in pooled.iterrows():
        if finite(r["pearson"]):
            out.append(f"Pooled over mixtures and Df ({r['model']}, {r['method']}, {'mixture' if r['upstream'] == 'mixture' else 'target-language'} "
                       f"loss): CE r = {fmt(r['pearson'], 3)}, ρ = {fmt(r['spearman'], 3)} over {fmt_count(r['n'])} points"
                       + (" — one upstream loss does not rank curves across mixtures." if r["spearman"] < MONOTONE_RHO else "."))
    return per_curve, out


def size_verdicts(pts: pd.DataFrame, fits_df: pd.DataFrame, models: list[str]) -> list[str]:
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
        ok = f[standing(f)]  # a fit whose curve does not stand is said so below, not read
        out += grouped([(f"The {what} law across sizes was fitted for {{where}} but does not stand "
                         f"({'; '.join(breaking_flags(r['flags']))}): its exponents are not read.",
                         f"{r['mixture']}" + (f" ({r['method']})" if law == "joint" else ""))
                        for _, r in f[f["ok"].map(is_ok) & ~standing(f)].iterrows()])
        for _, r in ok.iterrows():
            if law == "chinchilla":
                out.append(f"{r['task']} · **{r['mixture']}**: {what} falls as N^−{fmt(r['p_alpha'], 3)} with size and "
                           f"Dp^−{fmt(r['p_beta'], 3)} with data, towards E = {fmt(r['p_E'], 3)}.")
            else:
                out.append(f"{r['task']} · **{r['mixture']}** · {r['method']}: {what} falls as N^−{fmt(r['p_alpha'], 3)} "
                           f"with size and Df^−{fmt(r['p_beta'], 3)} with finetuning data.")
        out += grouped([(f"The {what} law across sizes could not be fitted for {{where}}: {r['reason']}.",
                          f"{r['mixture']}" + (f" ({r['method']})" if law == "joint" else ""))
                         for _, r in f[~f["ok"].map(is_ok)].iterrows()])
    return out


def _gap_trend(first: float, last: float) -> str:
    a, b = abs(first), abs(last)
    if np.sign(first) != np.sign(last) and min(a, b) > 0:
        return "changes sign as Dp grows"
    if b < 0.8 * a:
        return "narrows as Dp grows"
    if b > 1.25 * a:
        return "widens as Dp grows"
    return "stays about the same across Dp"


def method_summary(methods: pd.DataFrame) -> list[str]:
    """One sentence per (method against its reference, metric): how the gaps move over the curves."""
    out = []
    m = methods[methods["delta_first"].map(finite)] if len(methods) else methods
    for (method, ref, metric), g in m.groupby(["method", "reference", "metric"], sort=False):
        trends = pd.Series([_gap_trend(r["delta_first"], r["delta_last"]) for _, r in g.iterrows()]).value_counts()
        differs = g["alpha_differs"].astype(str).str.lower()
        n_cmp = int(differs.isin(["true", "false"]).sum())
        out.append(f"{method} − {ref}, {METRIC[metric]}: the mean gap over Dp > 0 is {fmt(g['delta_mean'].mean(), 3)} "
                   f"(over {len(g)} curves); the gap " + ", ".join(f"{t} on {n}" for t, n in trends.items())
                   + (f"; the fitted exponents differ on {int((differs == 'true').sum())} of {n_cmp} curves where both "
                      "laws were fitted." if n_cmp else "; no curve has both laws fitted, so no exponents to compare."))
    return out


def method_verdicts(methods: pd.DataFrame) -> list[str]:
    out = []
    for _, r in methods.iterrows():
        if not finite(r["delta_first"]):
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
