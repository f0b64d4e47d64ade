"""Runs that main's code wrote before the one learning-rate function (`training.learning_rate`) resume with this
code at the step they stopped, with the rate of that step, and end as an uninterrupted run of this code ends:
pretraining's checkpoints then held a LambdaLR's state (now ignored), finetuning set its rate from the step.
The old code is main at BEFORE, unpacked from the repository's history and run as a subprocess (skipped where
that history is not at hand)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from test_pretrain import assert_same_run
from test_training import (
    first,
    max_abs_diff,
    run_upto,
    small_plan,
    subprocess_env,
    wait_for,
    weights,
    with_spec,
    write_plan_file,
)

from pipeline.training import STATE, step_dir

BEFORE = "ca28798"  # main when the background study started: its runs must resume with this code
SCHEDULE = {"schedule": "inverse_sqrt", "warmup_steps": 10}  # warm-up ends between the checkpoints at 8 and 22

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def before(tmp_path_factory):
    d = tmp_path_factory.mktemp("before")
    r = subprocess.run(f"git -C '{ROOT}' archive {BEFORE} pipeline | tar -x -C '{d}'", shell=True,
                       capture_output=True, text=True)
    if r.returncode or not (d / "pipeline" / "task.py").exists():
        pytest.skip(f"main's code at {BEFORE} is not in this repository's history ({r.stderr.strip()[:200]})")
    return d


def run_before(before, task, tmp_path) -> subprocess.Popen:
    """`python -m pipeline.task` of main's code (its directory first on the path, and the working directory)."""
    plan_file = write_plan_file(task, tmp_path / "plan.json")
    env = {**subprocess_env(), "PYTHONPATH": str(before)}
    return subprocess.Popen([sys.executable, "-m", "pipeline.task", str(plan_file), "0"], cwd=before, env=env,
                            stdout=open(tmp_path / "before.log", "w"), stderr=subprocess.STDOUT, text=True)  # noqa: SIM115


def test_a_pretraining_run_of_main_resumes_at_its_step_and_rate(before, tmp_path, caplog):
    from pipeline.pretrain import run

    _, plan = small_plan(tmp_path)
    run_upto(plan, "pretrain")
    task = first(plan, "pretrain", "en50_de50")
    run(with_spec(task, tmp_path / "ref", pretrain=SCHEDULE))  # this code, uninterrupted
    d = tmp_path / "run"
    old = run_before(before, with_spec(task, d, pretrain=SCHEDULE, dp_ladder=[8192, 24576]), tmp_path)
    assert old.wait(timeout=600) == 0, (tmp_path / "before.log").read_text()[-3000:]
    state = torch.load(step_dir(d / "checkpoints", 22) / STATE, weights_only=True)
    assert "scheduler" in state and state["scheduler"]["last_epoch"] == 22  # main's checkpoint, with its LambdaLR
    with caplog.at_level(logging.INFO):
        run(with_spec(task, d, pretrain=SCHEDULE))  # the whole ladder: resumes the same run
    assert any("resuming from step-00000022" in r.getMessage() for r in caplog.records)
    assert_same_run(d, tmp_path / "ref")  # weights, loss and rate at every logged step (main's rows included)


def test_a_finetuning_cell_of_main_resumes_at_its_step_and_rate(before, tmp_path, caplog):
    import pipeline.finetune as finetune
    from pipeline.task import execute

    _, plan = small_plan(tmp_path)
    for s in ("tokenizer", "init"):
        assert execute(first(plan, s)) == "ok"
    cell = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] == 0)
    change = {"max_steps": 60, "eval_every": 4, "patience": 100, "schedule": "linear", "warmup_steps": 6}
    finetune.run(with_spec(cell, tmp_path / "ref", finetune=change))
    d = tmp_path / "run"
    old = run_before(before, with_spec(cell, d, finetune=change), tmp_path)
    wait_for(lambda: (d / "metrics.jsonl").exists() and (d / "metrics.jsonl").read_text().strip(), old)
    old.send_signal(signal.SIGTERM)
    assert old.wait(timeout=300) == 0
    stopped = (tmp_path / "before.log").read_text().split("stopped by signal at step ")[1]
    step = int(stopped.split(";")[0])
    assert step < change["max_steps"]
    with caplog.at_level(logging.INFO):
        finetune.run(with_spec(cell, d, finetune=change))
    assert any(f"resuming at step {step}" in r.getMessage() for r in caplog.records)
    got, want = (json.loads((x / "finetune.json").read_text()) for x in (d, tmp_path / "ref"))
    assert got["steps"] == want["steps"] and got["best_step"] == want["best_step"]
    np.testing.assert_allclose([c["val_ce"] for c in got["curve"]], [c["val_ce"] for c in want["curve"]], rtol=1e-6)
    assert max_abs_diff(weights(d / "best"), weights(tmp_path / "ref" / "best")) < 1e-6
