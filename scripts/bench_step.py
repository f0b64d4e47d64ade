"""Training-step throughput of one model through the runtime at world size 1, with and without torch.compile.

    python scripts/bench_step.py                      # t5_base, 16 x 512 inputs, bf16 on a GPU (the MFU the plan uses)
    python scripts/bench_step.py --small              # t5_tiny, 8 x 64, on a CPU in seconds (tests)

The step is pretraining's: `distributed.setup_runtime` (bf16 on a GPU) and `distributed.wrap_model` at world size 1,
our fused loss (`model.Seq2SeqLoss`), AdamW from `training.make_optimizer`, the runtime's global gradient clipping, on random span-corruption-shaped batches (inputs_length and T5's
targets length for it). `--warmup` steps (compilation included) are not timed, then `--steps` are. Prints per
variant tokens/s (encoder + decoder tokens) and MFU (model FLOPs, pipeline.model.flops_per_token, over the
card's dense bf16 peak; on a CPU over a matmul peak measured in the step's dtype), and the line to paste into
docs/benchmarks.md's "Measured MFU" table, which the planner's GPU-hours then use (pipeline.budget.measured_mfu).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.distributed import clip_grad_norm, setup_runtime, wrap_model  # noqa: E402
from pipeline.model import PRESETS, Seq2SeqLoss, build_model, flops_per_token  # noqa: E402
from pipeline.span_corruption import compute_lengths  # noqa: E402
from pipeline.training import make_optimizer, peak_flops  # noqa: E402

VOCAB = 32128


def bench(model_name: str, micro: int, inputs: int, steps: int, warmup: int, compile_: bool) -> dict:
    rt = setup_runtime("auto", "none")
    preset = PRESETS[model_name]
    _, targets = compute_lengths(inputs, 0.15, 3.0)
    model = build_model(preset, VOCAB, seed=0).to(rt.device).train()
    from transformers.models.t5.modeling_t5 import T5Block

    loss_fn = wrap_model(Seq2SeqLoss(model), rt, "none", T5Block)
    opt = make_optimizer(model.parameters(), "adamw", 1e-3, (0.9, 0.98))
    step_fn = torch.compile(loss_fn) if compile_ else loss_fn
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(2, VOCAB, (micro, inputs), generator=g).to(rt.device)
    labels = torch.randint(2, VOCAB, (micro, targets), generator=g).to(rt.device)

    def step() -> torch.Tensor:
        with rt.autocast():
            loss = step_fn(input_ids=ids, labels=labels).loss
        loss.backward()
        clip_grad_norm(loss_fn, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if rt.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    secs = time.perf_counter() - t0
    flops = flops_per_token(preset, VOCAB, inputs, targets)["per_example"]
    if rt.device.type == "cuda":
        peak, device = peak_flops(rt.device), torch.cuda.get_device_name(rt.device)
    else:
        from pipeline.budget import measured_peak

        peak, device = measured_peak("cpu", rt.dtype)[1], "cpu"
    ex_s = micro * steps / secs
    return {"model": model_name, "micro_batch": micro, "inputs_length": inputs, "targets_length": targets,
            "dtype": rt.dtype, "compile": compile_, "device": device, "steps": steps, "warmup_s": round(warm_s, 1),
            "step_s": secs / steps, "tokens_per_s": ex_s * (inputs + targets),
            "mfu": ex_s * flops / peak if peak else None, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="t5_tiny at 8 x 64 inputs, 3 steps, no compile (a CPU)")
    ap.add_argument("--model", default="t5_base")
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--inputs", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", choices=("both", "on", "off"), default="both")
    ap.add_argument("--json", type=Path, help="write the results here too")
    a = ap.parse_args(argv)
    if a.small:
        a.model, a.micro, a.inputs, a.steps, a.warmup, a.compile = "t5_tiny", 8, 64, 3, 1, "off"
    variants = {"both": (False, True), "on": (True,), "off": (False,)}[a.compile]
    rows = []
    for c in variants:
        r = bench(a.model, a.micro, a.inputs, a.steps, a.warmup, c)
        rows.append(r)
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"bench_step {r['model']} {r['micro_batch']}x{r['inputs_length']} {r['dtype']} "
              f"compile={'on' if c else 'off'} on {r['device']}: {r['tokens_per_s']:,.0f} tokens/s, MFU {mfu}, "
              f"{r['step_s'] * 1000:.1f} ms a step (warm-up {r['warmup_s']} s)", flush=True)
    for r in rows:  # the row docs/benchmarks.md's "Measured MFU" table takes
        if r["mfu"] is not None:
            print(f"| {r['device']} | {r['model']} | {r['micro_batch']} x {r['inputs_length']} | {r['dtype']} | "
                  f"{'on' if r['compile'] else 'off'} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} |")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
