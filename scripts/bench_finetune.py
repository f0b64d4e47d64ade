"""A finetuning cell's speed in fp32 and in bf16 autocast: the pipeline's own finetune stage, timed.

    DS_CACHE=... python scripts/bench_finetune.py [--steps 200] [--repeats 3] [--threads 1] [--out DIR] [overrides]

The cell is scripts/check_bf16_quality.py's: the desk en-de cell at Dp = 0 (t5_mini from its random init), the
desk finetuning recipe (batch 64, lr 1e-3, warm-up then linear) on the whole en-de pool, for `--steps` steps. Each
run is the finetune stage in a process of its own (`python -m pipeline.task`, `--threads` threads, dtype forced),
in a fresh directory, one run at a time; the two precisions alternate which goes first in each of `--repeats`
rounds, and the median counts. Timed: the stage's own training steps (finetune.json `train_seconds`: forward,
backward and optimizer step of every step, the batches' assembly and the first steps' warm-up included, as in a
cell; the validation passes, checkpoint writes, process start and model load left out: they do not grow with
the steps). Each run's whole loop
(`seconds`, with validation at step 0 and at its end) is printed beside it.

Prints the date, the processor, its bf16 flags, torch, the load average before and after (a ratio taken while other work
ran is not a result), each run's seconds, the median seconds a step of each precision, and last
`bf16/fp32 step ratio: X` (fp32's seconds a step over bf16's: above 1, bf16 is faster).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from check_bf16_quality import plan_cell, variant  # noqa: E402  (this folder: the same cell as the quality check)


def order(round_: int) -> tuple[str, str]:
    """Which precision runs first in a round: alternating, so a drift in the machine's load hits both."""
    return ("fp32", "bf16") if round_ % 2 == 0 else ("bf16", "fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="threads of each run (the study's workers use 1)")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench-finetune"))
    ap.add_argument("overrides", nargs="*", help="Hydra overrides on top of scale=desk")
    a = ap.parse_args()
    if a.steps < 1 or a.repeats < 1 or a.threads < 1:
        raise SystemExit("--steps, --repeats and --threads must be at least 1")
    out = Path(a.out).resolve()
    import torch

    from pipeline.artifacts import atomic_write_json, read_json
    from pipeline.plan import Plan
    from pipeline.precision import cpu_bf16_flags, cpu_model
    from pipeline.task import execute

    plan, ft, ev = plan_cell(a.overrides, out)
    for t in plan.tasks:  # the tokenizer and the init checkpoint the cell starts from (kept between runs)
        if t.stage in ("tokenizer", "init"):
            execute(t)
    threads = str(a.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": str(ROOT)}
    load0 = os.getloadavg()
    secs: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(a.repeats):
        for dtype in order(r):
            f, _ = variant(ft, ev, dtype, a.steps, a.steps, out / f"run-{r}")  # validation at step 0 and the end
            shutil.rmtree(f.dir, ignore_errors=True)  # a fresh run: a finished one would be skipped
            plan_path = out / f"run-{r}" / f"plan-{dtype}.json"
            atomic_write_json(plan_path, Plan(sweep="bench-finetune", tasks=[f], cells=[], summary={}).to_dict())
            subprocess.run([sys.executable, "-m", "pipeline.task", str(plan_path), "0"], env=env, check=True)
            info = read_json(Path(f.dir) / "finetune.json")
            if info["steps"] != a.steps or info["dtype"] != dtype:
                raise SystemExit(f"run {r} {dtype}: {info['steps']} steps in {info['dtype']}, not {a.steps} in {dtype}")
            secs[dtype].append(info["train_seconds"])
            print(f"round {r + 1}/{a.repeats} {dtype}: {info['train_seconds']:.1f} s in {a.steps} training steps "
                  f"({info['train_seconds'] / a.steps:.3f} s a step; the loop with its validation "
                  f"{info['seconds']:.1f} s)", flush=True)
    load1 = os.getloadavg()
    med = {d: statistics.median(s) / a.steps for d, s in secs.items()}
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC (at the end)")
    print(f"processor: {cpu_model()}; bf16 instructions: {', '.join(cpu_bf16_flags()) or 'none'}; "
          f"torch {torch.__version__}; {a.threads} thread(s) a run")
    print(f"cell: {ft.spec['pair']} t5_mini Dp 0, the whole pool ({ft.spec['df']:,} pairs), batch "
          f"{ft.spec['finetune']['batch_size']}, {a.steps} steps a run, {a.repeats} alternating rounds")
    print(f"load average (1/5/15 min) before {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f}")
    for d, s in secs.items():
        print(f"{d}: median {med[d]:.3f} s a step (runs: {' / '.join(f'{x:.1f}' for x in s)} s)")
    print(f"bf16/fp32 step ratio: {med['fp32'] / med['bf16']:.2f}")


if __name__ == "__main__":
    main()
