"""Run one task of a plan: `python -m pipeline.task <plan.json> <index>` (what a SLURM array element runs).

A finished task is skipped; a partial one resumes (its stage function finds its own checkpoints); a
failure writes `status.json: failed` with the error and traceback and its log stays beside it. Under
several processes (torchrun/srun) only rank 0 writes the config, the log and the status.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from pipeline.artifacts import atomic_write_text, clean_temporaries, is_done, write_status
from pipeline.logs import setup_logging
from pipeline.plan import Task, ladder_reached, load_plan
from pipeline.stages import READ_STAGES, RUNNERS, SPECS
from pipeline.typed import to_dict

log = logging.getLogger("pipeline")

class TaskFailed(RuntimeError):
    def __init__(self, task: Task, error: str, log_path: Path | None):
        self.task, self.error, self.log_path = task, error, log_path
        super().__init__(f"{task.id}: {error}")


def rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)


def is_complete(task: Task) -> bool:
    """Finished and nothing more asked of it (a pretraining run is finished only up to its ladder)."""
    return task.stage not in READ_STAGES and is_done(Path(task.dir)) and ladder_reached(task)


def log_path(task: Task) -> Path:
    return Path(task.dir) / (f"{task.stage}.log" if task.stage in READ_STAGES else "task.log")


class _TracebackFormatter(logging.Formatter):
    """Appends a record's `traceback` attribute: the task's log gets the whole traceback while the console,
    formatted without it, keeps the one-line error."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        tb = getattr(record, "traceback", None)
        return f"{text}\n{tb.rstrip()}" if tb else text


@contextlib.contextmanager
def _task_log(path: Path, enabled: bool):
    """Mirror the pipeline's log records of this task into its own file."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(_TracebackFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


@contextlib.contextmanager
def _exclusive(task: Task, enabled: bool):
    """Hold the task directory's lock: two sweeps on one artifacts directory (a second terminal, a job
    requeued while the old one still runs) must not train the same task at once, both writing its
    checkpoints. The lock dies with its process, so a killed run leaves none behind."""
    if not enabled:
        yield
        return
    import fcntl

    d = Path(task.dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.warning("%s: another process is running this task (%s is locked); waiting for it", task.id, d / ".lock")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def typed(task: Task) -> Task:
    """The task with its spec rebuilt from plan.json's plain data into the stage's dataclass (a runner module
    without that class, as a test's stand-in, gets the plain data)."""
    module = importlib.import_module(RUNNERS[task.stage].split(":")[0])
    cls = getattr(module, SPECS[task.stage] or "", None)
    if cls is None or not isinstance(task.spec, dict):
        return task
    return dataclasses.replace(task, spec=cls.from_dict(task.spec))


def execute(task: Task) -> str:
    """Run a task unless it is complete. Returns "skipped", "ok" or "preempted"; raises TaskFailed."""
    if is_complete(task):
        return "skipped"
    main = rank() == 0
    with _exclusive(task, main and task.stage not in READ_STAGES):
        if is_complete(task):  # finished by the process we waited for
            return "skipped"
        return _execute(task, main)


def _execute(task: Task, main: bool) -> str:
    from pipeline.training import Preempted

    d = Path(task.dir)
    if main:
        d.mkdir(parents=True, exist_ok=True)
        if task.stage not in READ_STAGES:
            # a killed attempt's half-written files (`.<name>.*.tmp`): this process holds the task's lock, so
            # no writer of this directory is alive
            for p in clean_temporaries(d):
                log.info("%s: removed %s, left by an interrupted attempt", task.id, p.name)
            import yaml

            atomic_write_text(d / "config.yaml", yaml.safe_dump(to_dict(task.spec), sort_keys=True))
            (d / "status.json").unlink(missing_ok=True)  # an old failure is not the state of this attempt
    module, fn = RUNNERS[task.stage].split(":")
    started = time.time()
    lp = log_path(task)
    with _task_log(lp, main):
        log.info("%s: start", task.id)
        try:
            getattr(importlib.import_module(module), fn)(typed(task))
        except Preempted as e:
            log.warning("%s", e)
            if e.signal == signal.SIGUSR1:  # the time limit is near; a TERM (scancel) must stay cancelled
                _requeue_if_slurm()
            return "preempted"
        except (Exception, KeyboardInterrupt) as e:
            err = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
            if main and task.stage not in READ_STAGES:
                write_status(d, "failed", started=started, error=err, extra={"traceback": tb})
            log.error("%s failed: %s", task.id, err, extra={"traceback": tb})
            if isinstance(e, KeyboardInterrupt):
                raise
            raise TaskFailed(task, err, lp if main else None) from e
        if main and task.stage not in READ_STAGES:
            write_status(d, "ok", started=started, extra={"task": task.id})
        log.info("%s: ok (%.1f s)", task.id, time.time() - started)
    return "ok"


def _requeue_if_slurm() -> None:
    """Under SLURM, put this array element back in the queue so the job continues after a timeout."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or rank() != 0 or not shutil.which("scontrol"):
        return
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    target = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else job
    subprocess.run(["scontrol", "requeue", target], check=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m pipeline.task <plan.json> <index>", file=sys.stderr)
        return 2
    setup_logging()
    try:
        plan = load_plan(Path(argv[0]))
        task = plan.tasks[int(argv[1])]
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"error: cannot read task {argv[1]} of {argv[0]}: {e}", file=sys.stderr)
        return 2
    try:
        state = execute(task)
    except TaskFailed as e:
        print(f"error: {e}; log: {e.log_path}", file=sys.stderr)
        return 1
    print(f"{task.id}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
