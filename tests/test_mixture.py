"""The pretraining sampler: exact per-batch proportions, a position that is a function of the step (so a
resumed or distributed run reads the same batches), and no repetition of any language's text."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import ConfigError
from pipeline.mixture import DataExhausted, MixtureSampler, mixture_counts
from pipeline.study import Mixture


def streams(sizes: dict[str, int]) -> dict[str, np.ndarray]:
    # Each language's tokens are tagged by an offset so a test can tell where every token came from.
    return {lang: np.arange(n, dtype=np.int64) + 1_000_000 * (i + 1) for i, (lang, n) in enumerate(sorted(sizes.items()))}


@settings(max_examples=50, deadline=None)
@given(batch=st.sampled_from([2, 4, 8, 10, 16, 20, 32]), share=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 1.0]),
       raw=st.integers(3, 40), steps=st.integers(1, 6))
def test_every_batch_has_exact_proportions_and_no_text_repeats(batch, share, raw, steps):
    mix = Mixture("m", tuple(sorted({"en": 1 - share, "de": share}.items())))
    try:
        counts = mixture_counts(mix, batch)
    except ConfigError:
        assume_whole = abs(batch * share - round(batch * share)) > 1e-9
        assert assume_whole  # refused only when a share is not a whole number of sequences
        return
    s = MixtureSampler(streams({"en": 10_000, "de": 10_000}), counts, raw)
    seen = []
    for step in range(steps):
        rows, idx = s.batch(step)
        assert rows.shape == (batch, raw)
        langs = rows[:, 0] // 1_000_000
        assert (langs == 1).sum() == round(batch * share)  # de is the first language in sorted order
        assert (langs == 2).sum() == batch - round(batch * share)
        assert list(idx) == list(range(step * batch, (step + 1) * batch))
        seen.append(rows.ravel())
    flat = np.concatenate(seen)
    assert len(np.unique(flat)) == len(flat)  # no token position read twice
    for lang_tag in (1, 2):  # and each language is consumed contiguously from its start
        mine = np.sort(flat[flat // 1_000_000 == lang_tag]) % 1_000_000
        assert list(mine) == list(range(len(mine)))


def test_batches_are_a_function_of_the_step_only():
    counts = {"de": 2, "en": 2}
    a = MixtureSampler(streams({"en": 500, "de": 500}), counts, 7)
    b = MixtureSampler(streams({"en": 500, "de": 500}), counts, 7)
    for step in (0, 1, 5, 3):  # any order: resuming at step 5 needs no state from steps 0-4
        assert np.array_equal(a.batch(step)[0], b.batch(step)[0])


def test_running_out_of_text_raises_instead_of_repeating():
    s = MixtureSampler(streams({"en": 100, "de": 30}), {"de": 1, "en": 1}, 10)
    assert s.steps_available() == 3
    s.batch(2)
    with pytest.raises(DataExhausted, match="repeat de text"):
        s.batch(3)


def test_fractional_shares_are_refused_with_the_key():
    with pytest.raises(ConfigError) as e:
        mixture_counts(Mixture("m", (("de", 0.3), ("en", 0.7))), 32)
    assert e.value.key == "pretrain.batch_size"


def test_repetition_on_request_keeps_the_first_epoch_and_reshuffles_each_later_one():
    counts, raw = {"de": 2, "en": 2}, 5
    once = MixtureSampler(streams({"en": 100, "de": 60}), counts, raw)  # de: 12 whole sequences, 6 steps
    rep = MixtureSampler(streams({"en": 100, "de": 60}), counts, raw, seed=3, max_epochs=1.5)
    assert (once.steps_available(), rep.steps_available()) == (6, 9)  # de's 12 sequences x 1.5 / 2 a step
    for step in range(6):  # until the first repeat, the run that repeats is the run that does not
        assert np.array_equal(once.batch(step)[0], rep.batch(step)[0])
    de = np.concatenate([rep.batch(s)[0][:2] for s in range(9)])  # de rows first (sorted languages)
    starts = de[:, 0] % 1_000_000 // raw
    epochs = [starts[:12], starts[12:]]  # 18 de sequences read: one whole epoch, then 6 of the second
    assert sorted(epochs[0]) == list(range(12)) and len(set(epochs[1])) == 6  # no sequence twice in an epoch
    assert list(epochs[1]) != list(range(6))  # the second epoch is a fresh order, not the stream's
    for row in de:  # whole sequences, never a window across two
        assert row[0] % 1_000_000 % raw == 0 and np.array_equal(row, row[0] + np.arange(raw))
    # a function of (seed, step): another sampler agrees at any step, another seed reorders the later epochs
    again = MixtureSampler(streams({"en": 100, "de": 60}), counts, raw, seed=3, max_epochs=1.5)
    other = MixtureSampler(streams({"en": 100, "de": 60}), counts, raw, seed=4, max_epochs=1.5)
    assert np.array_equal(again.batch(8)[0], rep.batch(8)[0])
    assert not all(np.array_equal(other.batch(s)[0], rep.batch(s)[0]) for s in range(6, 9))
    with pytest.raises(DataExhausted, match="more than 1.5 epochs of de"):
        rep.batch(9)
    cov = rep.coverage(9)
    assert cov["de"] == {"tokens": 90, "unique_tokens": 60, "epochs": 1.5}
    assert cov["en"] == {"tokens": 90, "unique_tokens": 90, "epochs": 0.9}
