"""The sweep's precision: one decision for every task of a sweep, made once and recorded beside its plans, so
that a relaunch, a resume or a longer ladder runs in the precision the sweep started in (pipeline.precision
decides for one process; this module decides for the sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, read_json
from pipeline.config import Config


def precision_record(cfg: Config) -> Path:
    """Where a sweep's `auto` precision is recorded once decided (delete it to probe again)."""
    return cfg.paths.artifacts / "plans" / f"precision-{cfg.sweep.name}-{cfg.scale}.json"


def sweep_precision(cfg: Config, presets) -> dict[str, Any]:
    """The precision of the sweep's pretraining and of its cells, decided once for the whole sweep.

    Forced values (`fp32`, `bf16`) are taken as they are. `auto` is one decision for every task: with the local
    executor the planner measures it here (pipeline.precision's probe at the sweep's largest model) and
    `record_precision` writes it beside the plans, so a relaunch, a resume or a longer ladder keeps the first
    decision instead of probing again; elsewhere (SLURM) it is left to each task on its node (bf16 on GPUs
    that support it). The stage hashes hold what was asked (`auto`), never what a processor chose, and every
    cell records the dtype it ran in (results.csv `dtype`), so a study that mixed them says so."""
    asked = {"pretrain": cfg.pretrain.dtype, "finetune": cfg.finetune.dtype}
    out: dict[str, Any] = dict(asked, asked=dict(asked), rule="forced", probe=None, recorded=False)
    if "auto" not in asked.values():
        return out
    if cfg.executor.kind != "local":
        return out | {"rule": "auto: decided by each task on its node (bf16 on a GPU that supports it)"}
    rec = precision_record(cfg)
    if rec.exists():
        d = read_json(rec)
        return out | {k: d["dtype"] if v == "auto" else v for k, v in asked.items()} | {
            "rule": f"auto: {d['dtype']}, as first decided for this sweep ({rec.name}: {d['rule']})",
            "probe": d.get("probe"), "recorded": True}
    import torch

    from pipeline.precision import ProbeShape, resolve_dtype

    big = max(presets, key=lambda p: (p.d_model * p.d_ff, p.d_model))
    dtype, info = resolve_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu",
                                ProbeShape(big.d_model, big.d_ff, cfg.tokenizer.vocab_size))
    return out | {k: dtype if v == "auto" else v for k, v in asked.items()} | {
        "rule": f"auto: {info['rule']}", "probe": info, "decided": dtype}


def record_precision(cfg: Config, precision: dict[str, Any] | None) -> None:
    """Write the sweep's freshly decided `auto` precision (`precision`: what sweep_precision gave the plan, its
    summary's "precision") before its tasks run."""
    p = precision or {}
    if p.get("decided") and not p.get("recorded"):
        atomic_write_json(precision_record(cfg), {"dtype": p["decided"], "rule": p["rule"], "probe": p["probe"]})
