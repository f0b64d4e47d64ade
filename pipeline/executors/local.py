"""The local executor: tasks in dependency order with an overall progress bar; `workers > 1` runs
independent tasks in parallel processes. A failed task blocks only what depends on it, and the summary
lists every failure with the path of its log.

SIGTERM or SIGUSR1 stops the sweep: a task in a training loop checkpoints and returns "preempted", any
other running task finishes, nothing new starts, and the exit status is 0 (rerun to continue). With
workers, the signal is passed on to them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.logs import setup_logging
from pipeline.plan import Plan, Task
from pipeline.stages import READ_STAGES
from pipeline.task import TaskFailed, execute, is_complete

log = logging.getLogger("pipeline")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    setup_logging()
    # Outside a training loop (whose StopFlag takes the signal over) a worker finishes its task; the parent
    # starts nothing new after a stop signal.
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: None)


class _SweepStop:
    """The sweep-level stop flag: set by SIGTERM/SIGUSR1 to this process, or by a task that was preempted."""

    def __init__(self, forward=None):
        self.signal: str | None = None
        self.forward = forward  # called with the signal number: pass it on to worker processes
        self._old: dict[int, object] = {}

    def __enter__(self) -> _SweepStop:
        for s in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: no handlers, tasks still stop themselves
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name
        log.warning("received %s: no new task starts; running tasks checkpoint or finish", self.signal)
        if self.forward:
            self.forward(signum)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _run_in_worker(task: Task) -> tuple[str, str | None, str | None]:
    try:
        return execute(task), None, None
    except TaskFailed as e:
        return "failed", e.error, str(e.log_path) if e.log_path else None


class _InProcess:
    """`workers=1`: a task runs here when it is submitted; its future is done when submit returns."""

    @staticmethod
    def submit(fn: Callable[..., Any], *args: Any) -> Future:
        f: Future = Future()
        f.set_result(fn(*args))
        return f


class LocalExecutor:
    def __init__(self, workers: int = 1, threads_per_worker: int | None = None):
        self.workers = max(1, int(workers))
        self.stopped: str | None = None  # the signal that stopped the last run: the caller must start nothing more
        cores = os.cpu_count() or 1
        self.threads = threads_per_worker or max(1, cores // self.workers)

    def run(self, plan: Plan, tasks: list[Task]) -> int:
        selected = {t.id for t in tasks}
        results: dict[str, str] = {}
        failures: list[tuple[Task, str, str | None]] = []
        t0 = time.time()
        todo = [t for t in tasks if not is_complete(t)]
        for t in tasks:
            if t.id not in {x.id for x in todo}:
                results[t.id] = "skipped"
        log.info("sweep %s: %d tasks selected, %d already done, %d to run (%d worker%s)", plan.sweep, len(tasks),
                 len(tasks) - len(todo), len(todo), self.workers, "s" if self.workers > 1 else "")
        bar = tqdm(total=len(todo), desc=f"sweep {plan.sweep}", unit="task", disable=not sys.stderr.isatty(),
                   position=0)

        def ready(t: Task) -> str | None:
            """'run', 'wait' or 'blocked' from the state of the task's selected dependencies."""
            states = [results.get(d) for d in t.deps if d in selected]
            if t.stage in READ_STAGES:  # collect/fit/report read whatever exists, failures included
                return "wait" if any(s is None for s in states) else "run"
            if any(s in ("failed", "blocked", "preempted") for s in states):
                return "blocked"
            return "wait" if any(s is None for s in states) else "run"

        def finish(t: Task, state: str, error: str | None = None, lp: str | None = None) -> None:
            results[t.id] = state
            bar.update(1)
            if state == "failed":
                failures.append((t, error or "", lp))
            if bar.disable:
                log.info("[%d/%d] %s %s", sum(1 for x in todo if x.id in results), len(todo), t.id, state)

        pending = list(todo)
        with self._pool() as (pool, forward), _SweepStop(forward) as stop:
            running: dict[Future, Task] = {}
            while running or (pending and not stop.signal):
                # to a fixed point: a blocked task blocks what depends on it
                while not stop.signal and (blocked := [t for t in pending if ready(t) == "blocked"]):
                    for t in blocked:
                        pending.remove(t)
                        finish(t, "blocked")
                # the plan's order (its cheapest cells first), except that a cell's evaluation starts before the
                # next cell trains: a sweep stopped part-way has results, not a row of unevaluated checkpoints
                for t in sorted(pending, key=lambda t: t.stage != "evaluate"):
                    if stop.signal or len(running) >= self.workers:
                        break
                    if ready(t) == "run":
                        pending.remove(t)
                        running[pool.submit(_run_in_worker, t)] = t
                if not running:  # nothing can start: a dependency outside the plan (not with a planner-built plan)
                    if pending and not stop.signal:
                        for t in pending:
                            finish(t, "blocked")
                        pending.clear()
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for f in done:
                    t = running.pop(f)
                    try:
                        state, err, lp = f.result()
                    except Exception as e:  # the worker process died (OOM, segfault)
                        state, err, lp = "failed", f"worker died: {e}", None
                    finish(t, state, err, lp)
                    if state == "preempted" and not stop.signal:  # the task's StopFlag took the signal
                        stop.signal = "a signal to a task"
                        if forward:
                            forward(signal.SIGTERM)  # the others checkpoint too
        for t in pending:  # never started because the sweep was stopped
            results[t.id] = "not started"
        self.stopped = stop.signal
        bar.close()
        return self._summary(plan, results, failures, time.time() - t0)

    @contextlib.contextmanager
    def _pool(self) -> Iterator[tuple[Any, Callable[[int], None] | None]]:
        """Where tasks run, and how a stop signal reaches them: one task at a time in this process (its own
        StopFlag takes the signal), or `workers` spawned processes (the signal is forwarded to each)."""
        if self.workers == 1:
            import torch

            torch.set_num_threads(self.threads)
            yield _InProcess(), None
            return
        ctx = mp.get_context("spawn")  # fork after torch's thread pools start is unsafe
        with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(self.threads,)) as pool:

            def forward(signum: int) -> None:
                for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signum)

            yield pool, forward

    @staticmethod
    def _summary(plan: Plan, results: dict[str, str], failures, seconds: float) -> int:
        from collections import Counter

        counts = Counter(results.values())
        log.info("sweep %s finished in %.0f s: %s", plan.sweep, seconds, ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        for t, err, lp in failures:
            log.error("FAILED %s: %s (log: %s)", t.id, err, lp or Path(t.dir) / "task.log")
        if counts.get("blocked"):
            log.error("%d task(s) not run because a dependency failed", counts["blocked"])
        if counts.get("preempted") or counts.get("not started"):
            log.warning("sweep %s stopped by a signal (%d task(s) checkpointed, %d not started): rerun the same "
                        "command to continue", plan.sweep, counts.get("preempted", 0), counts.get("not started", 0))
        return 1 if failures or counts.get("blocked") else 0
