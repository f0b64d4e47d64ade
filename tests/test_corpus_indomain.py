"""The in-domain held-out set: nothing in training is a near-duplicate of a held-out pair."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rapidfuzz import fuzz

from pipeline.corpus.indomain import indomain_split, norm

NOUNS = ["file", "folder", "printer", "window", "account", "device", "socket", "archive", "image", "table"]
VERBS = ["open", "close", "delete", "rename", "print", "copy", "move", "lock", "mount", "save"]


def _pool(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        v, o = rng.choice(VERBS), rng.choice(NOUNS)
        en = f"Could not {v} the {o} number {i} on {rng.choice(NOUNS)}s of {rng.choice(NOUNS)}"
        pairs.append((en, f"Konnte {o} {i} nicht {v} ({rng.random():.3f})"))
    # near-duplicates: case, punctuation, placeholders, one letter
    for en, de in list(pairs[:40]):
        pairs.append((en.upper() + "!", de))
        pairs.append((en.replace("number", "number X"), de + " X"))
        pairs.append((en[:-1] + "z", de.lower()))
    return pairs


def test_norm_drops_case_punctuation_digits_and_placeholders():
    assert norm("Could not open `X': 12 files!") == norm("could NOT open X files") == "could not open files"


def test_no_training_pair_is_near_a_held_out_pair():
    pairs = _pool(400)
    s = indomain_split(pairs, 30, 20, "seed")
    assert len(s["test"]) == 30 and 0 < len(s["validation"]) <= 20
    held = np.concatenate([s["test"], s["validation"]])
    assert not set(held) & set(s["train"])
    for i in held:
        for j in s["train"]:
            assert fuzz.ratio(norm(pairs[i][0]), norm(pairs[j][0])) < 85
            assert fuzz.ratio(norm(pairs[i][1]), norm(pairs[j][1])) < 85
    # the near-duplicates of a held-out pair left training with it
    assert len(s["train"]) < len(pairs) - len(held)


def test_validation_is_not_near_test_and_split_is_a_function_of_the_text():
    pairs = _pool(300, seed=1)
    s = indomain_split(pairs, 20, 20, "seed")
    for i in s["test"]:
        for j in s["validation"]:
            assert fuzz.ratio(norm(pairs[i][0]), norm(pairs[j][0])) < 85
    shuffled = list(range(len(pairs)))
    random.Random(2).shuffle(shuffled)
    t = indomain_split([pairs[k] for k in shuffled], 20, 20, "seed")
    assert {pairs[shuffled[k]] for k in t["test"]} == {pairs[k] for k in s["test"]}
    other = indomain_split(pairs, 20, 20, "another seed")
    assert set(other["test"]) != set(s["test"])


def test_a_pool_too_small_is_refused():
    with pytest.raises(ValueError, match="cannot give"):
        indomain_split(_pool(5), 8, 8, "seed")
