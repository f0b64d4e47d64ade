"""The stage registry: every stage once, in execution order, with the function that runs it and how it is
scheduled. The lists the rest of the package uses (plan levels, read-only stages, runners, the `stage=`
choices, the stages counted in the disk estimate) are derived from it. A new stage is a line here, a module
with its `run(task)` and spec, and the planner code that makes its tasks (docs/ARCHITECTURE.md).

A leaf: imports nothing from the package, so config, plan, task and the executors can all read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str  # "module:function", imported only when a task of the stage runs
    # collect/fit/report: no hash identity, always rerun, read whatever exists (failures included)
    reads_only: bool = False
    stored: bool = False  # its directories hold the bytes of the plan's disk estimate


STAGES = (
    Stage("tokenizer", "pipeline.tokenizer:run"),
    Stage("tokens", "pipeline.tokens:run", stored=True),
    Stage("init", "pipeline.pretrain:run_init", stored=True),
    Stage("pretrain", "pipeline.pretrain:run", stored=True),
    Stage("finetune", "pipeline.finetune:run", stored=True),
    Stage("evaluate", "pipeline.evaluate:run"),
    Stage("collect", "pipeline.collect:run", reads_only=True),
    Stage("fit", "pipeline.fit:run", reads_only=True),
    Stage("report", "pipeline.report:run", reads_only=True),
)

# Execution order; a task only depends on tasks of earlier levels.
LEVELS = tuple(s.name for s in STAGES)
READ_STAGES = tuple(s.name for s in STAGES if s.reads_only)
STORED = tuple(s.name for s in STAGES if s.stored)
RUNNERS = {s.name: s.runner for s in STAGES}  # a dict, so a test can swap one stage's function
# `stage=`: plan (print the plan), all (default), or a stage: a training stage runs everything up to it,
# a read-only stage the read-only stages up to it
CHOICES = ("plan", "all", *LEVELS)
