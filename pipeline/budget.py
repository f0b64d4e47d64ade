"""What a sweep costs before anything runs: FLOPs, time on this device, GPU-hours on an H100, disk."""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s (SXM), the MFU reference of the paper-scale estimate
# What our loop reaches of the measured matmul peak (docs/benchmarks.md); stated in the printout. On a CPU in bf16
# the matmuls gain 4.3x but a step 2.3x (docs/benchmarks.md, "bf16 on the CPU"): the rest of the step is
# element-wise work and the fp32 softmax, so the same loop reaches about half the fraction of the bf16 peak.
ASSUMED_MFU = {"cuda": 0.40, "cpu": 0.25, "cpu-bf16": 0.13}
BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
MFU_TABLE = "| device | model |"  # docs/benchmarks.md's "Measured MFU" table, rows from scripts/bench_step.py


def measured_mfu(path: Path = BENCHMARKS) -> float | None:
    """The best H100 MFU recorded in docs/benchmarks.md's "Measured MFU" table (scripts/bench_step.py's rows),
    or None while it has none: the plan's GPU-hours then say that they rest on ASSUMED_MFU."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    best = None
    for i, line in enumerate(lines):
        if not line.startswith(MFU_TABLE):
            continue
        for row in lines[i + 2:]:
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if not row.startswith("|") or len(cells) != 7:
                break
            with contextlib.suppress(ValueError):
                if "H100" in cells[0] and cells[6].endswith("%"):
                    best = max(best or 0.0, float(cells[6].rstrip("%")) / 100)
    return best


def measured_peak(device: str | None = None, dtype: str | None = None) -> tuple[str, float, str]:
    """The matmul peak of this machine in FLOP/s in `dtype` ("fp32" | "bf16"; default bf16 on CUDA, fp32 on a
    CPU: what the sweep will run in), measured in a fraction of a second; with the device and the dtype."""
    import torch

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    name = dtype if dtype in ("fp32", "bf16") else "bf16" if dev == "cuda" else "fp32"
    dtype = torch.bfloat16 if name == "bf16" else torch.float32
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
    return dev, 2 * n**3 * reps / (time.perf_counter() - t0), name


# Bytes a parameter takes on disk: fp32 weights (safetensors), AdamW's two fp32 moments (Adafactor keeps less).
def compute(cfg: Config, presets, vocab: int, targets_len: int, tokens_per_step: int, ladders: dict[tuple, tuple],
            finetune_dfs: list[int], pair_tokens: tuple[int, int],
            test_sentences: int) -> tuple[dict[str, Any], float, float, int, float]:
    """The plan's compute: per model its parameters, FLOPs per example and pretraining runs (steps, FLOPs); the
    sweep's pretraining FLOPs; an upper bound on its finetuning FLOPs and steps (each cell's max_epochs of its
    Df capped by max_steps, at the pairs' mean lengths `pair_tokens`: batches are length-bucketed; early stopping
    cuts it); and its evaluation FLOPs (per test sentence a forward pass for the reference CE and one for
    decoding, each a third of a training example's FLOPs)."""
    from pipeline.model import count_params, flops_per_token

    models, pretrain_flops = {}, 0.0
    for preset in presets:
        f = flops_per_token(preset, vocab, cfg.pretrain.inputs_length, targets_len)
        runs = []
        for m in cfg.sweep.mixtures():
            steps = math.ceil(max(ladders[m.weights]) / tokens_per_step)
            flops = f["per_example"] * cfg.pretrain.batch_size * steps
            pretrain_flops += flops
            runs.append({"mixture": m.name, "weights": m.key(), "steps": steps, "rungs": len(ladders[m.weights]),
                         "dp_max": steps * tokens_per_step, "flops": flops})
        models[preset.name] = {"params": count_params(preset, vocab), "flops_per_example": f["per_example"],
                               "runs": runs}
    ft = cfg.finetune
    ft_steps = sum(ft.step_cap(df) for df in finetune_dfs)
    ft_flops = eval_flops = 0.0
    for preset in presets:
        per_pair = flops_per_token(preset, vocab, *pair_tokens)["per_example"]
        ft_flops += per_pair * ft.batch_size * ft_steps / len(presets)
        eval_flops += 2 * per_pair / 3 * test_sentences * len(finetune_dfs) / len(presets)
    return models, pretrain_flops, ft_flops, ft_steps, eval_flops


def time_left_lines(tl: dict[str, Any]) -> list[str]:
    """`progress.time_left` as the plan prints it."""
    if not tl["tasks"]:
        return []
    w = tl["workers"]
    head = (f"time left, timed by this sweep's finished tasks on this machine: {tl['tasks']} tasks, about "
            f"{human_seconds(tl['seconds'])} of one worker's time")
    lines = [head + (f" ({human_seconds(tl['seconds'] / w)} on {w} workers)" if w > 1 else "")
             + (" for the timed stages" if tl["unmeasured"] else "")]
    for stage, v in tl["stages"].items():
        rate = f"{v['rate']:.2f} s" if v["rate"] < 10 else human_seconds(v["rate"])
        if v["unit"] == "step":
            lines.append(f"  {stage}: {rate} a step (over {v['timed']} finished), at most {v['work']:,.0f} "
                         f"steps in {v['tasks']} tasks left")
        else:
            lines.append(f"  {stage}: {rate} a task (over {v['timed']} finished), {v['tasks']} left")
    if tl["unmeasured"]:
        lines.append(f"  not timed yet (nothing finished): {', '.join(tl['unmeasured'])}")
    return lines


PAIRS_SAMPLED = 2000
CHARS_PER_TOKEN = 3.0  # what the plan assumes before a tokenizer exists (pipeline.plan sizes text with it too)


def mean_pair_tokens(source: Any, cfg: Config) -> tuple[int, int]:
    """Mean source and target tokens of the first task's training pairs (a sample's characters over
    CHARS_PER_TOKEN, capped at the finetuning lengths). A streamed source is not read: the caps stand in."""
    caps = (cfg.finetune.max_source_length, cfg.finetune.max_target_length)
    t = cfg.sweep.tasks[0]
    if not getattr(source, "bounded", True):
        return caps
    try:
        pool = source.parallel(t.pair, "train")
        rows = [r["translation"] for r in pool.select(range(min(PAIRS_SAMPLED, len(pool))))]
    except Exception:  # noqa: BLE001 - an estimate: without a readable pool the caps stand in
        return caps
    if not rows:
        return caps
    mean = [sum(len(r[lang]) for r in rows) / len(rows) / CHARS_PER_TOKEN + 1 for lang in (t.src, t.tgt)]
    return min(caps[0], math.ceil(mean[0])), min(caps[1], math.ceil(mean[1]))


WEIGHT_BYTES = 4
OPTIMIZER_BYTES = 8
STATES_KEPT = 2  # pipeline.training.prune_states: the optimizer state of the two newest checkpoints stays


def disk_estimate(summary: dict[str, Any], concurrent: int = 1) -> dict[str, int]:
    """Bytes the sweep needs on the artifacts disk, by kind, and their `total`.

    What stays: every rung's weights and the two newest training states of each pretraining run (older
    optimizer states are pruned once a newer checkpoint is written), the init checkpoint, the best weights
    of each finetuning cell, and the token streams. While running, each of `concurrent` finetuning tasks
    also holds two resumable states (weights and optimizer), deleted when it finishes."""
    out = {"pretrain": 0, "init": 0, "finetune": 0, "finetune_running": 0, "tokens": 0}
    n_models = max(1, len(summary["models"]))
    for m in summary["models"].values():
        params = m["params"]["total"]
        # A resumable state: the Hugging Face weights, and the sharded model and optimizer state beside them.
        weights, state = WEIGHT_BYTES * params, (2 * WEIGHT_BYTES + OPTIMIZER_BYTES) * params
        out["init"] += weights
        for r in m["runs"]:
            # every rung's weights; the newest checkpoints with their states may be time-based ones
            out["pretrain"] += r.get("rungs", len(summary["dp_ladder"])) * weights + STATES_KEPT * state
        out["finetune"] += summary["n_finetune"] // n_models * weights
        out["finetune_running"] = max(out["finetune_running"], concurrent * STATES_KEPT * state)
    token_bytes = 2 if summary.get("vocab_size", 0) <= 65536 else 4
    out["tokens"] = sum(int(n) for n in summary.get("tokens_stored", {}).values()) * token_bytes
    out["total"] = sum(out.values())
    return out


def free_bytes(path: Path) -> tuple[Path, int]:
    """(nearest existing directory, bytes free on its filesystem). Tests monkeypatch this."""
    probe = Path(path)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def existing_bytes(dirs) -> int:
    """Bytes already written in these stage directories (a resumed sweep has paid for part of its estimate)."""
    total = 0
    for d in dirs:
        d = Path(d)
        if d.is_dir():
            for p in d.rglob("*"):
                with contextlib.suppress(OSError):
                    if p.is_file() and not p.is_symlink():
                        total += p.stat().st_size
    return total


def disk_shortfall(path: Path, need: int, have: int = 0) -> str | None:
    """Why the artifacts disk cannot take the sweep (one line), or None when it can."""
    probe, free = free_bytes(path)
    more = max(0, need - have)
    if more <= free:
        return None
    done = f" ({human_bytes(have)} of it written already)" if have else ""
    return (f"the sweep needs about {human_bytes(need)} of checkpoints and token files{done} but {probe} has "
            f"{human_bytes(free)} free; free space, choose another paths.artifacts, or shrink the sweep")


def check_disk(path: Path, need: int, have: int = 0) -> None:
    reason = disk_shortfall(path, need, have)
    if reason:
        raise ConfigError("paths.artifacts", reason)


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
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.1f} days"
    return f"{s / (365 * 86400):,.0f} years"


def format_plan(plan, states: dict[str, int] | None = None, peak: tuple[str, float] | None = None,
                disk: dict[str, Any] | None = None, failed: list[tuple[str, str, str]] | None = None,
                left: dict[str, Any] | None = None) -> str:
    """The plan as a researcher reads it: grid, alignment, models, budgets, time, disk, progress.

    `disk`: {"estimate": disk_estimate(...), "free": bytes, "probe": path, "shortfall": reason or None};
    `failed`: (task id, error, log path) of the tasks whose last attempt failed; `left`: `progress.time_left(plan)`."""
    s = plan.summary
    lines = [f"sweep {plan.sweep} · scale {s['scale']} ({s['scale_description']}) · data {s['data_source']}", ""]
    lines.append("grid")
    for t in s["tasks"]:
        mixes = ", ".join(f"{m['name']} {m['weights']} A={m['alignment']:.2f}" for m in t["mixtures"])
        lines.append(f"  task {t['pair']}: mixtures {mixes}")
    lines.append(f"  Dp ladder (raw text tokens): 0 (no pretraining) + {', '.join(human_count(x) for x in s['dp_ladder'])}")
    lines.append(f"  Df ladder (training pairs): {', '.join(f'{x:,}' for x in s['df_ladder'])}")
    lines.append(f"  seeds {s['seeds']} · methods {s['methods']} · learning rates {s['lrs']}"
                 + (" (searched on the first seed, its winner reused for the others)"
                    if s.get("lr_search") == "first_seed" and len(s["lrs"]) > 1 else ""))
    if s.get("lr_deferred"):
        lines.append(f"  {s['lr_deferred']} finetuning runs wait for the rate searched on the first seed: the same "
                     "command plans them once that search is finished")
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
    repeats = s.get("pretrain_max_epochs", 1) > 1
    lines.append(f"  tokens each language must supply{'' if repeats else ' without repetition'}: "
                 + ", ".join(f"{k} {human_count(v)}" for k, v in s["tokens_needed"].items() if v))
    if repeats and s.get("pretrain_epochs"):
        lines.append(f"  repetition allowed (pretrain.max_epochs {s['pretrain_max_epochs']:g}); passes over each "
                     "language's unique text at the top rung: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in s["pretrain_epochs"].items() if v))
    known = {k: v for k, v in s["text_stats"].items() if v}
    if known:
        lines.append("  unique text available: " + ", ".join(
            f"{k} {human_count(v['words'])} words" for k, v in known.items() if v.get("words")))
    lines.append("")
    ev = s.get("evaluate_flops", 0.0)
    total = s["pretrain_flops"] + s["finetune_flops_max"] + ev
    lines.append(f"compute: pretraining {s['pretrain_flops']:.3g} FLOPs, finetuning at most {s['finetune_flops_max']:.3g} "
                 + (f"({s['finetune_steps']:,} steps in all; early stopping cuts it)" if "finetune_steps" in s
                    else "(early stopping cuts it)")
                 + (f", evaluation about {ev:.3g} ({s['test_sentences']:,} test sentences a cell)" if ev else "")
                 + f", total <= {total:.3g}")
    prec = s.get("precision")
    if prec:
        lines.append(f"  precision: pretraining {prec['pretrain']}, cells {prec['finetune']} ({prec['rule']})")
    if s.get("finetune_cell_steps_max") and s.get("finetune_steps"):
        cell = s["finetune_flops_max"] / s["finetune_steps"] * s["finetune_cell_steps_max"]
        top = max((r["flops"] for m in s["models"].values() for r in m["runs"]), default=0.0)
        lines.append(f"  the largest pretraining run costs {top / cell:.1f}x the most one finetuning cell can take "
                     f"({cell:.3g} FLOPs: {s['finetune_cell_steps_max']:,} steps, its cap)")
    if peak:
        dev, flops, *dt = peak
        dt = dt[0] if dt else "bf16" if dev == "cuda" else "fp32"
        mfu = ASSUMED_MFU["cuda" if dev == "cuda" else "cpu-bf16" if dt == "bf16" else "cpu"]
        lines.append(f"  on this {dev} (measured {dt} matmul peak {flops / 1e12:.2f} TFLOP/s, at {mfu:.0%} of it): "
                     f"about {human_seconds(total / (flops * mfu))} of sequential training")
    mfu = measured_mfu()
    gpu_h = total / (H100_BF16_PEAK * (mfu or ASSUMED_MFU["cuda"])) / 3600
    basis = (f"{mfu:.1%} MFU measured (docs/benchmarks.md)" if mfu else
             f"assumed MFU {ASSUMED_MFU['cuda']:.0%}: none measured yet, scripts/bench_step.py")
    lines.append(f"  on H100s (bf16, {basis}): about {gpu_h:,.1f} GPU-hours")
    est = (disk or {}).get("estimate") or disk_estimate(s)
    lines.append(f"disk: about {human_bytes(est['total'])} (pretraining checkpoints {human_bytes(est['pretrain'])}, "
                 f"finetuned models {human_bytes(est['finetune'])} + {human_bytes(est['finetune_running'])} while "
                 f"running, token streams {human_bytes(est['tokens'])})"
                 + (f"; {human_bytes(disk['free'])} free on {disk['probe']}" if disk else ""))
    if disk and disk.get("shortfall"):
        lines.append(f"  NOT ENOUGH DISK: {disk['shortfall']}; running this sweep would be refused")
    for problem in s.get("data_problems", []):
        lines.append(f"  NOT ENOUGH DATA: {problem}; running this sweep would be refused")
    if states:
        lines.append("")
        order = ("done", "partial", "failed", "pending")
        lines.append("tasks: " + ", ".join(f"{states[k]} {k}" for k in sorted(states, key=lambda k: (
            order.index(k) if k in order else len(order), k))))
        for tid, err, lp in failed or []:
            lines.append(f"  failed {tid}: {err} (log: {lp})")
    if left and left["stages"]:  # once something has finished, the sweep's own timing beside the estimate
        lines += time_left_lines(left)
    return "\n".join(lines)
