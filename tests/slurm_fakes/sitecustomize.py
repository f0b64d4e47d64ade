"""Imported by Python at start-up in the SLURM jobs of tests/test_slurm.py (this folder is on their PYTHONPATH).

With DS_FAKE_STAGES=1 the stage functions become a cheap stand-in that records every run in `<task dir>/runs`,
refuses to start before its dependencies finished (so a wrong dependency chain fails the job), sleeps
`spec["sleep"]` seconds on its first run only (a resumed run is quick) and fails when `spec["fail"]` is set.
The executor's mechanics are then tested on a real cluster in seconds, whatever the training code does.
"""

import os
import sys
import time
import types
from pathlib import Path


def run(task) -> None:
    d = Path(task.dir)
    d.mkdir(parents=True, exist_ok=True)
    for dep in task.spec.get("dep_dirs", []):
        if not (Path(dep) / "status.json").exists():
            raise RuntimeError(f"started before its dependency {dep} finished")
    first = not (d / "runs").exists()
    with open(d / "runs", "a") as f:
        f.write(f"{os.environ.get('SLURM_JOB_ID')} {time.time()}\n")
    if first:
        time.sleep(float(task.spec.get("sleep", 0)))
    if task.spec.get("fail"):
        raise RuntimeError("asked to fail")


def read_rungs(directory) -> list[int]:
    return [1] if (Path(directory) / "status.json").exists() else []


if os.environ.get("DS_FAKE_STAGES") == "1":
    fake = types.ModuleType("fake_stages")
    fake.run, fake.run_init, fake.read_rungs = run, run, read_rungs
    for module in ("tokenizer", "tokens", "pretrain", "finetune", "evaluate", "collect", "fit", "report"):
        sys.modules[f"pipeline.{module}"] = fake
