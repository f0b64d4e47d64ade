"""Does bf16 give the same numbers as fp32? One desk-shaped cell finetuned twice, in fp32 and in bf16 autocast.

    DS_CACHE=... python scripts/check_bf16_quality.py [--steps 1000] [--out artifacts/bf16-quality] [overrides]

The cell: t5_mini from its random init (the Dp = 0 baseline), the desk scale's finetuning recipe (batch 64,
lr 1e-3, linear schedule with 100 warm-up steps) for `--steps` steps on the whole en-de training pool, the
validation CE every `--eval-every` steps; then the evaluate stage (greedy decoding of both test splits, the
reference CE) in the cell's precision. Both sides are the pipeline's own stages (`pipeline.task` on copies of the
planned finetune and evaluate tasks, dtype forced), run at the same time, one process of one thread each.

Prints a table: validation CE of both at the same steps and the largest gap (the check: within 0.02 nats), the
test CE and BLEU of each split, and BLEU's paired bootstrap (sacreBLEU, `pipeline.significance.paired_bleu`: the
check is that the difference is inside its noise); plus seconds a step of each side (under whatever load the
machine had: a quality check, not a benchmark). Resumable: rerun the same command after a kill.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CE_TOLERANCE = 0.02  # nats: the issue's bar for "the same numbers"


def plan_cell(overrides: list[str], out: Path):
    """The desk en-de plan (artifacts under `out`) and its Dp = 0 cell at the largest Df, seed 0."""
    from hydra import compose, initialize_config_dir

    from pipeline.run import prepare

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=en_de", "scale=desk", f"paths.artifacts={out / 'artifacts'}",
                                           f"paths.reports={out / 'reports'}", *overrides])
    _, plan = prepare(cfg)
    fts = [t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["dp_rung"] == 0
           and t.spec["seed"] == 0]
    ft = max(fts, key=lambda t: t.spec["df"])
    ev = next(t for t in plan.tasks if t.stage == "evaluate" and t.deps == (ft.id,))
    return plan, ft, ev


def variant(ft, ev, dtype: str, steps: int, eval_every: int, out: Path):
    """Copies of the cell's finetune and evaluate tasks in their own directories, in `dtype`."""
    ft_dir = out / f"ft-{dtype}-{steps}"
    f = dataclasses.replace(ft, id=f"finetune/{ft_dir.name}", dir=str(ft_dir), deps=(), spec={
        **ft.spec, "dtype": dtype, "finetune": {**ft.spec["finetune"], "max_steps": steps, "eval_every": eval_every,
                                                "dtype": dtype}})
    e = dataclasses.replace(ev, id=f"evaluate/ev-{dtype}-{steps}", dir=str(out / f"ev-{dtype}-{steps}"), deps=(f.id,),
                            spec={**ev.spec, "finetune_dir": str(ft_dir)})
    return f, e


def run_tasks(plan_path: Path, indices: list[int], env: dict[str, str]) -> None:
    """`python -m pipeline.task plan i` for each index, all at once (one process each), waiting for all."""
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.task", str(plan_path), str(i)], env=env) for i in indices]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a task failed (exit codes {codes}); its task.log says why; rerun to resume")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bf16-quality"))
    ap.add_argument("overrides", nargs="*", help="Hydra overrides on top of scale=desk")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    from pipeline.artifacts import atomic_write_json, read_json
    from pipeline.evaluate import test_rows
    from pipeline.plan import Plan
    from pipeline.precision import cpu_bf16_flags, cpu_model
    from pipeline.significance import paired_bleu
    from pipeline.task import execute

    plan, ft, ev = plan_cell(a.overrides, out)
    for t in plan.tasks:  # the tokenizer and the init checkpoint the cell starts from
        if t.stage in ("tokenizer", "init"):
            execute(t)
    sides = {d: variant(ft, ev, d, a.steps, a.eval_every, out) for d in ("fp32", "bf16")}
    tasks = [f for f, _ in sides.values()] + [e for _, e in sides.values()]
    mini = Plan(sweep="bf16-quality", tasks=tasks, cells=[], summary={})
    plan_path = out / f"plan-{a.steps}.json"
    atomic_write_json(plan_path, mini.to_dict())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run_tasks(plan_path, [0, 1], env)  # the two finetunings side by side
    run_tasks(plan_path, [2, 3], env)  # then the two evaluations

    fj = {d: read_json(Path(f.dir) / "finetune.json") for d, (f, _) in sides.items()}
    mj = {d: read_json(Path(e.dir) / "metrics.json") for d, (_, e) in sides.items()}
    curves = {d: {p["step"]: p["val_ce"] for p in fj[d]["curve"]} for d in fj}
    steps = sorted(set(curves["fp32"]) & set(curves["bf16"]))
    rows = [(s, curves["fp32"][s], curves["bf16"][s], curves["bf16"][s] - curves["fp32"][s]) for s in steps]
    worst = max(abs(r[3]) for r in rows[1:]) if len(rows) > 1 else float("nan")  # step 0: the same weights
    lines = [f"processor: {cpu_model()}, bf16 flags: "
             f"{', '.join(cpu_bf16_flags()) or 'none'}; torch {__import__('torch').__version__}, 1 thread a side",
             f"cell: {ft.spec['pair']} t5_mini Dp 0, Df {ft.spec['df']:,} (the whole pool), lr {ft.spec['lr']}, "
             f"{a.steps} steps, batch {ft.spec['finetune']['batch_size']}",
             "", "| step | val CE fp32 | val CE bf16 | bf16 - fp32 |", "|---|---|---|---|"]
    lines += [f"| {s} | {x:.4f} | {y:.4f} | {d:+.4f} |" for s, x, y, d in rows]
    lines += ["", f"largest |bf16 - fp32| validation CE after step 0: {worst:.4f} nats "
              f"({'within' if worst <= CE_TOLERANCE else 'OUTSIDE'} {CE_TOLERANCE})"]
    lines += ["", "| split | CE fp32 | CE bf16 | BLEU fp32 | BLEU bf16 | bf16 - fp32 [95% CI] | p | inside the noise |",
              "|---|---|---|---|---|---|---|---|"]
    from pipeline.config import data_config
    from pipeline.sources import get_source

    source = get_source(data_config(ev.spec["data"]), Path(ev.spec["cache"]))
    report: dict = {"val_ce": rows, "worst_val_ce_gap": worst, "splits": {}}
    for split in ev.spec["evaluate"]["test_splits"]:
        refs = [r[ev.spec["tgt"]] for r in test_rows(source, ev.spec["pair"], ev.spec["evaluate"]["test_size"], split)]
        hyps, ms = {}, {}
        for d, (_, e) in sides.items():
            first = mj[d].get("test_split", split) == split
            name = "predictions.jsonl" if first else f"predictions-{split}.jsonl"
            hyps[d] = [json.loads(x)["hypothesis"] for x in (Path(e.dir) / name).read_text().splitlines()]
            ms[d] = mj[d] if first else mj[d]["other"]
        c = paired_bleu(hyps["fp32"], hyps["bf16"], refs, ev.spec["evaluate"]["bleu_tokenize"])
        lines.append(f"| {split} | {ms['fp32']['ce']:.4f} | {ms['bf16']['ce']:.4f} | {c.bleu_a:.2f} | {c.bleu_b:.2f} | "
                     f"{c.delta:+.2f} [{c.delta_lo:+.2f}, {c.delta_hi:+.2f}] | {c.p_value:.3f} | "
                     f"{'yes' if not c.significant else 'NO'} |")
        report["splits"][split] = {"ce": {d: ms[d]["ce"] for d in ms}, **c.as_dict()}
    secs = {d: fj[d]["seconds"] / max(fj[d]["steps"], 1) for d in fj}
    lines += ["", "seconds a step, validation included, under this machine's load (not a benchmark): "
              + ", ".join(f"{d} {s:.3f}" for d, s in secs.items())
              + "; generation sentences/s: " + ", ".join(f"{d} {mj[d]['sentences_per_s']:.1f}" for d in mj)]
    report["seconds_per_step"] = secs
    atomic_write_json(out / f"quality-{a.steps}.json", report)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
