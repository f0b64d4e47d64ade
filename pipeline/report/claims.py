"""Isik et al. (2024)'s seven claims, each marked reproduced / contradicted / inconclusive at the scale the study ran,
with its numbers and the test behind it. Read from the report's own inputs: the usable cells of results.csv (seed
means per mixture, Df and Dp rung), comparisons.csv (BLEU: paired bootstrap over the test sentences, or over seeds
and sentences together; the noise each covers is named) and fits.csv (the per-curve laws). Cross-entropy has no
per-sentence record, so its changes are descriptive (seed means), and said so. A BLEU comparison whose two cells both
score below BLEU_FLOOR is not evidence either way: at that level BLEU counts stray n-grams, not translation.

The claims (issue 28): 1. BLEU rises and CE falls smoothly and monotonically as Df grows; 2. with the aligned
mixture both improve as Dp grows; 3. pretraining's gain is larger at smaller Df; 4. at a large enough Df BLEU is about
constant in Dp, little better than no pretraining; 5. the less aligned mixture gives lower BLEU and higher CE at the
same Dp and Df; 6. the BLEU log-law and the CE law fit the rungs with small held-out error; 7. where alignment is
weaker, CE can improve while BLEU does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import FitConfig
from pipeline.report.document import Block
from pipeline.report.fmt import fmt_df, fmt_pct, fmt_tokens
from pipeline.report.tables import curve_fits, of_group, standing
from pipeline.report.verdicts import BLEU_FLOOR, comparison, length_flag, noises
from pipeline.results import is_ok
from pipeline.significance import ALPHA, gap_test, p_is

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive"
CE_DESCRIPTIVE = "CE: seed means, descriptive (no per-sentence CE is kept, so no test)"
TEXTS = {
    1: "BLEU rises and CE falls smoothly and monotonically as Df grows",
    2: "with the aligned mixture, BLEU and CE both improve as Dp grows",
    3: "pretraining's gain is larger at smaller Df",
    4: "at a large enough Df, BLEU is about constant in Dp, little better than no pretraining",
    5: "the less aligned mixture gives lower BLEU and higher CE than the aligned one at the same Dp and Df",
    6: "the BLEU log-law and the CE law fit the rungs with small held-out error",
    7: "where alignment is weaker, CE can improve while BLEU does not",
}


@dataclass(frozen=True)
class Claim:
    number: int
    verdict: str
    evidence: str
    test: str

    @property
    def text(self) -> str:
        return TEXTS[self.number]


@dataclass(frozen=True)
class _Test:
    """One BLEU comparison of b against a (from comparisons.csv), oriented as the claim reads it."""

    delta: float
    lo: float
    hi: float
    p: float
    significant: bool
    translates: bool  # at least one side at or above BLEU_FLOOR
    row: pd.Series
    t_df: float = float("inf")  # the interval's degrees of freedom (the seeds test's t; inf for the bootstrap's)

    @property
    def sign(self) -> int:
        """+1 / -1: significantly above / below zero; 0: cannot be told, or no side translates."""
        return int(np.sign(self.delta)) if self.significant and self.translates else 0

    def said(self) -> str:
        s = f"{self.delta:+.2f} [{self.lo:+.2f}, {self.hi:+.2f}], {p_is(self.p)}"
        s += "" if self.translates else f" (both below BLEU {BLEU_FLOOR:g})"
        return s + str(self.row.get("length_note") or "")  # output lengths differ (fit.length_ratio_flag)


def _test(row: pd.Series, flip: bool = False) -> _Test:
    d, lo, hi = float(row["delta"]), float(row["delta_lo"]), float(row["delta_hi"])
    if flip:
        d, lo, hi = -d, -hi, -lo
    t_df = float(row["t_df"]) if "t_df" in row and pd.notna(row["t_df"]) else float("inf")
    return _Test(d, lo, hi, float(row["p_value"]), is_ok(row["significant"]),
                 max(float(row["bleu_a"]), float(row["bleu_b"])) >= BLEU_FLOOR, row, t_df)


def _gap(a: _Test, b: _Test) -> tuple[float, float]:
    """a's difference minus b's and its p (significance.gap_test, each interval with its degrees of freedom)."""
    return gap_test(a.delta, a.lo, a.hi, b.delta, b.lo, b.hi, a.t_df, b.t_df)


def cell_means(rows: pd.DataFrame) -> pd.DataFrame:
    """BLEU and CE seed means per (mixture, Df, Dp rung) of one (task, model, method), with the alignment."""
    return (rows.groupby(["mixture", "df", "dp_rung"]).agg(bleu=("bleu", "mean"), ce=("ce", "mean"),
                                                           alignment=("alignment", "first"), seeds=("seed", "size"))
            .reset_index().sort_values(["mixture", "df", "dp_rung"]))


def claims(rows: pd.DataFrame, comp: pd.DataFrame | None, fits_df: pd.DataFrame, fit_cfg: FitConfig) -> list[Claim]:
    """The seven claims for one (task, model, method): `rows` its usable results rows, `comp` and `fits_df` its
    comparisons and fits (other groups' rows are ignored by the caller's selection)."""
    cells = cell_means(rows)
    comp = pd.DataFrame() if comp is None or comp.empty else comp.assign(
        length_note=[length_flag(r, fit_cfg.length_ratio_flag) for _, r in comp.iterrows()])
    return [_monotone_in_df(cells), _aligned_improves(cells, comp), _gain_shrinks(cells, comp),
            _flat_at_large_df(cells, comp), _mixtures(cells, comp), _laws(fits_df, fit_cfg, cells),
            _ce_not_bleu(cells, comp)]


def _mixes(cells: pd.DataFrame) -> tuple[str | None, str | None]:
    """(aligned, less aligned): the mixtures of highest and lowest alignment (None when they are one)."""
    al = cells.groupby("mixture")["alignment"].first().dropna().sort_values()
    if al.empty:
        return None, None
    return str(al.index[-1]), (str(al.index[0]) if al.iloc[0] < al.iloc[-1] else None)


def _pretraining(comp: pd.DataFrame, mix: str, df: Any) -> _Test | None:
    """The top rung against no pretraining, for `mix` at `df` (`comp` holds one (task, model, method)'s rows)."""
    if comp.empty:
        return None
    c = comparison(comp, "pretraining", *comp[["task", "model", "method"]].iloc[0], df, mixture_b=mix)
    return None if c is None else _test(c)


def _ce_change(cells: pd.DataFrame, mix: str, df: Any) -> tuple[float, int] | None:
    """CE at the top rung minus CE at Dp = 0, and the top rung, for `mix` at `df` (seed means)."""
    c = cells[(cells["mixture"] == mix) & (cells["df"] == df)].sort_values("dp_rung")
    if not (c["dp_rung"] == 0).any() or c["dp_rung"].iloc[-1] <= 0:
        return None
    return float(c["ce"].iloc[-1] - c.loc[c["dp_rung"] == 0, "ce"].iloc[0]), int(c["dp_rung"].iloc[-1])


def _monotone_in_df(cells: pd.DataFrame) -> Claim:
    curves, read, bleu_up, bleu_down, ce_down, ce_up = 0, 0, 0, 0, 0, 0
    dfs = sorted(cells["df"].unique())
    base = cells[cells["dp_rung"] == 0]
    one_base = base[base["mixture"] == base["mixture"].iloc[0]] if len(base) else base  # Dp = 0: one curve
    for _, c in pd.concat([one_base, cells[cells["dp_rung"] > 0]]).groupby(["mixture", "dp_rung"]):
        c = c.sort_values("df")
        if len(c) < 2:
            continue
        curves += 1
        ce_down += bool((np.diff(c["ce"]) < 0).all())
        ce_up += bool((np.diff(c["ce"]) > 0).any())
        if c["bleu"].max() >= BLEU_FLOOR:  # a curve below the floor throughout orders stray n-grams
            read += 1
            bleu_up += bool((np.diff(c["bleu"]) > 0).all())
            bleu_down += bool((np.diff(c["bleu"]) < 0).any())
    if not curves:
        return Claim(1, INCONCLUSIVE, "one Df value: nothing to order", "—")
    ev = (f"over Df {', '.join(fmt_df(d) for d in dfs)}: BLEU rises at every step on {bleu_up} of {read} (mixture, "
          f"Dp) curves that reach BLEU {BLEU_FLOOR:g}" + (f" ({curves - read} stay below)" if read < curves else "")
          + f", CE falls at every step on {ce_down} of {curves}")
    if (read and bleu_down > read / 2) or ce_up > curves / 2:
        verdict = CONTRADICTED  # most curves turn the wrong way somewhere
    elif read and bleu_up == read and ce_down == curves and len(dfs) >= 3:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    if len(dfs) < 3:
        ev += "; two Df values show the direction, not whether it is smooth (reproduced needs three)"
    return Claim(1, verdict, ev, "seed means, descriptive (the tests compare Dp rungs and mixtures, not Df)")


def _aligned_improves(cells: pd.DataFrame, comp: pd.DataFrame) -> Claim:
    aligned, _ = _mixes(cells)
    if aligned is None:
        return Claim(2, INCONCLUSIVE, "no mixture with an alignment", "—")
    parts, signs, ce = [], [], []
    tests = []
    for df in sorted(cells["df"].unique()):
        t, c = _pretraining(comp, aligned, df), _ce_change(cells, aligned, df)
        if t is None or c is None:
            continue
        tests.append(t.row)
        signs.append(t.sign)
        ce.append(c[0])
        parts.append(f"Df {fmt_df(df)}: BLEU {t.said()}, CE {c[0]:+.3f}")
    if not parts:
        return Claim(2, INCONCLUSIVE, f"{aligned}: no Df with both an unpretrained and a pretrained cell tested", "—")
    rungs = sorted({int(r["dp_rung_b"]) for r in tests})
    ev = (f"{aligned}, top rung ({' / '.join(fmt_tokens(r) for r in rungs)} tokens) against none — "
          + "; ".join(parts))
    read = [sg for sg, t in zip(signs, tests) if max(float(t["bleu_a"]), float(t["bleu_b"])) >= BLEU_FLOOR]
    if read and all(s > 0 for s in read) and all(x < 0 for x in ce):  # BLEU read where it measures translation
        verdict = REPRODUCED
    elif any(s < 0 for s in signs) or all(x > 0 for x in ce):
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return Claim(2, verdict, ev, f"BLEU: {_how(tests)}; {CE_DESCRIPTIVE}")


def _how(rows: list[pd.Series]) -> str:
    """'paired bootstrap, noise: test sentences' for a list of comparisons."""
    if not rows:
        return "no test"
    return f"95% intervals and p over the noise of the {noises(rows)}"


def _ends(cells: pd.DataFrame, comp: pd.DataFrame, parts: list[str]):
    """Per pretrained mixture, (mixture, small Df, large Df, their top-rung tests, the gap and its p): the smallest
    Df whose test reads translation (a side at BLEU_FLOOR or above; below it BLEU is stray n-grams) against the
    largest. A mixture with fewer than two such Df values is said in `parts` and skipped."""
    dfs = sorted(cells["df"].unique())
    for mix in cells.loc[cells["dp_rung"] > 0, "mixture"].unique():
        tests = {d: _pretraining(comp, mix, d) for d in dfs}
        read = [d for d in dfs if tests[d] is not None and tests[d].translates]
        if len(read) < 2:  # BLEU cannot tell; the CE at both ends can still show the direction, described
            cs, cl = _ce_change(cells, mix, dfs[0]), _ce_change(cells, mix, dfs[-1])
            parts.append(f"{mix}: BLEU reads translation at fewer than two Df values"
                         + (f" (CE with pretraining {cs[0]:+.3f} at Df {fmt_df(dfs[0])}, {cl[0]:+.3f} at Df "
                            f"{fmt_df(dfs[-1])}: descriptive)" if cs and cl and len(dfs) > 1 else ""))
            continue
        ts, tl = tests[read[0]], tests[read[-1]]
        yield (mix, read[0], read[-1], ts, tl, *_gap(ts, tl))


def _gain_shrinks(cells: pd.DataFrame, comp: pd.DataFrame) -> Claim:
    if cells["df"].nunique() < 2:
        return Claim(3, INCONCLUSIVE, "one Df value", "—")
    parts, votes, rows = [], [], []
    for mix, small, large, ts, tl, gap, p in _ends(cells, comp, parts):
        cs, cl = _ce_change(cells, mix, small), _ce_change(cells, mix, large)
        rows += [ts.row, tl.row]
        if ts.sign > 0 and gap > 0 and p < ALPHA:
            votes.append(1)
        elif gap < 0 and p < ALPHA and tl.sign > 0:
            votes.append(-1)  # a gain that grows with Df
        else:
            votes.append(0)
        parts.append(f"{mix}: BLEU gain {ts.said()} at Df {fmt_df(small)} vs {tl.said()} at Df {fmt_df(large)} "
                     f"(gap {gap:+.2f}, {p_is(p)}"
                     + ("; no gain beyond the noise at the small Df" if ts.sign <= 0 else "") + ")"
                     + (f"; CE {cs[0]:+.3f} vs {cl[0]:+.3f}" if cs and cl else ""))
    if not votes:
        return Claim(3, INCONCLUSIVE, "; ".join(parts) or "no pretrained mixture", "—")
    every = len(votes) == cells.loc[cells["dp_rung"] > 0, "mixture"].nunique()  # no mixture left unread
    verdict = (REPRODUCED if every and all(v > 0 for v in votes) else CONTRADICTED if any(v < 0 for v in votes)
               else INCONCLUSIVE)
    return Claim(3, verdict, "top rung against none — " + "; ".join(parts),
                 f"BLEU: each difference {_how(rows).removeprefix('95% intervals and p ')}; the gap between the "
                 "two by a t-test from their intervals (significance.gap_test, taken as independent: they share the "
                 "test sentences, so conservative); reproduced needs a gain beyond the noise at the small Df that "
                 f"is larger than the large Df's; {CE_DESCRIPTIVE}")


def _flat_at_large_df(cells: pd.DataFrame, comp: pd.DataFrame) -> Claim:
    if cells["df"].nunique() < 2:
        return Claim(4, INCONCLUSIVE, "one Df value: nothing says whether it is large enough", "—")
    parts, verdicts, rows = [], [], []
    for mix, small, large, ts, tl, gap, p in _ends(cells, comp, parts):
        steps = comp[(comp["kind"] == "rung") & (comp["mixture_b"] == mix) & (comp["df"].astype(str) == str(large))]
        moved = sum(_test(r).sign != 0 for _, r in steps.iterrows())
        rows += [ts.row, tl.row, *(r for _, r in steps.iterrows())]
        fades = ts.sign > 0 and gap > 0 and p < ALPHA and tl.sign >= 0
        if tl.sign < 0 or (gap < 0 and p < ALPHA and tl.sign > 0):
            verdicts.append(CONTRADICTED)  # pretraining lowers BLEU there, or its gain grows with Df
        elif fades and moved == 0:
            verdicts.append(REPRODUCED)
        else:
            verdicts.append(INCONCLUSIVE)
        parts.append(f"{mix} at Df {fmt_df(large)}: top rung against none {tl.said()} (at Df {fmt_df(small)}: "
                     f"{ts.said()}; gap {gap:+.2f}, {p_is(p)}); {moved} of {len(steps)} rung-to-rung steps beyond "
                     "the noise")
    if not parts:
        return Claim(4, INCONCLUSIVE, "no pretrained mixture", "—")
    every = len(verdicts) == cells.loc[cells["dp_rung"] > 0, "mixture"].nunique()  # no mixture left unread
    verdict = (CONTRADICTED if CONTRADICTED in verdicts else REPRODUCED if verdicts and every and all(
        v == REPRODUCED for v in verdicts) else INCONCLUSIVE)
    return Claim(4, verdict, "; ".join(parts),
                 f"BLEU: {_how(rows)}; reproduced: a gain beyond the noise at the smallest Df that reads translation, "
                 "significantly smaller at the largest (significance.gap_test), not negative there, and no rung step "
                 "there beyond the noise; contradicted: pretraining lowers BLEU at the largest Df, or its gain "
                 "grows with Df")


def _mixtures(cells: pd.DataFrame, comp: pd.DataFrame) -> Claim:
    aligned, weak = _mixes(cells)
    if weak is None:
        return Claim(5, INCONCLUSIVE, "one alignment in the study: nothing to compare", "—")
    c = comp[(comp["kind"] == "mixture") & comp["mixture_a"].isin([aligned, weak])
             & comp["mixture_b"].isin([aligned, weak])] if not comp.empty else pd.DataFrame()
    tests = [_test(r, flip=r["mixture_b"] == aligned) for _, r in c.iterrows()]  # as weak minus aligned
    lower, higher = sum(t.sign < 0 for t in tests), sum(t.sign > 0 for t in tests)
    pre = cells[cells["dp_rung"] > 0].pivot_table(index=["df", "dp_rung"], columns="mixture", values="ce")
    ce = (pre[weak] - pre[aligned]).dropna() if {weak, aligned} <= set(pre.columns) else pd.Series(dtype=float)
    n = len(tests)
    ev = (f"{weak} against {aligned} at {n} (Df, Dp) cells: BLEU lower beyond the noise in {lower}, higher in "
          f"{higher}, cannot be told in {n - lower - higher}"
          + (f" (median difference {np.median([t.delta for t in tests]):+.2f})" if tests else "")
          + (f"; CE higher in {int((ce > 0).sum())} of {len(ce)} (median {ce.median():+.3f})" if len(ce) else ""))
    if n and lower > n / 2 and higher == 0 and len(ce) and (ce > 0).mean() > 0.5:
        verdict = REPRODUCED
    elif n and (higher > n / 2 or (len(ce) and (ce < 0).mean() > 0.5)):
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE  # with no BLEU test, CE alone (descriptive) decides nothing
    return Claim(5, verdict, ev, f"BLEU: {_how([t.row for t in tests])}; {CE_DESCRIPTIVE}")


def _laws(fits_df: pd.DataFrame, fit_cfg: FitConfig, cells: pd.DataFrame) -> Claim:
    good = fit_cfg.good_rel_err
    parts, shares, bad = [], [], []
    for metric, name in (("bleu", "BLEU log-law"), ("ce", "CE law")):
        c = curve_fits(fits_df, metric) if len(fits_df) else pd.DataFrame()
        if c.empty:
            continue
        if metric == "bleu":  # a BLEU curve below the floor throughout is no curve to fit a law of translation to
            top = {(str(m), fmt_df(d)): v for (m, d), v in cells.groupby(["mixture", "df"])["bleu"].max().items()}
            c = c[[top.get((str(m), fmt_df(d)), np.nan) >= BLEU_FLOOR for m, d in zip(c["mixture"], c["df"])]]
            if c.empty:
                parts.append(f"{name}: no curve reaches BLEU {BLEU_FLOOR:g}")
                continue
        err = pd.to_numeric(c["holdout_mre"], errors="coerce")
        read = standing(c) & err.notna()  # fitted, no flag that breaks it, a held-out point scored
        small = read & (err <= good)
        shares.append(small.sum() / len(c))
        bad.append(bool(read.any()) and (read & ~small).sum() > read.sum() / 2)
        worst = err[read].max() if read.any() else np.nan
        parts.append(f"{name}: stands with a held-out point on {int(read.sum())} of {len(c)} curves, held-out "
                     f"relative error ≤ {good:.0%} on {int(small.sum())}"
                     + (f" (worst: {fmt_pct(worst)})" if np.isfinite(worst) else ""))
    if not shares:
        return Claim(6, INCONCLUSIVE, "; ".join(parts) or "no per-curve fit", "—")
    verdict = (REPRODUCED if len(shares) == 2 and all(x >= 0.5 for x in shares) else
               CONTRADICTED if any(bad) else INCONCLUSIVE)
    return Claim(6, verdict, "; ".join(parts),
                 "fits.csv: Huber fits on the smaller rungs, the largest held out; a curve is read when it is fitted, "
                 f"no flag breaks it and its held-out point is scored; small: ≤ {good:.0%} (fit.good_rel_err); "
                 "reproduced: small on at least half the curves of both laws; contradicted: most of a law's read "
                 "curves miss their held-out point by more")


def _ce_not_bleu(cells: pd.DataFrame, comp: pd.DataFrame) -> Claim:
    aligned, weak = _mixes(cells)
    if weak is None:
        return Claim(7, INCONCLUSIVE, "one alignment in the study: no weaker one", "—")
    cases, seen, rows = [], [], []
    for df in sorted(cells["df"].unique()):
        t, c = _pretraining(comp, weak, df), _ce_change(cells, weak, df)
        if t is None or c is None or c[0] >= 0:
            continue
        rows.append(t.row)
        said = f"Df {fmt_df(df)}: CE {c[0]:+.3f}, BLEU {t.said()}"
        seen.append(said)
        # "BLEU does not improve": lower beyond the noise, or an interval that leaves out a quarter of the aligned
        # mixture's own gain there (a gain the aligned mixture shows beyond the noise)
        ref = _pretraining(comp, aligned, df)
        if t.translates and (t.sign < 0 or (t.sign == 0 and ref is not None and ref.sign > 0
                                            and t.hi < 0.25 * ref.delta)):
            cases.append(said + (f" (aligned: {ref.said()})" if ref is not None and t.sign == 0 else ""))
    who = f"{weak} (alignment {cells.loc[cells['mixture'] == weak, 'alignment'].iloc[0]:g})"
    if cases:
        verdict, ev = REPRODUCED, f"{who}, top rung against none — " + "; ".join(cases)
    elif seen:
        verdict, ev = INCONCLUSIVE, (f"{who}: where CE improves, the BLEU test does not rule out a gain — "
                                     + "; ".join(seen))
    else:
        verdict, ev = INCONCLUSIVE, f"{who}: pretraining does not lower CE at any Df"
    return Claim(7, verdict, ev, f"BLEU: {_how(rows)}; reproduced: CE lower with pretraining where BLEU is lower "
                                 "beyond the noise, or its interval stays below a quarter of the aligned mixture's "
                                 f"gain there (an existence claim: not seen is inconclusive); {CE_DESCRIPTIVE}")


def claims_blocks(results_ok: pd.DataFrame, comp: pd.DataFrame | None, fits_df: pd.DataFrame, fit_cfg: FitConfig,
                  scale: str) -> list[Block]:
    """The section: one table of the seven claims per (task, model, method)."""
    out = [Block("h2", "The paper's claims at this scale"),
           Block("p", f"Isik et al. (2024)'s findings, each marked from this study's cells at {scale} scale: "
                      "reproduced, contradicted, or inconclusive (the cells cannot tell). BLEU differences carry the "
                      "test named; cross-entropy changes are seed means, descriptive.")]
    groups = list(results_ok.groupby(["task", "model", "method"], sort=False))
    for key, rows in groups:
        task, model, method = key
        found = claims(rows, of_group(comp, key), of_group(fits_df, key), fit_cfg)
        if len(groups) > 1:
            out.append(Block("p", f"**{task} · {model} · {method}**"))
        out.append(Block("table", header=["#", "claim (Isik et al. 2024)", "at this scale", "numbers", "test"],
                         rows=[[str(c.number), c.text, f"**{c.verdict}**", c.evidence, c.test] for c in found]))
    return out
