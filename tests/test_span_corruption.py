import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.span_corruption import (
    compute_lengths,
    corrupt_batch,
    noise_mask,
    noise_span_counts,
    output_lengths,
    span_lengths,
    t5_sentinel_ids,
)

VOCAB = 32128
SENTINELS = t5_sentinel_ids(VOCAB)
EOS = 1
FEW = settings(max_examples=60, deadline=None)


def reconstruct(input_ids: np.ndarray, labels: np.ndarray, sentinels: set[int], eos: int) -> list[int]:
    """Undo span corruption for one row: replace each sentinel in the input by its span from the targets."""
    assert input_ids[-1] == eos and labels[-1] == eos
    spans, current = {}, None
    for tok in labels[:-1].tolist():
        if tok in sentinels:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    out = []
    for tok in input_ids[:-1].tolist():
        out.extend(spans.pop(tok) if tok in sentinels else [tok])
    assert not spans, "every target span must be used once"
    return out


def reference_corrupt(raw: np.ndarray, mask: np.ndarray, sentinels: np.ndarray, eos: int):
    """Token-by-token transcription of T5's noise_span_to_unique_sentinel / nonnoise_span_to_unique_sentinel."""
    inputs, targets = [], []
    for row, m in zip(raw.tolist(), mask.tolist()):
        inp, tgt, span, prev = [], [], 0, False
        for tok, is_noise in zip(row, m):
            if is_noise and not prev:
                inp.append(int(sentinels[span]))
                tgt.append(int(sentinels[span]))
                span += 1
            (tgt if is_noise else inp).append(tok)
            prev = is_noise
        inputs.append(inp + [eos])
        targets.append(tgt + [eos])
    return np.array(inputs), np.array(targets)


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    "inputs_length, density, mean_span, expected",
    [
        (512, 0.15, 3.0, (568, 114)),  # T5's pretraining setting
        (128, 0.15, 3.0, (141, 29)),
        (1024, 0.15, 3.0, (1137, 229)),
        (512, 0.5, 3.0, (766, 512)),  # T5's hack at density 0.5: one raw token dropped so targets <= inputs
    ],
)
def test_compute_lengths_known_values(inputs_length, density, mean_span, expected):
    assert compute_lengths(inputs_length, density, mean_span) == expected


@FEW
@given(
    inputs_length=st.integers(12, 4096),
    density=st.floats(0.05, 0.45),
    mean_span=st.floats(1.0, 8.0),
)
def test_compute_lengths_match_what_corruption_produces(inputs_length, density, mean_span):
    try:
        raw_length, targets_length = compute_lengths(inputs_length, density, mean_span)
    except ValueError:
        return  # too short for one whole span at this density: refused, not silently wrong
    assert output_lengths(raw_length, density, mean_span) == (inputs_length, targets_length)
    # raw_length is the largest that fits
    assert output_lengths(raw_length + 1, density, mean_span)[0] > inputs_length


def test_compute_lengths_rejects_degenerate():
    with pytest.raises(ValueError, match="too short"):
        compute_lengths(4)
    with pytest.raises(ValueError, match="noise_density"):
        compute_lengths(512, noise_density=0.0)


# ----------------------------------------------------------------------------- corruption properties


@st.composite
def batches(draw):
    inputs_length = draw(st.integers(12, 600))
    raw_length, _ = compute_lengths(inputs_length)
    batch = draw(st.integers(1, 4))
    seed = draw(st.integers(-(2**40), 2**40))
    indices = np.array(draw(st.lists(st.integers(0, 2**40), min_size=batch, max_size=batch)))
    token_seed = draw(st.integers(0, 2**32 - 1))
    # real ids live below the sentinel block; EOS may occur inside packed text (document separators)
    raw = np.random.default_rng(token_seed).integers(0, VOCAB - 100, (batch, raw_length))
    return inputs_length, raw, indices, seed


@FEW
@given(batches())
def test_inputs_and_targets_reconstruct_the_original(case):
    _, raw, indices, seed = case
    out = corrupt_batch(raw, indices, seed, SENTINELS, EOS)
    for b in range(len(raw)):
        assert (
            reconstruct(out["input_ids"][b], out["labels"][b], set(SENTINELS.tolist()), EOS)
            == raw[b].tolist()
        )


@FEW
@given(batches())
def test_lengths_are_exact_and_as_computed(case):
    inputs_length, raw, indices, seed = case
    out = corrupt_batch(raw, indices, seed, SENTINELS, EOS)
    _, targets_length = compute_lengths(inputs_length)
    assert out["input_ids"].shape == (len(raw), inputs_length)
    assert out["labels"].shape == (len(raw), targets_length)
    assert out["input_ids"].dtype == np.int64 and out["labels"].dtype == np.int64


@FEW
@given(batches())
def test_sentinels_are_distinct_ordered_and_never_real_tokens(case):
    _, raw, indices, seed = case
    out = corrupt_batch(raw, indices, seed, SENTINELS, EOS)
    num_noise, num_spans = noise_span_counts(raw.shape[1])
    for inp, tgt in zip(out["input_ids"], out["labels"]):
        in_sent = inp[inp >= VOCAB - 100]
        tgt_sent = tgt[tgt >= VOCAB - 100]
        # one sentinel per span, <extra_id_0>, <extra_id_1>, ... in order, on both sides
        np.testing.assert_array_equal(in_sent, SENTINELS[:num_spans])
        np.testing.assert_array_equal(tgt_sent, SENTINELS[:num_spans])
        assert tgt[0] == SENTINELS[0]  # targets open with <extra_id_0>
        assert len(set(in_sent.tolist())) == num_spans
        assert len(tgt) - 1 - num_spans == num_noise


@FEW
@given(batches())
def test_noise_fraction_and_span_structure(case):
    _, raw, indices, seed = case
    length = raw.shape[1]
    mask = noise_mask(length, indices, seed)
    num_noise, num_spans = noise_span_counts(length)
    assert (mask.sum(axis=1) == num_noise).all()
    # round(length * 0.15) noise tokens: within half a token of the density
    assert np.all(np.abs(mask.sum(axis=1) - 0.15 * length) <= 0.5 + 1e-9)
    assert not mask[:, 0].any(), "T5's mask starts with non-noise"
    assert mask[:, -1].all(), "...and, alternating with as many noise spans, ends with noise"
    starts = mask[:, 1:] & ~mask[:, :-1]
    assert (starts.sum(axis=1) == num_spans).all()


@FEW
@given(batches())
def test_matches_a_token_by_token_transcription_of_t5(case):
    _, raw, indices, seed = case
    out = corrupt_batch(raw, indices, seed, SENTINELS, EOS)
    ref_inputs, ref_targets = reference_corrupt(raw, noise_mask(raw.shape[1], indices, seed), SENTINELS, EOS)
    np.testing.assert_array_equal(out["input_ids"], ref_inputs)
    np.testing.assert_array_equal(out["labels"], ref_targets)


# ----------------------------------------------------------------------------- randomness


def test_mask_depends_only_on_seed_and_example_index():
    raw_length, _ = compute_lengths(512)
    rng = np.random.default_rng(0)
    raw = rng.integers(2, 1000, (8, raw_length))
    indices = np.arange(1000, 1008)
    whole = corrupt_batch(raw, indices, 7, SENTINELS, EOS)
    # the same example in another batch, at another row (a resumed run, another data-parallel rank)
    for b in range(8):
        single = corrupt_batch(raw[b : b + 1], indices[b : b + 1], 7, SENTINELS, EOS)
        np.testing.assert_array_equal(single["input_ids"][0], whole["input_ids"][b])
        np.testing.assert_array_equal(single["labels"][0], whole["labels"][b])
    swapped = corrupt_batch(raw[::-1], indices[::-1], 7, SENTINELS, EOS)
    np.testing.assert_array_equal(swapped["input_ids"][::-1], whole["input_ids"])


def test_different_indices_and_seeds_give_different_masks():
    raw_length, _ = compute_lengths(512)
    masks = noise_mask(raw_length, np.arange(2000), seed=0)
    assert len({row.tobytes() for row in masks}) == 2000
    other_seed = noise_mask(raw_length, np.arange(2000), seed=1)
    assert (masks != other_seed).any(axis=1).all()


def test_masks_are_pinned():
    # A change of the generator silently changes every run's data; this pins it.
    mask = noise_mask(40, np.array([0, 123456789]), seed=0)
    counts = noise_span_counts(40)
    assert counts == (6, 2)
    nonnoise, noise = span_lengths(40, np.array([0, 123456789]), seed=0)
    assert nonnoise.sum(axis=1).tolist() == [34, 34] and noise.sum(axis=1).tolist() == [6, 6]
    expected = np.repeat(np.tile([False, True], 2), np.stack([nonnoise[0], noise[0]], 1).ravel())
    np.testing.assert_array_equal(mask[0], expected)
    assert nonnoise.tolist() == [[4, 30], [23, 11]] and noise.tolist() == [[4, 2], [2, 4]]


def test_segmentation_is_uniform():
    # Two spans: the single cut of each segmentation must fall on each of the num_items - 1 gaps
    # equally often, as with T5's shuffle.
    length, draws = 20, 40000
    num_noise, num_spans = noise_span_counts(length, noise_density=0.3, mean_noise_span_length=3.0)
    assert (num_noise, num_spans) == (6, 2)
    nonnoise, noise = span_lengths(length, np.arange(draws), 3, noise_density=0.3, mean_noise_span_length=3.0)
    for lengths, items in ((nonnoise, length - num_noise), (noise, num_noise)):
        freq = np.bincount(lengths[:, 0], minlength=items)[1:items] / draws
        expected = 1.0 / (items - 1)
        # 5 standard errors
        assert np.all(np.abs(freq - expected) < 5 * np.sqrt(expected * (1 - expected) / draws)), freq


# ----------------------------------------------------------------------------- interface


def test_sentinels_from_a_callable_and_a_custom_layout():
    raw_length, _ = compute_lengths(128)
    raw = np.random.default_rng(1).integers(200, 8000, (3, raw_length))
    custom = np.arange(100, 200)  # a tokenizer that put <extra_id_i> at 100 + i
    a = corrupt_batch(raw, np.arange(3), 0, custom, EOS)
    b = corrupt_batch(raw, np.arange(3), 0, lambda i: 100 + i, EOS)
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert a["labels"][0, 0] == 100


def test_bad_arguments_are_refused():
    raw = np.zeros((2, 141), dtype=np.int64)
    with pytest.raises(ValueError, match="2-D integer"):
        corrupt_batch(raw[0], np.arange(1), 0, SENTINELS, EOS)
    with pytest.raises(ValueError, match="one example index per row"):
        corrupt_batch(raw, np.arange(3), 0, SENTINELS, EOS)
    with pytest.raises(ValueError, match="sentinel"):
        corrupt_batch(raw, np.arange(2), 0, SENTINELS[:3], EOS)
    with pytest.raises(ValueError, match="non-negative"):
        corrupt_batch(raw, np.array([0, -1]), 0, SENTINELS, EOS)
