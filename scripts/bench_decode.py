"""Greedy decoding on the CPU in bf16 against fp32: the evaluate stage's own generation, same model, same sentences.

    DS_CACHE=... python scripts/bench_decode.py --checkpoint DIR [--repeats 3] [--sentences N] [scale=desk2 ...]

Decides issue 27's last question: should a bf16 cell be decoded in bf16 (as it is trained) or in fp32? Both sides
run `pipeline.evaluate.generate_ids` on a finetuned `best/` checkpoint (loaded as the stage loads it), on the
evaluate stage's test sentences with its batch size and per-source caps, one under bf16 autocast, one without.
After an untimed warm-up of each, the sides alternate (fp32 first in odd rounds, bf16 first in even ones); the median of `--repeats` runs counts.
Quality: BLEU, length ratio and runaway share of each side, the hypotheses they share, and sacreBLEU's paired
bootstrap of bf16 against fp32 (the test of issue 27's quality check). The load average is printed before and
after: a figure taken on a busy machine is not one to record. Last line: `ratio: X` (bf16 / fp32 sentences/s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a finetuned best/ directory (its tokenizer beside it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=None, help="the first N test sentences (default: the stage's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: as a sweep's worker runs it)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: scale=desk2)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(a.threads)
    from bench_train import build_plan  # noqa: I001 - the plan of the real config

    from pipeline.evaluate import decode, generate_ids, measure, runaway, score, test_rows
    from pipeline.model import load_model
    from pipeline.precision import cpu_bf16_flags, cpu_model
    from pipeline.seq2seq import encode_pairs, pad_batch
    from pipeline.significance import paired_bleu
    from pipeline.sources import get_source
    from pipeline.task import typed
    from pipeline.vocab import load_tokenizer

    plan = build_plan(a.overrides or ["scale=desk2"], build=False)
    spec = typed(next(t for t in plan.tasks if t.stage == "evaluate")).spec
    cfg = spec.evaluate
    best = Path(a.checkpoint)
    tok = load_tokenizer(best)
    model = load_model(best).eval()
    rows = test_rows(get_source(spec.data, Path(spec.cache)), spec.pair, cfg.test_size, cfg.test_splits[0])
    rows = rows[: a.sentences] if a.sentences else rows
    src, _ = encode_pairs(tok, rows, spec.src, spec.tgt, spec.task_prefix, spec.max_source_length, 1024)
    refs = [r[spec.tgt] for r in rows]
    caps = [cfg.cap(len(s)) for s in src]
    cpu = torch.device("cpu")
    autocasts = {"fp32": contextlib.nullcontext,
                 "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}

    def run(dtype: str) -> tuple[float, list[list[int]]]:
        t0 = time.perf_counter()
        ids = generate_ids(model, src, tok.pad_token_id, tok.eos_token_id, cfg.batch_size, caps, cfg.num_beams,
                           cpu, autocasts[dtype], cfg.length_penalty)
        return time.perf_counter() - t0, ids

    for dtype in autocasts:  # warm-up, untimed: each precision's kernels are created on first use
        generate_ids(model, src[:8], tok.pad_token_id, tok.eos_token_id, 8, caps[:8], cfg.num_beams, cpu,
                     autocasts[dtype], cfg.length_penalty)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    ids: dict[str, list[list[int]]] = {}
    for r in range(a.repeats):
        for dtype in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            dt, ids[dtype] = run(dtype)
            times[dtype].append(dt)
            print(f"round {r + 1} {dtype}: {dt:.1f} s", flush=True)
    load_after = os.getloadavg()

    hyps = {k: decode(tok, pad_batch(v, tok.pad_token_id)) for k, v in ids.items()}
    sps = {k: len(src) / statistics.median(v) for k, v in times.items()}
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  machine: {cpu_model()} "
          f"(flags: {', '.join(cpu_bf16_flags()) or 'no bf16'}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}  "
          f"after: {'/'.join(f'{x:.2f}' for x in load_after)}")
    print(f"model: {best}  test sentences: {len(src)}  batch {cfg.batch_size}  num_beams {cfg.num_beams}  "
          f"caps: min({cfg.max_new_tokens}, {cfg.max_len_a}·source + {cfg.max_len_b})")
    for k in ("fp32", "bf16"):
        s = score(hyps[k], refs, cfg.bleu_tokenize) | measure([r[spec.src] for r in rows], hyps[k], refs)
        ran = sum(runaway(h, ref, tok.eos_token_id not in g, cfg.runaway_ratio, cfg.runaway_repeats)
                  for h, ref, g in zip(hyps[k], refs, ids[k]))
        print(f"{k}: {sps[k]:,.1f} sentences/s (median of {[round(x, 1) for x in times[k]]} s)  "
              f"BLEU {s['bleu']:.2f}  chrF {s['chrf']:.2f}  length ratio {s['sys_len'] / s['ref_len']:.3f}  "
              f"runaway {ran} ({ran / len(src):.1%})")
    same = sum(x == y for x, y in zip(ids["fp32"], ids["bf16"]))
    c = paired_bleu(hyps["fp32"], hyps["bf16"], refs, cfg.bleu_tokenize)
    print(f"identical hypotheses: {same} of {len(src)}")
    print(f"paired bootstrap bf16 - fp32: {c.delta:+.2f} BLEU [{c.delta_lo:+.2f}, {c.delta_hi:+.2f}], p {c.p_value:.3f} "
          f"({c.resamples} resamples)")
    print(f"ratio: {sps['bf16'] / sps['fp32']:.2f}")


if __name__ == "__main__":
    main()
