"""Is a BLEU difference beyond the noise of the test set? sacreBLEU's paired bootstrap resampling.

Two systems translated the same test sentences; resampling the sentences (with replacement, the same sample for
both) gives the spread of each system's corpus BLEU and of their difference. sacreBLEU's own implementation
(`sacrebleu.significance`, Koehn 2004 as in Moses' `bootstrap-hypothesis-difference-significance.pl`) gives the
p-value; the interval of the difference is read off the same resamples here, because sacreBLEU reports each
system's interval but not the difference's. The resampling seed is sacreBLEU's (`SACREBLEU_SEED`, 12345 unless
set), so a comparison is a function of the predictions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
import pandas as pd

ALPHA = 0.05  # a difference with p below this, and a 95% interval without 0, is called significant
RESAMPLES = 1000  # sacreBLEU's default for the paired bootstrap


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
        iv = f"{self.delta:+.2f} BLEU [{self.delta_lo:+.2f}, {self.delta_hi:+.2f}], p = {self.p_value:.3f}"
        if not self.significant:
            return f"{b} against {a}: {iv}, inside the noise of the test set"
        return f"{b} {'beats' if self.delta > 0 else 'trails'} {a}: {iv}"


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


# ------------------------------------------------------------------------------ the comparisons a study reads

KEYS = ["task", "model", "method", "df"]  # a comparison is between cells that differ only in what they test
COLUMNS = ["kind", *KEYS, "mixture_a", "dp_rung_a", "mixture_b", "dp_rung_b", "seeds", "bleu_a", "bleu_b", "delta",
           "delta_lo", "delta_hi", "p_value", "significant", "n", "resamples", "id_a", "id_b"]


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
    """One row per planned comparison, seeds pooled: the paired bootstrap runs over (sentence, seed) items, both
    systems' predictions of every seed both sides have concatenated. `predictions(row)` gives (hypotheses,
    references) of a results row; `cached` rows (a previous comparisons.csv) whose cells are unchanged (id_a,
    id_b: the cells' evaluation hashes) are kept instead of recomputed."""
    groups: dict[tuple, list[tuple[int, int]]] = {}
    for kind, a, b in planned(results):
        ra, rb = results.loc[a], results.loc[b]
        key = (kind, *(ra[k] for k in KEYS), ra["mixture"], int(ra["dp_rung"]), rb["mixture"], int(rb["dp_rung"]))
        groups.setdefault(key, []).append((a, b))
    old = {}
    if cached is not None and len(cached):
        old = {(r["kind"], str(r["id_a"]), str(r["id_b"])): r for r in cached.to_dict("records")}
    rows = []
    for key, pairs in groups.items():
        pairs = sorted(pairs, key=lambda ab: results.loc[ab[0], "seed"])
        id_a = "+".join(str(results.loc[a, "config_hash"]) for a, _ in pairs)
        id_b = "+".join(str(results.loc[b, "config_hash"]) for _, b in pairs)
        if (key[0], id_a, id_b) in old:  # the test's numbers are kept; its reading follows today's rule
            r = dict(old[key[0], id_a, id_b])
            r["significant"] = Comparison(**{f.name: r[f.name] for f in fields(Comparison)}).significant
            rows.append(r)
            continue
        hyp_a, hyp_b, refs = [], [], []
        for a, b in pairs:
            ha, ra = predictions(a)
            hb, rb = predictions(b)
            if ra != rb:
                raise ValueError(f"cells {results.loc[a, 'config_hash']} and {results.loc[b, 'config_hash']} were "
                                 "scored on different test sentences")
            hyp_a, hyp_b, refs = hyp_a + ha, hyp_b + hb, refs + ra
        c = paired_bleu(hyp_a, hyp_b, refs, tokenize)
        kind, task, model, method, df, mix_a, rung_a, mix_b, rung_b = key
        rows.append({"kind": kind, "task": task, "model": model, "method": method, "df": df, "mixture_a": mix_a,
                     "dp_rung_a": rung_a, "mixture_b": mix_b, "dp_rung_b": rung_b,
                     "seeds": "+".join(str(int(results.loc[a, "seed"])) for a, _ in pairs), **c.as_dict(),
                     "id_a": id_a, "id_b": id_b})
    return pd.DataFrame(rows, columns=COLUMNS)
