"""scripts/study_cost.py: worker-hours summed over every attempt of every task (a stopped one up to its last line,
and as an upper bound up to the task's next start), the wall clock as the union of the attempts, a SIGSTOP pause
subtracted from both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(path: Path, *lines: str) -> None:
    path.mkdir(parents=True)
    (path / "task.log").write_text("".join(f"2026-12-07 {t},123 INFO pipeline: {m}\n" for t, m in
                                          (x.split(" ", 1) for x in lines)))


def test_attempts_are_summed_per_stage_and_the_wall_clock_is_their_union(tmp_path):
    # finetune A: stopped after 10 min, resumed for 20 min; finetune B: 30 min beside A's second attempt;
    # evaluate: 5 min after; a pause of 10 min inside B and A's second attempt
    log(tmp_path / "finetune" / "a", "01:00:00 ft/a: start", "01:10:00 step 500", "02:00:00 ft/a: start",
        "02:20:00 ft/a: ok (1200.0 s)")
    log(tmp_path / "finetune" / "b", "02:00:00 ft/b: start", "02:15:00 step 100", "02:30:00 ft/b: ok (1800.0 s)")
    log(tmp_path / "evaluate" / "c", "02:30:00 ev/c: start", "02:35:00 ev/c: ok (300.0 s)")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "study_cost.py"), str(tmp_path),
                          "--pause", "2026-12-07T02:05:00/2026-12-07T02:15:00"],
                         capture_output=True, text=True, check=True).stdout
    out = " ".join(out.split())  # the columns' padding aside
    assert "attempts read: 4 (1 stopped before their end: counted to their last line, and [to their next start])" in out
    # finetune: 10 + (20 - 10) + (30 - 10) = 40 min; A's stopped attempt up to its restart: 60 + 10 + 20 = 90 min
    assert "finetune 0.67 worker-hours [1.50] (3 attempts, 1 stopped)" in out
    assert "evaluate 0.08 worker-hours (1 attempts" in out and "worker-hours: 0.75 [1.58]" in out
    # running: 01:00-01:10 and 02:00-02:35 less the pause: 10 + 25 = 35 min; at most 01:00-02:35 less it: 85 min
    assert "wall clock with a task running: 0.58 h [1.42]" in out


def test_a_last_attempt_stopped_is_bounded_by_the_newest_line_of_the_study(tmp_path):
    log(tmp_path / "finetune" / "a", "01:00:00 ft/a: start", "01:06:00 step 100")  # killed, never restarted
    log(tmp_path / "evaluate" / "b", "01:00:00 ev/b: start", "01:30:00 ev/b: ok (1800.0 s)")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "study_cost.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    out = " ".join(out.split())  # the columns' padding aside
    assert "finetune 0.10 worker-hours [0.50] (1 attempts, 1 stopped)" in out
    assert "worker-hours: 0.60 [1.00]" in out and "wall clock with a task running: 0.50 h (" in out
