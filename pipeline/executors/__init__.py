"""Executors run the same task function (pipeline.task.execute) locally or on SLURM."""

from __future__ import annotations

from pipeline.config import Config


def check_executor(cfg: Config) -> None:
    """Start-up checks of the chosen executor (ConfigError: one line, exit 2), before any planning or writing."""
    if cfg.executor.kind == "slurm":
        from pipeline.executors.slurm import check

        check(cfg)


def task_resources(cfg: Config) -> dict:
    """Per stage, what one task runs on under the chosen executor (pipeline.checks.Resources)."""
    from pipeline.checks import local_resources
    from pipeline.stages import LEVELS

    if cfg.executor.kind == "slurm":
        from pipeline.executors.slurm import SlurmOptions

        return SlurmOptions.of(cfg).task_resources()
    return {s: local_resources() for s in LEVELS}


def get_executor(cfg: Config):
    opts = cfg.executor.opts()
    if cfg.executor.kind == "slurm":
        from pipeline.executors.slurm import SlurmExecutor

        return SlurmExecutor(cfg)
    from pipeline.executors.local import LocalExecutor

    return LocalExecutor(workers=opts.get("workers", 1), threads_per_worker=opts.get("threads_per_worker"))
