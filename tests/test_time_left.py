"""`stage=plan` on a sweep under way: what is left, timed by the sweep's own finished tasks on this machine
(each stage's seconds per step or per task over its finished tasks, times the work of the tasks not done)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import compose

from pipeline.artifacts import STATUS
from pipeline.budget import format_plan, human_seconds
from pipeline.progress import task_work, time_left

SMOKE = ["+sweep=en_de", "scale=smoke", "stage=plan", "finetune.max_steps=100000"]  # caps by epochs: cells differ


@pytest.fixture
def plan(tmp_path, l10n_corpus):
    from pipeline.run import prepare

    _, plan = prepare(compose([*SMOKE, f"paths.artifacts={tmp_path / 'a'}", f"paths.reports={tmp_path / 'r'}"]))
    return plan


def finish(task, seconds: float, status: str = "ok") -> None:
    Path(task.dir).mkdir(parents=True, exist_ok=True)
    (Path(task.dir) / STATUS).write_text(json.dumps({"status": status, "seconds": seconds}))


def test_work_is_the_cells_step_cap_and_the_pretraining_length(plan):
    from pipeline.task import typed

    ft = [t for t in plan.tasks if t.stage == "finetune"]
    for t in ft:
        s = typed(t).spec
        cap = min(s.finetune.max_steps, s.finetune.max_epochs * -(-s.df // s.finetune.batch_size))
        assert task_work(t) == cap
    pt = typed(next(t for t in plan.tasks if t.stage == "pretrain")).spec
    per_step = pt.pretrain.batch_size * pt.raw_length
    assert task_work(next(t for t in plan.tasks if t.stage == "pretrain")) == -(-max(pt.dp_ladder) // per_step)
    assert task_work(next(t for t in plan.tasks if t.stage == "evaluate")) == 1


def test_time_left_is_the_finished_tasks_rate_times_the_work_not_done(plan):
    ft = sorted((t for t in plan.tasks if t.stage == "finetune"), key=task_work)
    ft = [ft[0], ft[-1], *ft[1:-1]]  # the two timed cells differ in length, so a pooled rate is not their mean
    ev = [t for t in plan.tasks if t.stage == "evaluate"]
    assert len(ft) >= 3 and len(ev) >= 3 and task_work(ft[0]) < task_work(ft[1])
    assert time_left(plan)["stages"] == {}  # nothing finished: nothing to time by
    finish(ft[0], 2.0 * task_work(ft[0]))
    finish(ft[1], 4.0 * task_work(ft[1]))  # pooled: seconds over steps, a long task weighs its steps
    finish(ft[2], 999.0, status="failed")  # not done, and not a timing
    finish(ev[0], 30.0)
    tl = time_left(plan, workers=2)
    rate = (2.0 * task_work(ft[0]) + 4.0 * task_work(ft[1])) / (task_work(ft[0]) + task_work(ft[1]))
    left_steps = sum(task_work(t) for t in ft[2:])
    assert tl["stages"]["finetune"]["rate"] == pytest.approx(rate)
    assert tl["stages"]["finetune"]["work"] == left_steps
    assert tl["stages"]["evaluate"]["seconds"] == pytest.approx(30.0 * (len(ev) - 1))
    assert tl["seconds"] == pytest.approx(rate * left_steps + 30.0 * (len(ev) - 1))
    assert "pretrain" in tl["unmeasured"] and "finetune" not in tl["unmeasured"]
    assert tl["tasks"] == sum(1 for t in plan.tasks if t.stage not in ("collect", "fit", "report")) - 3

    text = format_plan(plan, left=tl)
    assert (f"about {human_seconds(tl['seconds'])} of one worker's time ({human_seconds(tl['seconds'] / 2)} on 2 "
            "workers) for the timed stages") in text
    assert f"finetune: {rate:.2f} s a step (over 2 finished), at most {left_steps:,.0f} steps" in text
    assert "not timed yet (nothing finished): " in text and "pretrain" in text.split("not timed yet")[1]


def test_a_finished_pretraining_run_this_ladder_asks_more_of_is_work_left(plan):
    """status ok but rungs missing (another sweep's shorter ladder, or a deleted rung): the run trains again, so
    stage=plan counts its steps as left (whole, an upper bound), while its seconds still time the stage."""
    pt = [t for t in plan.tasks if t.stage == "pretrain"]
    finish(pt[0], 10.0 * task_work(pt[0]))  # finished, but rungs.json lists none of this ladder
    tl = time_left(plan)
    assert tl["stages"]["pretrain"]["tasks"] == len(pt) and tl["stages"]["pretrain"]["timed"] == 1
    assert tl["stages"]["pretrain"]["rate"] == pytest.approx(10.0)
    from pipeline.task import typed

    rungs = {}
    for step, dp in typed(pt[0]).spec.rung_steps().items():
        ck = Path(pt[0].dir) / "checkpoints" / f"step-{step:08d}"
        ck.mkdir(parents=True)  # a rung checkpoint as the run reads one: its meta says rung, its marker lists it
        meta = json.dumps({"step": step, "rung": True, "dp_rung": dp})
        (ck / "meta.json").write_text(meta)
        (ck / "COMPLETE").write_text(json.dumps({"files": {"meta.json": {"bytes": len(meta), "sha256": ""}}}))
        rungs[str(dp)] = {"step": step, "checkpoint": f"checkpoints/step-{step:08d}"}
    (Path(pt[0].dir) / "rungs.json").write_text(json.dumps(rungs))
    assert time_left(plan)["stages"]["pretrain"]["tasks"] == len(pt) - 1  # its ladder kept: done
