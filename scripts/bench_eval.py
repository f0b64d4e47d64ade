"""Evaluation throughput: our generation (pipeline.evaluate) vs Seq2SeqTrainer.predict(predict_with_generate=True).

    DS_CACHE=... python scripts/bench_eval.py [--checkpoint DIR] [--repeats 2] [--dtype fp32|bf16] [scale=cpu ...]

Same model (a finetuned `best/` checkpoint: --checkpoint, else the plan's first finished finetune cell, else
the Dp = 0, smallest-Df cell finetuned here for 40 steps), same test sentences (the evaluate stage's sample,
tokenized once with the task prefix), greedy decoding with the config's `max_new_tokens` and batch size,
fp32 on the CPU, or with `--dtype bf16` both sides under the same bf16 autocast (around `predict` for the Trainer,
whose `generate` runs outside its own autocast). Ours: length-sorted batches through `generate_ids`, decoded with `decode`. The Trainer:
`predict` on the same ids in dataset order, padded by DataCollatorWithPadding (no labels: nothing but generation). Both sides' hypotheses are
scored with sacreBLEU; in fp32 the script fails unless the two BLEU scores are identical (in bf16 the two
implementations round differently: it prints how many hypotheses agree). Each side runs
`--repeats` times, alternating; the fastest run counts. Last line: `ratio: X` (ours / Trainer sentences/s).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "scripts"))


def find_or_finetune(plan, checkpoint: str | None) -> tuple[Path, object]:
    from pipeline.artifacts import is_done, write_status
    from pipeline.finetune import run as finetune
    from pipeline.task import execute, typed

    evals = [t for t in plan.tasks if t.stage == "evaluate"]
    ft_of = {t.id: t for t in plan.tasks if t.stage == "finetune"}
    ev = next((t for t in evals if is_done(Path(ft_of[t.deps[0]].dir))), evals[0])
    if checkpoint:
        return Path(checkpoint), ev
    ft = ft_of[ev.deps[0]]
    if not is_done(Path(ft.dir)):
        for t in plan.tasks:
            if t.stage in ("tokenizer", "init"):
                execute(t)
        short = dataclasses.replace(ft, dir=str(ROOT / "artifacts" / "bench" / "ft-eval"),
                                    spec={**ft.spec, "finetune": {**ft.spec["finetune"], "max_steps": 40}})
        if not is_done(Path(short.dir)):
            finetune(typed(short))  # the spec as pipeline.task gives it
            write_status(Path(short.dir), "ok", started=time.time())
        ft = short
    return Path(ft.dir) / "best", ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="a finetuned best/ directory")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="both sides' precision")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: the cpu scale)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from bench_train import build_plan  # noqa: I001 - the plan of the real config
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers import T5ForConditionalGeneration

    from pipeline.config import data_config
    from pipeline.evaluate import decode, generate_ids, score, test_rows
    from pipeline.seq2seq import encode_pairs, pad_batch
    from pipeline.model import use_fused_kernels
    from pipeline.precision import cpu_model
    from pipeline.sources import get_source
    from pipeline.vocab import load_tokenizer

    plan = build_plan(a.overrides, build=a.checkpoint is None)  # a given checkpoint carries its tokenizer
    best, ev = find_or_finetune(plan, a.checkpoint)
    spec, cfg = ev.spec, ev.spec["evaluate"]
    tok = load_tokenizer(best)
    model = T5ForConditionalGeneration.from_pretrained(str(best)).eval()
    rows = test_rows(get_source(data_config(spec["data"]), Path(spec["cache"])), spec["pair"], cfg["test_size"])
    src, _ = encode_pairs(tok, rows, spec["src"], spec["tgt"], spec["task_prefix"], spec["max_source_length"], 1024)
    refs = [r[spec["tgt"]] for r in rows]
    B, max_new = cfg["batch_size"], cfg["max_new_tokens"]
    cpu = torch.device("cpu")

    fused = use_fused_kernels(copy.deepcopy(model))  # as pipeline.evaluate loads it

    bf16 = a.dtype == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def ours() -> list[str]:
        ids = generate_ids(fused, src, tok.pad_token_id, tok.eos_token_id, B, max_new, 1, cpu, autocast)
        return decode(tok, pad_batch(ids, tok.pad_token_id))

    with tempfile.TemporaryDirectory() as tmp:
        args = Seq2SeqTrainingArguments(output_dir=tmp, per_device_eval_batch_size=B, predict_with_generate=True,
                                        use_cpu=True, report_to=[], disable_tqdm=True, dataloader_num_workers=0)
        trainer = Seq2SeqTrainer(model=model, args=args, data_collator=DataCollatorWithPadding(tok),
                                 processing_class=tok)
        ds = Dataset.from_dict({"input_ids": src})

        def hf() -> list[str]:
            with autocast():  # Seq2SeqTrainer calls generate outside its own autocast: the same context as ours
                out = trainer.predict(ds, max_new_tokens=max_new, num_beams=1, do_sample=False)
            return decode(tok, out.predictions)  # padded with -100: decode turns it into pad first

        times: dict[str, list[float]] = {"ours": [], "trainer": []}
        hyps = {}
        for _ in range(a.repeats):
            for name, fn in (("ours", ours), ("trainer", hf)):
                t0 = time.perf_counter()
                hyps[name] = fn()
                times[name].append(time.perf_counter() - t0)
    bleu = {k: score(h, refs, cfg["bleu_tokenize"]) for k, h in hyps.items()}
    sps = {k: len(src) / min(v) for k, v in times.items()}
    print(f"date: {datetime.date.today()}  machine: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {a.dtype}")
    print(f"model: {best}  test sentences: {len(src)}  batch {B}  greedy, max_new_tokens {max_new}")
    for k, name in (("ours", "ours (pipeline.evaluate)"), ("trainer", "Seq2SeqTrainer.predict")):
        print(f"{name}: {sps[k]:,.1f} sentences/s  BLEU {bleu[k]['bleu']:.4f}  runs: "
              f"{[round(x, 2) for x in times[k]]} s")
    same = sum(x == y for x, y in zip(hyps["ours"], hyps["trainer"]))
    print(f"identical hypotheses: {same} of {len(src)}; signature {bleu['ours']['bleu_signature']}")
    assert bf16 or bleu["ours"]["bleu"] == bleu["trainer"]["bleu"], "BLEU differs between the two sides"
    print(f"ratio: {sps['ours'] / sps['trainer']:.2f}")


if __name__ == "__main__":
    main()
