"""The SLURM executor on a real single-node SLURM (`make test-slurm`): scripts/slurm_local.sh starts munge,
MariaDB, slurmdbd, slurmctld and slurmd in a private directory, and the test stops exactly those PIDs.

1. A toy DAG in the real plan format whose stage functions are cheap stand-ins (tests/slurm_fakes): the
   arrays run in dependency order, a scancel'd job is resubmitted without redoing finished tasks, and a
   failed task makes `executor.wait=true` return 1 while collect still runs.
2. The smoke sweep with `executor=slurm executor.wait=true` gives the local executor's results table; a
   second sweep's pretraining job is scancel'd while it runs, and resubmitting finishes it without
   redoing finished tasks.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT, cli, compose, corpus_dir

from pipeline.config import load_config
from pipeline.executors.slurm import SlurmExecutor, read_jobs
from pipeline.plan import Plan, Task
from pipeline.stages import LEVELS

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
FAKES = ROOT / "tests" / "slurm_fakes"
# Every stage fits the 1-node test cluster: one CPU, no GPU.
SMALL = [f"executor.resources.{s}={{nodes:1,gpus_per_node:0,cpus_per_task:1,mem_gb:1,time_min:30}}" for s in LEVELS]


def _free_base_port() -> int:
    """Four consecutive free ports (slurmctld, slurmd, slurmdbd, mariadb), so a running cluster is left alone."""
    for _ in range(50):
        base = random.randrange(20000, 60000)
        try:
            for p in range(base, base + 4):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
    raise RuntimeError("no four consecutive free ports")


@pytest.fixture(scope="module")
def cluster():
    """SLURM_CONF of a private single-node cluster; skipped (with the reason) where one cannot be started."""
    # CI sets DS_REQUIRE_SLURM=1: there a cluster that cannot start fails the suite instead of skipping it.
    give_up = pytest.fail if os.environ.get("DS_REQUIRE_SLURM") == "1" else pytest.skip
    if sys.platform != "linux" or not (os.geteuid() == 0 or subprocess.run(["sh", "-c", "command -v slurmctld"]).returncode == 0):
        give_up("a local SLURM needs Linux and root (to install slurm-wlm, munge, slurmdbd, mariadb-server)")
    state = Path(tempfile.mkdtemp(prefix="slurm-"))  # short: the munge socket path must fit in 108 bytes
    env = {**os.environ, "SLURM_LOCAL_PORT": str(_free_base_port())}
    p = subprocess.run([str(SCRIPT), "start", str(state)], env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True)
        reason = (p.stderr.strip().splitlines() or ["no output"])[-1]
        give_up(f"cannot start a local SLURM: {reason}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], capture_output=True)
        subprocess.run([str(SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def queued(job_ids: list[str]) -> dict[str, str]:
    """Array job id -> state of the first listed element, for the given jobs still in squeue."""
    out = subprocess.run(["squeue", "-h", "-o", "%F %T"], capture_output=True, text=True, check=True).stdout
    states: dict[str, str] = {}
    for line in out.splitlines():
        jid, state = line.split()
        if jid in job_ids:
            states.setdefault(jid, state)
    return states


def wait_until(predicate, what: str, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------ toy DAG


def toy_plan(root: Path, sweep: str, *, pretrain: str = "pt", slow: bool = False, fail: str | None = None) -> Plan:
    """tokenizer -> tokens x2, init -> pretrain -> finetune x3 -> evaluate; collect. `slow`: the pretraining
    task sleeps 10 minutes on its first run; `fail`: the task of that name raises."""
    tasks: dict[str, Task] = {}

    def add(stage: str, name: str, deps: list[str], **spec) -> str:
        dep_dirs = [tasks[d].dir for d in deps]
        t = Task(id=f"{stage}/{name}", stage=stage, name=name, dir=str(root / stage / name), deps=tuple(deps),
                 spec={"dep_dirs": dep_dirs, "sleep": 600 if slow and stage == "pretrain" else 0.5,
                       "fail": name == fail, **spec})
        tasks[t.id] = t
        return t.id

    tok = add("tokenizer", "tok", [])
    toks = [add("tokens", f"tokens-{lang}", [tok]) for lang in ("de", "en")]
    init = add("init", "init", [tok])
    pt = add("pretrain", pretrain, [init, *toks], dp_ladder=[])
    fts = [add("finetune", f"ft-{pretrain}-{i}", [pt]) for i in range(3)]
    add("evaluate", f"ev-{pretrain}", fts[:1])
    # collect would refuse to start after a failed evaluate (dep_dirs): give it none, it runs afterany.
    add("collect", f"collect-{sweep}", [])
    return Plan(sweep=sweep, tasks=list(tasks.values()), cells=[], summary={})


def runs(plan: Plan, task_id: str) -> int:
    p = Path(plan.by_id()[task_id].dir) / "runs"
    return len(p.read_text().splitlines()) if p.exists() else 0


@pytest.fixture
def toy_executor(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("DS_FAKE_STAGES", "1")  # sbatch passes the environment to the jobs
    monkeypatch.setenv("PYTHONPATH", f"{FAKES}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")

    def make(*overrides: str) -> SlurmExecutor:
        cfg = load_config(compose(["+sweep=en_de", "scale=smoke", "executor=slurm", f"paths.artifacts={tmp_path / 'art'}",
                                   f"paths.reports={tmp_path / 'rep'}", *SMALL, *overrides]))
        ex = SlurmExecutor(cfg)
        ex.poll_s = 1.0
        return ex

    return make


def test_toy_dag_order_resubmit_and_failure(toy_executor, tmp_path, capsys, caplog):
    art = tmp_path / "art"
    # 1. Everything in dependency order (each stand-in refuses to start before its inputs exist).
    plan = toy_plan(art, "toy")
    assert toy_executor("executor.wait=true").run(plan, plan.tasks) == 0
    assert all(runs(plan, t.id) == 1 for t in plan.tasks), {t.id: runs(plan, t.id) for t in plan.tasks}

    # 2. A second sweep sharing tokenizer/tokens/init: scancel its pretraining job while it runs, resubmit.
    plan2 = toy_plan(art, "toy2", pretrain="pt-slow", slow=True)
    shared = [t for t in plan2.tasks if t.stage in ("tokenizer", "tokens", "init")]
    stamps = {t.id: (Path(t.dir) / "status.json").stat().st_mtime_ns for t in shared}
    capsys.readouterr()
    assert toy_executor().run(plan2, plan2.tasks) == 0  # returns at once, jobs queued
    printed = capsys.readouterr().out
    assert "squeue -u" in printed and "sacct" in printed
    folder = sorted((art / "slurm").glob("toy2-*"))[-1]
    jobs = {j["stage"]: j["job_id"] for j in read_jobs(folder)}
    assert list(jobs) == ["pretrain", "finetune", "evaluate", "collect"]  # finished levels are not submitted
    wait_until(lambda: queued([jobs["pretrain"]]).get(jobs["pretrain"]) == "RUNNING"
               and runs(plan2, "pretrain/pt-slow") == 1, "the pretraining job to run")
    subprocess.run(["scancel", jobs["pretrain"]], check=True)
    wait_until(lambda: not queued(list(jobs.values())), "the cancelled chain to leave the queue")
    assert runs(plan2, "finetune/ft-pt-slow-0") == 0  # afterok: never started

    assert toy_executor("executor.wait=true").run(plan2, plan2.tasks) == 0
    assert runs(plan2, "pretrain/pt-slow") == 2  # rerun (quickly: a resumed run)
    assert all(runs(plan2, t.id) == 1 for t in plan2.tasks if t.stage in ("finetune", "evaluate"))
    assert all(runs(plan2, t.id) == 1 for t in shared)
    assert stamps == {t.id: (Path(t.dir) / "status.json").stat().st_mtime_ns for t in shared}

    # 3. A failed finetune: wait returns 1, names it, cancels what depends on it; collect still runs.
    plan3 = toy_plan(art, "toy3", pretrain="pt3", fail="ft-pt3-1")
    assert toy_executor("executor.wait=true").run(plan3, plan3.tasks) == 1
    assert runs(plan3, "evaluate/ev-pt3") == 0 and runs(plan3, "collect/collect-toy3") == 1
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    assert any(m.startswith("FAILED finetune/ft-pt3-1: FAILED") for m in failed), failed
    assert not any("ft-pt3-0" in m or "ft-pt3-2" in m for m in failed), failed


# ----------------------------------------------------------------------------------- the smoke sweep

KEYS = ["task", "mixture", "model", "dp_rung", "df", "seed", "method", "lr"]


def _newest_jobs(art: Path) -> dict[str, str]:
    folder = max((art / "slurm").glob("en_de-*"), key=lambda p: p.stat().st_mtime)
    return {j["stage"]: j["job_id"] for j in read_jobs(folder)}


def _rung_checkpoints(run: Path) -> dict[int, int]:
    """Dp rung -> mtime of its checkpoint's meta.json, for the rung checkpoints a pretraining run has written
    so far (rungs.json is only written when the run ends)."""
    from pipeline.training import checkpoint_meta

    rungs = {}
    for p in (run / "checkpoints").glob("step-*"):
        try:
            meta = checkpoint_meta(p)
        except (OSError, ValueError):
            continue
        if meta.get("rung"):
            rungs[meta["dp_rung"]] = (p / "meta.json").stat().st_mtime_ns
    return rungs


def _finished(art: Path) -> dict[str, int]:
    """status.json mtime of every finished task directory: a task that reruns rewrites it."""
    return {str(p.parent): p.stat().st_mtime_ns for p in art.glob("*/*/status.json")
            if '"ok"' in p.read_text()}


def test_smoke_sweep_on_slurm_matches_local_and_survives_scancel(cluster, tmp_path):
    import pandas as pd

    from pipeline.pretrain import read_rungs

    if not (corpus_dir() / "manifest.json").exists():
        pytest.skip(f"the offline corpus is not built at {corpus_dir()} (run `make corpus`)")
    sweep = ["+sweep=en_de", "scale=smoke"]
    local = cli(*sweep, f"paths.artifacts={tmp_path / 'local'}", f"paths.reports={tmp_path / 'local-rep'}",
                timeout=1800)
    assert local.returncode == 0, local.stderr[-3000:]

    art, rep = tmp_path / "art", tmp_path / "rep"
    on_slurm = [*sweep, "executor=slurm", *SMALL, f"paths.artifacts={art}", f"paths.reports={rep}"]
    r = cli(*on_slurm, "executor.wait=true", timeout=2400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "squeue -u" in r.stdout
    a = pd.read_csv(tmp_path / "local-rep" / "en_de" / "results.csv").sort_values(KEYS).reset_index(drop=True)
    b = pd.read_csv(rep / "en_de" / "results.csv").sort_values(KEYS).reset_index(drop=True)
    assert len(a) == len(b) > 0 and (b["status"] == "ok").all()
    assert a[KEYS].equals(b[KEYS])
    for col in ("bleu", "chrf", "ce"):
        assert (a[col] - b[col]).abs().max() <= 1e-6, col

    # A second sweep (another pretraining seed, up to pretraining): scancel its running pretraining job
    # once it has written a rung, then resubmit: finished tasks stay as they are, the run resumes.
    second = [*on_slurm, "seed=1", "stage=pretrain"]
    r = cli(*second, timeout=600)  # returns at once
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _newest_jobs(art)
    pretrain_dirs = lambda: [d for d in (art / "pretrain").glob("pt-*") if not (d / "status.json").exists()]  # noqa: E731
    wait_until(lambda: queued([jobs["pretrain"]]).get(jobs["pretrain"]) == "RUNNING"
               and any(_rung_checkpoints(d) for d in pretrain_dirs()), "a pretraining rung", timeout=1200)
    subprocess.run(["scancel", jobs["pretrain"]], check=True)
    wait_until(lambda: not queued(list(jobs.values())), "the cancelled job to end")
    interrupted = {str(d): _rung_checkpoints(d) for d in pretrain_dirs()}
    assert any(interrupted.values()), "the cancelled pretraining run left no partial directory with a rung"
    before = _finished(art)

    r = cli(*second, "executor.wait=true", timeout=2400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert list(_newest_jobs(art)) == ["pretrain"]  # tokenizer, tokens and init were not resubmitted
    after = _finished(art)
    assert {k: after[k] for k in before} == before  # nothing finished was redone
    for d, rungs in interrupted.items():
        assert d in after and set(rungs) <= set(read_rungs(d))
        now = _rung_checkpoints(Path(d))
        assert {k: now[k] for k in rungs} == rungs  # resumed: the rungs written before scancel were kept as they were
