"""From a composed config to work done: validate, plan, then print the plan or execute it."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from pipeline.artifacts import check_writable
from pipeline.budget import check_disk, checkpoint_bytes, format_plan, measured_peak
from pipeline.config import Config, load_config
from pipeline.executors import check_executor
from pipeline.plan import Plan, build_plan, task_state, write_plan

log = logging.getLogger("pipeline")


def prepare(cfg_any: Any) -> tuple[Config, Plan]:
    """Everything that can refuse a run, before any compute or write (ConfigError -> one line, exit 2)."""
    cfg = load_config(cfg_any)
    check_executor(cfg)  # e.g. executor=slurm without sbatch, refused before the data is even looked at
    from pipeline.sources import get_source

    source = get_source(cfg.data, cfg.paths.cache)
    langs = sorted({lang for t in cfg.sweep.tasks for m in t.mixtures for lang in m.languages}
                   | {lang for t in cfg.sweep.tasks for lang in (t.src, t.tgt)})
    source.validate(langs, [t.pair for t in cfg.sweep.tasks])
    plan = build_plan(cfg, source)
    check_writable(cfg.paths.artifacts, "paths.artifacts")
    check_writable(cfg.paths.reports, "paths.reports")
    if cfg.stage not in ("collect", "fit", "report"):
        check_disk(cfg.paths.artifacts, checkpoint_bytes(plan.summary, len(cfg.pretrain.dp_ladder)))
    return cfg, plan


def run(cfg_any: Any) -> int:
    cfg, plan = prepare(cfg_any)
    if cfg.stage == "plan":
        states = Counter(task_state(t) for t in plan.tasks)
        print(format_plan(plan, dict(states), measured_peak()))
        path = write_plan(plan, cfg.paths.artifacts)
        print(f"\nplan written to {path}")
        return 0
    from pipeline.executors import get_executor

    return get_executor(cfg).run(plan, plan.select(cfg.stage))
