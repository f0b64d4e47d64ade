"""The local executor's mechanics on a toy DAG whose stage functions are cheap stand-ins: dependency order,
skipping finished work, two workers running independent tasks at the same time, a failure that blocks only
its dependants, the summary's counts, and a failed task's log that keeps its traceback.

The stand-ins replace `pipeline.<stage>` modules: in this process through sys.modules, in the spawned
worker processes (`executor.workers=2`) through a `sitecustomize.py` on their PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.plan import Plan, Task

STAGES = ("tokenizer", "tokens", "pretrain", "finetune", "evaluate", "collect", "fit", "report")

FAKE = '''
"""Stand-in stage functions (see tests/test_executor_local.py)."""
import json, os, sys, time, types
from pathlib import Path


def run(task) -> None:
    d = Path(task.dir)
    d.mkdir(parents=True, exist_ok=True)
    for dep in task.spec.get("dep_dirs", []):
        if not (Path(dep) / "status.json").exists():
            raise RuntimeError(f"started before its dependency {dep} finished")
    first = not (d / "runs").exists()
    with open(d / "runs", "a") as f:
        f.write(f"{os.getpid()}\\n")
    (d / "started").touch()
    # A rendezvous: each of these tasks waits until its peers have started. Run one at a time, the first
    # one never sees its peer start and fails; run concurrently, they all pass.
    t0 = time.time()
    while not all((Path(p) / "started").exists() for p in task.spec.get("peers", [])):
        if time.time() - t0 > task.spec.get("wait_s", 60):
            raise RuntimeError("ran alone: its peers never started")
        time.sleep(0.02)
    if task.spec.get("fail"):
        explode_on_purpose()
    if task.spec.get("until_signal") and first:  # a training loop: checkpoint and stop on SIGTERM/SIGUSR1
        from pipeline.distributed import StopFlag
        from pipeline.training import Preempted

        with StopFlag() as stop:
            (d / "in_loop").touch()
            while not stop.requested:
                if time.time() - t0 > 60:
                    raise RuntimeError("no signal came")
                time.sleep(0.02)
        (d / "preempted").touch()
        raise Preempted(f"{task.name}: stopped by signal; rerun to continue", stop.signal)
    while task.spec.get("hold") and not (d / "go").exists():  # outside a loop: a signal must not kill it
        if time.time() - t0 > 60:
            raise RuntimeError("never released")
        time.sleep(0.02)
    payload = {"task": task.id, "inputs": sorted(json.loads((Path(p) / "out.json").read_text())["task"]
                                                 for p in task.spec.get("dep_dirs", []))}
    (d / "out.json").write_text(json.dumps(payload))


def explode_on_purpose():
    raise ValueError("asked to fail")


def read_rungs(directory) -> list:
    return [1] if (Path(directory) / "status.json").exists() else []


def install() -> None:
    me = sys.modules[__name__]
    me.run_init = run
    for stage in {stages!r}:
        sys.modules["pipeline." + stage] = me


if os.environ.get("DS_FAKE_STAGES") == "1":
    install()
'''


@pytest.fixture
def fake_stages(tmp_path_factory, monkeypatch):
    """Install the stand-ins here and in any process started from here (spawned workers, subprocesses)."""
    d = tmp_path_factory.mktemp("fakes")
    (d / "fake_stages.py").write_text(FAKE.replace("{stages!r}", repr(STAGES)))
    (d / "sitecustomize.py").write_text("import fake_stages  # noqa: F401\n")
    spec = importlib.util.spec_from_file_location("fake_stages", d / "fake_stages.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for stage in STAGES:
        monkeypatch.setitem(sys.modules, f"pipeline.{stage}", mod)
    mod.run_init = mod.run
    monkeypatch.setenv("DS_FAKE_STAGES", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(d), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return mod


def toy_plan(root: Path, fail: str | None = None, peers: bool = False, wait_s: float = 60, **flags: str) -> Plan:
    """tokenizer -> tokens-de, tokens-en -> pretrain -> finetune-a, finetune-b -> evaluate-a, evaluate-b;
    an unrelated branch (init -> finetune-c); collect after the evaluates. `peers`: the two tokens tasks
    and the two finetune tasks each wait for the other to start. `fail`: that task raises. `flags`:
    spec flag -> the task that gets it (until_signal: loops until SIGTERM/SIGUSR1; hold: waits for `go`)."""
    tasks: dict[str, Task] = {}

    def add(stage: str, name: str, deps: list[str], **spec) -> str:
        t = Task(id=f"{stage}/{name}", stage=stage, name=name, dir=str(root / stage / name), deps=tuple(deps),
                 spec={"dep_dirs": [tasks[x].dir for x in deps] if stage != "collect" else [],
                       "fail": name == fail, "dp_ladder": [1], "wait_s": wait_s,
                       **{flag: True for flag, who in flags.items() if who == name}, **spec})
        tasks[t.id] = t
        return t.id

    def peer_dirs(*names: str) -> dict:
        return {"peers": [str(root / n) for n in names]} if peers else {}

    tok = add("tokenizer", "tok", [])
    toks = [add("tokens", f"tokens-{x}", [tok], **peer_dirs(f"tokens/tokens-{y}")) for x, y in (("de", "en"), ("en", "de"))]
    pt = add("pretrain", "pt", toks)
    fa = add("finetune", "ft-a", [pt], **peer_dirs("finetune/ft-b"))
    fb = add("finetune", "ft-b", [pt], **peer_dirs("finetune/ft-a"))
    ea = add("evaluate", "ev-a", [fa])
    eb = add("evaluate", "ev-b", [fb])
    init = add("init", "init", [])
    add("finetune", "ft-c", [init])
    add("collect", "collect", [ea, eb])
    order = ("tokenizer", "tokens", "init", "pretrain", "finetune", "evaluate", "collect")
    return Plan(sweep="toy", tasks=sorted(tasks.values(), key=lambda t: order.index(t.stage)), cells=[], summary={})


def wait_for(pred, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, f"the process ended (rc {proc.returncode}) before the condition held"
        assert time.time() - t0 < timeout, "timed out waiting"
        time.sleep(0.02)


def run_local(plan: Plan, caplog, workers: int = 1) -> tuple[int, dict[str, int]]:
    from pipeline.executors.local import LocalExecutor

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline"):
        rc = LocalExecutor(workers=workers, threads_per_worker=1).run(plan, plan.tasks)
    return rc, summary_counts([r.getMessage() for r in caplog.records])


def summary_counts(lines: list[str]) -> dict[str, int]:
    """{state: count} from the executor's one summary line."""
    summary = [x.split("sweep toy finished in ", 1)[1] for x in lines if "sweep toy finished in " in x]
    assert len(summary) == 1 and re.match(r"\d+ s: ", summary[0]), lines
    return {k: int(v) for v, k in (x.split(" ", 1) for x in summary[0].split(": ", 1)[1].split(", "))}


def runs(plan: Plan, name: str) -> int:
    p = Path(next(t.dir for t in plan.tasks if t.name == name)) / "runs"
    return len(p.read_text().splitlines()) if p.exists() else 0


def output(plan: Plan, name: str) -> dict:
    return json.loads((Path(next(t.dir for t in plan.tasks if t.name == name)) / "out.json").read_text())


def test_dependency_order_then_everything_finished_is_skipped(tmp_path, fake_stages, caplog):
    plan = toy_plan(tmp_path)
    # Listed backwards: the executor, not the list, decides the order (a stand-in started before its
    # inputs finished raises, and the run would fail).
    plan.tasks.reverse()
    rc, counts = run_local(plan, caplog)
    assert rc == 0 and counts == {"ok": 11}, counts
    assert output(plan, "ev-a") == {"task": "evaluate/ev-a", "inputs": ["finetune/ft-a"]}
    rc, counts = run_local(plan, caplog)
    assert rc == 0 and counts == {"ok": 1, "skipped": 10}, counts  # collect always re-reads what exists
    assert all(runs(plan, t.name) == (2 if t.stage == "collect" else 1) for t in plan.tasks)


def test_a_finetuned_cell_is_evaluated_before_the_next_cell_trains(tmp_path, fake_stages, caplog):
    # A sweep stopped part-way should hold evaluated cells, not a row of unevaluated checkpoints.
    plan = toy_plan(tmp_path)
    rc, counts = run_local(plan, caplog)
    assert rc == 0 and counts == {"ok": 11}, counts
    done = [m.split("] ", 1)[1].rsplit(" ", 1)[0] for m in (r.getMessage() for r in caplog.records)
            if re.match(r"\[\d+/\d+\] ", m)]
    assert len(done) == 11, done
    first = min(done.index("finetune/ft-a"), done.index("finetune/ft-b"))
    cell = done[first].rsplit("-", 1)[1]
    assert done[first + 1] == f"evaluate/ev-{cell}", done


def test_two_workers_run_independent_tasks_at_the_same_time(tmp_path, fake_stages, caplog):
    plan = toy_plan(tmp_path, peers=True)
    rc, counts = run_local(plan, caplog, workers=2)
    assert rc == 0 and counts == {"ok": 11}, counts
    pids = {t.name: (Path(t.dir) / "runs").read_text().split()[0] for t in plan.tasks}
    assert pids["tokens-de"] != pids["tokens-en"] and pids["ft-a"] != pids["ft-b"]  # two processes
    assert str(os.getpid()) not in pids.values()
    for t in plan.tasks:  # every output whole and from the right inputs
        assert output(plan, t.name)["task"] == t.id
        if t.stage != "collect":  # collect writes no status.json
            assert json.loads((Path(t.dir) / "status.json").read_text())["status"] == "ok"
    assert output(plan, "pt")["inputs"] == ["tokens/tokens-de", "tokens/tokens-en"]


def test_one_worker_cannot_meet_the_rendezvous(tmp_path, fake_stages, caplog):
    """The check of the test above: run one at a time, the rendezvous tasks fail (so it can fail)."""
    plan = toy_plan(tmp_path, peers=True, wait_s=2)
    plan.tasks[:] = [t for t in plan.tasks if t.stage in ("tokenizer", "tokens")]
    rc, counts = run_local(plan, caplog)
    assert rc == 1 and counts == {"ok": 2, "failed": 1}, counts


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failure_blocks_its_dependants_only_and_the_summary_counts(tmp_path, fake_stages, caplog, workers):
    plan = toy_plan(tmp_path, fail="ft-b")
    rc, counts = run_local(plan, caplog, workers=workers)
    assert rc == 1
    assert counts == {"ok": 9, "failed": 1, "blocked": 1}, counts
    assert runs(plan, "ev-b") == 0 and runs(plan, "ev-a") == 1 and runs(plan, "ft-c") == 1
    assert runs(plan, "collect") == 1  # collect lists the missing cell instead of waiting forever
    failed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FAILED")]
    log = tmp_path / "finetune" / "ft-b" / "task.log"
    assert failed == [f"FAILED finetune/ft-b: ValueError: asked to fail (log: {log})"]
    # Fixed and rerun: only the failed task and what it blocked run; the rest is skipped.
    fixed = toy_plan(tmp_path)
    rc, counts = run_local(fixed, caplog, workers=workers)
    assert rc == 0 and counts == {"ok": 3, "skipped": 8}, counts  # ft-b, ev-b, collect
    assert runs(plan, "ft-b") == 2 and runs(plan, "ev-b") == 1 and runs(plan, "ft-a") == 1


def test_a_failed_task_logs_its_traceback_and_prints_one_line(tmp_path, fake_stages):
    """`python -m pipeline.task plan.json i`: stderr says the error in one line with the log's path; the log
    (and status.json) keep the whole traceback."""
    plan = toy_plan(tmp_path, fail="tok")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    r = subprocess.run([sys.executable, "-m", "pipeline.task", str(plan_file), "0"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1
    log = tmp_path / "tokenizer" / "tok" / "task.log"
    assert f"error: tokenizer/tok: ValueError: asked to fail; log: {log}" in r.stderr.splitlines()
    assert "Traceback" not in r.stderr
    text = log.read_text()
    assert "tokenizer/tok failed: ValueError: asked to fail\nTraceback (most recent call last):" in text
    assert "in explode_on_purpose" in text and text.rstrip().endswith("ValueError: asked to fail")
    status = json.loads((tmp_path / "tokenizer" / "tok" / "status.json").read_text())
    assert status["status"] == "failed" and "in explode_on_purpose" in status["traceback"]


def test_a_failed_read_stage_logs_its_traceback(tmp_path, fake_stages):
    """collect/fit/report write no status.json: their `<stage>.log` is the only place the traceback can be."""
    from pipeline.task import TaskFailed, execute

    plan = toy_plan(tmp_path, fail="collect")
    collect = next(t for t in plan.tasks if t.stage == "collect")
    with pytest.raises(TaskFailed) as e:
        execute(collect)
    assert e.value.log_path == tmp_path / "collect" / "collect" / "collect.log"
    text = e.value.log_path.read_text()
    assert "Traceback (most recent call last):" in text and "in explode_on_purpose" in text


RUN_PLAN = """
import json, sys
from pipeline.logs import setup_logging
from pipeline.executors.local import LocalExecutor
from pipeline.plan import Plan
setup_logging()
plan = Plan.from_dict(json.load(open(sys.argv[1])))
ex = LocalExecutor(workers=int(sys.argv[2]), threads_per_worker=1)
rc = ex.run(plan, plan.tasks)
print(f"executor stopped: {ex.stopped}")
sys.exit(rc)
"""


@pytest.mark.parametrize("workers,sig", [(1, signal.SIGTERM), (2, signal.SIGUSR1)], ids=["1-SIGTERM", "2-SIGUSR1"])
def test_a_stop_signal_stops_the_sweep_with_exit_zero_and_the_rerun_finishes(tmp_path, fake_stages, workers, sig):
    """A signal to the sweep's process: the task in a training loop checkpoints (preempted), a task outside
    one finishes, nothing new starts, exit 0 with a message; the same command then finishes the sweep."""
    plan = toy_plan(tmp_path / "art", until_signal="ft-a", **({"hold": "ft-b"} if workers > 1 else {}))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    cmd = [sys.executable, "-c", RUN_PLAN, str(plan_file), str(workers)]
    ft_a, ft_b = (tmp_path / "art" / "finetune" / x for x in ("ft-a", "ft-b"))
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (ft_a / "in_loop").exists() and (workers == 1 or (ft_b / "started").exists()), proc)
        proc.send_signal(sig)
        if workers > 1:
            wait_for(lambda: (ft_a / "preempted").exists(), proc)
            (ft_b / "go").touch()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    text = (tmp_path / "first.log").read_text()
    counts = summary_counts(text.splitlines())
    assert counts["preempted"] == 1 and "failed" not in counts and "blocked" not in counts, counts
    never = ["ev-a", "ev-b", "collect"] + ([] if workers > 1 else ["ft-b", "ft-c"])
    assert counts["not started"] >= len(never) and all(runs(plan, n) == 0 for n in never), counts
    if workers > 1:
        assert runs(plan, "ft-b") == 1 and (ft_b / "status.json").exists()  # finished, not killed
    assert "rerun the same command to continue" in text and "Traceback" not in text
    # what pipeline.run reads to start nothing more (no re-plan, no next sweep of a multirun)
    assert f"executor stopped: {'a signal to a task' if workers == 1 else sig.name}" in text
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "executor stopped: None" in r.stdout
    counts = summary_counts(r.stderr.splitlines())
    assert set(counts) == {"ok", "skipped"} and counts["ok"] + counts["skipped"] == 11, counts
    assert runs(plan, "ft-a") == 2 and all(runs(plan, n) == 1 for n in never if n != "collect")


def test_a_task_running_elsewhere_is_waited_for_not_run_twice(tmp_path, fake_stages, caplog):
    # two sweeps on one artifacts directory: the second waits on the task's lock, then finds it finished
    import threading

    from pipeline.task import execute

    plan = toy_plan(tmp_path, hold="pt")
    pt = next(t for t in plan.tasks if t.name == "pt")
    for t in plan.tasks[:3]:  # its inputs
        assert execute(t) == "ok"
    results: dict[str, str] = {}
    first = threading.Thread(target=lambda: results.update(first=execute(pt)))
    second = threading.Thread(target=lambda: results.update(second=execute(pt)))
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        first.start()
        t0 = time.time()
        while not (Path(pt.dir) / "started").exists():
            assert time.time() - t0 < 30
            time.sleep(0.02)
        second.start()
        t0 = time.time()
        while "another process is running this task" not in caplog.text:
            assert time.time() - t0 < 30, caplog.text
            time.sleep(0.02)
        assert second.is_alive() and first.is_alive()
        (Path(pt.dir) / "go").touch()
        first.join(30)
        second.join(30)
    assert results == {"first": "ok", "second": "skipped"}
    assert runs(plan, "pt") == 1
