"""What a study cost, measured from its tasks' own logs: worker-hours per stage and the wall clock it ran.

    python scripts/study_cost.py ARTIFACTS [--pause START/END ...]

Every attempt of every task under `ARTIFACTS` (the study's `paths.artifacts`: `<stage>/<task>/task.log`; a task
shared by several sweeps is one directory, counted once) is read from its `task.log`: an attempt runs from its
`: start` line to its `ok (...)`/`failed` line. An attempt that was stopped (a session's end) has no end line: it
is counted two ways, to its last line (a lower bound; pretraining and finetuning log a progress line at every
logging interval or evaluation, so this under-counts by at most one, as long as the attempt logged them) and to
the same task's next start (an upper bound; or, for a task's last attempt, to the newest line of the study).
Worker-hours: the attempts' durations summed, per stage. Wall clock: the union of the attempts' intervals (the
time at least one task ran). `--pause` (ISO times, UTC as the logs write them) subtracts a period when the run was
stopped with SIGSTOP (a benchmark on an idle machine) or not running at all. Attempts that ran on a busy machine
are not told apart: say in the text when it was.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),\d+ ")


def attempts(log: Path) -> list[tuple[dt.datetime, dt.datetime, bool]]:
    """(start, end, finished) of each attempt in a task.log; a stopped attempt ends at its last line."""
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


def upper_ends(runs: list[tuple[dt.datetime, dt.datetime, bool]], newest: dt.datetime) -> list[dt.datetime]:
    """The latest each attempt can have ended: its end line, or for a stopped one the task's next start (the
    newest line of the study for its last attempt)."""
    return [end if done else (runs[i + 1][0] if i + 1 < len(runs) else max(end, newest))
            for i, (_, end, done) in enumerate(runs)]


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
    runs = {d: attempts(Path(d) / "task.log") for d in dirs}
    newest = max((e for r in runs.values() for _, e, _ in r), default=None)
    low: dict[str, float] = defaultdict(float)
    high: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    stopped: dict[str, int] = defaultdict(int)
    spans, spans_high = [], []
    for d, stage in dirs.items():
        for (start, end, done), top in zip(runs[d], upper_ends(runs[d], newest), strict=True):
            low[stage] += minus(start, end, pauses)
            high[stage] += minus(start, top, pauses)
            count[stage] += 1
            stopped[stage] += not done
            spans.append((start, end))
            spans_high.append((start, top))
    n_stopped = sum(stopped.values())
    print(f"tasks with a log: {len(dirs)}; attempts read: {sum(count.values())} ({n_stopped} stopped before their end"
          + (": counted to their last line, and [to their next start]" if n_stopped else "") + ")")

    def hours(lo: float, hi: float, unit: str = "") -> str:  # the upper bound in brackets where it differs
        return f"{lo / 3600:.2f}" + (f" {unit}" if unit else "") + (f" [{hi / 3600:.2f}]" if hi - lo >= 18 else "")

    for stage, s in sorted(low.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<10} {hours(s, high[stage], 'worker-hours'):>15}  ({count[stage]} attempts, "
              f"{stopped[stage]} stopped)")
    first, last = (min(s for s, _ in spans), max(e for _, e in spans)) if spans else (None, None)
    print(f"worker-hours: {hours(sum(low.values()), sum(high.values()))}")
    print(f"wall clock with a task running: {hours(union_seconds(spans, pauses), union_seconds(spans_high, pauses), 'h')} "
          f"(first start {first}, last end {last}; pauses subtracted: {len(pauses)})")

if __name__ == "__main__":
    main()
