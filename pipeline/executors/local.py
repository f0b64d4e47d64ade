"""The local executor: tasks in dependency order with an overall progress bar; `workers > 1` runs
independent tasks in parallel processes. A failed task blocks only what depends on it, and the summary
lists every failure with the path of its log."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm import tqdm

from pipeline.plan import READ_STAGES, Plan, Task
from pipeline.task import TaskFailed, execute, is_complete

log = logging.getLogger("pipeline")


def _init_worker(threads: int) -> None:
    import torch

    from pipeline.__main__ import setup_logging

    torch.set_num_threads(threads)
    setup_logging()


def _run_in_worker(task: Task) -> tuple[str, str | None, str | None]:
    try:
        return execute(task), None, None
    except TaskFailed as e:
        return "failed", e.error, str(e.log_path) if e.log_path else None


class LocalExecutor:
    def __init__(self, workers: int = 1, threads_per_worker: int | None = None):
        self.workers = max(1, int(workers))
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
        if self.workers == 1:
            import torch

            torch.set_num_threads(self.threads)
            while pending:
                progressed = False
                for t in list(pending):
                    r = ready(t)
                    if r == "wait":
                        continue
                    pending.remove(t)
                    progressed = True
                    if r == "blocked":
                        finish(t, "blocked")
                        continue
                    try:
                        finish(t, execute(t))
                    except TaskFailed as e:
                        finish(t, "failed", e.error, str(e.log_path) if e.log_path else None)
                if not progressed:  # a dependency outside the plan: cannot happen with a planner-built plan
                    for t in pending:
                        finish(t, "blocked")
                    pending.clear()
        else:
            ctx = mp.get_context("spawn")  # fork after torch's thread pools start is unsafe
            with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(self.threads,)) as pool:
                running: dict[Future, Task] = {}
                while pending or running:
                    for t in list(pending):
                        r = ready(t)
                        if r == "blocked":
                            pending.remove(t)
                            finish(t, "blocked")
                        elif r == "run" and len(running) < self.workers:
                            pending.remove(t)
                            running[pool.submit(_run_in_worker, t)] = t
                    if not running:
                        if pending:
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
        bar.close()
        return self._summary(plan, results, failures, time.time() - t0)

    @staticmethod
    def _summary(plan: Plan, results: dict[str, str], failures, seconds: float) -> int:
        from collections import Counter

        counts = Counter(results.values())
        log.info("sweep %s finished in %.0f s: %s", plan.sweep, seconds, ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        for t, err, lp in failures:
            log.error("FAILED %s: %s (log: %s)", t.id, err, lp or Path(t.dir) / "task.log")
        if counts.get("blocked"):
            log.error("%d task(s) not run because a dependency failed or was preempted", counts["blocked"])
        if counts.get("preempted"):
            log.warning("%d task(s) stopped by a signal after checkpointing: rerun the same command to continue",
                        counts["preempted"])
        return 1 if failures or counts.get("blocked") else 0
