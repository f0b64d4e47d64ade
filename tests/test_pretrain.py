"""Pretraining survives being killed: SIGKILL, SIGTERM/SIGUSR1 and damaged checkpoints all end in the
weights and loss curve of an uninterrupted run. Real subprocesses (`python -m pipeline.task plan.json 0`,
what a SLURM array element runs) on a slice of the real corpus with t5_tiny.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import subprocess

import numpy as np
import pytest
import torch
from test_training import (
    curve,
    damage_newest,
    first,
    max_abs_diff,
    run_upto,
    small_plan,
    start,
    subprocess_env,
    task_cmd,
    wait_for,
    weights,
    with_spec,
    write_plan_file,
)

from pipeline.training import MARKER, STATE, checkpoint_meta, step_dir

LAST = 37  # steps of the small ladder (40960 raw tokens / (16 x 70))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Tokenizer, token streams and init of the small sweep, and one uninterrupted pretraining run."""
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("pt")
    _, plan = small_plan(root)
    run_upto(plan, "pretrain")
    task = first(plan, "pretrain", "en50_de50")
    ref = with_spec(task, root / "ref")
    assert execute(ref) == "ok"
    return {"root": root, "task": task, "ref": root / "ref"}


def final(run_dir) -> dict:
    return weights(step_dir(run_dir / "checkpoints", LAST))


def assert_same_run(run_dir, ref_dir) -> None:
    assert max_abs_diff(final(run_dir), final(ref_dir)) < 1e-6
    for key in ("loss", "val_loss/mixture", "dp_tokens", "lr"):
        got, want = curve(run_dir, key), curve(ref_dir, key)
        assert [s for s, _ in got] == [s for s, _ in want], key
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6, err_msg=key)
    rungs = lambda d: {k: {**v, "checkpoint": None} for k, v in json.loads((d / "rungs.json").read_text()).items()}  # noqa: E731
    assert rungs(run_dir) == rungs(ref_dir)


def test_initial_loss_is_log_vocab_on_real_data(built):
    from transformers import T5ForConditionalGeneration

    from pipeline.mixture import MixtureSampler, mixture_counts
    from pipeline.span_corruption import corrupt_batch
    from pipeline.study import Mixture
    from pipeline.vocab import load_tokenizer, sentinel_ids

    spec = built["task"].spec
    tok = load_tokenizer(spec["tokenizer_dir"])
    model = T5ForConditionalGeneration.from_pretrained(spec["init_dir"] + "/model").eval()
    counts = mixture_counts(Mixture("m", tuple(sorted(spec["mixture"].items()))), 16)
    raw, idx = MixtureSampler.from_dirs(spec["tokens_dirs"], counts, spec["raw_length"], len(tok)).batch(0)
    b = corrupt_batch(raw, idx, 0, sentinel_ids(tok), tok.eos_token_id)
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(b["input_ids"]), labels=torch.as_tensor(b["labels"]))
    loss, log_v, var = out.loss.item(), math.log(len(tok)), out.logits.var().item()
    # Uniform predictions give ln V; logits ~ N(0, s^2) add about s^2 / 2. The Mesh-TF init of the untied
    # output layer (std d_model^-0.5 on unit-RMS features) makes s ~ 1; HF's default (std 1) gives s ~ 8
    # and a loss near 30.
    assert 0.5 < var < 1.5, var
    assert abs(loss - (log_v + var / 2)) < 0.1, (loss, log_v, var)
    assert abs(loss - log_v) < 0.75, (loss, log_v)


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(built, tmp_path):
    """Killed right after a periodic checkpoint (one a step here), the rerun resumes from it and ends with
    the same weights and the same loss curve (metrics.jsonl) as the uninterrupted run."""
    run = tmp_path / "run"
    task = with_spec(built["task"], run, pretrain={"checkpoint_minutes": 1e-6})
    plan_file = write_plan_file(task, tmp_path / "plan.json")
    proc = start(plan_file, tmp_path / "first.log")
    ck = run / "checkpoints"

    def periodic_checkpoint() -> bool:
        return any((p / MARKER).exists() and not checkpoint_meta(p)["rung"] for p in ck.glob("step-*"))

    try:
        wait_for(periodic_checkpoint, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "rungs.json").exists()
    r = subprocess.run(task_cmd(plan_file), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from step-" in r.stderr
    assert_same_run(run, built["ref"])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_signal_checkpoints_exits_zero_and_rerun_continues(built, tmp_path, sig):
    run = tmp_path / "run"
    plan_file = write_plan_file(with_spec(built["task"], run), tmp_path / "plan.json")
    proc = start(plan_file, tmp_path / "first.log")
    wait_for(lambda: (run / "metrics.jsonl").exists() and curve(run), proc)  # inside the training loop
    proc.send_signal(sig)
    assert proc.wait(timeout=300) == 0
    out = (tmp_path / "first.log").read_text()
    stopped = [ln for ln in out.splitlines() if "stopped by signal at step" in ln]
    assert len(stopped) == 1 and "rerun" in stopped[0], out[-2000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert step < LAST
    saved = step_dir(run / "checkpoints", step)
    assert (saved / MARKER).exists() and (saved / STATE).exists()
    r = subprocess.run(task_cmd(plan_file), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from {saved.name}" in r.stderr
    assert_same_run(run, built["ref"])


@pytest.fixture(scope="module")
def partial(built):
    """A run stopped after its second rung (the ladder cut short: a longer ladder resumes the same run)."""
    from pipeline.pretrain import run

    d = built["root"] / "partial"
    run(with_spec(built["task"], d, dp_ladder=[8192, 24576]))
    assert sorted(p.name for p in (d / "checkpoints").iterdir()) == ["step-00000008", "step-00000022"]
    return d


@pytest.mark.parametrize("damage,resumed_at,said", [
    ("truncated-weights", 8, "step-00000022 is not usable (model.safetensors has"),
    ("no-marker", 8, "step-00000022 is not usable (no completion marker)"),
    ("half-written-temporary", 22, "removed .step-00000030.k1ll3d.tmp, half-written"),
])
def test_damaged_state_falls_back_says_so_and_ends_the_same(built, partial, tmp_path, caplog, damage, resumed_at, said):
    from pipeline.pretrain import run

    d = tmp_path / "run"
    shutil.copytree(partial, d)
    damage_newest(d / "checkpoints", damage, newest=22, next_step=30)
    with caplog.at_level(logging.INFO):
        run(with_spec(built["task"], d))
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0], warnings
    assert any(f"resuming from {step_dir(d, resumed_at).name}" in r.getMessage() for r in caplog.records)
    assert_same_run(d, built["ref"])
    assert not list((d / "checkpoints").glob(".*"))  # no temporaries left behind


@pytest.mark.slow  # 1.3 epochs of the slice's text (the sampler's own test, tests/test_mixture.py, is fast)
def test_repeated_text_on_request_trains_past_the_streams_and_each_rung_says_what_it_read(built, tmp_path):
    """pretrain.max_epochs > 1: a ladder longer than the token streams trains on (refused at the default), and
    rungs.json records per rung the unique tokens among the Dp seen and the epochs of the most-read language."""
    from pipeline.mixture import DataExhausted, MixtureSampler, mixture_counts
    from pipeline.pretrain import run
    from pipeline.study import Mixture
    from pipeline.vocab import load_tokenizer

    spec = built["task"].spec
    batch, raw = spec["pretrain"]["batch_size"], spec["raw_length"]
    counts = mixture_counts(Mixture("m", tuple(sorted(spec["mixture"].items()))), batch)
    once = MixtureSampler.from_dirs(spec["tokens_dirs"], counts, raw, len(load_tokenizer(spec["tokenizer_dir"])))
    steps = once.steps_available()  # steps before some language would be read twice
    ladder = [steps // 2 * batch * raw, int(steps * 1.3) * batch * raw]
    with pytest.raises(DataExhausted, match="text lasts"):
        run(with_spec(built["task"], tmp_path / "once", dp_ladder=ladder))
    run(with_spec(built["task"], tmp_path / "rep", dp_ladder=ladder, pretrain={"max_epochs": 2}))
    rungs = json.loads((tmp_path / "rep" / "rungs.json").read_text())
    first, top = (rungs[str(d)] for d in ladder)
    assert first["unique_tokens"] == first["dp_tokens"] and first["epochs"] <= 1
    assert top["unique_tokens"] < top["dp_tokens"] and 1 < top["epochs"] <= 1.3 + 1e-9
    assert max(top["epochs_by_language"].values()) == top["epochs"]


def rung_weights_equal(run_dir, ref_dir, steps) -> None:
    for s in steps:
        assert max_abs_diff(weights(step_dir(run_dir / "checkpoints", s)), weights(step_dir(ref_dir / "checkpoints", s))) < 1e-6, s


def rungs_json(run_dir) -> dict:
    return json.loads((run_dir / "rungs.json").read_text())


@pytest.fixture(scope="module")
def top_only(built):
    """The run trained for a sweep whose ladder is the top rung alone (a run is shared by sweeps whose ladders
    differ: its identity leaves the ladder out, as desk2's ablation [8M, 16M] and study [1M ... 16M] did)."""
    from pipeline.task import execute

    d = built["root"] / "top-only"
    assert execute(with_spec(built["task"], d, dp_ladder=[40960])) == "ok"
    assert [p.name for p in (d / "checkpoints").glob("step-*")] == [f"step-{LAST:08d}"]
    return d


def test_a_shared_run_remakes_the_rungs_another_ladder_did_not_keep(built, top_only, tmp_path, caplog):
    """The sweep with the whole ladder finds the run at its last step with no checkpoint at the lower rungs:
    stage=plan says it will make them, the run trains again from the init to the highest of them (the run's own
    trajectory: the uninterrupted run's weights), leaves the top rung as it was, and then counts as done."""
    from pipeline.plan import Plan, task_state
    from pipeline.pretrain import rungs_to_remake
    from pipeline.run import remade_rungs
    from pipeline.task import execute, is_complete

    d = tmp_path / "run"
    shutil.copytree(top_only, d)
    task = with_spec(built["task"], d)  # the whole ladder [8192, 24576, 40960]: steps 8, 22, 37
    assert task_state(task) == "partial" and not is_complete(task)
    assert rungs_to_remake(task) == (LAST, {8: 8192, 22: 24576})
    lines = remade_rungs(Plan(sweep="test", tasks=[task], cells=[], summary={}))
    assert lines[1] == "rungs to remake" and "keeps no checkpoint for Dp 8,192, 24,576" in lines[2]
    assert f"trained to step {LAST}" in lines[2] and "from its init to step 22" in lines[2]
    top = step_dir(d / "checkpoints", LAST) / "model.safetensors"
    mtime = top.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert execute(task) == "ok"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "keeps no checkpoint for the rungs Dp 8,192, 24,576" in said[0], said
    assert top.stat().st_mtime_ns == mtime  # the rung the run had is not trained again
    rung_weights_equal(d, built["ref"], (8, 22, LAST))
    assert rungs_json(d) == rungs_json(built["ref"])  # upstream losses and text read, each rung
    assert not (d / "replay").exists() and is_complete(task) and task_state(task) == "done"
    assert rungs_to_remake(task)[1] == {} and remade_rungs(Plan(sweep="test", tasks=[task], cells=[], summary={})) == []


@pytest.mark.slow  # a subprocess killed in the replay, then rerun
def test_a_replay_killed_part_way_resumes_and_ends_the_same(built, top_only, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(top_only, run_dir)
    plan_file = write_plan_file(with_spec(built["task"], run_dir, pretrain={"checkpoint_minutes": 1e-6}),
                                tmp_path / "plan.json")
    side = run_dir / "replay" / "checkpoints"
    proc = start(plan_file, tmp_path / "first.log")
    try:
        # a periodic save past the replay's first rung (named by its step: retain may delete it as we look)
        wait_for(lambda: any(int(p.name[5:]) > 8 and (p / MARKER).exists() for p in side.glob("step-*")), proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    r = subprocess.run(task_cmd(plan_file), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "replay resuming from step-" in r.stderr
    rung_weights_equal(run_dir, built["ref"], (8, 22, LAST))
    assert rungs_json(run_dir) == rungs_json(built["ref"]) and not (run_dir / "replay").exists()


def test_a_replay_uses_what_a_killed_one_made_and_a_deleted_rung_is_made_again(built, top_only, tmp_path, caplog):
    """What a replay killed part-way left in replay/ is used (a finished rung moved in, not trained again), a
    replay/ nothing needs is dropped, and a rung checkpoint deleted by hand makes the run unfinished again (the
    plan counts it partial) until the rerun remakes it."""
    from pipeline.plan import task_state
    from pipeline.pretrain import run
    from pipeline.task import execute, is_complete

    d = tmp_path / "run"
    shutil.copytree(top_only, d)
    shutil.copytree(step_dir(built["ref"] / "checkpoints", 8), step_dir(d / "replay" / "checkpoints", 8))
    task = with_spec(built["task"], d)

    def remade() -> list[str]:
        return [r.getMessage().split("the rungs ")[1].split(" of")[0] for r in caplog.records
                if "keeps no checkpoint for the rungs" in r.getMessage()]

    with caplog.at_level(logging.INFO):
        assert execute(task) == "ok"
    assert remade() == ["Dp 24,576"]  # the rung at step 8 came from replay/, made before the kill
    rung_weights_equal(d, built["ref"], (8, 22, LAST))
    assert rungs_json(d) == rungs_json(built["ref"]) and not (d / "replay").exists()

    (d / "replay" / "checkpoints").mkdir(parents=True)  # left by a kill after the last move
    run(task)
    assert not (d / "replay").exists()

    shutil.rmtree(step_dir(d / "checkpoints", 22))
    assert not is_complete(task) and task_state(task) == "partial"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert execute(task) == "ok"
    assert remade() == ["Dp 24,576"] and is_complete(task)
    rung_weights_equal(d, built["ref"], (8, 22, LAST))
    assert rungs_json(d) == rungs_json(built["ref"])
