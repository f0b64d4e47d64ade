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
