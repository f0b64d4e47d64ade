"""Is a BLEU difference beyond the noise? Of the test set alone (one seed a side), or of the seeds and the test
set together (two or more finetuning seeds on both sides).

**One seed a side: sacreBLEU's paired bootstrap resampling.**

Two systems translated the same test sentences; resampling the sentences (with replacement, the same sample for
both) gives the spread of each system's corpus BLEU and of their difference. sacreBLEU's own implementation
(`sacrebleu.significance`, Koehn 2004 as in Moses' `bootstrap-hypothesis-difference-significance.pl`) gives the
p-value; the interval of the difference is read off the same resamples here, because sacreBLEU reports each
system's interval but not the difference's. The resampling seed is sacreBLEU's (`SACREBLEU_SEED`, 12345 unless
set), so a comparison is a function of the predictions. Its `noise` is "test sentences".

**Two or more seeds on both sides: seeds and test sentences together** (`seeds_and_sentences`). The statistic is
the difference of the seed-averaged corpus BLEUs, D = mean_k B_k - mean_k A_k (each on the whole test set). Its
variance over a new draw of seeds *and* a new test set is estimated in three parts:

- B: the paired bootstrap over sentences of D (one index sample per resample, shared by every seed of both
  sides): the test set's sampling of the seed-averaged difference;
- I: the part of B that differs from seed to seed (each seed's bootstrap deviation from the seeds' mean, per
  side, scaled by n/(n-1) and divided by n): sentence-level noise that another seed would redraw;
- M: the seed-to-seed variance of corpus BLEU that the sentences do not show, per side max(0, s^2 - tau^2)/n,
  s^2 the sample variance of the seeds' BLEUs, tau^2 = n*I_side (Welch's s^2/n without the part counted in I).

V = max(B, I) + M (B already holds I once; a B below I is sampling noise in B). The test is Welch's t on
D / sqrt(V), with Satterthwaite's degrees of freedom from each side's s^2/n (n - 1 each: the seeds' variance is
what V's estimate is uncertain by; B and I come from thousands of resamples). The p-value and the 95% interval
come from the same t, so they always agree. 2 seeds a side give 1 to 2 degrees of freedom: wide intervals,
which is what 2 seeds can say. Calibration (tests/test_significance.py; 600 synthetic null pairs, 200 sentences):
on systems with identical distributions its false-positive rate at 0.05 is ~0.035 with a seed effect and ~0.015
without one (conservative: 2 seeds cannot show that there is none), where the bootstrap over pooled sentences,
this module's rule before, calls ~0.5 of them significant when seeds differ.
Seeds are not paired across the two sides (finetuning seed k of a pretrained cell and of the baseline share the
data order but not the weights): Welch, not a paired t.

**Do two metrics rank a handful of rungs alike?** (`rank_test`) Spearman's ρ over the 4-6 rungs of a curve is read
against its exact permutation distribution (every pairing of the points), not a fixed threshold: over 5 rungs
ρ = -0.8 happens by chance with p = 0.067, and only ρ <= -0.9 is below 0.05.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

ALPHA = 0.05  # a difference with p below this, and a 95% interval without 0, is called significant
RESAMPLES = 1000  # sacreBLEU's default for the paired bootstrap
NOISE_TEST = "test sentences"  # what a comparison's interval and p-value cover
NOISE_SEEDS = "seeds + test sentences"
EXACT_UP_TO = 8  # rank_test enumerates every pairing up to 8 points (8! = 40,320), samples them beyond
PERMUTATIONS = 20_000


@dataclass(frozen=True)
class Comparison:
    """System b against system a on the same sentences: b's BLEU minus a's, its 95% interval, sacreBLEU's p."""

    bleu_a: float
    bleu_b: float
    delta: float
    delta_lo: float
    delta_hi: float
    p_value: float
    n: int
    resamples: int
    noise: str = NOISE_TEST  # NOISE_TEST or NOISE_SEEDS
    t_df: float = float("nan")  # the t-test's degrees of freedom (seeds + test sentences; inf when M = 0)

    @property
    def significant(self) -> bool:
        # Both readings must agree. sacreBLEU's p centres the resampled differences on zero, the interval is their
        # percentiles: near BLEU 0 the resampled BLEU is skewed and the two can disagree (p = 0.004 beside
        # [-0.05, +0.01] in the default study), and a reader shown both should not be told "beyond the noise".
        return self.p_value < ALPHA and not (self.delta_lo <= 0.0 <= self.delta_hi)

    def as_dict(self) -> dict[str, float | int | bool]:
        return {**asdict(self), "significant": self.significant}

    def sentence(self, a: str, b: str) -> str:
        """One reader's sentence: 'b beats a by 3.1 BLEU [1.2, 5.0], p = 0.002' or 'inside the noise'."""
        iv = f"{self.delta:+.2f} BLEU [{self.delta_lo:+.2f}, {self.delta_hi:+.2f}], {p_is(self.p_value)}"
        if not self.significant:
            return f"{b} against {a}: {iv}, inside the noise of the {self.noise}"
        return f"{b} {'beats' if self.delta > 0 else 'trails'} {a}: {iv}, beyond the noise of the {self.noise}"


def p_text(p: float, alpha: float = ALPHA) -> str:
    """A p-value printed so the rule p < alpha can be read off it: three decimals, more where rounding would cross
    alpha (0.04995 prints as 0.04995, not 0.050), '< 0.001' below that."""
    p = float(p)
    if not np.isfinite(p):
        return "—"
    if p < 1e-3:
        return "< 0.001"
    for d in range(3, 12):
        if (round(p, d) < alpha) == (p < alpha):
            return f"{p:.{d}f}"
    return repr(p)


def p_is(p: float) -> str:
    """'p = 0.002', 'p = 0.04995' or 'p < 0.001', as a sentence writes it (see p_text)."""
    t = p_text(p)
    return f"p {t}" if t.startswith("<") else f"p = {t}"


@dataclass(frozen=True)
class RankTest:
    """Spearman's ρ of y against x over n points, with its permutation p-values one-sided each way."""

    rho: float
    n: int
    p_neg: float  # the chance of a ρ this low or lower with no association (small: y falls as x rises)
    p_pos: float  # ... this high or higher
    exact: bool  # every pairing enumerated (n <= EXACT_UP_TO), else PERMUTATIONS random ones


def rank_test(x: Sequence[float], y: Sequence[float], seed: int = 0) -> RankTest:
    """Spearman's ρ of `y` against `x` (non-finite pairs dropped, ties at their mean rank) and its permutation
    test: the ranks of y paired with x in every order (exact up to EXACT_UP_TO points, else sampled with `seed`).
    NaN p-values under 3 points or where one side is constant."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    rx, ry = rankdata(x[keep]), rankdata(y[keep])
    n = len(rx)
    if n < 3 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return RankTest(float("nan"), n, float("nan"), float("nan"), True)
    exact = n <= EXACT_UP_TO
    order = (np.array(list(itertools.permutations(range(n)))) if exact
             else np.argsort(np.random.default_rng(seed).random((PERMUTATIONS, n)), axis=1))
    cx, cy = rx - rx.mean(), ry - ry.mean()
    scale = np.sqrt((cx * cx).sum() * (cy * cy).sum())
    rho = float((cx * cy).sum() / scale)
    null = (cy[order] * cx).sum(1) / scale
    tol = 1e-9  # equal ρ values computed in another order
    lo, hi = int((null <= rho + tol).sum()), int((null >= rho - tol).sum())
    if exact:
        return RankTest(rho, n, lo / len(null), hi / len(null), True)
    return RankTest(rho, n, (lo + 1) / (len(null) + 1), (hi + 1) / (len(null) + 1), False)


def gap_test(d1: float, lo1: float, hi1: float, d2: float, lo2: float, hi2: float,
             df1: float = float("inf"), df2: float = float("inf")) -> tuple[float, float]:
    """(d1 - d2, two-sided p) for two comparisons' differences, each given with its 95% interval and the degrees of
    freedom that interval was drawn with (a comparison's `t_df`: the seeds test's t; inf or NaN for the paired
    bootstrap's, read as normal). Each standard error is the half-width over its t quantile; the gap is read
    against Welch-Satterthwaite's t of the two. The two are taken as independent: two comparisons on the same test
    sentences are positively correlated, which makes this conservative. For "is this effect larger there than
    here": pretraining's gain at two Df values, or in two recipes."""
    from scipy import stats

    q = [float(stats.t.ppf(0.5 + (1 - ALPHA) / 2, d)) if np.isfinite(d) and d > 0 else
         float(stats.norm.ppf(0.5 + (1 - ALPHA) / 2)) for d in (df1, df2)]
    se1, se2 = (hi1 - lo1) / 2 / q[0], (hi2 - lo2) / 2 / q[1]
    gap, se = d1 - d2, float(np.hypot(se1, se2))
    if se <= 0:  # both differences known exactly (identical outputs on both sides of each)
        return gap, (1.0 if gap == 0 else 0.0)
    dof = [d if np.isfinite(d) and d > 0 else np.inf for d in (df1, df2)]
    denom = se1 ** 4 / dof[0] + se2 ** 4 / dof[1]
    t_df = se ** 4 / denom if denom > 0 else np.inf
    return gap, float(2 * stats.t.sf(abs(gap) / se, t_df))


def _seed() -> int | None:
    s = os.environ.get("SACREBLEU_SEED", "12345")
    return None if s.lower() == "none" else int(s)


def paired_bleu(hyps_a: Sequence[str], hyps_b: Sequence[str], refs: Sequence[str], tokenize: str = "13a",
                resamples: int = RESAMPLES) -> Comparison:
    """Paired bootstrap of corpus BLEU: system b against baseline a, both on `refs` (one reference each)."""
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    if not (len(hyps_a) == len(hyps_b) == len(refs)) or not refs:
        raise ValueError(f"paired test needs the same non-empty test set: {len(hyps_a)}, {len(hyps_b)} "
                         f"hypotheses for {len(refs)} references")
    metric = BLEU(tokenize=tokenize)
    test = PairedTest([("a", list(hyps_a)), ("b", list(hyps_b))], {"BLEU": metric}, [list(refs)],
                      test_type="bs", n_samples=resamples)
    _, scores = test()
    a, b = scores["BLEU"][0], scores["BLEU"][1]
    # The difference's interval on the same resamples sacreBLEU drew (same seed, same index matrix).
    idx = np.random.default_rng(_seed()).choice(len(refs), size=(resamples, len(refs)), replace=True)
    stats_a = np.array(metric._extract_corpus_statistics(list(hyps_a), [list(refs)]), dtype="float32")
    stats_b = np.array(metric._extract_corpus_statistics(list(hyps_b), [list(refs)]), dtype="float32")
    diff = np.array([metric._compute_score_from_stats(sb.sum(0)).score
                     - metric._compute_score_from_stats(sa.sum(0)).score
                     for sa, sb in zip(stats_a[idx], stats_b[idx])])
    lo, hi = np.percentile(diff, [2.5, 97.5])
    # sacreBLEU counts resampled differences strictly above the observed one: with no observed difference (two
    # different outputs with the same BLEU, typically both 0) every count is 0 and it would report its smallest p.
    p = 1.0 if b.score == a.score else float(b.p_value)
    return Comparison(bleu_a=a.score, bleu_b=b.score, delta=b.score - a.score, delta_lo=float(lo),
                      delta_hi=float(hi), p_value=p, n=len(refs), resamples=resamples)


def seeds_and_sentences(stats_a: Sequence[np.ndarray], stats_b: Sequence[np.ndarray],
                        score: Callable[[np.ndarray], np.ndarray], resamples: int = RESAMPLES,
                        seed: int | None = None) -> Comparison:
    """System b against a, each finetuned with several seeds on the same test sentences (see the module's doc).
    `stats_x[k]` is seed k's (sentences, statistics) array of per-sentence sufficient statistics; `score` maps
    summed statistics (..., statistics) to the corpus score (...,). Needs >= 2 seeds a side."""
    na, nb = len(stats_a), len(stats_b)
    if na < 2 or nb < 2:
        raise ValueError(f"seeds and sentences need >= 2 seeds a side, got {na} and {nb}")
    n = stats_a[0].shape[0]
    if n == 0 or any(s.shape != stats_a[0].shape for s in [*stats_a, *stats_b]):
        raise ValueError("every seed of both systems must be scored on the same non-empty test set")
    full_a = np.array([score(s.sum(0)) for s in stats_a], dtype=float)
    full_b = np.array([score(s.sum(0)) for s in stats_b], dtype=float)
    delta = float(full_b.mean() - full_a.mean())
    # resample counts: row r says how often each sentence is drawn (one sample shared by every seed of both sides)
    idx = np.random.default_rng(seed).choice(n, size=(resamples, n), replace=True)
    w = np.zeros((resamples, n))
    np.add.at(w, (np.repeat(np.arange(resamples), n), idx.ravel()), 1.0)
    boot_a = np.stack([score(w @ s) for s in stats_a], axis=1)  # (resamples, seeds)
    boot_b = np.stack([score(w @ s) for s in stats_b], axis=1)
    var_boot = float(np.var(boot_b.mean(1) - boot_a.mean(1), ddof=1))

    def parts(boot: np.ndarray, full: np.ndarray) -> tuple[float, float, float]:
        """(I, M, s^2/n) of one side."""
        k = boot.shape[1]
        resid = boot - boot.mean(1, keepdims=True)  # each seed's deviation from the seeds' mean, per resample
        tau2 = float(np.var(resid, axis=0, ddof=1).mean()) * k / (k - 1)  # a seed's own sentence-level noise
        s2 = float(np.var(full, ddof=1))
        return tau2 / k, max(0.0, s2 - tau2) / k, s2 / k

    (i_a, m_a, s_a), (i_b, m_b, s_b) = parts(boot_a, full_a), parts(boot_b, full_b)
    var = max(var_boot, i_a + i_b) + m_a + m_b
    # Satterthwaite: what V's estimate is uncertain by is each side's s^2 (n - 1 degrees of freedom), whose
    # expectation holds the seed effect and tau^2 alike; B and I come from thousands of resamples.
    denom = s_a ** 2 / (na - 1) + s_b ** 2 / (nb - 1)
    t_df = var ** 2 / denom if denom > 0 else float("inf")
    from scipy import stats

    if var <= 0:  # nothing varies: identical outputs everywhere
        p, half = (1.0 if delta == 0 else 0.0), 0.0
    else:
        sd = float(np.sqrt(var))
        p = float(2 * stats.t.sf(abs(delta) / sd, t_df))
        half = float(stats.t.ppf(0.5 + (1 - ALPHA) / 2, t_df)) * sd
    return Comparison(bleu_a=float(full_a.mean()), bleu_b=float(full_b.mean()), delta=delta, delta_lo=delta - half,
                      delta_hi=delta + half, p_value=p, n=n, resamples=resamples, noise=NOISE_SEEDS, t_df=t_df)


def seeds_bleu(hyps_a: Sequence[Sequence[str]], hyps_b: Sequence[Sequence[str]], refs: Sequence[str],
               tokenize: str = "13a", resamples: int = RESAMPLES) -> Comparison:
    """`seeds_and_sentences` on corpus BLEU: hyps_x[k] is seed k's output for `refs`; sacreBLEU's own statistics
    and scoring, sacreBLEU's resampling seed."""
    from sacrebleu.metrics import BLEU

    if any(len(h) != len(refs) for h in [*hyps_a, *hyps_b]) or not refs:
        raise ValueError(f"paired test needs the same non-empty test set: {[len(h) for h in [*hyps_a, *hyps_b]]} "
                         f"hypotheses for {len(refs)} references")
    metric = BLEU(tokenize=tokenize)

    def stats(hyps: Sequence[str]) -> np.ndarray:
        return np.array(metric._extract_corpus_statistics(list(hyps), [list(refs)]), dtype=float)

    def score(s: np.ndarray) -> np.ndarray:
        flat = s.reshape(-1, s.shape[-1])
        return np.array([metric._compute_score_from_stats(row).score for row in flat]).reshape(s.shape[:-1])

    return seeds_and_sentences([stats(h) for h in hyps_a], [stats(h) for h in hyps_b], score, resamples, _seed())


# ------------------------------------------------------------------------------ the comparisons a study reads

KEYS = ["task", "model", "method", "df"]  # a comparison is between cells that differ only in what they test
COLUMNS = ["kind", *KEYS, "mixture_a", "dp_rung_a", "mixture_b", "dp_rung_b", "seeds", "bleu_a", "bleu_b", "delta",
           "delta_lo", "delta_hi", "p_value", "significant", "n", "resamples", "id_a", "id_b",
           "noise", "t_df", "len_ratio_a", "len_ratio_b"]


def planned(results: pd.DataFrame) -> list[tuple[str, int, int]]:
    """(kind, row a, row b) for every comparison the report reads, on rows of one seed each:
    `pretraining` (each rung against Dp = 0), `rung` (each rung against the one below), `mixture` (at each rung,
    every mixture against the first). Rows are the lr-selected, evaluated cells; indices into `results`."""
    ok = results[(results["status"] == "ok") & results["selected"].astype(bool)]
    out: list[tuple[str, int, int]] = []
    for _, g in ok.groupby(KEYS + ["seed"], sort=False):
        mixtures = list(dict.fromkeys(g["mixture"]))
        base = g[g["dp_rung"] == 0]
        for mix in mixtures:
            curve = g[(g["mixture"] == mix) & (g["dp_rung"] > 0)].sort_values("dp_rung")
            b0 = base[base["mixture"] == mix]
            prev = b0.index[0] if len(b0) else None
            for i in curve.index:
                if len(b0):
                    out.append(("pretraining", b0.index[0], i))
                if prev is not None and prev != (b0.index[0] if len(b0) else None):
                    out.append(("rung", prev, i))
                prev = i
        for rung in sorted(g.loc[g["dp_rung"] > 0, "dp_rung"].unique()):
            at = g[g["dp_rung"] == rung].drop_duplicates("mixture")
            first = at[at["mixture"] == mixtures[0]]
            for i in at.index:
                if len(first) and i != first.index[0]:
                    out.append(("mixture", first.index[0], i))
    return out


def compare_cells(results: pd.DataFrame, predictions: Callable[[int], tuple[list[str], list[str]]],
                  tokenize: str, cached: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per planned comparison, over the seeds both sides have: with one, sacreBLEU's paired bootstrap over
    the test sentences (`paired_bleu`, noise "test sentences"); with two or more, the test over seeds and
    sentences together (`seeds_bleu`, noise "seeds + test sentences"). `predictions(row)` gives (hypotheses,
    references) of a results row; `cached` rows (a previous comparisons.csv) whose cells are unchanged (id_a,
    id_b: the cells' evaluation hashes) and whose test is today's (its `noise` column) are kept instead of
    recomputed."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for kind, a, b in planned(results):
        ra, rb = results.loc[a], results.loc[b]
        key = (kind, *(ra[k] for k in KEYS), ra["mixture"], int(ra["dp_rung"]), rb["mixture"], int(rb["dp_rung"]))
        groups.setdefault(key, []).append((a, b))
    old = {}
    if cached is not None and len(cached) and "noise" in cached.columns:
        old = {(r["kind"], str(r["id_a"]), str(r["id_b"])): r for r in cached.to_dict("records")}
    def len_ratio(cells: list[int]) -> float:
        """The cells' output/reference length ratio, averaged over seeds (read afresh: not part of the test)."""
        v = pd.to_numeric(results.loc[cells, "len_ratio"], errors="coerce") if "len_ratio" in results else None
        return float(v.mean()) if v is not None and v.notna().all() else float("nan")

    rows = []
    for key, pairs in groups.items():
        pairs = sorted(pairs, key=lambda ab: results.loc[ab[0], "seed"])
        ratios = {"len_ratio_a": len_ratio([a for a, _ in pairs]), "len_ratio_b": len_ratio([b for _, b in pairs])}
        id_a = "+".join(str(results.loc[a, "config_hash"]) for a, _ in pairs)
        id_b = "+".join(str(results.loc[b, "config_hash"]) for _, b in pairs)
        noise = NOISE_SEEDS if len(pairs) >= 2 else NOISE_TEST
        hit = old.get((key[0], id_a, id_b))
        if hit is not None and hit["noise"] == noise:  # the test's numbers are kept; its reading follows today's rule
            r = dict(hit)
            r["significant"] = Comparison(**{f.name: r[f.name] for f in fields(Comparison)}).significant
            rows.append(r | ratios)
            continue
        hyp_a, hyp_b, refs = [], [], None
        for a, b in pairs:
            ha, ra = predictions(a)
            hb, rb = predictions(b)
            if ra != rb or (refs is not None and ra != refs):
                raise ValueError(f"cells {results.loc[a, 'config_hash']} and {results.loc[b, 'config_hash']} were "
                                 "scored on different test sentences")
            hyp_a, hyp_b, refs = hyp_a + [ha], hyp_b + [hb], ra
        c = (seeds_bleu(hyp_a, hyp_b, refs, tokenize) if noise == NOISE_SEEDS
             else paired_bleu(hyp_a[0], hyp_b[0], refs, tokenize))
        kind, task, model, method, df, mix_a, rung_a, mix_b, rung_b = key
        rows.append({"kind": kind, "task": task, "model": model, "method": method, "df": df, "mixture_a": mix_a,
                     "dp_rung_a": rung_a, "mixture_b": mix_b, "dp_rung_b": rung_b,
                     "seeds": "+".join(str(int(results.loc[a, "seed"])) for a, _ in pairs), **c.as_dict(),
                     "id_a": id_a, "id_b": id_b, **ratios})
    return pd.DataFrame(rows, columns=COLUMNS)
