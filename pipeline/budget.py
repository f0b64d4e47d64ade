"""What a sweep costs before anything runs: FLOPs, time on this device, GPU-hours on an H100, disk."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s (SXM), the MFU reference of the paper-scale estimate
ASSUMED_MFU = {"cuda": 0.40, "cpu": 0.25}  # what our loop reaches (docs/benchmarks.md); stated in the printout


def measured_peak(device: str | None = None) -> tuple[str, float]:
    """The matmul peak of this machine in FLOP/s (fp32 on CPU, bf16 on CUDA), measured in a fraction of a second."""
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    n = 4096 if dev == "cuda" else 1024
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(2):
        a @ b
    if dev == "cuda":
        torch.cuda.synchronize()
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.25:
        a @ b
        reps += 1
    if dev == "cuda":
        torch.cuda.synchronize()
    return dev, 2 * n**3 * reps / (time.perf_counter() - t0)


def checkpoint_bytes(summary: dict[str, Any], n_rungs: int) -> int:
    """Weights of every rung (fp32) + the latest optimizer state per run (AdamW: two moments) + one best
    checkpoint per finetuning cell."""
    total = 0
    for m in summary["models"].values():
        params = m["params"]["total"]
        runs = len(m["runs"])
        total += runs * (n_rungs * 4 * params + 3 * 4 * params) + 4 * params  # + the init checkpoint
        total += summary["n_finetune"] // max(1, len(summary["models"])) * 4 * params
    return total


def check_disk(path: Path, need: int) -> None:
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ConfigError("paths.artifacts",
                          f"the sweep needs about {human_bytes(need)} of checkpoints but {probe} has {human_bytes(free)} free")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1024 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PB"


def human_count(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def human_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def format_plan(plan, states: dict[str, int] | None = None, peak: tuple[str, float] | None = None) -> str:
    """The plan as a researcher reads it: grid, alignment, models, budgets, time, disk, progress."""
    s = plan.summary
    lines = [f"sweep {plan.sweep} · scale {s['scale']} ({s['scale_description']}) · data {s['data_source']}", ""]
    lines.append("grid")
    n_rungs = len(s["dp_ladder"])
    for t in s["tasks"]:
        mixes = ", ".join(f"{m['name']} {m['weights']} A={m['alignment']:.2f}" for m in t["mixtures"])
        lines.append(f"  task {t['pair']}: mixtures {mixes}")
    lines.append(f"  Dp ladder (raw text tokens): 0 (no pretraining) + {', '.join(human_count(x) for x in s['dp_ladder'])}")
    lines.append(f"  Df ladder (training pairs): {', '.join(f'{x:,}' for x in s['df_ladder'])}")
    lines.append(f"  seeds {s['seeds']} · methods {s['methods']} · learning rates {s['lrs']}")
    lines.append(f"  = {s['n_finetune']} finetuning runs, {s['n_cells']} result cells "
                 f"(the Dp = 0 baseline is shared by every mixture of a task)")
    lines.append("")
    lines.append(f"pretraining: {s['tokens_per_step']:,} raw tokens a step "
                 f"(packed sequences of {s['raw_length']} raw tokens -> {s['inputs_length']} span-corrupted inputs, "
                 f"{s['targets_length']} targets)")
    for name, m in s["models"].items():
        p = m["params"]
        lines.append(f"  model {name}: {human_count(p['total'])} parameters ({human_count(p['non_embedding'])} non-embedding), "
                     f"{human_count(m['flops_per_example'])} FLOPs a training sequence")
        for r in m["runs"]:
            lines.append(f"    {r['mixture']:<12} {r['steps']:>10,} steps to Dp {human_count(r['dp_max'])}  "
                         f"{r['flops']:.3g} FLOPs")
    lines.append("  tokens each language must supply without repetition: "
                 + ", ".join(f"{k} {human_count(v)}" for k, v in s["tokens_needed"].items() if v))
    known = {k: v for k, v in s["text_stats"].items() if v}
    if known:
        lines.append("  unique text available: " + ", ".join(
            f"{k} {human_count(v['words'])} words" for k, v in known.items() if v.get("words")))
    lines.append("")
    total = s["pretrain_flops"] + s["finetune_flops_max"]
    lines.append(f"compute: pretraining {s['pretrain_flops']:.3g} FLOPs, finetuning at most {s['finetune_flops_max']:.3g} "
                 f"(early stopping cuts it), total <= {total:.3g}")
    if peak:
        dev, flops = peak
        mfu = ASSUMED_MFU["cuda" if dev == "cuda" else "cpu"]
        lines.append(f"  on this {dev} (measured matmul peak {flops / 1e12:.2f} TFLOP/s, at {mfu:.0%} of it): "
                     f"about {human_seconds(total / (flops * mfu))} of sequential training")
    gpu_h = total / (H100_BF16_PEAK * ASSUMED_MFU["cuda"]) / 3600
    lines.append(f"  on H100s (bf16, {ASSUMED_MFU['cuda']:.0%} MFU): about {gpu_h:,.1f} GPU-hours")
    lines.append(f"disk: about {human_bytes(checkpoint_bytes(s, n_rungs))} of checkpoints")
    if states:
        lines.append("")
        lines.append("tasks: " + ", ".join(f"{v} {k}" for k, v in states.items()))
    return "\n".join(lines)
