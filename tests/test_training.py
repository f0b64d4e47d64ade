"""The training machinery (pipeline.training): checkpoints that are only read when complete, the fallback
to the previous one, schedules, RNG capture. Also home of the small-corpus helpers the pretrain, finetune,
evaluate and distributed tests share: a slice of the real offline corpus as `data=local` files, a plan
built from the real config, and its tokenizer/tokens/init tasks run once per test module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose, corpus_dir

from pipeline.training import (
    MARKER,
    STATE,
    capture_rng,
    latest_checkpoint,
    learning_rate,
    make_optimizer,
    prune_states,
    restore_rng,
    save_checkpoint,
    set_lr,
    step_dir,
    verify_checkpoint,
)

# ------------------------------------------------------------------------------ shared helpers

LANGS = ("en", "de")


def _head(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= n:
                break
            g.write(line)


def small_corpus(root: Path, langs: tuple[str, ...] = LANGS, mono_lines: int = 400, train_pairs: int = 600,
                 held_out: int = 48) -> list[str]:
    """The first lines of the real offline corpus as `data=local` files under root; Hydra overrides that
    point the config at them (and the datasets cache inside root, so the shared cache is never written)."""
    src = corpus_dir()
    if not (src / "manifest.json").exists():
        pytest.skip(f"the offline corpus is not built at {src} (run `make corpus`)")
    out = [f"paths.cache={root / 'cache'}", "data=local", f"data.languages=[{','.join(langs)}]",
           "data.pairs=[en-de]"]
    for lang in langs:
        _head(src / "mono" / f"{lang}.jsonl", root / "data" / f"{lang}.jsonl", mono_lines)
        out.append(f"+data.local.mono.{lang}={root / 'data' / f'{lang}.jsonl'}")
    for split, n in (("train", train_pairs), ("validation", held_out), ("test", held_out)):
        _head(src / "pairs" / "en-de" / f"{split}.jsonl", root / "data" / f"en-de.{split}.jsonl", n)
        out.append(f"+data.local.pairs.en-de.{split}={root / 'data' / f'en-de.{split}.jsonl'}")
    return out


# Small enough for a fast test on 2 cores: vocabulary 400, a 3-rung ladder of ~36 steps of t5_tiny.
SMALL = ["+sweep=en_de", "scale=smoke", "tokenizer.vocab_size=400", "tokenizer.sample_lines_per_language=1500",
         "pretrain.dp_ladder=[8192,24576,40960]", "pretrain.log_every=4", "pretrain.eval_sequences=4",
         "finetune.df_ladder=[64,128]", "finetune.max_steps=12", "finetune.eval_every=4", "finetune.batch_size=8",
         "finetune.validation_size=16", "evaluate.test_size=24"]


def small_plan(root: Path, extra: list[str] = (), langs: tuple[str, ...] = LANGS):
    """(config, plan) of the small en-de sweep on the corpus slice, artifacts under root."""
    from pipeline.run import prepare

    overrides = [*SMALL, *small_corpus(root, langs), f"paths.artifacts={root / 'artifacts'}",
                 f"paths.reports={root / 'reports'}", *extra]
    return prepare(compose(overrides))


def run_upto(plan, stage: str) -> None:
    """Execute the plan's tasks of the levels before `stage` (in-process, in order)."""
    from pipeline.stages import LEVELS
    from pipeline.task import execute

    for t in plan.tasks:
        if LEVELS.index(t.stage) < LEVELS.index(stage):
            execute(t)


def first(plan, stage: str, name_part: str = ""):
    return next(t for t in plan.tasks if t.stage == stage and name_part in t.name)


def with_spec(task, directory: Path, **changes):
    """The same task writing to another directory, with spec sections changed (e.g. pretrain={...}), its spec
    typed as pipeline.task gives it to the stage (so the stage's run can be called directly)."""
    from pipeline.task import typed
    from pipeline.typed import to_dict

    spec = json.loads(json.dumps(to_dict(task.spec)))
    for k, v in changes.items():
        spec[k] = {**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v
    return typed(dataclasses.replace(task, dir=str(directory), spec=spec))


def write_plan_file(task, path: Path) -> Path:
    path.write_text(json.dumps({"sweep": "test", "summary": {}, "cells": [], "tasks": [task.to_dict()]}))
    return path


def task_cmd(plan_file: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.task", str(plan_file), "0"]


def subprocess_env() -> dict[str, str]:
    # Our checkout first (the venv's editable install may point elsewhere); same thread count as pytest,
    # so a subprocess computes exactly what an in-process run computes.
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": str(torch.get_num_threads())}


def start(plan_file: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(task_cmd(plan_file), cwd=ROOT, env=subprocess_env(), stdout=open(log, "w"),  # noqa: SIM115
                            stderr=subprocess.STDOUT, text=True)


def wait_for(pred, proc: subprocess.Popen | None = None, timeout: float = 120.0, every: float = 0.01) -> None:
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before the condition held")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(every)


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(ckpt) / "model.safetensors"))


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def curve(run_dir: Path, key: str = "loss") -> list[tuple[int, float]]:
    rows = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in rows if key in r]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------ checkpoints


def _tiny_model(seed: int = 0):
    from omegaconf import OmegaConf

    from pipeline.model import build_model, load_preset

    preset = load_preset(OmegaConf.to_container(compose(["scale=smoke"]).models.t5_tiny))
    return build_model(preset, 320, seed=seed)


@pytest.fixture
def two_checkpoints(tmp_path):
    model = _tiny_model()
    for step in (3, 6):
        save_checkpoint(step_dir(tmp_path, step), model, None, {"step": step, "x": torch.arange(step)}, {"step": step})
    return tmp_path


def test_checkpoint_loads_with_from_pretrained_and_verifies(two_checkpoints):
    from transformers import T5ForConditionalGeneration

    d = step_dir(two_checkpoints, 6)
    assert verify_checkpoint(d, deep=True) is None
    listed = json.loads((d / MARKER).read_text())["files"]
    assert {"model.safetensors", "config.json", STATE, "meta.json"} <= set(listed)
    T5ForConditionalGeneration.from_pretrained(str(d))
    assert latest_checkpoint(two_checkpoints) == d


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_marker", "no_state_file", "bad_marker"])
def test_a_damaged_newest_checkpoint_falls_back_with_one_log_line(two_checkpoints, damage, caplog):
    d = step_dir(two_checkpoints, 6)
    w = d / "model.safetensors"
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "flip":  # same size, different content: only the hash sees it
        b = bytearray(w.read_bytes())
        b[-1] ^= 0xFF
        w.write_bytes(bytes(b))
    elif damage == "no_marker":
        (d / MARKER).unlink()
    elif damage == "no_state_file":
        (d / STATE).unlink()
    else:
        (d / MARKER).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(two_checkpoints) == step_dir(two_checkpoints, 3)
    lines = [r.getMessage() for r in caplog.records if "step-00000006" in r.getMessage()]
    assert len(lines) == 1 and "falling back" in lines[0], lines


def test_a_half_written_temporary_is_removed_and_said(two_checkpoints, caplog):
    tmp = two_checkpoints / ".step-00000009.abc123.tmp"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"half")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(two_checkpoints) == step_dir(two_checkpoints, 6)
    assert not tmp.exists()
    assert len([r for r in caplog.records if "half-written" in r.getMessage()]) == 1


def test_no_checkpoint_at_all(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    (tmp_path / "step-00000001").mkdir()  # a directory that never got its marker
    assert latest_checkpoint(tmp_path) is None


def test_prune_keeps_two_resumable_states_and_every_weight(tmp_path):
    model = _tiny_model()
    for step in (1, 2, 3, 4):
        save_checkpoint(step_dir(tmp_path, step), model, None, {"step": step}, {"step": step})
    prune_states(tmp_path)
    have_state = [p.name for p in sorted(tmp_path.iterdir()) if (p / STATE).exists()]
    assert have_state == ["step-00000003", "step-00000004"]
    for p in tmp_path.iterdir():  # a pruned checkpoint is still complete and loadable, just not resumable
        assert verify_checkpoint(p, deep=True) is None and (p / "model.safetensors").exists()


def test_saving_over_an_existing_checkpoint_replaces_it_whole(tmp_path):
    a, b = _tiny_model(0), _tiny_model(1)
    d = step_dir(tmp_path, 5)
    save_checkpoint(d, a, None, {"step": 5}, {"step": 5})
    save_checkpoint(d, b, None, {"step": 5}, {"step": 5})
    assert verify_checkpoint(d, deep=True) is None
    assert max_abs_diff(weights(d), {k: v for k, v in b.state_dict().items() if k in weights(d)}) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000005"]


# ----------------------------------------------------------------------------- schedule, RNG


def test_schedules_do_not_depend_on_run_length():
    def const(s):
        return learning_rate(s, 1.0, "constant", 4)

    def isqrt(s):
        return learning_rate(s, 1.0, "inverse_sqrt", 4)

    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert isqrt(3) == 1.0 and isqrt(4) == 1.0 and isqrt(16) == pytest.approx(0.5)
    assert learning_rate(0, 1.0, "constant", 0) == 1.0
    assert learning_rate(7, 3e-3, "inverse_sqrt", 4, total=10) == learning_rate(7, 3e-3, "inverse_sqrt", 4)


def test_linear_schedule_warms_up_then_reaches_zero_at_the_last_step():
    lin = [learning_rate(s, 1.0, "linear", 2, total=10) for s in range(13)]
    assert lin == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="total steps"):
        learning_rate(0, 1.0, "linear", 2)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        learning_rate(0, 1.0, "cosine", 2)


def _lr_lambda_ca28798(kind: str, warmup: int, total: int | None = None):
    """The schedule factor as pretraining (a LambdaLR) and finetuning (set from the step) computed it until the
    one learning-rate function replaced both (main at ca28798), kept here verbatim as the reference."""
    import math

    warmup = max(0, int(warmup))

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "inverse_sqrt":
            return math.sqrt(max(warmup, 1)) / math.sqrt(max(step, warmup, 1))
        if kind == "linear":
            return max(0.0, (total - step) / max(total - warmup, 1))
        return 1.0

    return f


@pytest.mark.parametrize("schedule,warmup,total", [
    ("constant", 0, None), ("constant", 7, None), ("inverse_sqrt", 0, None), ("inverse_sqrt", 1, None),
    ("inverse_sqrt", 7, None), ("inverse_sqrt", 1000, None), ("linear", 0, 50), ("linear", 7, 50), ("linear", 3, 1)])
def test_the_rate_of_every_step_is_the_one_the_stages_trained_with_before(schedule, warmup, total):
    """Pretraining's old LambdaLR (stepped after each update) and finetuning's old rate set from the step gave
    every step the rate `learning_rate` gives it, to the bit: a run resumed by this code continues its curve
    exactly, and a rate one step off anywhere fails here."""
    lr, steps = 3e-3, range(1200 if warmup == 1000 else 60)
    new = [learning_rate(s, lr, schedule, warmup, total) for s in steps]
    f = _lr_lambda_ca28798(schedule, warmup, total)
    assert new == [lr * f(s) for s in steps]  # finetuning's old rate
    if schedule == "linear":
        return  # pretraining never ran the linear schedule
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, f)  # pretraining's old loop: the rate in effect at opt.step()
    old = []
    for _ in steps:
        old.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert new == old
    set_lr(opt, new[5])
    assert opt.param_groups[0]["lr"] == new[5]


def test_adamw_is_fused_on_cpu_and_steps_like_the_foreach_one():
    w = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in w]
    opt = make_optimizer(w, "adamw", 1e-2, (0.9, 0.98), 0.1)
    assert opt.defaults["fused"] is True
    ref_opt = torch.optim.AdamW(ref, lr=1e-2, betas=(0.9, 0.98), weight_decay=0.1, foreach=True)
    for step in range(3):
        for a, b in zip(w, ref, strict=True):
            a.grad = b.grad = torch.full_like(a, step - 1.0)
        opt.step()
        ref_opt.step()
    for a, b in zip(w, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_rng_capture_restores_every_generator():
    import random

    import numpy as np

    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


DAMAGES = ("truncated-weights", "no-marker", "half-written-temporary")


def damage_newest(root: Path, kind: str, newest: int, next_step: int) -> None:
    """Leave the newest checkpoint under `root` the way a killed job or a bad disk does: weights cut in half,
    no completion marker, or a half-written temporary of the next one beside it."""
    if kind == "truncated-weights":
        w = step_dir(root, newest) / "model.safetensors"
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif kind == "no-marker":
        (step_dir(root, newest) / MARKER).unlink()
    elif kind == "half-written-temporary":
        tmp = root / f".{step_dir(root, next_step).name}.k1ll3d.tmp"
        shutil.copytree(step_dir(root, newest), tmp)
        (tmp / MARKER).unlink()
        (tmp / STATE).write_bytes(b"\0" * 10)
    else:
        raise ValueError(kind)

