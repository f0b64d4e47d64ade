"""Pretraining throughput: our loop (pipeline.pretrain.run) vs transformers.Seq2SeqTrainer, in one run.

    DS_CACHE=... python scripts/bench_train.py [--steps 60] [--repeats 2] [scale=cpu ...Hydra overrides]

Both sides train the same model (the scale's preset, built from the same init checkpoint), on the same packed
span-corruption batches (the mixture sampler's rows, corrupted by pipeline.span_corruption: in our loop's
step, in the Trainer's data collator), with the same optimizer (AdamW, the config's lr, betas, clipping,
constant schedule with warmup), in fp32 on the CPU, in bf16 autocast on a GPU (both sides). Ours is timed on the whole `pretrain.run` call (model
loading, the rung's held-out evaluation and its checkpoint included); the Trainer's on `trainer.train()`
(no saving, no logging backends). Each side runs `--repeats` times, alternating, and its fastest run counts.

Prints tokens/s (encoder + decoder tokens) of each side, model FLOPs per token (encoder-decoder formula,
pipeline.model.flops_per_token), the peak (on a CPU measured here with a large torch.mm; on a GPU the card's
dense bf16 peak, pipeline.training.peak_flops) and the fraction of it each side reaches (MFU); the last line
is `ratio: X` (ours / Trainer tokens/s).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


CUDA = torch.cuda.is_available()


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """The FLOP/s MFU is taken against: the GPU's dense bf16 peak, or on a CPU a large fp32 torch.mm with
    every intra-op thread, best of `reps`."""
    if CUDA:
        from pipeline.training import peak_flops

        return peak_flops(torch.device("cuda")) or float("nan")
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def build_plan(overrides: list[str], build: bool = True):
    """The en-de plan of the real config; with `build`, its tokenizer, token streams and init built (or found)."""
    from hydra import compose, initialize_config_dir

    from pipeline.run import prepare
    from pipeline.task import execute

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=en_de", *overrides])
    _, plan = prepare(cfg)
    for t in plan.tasks:
        if build and t.stage in ("tokenizer", "tokens", "init"):
            execute(t)
    return plan


def run_ours(task, steps: int, out: Path) -> float:
    from pipeline.pretrain import run
    from pipeline.task import typed

    spec = task.spec
    tokens_per_step = spec["pretrain"]["batch_size"] * spec["raw_length"]
    t = dataclasses.replace(task, dir=str(out), spec={**spec, "dp_ladder": [steps * tokens_per_step],
                                                      "pretrain": {**spec["pretrain"], "eval_sequences": 8}})
    t0 = time.perf_counter()
    run(typed(t))  # the spec as pipeline.task gives it
    return time.perf_counter() - t0


def run_trainer(task, steps: int, out: Path) -> float:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5ForConditionalGeneration

    from pipeline.mixture import MixtureSampler, mixture_counts
    from pipeline.span_corruption import corrupt_batch
    from pipeline.study import Mixture
    from pipeline.tokenizer import load_tokenizer, sentinel_ids

    spec, cfg = task.spec, task.spec["pretrain"]
    tok = load_tokenizer(spec["tokenizer_dir"])
    B = cfg["batch_size"]
    counts = mixture_counts(Mixture("m", tuple(sorted(spec["mixture"].items()))), B)
    sampler = MixtureSampler.from_dirs(spec["tokens_dirs"], counts, spec["raw_length"], len(tok))
    batches = [sampler.batch(s) for s in range(steps)]
    raw = np.concatenate([r for r, _ in batches])
    idx = np.concatenate([i for _, i in batches])
    sentinels, eos, seed = sentinel_ids(tok), tok.eos_token_id, spec["seed"]

    class Rows(torch.utils.data.Dataset):  # the step's raw rows, in the sampler's order
        def __len__(self):
            return len(raw)

        def __getitem__(self, i):
            return {"raw": raw[i], "idx": idx[i]}

    def collator(rows):  # span corruption where HF's T5 recipe puts it: in the collator
        b = corrupt_batch(np.stack([r["raw"] for r in rows]), np.array([r["idx"] for r in rows]), seed, sentinels, eos,
                          noise_density=cfg["noise_density"], mean_noise_span_length=cfg["mean_noise_span_length"])
        return {"input_ids": torch.as_tensor(b["input_ids"]), "labels": torch.as_tensor(b["labels"])}

    class Sequential(Seq2SeqTrainer):
        def _get_train_sampler(self, *args, **kwargs):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    model = T5ForConditionalGeneration.from_pretrained(spec["init_dir"] + "/model")
    args = Seq2SeqTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=B, max_steps=steps, learning_rate=cfg["lr"],
        adam_beta1=cfg["betas"][0], adam_beta2=cfg["betas"][1], weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["grad_clip"], lr_scheduler_type="constant_with_warmup", warmup_steps=cfg["warmup_steps"],
        optim="adamw_torch_fused", logging_steps=cfg["log_every"], save_strategy="no", report_to=[], use_cpu=not CUDA,
        bf16=CUDA,  # autocast, as our loop's dtype=auto on a GPU
        disable_tqdm=True, dataloader_num_workers=0, seed=seed, remove_unused_columns=False)
    trainer = Sequential(model=model, args=args, train_dataset=Rows(), data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: the cpu scale)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pipeline.model import flops_per_token, load_preset

    plan = build_plan(a.overrides)
    task = next(t for t in plan.tasks if t.stage == "pretrain")
    spec, cfg = task.spec, task.spec["pretrain"]
    from pipeline.tokenizer import load_tokenizer

    vocab = len(load_tokenizer(spec["tokenizer_dir"]))
    preset = load_preset(spec["model"])
    I, T = cfg["inputs_length"], spec["targets_length"]  # noqa: E741
    tokens = a.steps * cfg["batch_size"] * (I + T)
    fpt = flops_per_token(preset, vocab, I, T)["per_token"]

    peak = matmul_peak()
    times: dict[str, list[float]] = {"ours": [], "trainer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            times["ours"].append(run_ours(task, a.steps, Path(tmp) / f"ours{r}"))
            times["trainer"].append(run_trainer(task, a.steps, Path(tmp) / f"hf{r}"))
    peak = max(peak, matmul_peak())  # before and after: the machine may be shared
    tps = {k: tokens / min(v) for k, v in times.items()}

    print(f"date: {datetime.date.today()}  machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, "
          + (f"{torch.cuda.get_device_name()}, bf16 autocast" if CUDA else f"{torch.get_num_threads()} threads, fp32"))
    print(f"model: {preset.name} (vocab {vocab}), batch {cfg['batch_size']} x ({I} inputs + {T} targets), "
          f"{a.steps} steps x {a.repeats} repeats (best counts)")
    print(f"model FLOPs per token: {fpt:,.0f} (training, encoder-decoder formula incl. attention)")
    print(f"peak: {peak / 1e9:,.1f} GFLOP/s " + ("(the GPU's dense bf16)" if CUDA else "(torch.mm 2048^2 fp32)"))
    for k, name in (("ours", "ours (pipeline.pretrain.run)"), ("trainer", "transformers.Seq2SeqTrainer")):
        print(f"{name}: {tps[k]:,.0f} tokens/s  ({tps[k] * fpt / peak:.1%} of the matmul peak)  "
              f"runs: {json.dumps([round(x, 2) for x in times[k]])} s")
    print(f"ratio: {tps['ours'] / tps['trainer']:.2f}")


if __name__ == "__main__":
    main()
