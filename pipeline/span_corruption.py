"""T5's span-corruption objective, vectorised over a batch of packed rows.

Follows T5 (t5.data.preprocessors: random_spans_helper, random_spans_noise_mask,
noise_span_to_unique_sentinel, nonnoise_span_to_unique_sentinel):

    raw     = a b c d e f g h i j          (raw_length tokens, packed: no padding)
    mask    = . . x x . . . x . .          (alternating spans, starting with non-noise)
    inputs  = a b <0> e f g <1> i j </s>   (each noise span -> one unique sentinel)
    targets = <0> c d <1> h </s>           (sentinel + span, for each span)

Every row of a batch has the same raw length, so the number of noise tokens and spans is the
same for every row and the outputs have exact, fixed lengths.

Randomness is a pure function of (seed, global example index): a counter-based hash
(SplitMix64's finaliser) gives each (seed, index, stream, position) its own 64-bit key. A
resumed run, or another data-parallel worker, rebuilds exactly the same masks, and the whole
batch is computed in a handful of numpy ops instead of one Generator per row.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# ----------------------------------------------------------------------------- lengths


def _t5_round(x: float) -> int:
    # T5 rounds with Python's round() / tf.round: half to even. np.round does the same.
    return int(np.round(x))


def compute_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw_tokens_length, targets_length) for encoder inputs of `inputs_length`, as T5 computes them.

    The largest raw length whose corrupted input (non-noise tokens + one sentinel per span + EOS)
    still fits in `inputs_length`; targets = noise tokens + one sentinel per span + EOS.
    512 inputs -> (568, 114). Like T5, at noise_density 0.5 one raw token is dropped when the
    targets would otherwise be longer than the inputs.
    """
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = _t5_round(tokens_length * noise_density)
        num_spans = _t5_round(num_noise / mean_noise_span_length)
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    inputs, targets = lengths(tokens_length)
    if noise_density == 0.5 and targets > inputs:
        tokens_length -= 1
        targets -= 1
    # Where T5's helper and its mask disagree (no whole span, or more spans than non-noise tokens)
    # the mask's clamps would change the lengths: refuse instead.
    num_noise = _t5_round(tokens_length * noise_density)
    num_spans = _t5_round(num_noise / mean_noise_span_length)
    if not (1 <= num_spans <= min(num_noise, tokens_length - num_noise) and num_noise < tokens_length):
        raise ValueError(
            f"inputs_length={inputs_length} is too short for noise_density={noise_density} and "
            f"mean_noise_span_length={mean_noise_span_length}: T5's layout needs at least one whole "
            "noise span and as many non-noise tokens as spans"
        )
    return tokens_length, targets


def noise_span_counts(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) in a row of `length` raw tokens, with T5's clamps
    (at least one noise and one non-noise token, at least one span)."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 raw tokens per row, got {length}")
    if not 0.0 < noise_density < 1.0 or mean_noise_span_length < 1.0:
        raise ValueError(
            f"need 0 < noise_density < 1 and mean_noise_span_length >= 1, "
            f"got {noise_density} and {mean_noise_span_length}"
        )
    num_noise = min(max(_t5_round(length * noise_density), 1), length - 1)
    num_spans = max(_t5_round(num_noise / mean_noise_span_length), 1)
    # T5 would build empty segments past this point; we cap instead (only reachable at extreme densities).
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def output_lengths(
    raw_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(inputs_length, targets_length) that `corrupt_batch` produces from rows of `raw_length`."""
    num_noise, num_spans = noise_span_counts(raw_length, noise_density, mean_noise_span_length)
    return raw_length - num_noise + num_spans + 1, num_noise + num_spans + 1


# ----------------------------------------------------------------------------- randomness

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_STREAM_SALT = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))  # noise, non-noise
_U64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 with good avalanche. Wraps mod 2**64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _row_keys(seed: int, example_indices: np.ndarray) -> np.ndarray:
    # mix(mix(seed) + index) is a bijection of the index for a fixed seed: distinct examples never
    # share a row key. Arrays, not numpy scalars, so that uint64 overflow wraps silently.
    s = _mix64(np.array([seed & _U64], dtype=np.uint64))
    return _mix64(s + example_indices.astype(np.uint64))


def _random_keys(row_keys: np.ndarray, stream: int, n: int) -> np.ndarray:
    """(B, n) uint64 keys: the first n outputs of a SplitMix64 stream per row and stream."""
    start = _mix64(row_keys ^ _STREAM_SALT[stream])
    counters = np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
    return _mix64(start[:, None] + counters[None, :])


def _random_segmentation(keys: np.ndarray, num_items: int, num_segments: int) -> np.ndarray:
    """(B, num_segments) lengths: a uniformly random split of num_items into non-empty segments.

    As in T5: cut num_items at num_segments - 1 of its num_items - 1 gaps, chosen uniformly without
    replacement; here the gaps holding the smallest keys. `keys` is (B, num_items - 1).
    """
    batch = keys.shape[0]
    if num_segments == 1:
        return np.full((batch, 1), num_items, dtype=np.int64)
    # Gap index in the low bits makes keys distinct, so exactly num_segments - 1 gaps are <= the
    # (num_segments - 1)-th smallest; a row-wise partition is much cheaper than an argsort.
    high = np.uint64(_U64 ^ ((1 << int(num_items).bit_length()) - 1))
    keys = (keys & high) | np.arange(num_items - 1, dtype=np.uint64)
    kth = np.partition(keys, num_segments - 2, axis=1)[:, num_segments - 2, None]
    # flatnonzero is row-major, so the cuts come out sorted within each row.
    cuts = (np.flatnonzero(keys <= kth) % (num_items - 1)).reshape(batch, num_segments - 1)
    bounds = np.empty((batch, num_segments + 1), dtype=np.int64)
    bounds[:, 0] = 0
    bounds[:, 1:-1] = cuts + 1
    bounds[:, -1] = num_items
    return np.diff(bounds, axis=1)


def span_lengths(
    length: int,
    example_indices: np.ndarray,
    seed: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(nonnoise, noise) span lengths, each (B, num_spans): T5's random_spans_noise_mask in lengths.

    Row b reads nonnoise[b, 0] kept tokens, noise[b, 0] noise tokens, nonnoise[b, 1], ... so it
    starts with non-noise and ends with noise, as T5's does.
    """
    example_indices = np.asarray(example_indices, dtype=np.int64).reshape(-1)
    if (example_indices < 0).any():
        raise ValueError("example indices must be non-negative")
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    num_nonnoise = length - num_noise
    rows = _row_keys(seed, example_indices)
    # Two independent streams, as T5 seeds the two segmentations separately.
    noise = _random_segmentation(_random_keys(rows, 0, num_noise - 1), num_noise, num_spans)
    nonnoise = _random_segmentation(_random_keys(rows, 1, num_nonnoise - 1), num_nonnoise, num_spans)
    return nonnoise, noise


def noise_mask(
    length: int,
    example_indices: np.ndarray,
    seed: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> np.ndarray:
    """(B, length) bool, True = noise: the mask `corrupt_batch` applies to these examples."""
    nonnoise, noise = span_lengths(length, example_indices, seed, noise_density, mean_noise_span_length)
    batch, num_spans = noise.shape
    interleaved = np.stack([nonnoise, noise], axis=2).reshape(-1)
    # Every row sums to `length`, so one flat repeat of [False, True, False, True, ...] is the mask.
    pattern = np.tile(np.array([False, True]), batch * num_spans)
    return np.repeat(pattern, interleaved).reshape(batch, length)


# ----------------------------------------------------------------------------- corruption


def t5_sentinel_ids(vocab_size: int, num_sentinels: int = 100) -> np.ndarray:
    """T5's layout: <extra_id_i> = vocab_size - 1 - i."""
    return vocab_size - 1 - np.arange(num_sentinels, dtype=np.int64)


def _gather_spans(
    raw: np.ndarray, starts: np.ndarray, lengths: np.ndarray, sentinels: np.ndarray, sentinel_first: bool
) -> np.ndarray:
    """Concatenate raw[b, starts[b, s]: starts[b, s] + lengths[b, s]] over spans s, each with its
    sentinel before (sentinel_first) or after it. One gather per batch instead of boolean masks."""
    batch, num_spans = lengths.shape
    out_len = int(lengths[0].sum()) + num_spans
    out_start = np.cumsum(lengths + 1, axis=1) - (lengths + 1)  # where span s's block begins
    if sentinel_first:
        slot, seg_start = out_start, out_start + 1
    else:
        slot, seg_start = out_start + lengths, out_start
    # Inside span s, raw index = output index + (starts[s] - seg_start[s]): a step function of the
    # output index, built as a cumsum of its jumps. Sentinel slots take a neighbour's (valid) index
    # and are overwritten below.
    # Flat indices throughout: numpy's take/put on raveled arrays beat take_along_axis several-fold.
    offset = starts - seg_start + np.arange(batch)[:, None] * raw.shape[1]
    row_base = np.arange(batch)[:, None] * out_len
    jumps = np.zeros((batch, out_len), dtype=np.int64)
    jumps.ravel()[(seg_start + row_base).ravel()] = np.diff(offset, axis=1, prepend=0).ravel()
    cols = np.cumsum(jumps, axis=1) + np.arange(out_len)
    out = raw.ravel().take(cols.ravel()).reshape(batch, out_len)
    out.ravel()[(slot + row_base).ravel()] = np.tile(sentinels, batch)
    return out


_CHUNK_TOKENS = 1 << 14


def corrupt_batch(
    raw: np.ndarray,
    example_indices: np.ndarray,
    seed: int,
    sentinel_ids: np.ndarray | Callable[[np.ndarray], np.ndarray],
    eos_id: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> dict[str, np.ndarray]:
    """Span-corrupt a packed batch: `raw` (B, raw_length) -> input_ids (B, I) and labels (B, T), int64.

    `example_indices` (B,) are the rows' global positions in the data order; with `seed` they alone
    decide the masks. `sentinel_ids` maps span number i to the id of <extra_id_i>: an array
    (e.g. `t5_sentinel_ids(vocab_size)`) or a callable on an int array. EOS ends both sequences.
    (I, T) = output_lengths(raw_length), equal to compute_lengths()'s for the usual densities.
    """
    raw = np.asarray(raw)
    if raw.ndim != 2 or not np.issubdtype(raw.dtype, np.integer):
        raise ValueError(f"raw must be a 2-D integer array, got shape {raw.shape} dtype {raw.dtype}")
    batch, length = raw.shape
    example_indices = np.asarray(example_indices, dtype=np.int64).reshape(-1)
    if example_indices.shape != (batch,):
        raise ValueError(f"need one example index per row: {example_indices.shape} vs {batch} rows")
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_noise_span_length)
    if callable(sentinel_ids):
        sentinels = np.asarray(sentinel_ids(np.arange(num_spans)), dtype=np.int64)
    else:
        sentinels = np.asarray(sentinel_ids, dtype=np.int64)[:num_spans]
    if sentinels.shape != (num_spans,):
        raise ValueError(f"rows of {length} tokens have {num_spans} noise spans: need that many sentinel ids")
    inputs_len, targets_len = output_lengths(length, noise_density, mean_noise_span_length)

    input_ids = np.empty((batch, inputs_len), dtype=np.int64)
    labels = np.empty((batch, targets_len), dtype=np.int64)
    input_ids[:, -1] = eos_id
    labels[:, -1] = eos_id
    # Chunks of ~16k tokens keep the temporaries in cache (faster at raw length 568 x batch 256).
    rows = max(1, _CHUNK_TOKENS // length)
    for lo in range(0, batch, rows):
        chunk = slice(lo, lo + rows)
        nonnoise, noise = span_lengths(
            length, example_indices[chunk], seed, noise_density, mean_noise_span_length
        )
        nonnoise_start = np.cumsum(nonnoise + noise, axis=1) - (nonnoise + noise)
        tokens = raw[chunk].astype(np.int64, copy=False)
        # inputs: span_0 <extra_id_0> span_1 <extra_id_1> ... (each noise span -> its sentinel)
        input_ids[chunk, :-1] = _gather_spans(tokens, nonnoise_start, nonnoise, sentinels, False)
        # targets: <extra_id_0> noise_0 <extra_id_1> noise_1 ... (T5 collapses each non-noise span;
        # as rows start with non-noise, that is the same sequence)
        labels[chunk, :-1] = _gather_spans(tokens, nonnoise_start + nonnoise, noise, sentinels, True)
    return {"input_ids": input_ids, "labels": labels}
