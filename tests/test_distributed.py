"""The distributed runtime (pipeline.distributed). Two CPU processes (gloo) with FSDP2 train a tiny T5 like one
process at the same global batch: the same clipped global gradient norm, the same weights, Adafactor factoring
the whole matrices; their sharded checkpoint resumes in one process; one rank's signal flag becomes every
rank's decision; a planted training state whose unpickling would run code is refused. And through the stages:
torchrun pretraining (DDP, FSDP2) ends with a single process's weights, loss curve and rungs.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from _runtime_worker import MAX_NORM, build, train
from test_training import (
    curve,
    first,
    free_port,
    max_abs_diff,
    run_upto,
    small_plan,
    subprocess_env,
    wait_for,
    weights,
    with_spec,
    write_plan_file,
)

from pipeline.distributed import Runtime, UnsafeCheckpoint, full_model_state, load_sharded
from pipeline.training import (
    SHARDED,
    STATE,
    latest_checkpoint,
    load_state,
    load_training_checkpoint,
    save_training_checkpoint,
    step_dir,
)

LADDER = [8192, 16384]  # 8 and 15 steps of 16 x 70 raw tokens
TIMEOUT = 240  # seconds: a multi-process test that hangs fails


pytestmark = pytest.mark.usefixtures("one_thread")


def spawn(fn, world: int, *args, timeout: float = TIMEOUT) -> None:
    """Run fn(rank, world, *args) in `world` spawned processes; fail (and kill them) past `timeout`."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(fn, args=(world, *args), nprocs=world, join=False, start_method="spawn")
    deadline = time.time() + timeout
    try:
        while not ctx.join(timeout=1):
            if time.time() > deadline:
                raise AssertionError(f"{world} processes did not finish within {timeout} s (a hang)")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()


def test_two_fsdp2_processes_clip_step_factor_and_checkpoint_like_one(tmp_path):
    """One spawn of 2 gloo processes (CI runs it): FSDP2 per block and root, Adafactor, micro-batches without
    sync, clipping by the global norm; a sharded checkpoint. Compared with one process in this test."""
    from _runtime_worker import run

    steps = 3
    spawn(run, 2, free_port(), str(tmp_path), steps, True)  # with activation checkpointing per block
    got = torch.load(tmp_path / "result.pt", weights_only=True)
    assert got["agreed"] == (10.0, 1.0)  # rank 1's signal and rank 0's clock, agreed on both ranks

    # Adafactor on the sharded parameter factors the whole matrix: statistics of its full rows and columns.
    rows, cols = got["shape"]
    assert got["local_rows"] == rows // 2  # the parameter itself is sharded
    assert got["factored"] == {"exp_avg_sq_row": ("DTensor", (rows,)), "exp_avg_sq_col": ("DTensor", (cols,))}

    rt = Runtime(device=torch.device("cpu"), dtype="fp32")
    one, opt = build(rt, "none", "adafactor")
    norms = train(one, opt, rt, range(steps))
    assert min(norms) > MAX_NORM  # clipping acted at every step
    np.testing.assert_allclose(got["norms"], norms, rtol=1e-5)  # the global norm, not one shard's

    # The 2-process checkpoint: Hugging Face weights equal the single process's; the sharded state resumes in
    # one process, and the next step equals the uninterrupted single process's.
    ck = step_dir(tmp_path, steps)
    assert latest_checkpoint(tmp_path) == ck
    assert sorted(p.name for p in (ck / SHARDED).iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    sharded_weights = weights(ck)  # the tied embeddings once, as save_pretrained writes them

    def state(model) -> dict[str, torch.Tensor]:
        return {k: v for k, v in full_model_state(model).items() if k in sharded_weights}

    assert max_abs_diff(sharded_weights, state(one)) < 1e-5
    resumed, ropt = build(rt, "none", "adafactor")
    assert load_training_checkpoint(ck, resumed, ropt)["step"] == steps
    assert max_abs_diff(state(resumed), sharded_weights) == 0
    a = train(one, opt, rt, range(steps, steps + 2))
    b = train(resumed, ropt, rt, range(steps, steps + 2))
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert max_abs_diff(state(resumed), state(one)) < 1e-5


class _RunsCode:
    """Unpickling this calls os.system: what a planted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_planted_training_state_that_would_run_code_is_refused(tmp_path):
    rt = Runtime(device=torch.device("cpu"), dtype="fp32")
    model, opt = build(rt, "none", "adamw")
    train(model, opt, rt, range(1))
    ck = save_training_checkpoint(rt, step_dir(tmp_path, 1), model, opt, None, {"step": 1}, {"step": 1})
    assert load_state(ck)["step"] == 1
    marker = tmp_path / "ran"

    # training_state.pt: a torch.save file whose unpickling would run a command
    torch.save({"step": 1, "x": _RunsCode(marker)}, ck / STATE)
    with pytest.raises(UnsafeCheckpoint, match="refusing to load it"):
        load_training_checkpoint(ck, model, opt)
    assert not marker.exists()

    # the sharded state's metadata: a pickle that would run a command
    (ck / SHARDED / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(UnsafeCheckpoint, match="posix.system|os.system"):
        load_sharded(ck / SHARDED, model, opt)
    assert not marker.exists()


def test_a_checkpoint_written_by_an_older_version_is_refused_not_run(tmp_path):
    """numpy's RNG state used to be pickled as an ndarray: such a state file is refused with the reason."""
    torch.save({"rng": np.random.get_state()}, tmp_path / STATE)
    with pytest.raises(UnsafeCheckpoint, match="Delete that checkpoint"):
        load_state(tmp_path)


# ------------------------------------------------------------------------------------ the stages


def torchrun(plan_file, nproc: int = 2, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "pipeline.task", str(plan_file), "0"]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    if kw.pop("background", False):
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=kw.get("timeout", 600))


@pytest.fixture(scope="module")
def pretrain_base(tmp_path_factory):
    """The small plan's pretraining task (its inputs built) and a single-process run of it: the reference."""
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("dist")
    _, plan = small_plan(root)
    run_upto(plan, "pretrain")
    base = first(plan, "pretrain", "en50_de50")
    assert base.spec["pretrain"]["batch_size"] == 16 and base.spec["pretrain"]["distributed"] == "auto"
    single = with_spec(base, root / "single", dp_ladder=LADDER)
    assert execute(single) == "ok"
    return base, root / "single"


def same_run(a_dir, b_dir, last: int = 15, tol: float = 1e-5) -> None:
    a, b = weights(step_dir(a_dir / "checkpoints", last)), weights(step_dir(b_dir / "checkpoints", last))
    assert max_abs_diff(a, b) < tol
    got, want = curve(b_dir), curve(a_dir)
    assert [s for s, _ in got] == [s for s, _ in want]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=tol)
    rungs = [json.loads((d / "rungs.json").read_text()) for d in (a_dir, b_dir)]
    assert rungs[0].keys() == rungs[1].keys() == {str(x) for x in LADDER}
    for k in rungs[0]:
        assert rungs[0][k]["dp_tokens"] == rungs[1][k]["dp_tokens"]
        assert rungs[0][k]["upstream_mixture"] == pytest.approx(rungs[1][k]["upstream_mixture"], rel=tol)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(pretrain_base, tmp_path, mode):
    """`torchrun --nproc_per_node 2 -m pipeline.task plan.json 0`, 8 rows each, ends as one process with 16;
    the FSDP2 run's rung checkpoints load with transformers."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    base, single = pretrain_base
    init = weights(base.spec["init_dir"] + "/model")
    a = weights(step_dir(single / "checkpoints", 15))
    assert max_abs_diff(a, {k: init[k] for k in a}) > 1e-3  # training moved the weights
    run = with_spec(base, tmp_path / mode, dp_ladder=LADDER, pretrain={"micro_batch_size": 8, "distributed": mode})
    r = torchrun(write_plan_file(run, tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert f"data-parallel over 2 processes ({mode}, gloo)" in r.stderr, r.stderr[-2000:]
    same_run(single, tmp_path / mode)
    for step in (8, 15):  # the rungs
        ck = step_dir(tmp_path / mode / "checkpoints", step)
        model = T5ForConditionalGeneration.from_pretrained(ck)
        assert max_abs_diff({k: v for k, v in model.state_dict().items() if k in a}, weights(ck)) == 0
        AutoTokenizer.from_pretrained(ck)


@pytest.mark.slow
def test_a_signal_to_one_rank_saves_and_stops_both_then_the_rerun_finishes_on_one_process(pretrain_base, tmp_path):
    """SIGUSR1 to rank 1 only: both ranks save the same step and exit (the test's timeout catches a hang); the
    sharded checkpoint then resumes on one process, and the run ends as the uninterrupted one."""
    from pipeline.task import execute

    base, single = pretrain_base
    run = with_spec(base, tmp_path / "run", dp_ladder=LADDER, pretrain={"micro_batch_size": 8, "distributed": "fsdp"})
    plan_file = write_plan_file(run, tmp_path / "plan.json")
    proc = torchrun(plan_file, background=True)
    ckroot = tmp_path / "run" / "checkpoints"
    wait_for(lambda: step_dir(ckroot, 8).exists(), proc, timeout=TIMEOUT)  # past the first rung
    ranks = _children(_children(proc.pid)[0]) if len(_children(proc.pid)) == 1 else _children(proc.pid)
    assert len(ranks) == 2, ranks
    os.kill(max(ranks), signal.SIGUSR1)  # one worker only
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_job(proc)
        raise AssertionError("the ranks did not stop together (a hang)") from None
    assert proc.returncode == 0, out[-4000:]
    assert "stopped by signal" in out
    stopped = latest_checkpoint(ckroot)
    assert stopped is not None and 8 < int(stopped.name.split("-")[1]) < 15, out[-3000:]
    assert len(list((stopped / SHARDED).glob("*.distcp"))) == 2  # both ranks wrote their shards
    assert execute(run) == "ok"  # the rerun: one process, from the 2-process sharded checkpoint
    same_run(single, tmp_path / "run")


@pytest.mark.slow
def test_two_fsdp2_processes_remake_the_rungs_a_shared_run_lacks(pretrain_base, tmp_path):
    """A run trained (on one process) for a ladder of its top rung alone, then asked for the whole ladder on two
    FSDP2 ranks: they agree on the rungs to remake, train them again from the init, rank 0 moves them in, and the
    run ends with the uninterrupted run's rungs (test_pretrain.py has the one-process case)."""
    from pipeline.task import execute

    base, single = pretrain_base
    d = tmp_path / "run"
    assert execute(with_spec(base, d, dp_ladder=LADDER[-1:])) == "ok"
    run = with_spec(base, d, dp_ladder=LADDER, pretrain={"micro_batch_size": 8, "distributed": "fsdp"})
    r = torchrun(write_plan_file(run, tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stderr.count("keeps no checkpoint for the rungs Dp 8,192 of this ladder") == 1, r.stderr[-3000:]
    for step in (8, 15):
        got, want = (weights(step_dir(x / "checkpoints", step)) for x in (d, single))
        assert max_abs_diff(got, want) < 1e-5, step
    assert json.loads((d / "rungs.json").read_text()).keys() == {str(x) for x in LADDER}
    assert not (d / "replay").exists()


@pytest.mark.slow
def test_kills_during_a_save_and_at_a_random_step_resume_on_another_number_of_processes(pretrain_base, tmp_path):
    """Checkpointing every step: SIGKILL to the 2-process job while a checkpoint is being written, rerun on one
    process, SIGKILL at a random later step, rerun on two: the run ends as the uninterrupted one."""
    from test_training import task_cmd

    base, single = pretrain_base
    run = with_spec(base, tmp_path / "run", dp_ladder=LADDER,
                    pretrain={"micro_batch_size": 8, "distributed": "fsdp", "checkpoint_minutes": 1e-6})
    plan_file = write_plan_file(run, tmp_path / "plan.json")
    ckroot = tmp_path / "run" / "checkpoints"
    rng = np.random.default_rng()

    def saved(step: int) -> bool:
        return any(int(p.name[5:13]) >= step for p in ckroot.glob("step-*"))

    # 1. two processes, killed while a checkpoint after a random step is half-written: its temporary exists,
    # the sharded state written (a hook holds each save open for a second there, so the kill lands inside)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_SAVE)
    proc = torchrun(plan_file, background=True, env={"PYTHONPATH": f"{hook}{os.pathsep}{subprocess_env()['PYTHONPATH']}",
                                                     "DS_TEST_SLOW_SAVE": "1.0"})
    at = int(rng.integers(2, 6))
    wait_for(lambda: saved(at) and any(ckroot.glob(".step-*.tmp/sharded/.metadata")), proc, timeout=TIMEOUT)
    kill_job(proc)
    assert any(ckroot.glob(".step-*.tmp"))  # killed inside a save
    first_stop = max(int(p.name[5:13]) for p in ckroot.glob("step-*"))
    assert first_stop < 15 and not (tmp_path / "run" / "status.json").exists()

    # 2. one process resumes from the 2-process checkpoint, killed at a random later step
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(task_cmd(plan_file), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    at = int(rng.integers(first_stop + 1, 14))
    wait_for(lambda: saved(at), proc, timeout=TIMEOUT, every=0.001)
    os.killpg(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    assert f"resuming from step-{first_stop:08d}" in out, out[-3000:]
    assert not (tmp_path / "run" / "status.json").exists()

    # 3. two processes finish it
    r = torchrun(plan_file)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "resuming from step-" in r.stderr
    same_run(single, tmp_path / "run")


SLOW_SAVE = """import os
if os.environ.get("DS_TEST_SLOW_SAVE"):
    import time

    import pipeline.training as training

    def slow(directory, model, opt, _save=training.save_sharded):
        _save(directory, model, opt)
        time.sleep(float(os.environ["DS_TEST_SLOW_SAVE"]))

    training.save_sharded = slow
"""


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL to torchrun's workers (each in a session of its own) and to torchrun."""
    for pid in _children(proc.pid):
        os.kill(pid, signal.SIGKILL)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_finetuning_in_token_micro_batches_on_two_processes_equals_one_process(tmp_path, mode):
    """A finetuning cell on 2 processes (DDP, FSDP2), its 8-pair batches cut into micro-batches of at most 128
    padded tokens, ends with the best model, validation curve and training losses of one process taking whole
    batches."""
    from pipeline import finetune
    from pipeline.task import execute

    _, plan = small_plan(tmp_path)
    for s in ("tokenizer", "init"):
        assert execute(first(plan, s)) == "ok"
    cell = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] == 0
                and t.spec["df"] == 64)
    # Without dropout: its masks are drawn per process and per micro-batch, so no split could reproduce them.
    change = {"max_steps": 8, "eval_every": 4, "patience": 100, "dropout_rate": 0.0}
    finetune.run(with_spec(cell, tmp_path / "ref", finetune=change))
    run = with_spec(cell, tmp_path / mode, finetune={**change, "distributed": mode, "micro_batch_tokens": 128})
    r = torchrun(write_plan_file(run, tmp_path / "plan.json"))
    assert r.returncode == 0, r.stderr[-4000:]
    got, want = (json.loads((tmp_path / d / "finetune.json").read_text()) for d in (mode, "ref"))
    assert got["steps"] == want["steps"] == 8 and got["best_step"] == want["best_step"]
    np.testing.assert_allclose([c["val_ce"] for c in got["curve"]], [c["val_ce"] for c in want["curve"]], rtol=1e-5)
    np.testing.assert_allclose([c.get("train_loss", 0) for c in got["curve"]],
                               [c.get("train_loss", 0) for c in want["curve"]], rtol=1e-5)
    assert max_abs_diff(weights(tmp_path / mode / "best"), weights(tmp_path / "ref" / "best")) < 1e-4


def test_activation_checkpointing_changes_neither_the_numbers_nor_the_checkpoint(tmp_path):
    """One process: blocks recomputed in backward give the same norms and weights; the checkpoint's names are the
    model's own (no wrapper prefix), so it loads into a model without the switch."""
    rt = Runtime(device=torch.device("cpu"), dtype="fp32")
    plain, opt = build(rt, "none", "adamw")
    ac, ac_opt = build(rt, "none", "adamw", activation_checkpointing=True)
    assert any(type(m).__name__ == "CheckpointWrapper" for m in ac.modules())
    np.testing.assert_allclose(train(ac, ac_opt, rt, range(2)), train(plain, opt, rt, range(2)), rtol=1e-6)
    ck = save_training_checkpoint(rt, step_dir(tmp_path, 2), ac, ac_opt, None, {"step": 2}, {"step": 2})
    saved = weights(ck)
    assert not any("_checkpoint_wrapped_module" in k for k in saved)
    assert max_abs_diff(saved, {k: v for k, v in full_model_state(plain).items() if k in saved}) < 1e-6
    fresh, fresh_opt = build(rt, "none", "adamw")
    load_training_checkpoint(ck, fresh, fresh_opt)
    np.testing.assert_allclose(train(fresh, fresh_opt, rt, range(2, 3)), train(plain, opt, rt, range(2, 3)), rtol=1e-6)


def test_a_lora_cell_checkpoint_resumes_its_adapters_and_optimizer(tmp_path):
    """LoRA: the checkpoint's Hugging Face weights are the merged model; its sharded state holds the adapters and
    their optimizer, which a fresh LoRA model on the base weights resumes exactly."""
    from pipeline.config import LoraConfig
    from pipeline.finetune import bare
    from pipeline.model import PRESETS, Seq2SeqLoss, build_model
    from pipeline.training import make_optimizer

    lora = LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q", "v"))

    def cell():
        import peft

        base = build_model(PRESETS["t5_tiny"], 320, seed=0)
        model = peft.get_peft_model(base, peft.LoraConfig(task_type=peft.TaskType.SEQ_2_SEQ_LM, r=lora.r,
                                                          lora_alpha=lora.alpha, lora_dropout=0.0,
                                                          target_modules=list(lora.target_modules)))
        loss = Seq2SeqLoss(model)
        return model, loss, make_optimizer(loss.parameters(), "adamw", 1e-2)

    rt = Runtime(device=torch.device("cpu"), dtype="fp32")
    model, loss, opt = cell()
    train(loss, opt, rt, range(2))
    ck = save_training_checkpoint(rt, step_dir(tmp_path, 2), loss, opt, None, {"step": 2}, {"step": 2},
                                  weights=bare(model))
    merged = weights(ck)
    assert not any("lora" in k for k in merged)
    assert max_abs_diff(merged, {k: v for k, v in bare(model).state_dict().items() if k in merged}) == 0
    model2, loss2, opt2 = cell()
    load_training_checkpoint(ck, loss2, opt2)
    np.testing.assert_allclose(train(loss2, opt2, rt, range(2, 4)), train(loss, opt, rt, range(2, 4)), rtol=1e-6)
