"""The `Source` interface and the helpers its implementations share (reading jsonl through `datasets`,
counting, hashing, the translation-pair checks)."""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, DataConfig
from pipeline.typed import to_dict

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets

SPLITS = ("train", "validation", "test")
# Held-out sets only the offline corpus has: a sample of its training packages' own domains (corpus/indomain.py).
INDOMAIN_SPLITS = ("validation_indomain", "test_indomain")
TEXT_SPLITS = ("train", "validation")


def options_section(d: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None or v == [] or v == ():  # an empty mapping freezes to an empty tuple
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where}.{key}", f"must be a mapping, got {v!r}")
    return dict(v)


def langs_of(pair: str) -> tuple[str, str]:
    src, _, tgt = pair.partition("-")
    if not src or not tgt:
        raise ConfigError("data.pairs", f"{pair!r} is not SRC-TGT")
    return src, tgt


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n


def text_stats(texts: Iterable[str]) -> dict[str, int]:
    docs = words = chars = 0
    for t in texts:
        docs += 1
        words += len(t.split())
        chars += len(t)
    return {"docs": docs, "words": words, "chars": chars}


def jsonl_texts(path: Path) -> Iterator[str]:
    """Plain reading for counting (no arrow cache needed for a one-off pass)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def load_json(files: list[Path] | Path, cache_dir: Path | None) -> datasets.Dataset:
    import datasets

    files = [str(f) for f in (files if isinstance(files, list) else [files])]
    return datasets.load_dataset("json", data_files=files, split="train",
                                 cache_dir=None if cache_dir is None else str(cache_dir))


def translation_langs(features: Any) -> set[str]:
    t = features.get("translation") if features is not None else None
    if t is None:
        return set()
    return set(getattr(t, "languages", None) or (t.keys() if isinstance(t, Mapping) else ()))


def as_pairs(ds: datasets.Dataset, pair: str, where: str) -> datasets.Dataset:
    """Keep the `translation` column and make sure both languages of the task are in it."""
    if "translation" not in ds.column_names:
        raise ConfigError(where, f"no 'translation' column (columns: {', '.join(ds.column_names)})")
    langs = translation_langs(ds.features)
    for lang in langs_of(pair):
        if lang not in langs:
            raise ConfigError(where, f"missing language key {lang!r} in 'translation' (has: {', '.join(sorted(langs))})")
    return ds.select_columns(["translation"])


def dedup_side(rows: Iterable[Mapping[str, Any]], lang: str, seen: set[str]) -> Iterator[str]:
    for r in rows:
        t = r["translation"][lang]
        if t and t not in seen:
            seen.add(t)
            yield t


class Source(abc.ABC):
    """The interface every stage reads text through."""

    name = "base"
    bounded = True  # False: a stream with no known end (mC4); consumers take what the Dp ladder needs

    def __init__(self, data: DataConfig, cache: Path):
        self.languages = tuple(data.languages)
        self.pairs = tuple(data.pairs)
        self.cache = Path(cache)
        self.opts = to_dict(data.options) or {}
        if not isinstance(self.opts, dict):
            self.opts = {}

    @abc.abstractmethod
    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        """Monolingual documents; split "validation" is held-out text of the language (upstream loss)."""
        ...

    @abc.abstractmethod
    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        """A datasets.Dataset with a column "translation": {src: str, tgt: str, ...}."""
        ...

    def text_stats(self, lang: str) -> dict[str, int] | None:
        """{"docs", "words", "chars"} of the train text, or None where unbounded or unknown."""
        return None

    def pool_size(self, pair: str, split: str = "train") -> int | None:
        """Number of pairs in a split, or None where unknown without downloading."""
        return None

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """What downstream stages hash on: the content of the data, as cheaply as it can be named."""
        ...

    @abc.abstractmethod
    def validate(self, languages: Iterable[str], pairs: Iterable[str]) -> None:
        """Fast start-up checks; raises ConfigError with one line naming the key and the problem."""
        ...

    @staticmethod
    def _check_split(split: str, allowed: tuple[str, ...]) -> None:
        if split not in allowed:
            raise ValueError(f"unknown split {split!r}; allowed: {', '.join(allowed)}")
