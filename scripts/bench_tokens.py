"""Throughput of the tokens stage on the offline corpus: tokens per second per worker, 1 worker against 2.

    python scripts/bench_tokens.py [--lang en] [--shard-mb 2] [--tokenizer DIR] [--workers 1 2] [--repeats 3]

Runs the real stage (`pipeline.tokens.run`) on one language's train text of the offline corpus (`data=l10n`,
`$DS_CACHE/l10n`) into a temporary directory, once per worker count, each worker one tokenizer thread
(TOKENIZERS_PARALLELISM=false), and checks that the streams are the same bytes. The time is the stage's
wall clock, process start-up of the workers included (what a user waits for). Without --tokenizer a tokenizer
of the default size (8,000) is trained first on a sample of the corpus (not timed). Meaningful only on an idle
machine: the worker counts run in turn, `--repeats` rounds, and the median of each counts; the processor and the
load average before and after are printed with the figures. The last line is `ratio: X`, the 2-worker throughput
over the 1-worker one.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread a worker: the workers are the parallelism
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lang", default="en")
    ap.add_argument("--shard-mb", type=float, default=2.0, help="text per shard (small enough for several shards)")
    ap.add_argument("--tokenizer", help="a tokenizer directory (e.g. artifacts/tokenizer/tok-*/tokenizer)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3, help="alternating rounds; the median counts")
    ap.add_argument("--cache", default=os.environ.get("DS_CACHE", ".cache"))
    a = ap.parse_args()

    from pipeline.artifacts import read_json
    from pipeline.config import DataConfig, TokensConfig, _freeze
    from pipeline.logs import setup_logging
    from pipeline.plan import Task
    from pipeline.precision import cpu_model
    from pipeline.sources import get_source
    from pipeline.streams import open_stream
    from pipeline.tokenizer import sample_lines, train_tokenizer
    from pipeline.tokens import TokensSpec, run

    setup_logging()
    data = DataConfig(source="l10n", languages=(a.lang,), pairs=(),
                      options=_freeze({"dir": str(Path(a.cache).resolve() / "l10n")}))
    source = get_source(data, Path(a.cache))
    source.validate([a.lang], [])
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tmp:
        source = get_source(data, Path(tmp) / "cache")  # the corpus is read where it is; the index goes to tmp
        tok_dir = a.tokenizer
        if tok_dir is None:
            tok_dir = str(Path(tmp) / "tok")
            lines = sample_lines(source.iter_texts(a.lang, "train"), 50_000, seed=0)
            train_tokenizer(iter(lines), 8000).save_pretrained(tok_dir)
        source.documents(a.lang)  # the document index is built once, before any timing
        print(f"processor: {cpu_model()}; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
              flush=True)
        runs: dict[int, list[float]] = {n: [] for n in a.workers}
        digests: dict[int, str] = {}
        for r in range(a.repeats):
            for n in a.workers:
                spec = TokensSpec(config={}, lang=a.lang, tokenizer_dir=tok_dir, data=data,
                                  cache=str(Path(tmp) / "cache"), max_tokens=None, seed=0,
                                  tokens=TokensConfig(workers=n, shard_mb=a.shard_mb))
                out = Path(tmp) / f"w{n}-r{r}"
                t0 = time.perf_counter()
                run(Task(id=f"tokens/w{n}", stage="tokens", name=f"tokens-{a.lang}", dir=str(out), deps=(), spec=spec))
                dt = time.perf_counter() - t0
                stream = open_stream(out / "train.bin", 8000)
                digests[n] = hashlib.sha256(memoryview(stream[0:len(stream)])).hexdigest()
                runs[n].append(len(stream) / dt)
                busy = sum(s["seconds"] for s in read_json(out / "train" / "manifest.json")["shards"])
                print(f"round {r + 1}, workers {n}: {len(stream):,} tokens in {dt:.1f} s: {runs[n][-1]:,.0f} tokens/s "
                      f"(wall clock, start-up included); {len(stream) / busy:,.0f} tokens/s per worker while "
                      f"tokenizing", flush=True)
                del stream
                shutil.rmtree(out)
        rates = {n: statistics.median(v) for n, v in runs.items()}
        for n, v in runs.items():
            print(f"workers {n}: median {rates[n]:,.0f} tokens/s, {rates[n] / n:,.0f} tokens/s per worker; runs: "
                  f"{', '.join(f'{x:,.0f}' for x in v)}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if len(set(digests.values())) != 1:
            print(f"error: the streams differ between worker counts: {digests}", file=sys.stderr)
            return 1
    if 1 in rates and 2 in rates:
        print(f"ratio: {rates[2] / rates[1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
