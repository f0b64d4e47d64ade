"""From a composed config to work done: validate, plan, then print the plan or execute it."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.artifacts import check_writable, read_status
from pipeline.budget import (
    disk_estimate,
    disk_shortfall,
    existing_bytes,
    format_plan,
    free_bytes,
    measured_peak,
)
from pipeline.checks import StageCheck, format_table, refuse, stage_checks, summary
from pipeline.config import Config, ConfigError, load_config
from pipeline.data_sources import SOURCES
from pipeline.executors import check_executor, task_resources
from pipeline.plan import Plan, build_plan, build_read_plan, task_state, write_plan
from pipeline.progress import time_left
from pipeline.stages import LEVELS, READ_STAGES, STORED
from pipeline.sweep_precision import record_precision

log = logging.getLogger("pipeline")


def from_results(cfg: Config) -> bool:
    """`stage=fit|report paths.results=TABLE`: only the table is read; no data, no artifacts."""
    return cfg.stage in ("fit", "report") and cfg.paths.results is not None


def check_results(path: Path) -> None:
    """A results table given on the command line must be readable and have the columns the fitter needs."""
    from pipeline.results import ResultsError, load_results

    if not path.is_file():
        raise ConfigError("paths.results", f"{path}: no such file")
    try:
        df = load_results(path)
    except ResultsError as e:
        raise ConfigError("paths.results", str(e)) from None
    if len(df) == 0:
        raise ConfigError("paths.results", f"{path}: the table has no rows")


def check_device(cfg: Config) -> None:
    """A CUDA request on a machine without CUDA. Only for the local executor: a login node has no GPU but
    the nodes its jobs run on do."""
    if cfg.executor.kind != "local" or cfg.stage == "plan" or cfg.stage in READ_STAGES:
        return
    import torch

    if torch.cuda.is_available():
        return
    if cfg.pretrain.dtype == "bf16":
        from pipeline.precision import cpu_bf16_flags

        flags = cpu_bf16_flags()
        log.warning("pretrain.dtype=bf16 without CUDA: pretraining runs bf16 autocast on the CPU (faster than fp32 only "
                    "with bf16 instructions; this processor has %s), its numbers a little off fp32's; "
                    "pretrain.dtype=auto decides by a probe", ", ".join(flags) or "none")
    if cfg.pretrain.distributed in ("ddp", "fsdp"):
        log.warning("pretrain.distributed=%s without CUDA: one process trains on the CPU (launch several with "
                    "torchrun to use gloo)", cfg.pretrain.distributed)


def disk_check(cfg: Config, plan: Plan) -> dict[str, Any]:
    """The disk estimate against the free space of the artifacts filesystem, counting what is already written."""
    opts = cfg.executor.opts()
    n_ft = plan.summary["n_finetune"]
    if cfg.executor.kind == "slurm":
        concurrent = min(n_ft, int(opts.get("max_array_parallelism", 64)))
    else:
        concurrent = min(n_ft, int(opts.get("workers", 1)))
    est = disk_estimate(plan.summary, max(1, concurrent))
    have = existing_bytes(t.dir for t in plan.tasks if t.stage in STORED)
    probe, free = free_bytes(cfg.paths.artifacts)
    return {"estimate": est, "have": have, "probe": probe, "free": free,
            "shortfall": disk_shortfall(cfg.paths.artifacts, est["total"], have)}


def resource_checks(cfg: Config, plan: Plan, memory: bool = True) -> list[StageCheck]:
    """pipeline.checks on the stages this run would execute (stage=plan: every stage of the plan)."""
    selected = {t.stage for t in plan.select(cfg.stage)}
    return stage_checks(cfg, [s for s in LEVELS if s in selected], memory=memory, resources=task_resources(cfg))


def prepare(cfg_any: Any) -> tuple[Config, Plan]:
    """Everything that can refuse a run, before any compute or write (ConfigError -> one line, exit 2).

    Cheapest first: the config, the executor, the output directories, the results table or the data,
    then the plan (which imports the model code) and the disk."""
    cfg = load_config(cfg_any)
    check_executor(cfg)  # e.g. executor=slurm without sbatch, refused before the data is even looked at
    check_writable(cfg.paths.reports, "paths.reports")
    if from_results(cfg):
        check_results(cfg.paths.results)
        return cfg, build_read_plan(cfg)
    check_writable(cfg.paths.artifacts, "paths.artifacts")
    from pipeline.sources import SPLITS, get_source

    source = get_source(cfg.data, cfg.paths.cache)
    langs = cfg.sweep.languages()
    splits = ("train", cfg.finetune.validation_split, *cfg.evaluate.test_splits)
    extra = [s for s in splits if s not in SPLITS]
    missing = [s for s in extra if s not in SOURCES[cfg.data.source].extra_splits]
    if missing:
        key = "evaluate.test_splits" if missing[-1].startswith("test") else "finetune.validation_split"
        has = [n for n, src in SOURCES.items() if missing[-1] in src.extra_splits]
        raise ConfigError(key, f"{missing[-1]} exists in data={'/'.join(has) or 'no source'} only, not in "
                               f"data={cfg.data.source}")
    if extra:
        source.validate(langs, [t.pair for t in cfg.sweep.tasks], splits=("validation", "test", *splits))
    else:
        source.validate(langs, [t.pair for t in cfg.sweep.tasks])
    plan = build_plan(cfg, source)
    if cfg.stage not in ("plan", *READ_STAGES):
        # each job's resources against its config; memory only where a GPU is checked (the SLURM executor
        # checks again before its first sbatch, from the measurements cached here)
        refuse(resource_checks(cfg, plan, memory=cfg.executor.kind == "slurm" or _has_gpu()))
        disk = disk_check(cfg, plan)
        if disk["shortfall"]:
            raise ConfigError("paths.artifacts", disk["shortfall"])
    check_device(cfg)  # warnings only, once nothing can refuse the run any more
    return cfg, plan


def failed_tasks(plan: Plan) -> list[tuple[str, str, str]]:
    """(task id, error, log path) of every task whose last attempt failed."""
    from pipeline.task import log_path

    out = []
    for t in plan.tasks:
        if t.stage in READ_STAGES:
            continue
        st = read_status(Path(t.dir))
        if st and st.get("status") not in (None, "ok"):
            out.append((t.id, str(st.get("error") or st.get("status")), str(log_path(t))))
    return out


def remade_rungs(plan: Plan) -> list[str]:
    """The pretraining runs, trained before for another Dp ladder, that lack checkpoints for rungs of this one below
    their last step: each will train again from its init to make them (pipeline.pretrain) before their cells."""
    from pipeline.pretrain import rungs_to_remake

    lines = []
    for t in plan.tasks:
        if t.stage == "pretrain" and (Path(t.dir) / "checkpoints").is_dir():
            reached, missing = rungs_to_remake(t)
            if missing:
                lines.append(f"  pretraining {t.name}: trained to step {reached:,}, it keeps no checkpoint for Dp "
                             f"{', '.join(f'{dp:,}' for dp in missing.values())} (trained for another Dp ladder, or "
                             f"deleted); it trains again from its init to step {max(missing):,} to make them")
    return ["", "rungs to remake", *lines] if lines else []


class Stopped(Exception):
    """A stop signal ended a sweep (its tasks checkpointed): the whole command ends, a multirun's later sweeps and
    a re-plan included; the same command continues it. `rc`: the sweep's exit status (1 if a task failed)."""

    def __init__(self, message: str, rc: int = 0):
        super().__init__(message)
        self.rc = rc


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def run(cfg_any: Any) -> int:
    cfg, plan = prepare(cfg_any)
    if cfg.stage == "plan":
        states = Counter(task_state(t) for t in plan.tasks)
        workers = int(cfg.executor.opts().get("workers", 1)) if cfg.executor.kind == "local" else 1
        dtype = (plan.summary.get("precision") or {}).get("pretrain")  # the sweep's precision: its peak
        checks = resource_checks(cfg, plan)
        print(format_plan(plan, dict(states), measured_peak(dtype=dtype), disk_check(cfg, plan), failed_tasks(plan),
                          time_left(plan, workers)))
        for line in remade_rungs(plan):
            print(line)
        print("\n" + format_table(checks, cfg), flush=True)
        refuse(checks)  # a job that would fail: one line naming the settings, exit 2, no plan written
        plan.summary["resources"] = summary(checks)
        path = write_plan(plan, cfg.paths.artifacts)
        print(f"\nplan written to {path}")
        return 0
    from pipeline.executors import get_executor

    record_precision(cfg, plan.summary.get("precision"))  # the sweep's auto precision, decided once: a relaunch keeps it
    executor = get_executor(cfg)
    todo = plan.select(cfg.stage)
    # finetune.lr_search=first_seed: the other seeds' cells are planned once the first seed's search is done; the
    # local executor runs the training, plans again and goes on (a SLURM submission says to run it again)
    waiting = plan.summary.get("lr_deferred", 0)
    again = waiting and cfg.executor.kind == "local"
    rc = executor.run(plan, [t for t in todo if t.stage not in READ_STAGES] if again else todo)
    while rc == 0 and again and not getattr(executor, "stopped", None):
        cfg, plan = prepare(cfg_any)
        left = plan.summary.get("lr_deferred", 0)
        log.info("%d finetuning runs waited for the learning rate searched on the first seed; %d still wait",
                 waiting, left)
        again = left and left < waiting
        waiting = left
        todo = plan.select(cfg.stage)
        rc = executor.run(plan, [t for t in todo if t.stage not in READ_STAGES] if again else todo)
    if getattr(executor, "stopped", None):
        raise Stopped(f"sweep {plan.sweep} stopped by {executor.stopped}: the command ends here; run it again to "
                      "continue", rc)
    if waiting and rc == 0:
        print(f"{waiting} finetuning runs wait for the learning rate searched on the first seed: run the same "
              "command again once its cells are finished")
    return rc
