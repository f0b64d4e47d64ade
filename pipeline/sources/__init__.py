"""Where text comes from: one interface (`Source`), an implementation per source listed in
pipeline/data_sources.py (the one list of them):

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

import importlib
from pathlib import Path

from pipeline.config import ConfigError, DataConfig
from pipeline.data_sources import SOURCES
from pipeline.sources.base import SPLITS, TEXT_SPLITS, Source, as_pairs
from pipeline.sources.hub import HubSource
from pipeline.sources.l10n import L10nSource
from pipeline.sources.local import LocalSource, check_jsonl

__all__ = ["SPLITS", "TEXT_SPLITS", "HubSource", "L10nSource", "LocalSource", "Source", "as_pairs", "check_jsonl",
           "get_source", "reader"]


def reader(name: str) -> type[Source]:
    """The Source class of a listed data source (pipeline.data_sources)."""
    if name not in SOURCES:
        raise ConfigError("data.source", f"unknown value {name!r}; allowed: {', '.join(SOURCES)}")
    module, _, cls = SOURCES[name].reader.partition(":")
    return getattr(importlib.import_module(module), cls)


def get_source(data: DataConfig, cache: Path) -> Source:
    """The source named by `data.source`; reads nothing until asked."""
    return reader(data.source)(data, Path(cache))
