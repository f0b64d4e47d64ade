"""One shared SentencePiece-style vocabulary over every language of the data source (as mT5 shares one).

T5's layout: pad = 0, eos `</s>` = 1, unk = 2, the learned pieces, then the sentinels with `<extra_id_0>`
as the LAST id (so sentinel i = vocab_size - 1 - i, as in T5). Saved as a T5TokenizerFast, so
`AutoTokenizer.from_pretrained(dir)` loads it and every checkpoint carries a copy.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_dir, atomic_write_json
from pipeline.config import DataConfig, TokenizerConfig
from pipeline.typed import Spec, from_dict

log = logging.getLogger(__name__)

SPECIALS = ("<pad>", "</s>", "<unk>")


def sample_lines(texts: Iterable[str], n: int, seed: int) -> list[str]:
    """A seeded sample of n non-empty lines, drawn from the first 4n lines the source yields."""
    pool: list[str] = []
    for doc in texts:
        pool.extend(line.strip() for line in doc.splitlines() if line.strip())
        if len(pool) >= 4 * n:
            break
    random.Random(seed).shuffle(pool)
    return pool[:n]


def train_tokenizer(lines: Iterable[str], vocab_size: int, num_sentinels: int = 100, algorithm: str = "unigram"):
    """Train the vocabulary and wrap it as a T5TokenizerFast (transformers)."""
    from tokenizers import SentencePieceBPETokenizer, SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import T5TokenizerFast

    n_learned = vocab_size - num_sentinels
    if algorithm == "unigram":
        trainer = SentencePieceUnigramTokenizer()
        trainer.train_from_iterator(lines, vocab_size=n_learned, special_tokens=list(SPECIALS), unk_token="<unk>",
                                    show_progress=False)
        tok = canonical_unigram(trainer._tokenizer)
    else:
        trainer = SentencePieceBPETokenizer(unk_token="<unk>")
        trainer.train_from_iterator(lines, vocab_size=n_learned, special_tokens=list(SPECIALS), show_progress=False)
        tok = trainer._tokenizer
    # Sentinels last, extra_id_0 on top: T5's convention, which the span-corruption code relies on.
    tok.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(num_sentinels))])
    tok.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, f"{s} must have id {i}"
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=num_sentinels)


SCORE_DECIMALS = 4


def canonical_unigram(tok):
    """The trained Unigram vocabulary in a fixed order with rounded scores.

    The `tokenizers` Unigram trainer is multi-threaded and hash-ordered: the same input gives the same
    pieces, but scores ~1e-11 apart and rare characters paired with different scores, so a different id
    order from run to run, which changes every token id downstream (a rerun after a kill would not equal
    an uninterrupted run). Re-dealing those characters, rounding the log-probabilities (a 1e-4 change does
    not matter to segmentation) and ordering the pieces by (score, piece) makes the tokenizer a function
    of its input."""
    import json

    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    head = vocab[:len(SPECIALS)]
    assert [p for p, _ in head] == list(SPECIALS), head
    rest = [[p, float(sc)] for p, sc in vocab[len(SPECIALS):]]
    # The trainer gives the characters it must cover, but that no learned piece beats, scores below every
    # learned piece, dealt in hash-set order (ties and 1e-4 steps): the same characters and the same scores
    # each run, paired differently. Re-deal them in character order.
    floor = min((sc for p, sc in rest if len(p) > 1), default=math.inf)
    tail = [i for i, (p, sc) in enumerate(rest) if len(p) == 1 and sc < floor - 1e-6]  # ties: ~1e-11 noise
    for i, c, sc in zip(tail, sorted(rest[i][0] for i in tail), sorted((rest[i][1] for i in tail), reverse=True)):
        rest[i] = [c, sc]
    rest = [[p, round(sc, SCORE_DECIMALS)] for p, sc in rest]
    spec["model"]["vocab"] = head + sorted(rest, key=lambda ps: (-ps[1], ps[0]))
    return Tokenizer.from_str(json.dumps(spec))


def _interleave(samples: dict[str, list[str]]) -> Iterator[str]:
    """Round-robin over languages, so no language dominates the trainer's early statistics."""
    its = [iter(v) for _, v in sorted(samples.items())]
    while its:
        for it in list(its):
            try:
                yield next(it)
            except StopIteration:
                its.remove(it)


@dataclass(frozen=True)
class TokenizerSpec(Spec):
    config: dict[str, Any]  # identity: tokenizer settings, the data's identity, the languages
    data: DataConfig
    cache: str

    @property
    def tokenizer(self) -> TokenizerConfig:
        """The tokenizer's settings: all of them are its identity, so they are read from there."""
        return from_dict(TokenizerConfig, self.config["tokenizer"])


def run(task) -> None:
    """Stage `tokenizer`: sample each language's text, train, save (tokenizer files + stats.json)."""
    from pipeline.sources import get_source

    spec: TokenizerSpec = task.spec
    cfg = spec.tokenizer
    source = get_source(spec.data, Path(spec.cache))
    samples = {}
    # The vocabulary is learnt from the languages the study reads (the planner puts them in the identity)
    for i, lang in enumerate(spec.config["languages"]):
        samples[lang] = sample_lines(source.iter_texts(lang, "train"), cfg.sample_lines_per_language, seed=i)
        log.info("tokenizer: %s lines of %s", f"{len(samples[lang]):,}", lang)
    tokenizer = train_tokenizer(_interleave(samples), cfg.vocab_size, cfg.num_sentinels, cfg.algorithm)
    # Characters per token on the sample: how the plan estimates unique tokens before tokenizing everything.
    stats = {"vocab_size": len(tokenizer), "lines": {k: len(v) for k, v in samples.items()}, "chars_per_token": {}}
    for lang, lines in samples.items():
        some = lines[:2000]
        n_tok = sum(len(x) for x in tokenizer(some, add_special_tokens=False).input_ids)
        stats["chars_per_token"][lang] = round(sum(map(len, some)) / max(1, n_tok), 3)
    out = Path(task.dir)
    with atomic_dir(out / "tokenizer") as tmp:
        tokenizer.save_pretrained(str(tmp))
    atomic_write_json(out / "stats.json", stats)
    log.info("tokenizer: vocabulary %d, chars/token %s", len(tokenizer), stats["chars_per_token"])
