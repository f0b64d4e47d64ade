"""pipeline.significance against sacreBLEU on hand-made systems whose answer is known."""

from __future__ import annotations

import random

import pytest
from sacrebleu.metrics import BLEU
from sacrebleu.significance import PairedTest

from pipeline.significance import paired_bleu

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


def test_mismatched_test_sets_are_refused():
    with pytest.raises(ValueError, match="same non-empty test set"):
        paired_bleu(["a b"], ["a b", "c"], ["a b"])
