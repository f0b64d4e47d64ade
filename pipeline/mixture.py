"""The pretraining sampler: packed sequences from each language's token stream at exact proportions.

Every global batch holds `batch_size x weight` sequences of each language (whole numbers: the planner
refuses anything else), each `raw_length` tokens cut from that language's stream at a position that is a
pure function of the step. So the sampler needs no state to resume, any number of processes agree on
the batch, Dp = step x batch_size x raw_length, and no text is repeated until a stream runs out (which
raises). With `max_epochs` > 1 (repetition on request) a stream is cut into whole sequences and read again:
epoch 0 in the stream's own order (so a run that repeats is, up to its first repeat, the run that does not),
every later epoch in a fresh permutation drawn from (seed, language, epoch), still a pure function of the step.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from pipeline.config import ConfigError
from pipeline.streams import open_stream
from pipeline.study import Mixture


class DataExhausted(RuntimeError):
    pass


def mixture_counts(mix: Mixture, batch_size: int) -> dict[str, int]:
    """Sequences per language in every global batch. Exact proportions need whole counts."""
    counts = {}
    for lang, w in mix.weights:
        n = batch_size * w
        if abs(n - round(n)) > 1e-9:
            raise ConfigError("pretrain.batch_size",
                              f"{batch_size} x weight {w:g} of {lang} in mixture {mix.name!r} is not a whole number of "
                              f"sequences; choose a batch size that makes every language's share whole")
        counts[lang] = int(round(n))
    return counts


class MixtureSampler:
    def __init__(self, streams: dict[str, np.ndarray], counts: dict[str, int], raw_length: int, seed: int = 0,
                 max_epochs: float = 1.0):
        self.langs = sorted(lang for lang, n in counts.items() if n > 0)
        self.streams, self.counts, self.raw_length = streams, counts, raw_length
        self.batch_size = sum(counts[lang] for lang in self.langs)
        self.seed, self.max_epochs = seed, max_epochs
        # Whole sequences per language: the unit an epoch permutes (a ragged tail is never read)
        self.sequences = {lang: len(streams[lang]) // raw_length for lang in self.langs}
        self._perms: dict[tuple[str, int], np.ndarray] = {}

    @classmethod
    def from_dirs(cls, tokens_dirs: dict[str, str], counts: dict[str, int], raw_length: int, vocab_size: int,
                  split: str = "train", seed: int = 0, max_epochs: float = 1.0) -> MixtureSampler:
        streams = {lang: open_stream(Path(tokens_dirs[lang]) / f"{split}.bin", vocab_size)
                   for lang, n in counts.items() if n > 0}
        return cls(streams, counts, raw_length, seed, max_epochs)

    def _limit(self, lang: str) -> int:
        """Sequences of a language a run may read: `max_epochs` passes over its whole sequences."""
        return int(self.max_epochs * self.sequences[lang] + 1e-9)

    def steps_available(self) -> int:
        """Steps before some language would read its text more than `max_epochs` times."""
        return min(self._limit(lang) // self.counts[lang] for lang in self.langs)

    def _order(self, lang: str, epoch: int) -> np.ndarray | None:
        """The sequence order of an epoch: the stream's (None) in the first, then a seeded permutation."""
        if epoch == 0:
            return None
        key = (lang, epoch)
        if key not in self._perms:
            if len(self._perms) > 4:  # a run moves forward: the epochs it has left behind are not needed
                self._perms.clear()
            rng = np.random.default_rng([self.seed, zlib.crc32(lang.encode()), epoch])
            self._perms[key] = rng.permutation(self.sequences[lang])
        return self._perms[key]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(raw tokens (batch_size, raw_length) int64, global example indices (batch_size,)) of a step."""
        rows = []
        L = self.raw_length
        for lang in self.langs:
            n, stream, k = self.counts[lang], self.streams[lang], self.sequences[lang]
            first, end = step * n, (step + 1) * n  # this step's sequences of the language, counted over epochs
            if end > self._limit(lang):
                what = "repeat" if self.max_epochs <= 1 else f"read more than {self.max_epochs:g} epochs of"
                raise DataExhausted(f"step {step} needs {end * L:,} {lang} tokens but the stream has {len(stream):,}; "
                                    f"the ladder would {what} {lang} text")
            if end <= k:  # the first epoch: one contiguous slice of the stream
                rows.append(np.asarray(stream[first * L:end * L], dtype=np.int64).reshape(n, L))
                continue
            seqs = []
            for j in range(first, end):
                epoch, r = divmod(j, k)
                order = self._order(lang, epoch)
                c = r if order is None else int(order[r])
                seqs.append(np.asarray(stream[c * L:(c + 1) * L], dtype=np.int64))
            rows.append(np.stack(seqs))
        idx = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        return np.concatenate(rows), idx

    def coverage(self, steps: int) -> dict[str, dict[str, float]]:
        """What `steps` steps have read of each language: tokens seen, unique tokens among them, epochs."""
        out = {}
        for lang in self.langs:
            seen, k = steps * self.counts[lang], self.sequences[lang]
            out[lang] = {"tokens": seen * self.raw_length, "unique_tokens": min(seen, k) * self.raw_length,
                         "epochs": seen / k if k else float("inf")}
        return out

    def languages_of_batch(self) -> list[str]:
        return [lang for lang in self.langs for _ in range(self.counts[lang])]
