"""`data=local`: the user's own files in the same schemas ({"text": ...} and {"translation": {"en": ..., "de": ...}}),
checked line by line at start-up, their hashes cached."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import file_sha256
from pipeline.config import ConfigError, DataConfig
from pipeline.sources import base
from pipeline.sources.base import SPLITS, TEXT_SPLITS, Source

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets


class LocalSource(Source):
    """The user's files: `mono.<lang>`, optional `mono_validation.<lang>`, `pairs.<pair>.{train,validation,test}`."""

    name = "local"
    KEY = "data.local"

    def __init__(self, data: DataConfig, cache: Path):
        super().__init__(data, cache)
        self.mono = base.options_section(self.opts, "mono", self.KEY)
        self.mono_validation = base.options_section(self.opts, "mono_validation", self.KEY)
        self.pair_specs = base.options_section(self.opts, "pairs", self.KEY)
        self._stats: dict[str, dict[str, int]] = {}

    # -- files and their config keys

    def _files(self) -> dict[str, Path]:
        """Every configured file by its config key (what identity and the checks name)."""
        out = {f"{self.KEY}.mono.{lang}": p for lang, p in self.mono.items()}
        out |= {f"{self.KEY}.mono_validation.{lang}": p for lang, p in self.mono_validation.items()}
        for pair, spec in self.pair_specs.items():
            if isinstance(spec, Mapping):
                out |= {f"{self.KEY}.pairs.{pair}.{split}": p for split, p in spec.items()}
        return {k: Path(os.path.expanduser(str(p))).resolve() for k, p in out.items() if p}

    def _file(self, key: str) -> Path:
        f = self._files().get(key)
        if f is None:
            raise ConfigError(key, "is required (a jsonl file)")
        return f

    def _pair_key(self, pair: str, split: str) -> str:
        src, tgt = base.langs_of(pair)
        for name in (pair, f"{tgt}-{src}"):
            if name in self.pair_specs:
                return f"{self.KEY}.pairs.{name}.{split}"
        return f"{self.KEY}.pairs.{pair}.{split}"

    def _validation_pair_files(self, lang: str) -> list[Path]:
        files = self._files()
        return [files[k] for p in sorted(self.pair_specs) if lang in base.langs_of(p)
                if (k := f"{self.KEY}.pairs.{p}.validation") in files]

    # -- the interface

    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        self._check_split(split, TEXT_SPLITS)
        cache_dir = self.cache / "datasets"
        if split == "train" or lang in self.mono_validation:
            key = f"{self.KEY}.{'mono' if split == 'train' else 'mono_validation'}.{lang}"
            for row in base.load_json(self._file(key), cache_dir):
                if row["text"]:
                    yield row["text"]
            return
        files = self._validation_pair_files(lang)
        if not files:
            raise ConfigError(f"{self.KEY}.mono_validation.{lang}", f"no held-out {lang} text: give a "
                              '{"text": ...} jsonl, or a pair with a validation split that has ' + lang)
        seen: set[str] = set()
        for f in files:
            yield from base.dedup_side(base.load_json(f, cache_dir), lang, seen)

    def documents(self, lang: str) -> base.JsonlDocuments:
        return base.JsonlDocuments(self._file(f"{self.KEY}.mono.{lang}"), self.cache)

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        self._check_split(split, SPLITS)
        key = self._pair_key(pair, split)
        return base.as_pairs(base.load_json(self._file(key), self.cache / "datasets"), pair, key)

    def text_stats(self, lang: str) -> dict[str, int] | None:
        key = f"{self.KEY}.mono.{lang}"
        if key not in self._files():
            return None
        if lang not in self._stats:
            self._stats[lang] = base.text_stats(base.jsonl_texts(self._file(key)))
        return dict(self._stats[lang])

    def pool_size(self, pair: str, split: str = "train") -> int | None:
        f = self._files().get(self._pair_key(pair, split))
        return base.count_lines(f) if f is not None and f.is_file() else None

    def identity(self) -> dict[str, Any]:
        hashes = _HashCache(self.cache / "sources" / "sha256.json")
        files = {}
        for key, f in sorted(self._files().items()):
            st = f.stat()
            files[key.removeprefix(f"{self.KEY}.")] = {"path": str(f), "size": st.st_size, "sha256": hashes.get(f, st)}
        hashes.save()
        return {"source": "local", "files": files}

    def validate(self, languages: Iterable[str], pairs: Iterable[str]) -> None:
        extra = sorted(set(self.opts) - {"mono", "mono_validation", "pairs"})
        if extra:
            raise ConfigError(f"{self.KEY}.{extra[0]}", "unknown key; allowed: mono, mono_validation, pairs")
        for section, d in (("mono", self.mono), ("mono_validation", self.mono_validation)):
            for lang in d:
                if lang not in self.languages:
                    raise ConfigError(f"{self.KEY}.{section}.{lang}", f"unknown language; allowed: {', '.join(self.languages)}")
        for pair, spec in self.pair_specs.items():
            k = f"{self.KEY}.pairs.{pair}"
            if not isinstance(spec, Mapping) or set(spec) - set(SPLITS):
                raise ConfigError(k, f"must map {', '.join(SPLITS)} to jsonl files, got {spec!r}")
        checked: set[str] = set()

        def check(key: str, langs: tuple[str, ...] | None = None) -> None:
            if key not in checked:
                check_jsonl(self._file(key), key, langs)
                checked.add(key)

        for lang in languages:
            key = f"{self.KEY}.mono.{lang}"
            if not self.mono.get(lang):
                raise ConfigError(key, f'no {lang} text: give a jsonl file of {{"text": ...}} lines ({key}=/path/{lang}.jsonl)')
            check(key)
        for pair in pairs:
            src, tgt = base.langs_of(pair)
            if not any(n in self.pair_specs for n in (pair, f"{tgt}-{src}")):
                raise ConfigError(f"{self.KEY}.pairs.{pair}", "no files for this pair: give train, validation and test "
                                  '{"translation": {...}} jsonl files')
            for split in SPLITS:
                check(self._pair_key(pair, split), (src, tgt))
        for lang in languages:  # held-out text: its own file, or the language's side of validation pairs
            if lang in self.mono_validation:
                check(f"{self.KEY}.mono_validation.{lang}")
                continue
            held_out = [p for p in sorted(self.pair_specs) if lang in base.langs_of(p) and self.pair_specs[p].get("validation")]
            if not held_out:
                raise ConfigError(f"{self.KEY}.mono_validation.{lang}", f"no held-out {lang} text: give a "
                                  '{"text": ...} jsonl, or a pair with a validation split that has ' + lang)
            for p in held_out:
                check(f"{self.KEY}.pairs.{p}.validation", base.langs_of(p))


def check_jsonl(path: Path, key: str, langs: tuple[str, ...] | None = None) -> int:
    """Check every line of a user's jsonl file: {"text": str} (langs None) or {"translation": {lang: str}}.

    The first problem raises ConfigError(key, "<file>:<line>: <problem>"); returns the number of records.
    """
    if not path.is_file():
        raise ConfigError(key, f"{path}: no such file")
    n = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            where = f"{path}:{i}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(key, f"{where}: invalid UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(key, f"{where}: malformed JSON ({e.msg}, column {e.colno})") from None
            if not isinstance(rec, dict):
                raise ConfigError(key, f"{where}: expected a JSON object, got {type(rec).__name__}")
            if langs is None:
                if "text" not in rec:
                    raise ConfigError(key, f"{where}: missing key 'text'")
                _check_str(rec["text"], key, where, "'text'")
            else:
                if "translation" not in rec:
                    raise ConfigError(key, f"{where}: missing key 'translation'")
                tr = rec["translation"]
                if not isinstance(tr, dict):
                    raise ConfigError(key, f"{where}: 'translation' must be an object like {{\"en\": ..., \"de\": ...}}")
                for lang in langs:
                    if lang not in tr:
                        raise ConfigError(key, f"{where}: missing language key {lang!r} in 'translation' "
                                               f"(has: {', '.join(map(str, tr)) or 'nothing'})")
                    _check_str(tr[lang], key, where, f"translation[{lang!r}]")
            n += 1
    if n == 0:
        raise ConfigError(key, f"{path}: empty file (no records)")
    return n


def _check_str(v: Any, key: str, where: str, what: str) -> None:
    if not isinstance(v, str):
        raise ConfigError(key, f"{where}: {what} must be a string, got {type(v).__name__}")
    if not v.strip():
        raise ConfigError(key, f"{where}: {what} is empty")


class _HashCache:
    """sha256 of files keyed by (path, size, mtime), kept on disk: a user's 10 GB file is hashed once."""

    def __init__(self, path: Path):
        self.path = path
        self.dirty = False
        try:
            self.d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.d = {}

    def get(self, f: Path, st: os.stat_result) -> str:
        k = f"{f}|{st.st_size}|{st.st_mtime_ns}"
        if k not in self.d:
            self.d[k] = file_sha256(f)
            self.dirty = True
        return self.d[k]

    def save(self) -> None:
        if self.dirty:
            from pipeline.artifacts import atomic_write_json

            with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
                atomic_write_json(self.path, self.d)
