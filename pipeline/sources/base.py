"""The `Source` interface and the helpers its implementations share (reading jsonl through `datasets`,
counting, hashing, the translation-pair checks)."""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import ConfigError, DataConfig
from pipeline.typed import to_dict

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets

SPLITS = ("train", "validation", "test")
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


class JsonlDocuments:
    """The non-empty `text` documents of a jsonl file, read one at a time by index: only a byte-offset index
    (16 bytes a document, memory-mapped from the cache) stays open, never the text. Document i is the i-th
    line whose `text` is non-empty, the same documents in the same order as reading the file through `datasets`.
    """

    def __init__(self, path: Path, cache: Path):
        self.path = Path(path)
        st = self.path.stat()
        key = hashlib.sha256(f"{self.path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
        index = Path(cache) / "sources" / "index" / f"{key}.i64"
        if not index.is_file():
            index.parent.mkdir(parents=True, exist_ok=True)
            # Several workers (a SLURM array's tasks) may find it missing at once: one builds, the others wait for
            # it on the lock and read its result instead of each making the same pass over the file.
            with open(index.with_name(f".{index.name}.lock"), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not index.is_file():
                    _write_index(self.path, index)
        # (n, 2) int64: byte offset and length of each document's line, memory-mapped (an empty map is refused)
        self.index = (np.memmap(index, dtype="<i8", mode="r").reshape(-1, 2) if index.stat().st_size
                      else np.empty((0, 2), dtype="<i8"))
        self._f = None

    def __len__(self) -> int:
        return len(self.index)

    def sizes(self) -> np.ndarray:
        """Bytes of each document's line (what shards are balanced on)."""
        return np.asarray(self.index[:, 1])

    def __getitem__(self, i: int) -> str:
        if self._f is None:
            self._f = open(self.path, "rb")  # noqa: SIM115 (kept open across reads; closed with the object)
        off, n = self.index[i]
        self._f.seek(int(off))
        return json.loads(self._f.read(int(n)))["text"]

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __del__(self) -> None:
        self.close()


def _write_index(path: Path, index: Path, chunk: int = 1 << 16) -> None:
    """One streaming pass over the file: (offset, length) of every line with a non-empty `text`, as raw
    little-endian int64 pairs written as they are found (memory stays one chunk, whatever the file's size), then
    moved into place atomically."""
    tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
    buf: list[tuple[int, int]] = []
    off = 0
    try:
        with open(path, "rb") as f, open(tmp, "wb") as out:
            for line in f:
                if line.strip() and json.loads(line)["text"]:
                    buf.append((off, len(line)))
                    if len(buf) >= chunk:
                        out.write(np.asarray(buf, dtype="<i8").tobytes())
                        buf.clear()
                off += len(line)
            out.write(np.asarray(buf, dtype="<i8").reshape(-1, 2).tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, index)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


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

    def documents(self, lang: str) -> JsonlDocuments | None:
        """The train documents of a bounded source by index, read lazily (the tokens stage shuffles them
        and shards them); None where the source is a stream (see `text_files`)."""
        return None

    def text_files(self, lang: str, split: str = "train") -> list[str]:
        """A stream's files in stream order (the tokens stage's shards); [] for a bounded source."""
        return []

    def iter_file(self, lang: str, split: str, file: str) -> Iterator[str]:
        """The documents of one of `text_files`, in order, with no document limit applied."""
        # a bounded source lists no text files (`text_files` is []), so nothing asks it for one
        raise ValueError(f"the {self.name} source has no text files: it has no {file!r} to read")

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
