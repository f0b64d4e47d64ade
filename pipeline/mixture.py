"""The pretraining sampler: packed sequences from each language's token stream at exact proportions.

Every global batch holds `batch_size x weight` sequences of each language (whole numbers: the planner
refuses anything else), each `raw_length` tokens cut from that language's stream at a position that is a
pure function of the step. So the sampler needs no state to resume, any number of processes agree on
the batch, Dp = step x batch_size x raw_length, and no text is repeated until a stream runs out (which
raises, never wraps around).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import ConfigError
from pipeline.study import Mixture
from pipeline.tokens import open_stream


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
    def __init__(self, streams: dict[str, np.ndarray], counts: dict[str, int], raw_length: int):
        self.langs = sorted(lang for lang, n in counts.items() if n > 0)
        self.streams, self.counts, self.raw_length = streams, counts, raw_length
        self.batch_size = sum(counts[lang] for lang in self.langs)

    @classmethod
    def from_dirs(cls, tokens_dirs: dict[str, str], counts: dict[str, int], raw_length: int, vocab_size: int,
                  split: str = "train") -> MixtureSampler:
        streams = {lang: open_stream(Path(tokens_dirs[lang]) / f"{split}.bin", vocab_size)
                   for lang, n in counts.items() if n > 0}
        return cls(streams, counts, raw_length)

    def steps_available(self) -> int:
        """Steps before some language would have to repeat its text."""
        return min(len(self.streams[lang]) // (self.counts[lang] * self.raw_length) for lang in self.langs)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(raw tokens (batch_size, raw_length) int64, global example indices (batch_size,)) of a step."""
        rows = []
        for lang in self.langs:
            n, stream = self.counts[lang], self.streams[lang]
            start, end = step * n * self.raw_length, (step + 1) * n * self.raw_length
            if end > len(stream):
                raise DataExhausted(f"step {step} needs {end:,} {lang} tokens but the stream has {len(stream):,}; "
                                    f"the ladder would repeat {lang} text")
            rows.append(np.asarray(stream[start:end], dtype=np.int64).reshape(n, self.raw_length))
        idx = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        return np.concatenate(rows), idx

    def languages_of_batch(self) -> list[str]:
        return [lang for lang in self.langs for _ in range(self.counts[lang])]
