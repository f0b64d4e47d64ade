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
    # the class of the task's spec, in the runner's module: plan.json holds its plain-data form and
    # pipeline.task rebuilds it before the runner is called (None: the runner reads the plain data)
    spec: str | None = None
    # collect/fit/report: no hash identity, always rerun, read whatever exists (failures included)
    reads_only: bool = False
    stored: bool = False  # its directories hold the bytes of the plan's disk estimate


STAGES = (
    Stage("tokenizer", "pipeline.tokenizer:run", "TokenizerSpec"),
    Stage("tokens", "pipeline.tokens:run", "TokensSpec", stored=True),
    Stage("init", "pipeline.pretrain:run_init", "InitSpec", stored=True),
    Stage("pretrain", "pipeline.pretrain:run", "PretrainSpec", stored=True),
    Stage("finetune", "pipeline.finetune:run", "FinetuneSpec", stored=True),
    Stage("evaluate", "pipeline.evaluate:run", "EvaluateSpec"),
    Stage("collect", "pipeline.collect:run", "CollectSpec", reads_only=True),
    Stage("fit", "pipeline.fit:run", "ReadSpec", reads_only=True),
    Stage("report", "pipeline.report:run", "ReadSpec", reads_only=True),
)

# Execution order; a task only depends on tasks of earlier levels.
LEVELS = tuple(s.name for s in STAGES)
READ_STAGES = tuple(s.name for s in STAGES if s.reads_only)
STORED = tuple(s.name for s in STAGES if s.stored)
RUNNERS = {s.name: s.runner for s in STAGES}  # a dict, so a test can swap one stage's function
SPECS = {s.name: s.spec for s in STAGES}
# `stage=`: plan (print the plan), all (default), or a stage: a training stage runs everything up to it,
# a read-only stage the read-only stages up to it
CHOICES = ("plan", "all", *LEVELS)
