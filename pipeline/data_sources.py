"""The data sources, each listed once: its name (`data=NAME`, conf/data/NAME.yaml, its options under
`data.NAME`), the `Source` class that reads it (pipeline/sources/), and how the report describes the corpus.

The config validates `data.source` against these names, `pipeline.sources.get_source` builds the reader from
here, and the report's header says what the corpus is from here. Adding a source is a reader module in
pipeline/sources/, a line here and its conf/data/NAME.yaml (docs/ARCHITECTURE.md, "How to add a data source").
A leaf: stdlib only (the reader is imported by name when text is read).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSource:
    name: str
    reader: str  # "module:Class" of its pipeline.sources.base.Source subclass
    description: str  # the report's "Corpus:" line
    # held-out splits beyond every source's (train, validation, test): the offline corpus's in-domain sets
    extra_splits: tuple[str, ...] = ()


SOURCES: dict[str, DataSource] = {s.name: s for s in (
    DataSource("l10n", "pipeline.sources.l10n:L10nSource",
               "the offline corpus built from the translations in Debian packages (software UI and help text, "
               "median 7-8 words a sentence); BLEU here is not comparable with WMT newstest numbers",
               extra_splits=("validation_indomain", "test_indomain")),
    DataSource("hub", "pipeline.sources.hub:HubSource",
               "mC4 (allenai/c4) for pretraining and WMT (en-de WMT17, en-fr WMT15, en-ro WMT16) for finetuning and "
               "test"),
    DataSource("local", "pipeline.sources.local:LocalSource", "the user's own files (data=local)"),
)}
