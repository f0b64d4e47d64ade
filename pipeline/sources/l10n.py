"""`data=l10n` (default): the offline corpus that scripts/build_corpus.py builds from Debian's translations into
`<cache>/l10n/{manifest.json, mono/<lang>.jsonl, pairs/<src>-<tgt>/<split>.jsonl}`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import file_sha256
from pipeline.config import ConfigError, DataConfig
from pipeline.data_sources import SOURCES
from pipeline.sources import base
from pipeline.sources.base import SPLITS, TEXT_SPLITS, Source

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets


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
        src, tgt = base.langs_of(pair)
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
        files = [self.dir / "pairs" / p / "validation.jsonl" for p in self.corpus_pairs() if lang in base.langs_of(p)]
        return [f for f in files if f.is_file()]

    def iter_texts(self, lang: str, split: str = "train") -> Iterator[str]:
        self._check_split(split, TEXT_SPLITS)
        self.manifest()
        cache_dir = self.cache / "datasets"
        if split == "train":
            for row in base.load_json(self.mono_file(lang), cache_dir):
                if row["text"]:
                    yield row["text"]
            return
        files = self._validation_pair_files(lang)
        if not files:
            raise ConfigError(self.KEY, f"no held-out {lang} text: no validation pairs with {lang} in {self.dir / 'pairs'}")
        seen: set[str] = set()
        for f in files:
            yield from base.dedup_side(base.load_json(f, cache_dir), lang, seen)

    def documents(self, lang: str) -> base.JsonlDocuments:
        self.manifest()
        return base.JsonlDocuments(self.mono_file(lang), self.cache)

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        # the held-out sets only the offline corpus has (a sample of its training packages' own domains,
        # corpus/indomain.py), listed with the source
        self._check_split(split, SPLITS + SOURCES["l10n"].extra_splits)
        self.manifest()
        f = self.pair_file(pair, split)
        if not f.is_file():
            raise ConfigError(self.KEY, f"{f}: missing; rebuild with `make corpus`")
        return base.as_pairs(base.load_json(f, self.cache / "datasets"), pair, self.KEY)

    def text_stats(self, lang: str) -> dict[str, int] | None:
        if lang not in self._stats:
            m = self.manifest()
            mono = m.get("mono") or m.get("monolingual") or {}
            s = mono.get(lang) if isinstance(mono, Mapping) else None
            keys = ("docs", "words", "chars")
            if isinstance(s, Mapping) and all(isinstance(s.get(k), int) for k in keys):
                self._stats[lang] = {k: int(s[k]) for k in keys}
            else:
                self._stats[lang] = base.text_stats(base.jsonl_texts(self.mono_file(lang)))
        return dict(self._stats[lang])

    def pool_size(self, pair: str, split: str = "train") -> int | None:
        m = self.manifest()
        src, tgt = base.langs_of(pair)
        pairs = m.get("pairs") if isinstance(m.get("pairs"), Mapping) else {}
        entry = pairs.get(pair) or pairs.get(f"{tgt}-{src}") or {}
        v = entry.get(split) if isinstance(entry, Mapping) else None
        if isinstance(v, Mapping):
            v = next((v[k] for k in ("pairs", "count", "rows") if isinstance(v.get(k), int)), None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        f = self.pair_file(pair, split)
        return base.count_lines(f) if f.is_file() else None

    def identity(self) -> dict[str, Any]:
        self.manifest()
        return {"source": "l10n", "manifest_sha256": file_sha256(self.manifest_path)}

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
