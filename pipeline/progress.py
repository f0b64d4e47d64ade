"""A sweep under way: what is left of it, timed by its own finished tasks on this machine (`stage=plan`).

Apart from `budget` (what a sweep costs before anything runs), which the planner imports: this module reads the
typed task specs, so it sits above `pipeline.task`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifacts import read_status
from pipeline.plan import ladder_reached
from pipeline.stages import READ_STAGES
from pipeline.task import typed

STEP_STAGES = ("pretrain", "finetune")  # timed by the optimiser step; every other stage by the task


def task_work(task) -> float:
    """A task's work in its stage's unit: at most this many optimiser steps for pretraining and finetuning (the
    cell's cap: early stopping may take fewer), one task for the other stages."""
    if task.stage not in STEP_STAGES:
        return 1.0
    spec = typed(task).spec
    return float(spec.finetune.step_cap(spec.df) if task.stage == "finetune" else max(spec.rung_steps()))


def time_left(plan, workers: int = 1) -> dict[str, Any]:
    """What is left of a sweep, timed by the sweep's own finished tasks on this machine: per stage the seconds a
    unit of work took over all its finished tasks (status.json's `seconds` summed, over their `task_work` summed:
    a long task weighs as much as its steps), times the work of every task not yet done. A partial task counts
    whole (an upper bound, as the step caps are); a finished task that was resumed is timed by its last attempt
    only (a lower bound). Stages with work left and no finished task to time it by are listed as `unmeasured`
    and left out of `seconds`."""
    timed: dict[str, list[tuple[float, float]]] = {}  # stage -> (seconds, work) of each finished task
    left: dict[str, list[float]] = {}
    for t in plan.tasks:
        if t.stage in READ_STAGES:
            continue
        st = read_status(Path(t.dir))
        work = task_work(t)
        done = bool(st) and st.get("status") == "ok"
        if done and isinstance(st.get("seconds"), int | float) and work > 0:
            timed.setdefault(t.stage, []).append((st["seconds"], work))
        if not done or not ladder_reached(t):  # a finished pretraining run this ladder asks more of: counted whole
            left.setdefault(t.stage, []).append(work)
    stages, seconds, unmeasured = {}, 0.0, []
    for stage, works in left.items():
        if stage not in timed:
            unmeasured.append(stage)
            continue
        rate = sum(s for s, _ in timed[stage]) / sum(w for _, w in timed[stage])
        stages[stage] = {"rate": rate, "unit": "step" if stage in STEP_STAGES else "task", "timed": len(timed[stage]),
                         "tasks": len(works), "work": sum(works), "seconds": rate * sum(works)}
        seconds += rate * sum(works)
    return {"stages": stages, "unmeasured": unmeasured, "seconds": seconds, "workers": max(1, workers),
            "tasks": sum(len(w) for w in left.values())}
