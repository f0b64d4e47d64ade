"""Pretraining throughput in fp32 and in bf16 autocast: our loop (pipeline.pretrain.run) and transformers.Seq2SeqTrainer.

    DS_CACHE=... python scripts/bench_train.py [--steps 60] [--repeats 3] [--no-compile] [--no-trainer] [scale=desk ...]

Both sides train the same model (the scale's preset, built from the same init checkpoint), on the same packed
span-corruption batches (the mixture sampler's rows, corrupted by pipeline.span_corruption: in our loop's
step, in the Trainer's data collator), with the same optimizer (AdamW, the config's lr, betas, clipping,
constant schedule with warmup), at the same precision: each of fp32 and bf16 autocast (`bf16=True` for the
Trainer; our loop's dtype forced). Our loop's tokens/s is its own, logged every 10 steps from the second window on
(model loading, the rung's evaluation and its checkpoint left out); the Trainer's is `trainer.train()`'s wall
time. The sides and precisions run in turn, `--repeats` times, alternating, so load elsewhere hits all of them;
the median counts. Our loop also runs compiled in bf16 (`pretrain.compile=true`, the A/B of torch.compile; `--no-compile`
leaves it out).

Prints tokens/s (encoder + decoder tokens) of each, model FLOPs per token (pipeline.model.flops_per_token), the
matmul peak in each precision and the fraction of it reached (MFU), what `dtype: auto` chooses on this machine
(pipeline.precision's probe), the eager bf16/fp32 ratio, and last `bf16/fp32 step ratio: X`: our loop's bf16
tokens/s as the pipeline runs it at this scale (its `pretrain.compile`, pipeline.precision.resolve_compile: the desk
scales' `auto` compiles bf16 on a CPU) over its fp32 ones (eager, as auto runs fp32); on a processor where `auto` keeps fp32 the line
says so and why.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


CUDA = torch.cuda.is_available()


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10) -> float:
    """The FLOP/s MFU is taken against: the GPU's dense bf16 peak, or on a CPU a large torch.mm in `dtype` with
    every intra-op thread, best of `reps`."""
    if CUDA:
        from pipeline.training import peak_flops

        return peak_flops(torch.device("cuda")) or float("nan")
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
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


def run_ours(task, steps: int, out: Path, dtype: str, compile: bool = False) -> float:
    """Our loop's tokens/s (encoder + decoder tokens) over its logged windows after the first (warm-up)."""
    from pipeline.pretrain import run
    from pipeline.task import typed

    spec = task.spec
    tokens_per_step = spec["pretrain"]["batch_size"] * spec["raw_length"]
    t = dataclasses.replace(task, dir=str(out), spec={
        **spec, "dp_ladder": [steps * tokens_per_step], "dtype": dtype,
        "pretrain": {**spec["pretrain"], "eval_sequences": 8, "log_every": LOG_EVERY, "dtype": dtype,
                     "compile": compile}})
    run(typed(t))  # the spec as pipeline.task gives it
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][1:]
    if not rates:
        raise SystemExit(f"--steps {steps} leaves no window after the first {LOG_EVERY} steps: take more")
    return float(np.mean(rates))


LOG_EVERY = 10


def run_trainer(task, steps: int, out: Path, dtype: str) -> float:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, T5ForConditionalGeneration

    from pipeline.mixture import MixtureSampler, mixture_counts
    from pipeline.span_corruption import corrupt_batch
    from pipeline.study import Mixture
    from pipeline.vocab import load_tokenizer, sentinel_ids

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
        bf16=dtype == "bf16",  # autocast, as our loop's
        disable_tqdm=True, dataloader_num_workers=0, seed=seed, remove_unused_columns=False)
    trainer = Sequential(model=model, args=args, train_dataset=Rows(), data_collator=collator)
    t0 = time.perf_counter()
    trainer.train()
    I, T = cfg["inputs_length"], spec["targets_length"]  # noqa: E741
    return steps * B * (I + T) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="leave out our loop with torch.compile in bf16")
    ap.add_argument("--no-trainer", action="store_true", help="our loop only")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides (default: the cpu scale)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from pipeline.model import flops_per_token, load_preset
    from pipeline.precision import ProbeShape, cpu_model, describe, resolve_compile, resolve_dtype

    plan = build_plan(a.overrides)
    task = next(t for t in plan.tasks if t.stage == "pretrain")
    spec, cfg = task.spec, task.spec["pretrain"]
    from pipeline.vocab import load_tokenizer

    vocab = len(load_tokenizer(spec["tokenizer_dir"]))
    preset = load_preset(spec["model"])
    I, T = cfg["inputs_length"], spec["targets_length"]  # noqa: E741
    fpt = flops_per_token(preset, vocab, I, T)["per_token"]
    auto, info = resolve_dtype("auto", "cuda" if CUDA else "cpu", ProbeShape(preset.d_model, preset.d_ff, vocab))

    sides = [("ours", d) for d in ("fp32", "bf16")] + ([] if a.no_trainer else [("trainer", d) for d in ("fp32", "bf16")])
    sides += [] if a.no_compile else [("ours+compile", "bf16")]
    peaks = {d: matmul_peak(dt) for d, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    tps: dict[tuple[str, str], list[float]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):  # alternating: every side once per round
            for side, d in sides:
                out = Path(tmp) / f"{side}-{d}-{r}"
                tps[(side, d)].append(run_trainer(task, a.steps, out, d) if side == "trainer"
                                      else run_ours(task, a.steps, out, d, compile=side == "ours+compile"))
    peaks = {d: max(p, matmul_peak(torch.float32 if d == "fp32" else torch.bfloat16)) for d, p in peaks.items()}
    med = {s: float(np.median(v)) for s, v in tps.items()}

    print(f"date: {datetime.date.today()}  machine: {cpu_model()}, torch {torch.__version__}, "
          + (torch.cuda.get_device_name() if CUDA else f"{torch.get_num_threads()} threads")
          + f", load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"model: {preset.name} (vocab {vocab}), batch {cfg['batch_size']} x ({I} inputs + {T} targets), "
          f"{a.steps} steps x {a.repeats} alternating repeats (median counts)")
    print(f"model FLOPs per token: {fpt:,.0f} (training, encoder-decoder formula incl. attention)")
    print("peak: " + ", ".join(f"{d} {p / 1e9:,.1f} GFLOP/s" for d, p in peaks.items())
          + (" (the GPU's dense bf16)" if CUDA else " (torch.mm 2048^2)"))
    names = {"ours": "ours (pipeline.pretrain.run)", "trainer": "transformers.Seq2SeqTrainer",
             "ours+compile": "ours + torch.compile"}
    for (side, d), v in med.items():
        print(f"{names[side]} {d}: {v:,.0f} tokens/s  ({v * fpt / peaks[d]:.1%} of the {d} matmul peak)  "
              f"runs: {json.dumps([round(x) for x in tps[(side, d)]])} tokens/s")
    if not a.no_trainer:
        for d in ("fp32", "bf16"):
            print(f"ours/Trainer {d}: {med[('ours', d)] / med[('trainer', d)]:.2f}")
    if not a.no_compile:
        print(f"torch.compile/eager bf16: {med[('ours+compile', 'bf16')] / med[('ours', 'bf16')]:.2f}")
    print(f"dtype auto here: {describe(info)}")
    compiled, why = resolve_compile(cfg["compile"], "bf16", "cuda" if CUDA else "cpu")
    print(f"pretrain.compile {cfg['compile'] if cfg['compile'] is not None else 'auto'} in bf16 here: "
          f"{'on' if compiled else 'off'} ({why})")
    eager = med[("ours", "bf16")] / med[("ours", "fp32")]
    print(f"bf16/fp32 eager step ratio: {eager:.2f}")
    bf16 = ("ours+compile", "bf16") if compiled and not a.no_compile else ("ours", "bf16")
    ratio = med[bf16] / med[("ours", "fp32")]
    print(f"bf16/fp32 step ratio: {ratio:.2f}"
          + (" (bf16 compiled, as this scale's pretrain.compile runs it; fp32 eager)" if bf16[0] == "ours+compile"
             else "")
          + ("" if auto == "bf16" else f" (dtype: auto keeps fp32 on this processor: {info['rule']})"))


if __name__ == "__main__":
    main()
