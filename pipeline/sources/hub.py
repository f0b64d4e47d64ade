"""`data=hub`: mC4 from `allenai/c4` (streamed) and WMT from the `wmt/wmt1X` datasets, as a cluster user runs it."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import ConfigError, DataConfig
from pipeline.sources.base import SPLITS, TEXT_SPLITS, Source, as_pairs, langs_of, options_section

if TYPE_CHECKING:  # imported lazily at run time: `datasets` costs a second at start-up
    import datasets


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
        self.mono = options_section(self.opts, "mono", self.KEY)
        self.parallel_specs = options_section(self.opts, "parallel", self.KEY)
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
        src, tgt = langs_of(pair)
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

    def text_files(self, lang: str, split: str = "train") -> list[str]:
        """The files of a language's stream, sorted as `datasets` resolves the pattern (so reading them one
        after the other is the stream `iter_texts` reads): a glob in a local copy, the repository's listing
        on the hub."""
        import fnmatch

        self._check_split(split, TEXT_SPLITS)
        pattern = self._mono_pattern(lang, split)
        path = self.mono.get("path")
        if not path:
            raise ConfigError(f"{self.KEY}.mono.path", "is required (e.g. allenai/c4)")
        if os.path.isdir(path):
            files = [os.path.relpath(f, path) for f in glob.glob(os.path.join(path, pattern))]
        else:
            from huggingface_hub import HfApi

            listing = HfApi().list_repo_files(path, repo_type="dataset", revision=self.mono.get("revision"))
            files = [f for f in listing if fnmatch.fnmatchcase(f, pattern)]
        if not files:
            raise ConfigError(f"{self.KEY}.mono.{split}_files", f"no {lang} files match {pattern} in {path}")
        return sorted(files)

    def iter_file(self, lang: str, split: str, file: str) -> Iterator[str]:
        import datasets

        ds = datasets.load_dataset(self.mono["path"], data_files=file, split="train", streaming=self.streaming,
                                   **self._kw(self.mono))
        for row in ds:
            if row["text"]:
                yield row["text"]

    def parallel(self, pair: str, split: str) -> datasets.Dataset:
        import datasets

        self._check_split(split, SPLITS)
        key, spec = self._pair_spec(pair)
        ds = datasets.load_dataset(spec["path"], name=spec.get("name"), data_dir=spec.get("data_dir"), split=split,
                                   **self._kw(spec))
        return as_pairs(ds, pair, f"{self.KEY}.parallel.{key}")

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
