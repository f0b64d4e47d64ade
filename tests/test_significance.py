"""pipeline.significance against sacreBLEU on hand-made systems whose answer is known."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from pipeline.config import FitConfig
from pipeline.significance import (
    ALPHA,
    NOISE_SEEDS,
    NOISE_TEST,
    compare_cells,
    p_is,
    p_text,
    paired_bleu,
    planned,
    seeds_and_sentences,
    seeds_bleu,
)

FIT = FitConfig(holdout_largest=1, bootstrap=0, bleu_delta=0.1, ce_delta=1e-3)
WORDS = ["the", "file", "could", "not", "be", "opened", "because", "a", "disk", "error", "stopped", "every", "write", "to", "it"]


def _refs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for _ in range(n)]


def _damage(refs: list[str], frac: float, seed: int) -> list[str]:
    """A system that gets `frac` of the sentences right and drops the second half of the rest."""
    rng = random.Random(seed)
    return [r if rng.random() < frac else " ".join(r.split()[: len(r.split()) // 2]) for r in refs]


def test_a_much_better_system_is_significant_with_its_interval_around_the_difference():
    refs = _refs(300)
    weak, strong = _damage(refs, 0.2, 1), _damage(refs, 0.9, 2)
    c = paired_bleu(weak, strong, refs)
    direct = BLEU().corpus_score(strong, [refs]).score - BLEU().corpus_score(weak, [refs]).score
    assert c.delta == pytest.approx(direct)
    assert c.delta > 20 and c.significant and c.p_value <= 0.002
    assert c.delta_lo < c.delta < c.delta_hi and c.delta_lo > 0
    assert "beats" in c.sentence("weak", "strong")
    back = paired_bleu(strong, weak, refs)
    assert back.delta == pytest.approx(-c.delta) and back.significant and "trails" in back.sentence("strong", "weak")


def test_one_changed_sentence_in_300_is_inside_the_noise():
    refs = _refs(300)
    a = _damage(refs, 0.5, 3)
    b = list(a)
    b[7] = refs[7] if a[7] != refs[7] else refs[7].split()[0]
    c = paired_bleu(a, b, refs)
    assert c.delta != 0 and not c.significant and c.p_value > 0.1
    assert c.delta_lo <= 0 <= c.delta_hi
    assert "inside the noise" in c.sentence("a", "b")


def test_p_value_is_sacrebleus_own():
    refs = _refs(200, seed=5)
    a, b = _damage(refs, 0.4, 6), _damage(refs, 0.5, 7)
    _, scores = PairedTest([("a", a), ("b", b)], {"BLEU": BLEU()}, [refs], test_type="bs", n_samples=1000)()
    c = paired_bleu(a, b, refs)
    assert c.p_value == scores["BLEU"][1].p_value
    assert c.bleu_b == pytest.approx(scores["BLEU"][1].score)


def test_identical_systems_are_no_difference():
    refs = _refs(50)
    a = _damage(refs, 0.5, 8)
    c = paired_bleu(a, list(a), refs)
    assert c.delta == 0 and c.p_value == 1.0 and not c.significant


def test_two_different_systems_with_the_same_bleu_are_no_difference():
    refs = _refs(40)
    a = ["zzz"] * len(refs)  # different outputs, no n-gram right: BLEU 0 on both sides
    b = ["qqq www"] * len(refs)
    c = paired_bleu(a, b, refs)
    assert c.bleu_a == c.bleu_b == 0 and c.p_value == 1.0 and not c.significant
    assert "inside the noise" in c.sentence("a", "b")


@pytest.mark.parametrize("p, lo, hi, called", [(0.004, -0.05, 0.01, False), (0.004, 0.02, 0.09, True),
                                                 (0.2, 0.02, 0.09, False), (0.001, -0.3, -0.1, True)])
def test_beyond_the_noise_needs_the_p_value_and_the_interval_to_agree(p, lo, hi, called):
    # near BLEU 0 sacreBLEU's zero-centred p and the percentile interval can disagree; the report shows both
    from pipeline.significance import Comparison

    c = Comparison(bleu_a=0.1, bleu_b=0.1 + (lo + hi) / 2, delta=(lo + hi) / 2, delta_lo=lo, delta_hi=hi,
                   p_value=p, n=2000, resamples=1000)
    assert c.significant is called and c.as_dict()["significant"] is called
    assert ("inside the noise" in c.sentence("a", "b")) is not called


def test_mismatched_test_sets_are_refused():
    with pytest.raises(ValueError, match="same non-empty test set"):
        paired_bleu(["a b"], ["a b", "c"], ["a b"])


# ---------------------------------------------------------------- the comparisons collect makes, the report reads

def _table(seeds=(0, 1)) -> pd.DataFrame:
    """en50_de50 and en100 at two rungs plus the shared Dp = 0 baseline (listed under each mixture), two Df."""
    rows = []
    for df in (100, 1000):
        for seed in seeds:
            for mix in ("en50_de50", "en100"):
                for rung in (0, 1024, 2048):
                    h = f"{'init' if rung == 0 else mix}-{rung}-{df}-{seed}"
                    rows.append({"task": "en-de", "model": "t5_tiny", "method": "full", "df": df, "seed": seed,
                                 "mixture": mix, "dp_rung": rung, "dp": rung, "status": "ok", "selected": True,
                                 "config_hash": h, "bleu": 0.0, "ce": 1.0, "alignment": 1.0 if mix == "en50_de50" else 0.7})
    return pd.DataFrame(rows)


# quality of each system: en50_de50 improves with Dp at Df 100 (a lot), nothing changes at Df 1000
QUALITY = {("en50_de50", 1024, 100): 0.6, ("en50_de50", 2048, 100): 0.9, ("en100", 1024, 100): 0.3,
           ("en100", 2048, 100): 0.35}


def _predictions(table: pd.DataFrame, refs: list[str]):
    def f(i: int):
        r = table.loc[i]
        q = QUALITY.get((r["mixture"], int(r["dp_rung"]), int(r["df"])), 0.3)
        return _damage(refs, q, seed=int(r["seed"]) + 10 * int(r["dp_rung"] > 0)), refs
    return f


def test_planned_comparisons_cover_baseline_rungs_and_mixtures():
    t = _table(seeds=(0,))
    kinds = [(k, t.loc[a, "mixture"], int(t.loc[a, "dp_rung"]), t.loc[b, "mixture"], int(t.loc[b, "dp_rung"]),
              int(t.loc[a, "df"])) for k, a, b in planned(t)]
    df100 = [k[:5] for k in kinds if k[5] == 100]
    assert sorted(df100) == sorted([
        ("pretraining", "en50_de50", 0, "en50_de50", 1024), ("pretraining", "en50_de50", 0, "en50_de50", 2048),
        ("rung", "en50_de50", 1024, "en50_de50", 2048),
        ("pretraining", "en100", 0, "en100", 1024), ("pretraining", "en100", 0, "en100", 2048),
        ("rung", "en100", 1024, "en100", 2048),
        ("mixture", "en50_de50", 1024, "en100", 1024), ("mixture", "en50_de50", 2048, "en100", 2048)])
    # a failed or unselected cell is never compared
    t.loc[(t["mixture"] == "en100") & (t["dp_rung"] == 2048), "status"] = "failed"
    assert not any(t.loc[b, "status"] != "ok" for _, _, b in planned(t))


def test_compare_cells_covers_seeds_and_reuses_unchanged_rows():
    t, refs = _table(), _refs(120, seed=9)
    comp = compare_cells(t, _predictions(t, refs), "13a")
    assert set(comp["noise"]) == {NOISE_SEEDS}  # two seeds on both sides of every comparison
    row = comp[(comp["kind"] == "pretraining") & (comp["mixture_b"] == "en50_de50") & (comp["dp_rung_b"] == 2048)
               & (comp["df"] == 100)].iloc[0]
    assert row["seeds"] == "0+1" and row["n"] == 120
    pred = _predictions(t, refs)
    a = [i for i in t.index if t.loc[i, "mixture"] == "en50_de50" and t.loc[i, "dp_rung"] == 0 and t.loc[i, "df"] == 100]
    b = [i for i in t.index if t.loc[i, "mixture"] == "en50_de50" and t.loc[i, "dp_rung"] == 2048 and t.loc[i, "df"] == 100]
    direct = seeds_bleu([pred(a[0])[0], pred(a[1])[0]], [pred(b[0])[0], pred(b[1])[0]], refs)
    assert row["p_value"] == direct.p_value and row["delta"] == pytest.approx(direct.delta) and row["significant"]
    assert row["delta"] == pytest.approx(np.mean([BLEU().corpus_score(pred(i)[0], [refs]).score for i in b])
                                         - np.mean([BLEU().corpus_score(pred(i)[0], [refs]).score for i in a]))
    one = compare_cells(t[t["seed"] == 0], pred, "13a")  # one seed a side: the test set's noise only
    assert set(one["noise"]) == {NOISE_TEST} and one["t_df"].isna().all()
    r1 = one[(one["kind"] == "pretraining") & (one["mixture_b"] == "en50_de50") & (one["dp_rung_b"] == 2048)
             & (one["df"] == 100)].iloc[0]
    assert r1["p_value"] == paired_bleu(pred(a[0])[0], pred(b[0])[0], refs).p_value
    same = comp[(comp["df"] == 1000) & (comp["kind"] == "rung")]
    assert len(same) == 2 and not same["significant"].any()  # identical quality: inside the noise
    # unchanged cells are read back, not recomputed; a changed cell is recomputed
    calls = []
    def counting(i):
        calls.append(i)
        return pred(i)
    again = compare_cells(t, counting, "13a", cached=comp)
    assert not calls and again.equals(comp)
    stale = comp.assign(significant=~comp["significant"])  # a table written under another reading rule
    assert compare_cells(t, counting, "13a", cached=stale)["significant"].equals(comp["significant"]) and not calls
    t.loc[b[0], "config_hash"] = "changed"
    compare_cells(t, counting, "13a", cached=comp)
    assert b[0] in calls
    calls.clear()  # a table from before the seeds test (no `noise` column) is recomputed, not read back
    compare_cells(t, counting, "13a", cached=comp.drop(columns=["noise", "t_df"]))
    assert calls


def test_the_reports_sentences_quote_their_comparisons():
    from pipeline.report.fmt import fmt
    from pipeline.report.verdicts import comparison, sig_brief, sig_text, verdicts

    t, refs = _table(), _refs(120, seed=9)
    pred = _predictions(t, refs)
    t["bleu"] = [BLEU().corpus_score(pred(i)[0], [refs]).score for i in t.index]  # the table as collect writes it
    comp = compare_cells(t, pred, "13a")
    pts = t.groupby(["task", "model", "method", "mixture", "df", "dp"], as_index=False).agg(
        bleu=("bleu", "mean"), ce=("ce", "mean"), alignment=("alignment", "first"))
    fits = pd.DataFrame(columns=["task", "mixture", "model", "method", "df", "metric", "law", "x", "ok", "reason"])
    text = "\n".join(verdicts("en-de", pts, fits, [], "t5_tiny", "full", FIT, comp))
    c = comparison(comp, "pretraining", "en-de", "t5_tiny", "full", 100, mixture_b="en50_de50")
    assert int(c["dp_rung_b"]) == 2048 and sig_brief(c) in text
    assert sig_brief(c).endswith("beyond the noise of the seeds + test sentences")
    c2 = comparison(comp, "pretraining", "en-de", "t5_tiny", "full", 1000, mixture_b="en50_de50")
    assert f"at Df = 1,000 (95% CI [{c2['delta_lo']:+.2f}, {c2['delta_hi']:+.2f}], {p_is(c2['p_value'])}" in text
    m = comparison(comp, "mixture", "en-de", "t5_tiny", "full", 100, mixture_b="en100")
    assert f"en100 against en50_de50: {sig_text(m)}" in text
    assert "no significance test" in sig_text(None)
    # the gain at the smallest Df (significant) is gone at the largest (inside the noise): it washes out; the
    # same pattern with pretraining *lowering* BLEU at the smallest Df is no such thing
    assert "**en50_de50**: from no pretraining to the largest Dp, BLEU changes by +" in text and "no longer matters much" in text
    flipped = comp.copy()
    small = (flipped["kind"] == "pretraining") & (flipped["df"] == 100)
    flipped.loc[small, ["delta", "delta_lo", "delta_hi"]] = -flipped.loc[small, ["delta", "delta_hi", "delta_lo"]].to_numpy()
    worse = pts.copy()
    worse.loc[(worse["df"] == 100) & (worse["dp"] > 0), "bleu"] = -1.0  # below the baseline at every rung
    lowered = "\n".join(verdicts("en-de", worse, fits, [], "t5_tiny", "full", FIT, flipped))
    assert "no longer matters" not in lowered
    assert "pretraining lowers BLEU beyond the noise of the seeds + test sentences at Df = 100." in lowered
    # a sweep still running: en100 has no pretrained cell yet, so no mixture is compared (it read "every mixture
    # has the same BLEU" from en50_de50 alone); with en100 at the smaller rung only, they meet at that rung
    alone = "\n".join(verdicts("en-de", pts[(pts["mixture"] != "en100") | (pts["dp"] == 0)], fits, [], "t5_tiny",
                                "full", FIT, None))
    assert "every mixture" not in alone and "BLEU by mixture" not in alone
    gap = pts[(pts["mixture"] != "en100") | (pts["dp"] < 2048)]
    meet = [x for x in verdicts("en-de", gap, fits, [], "t5_tiny", "full", FIT, None) if "BLEU by mixture" in x]
    at = gap[(gap["dp"] == 1024) & (gap["df"] == 100)].set_index("mixture")["bleu"]
    assert meet and f"en100 {fmt(at['en100'], 3)}" in meet[0] and f"en50_de50 {fmt(at['en50_de50'], 3)}" in meet[0]


def test_every_reading_names_its_noise_and_flags_a_length_gap():
    """sig_text / sig_brief say which noise the test covers (an old comparisons.csv: the test sentences), print p
    so the rule reads off it, and warn where the two sides' length ratios differ by more than the threshold."""
    from pipeline.report.tables import significance_section
    from pipeline.report.verdicts import sig_brief, sig_text

    base = {"kind": "pretraining", "task": "en-de", "model": "t5_tiny", "method": "full", "df": 100,
            "mixture_a": "en50_de50", "dp_rung_a": 0,
            "mixture_b": "en50_de50", "dp_rung_b": 2048, "bleu_a": 1.0, "bleu_b": 1.6, "delta": 0.6, "delta_lo": 0.1,
            "delta_hi": 1.1, "p_value": 0.04995, "significant": True, "n": 2000, "resamples": 1000, "seeds": "0+1"}
    seeds = pd.Series(base | {"noise": NOISE_SEEDS, "t_df": 1.7, "len_ratio_a": 0.98, "len_ratio_b": 1.42})
    old = pd.Series(base)  # comparisons.csv from before: no noise, no length ratios
    assert sig_text(seeds).endswith("beyond the noise of the seeds + test sentences") and "p = 0.04995" in sig_text(seeds)
    assert "t-test over 2 seeds" in sig_text(seeds)
    assert sig_brief(old).endswith("beyond the noise of the test sentences") and "paired bootstrap" in sig_text(old)
    assert "⚠ output lengths differ (length ratio 0.98 → 1.42" in sig_text(seeds, 0.1)
    assert "⚠" not in sig_text(seeds, 0.5) and "⚠" not in sig_brief(old, 0.1)
    blocks = significance_section(pd.DataFrame([seeds.to_dict(), base | {"kind": "rung"}]), 0.1)
    para, table = blocks[1].text, blocks[2].children[0]
    assert "seeds + test sentences" in para and "test sentences only" in para and "1 comparison(s)" in para
    assert table.rows[0][2:4] == ["t5_tiny", "full"]  # with several models or methods a row names its own
    assert table.rows[0][9] == "0.04995" and table.rows[0][11] == NOISE_SEEDS and table.rows[0][12].endswith("⚠")
    assert table.rows[1][11] == NOISE_TEST and table.rows[1][12] == "—"


def test_rung_steps_count_the_changes_beyond_the_noise_along_a_curve():
    from pipeline.report.verdicts import rung_steps

    t, refs = _table(seeds=(0,)), _refs(120, seed=9)
    comp = compare_cells(t, _predictions(t, refs), "13a")
    # Df 100: en50_de50 goes 0.6 -> 0.9 of the sentences right between its rungs (beyond the noise); Df 1000: flat
    assert rung_steps(comp, "en-de", "t5_tiny", "full", 100, "en50_de50") == (1, 1, NOISE_TEST)
    assert rung_steps(comp, "en-de", "t5_tiny", "full", 1000, "en50_de50") == (0, 1, NOISE_TEST)
    assert rung_steps(None, "en-de", "t5_tiny", "full", 100, "en50_de50") is None


# ------------------------------------------------------- seeds and test sentences together: calibration and power

def _share(stats: np.ndarray) -> np.ndarray:
    """A corpus score from summed (hits, words) statistics: the share of words right, in percent."""
    return 100 * stats[..., 0] / stats[..., 1]


def _system(rng, quality, words, seeds: int, seed_sd: float) -> list[np.ndarray]:
    """Per-sentence (hits, words) of `seeds` finetuning runs: each run has its own offset (the seed effect) and
    draws its own hits sentence by sentence (what another seed redraws)."""
    out = []
    for _ in range(seeds):
        hits = rng.binomial(words, np.clip(quality + rng.normal(0, seed_sd), 0.01, 0.99))
        out.append(np.stack([hits, words], 1).astype(float))
    return out


def _null_rates(seed_sd: float, seeds: int, trials: int = 300, shift: float = 0.0) -> tuple[float, float]:
    """(rate called significant by seeds_and_sentences, by a bootstrap over the seeds' sentences pooled) over
    `trials` pairs of systems drawn from one distribution (b better by `shift` where it is not 0)."""
    rng = np.random.default_rng(1)
    ours = pooled = 0
    for trial in range(trials):
        quality, words = rng.beta(2, 3, 200), rng.integers(3, 15, 200)
        a, b = _system(rng, quality, words, seeds, seed_sd), _system(rng, quality + shift, words, seeds, seed_sd)
        ours += seeds_and_sentences(a, b, _share, resamples=200, seed=trial).significant
        pa, pb = np.concatenate(a), np.concatenate(b)
        idx = rng.integers(0, len(pa), (200, len(pa)))
        boot = _share(pb[idx].sum(1)) - _share(pa[idx].sum(1))
        lo, hi = np.percentile(boot - boot.mean() + (_share(pb.sum(0)) - _share(pa.sum(0))), [2.5, 97.5])
        pooled += not (lo <= 0 <= hi)
    return ours / trials, pooled / trials


@pytest.mark.parametrize("seed_sd", [0.0, 0.03])
def test_seeds_and_sentences_is_calibrated_where_pooling_seeds_is_not(seed_sd):
    """Systems with identical distributions: the test calls at most about ALPHA of them different, with or without
    a seed effect (conservative without: 2 seeds cannot show that there is none); the bootstrap over pooled
    sentences (the rule before) calls a third or more different once seeds differ."""
    ours, pooled = _null_rates(seed_sd, seeds=2)
    assert ours <= ALPHA + 0.03
    if seed_sd:
        assert ours >= 0.01 and pooled > 0.3


def test_seeds_and_sentences_finds_a_real_difference():
    ours, _ = _null_rates(0.01, seeds=3, trials=60, shift=0.08)
    assert ours > 0.8


def test_seeds_and_sentences_reads_like_the_bootstrap_on_real_bleu():
    refs = _refs(200, seed=4)
    weak = [_damage(refs, 0.2, s) for s in (1, 2)]
    strong = [_damage(refs, 0.8, s) for s in (3, 4)]
    c = seeds_bleu(weak, strong, refs)
    want = np.mean([BLEU().corpus_score(h, [refs]).score for h in strong]) - np.mean(
        [BLEU().corpus_score(h, [refs]).score for h in weak])
    assert c.delta == pytest.approx(want) and c.significant and c.noise == NOISE_SEEDS and c.n == 200
    assert c.delta_lo < c.delta < c.delta_hi and c.delta_lo > 0 and c.t_df >= 1
    assert "beyond the noise of the seeds + test sentences" in c.sentence("weak", "strong")
    same = seeds_bleu(weak, [list(h) for h in weak], refs)
    assert same.delta == 0 and same.p_value == 1.0 and not same.significant
    with pytest.raises(ValueError, match=">= 2 seeds"):
        seeds_bleu(weak[:1], strong, refs)


@pytest.mark.parametrize("p, text", [(0.04995, "0.04995"), (0.0496, "0.0496"), (0.05, "0.050"), (0.0501, "0.050"),
                                     (0.0504, "0.050"),
                                     (0.051, "0.051"), (0.002, "0.002"), (0.0004, "< 0.001"), (1.0, "1.000")])
def test_p_values_print_so_the_rule_can_be_read_off_them(p, text):
    assert p_text(p) == text and p_is(p) == ("p " if p < 1e-3 else "p = ") + text
    shown = float(text.lstrip("< "))
    assert (shown < ALPHA) == (p < ALPHA)


def test_a_rank_correlation_over_a_handful_of_rungs_carries_its_exact_permutation_p():
    from pipeline.significance import rank_test

    x = np.arange(5.0)
    # over 5 rungs: ρ = -1 has p = 1/120; ρ = -0.9 (one swap) p = 5/120 < 0.05; ρ = -0.8 p = 8/120 and ρ = -0.7
    # p = 14/120, both above 0.05 however close to a hard -0.8 threshold they sit
    for y, rho, p in (([5, 4, 3, 2, 1], -1.0, 1 / 120), ([5, 4, 3, 1, 2], -0.9, 5 / 120),
                      ([5, 3, 4, 1, 2], -0.8, 8 / 120), ([5, 4, 2, 1, 3], -0.7, 14 / 120)):
        t = rank_test(x, np.array(y, float))
        assert t.rho == pytest.approx(rho) and t.p_neg == pytest.approx(p) and t.exact and t.n == 5
        assert t.p_pos == pytest.approx(rank_test(x, -np.array(y, float)).p_neg)
    # against brute force over every pairing, with ties, and a non-finite point dropped
    from itertools import permutations

    from scipy.stats import spearmanr

    y = np.array([2.0, 1.0, 1.0, 3.0, 0.5, 2.5])
    t = rank_test(np.r_[x, 5.0, 6.0], np.r_[y, np.nan])
    null = np.array([spearmanr(np.r_[x, 5.0], y[list(o)]).statistic for o in permutations(range(6))])
    assert t.n == 6 and t.rho == pytest.approx(spearmanr(np.r_[x, 5.0], y).statistic)
    assert t.p_neg == pytest.approx((null <= t.rho + 1e-9).mean()) and t.p_pos == pytest.approx((null >= t.rho - 1e-9).mean())
    big = rank_test(np.arange(12.0), np.arange(12.0)[::-1])  # beyond exact enumeration: sampled, (k + 1)/(N + 1)
    assert not big.exact and big.rho == -1 and big.p_neg == pytest.approx(1 / 20_001)
    assert np.isnan(rank_test([1, 2], [2, 1]).p_neg) and np.isnan(rank_test(x, np.ones(5)).rho)


def test_the_gap_of_two_differences_is_a_z_test_from_their_intervals_and_holds_its_level():
    from scipy import stats

    from pipeline.significance import gap_test

    gap, p = gap_test(1.0, 0.0, 2.0, -1.0, -2.0, 0.0)  # two standard errors of 1/1.96 each
    assert gap == 2.0 and p == pytest.approx(2 * stats.norm.sf(2.0 / np.hypot(1 / 1.96, 1 / 1.96)), rel=1e-3)
    # a seeds test's interval is t-based: with 2 degrees of freedom its half-width is 4.30 standard errors, not 1.96
    q = stats.t.ppf(0.975, 2)
    _, p2 = gap_test(1.0, 1.0 - q, 1.0 + q, -1.0, -1.0 - q, -1.0 + q, 2.0, 2.0)  # standard errors of 1 each
    assert p2 == pytest.approx(2 * stats.t.sf(2.0 / np.sqrt(2), 4.0))  # Welch-Satterthwaite: 2 + 2 dof
    assert p2 < gap_test(1.0, 1.0 - q, 1.0 + q, -1.0, -1.0 - q, -1.0 + q)[1]  # read as normal it loses its power
    assert gap_test(0.5, 0.5, 0.5, 0.5, 0.5, 0.5) == (0.0, 1.0)
    # two independent estimates of the same effect, each with its exact 95% interval: ~5% called different
    rng = np.random.default_rng(0)
    d = rng.normal(0.3, 0.2, size=(4000, 2))
    ps = np.array([gap_test(a, a - 0.392, a + 0.392, b, b - 0.392, b + 0.392)[1] for a, b in d])
    assert 0.035 < (ps < 0.05).mean() < 0.065
    # a real gap of three standard errors is found most of the time
    d[:, 0] += 3 * np.hypot(0.2, 0.2)
    ps = np.array([gap_test(a, a - 0.392, a + 0.392, b, b - 0.392, b + 0.392)[1] for a, b in d])
    assert (ps < 0.05).mean() > 0.8
