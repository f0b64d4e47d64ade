"""Build the offline l10n corpus from Debian packages into <cache>/l10n (see pipeline/corpus/).

usage: python scripts/build_corpus.py [--cache DIR] [--lean] [--force] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from pipeline.corpus import AptUnavailable, build, corpus_dir, default_cache  # noqa: E402
from pipeline.corpus.build import VERSION, built_version  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache dir (default: $DS_CACHE, else .cache)")
    ap.add_argument("--lean", action="store_true", help="skip the GIMP help packages (200 MB, ~18k pairs)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the manifest exists")
    ap.add_argument(
        "--jobs", type=int, default=None, help="parallel extraction processes (default: all cores)"
    )
    args = ap.parse_args(argv)
    cache = args.cache or default_cache()
    manifest = corpus_dir(cache) / "manifest.json"
    if manifest.exists() and not args.force:
        if built_version(manifest.parent) == VERSION:
            print(f"corpus already built: {manifest} (--force to rebuild)")
            return 0
        print(f"corpus at {manifest.parent} is from builder version {built_version(manifest.parent)}; rebuilding as {VERSION}")
    t0 = time.time()
    try:
        out = build(cache, lean=args.lean, force=args.force, jobs=args.jobs)
    except AptUnavailable as e:
        print(
            f"cannot build the l10n corpus without apt ({e}); use data=hub (mC4 + WMT from the hub) "
            "or data=local (your own jsonl files) instead",
            file=sys.stderr,
        )
        return 2
    m = json.loads((out / "manifest.json").read_text())
    for pair, c in m["pairs"].items():
        print(f"{pair}: train {c['train']:,}  validation {c['validation']:,}  test {c['test']:,}  "
              f"in-domain validation {c['validation_indomain']:,}  test {c['test_indomain']:,}")
    print("mono words: " + "  ".join(f"{k} {v['words']:,}" for k, v in m["mono"].items()))
    print(f"wrote {out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
