"""The offline l10n corpus: en-de/en-fr/en-ro pairs and en/de/fr/ro text from the translations in Debian packages.

from pipeline.corpus import build, corpus_dir
d = build(Path(".cache"))        # <cache>/l10n/{manifest.json, pairs/, mono/, LICENSES.md}
"""

from .build import build, corpus_dir, default_cache
from .fetch import AptUnavailable

__all__ = ["AptUnavailable", "build", "corpus_dir", "default_cache"]
