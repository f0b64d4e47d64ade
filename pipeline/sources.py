"""Where text comes from: one interface (`Source`), three implementations.

- `l10n` (default): the offline corpus that scripts/build_corpus.py builds from Debian's translations into
  `<cache>/l10n/{manifest.json, mono/<lang>.jsonl, pairs/<src>-<tgt>/<split>.jsonl}`.
- `hub`: mC4 from `allenai/c4` (streamed) and WMT from the `wmt/wmt1X` datasets, as a cluster user runs it.
- `local`: the user's own files in the same schemas ({"text": ...} and {"translation": {"en": ..., "de": ...}}).

Every source reads through `datasets`, so the three share one code path. Constructing a source reads
nothing; `validate` is the start-up check that turns bad data into ONE line (ConfigError, exit 2).
A pair "en-de" is a directional task (translate en -> de); its rows carry both languages, so a corpus
stored as de-en serves en-de too.
"""

from __future__ import annotations

import abc
import contextlib
import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, DataConfig

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets

SPLITS = ("train", "validation", "test")
# Held-out sets only the offline corpus has: a sample of its training packages' own domains (corpus/indomain.py).
INDOMAIN_SPLITS = ("validation_indomain", "test_indomain")
TEXT_SPLITS = ("train", "validation")


def _thaw(v: Any) -> Any:
    """DataConfig options are frozen into sorted (key, value) tuples; turn them back into dicts and lists."""
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in v):
        return {k: _thaw(x) for k, x in v}
    if isinstance(v, (list, tuple)):
        return [_thaw(x) for x in v]
    return v


def _section(d: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None or v == [] or v == ():  # an empty mapping freezes to an empty tuple
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{where}.{key}", f"must be a mapping, got {v!r}")
    return dict(v)


def _langs(pair: str) -> tuple[str, str]:
    src, _, tgt = pair.partition("-")
    if not src or not tgt:
        raise ConfigError("data.pairs", f"{pair!r} is not SRC-TGT")
    return src, tgt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += bool(line.strip())
    return n


def _text_stats_of(texts: Iterable[str]) -> dict[str, int]:
    docs = words = chars = 0
    for t in texts:
        docs += 1
        words += len(t.split())
        chars += len(t)
    return {"docs": docs, "words": words, "chars": chars}


def _jsonl_texts(path: Path) -> Iterator[str]:
    """Plain reading for counting (no arrow cache needed for a one-off pass)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)["text"]


def _load_json(files: list[Path] | Path, cache_dir: Path | None) -> datasets.Dataset:
    import datasets

    files = [str(f) for f in (files if isinstance(files, list) else [files])]
    return datasets.load_dataset("json", data_files=files, split="train",
                                 cache_dir=None if cache_dir is None else str(cache_dir))


def _translation_langs(features: Any) -> set[str]:
    t = features.get("translation") if features is not None else None
    if t is None:
        return set()
    return set(getattr(t, "languages", None) or (t.keys() if isinstance(t, Mapping) else ()))


def _as_pairs(ds: datasets.Dataset, pair: str, where: str) -> datasets.Dataset:
    """Keep the `translation` column and make sure both languages of the task are in it."""
    if "translation" not in ds.column_names:
        raise ConfigError(where, f"no 'translation' column (columns: {', '.join(ds.column_names)})")
    langs = _translation_langs(ds.features)
    for lang in _langs(pair):
        if lang not in langs:
            raise ConfigError(where, f"missing language key {lang!r} in 'translation' (has: {', '.join(sorted(langs))})")
    return ds.select_columns(["translation"])


def _dedup_side(rows: Iterable[Mapping[str, Any]], lang: str, seen: set[str]) -> Iterator[str]:
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
        self.opts = _thaw(data.options) or {}
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


# ------------------------------------------------------------------------------------------- l10n


class L10nSource(Source):
    """The offline corpus. Reads `manifest.json` defensively (its keys are the builder's):
    `mono.<lang>.{docs,words,chars}` for text_stats and `pairs.<pair>.<split>` (an int, or a dict with
    `pairs`/`count`/`rows`) for pool_size; anything missing there is counted from the files."""

    name = "l10n"
    KEY = "data.l10n.dir"

    def __init__(self, data: DataConfig, cache: Path):
        super().__init__(data, cache)
        self.dir = Path(os.path.expanduser(str(self.opts.get("dir") or self.cache / "l10n"))).resolve()
        self._manifest: dict[str, Any] | None = None
        self._stats: dict[str, dict[str, int]] = {}

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def _missing(self) -> ConfigError:
        return ConfigError(self.KEY, f"the offline corpus is not built at {self.dir}; "
                                     "run `make corpus` (python scripts/build_corpus.py)")

    def manifest(self) -> dict[str, Any]:
        if self._manifest is None:
            if not self.manifest_path.is_file():
                raise self._missing()
            try:
                self._manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ConfigError(self.KEY, f"{self.manifest_path}: unreadable manifest ({e}); rebuild with `make corpus`") from None
        return self._manifest

    def mono_file(self, lang: str) -> Path:
        return self.dir / "mono" / f"{lang}.jsonl"

    def pair_file(self, pair: str, split: str) -> Path:
        """pairs/en-de/<split>.jsonl, or pairs/de-en/... when the corpus stores the other direction."""
        src, tgt = _langs(pair)
        for name in (f"{src}-{tgt}", f"{tgt}-{src}"):
            p = self.dir / "pairs" / name / f"{split}.jsonl"
            if p.exists():
                return p
        return self.dir / "pairs" / pair / f"{split}.jsonl"

    def corpus_pairs(self) -> list[str]:
        d = self.dir / "pairs"
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def _validation_pair_files(self, lang: str) -> list[Path]:
        # Every pair of the corpus that has this language, so the held-out text depends on the corpus only.
        files = [self.dir / "pairs" / p / "validation.jsonl" for p in self.corpus_pairs() if lang in _langs(p)]
        return [f for f in files if f.is_file()]

    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        self._check_split(split, TEXT_SPLITS)
        self.manifest()
        cache_dir = self.cache / "datasets"
        if split == "train":
            for row in _load_json(self.mono_file(lang), cache_dir):
                if row["text"]:
                    yield row["text"]
            return
        files = self._validation_pair_files(lang)
        if not files:
            raise ConfigError(self.KEY, f"no held-out {lang} text: no validation pairs with {lang} in {self.dir / 'pairs'}")
        seen: set[str] = set()
        for f in files:
            yield from _dedup_side(_load_json(f, cache_dir), lang, seen)

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        self._check_split(split, SPLITS + INDOMAIN_SPLITS)
        self.manifest()
        f = self.pair_file(pair, split)
        if not f.is_file():
            raise ConfigError(self.KEY, f"{f}: missing; rebuild with `make corpus`")
        return _as_pairs(_load_json(f, self.cache / "datasets"), pair, self.KEY)

    def text_stats(self, lang: str) -> dict[str, int] | None:
        if lang not in self._stats:
            m = self.manifest()
            mono = m.get("mono") or m.get("monolingual") or {}
            s = mono.get(lang) if isinstance(mono, Mapping) else None
            keys = ("docs", "words", "chars")
            if isinstance(s, Mapping) and all(isinstance(s.get(k), int) for k in keys):
                self._stats[lang] = {k: int(s[k]) for k in keys}
            else:
                self._stats[lang] = _text_stats_of(_jsonl_texts(self.mono_file(lang)))
        return dict(self._stats[lang])

    def pool_size(self, pair: str, split: str = "train") -> int | None:
        m = self.manifest()
        src, tgt = _langs(pair)
        pairs = m.get("pairs") if isinstance(m.get("pairs"), Mapping) else {}
        entry = pairs.get(pair) or pairs.get(f"{tgt}-{src}") or {}
        v = entry.get(split) if isinstance(entry, Mapping) else None
        if isinstance(v, Mapping):
            v = next((v[k] for k in ("pairs", "count", "rows") if isinstance(v.get(k), int)), None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        f = self.pair_file(pair, split)
        return _count_lines(f) if f.is_file() else None

    def identity(self) -> dict[str, Any]:
        self.manifest()
        return {"source": "l10n", "manifest_sha256": _sha256(self.manifest_path)}

    def validate(self, languages: Iterable[str], pairs: Iterable[str], splits: Iterable[str] = SPLITS) -> None:
        self.manifest()
        for lang in languages:
            f = self.mono_file(lang)
            if not f.is_file() or f.stat().st_size == 0:
                raise ConfigError(self.KEY, f"{f}: no {lang} text in the offline corpus; rebuild with `make corpus`")
            if not self._validation_pair_files(lang):
                raise ConfigError(self.KEY, f"no held-out {lang} text: no validation pairs with {lang} in {self.dir / 'pairs'}")
        for pair in pairs:
            for split in splits:
                f = self.pair_file(pair, split)
                if not f.is_file() or f.stat().st_size == 0:
                    raise ConfigError(self.KEY, f"{f}: no {pair} {split} pairs in the offline corpus; rebuild with `make corpus`")


# -------------------------------------------------------------------------------------------- hub


class HubSource(Source):
    """mC4 per language, streamed, and WMT from the hub; every `path` may be a local copy of the same layout.

    Real layouts (2024-): `allenai/c4` keeps mC4 as `multilingual/c4-<lang>.tfrecord-NNNNN-of-MMMMM.json.gz`
    (+ `c4-<lang>-validation.tfrecord-...`), rows {text, timestamp, url}; `wmt/wmt1X` keeps parquet per config
    directory, `de-en/{train,validation,test}-NNNNN-of-MMMMM.parquet`, one column `translation` {de, en}.
    """

    name = "hub"
    bounded = False
    KEY = "data.hub"

    def __init__(self, data: DataConfig, cache: Path):
        super().__init__(data, cache)
        self.mono = _section(self.opts, "mono", self.KEY)
        self.parallel_specs = _section(self.opts, "parallel", self.KEY)
        self.streaming = bool(self.opts.get("streaming", True))
        self.max_docs = self.opts.get("max_documents_per_language")
        self.max_val_docs = self.opts.get("max_validation_documents")
        self.cache_dir = self.opts.get("cache_dir")  # None: the HF cache ($HF_HOME), where cluster users keep it

    def _kw(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"cache_dir": self.cache_dir}
        if spec.get("revision"):
            kw["revision"] = spec["revision"]
        return kw

    def _pair_spec(self, pair: str) -> tuple[str, dict[str, Any]]:
        src, tgt = _langs(pair)
        for key in (pair, f"{tgt}-{src}"):
            spec = self.parallel_specs.get(key)
            if spec is not None:
                if not isinstance(spec, Mapping) or not spec.get("path"):
                    raise ConfigError(f"{self.KEY}.parallel.{key}", "must give at least `path` (and `data_dir` or `name`)")
                return key, dict(spec)
        raise ConfigError(f"{self.KEY}.parallel.{pair}", f"no dataset for {pair}; "
                          f"configured: {', '.join(sorted(self.parallel_specs)) or 'none'}")

    def _mono_pattern(self, lang: str, split: str) -> str:
        key = f"{split}_files"
        pattern = self.mono.get(key)
        if not isinstance(pattern, str) or "{lang}" not in pattern:
            raise ConfigError(f"{self.KEY}.mono.{key}", f"must be a file pattern with {{lang}}, got {pattern!r}")
        return pattern.format(lang=lang)

    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        import datasets

        self._check_split(split, TEXT_SPLITS)
        pattern = self._mono_pattern(lang, split)
        path = self.mono.get("path")
        if not path:
            raise ConfigError(f"{self.KEY}.mono.path", "is required (e.g. allenai/c4)")
        # data_files, not a config name: mC4's English is config "en-multi" ("en" is C4), a pattern has no such trap.
        ds = datasets.load_dataset(path, data_files=pattern, split="train", streaming=self.streaming, **self._kw(self.mono))
        limit = self.max_docs if split == "train" else self.max_val_docs
        n = 0
        for row in ds:
            if limit is not None and n >= limit:
                return
            if row["text"]:
                n += 1
                yield row["text"]

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        import datasets

        self._check_split(split, SPLITS)
        key, spec = self._pair_spec(pair)
        ds = datasets.load_dataset(spec["path"], name=spec.get("name"), data_dir=spec.get("data_dir"), split=split,
                                   **self._kw(spec))
        return _as_pairs(ds, pair, f"{self.KEY}.parallel.{key}")

    def identity(self) -> dict[str, Any]:
        # Where the text comes from and how much of it is read; `streaming` and `cache_dir` change neither.
        return {"source": "hub", "mono": self.mono, "parallel": self.parallel_specs,
                "max_documents_per_language": self.max_docs, "max_validation_documents": self.max_val_docs}

    def validate(self, languages: Iterable[str], pairs: Iterable[str]) -> None:
        # No network here: check the configuration, and the files when a path is a local directory.
        path = self.mono.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{self.KEY}.mono.path", "is required (e.g. allenai/c4)")
        for k in ("max_documents_per_language", "max_validation_documents"):
            v = self.opts.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{self.KEY}.{k}", f"must be a positive whole number or null, got {v!r}")
        for lang in languages:
            for split in TEXT_SPLITS:
                pattern = self._mono_pattern(lang, split)
                if os.path.isdir(path) and not glob.glob(os.path.join(path, pattern)):
                    raise ConfigError(f"{self.KEY}.mono.{split}_files", f"no {lang} files match {pattern} in {path}")
        for pair in pairs:
            key, spec = self._pair_spec(pair)
            p = spec["path"]
            d = os.path.join(p, spec.get("data_dir") or "")
            if os.path.isdir(p) and not os.path.isdir(d):
                raise ConfigError(f"{self.KEY}.parallel.{key}.data_dir", f"{d}: no such directory")


# ------------------------------------------------------------------------------------------ local


class LocalSource(Source):
    """The user's files: `mono.<lang>`, optional `mono_validation.<lang>`, `pairs.<pair>.{train,validation,test}`."""

    name = "local"
    KEY = "data.local"

    def __init__(self, data: DataConfig, cache: Path):
        super().__init__(data, cache)
        self.mono = _section(self.opts, "mono", self.KEY)
        self.mono_validation = _section(self.opts, "mono_validation", self.KEY)
        self.pair_specs = _section(self.opts, "pairs", self.KEY)
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
        src, tgt = _langs(pair)
        for name in (pair, f"{tgt}-{src}"):
            if name in self.pair_specs:
                return f"{self.KEY}.pairs.{name}.{split}"
        return f"{self.KEY}.pairs.{pair}.{split}"

    def _validation_pair_files(self, lang: str) -> list[Path]:
        files = self._files()
        return [files[k] for p in sorted(self.pair_specs) if lang in _langs(p)
                if (k := f"{self.KEY}.pairs.{p}.validation") in files]

    # -- the interface

    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        self._check_split(split, TEXT_SPLITS)
        cache_dir = self.cache / "datasets"
        if split == "train" or lang in self.mono_validation:
            key = f"{self.KEY}.{'mono' if split == 'train' else 'mono_validation'}.{lang}"
            for row in _load_json(self._file(key), cache_dir):
                if row["text"]:
                    yield row["text"]
            return
        files = self._validation_pair_files(lang)
        if not files:
            raise ConfigError(f"{self.KEY}.mono_validation.{lang}", f"no held-out {lang} text: give a "
                              '{"text": ...} jsonl, or a pair with a validation split that has ' + lang)
        seen: set[str] = set()
        for f in files:
            yield from _dedup_side(_load_json(f, cache_dir), lang, seen)

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        self._check_split(split, SPLITS)
        key = self._pair_key(pair, split)
        return _as_pairs(_load_json(self._file(key), self.cache / "datasets"), pair, key)

    def text_stats(self, lang: str) -> dict[str, int] | None:
        key = f"{self.KEY}.mono.{lang}"
        if key not in self._files():
            return None
        if lang not in self._stats:
            self._stats[lang] = _text_stats_of(_jsonl_texts(self._file(key)))
        return dict(self._stats[lang])

    def pool_size(self, pair: str, split: str = "train") -> int | None:
        f = self._files().get(self._pair_key(pair, split))
        return _count_lines(f) if f is not None and f.is_file() else None

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
            src, tgt = _langs(pair)
            if not any(n in self.pair_specs for n in (pair, f"{tgt}-{src}")):
                raise ConfigError(f"{self.KEY}.pairs.{pair}", "no files for this pair: give train, validation and test "
                                  '{"translation": {...}} jsonl files')
            for split in SPLITS:
                check(self._pair_key(pair, split), (src, tgt))
        for lang in languages:  # held-out text: its own file, or the language's side of validation pairs
            if lang in self.mono_validation:
                check(f"{self.KEY}.mono_validation.{lang}")
                continue
            held_out = [p for p in sorted(self.pair_specs) if lang in _langs(p) and self.pair_specs[p].get("validation")]
            if not held_out:
                raise ConfigError(f"{self.KEY}.mono_validation.{lang}", f"no held-out {lang} text: give a "
                                  '{"text": ...} jsonl, or a pair with a validation split that has ' + lang)
            for p in held_out:
                check(f"{self.KEY}.pairs.{p}.validation", _langs(p))


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
            self.d[k] = _sha256(f)
            self.dirty = True
        return self.d[k]

    def save(self) -> None:
        if self.dirty:
            from pipeline.artifacts import atomic_write_json

            with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
                atomic_write_json(self.path, self.d)


# ------------------------------------------------------------------------------------------ factory

_SOURCES = {"l10n": L10nSource, "hub": HubSource, "local": LocalSource}


def get_source(data: DataConfig, cache: Path) -> Source:
    """The source named by `data.source`; reads nothing until asked."""
    try:
        cls = _SOURCES[data.source]
    except KeyError:
        raise ConfigError("data.source", f"unknown value {data.source!r}; allowed: {', '.join(_SOURCES)}") from None
    return cls(data, Path(cache))
