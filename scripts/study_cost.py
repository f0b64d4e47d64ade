"""What a study cost, measured from its tasks' own logs: worker-hours per stage and the wall clock it ran.

    python scripts/study_cost.py ARTIFACTS [--pause START/END ...]

Every attempt of every task under `ARTIFACTS` (the study's `paths.artifacts`: `<stage>/<task>/task.log`; a task
shared by several sweeps is one directory, counted once) is read from its `task.log`: an attempt runs from its `: start` line to its `ok (...)`/`failed` line, or, for an attempt that was
stopped (a session's end), to its last line (an under-count of at most one logging interval). Worker-hours: the
attempts' durations summed, per stage. Wall clock: the union of the attempts' intervals (the time at least one
task ran). `--pause` (ISO times, UTC as the logs write them) subtracts a period when the run was stopped with
SIGSTOP (a benchmark on an idle machine). Attempts that ran on a busy machine are not told apart: say in the
text when it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),\d+ ")


def attempts(log: Path) -> list[tuple[dt.datetime, dt.datetime, bool]]:
    """(start, end, finished) of each attempt in a task.log."""
    out: list[list] = []
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
        if line.rstrip().endswith(": start"):
            out.append([t, t, False])
        elif out and not out[-1][2]:
            out[-1][1] = t
            if re.search(r": (ok|failed)\b", line):
                out[-1][2] = True
    return [tuple(a) for a in out]


def minus(start: dt.datetime, end: dt.datetime, pauses: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Seconds of [start, end] outside every pause."""
    s = (end - start).total_seconds()
    for a, b in pauses:
        s -= max(0.0, (min(end, b) - max(start, a)).total_seconds())
    return s


def union_seconds(intervals: list[tuple[dt.datetime, dt.datetime]],
                  pauses: list[tuple[dt.datetime, dt.datetime]]) -> float:
    total, cur = 0.0, None
    for a, b in sorted(intervals):
        if cur and a <= cur[1]:
            cur[1] = max(cur[1], b)
            continue
        if cur:
            total += minus(cur[0], cur[1], pauses)
        cur = [a, b]
    return total + (minus(cur[0], cur[1], pauses) if cur else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", type=Path, help="the study's paths.artifacts")
    ap.add_argument("--pause", action="append", default=[], help="START/END, ISO, a SIGSTOP to subtract")
    a = ap.parse_args()
    def naive_utc(x: str) -> dt.datetime:  # the logs' times are UTC without a zone
        t = dt.datetime.fromisoformat(x)
        return t.astimezone(dt.timezone.utc).replace(tzinfo=None) if t.tzinfo else t

    pauses = [tuple(naive_utc(x) for x in p.split("/")) for p in a.pause]
    dirs = {str(log.parent): log.parent.parent.name for log in sorted(a.artifacts.glob("*/*/task.log"))}
    per_stage: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    stopped: dict[str, int] = defaultdict(int)
    spans = []
    for d, stage in dirs.items():
        log = Path(d) / "task.log"
        if not log.exists():
            continue
        for start, end, done in attempts(log):
            per_stage[stage] += minus(start, end, pauses)
            runs[stage] += 1
            stopped[stage] += not done
            spans.append((start, end))
    total = sum(per_stage.values())
    print(f"tasks with a log: {len(dirs)}; attempts read: {sum(runs.values())} "
          f"({sum(stopped.values())} stopped before their end)")
    for stage, s in sorted(per_stage.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<10} {s / 3600:7.2f} worker-hours  ({runs[stage]} attempts, {stopped[stage]} stopped)")
    first, last = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (None, None)
    print(f"worker-hours: {total / 3600:.2f}")
    print(f"wall clock with a task running: {union_seconds(spans, pauses) / 3600:.2f} h "
          f"(first start {first}, last end {last}; pauses subtracted: {len(pauses)})")


if __name__ == "__main__":
    main()
