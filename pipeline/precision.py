"""Which precision a run trains and evaluates in: `fp32`, or bf16 autocast (master weights and optimizer state
stay fp32). `auto` is bf16 on a CUDA GPU that supports it; on a CPU it is decided by measuring, because bf16
autocast is 2-4x faster where the processor has bf16 instructions (avx512_bf16, amx_bf16) and slower where it
has not: a probe of well under a second times a step of the model's own shapes (its layers' projections and
feed-forward blocks, its output layer; forward and backward) in fp32 and under bf16 autocast, and takes bf16
when it is at least BF16_MIN_SPEEDUP times faster.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

DTYPES = ("auto", "fp32", "bf16")
# bf16 changes the numbers a little (docs/benchmarks.md: the quality check); it is taken only where it
# clearly pays. Probe ratios on processors with bf16 instructions are 2-4x, without them below 1.
BF16_MIN_SPEEDUP = 1.3
PROBE_SECONDS = 0.4  # the probe's CPU time, warm-up included (at least one warm-up and one timed step of each)
# Rows of the probe's activations: a third of a desk finetuning batch (64 x ~24 tokens). With fewer, the per-step
# costs that do not grow with the batch (casting the weights to bf16) hide the matmuls' gain.
PROBE_TOKENS = 512


@dataclass(frozen=True)
class ProbeShape:
    """The model's shapes the probe runs: `layers` blocks of the attention projections (q, k, v, o) and a gated
    feed-forward, pre-norm and residual, then the output layer and a log-softmax, as a T5 step has them."""

    d_model: int = 128
    d_ff: int = 512
    vocab: int = 4000
    layers: int = 2  # the op mix of a layer repeats: two keep the probe short and the output layer's share modest
    tokens: int = PROBE_TOKENS


def cpu_model() -> str:
    """The processor's model name as /proc/cpuinfo (and lscpu) give it, with its core count: what a benchmark
    figure names (platform.processor() says only "x86_64" on Linux)."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def cpu_bf16_flags() -> list[str]:
    """The processor's bf16 instruction flags from /proc/cpuinfo (empty where there are none or no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return sorted({w for w in line.split() if w in ("avx512_bf16", "amx_bf16", "avx_ne_convert")})
    except OSError:
        pass
    return []


def _probe_step(shape: ProbeShape, bf16: bool) -> callable:
    g = torch.Generator().manual_seed(0)
    d, ff, v, n = shape.d_model, shape.d_ff, shape.vocab, shape.tokens

    def weight(rows: int, cols: int) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=g) * cols**-0.5).requires_grad_()

    x = torch.randn(n, d, generator=g)
    blocks = [[weight(d, d) for _ in range(4)] + [weight(ff, d), weight(ff, d), weight(d, ff)]
              for _ in range(shape.layers)]
    wo = weight(v, d)
    params = [p for b in blocks for p in b] + [wo]
    F = torch.nn.functional

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            h = x
            for q, k, val, o, wi0, wi1, wff in blocks:
                a = F.rms_norm(h, (d,))
                h = h + ((a @ q.t()) + (a @ k.t()) + (a @ val.t())) @ o.t()
                a = F.rms_norm(h, (d,))
                h = h + (F.gelu(a @ wi0.t(), approximate="tanh") * (a @ wi1.t())) @ wff.t()
            loss = (F.rms_norm(h, (d,)) @ wo.t()).float().logsumexp(-1).mean()
        loss.backward()
        for p in params:
            p.grad = None

    return step


@functools.lru_cache(maxsize=8)
def probe_cpu(shape: ProbeShape = ProbeShape()) -> dict[str, Any]:
    """Seconds of one probe step (forward + backward of a feed-forward block and the output layer at the model's
    shapes) in fp32 and under bf16 autocast, and their ratio: one warm-up step each, then single steps of each in
    turn until the probe has used PROBE_SECONDS of CPU time (on an idle machine as much wall time; on a shared
    one the same number of steps); the least CPU time of each counts (what other processes do to the caches only
    ever adds time). Cached per process and shape."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    steps = {"fp32": _probe_step(shape, False), "bf16": _probe_step(shape, True)}
    for step in steps.values():
        step()  # warm-up: oneDNN picks and caches its kernels
    times: dict[str, float] = {"fp32": float("inf"), "bf16": float("inf")}
    while True:
        for name, step in steps.items():
            t0 = time.process_time()  # CPU time: on a shared machine the wall clock also counts the others' turns
            step()
            times[name] = min(times[name], time.process_time() - t0)
        if time.process_time() - cpu_start >= PROBE_SECONDS:
            break
    return {"fp32_s": times["fp32"], "bf16_s": times["bf16"], "speedup": times["fp32"] / times["bf16"],
            "probe_seconds": time.process_time() - cpu_start, "probe_wall_seconds": time.perf_counter() - t_start,
            "shape": dict(vars(shape)), "threads": torch.get_num_threads(), "cpu_flags": cpu_bf16_flags()}


def resolve_dtype(requested: str, device: torch.device | str, shape: ProbeShape | None = None) -> tuple[str, dict[str, Any]]:
    """The precision to run in ("fp32" | "bf16") and why (`info`: the rule, and on a CPU the probe's numbers).

    `fp32` and `bf16` are taken as asked. `auto`: on CUDA bf16 where the GPU supports it (never fp16: T5
    overflows in it), fp32 elsewhere; on a CPU bf16 when the probe at `shape` (the model's) is at least
    BF16_MIN_SPEEDUP times faster under bf16 autocast, else fp32."""
    if requested not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {requested!r}")
    device = torch.device(device)
    if requested != "auto":
        return requested, {"requested": requested, "dtype": requested, "rule": "forced"}
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ("bf16" if ok else "fp32"), {"requested": "auto", "dtype": "bf16" if ok else "fp32",
                                            "rule": "cuda: bf16 where supported" if ok else "cuda: this GPU has no bf16"}
    if device.type != "cpu":
        return "fp32", {"requested": "auto", "dtype": "fp32", "rule": f"{device.type}: fp32"}
    p = probe_cpu(shape or ProbeShape())
    dtype = "bf16" if p["speedup"] >= BF16_MIN_SPEEDUP else "fp32"
    why = (f"bf16 autocast {p['speedup']:.2f}x fp32 on this CPU's probe "
           f"({'>=' if dtype == 'bf16' else '<'} {BF16_MIN_SPEEDUP}x"
           + ("" if p["cpu_flags"] else ", no bf16 instructions in /proc/cpuinfo") + ")")
    return dtype, {"requested": "auto", "dtype": dtype, "rule": why, **p}


def resolve_compile(requested: bool | None, dtype: str, device: torch.device | str) -> tuple[bool, str]:
    """Whether pretraining runs its model under torch.compile, and why. `True`/`False` as asked; `None` (auto):
    on a CPU in bf16, where inductor fuses what eager bf16 leaves as separate casts and fp32 element-wise ops
    (docs/benchmarks.md: 1.56x eager bf16 for t5_mini, alternating A/B at 1 thread), if a C++ compiler is there
    for inductor's CPU code; in fp32 compile was no faster than eager once the loss was fused, and on CUDA it has
    not been measured: off."""
    if requested is not None:
        return requested, "forced"
    if torch.device(device).type != "cpu" or dtype != "bf16":
        return False, f"auto: off ({torch.device(device).type}, {dtype}: not measured faster)"
    import shutil

    cxx = next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)
    if cxx is None:
        return False, "auto: off (bf16 on a CPU, but no C++ compiler for inductor on the PATH)"
    return True, "auto: on (bf16 on a CPU: compiled 1.56x eager in docs/benchmarks.md)"


def decode_dtype(dtype: str, device: torch.device | str) -> str:
    """The precision greedy/beam decoding runs in for a cell trained in `dtype`. On a CPU fp32 whatever
    the cell trained in: decoding is one token's small matmuls at a time, where autocast's casts cost more than
    bf16 saves (docs/benchmarks.md: bf16 decoding 0.82-0.85x fp32 on an amx_bf16 Xeon whose training step gains
    2.4x, and 0.02-0.03 BLEU lower). Elsewhere the cell's own precision (on a GPU not measured: decoding stays as trained)."""
    return "fp32" if torch.device(device).type == "cpu" else dtype


def describe(info: dict[str, Any]) -> str:
    """One line for the task log: the choice, the rule, the probe's numbers where there was one."""
    line = f"precision {info['dtype']} ({info['requested']}: {info['rule']})"
    if "fp32_s" in info:
        s = info["shape"]
        line += (f"; probe at d_model {s['d_model']}, d_ff {s['d_ff']}, vocab {s['vocab']}, {s['layers']} layers, "
                 f"{s['tokens']} tokens, "
                 f"{info['threads']} thread(s): fp32 {info['fp32_s'] * 1e3:.2f} ms, bf16 {info['bf16_s'] * 1e3:.2f} ms "
                 f"CPU time a step, {info['probe_seconds']:.2f} s CPU time in all ({info['probe_wall_seconds']:.2f} s wall); cpu flags: {', '.join(info['cpu_flags']) or 'none'}")
    return line
