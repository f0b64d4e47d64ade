"""Every job checked before it runs or is submitted (pipeline/checks.py) and memory per GPU measured on the real
model under FakeTensorMode (pipeline/memory.py), on the real Hydra config."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, cli, compose
from test_slurm_executor import toy_plan

from pipeline.checks import format_table
from pipeline.checks import stage_checks as _stage_checks
from pipeline.config import ConfigError, load_config
from pipeline.executors import task_resources
from pipeline.executors.slurm import SlurmExecutor
from pipeline.model import count_params, load_preset

TRAIN_EVAL = ("pretrain", "finetune", "evaluate")


def stage_checks(cfg, stages, memory: bool = True):
    """The checks as `python -m pipeline` runs them: on the resources the configured executor gives each task."""
    return _stage_checks(cfg, stages, memory, task_resources(cfg))


def config(tmp_path: Path, *overrides: str):
    return load_config(compose(["+sweep=en_de", f"paths.artifacts={tmp_path / 'art'}",
                                f"paths.reports={tmp_path / 'rep'}", *overrides]))


# -------------------------------------------------------------------------------------------- refusals


def test_plan_refuses_a_micro_batch_that_does_not_divide_over_the_gpus(tmp_path, fake_sbatch, l10n_corpus):
    """The reported bug: scale=gpu executor=slurm gives pretraining 8 GPUs; with micro-batch 32 (128 is not a
    multiple of 32 x 8) stage=plan exits 2 with one line naming both settings, writes no plan, submits nothing.
    (model=t5_tiny keeps the measurement short; the check is the same for every model.)"""
    r = cli("+sweep=en_de", "scale=gpu", "executor=slurm", "model=t5_tiny", "pretrain.micro_batch_size=32",
            "stage=plan", f"paths.artifacts={tmp_path / 'art'}", f"paths.reports={tmp_path / 'rep'}",
            env={"PYTHONPATH": str(ROOT)})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "pretrain.micro_batch_size" in lines[0] and "executor.resources.pretrain.gpus_per_node" in lines[0]
    assert "(32 x 8)" in lines[0]
    assert "problem: pretrain.micro_batch_size" in r.stdout  # the table shows the row that fails
    assert not list((tmp_path / "art").glob("plans/*.json"))
    assert not (fake_sbatch / "calls").exists()
    # the shipped gpu scale passes its own checks
    ok = stage_checks(config(tmp_path, "scale=gpu", "executor=slurm", "model=t5_tiny"), ["pretrain"], memory=False)
    assert not ok[0].problems and ok[0].resources.processes == 8


def test_slurm_executor_refuses_before_the_first_sbatch(tmp_path, fake_sbatch):
    cfg = config(tmp_path, "scale=smoke", "executor=slurm", "pretrain.micro_batch_size=4")  # 16 vs 4 x 8 GPUs
    plan = toy_plan(tmp_path / "art")
    with pytest.raises(ConfigError, match=r"pretrain\.micro_batch_size / executor\.resources\.pretrain"):
        SlurmExecutor(cfg).run(plan, plan.tasks)
    assert not (fake_sbatch / "calls").exists()
    assert not (tmp_path / "art" / "slurm").exists()


@pytest.mark.parametrize("overrides, key", [
    (["executor.resources.collect.time_min=3"], "executor.signal_delay_s / executor.resources.collect.time_min"),
    (["executor.resources.pretrain.gpus_per_node=1", "+executor.resources.pretrain.tasks_per_node=2"],
     "executor.resources.pretrain.tasks_per_node"),
    (["+executor.resources.evaluate.tasks_per_node=2", "executor.resources.evaluate.gpus_per_node=2"],
     "executor.resources.evaluate.tasks_per_node"),
    (["pretrain.distributed=none"], "pretrain.distributed / executor.resources.pretrain"),
    (["executor.resources.finetune.gpus_per_node=3"], "finetune.batch_size / executor.resources.finetune.gpus_per_node"),
    (["tokens.workers=9"], "tokens.workers / executor.resources.tokens.cpus_per_task"),  # the job has 8 CPUs
])
def test_each_resource_check_names_its_settings(tmp_path, overrides, key):
    cfg = config(tmp_path, "scale=smoke", "executor=slurm", "pretrain.micro_batch_size=2", *overrides)
    problems = [str(e) for c in stage_checks(cfg, ["tokenizer", "tokens", *TRAIN_EVAL, "collect"], memory=False)
                for e in c.problems]
    assert len(problems) == 1 and problems[0].startswith(key + ":"), problems


def test_a_micro_batch_too_small_for_one_pair_is_refused_by_the_config(tmp_path):
    from pipeline.validate import ConfigError

    with pytest.raises(ConfigError, match="finetune.micro_batch_tokens: must hold one pair"):
        config(tmp_path, "scale=smoke", "finetune.micro_batch_tokens=32")


def test_bad_gpu_memory_setting_is_refused(tmp_path):
    r = cli("+sweep=en_de", "scale=smoke", "executor.gpu_mem_gb=0", "stage=plan",
            f"paths.artifacts={tmp_path / 'art'}", f"paths.reports={tmp_path / 'rep'}")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: executor.gpu_mem_gb: must be > 0, got 0.0"], r.stderr


def test_local_cpu_applies_batch_checks_but_not_gpu_memory(tmp_path, monkeypatch):
    import pipeline.checks as checks

    monkeypatch.setattr(checks, "_local_gpu", lambda: None)
    cfg = config(tmp_path, "scale=smoke")
    table = stage_checks(cfg, TRAIN_EVAL)
    assert all(c.fits is None and c.note == "CPU: GPU memory not checked" for c in table)
    assert all(c.memory.reserve == 0 for c in table)  # no CUDA reserve counted on a CPU
    assert "n/a (CPU: GPU memory not checked)" in format_table(table, cfg)


# -------------------------------------------------------------------------------------- memory per GPU


@pytest.mark.slow  # ~20 s of T5-3B measurements on 2 cores
def test_paper_scale_fits_and_its_evaluation_at_batch_128_would_not(tmp_path):
    """scale=paper as shipped: every training and evaluation stage fits one 80 GB GPU, T5-3B finetuning sharded
    over 4 GPUs with fsdp; the evaluation batch of 128 x 4 beams it replaced does not fit, and is refused."""
    cfg = config(tmp_path, "scale=paper", "executor=slurm")
    table = {c.stage: c for c in stage_checks(cfg, TRAIN_EVAL)}
    assert all(c.fits and not c.problems for c in table.values()), format_table(list(table.values()), cfg)
    assert (table["pretrain"].memory.mode, table["pretrain"].resources.gpus) == ("fsdp", 8)
    assert (table["finetune"].memory.mode, table["finetune"].resources.gpus) == ("fsdp", 4)
    ft = table["finetune"].memory
    assert ft.checkpointing and ft.rows == 16  # 8192 tokens of 256 + 256
    n = count_params(load_preset(cfg.models[0].as_dict()), cfg.tokenizer.vocab_size)["total"]
    assert ft.parts["optimizer"] == 8 * n // 4  # AdamW's two fp32 moments of T5-3B, sharded by 4
    big = stage_checks(config(tmp_path, "scale=paper", "executor=slurm", "evaluate.batch_size=128"), ["evaluate"])[0]
    assert big.fits is False and str(big.problems[0]).startswith("evaluate.batch_size:")


REAL_STEP = textwrap.dedent("""
    import json, resource, sys, torch
    from pipeline import memory
    from pipeline.model import PRESETS, Seq2SeqLoss, build_model
    torch.set_num_threads(1)
    name, rows, src, tgt, ck = sys.argv[1], *map(int, sys.argv[2:6])
    vocab, preset = 8000, PRESETS[name]
    model = build_model(preset, vocab, seed=0).train()
    if ck:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    loss_fn = Seq2SeqLoss(model)
    ids, labels = torch.randint(2, vocab, (rows, src)), torch.randint(2, vocab, (rows, tgt))
    with torch.no_grad():
        loss_fn(input_ids=ids[:1, :8], labels=labels[:1, :4])  # lazy initialisations out of the way
    base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    loss_fn(input_ids=ids, labels=labels).loss.backward()
    real = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    m = memory.training_memory("pretrain", preset, vocab, processes=1, mode="none", gpu=False, rows=rows,
                               src_len=src, tgt_len=tgt, optimizer="adamw", dropout=0.0, checkpointing=bool(ck))
    print(json.dumps({"real": real, "estimate": m.parts["activations"] + m.parts["gradients"]}))
""")


@pytest.mark.parametrize("preset, checkpointing", [
    pytest.param("t5_small", 0, marks=pytest.mark.slow), pytest.param("t5_small", 1, marks=pytest.mark.slow),
    ("t5_mini", 0)])
def test_estimate_bounds_the_memory_of_a_real_step(preset, checkpointing):
    """A real forward + backward on the CPU: its peak resident memory above the model (glibc told to return
    every freed block over 64 KB, so the resident size follows the live tensors) against the estimate of its
    activations and gradients. The estimate may only overstate (the fused loss is measured in 8 chunks, and
    with checkpointing it is extrapolated from 2 and 3 layers), by at most 30%."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536",
           "MALLOC_TRIM_THRESHOLD_": "0"}
    p = subprocess.run([sys.executable, "-c", REAL_STEP, preset, "32", "128", "32", str(checkpointing)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    import json

    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["real"] > 100 * 2**20  # big enough that the allocator's noise is small beside it
    assert r["real"] <= r["estimate"] <= 1.3 * r["real"], r
