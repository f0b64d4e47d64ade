"""The SLURM executor without a cluster: the job scripts and sbatch calls it makes, read as text.

A fake `sbatch` on the PATH records its arguments and hands out job ids, so the DAG -> arrays mapping
(one array per level with unfinished tasks, afterok/afterany chain, per-stage plans indexed 0..N-1) is
checked exactly. The real cluster is exercised by tests/test_slurm.py (`make test-slurm`).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAKE_SBATCH, ROOT, compose

from pipeline.artifacts import write_status
from pipeline.config import ConfigError, load_config
from pipeline.executors import slurm
from pipeline.executors.slurm import ArrayJob, SlurmExecutor, job_script, sacct_states
from pipeline.plan import Plan, Task, load_plan


def config(tmp_path: Path, *overrides: str):
    # micro-batch 2: the smoke batch of 16 divides over the 8 GPUs the executor gives pretraining (pipeline.checks)
    return load_config(compose(["+sweep=en_de", "scale=smoke", "executor=slurm", f"paths.artifacts={tmp_path / 'art'}",
                                f"paths.reports={tmp_path / 'rep'}", "pretrain.micro_batch_size=2", *overrides]))


def toy_plan(root: Path) -> Plan:
    """Tasks in the real format: tokenizer (done), 2 tokens (1 done), init, 2 pretrain, 3 finetune, collect."""
    def task(stage: str, name: str, deps=()) -> Task:
        return Task(id=f"{stage}/{name}", stage=stage, name=name, dir=str(root / stage / name), deps=tuple(deps),
                    spec={"config": {}})

    tasks = [task("tokenizer", "tok"), task("tokens", "tokens-de", ["tokenizer/tok"]),
             task("tokens", "tokens-en", ["tokenizer/tok"]), task("init", "init-tiny", ["tokenizer/tok"])]
    tasks += [task("pretrain", f"pt-{m}", ["init/init-tiny"]) for m in ("a", "b")]
    tasks += [task("finetune", f"ft-{i}", ["pretrain/pt-a"]) for i in range(3)]
    tasks += [task("collect", "collect-en_de", [t.id for t in tasks if t.stage == "finetune"])]
    for t in tasks[:2]:  # tokenizer and tokens-de are finished
        write_status(Path(t.dir), "ok", started=time.time())
    return Plan(sweep="en_de", tasks=tasks, cells=[], summary={})


def sbatch_calls(bin_dir: Path) -> list[list[str]]:
    return [shlex.split(line) for line in (bin_dir / "calls").read_text().splitlines()]


def directives(script: str) -> dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH --"):
            k, _, v = line.removeprefix("#SBATCH --").partition("=")
            out[k] = v
    return out


def test_one_array_per_unfinished_level_chained(tmp_path, fake_sbatch, capsys):
    cfg = config(tmp_path)
    plan = toy_plan(tmp_path / "art")
    assert SlurmExecutor(cfg).run(plan, plan.tasks) == 0

    calls = sbatch_calls(fake_sbatch)
    scripts = [Path(c[-1]) for c in calls]
    # tokenizer is finished: not submitted; tokens has one left; then init, pretrain, finetune, collect.
    assert [s.stem for s in scripts] == ["tokens", "init", "pretrain", "finetune", "collect"]
    deps = [next((a for a in c if a.startswith("--dependency=")), None) for c in calls]
    assert deps == [None, "--dependency=afterok:101", "--dependency=afterok:102", "--dependency=afterok:103",
                    "--dependency=afterany:104"]
    assert all("--kill-on-invalid-dep=yes" in c for c in calls[1:])

    sizes = {"tokens": 1, "init": 1, "pretrain": 2, "finetune": 3, "collect": 1}
    for s in scripts:
        d = directives(s.read_text())
        assert d["array"] == f"0-{sizes[s.stem] - 1}%{sizes[s.stem]}"
        sub = load_plan(s.parent / "plans" / f"{s.stem}.json")
        assert [t.stage for t in sub.tasks] == [s.stem] * sizes[s.stem]
        assert f"-m pipeline.task {s.parent / 'plans' / (s.stem + '.json')} \"$SLURM_ARRAY_TASK_ID\"" in s.read_text()
    assert [t.name for t in load_plan(scripts[0].parent / "plans" / "tokens.json").tasks] == ["tokens-en"]

    jobs = json.loads((scripts[0].parent / "jobs.json").read_text())
    assert [j["job_id"] for j in jobs] == ["101", "102", "103", "104", "105"]
    assert list((tmp_path / "art" / "plans").glob("en_de-*.json"))  # the whole plan too
    out = capsys.readouterr().out
    assert "101" in out and "105" in out and "squeue -u" in out and "sacct" in out


def test_nothing_to_submit_when_all_finished(tmp_path, fake_sbatch):
    plan = toy_plan(tmp_path / "art")
    done = [t for t in plan.tasks if t.stage in ("tokenizer", "tokens")]
    for t in done:
        write_status(Path(t.dir), "ok", started=time.time())
    assert SlurmExecutor(config(tmp_path)).run(plan, done) == 0
    assert not (fake_sbatch / "calls").exists()


def test_resources_and_srun_for_multi_gpu_pretraining(tmp_path):
    cfg = config(tmp_path, "executor.partition=gpu", "executor.account=lab", "executor.qos=high",
                 "executor.constraint=a100", "executor.setup=[module load cuda,source .venv/bin/activate]",
                 "executor.signal_delay_s=300", "executor.resources.pretrain.nodes=2")
    opts = slurm.SlurmOptions.of(cfg)
    job = ArrayJob("pretrain", toy_plan(tmp_path).tasks[4:6], tmp_path / "plans" / "pretrain.json",
                   tmp_path / "pretrain.sbatch")
    text = job_script(job, "en_de", opts.resources["pretrain"], opts)
    d = directives(text)
    assert d["nodes"] == "2" and d["ntasks-per-node"] == "8" and d["gres"] == "gpu:8"
    assert d["cpus-per-task"] == "8" and d["mem"] == f"{256 * 1024}M" and d["time"] == "2880"
    assert (d["partition"], d["account"], d["qos"], d["constraint"]) == ("gpu", "lab", "high", "a100")
    assert d["signal"] == "B:USR1@300" and "requeue" in d and d["open-mode"] == "append"
    assert d["array"] == "0-1%2" and d["output"].endswith("logs/pretrain-%A_%a.out")
    lines = text.splitlines()
    assert lines.index("module load cuda") < lines.index("source .venv/bin/activate") < next(
        i for i, x in enumerate(lines) if "pipeline.task" in x)
    assert 'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in lines
    assert any(x.startswith("exec srun ") and "-m pipeline.task" in x for x in lines)

    fin = job_script(ArrayJob("finetune", toy_plan(tmp_path).tasks[6:9], tmp_path / "f.json", tmp_path / "f.sbatch"),
                     "en_de", opts.resources["finetune"], opts)
    d = directives(fin)
    assert d["ntasks-per-node"] == "1" and d["gres"] == "gpu:1" and "exec srun" not in fin and "MASTER_ADDR" not in fin
    assert any(x.startswith(f"exec {sys.executable} -m pipeline.task") for x in fin.splitlines())
    cpu = job_script(ArrayJob("tokens", toy_plan(tmp_path).tasks[1:3], tmp_path / "t.json", tmp_path / "t.sbatch"),
                     "en_de", opts.resources["tokens"], opts)
    assert "gres" not in directives(cpu)


def test_generated_script_is_valid_bash(tmp_path):
    cfg = config(tmp_path, "executor.resources.pretrain.nodes=2")
    opts = slurm.SlurmOptions.of(cfg)
    job = ArrayJob("pretrain", toy_plan(tmp_path).tasks[4:6], tmp_path / "p.json", tmp_path / "p.sbatch")
    (tmp_path / "p.sbatch").write_text(job_script(job, "en_de", opts.resources["pretrain"], opts))
    assert subprocess.run(["bash", "-n", str(tmp_path / "p.sbatch")]).returncode == 0


@pytest.mark.parametrize("override, key", [
    ("executor.resources.pretrain.gpus_per_node=-1", "executor.resources.pretrain.gpus_per_node"),
    ("executor.resources.finetune.mem_gb=0", "executor.resources.finetune.mem_gb"),
    ("+executor.resources.finetune.gpu=1", "executor.resources.finetune.gpu"),
    ("+executor.resources.train={nodes:1}", "executor.resources.train"),
    ("executor.wait=maybe", "executor.wait"),
    ("+executor.priority=1", "executor.priority"),
])
def test_bad_options_refused(tmp_path, fake_sbatch, override, key):
    with pytest.raises(ConfigError) as e:
        SlurmExecutor(config(tmp_path, override))
    assert e.value.key == key


def test_without_sbatch_one_line_and_nothing_written(tmp_path):
    """`executor=slurm` on a machine without SLURM: exit 2, one line, before any planning or writing."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    art = tmp_path / "art"
    p = subprocess.run([sys.executable, "-m", "pipeline", "+sweep=en_de", "scale=smoke", "executor=slurm",
                        f"paths.artifacts={art}", f"paths.reports={tmp_path / 'rep'}"],
                       cwd=ROOT, env={**os.environ, "PATH": str(empty)}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch" in lines[0] and lines[0].startswith("error: executor")
    assert not art.exists() and not (tmp_path / "rep").exists()


def test_sbatch_refusal_is_one_line_and_cancels_the_chain(tmp_path, fake_sbatch, monkeypatch):
    """A level sbatch refuses (bad partition...) must not leave the earlier levels queued."""
    (fake_sbatch / "sbatch").write_text(FAKE_SBATCH.replace('echo "$n;cluster"',
        'case "$*" in *pretrain*) echo "sbatch: error: invalid partition specified" >&2; exit 1;; esac\necho $n'))
    (fake_sbatch / "scancel").write_text('#!/bin/sh\necho "$@" >> "$FAKE_DIR/cancelled"\n')
    (fake_sbatch / "scancel").chmod(0o755)
    plan = toy_plan(tmp_path / "art")
    with pytest.raises(ConfigError, match="invalid partition"):
        SlurmExecutor(config(tmp_path)).run(plan, plan.tasks)
    assert (fake_sbatch / "cancelled").read_text().split() == ["101", "102"]


def test_sacct_states_parsing(monkeypatch):
    out = "7_0|COMPLETED\n7_1|FAILED\n8_[0-2%2]|CANCELLED by 0\n9_[1,3]|PENDING\n9_0|RUNNING\n"

    def fake_run(args, **kw):
        return subprocess.CompletedProcess(args, 0, out, "")

    monkeypatch.setattr(slurm.shutil, "which", lambda _: "/usr/bin/sacct")
    monkeypatch.setattr(slurm.subprocess, "run", fake_run)
    s = sacct_states(["7", "8", "9"])
    assert s == {("7", 0): "COMPLETED", ("7", 1): "FAILED", ("8", 0): "CANCELLED", ("8", 1): "CANCELLED",
                 ("8", 2): "CANCELLED", ("9", 1): "PENDING", ("9", 3): "PENDING", ("9", 0): "RUNNING"}


def test_hand_commands_cover_each_level_once_in_order(tmp_path):
    from pipeline.executors.slurm import hand_commands
    from pipeline.plan import write_plan

    plan = toy_plan(tmp_path / "art")
    path = write_plan(plan, tmp_path / "art")
    lines = hand_commands(path)
    assert lines[0] == f"plan={path}"
    arrays = [next(a for a in line.split() if a.startswith("--array=")) for line in lines[1:]]
    # tokenizer 0, tokens 1-2, init 3, pretrain 4-5, finetune 6-8, collect 9: every index exactly once
    assert arrays == ["--array=0-0", "--array=1-2", "--array=3-3", "--array=4-5", "--array=6-8", "--array=9-9"]
    assert "slurm/pretrain.sbatch" in lines[4] and "slurm/stage.sbatch" in lines[5]
    assert "--dependency" not in lines[1] and "--dependency=afterok:$j" in lines[2]
    assert "--dependency=afterany:$j" in lines[-1]
    for template in ("slurm/stage.sbatch", "slurm/pretrain.sbatch"):
        assert subprocess.run(["bash", "-n", str(ROOT / template)]).returncode == 0
        assert 'pipeline.task "$PLAN" "$SLURM_ARRAY_TASK_ID"' in (ROOT / template).read_text()


@pytest.mark.parametrize("sig, requeued", [("SIGUSR1", True), ("SIGTERM", False)])
def test_a_task_requeues_itself_before_the_time_limit_but_stays_cancelled(sig, requeued, tmp_path, monkeypatch):
    """SIGUSR1 is the warning `--signal=B:USR1@...` sends before the time limit: the array element goes back
    into the queue. SIGTERM is `scancel` (or a shutdown): checkpoint and stop, never requeue over the user."""
    import signal
    import types

    from pipeline import task as task_mod
    from pipeline.training import Preempted

    def stopped(task):
        raise Preempted(f"{task.name}: stopped by signal", getattr(signal, sig))

    fake = types.ModuleType("ds_fake_preempted")
    fake.run = stopped
    monkeypatch.setitem(sys.modules, "ds_fake_preempted", fake)
    monkeypatch.setitem(task_mod.RUNNERS, "finetune", "ds_fake_preempted:run")
    for k, v in {"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}.items():
        monkeypatch.setenv(k, v)
    calls = []
    monkeypatch.setattr(task_mod.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(task_mod.subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    t = Task(id="finetune/cell", stage="finetune", name="cell", dir=str(tmp_path / "cell"), deps=(), spec={})
    assert task_mod.execute(t) == "preempted"
    assert calls == ([["scontrol", "requeue", "40_3"]] if requeued else [])
    assert not (tmp_path / "cell" / "status.json").exists()  # neither done nor failed: the next run resumes it
