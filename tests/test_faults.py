"""Faults during FINETUNING (pretraining's are in test_pretrain.py, the checkpoint machinery's in
test_training.py): a damaged newest state (truncated weights, no completion marker, a half-written temporary)
is detected, said in one log line, and the rerun falls back to the previous state and ends with the best
model and validation curve of an uninterrupted run; SIGTERM and SIGUSR1 checkpoint, exit 0 with a message,
and the rerun continues from that checkpoint to the same end.

The cell finetunes the Dp = 0 baseline (the init checkpoint), so no pretraining is needed: the small en-de
sweep of test_training.py, 16 steps with a validation check (and a resumable state) every 4.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess

import numpy as np
import pytest
from test_training import (
    curve,
    damage_newest,
    max_abs_diff,
    small_plan,
    start,
    subprocess_env,
    task_cmd,
    wait_for,
    weights,
    with_spec,
    write_plan_file,
)

from pipeline.training import MARKER, STATE, step_dir

STEPS = 16
FT = {"max_steps": STEPS, "eval_every": 4, "patience": 100}  # never stops early: every run goes to step 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tokenizer and init of the small sweep, and one uninterrupted finetuning of the baseline cell."""
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("ft")
    _, plan = small_plan(root)
    task = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["dp_rung"] == 0)
    by_id = plan.by_id()
    for dep in ("tokenizer", "init"):
        assert execute(next(by_id[d] for d in _closure(by_id, task) if by_id[d].stage == dep)) == "ok"
    task = with_spec(task, root / "ft", finetune=FT)
    ref = with_spec(task, root / "ref")
    assert execute(ref) == "ok"
    assert json.loads((root / "ref" / "finetune.json").read_text())["steps"] == STEPS
    return {"root": root, "task": task, "ref": root / "ref"}


def _closure(by_id, task) -> list[str]:
    out, todo = [], list(task.deps)
    while todo:
        d = todo.pop()
        if d not in out:
            out.append(d)
            todo.extend(by_id[d].deps)
    return out


def assert_same_cell(run_dir, ref_dir) -> None:
    """The best model, the early-stopping record and the validation curve of the uninterrupted run."""
    assert max_abs_diff(weights(run_dir / "best"), weights(ref_dir / "best")) < 1e-6
    got, want = (json.loads((d / "finetune.json").read_text()) for d in (run_dir, ref_dir))
    for key in ("steps", "best_step", "stopped", "df_examples", "df_tokens"):
        assert got[key] == want[key], key
    np.testing.assert_allclose(got["best_val_ce"], want["best_val_ce"], rtol=1e-6)
    assert [c["step"] for c in got["curve"]] == [c["step"] for c in want["curve"]]
    np.testing.assert_allclose([c["val_ce"] for c in got["curve"]], [c["val_ce"] for c in want["curve"]], rtol=1e-6)
    for key in ("train_loss", "val_ce"):
        assert [s for s, _ in curve(run_dir, key)] == [s for s, _ in curve(ref_dir, key)], key
        np.testing.assert_allclose([v for _, v in curve(run_dir, key)], [v for _, v in curve(ref_dir, key)], rtol=1e-6)
    assert not (run_dir / "state").exists()  # the resumable states go once the cell is finished


@pytest.fixture(scope="module")
def partial(built):
    """A cell SIGKILLed right after its step-8 state: states of steps 4 and 8 on disk, not finished."""
    d = built["root"] / "partial"
    plan_file = write_plan_file(with_spec(built["task"], d), built["root"] / "partial.json")
    proc = start(plan_file, built["root"] / "partial.log")
    try:
        wait_for(lambda: (step_dir(d / "state", 8) / MARKER).exists(), proc, timeout=300, every=0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    states = sorted(p.name for p in (d / "state").iterdir())
    assert states == ["step-00000004", "step-00000008"], states  # killed before the step-12 state
    assert not (d / "finetune.json").exists()
    return d


@pytest.mark.parametrize("damage,resumed_at,said", [
    ("truncated-weights", 4, "checkpoint step-00000008 is not usable (model.safetensors has"),
    ("no-marker", 4, "checkpoint step-00000008 is not usable (no completion marker); falling back"),
    ("half-written-temporary", 8, "removed .step-00000012.k1ll3d.tmp, half-written by a process that was killed"),
], ids=["truncated-weights", "no-marker", "half-written-temporary"])
def test_damaged_state_falls_back_says_so_and_ends_the_same(built, partial, tmp_path, caplog, damage, resumed_at, said):
    from pipeline.task import execute

    d = tmp_path / "run"
    shutil.copytree(partial, d)
    damage_newest(d / "state", damage, newest=8, next_step=12)
    with caplog.at_level(logging.INFO):
        assert execute(with_spec(built["task"], d)) == "ok"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0], warnings
    assert any(f"resuming at step {resumed_at} " in r.getMessage() for r in caplog.records)
    assert_same_cell(d, built["ref"])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_checkpoints_exits_zero_and_rerun_continues(built, tmp_path, sig):
    d = tmp_path / "run"
    plan_file = write_plan_file(with_spec(built["task"], d), tmp_path / "plan.json")
    proc = start(plan_file, tmp_path / "first.log")
    wait_for(lambda: (step_dir(d / "state", 4) / MARKER).exists(), proc, timeout=300, every=0.005)  # in the loop
    proc.send_signal(sig)
    assert proc.wait(timeout=300) == 0
    out = (tmp_path / "first.log").read_text()
    stopped = [ln for ln in out.splitlines() if "stopped by signal at step" in ln]
    assert len(stopped) == 1 and "rerun to continue" in stopped[0], out[-2000:]
    assert f"received {sig.name}" in out and out.rstrip().endswith(": preempted")
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert 4 <= step < STEPS
    saved = step_dir(d / "state", step)
    assert (saved / MARKER).exists() and (saved / STATE).exists()
    assert not (d / "status.json").exists() and not (d / "finetune.json").exists()
    r = subprocess.run(task_cmd(plan_file), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming at step {step} " in r.stderr
    assert_same_cell(d, built["ref"])
