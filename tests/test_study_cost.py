"""scripts/study_cost.py: worker-hours summed over every attempt of every task (a stopped one up to its last line),
the wall clock as the union of the attempts, a SIGSTOP pause subtracted from both."""

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
    assert "attempts read: 4 (1 stopped before their end)" in out
    # finetune: 10 + (20 - 10) + (30 - 10) = 40 min; evaluate 5 min
    assert "finetune      0.67 worker-hours  (3 attempts, 1 stopped)" in out
    assert "evaluate      0.08 worker-hours" in out and "worker-hours: 0.75" in out
    # running: 01:00-01:10 and 02:00-02:35 less the pause: 10 + 25 = 35 min
    assert "wall clock with a task running: 0.58 h" in out
