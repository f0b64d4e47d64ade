"""Does the finetuning pool cache change any cell? The token ids every cell trains on, before and after it.

    DS_CACHE=... python scripts/check_pool_cache.py TOKENIZER_DIR [TOKENIZER_DIR ...] [--pair en-de] [--df 1000 8000]

Before the cache (main `e3f40bd`), a cell selected its Df rows of the pool (`nested_subset(pool, Df, seed)`) and
tokenized them in one `encode_pairs` call; now every cell of a task takes them from the pool encoded once
(`seq2seq.EncodedPool`, in chunks). The rest of finetuning and all of evaluation read those ids and nothing else of
the pool, so equal ids for every (Df, seed) mean equal cells. For each tokenizer (e.g. the default scale's 8k and
the desk scales' 4k, from their `artifacts/tokenizer/tok-*/tokenizer`), with the config's encoding settings: the
whole pool in the old way (one call) against `pool.take` of every index, and each (Df, seed) asked in the old way
against `pool.take(nested_subset(...))`. Prints one line per check and exits 1 on the first difference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizers", nargs="+")
    ap.add_argument("--pair", default="en-de")
    ap.add_argument("--df", type=int, nargs="+", default=[1000, 2000, 8000, 16000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--cache", default=os.environ.get("DS_CACHE", ".cache"))
    a = ap.parse_args()

    from hydra import compose, initialize_config_dir

    from pipeline.config import load_config
    from pipeline.finetune import nested_subset
    from pipeline.seq2seq import EncodedPool, encode_pairs
    from pipeline.sources import get_source
    from pipeline.tokenizer import load_tokenizer

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = load_config(compose("config", overrides=["+sweep=en_de", f"paths.cache={a.cache}"]))
    f = cfg.finetune
    src, tgt = a.pair.split("-")
    enc = dict(src=src, tgt=tgt, prefix=f.task_prefix, max_src=f.max_source_length, max_tgt=f.max_target_length)
    source = get_source(cfg.data, Path(a.cache))
    rows_all = source.parallel(a.pair, "train")
    print(f"{a.pair} pool: {len(rows_all):,} pairs; encoding {enc}", flush=True)
    for tok_dir in a.tokenizers:
        tok = load_tokenizer(tok_dir)
        with tempfile.TemporaryDirectory() as tmp:  # a fresh cache: the pool is encoded here, by today's code
            pool = EncodedPool.get(source, a.pair, "train", tok, Path(tmp), **enc)
            old = encode_pairs(tok, [r["translation"] for r in rows_all], **enc)
            new = pool.take(np.arange(len(pool)))
            same = old == new
            print(f"{tok_dir} (vocabulary {len(tok):,}): whole pool, {len(pool):,} pairs: "
                  f"{'identical' if same else 'DIFFERENT'}", flush=True)
            if not same:
                return 1
            for df in a.df:
                for seed in a.seeds:
                    idx = nested_subset(len(rows_all), df, seed)
                    old = encode_pairs(tok, [r["translation"] for r in rows_all.select(idx)], **enc)
                    same = old == pool.take(idx)
                    print(f"  Df {df:,} seed {seed}: {'identical' if same else 'DIFFERENT'}", flush=True)
                    if not same:
                        return 1
    print("every cell's training ids are the same with the pool cache as without it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
