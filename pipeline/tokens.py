"""Stage `tokens`: a language's text as one flat token stream, in a seeded document order.

Data order is an artifact: documents are shuffled once from the seed and tokenized into `train.bin`
(each document followed by EOS), so pretraining reads position `step x count x raw_length` and a resumed
or distributed run sees exactly the same text. Held-out text of the language goes to `validation.bin`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.artifacts import atomic_write_json
from pipeline.config import DataConfig
from pipeline.typed import Spec

log = logging.getLogger(__name__)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def write_stream(path: Path, docs: Iterable[str], tokenizer, max_tokens: int | None, desc: str,
                 batch_docs: int = 512) -> tuple[int, int]:
    """Tokenize documents into a flat binary file, atomically. Returns (tokens, documents)."""
    dtype = token_dtype(len(tokenizer))
    eos = tokenizer.eos_token_id
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n_tok = n_docs = 0
    bar = tqdm(total=max_tokens, desc=desc, unit="tok", unit_scale=True, disable=not sys.stderr.isatty())
    try:
        with open(tmp, "wb") as f:
            batch: list[str] = []

            def flush() -> bool:
                nonlocal n_tok, n_docs
                ids = tokenizer(batch, add_special_tokens=False).input_ids
                for x in ids:
                    x.append(eos)
                flat = np.fromiter((t for x in ids for t in x), dtype=dtype)
                if max_tokens is not None and n_tok + len(flat) >= max_tokens:
                    flat = flat[: max_tokens - n_tok]
                flat.tofile(f)
                n_tok += len(flat)
                n_docs += len(batch)
                bar.update(len(flat))
                batch.clear()
                return max_tokens is not None and n_tok >= max_tokens

            for doc in docs:
                if doc and doc.strip():
                    batch.append(doc)
                if len(batch) >= batch_docs and flush():
                    break
            else:
                if batch:
                    flush()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        bar.close()
        if tmp.exists():
            tmp.unlink()
    return n_tok, n_docs


def open_stream(path: Path, vocab_size: int) -> np.ndarray:
    dtype = token_dtype(vocab_size)
    if Path(path).stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


@dataclass(frozen=True)
class TokensSpec(Spec):
    config: dict[str, Any]  # identity: language, data identity, max_tokens, seed
    lang: str
    tokenizer_dir: str
    data: DataConfig
    cache: str
    max_tokens: int | None  # None: all of a bounded source
    seed: int


def run(task) -> None:
    from pipeline.sources import get_source
    from pipeline.tokenizer import load_tokenizer

    spec: TokensSpec = task.spec
    lang, seed, max_tokens = spec.lang, spec.seed, spec.max_tokens
    tokenizer = load_tokenizer(spec.tokenizer_dir)
    source = get_source(spec.data, Path(spec.cache))
    out = Path(task.dir)
    if getattr(source, "bounded", True):
        docs = list(source.iter_texts(lang, "train"))
        order = np.random.default_rng([seed, 7919]).permutation(len(docs))
        train_docs: Iterable[str] = (docs[i] for i in order)
    else:  # a stream (mC4) is already shuffled; take what the ladder needs, in order
        train_docs = source.iter_texts(lang, "train")
    n_train, d_train = write_stream(out / "train.bin", train_docs, tokenizer, max_tokens, f"tokens {lang}")
    n_val, d_val = write_stream(out / "validation.bin", source.iter_texts(lang, "validation"), tokenizer,
                                None, f"tokens {lang} (validation)")
    if n_train == 0:
        raise RuntimeError(f"no {lang} training text in the {source.name} source")
    meta = {"lang": lang, "train_tokens": n_train, "train_docs": d_train, "validation_tokens": n_val,
            "validation_docs": d_val, "dtype": token_dtype(len(tokenizer)).name, "vocab_size": len(tokenizer)}
    atomic_write_json(out / "meta.json", meta)
    log.info("tokens %s: %s train tokens in %s documents, %s validation tokens", lang, f"{n_train:,}",
             f"{d_train:,}", f"{n_val:,}")
