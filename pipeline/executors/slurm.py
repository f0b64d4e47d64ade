"""The SLURM executor: one job array per DAG level, chained with dependencies; submission returns at once.

Level k (a stage: tokenizer, tokens, init, pretrain, ...) becomes one array whose element i runs
`python -m pipeline.task <submission>/plans/<stage>.json i`; that per-stage plan holds only the level's
unfinished tasks, so indices are 0..N-1 and a resubmitted sweep skips finished work (a level with nothing
left is not submitted at all). Each array waits `afterok` on the previous one: for an array, afterok means
every element succeeded, and a level's tasks only depend on earlier levels. collect/fit/report wait
`afterany` instead, as locally: they read whatever exists and list what is missing or failed.

Jobs get `--signal=B:USR1@<signal_delay_s>` and `--requeue`: the task process is `exec`'d as the batch
shell (or is the `srun` that forwards the signal to every rank), checkpoints on USR1/TERM; on USR1 (the
time limit is near) it requeues itself (pipeline.task), on TERM (`scancel`) it stops. Nothing here polls
unless `executor.wait=true` (tests, CI).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_write_json, atomic_write_text
from pipeline.config import Config
from pipeline.plan import Plan, Task, load_plan, write_plan
from pipeline.stages import LEVELS, READ_STAGES
from pipeline.task import is_complete
from pipeline.typed import to_dict
from pipeline.validate import ConfigError, known, num

log = logging.getLogger("pipeline")

ROOT = Path(__file__).resolve().parents[2]  # the project, put on PYTHONPATH in every job
OPTIONS = {"kind", "folder", "partition", "account", "qos", "constraint", "setup", "max_array_parallelism",
           "signal_delay_s", "resources", "wait", "python", "gpu_mem_gb"}
RESOURCES = {"nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min", "tasks_per_node", "gres"}
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
          "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED"}
POLL_S = 5.0


@dataclass(frozen=True)
class Resources:
    """executor.resources.<stage>: what one array element of the stage asks SLURM for."""

    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: float
    time_min: int
    tasks_per_node: int | None = None  # processes per node (default: one per GPU, or 1)
    gres: str | None = None  # replaces gpu:<gpus_per_node>, e.g. shard:1 to share a GPU

    @classmethod
    def parse(cls, r: Any, p: str) -> Resources:
        if not isinstance(r, Mapping):
            raise ConfigError(p, "is required: {nodes, gpus_per_node, cpus_per_task, mem_gb, time_min}")
        known(r, p, RESOURCES)
        ints = {key: num(r, key, p, kind=int, lo=lo)
                for key, lo in (("nodes", 1), ("gpus_per_node", 0), ("cpus_per_task", 1), ("time_min", 1))}
        if r.get("gres") is not None and not isinstance(r["gres"], str):
            raise ConfigError(f"{p}.gres", f"must be a GRES string such as shard:1, got {r['gres']!r}")
        return cls(**ints, mem_gb=num(r, "mem_gb", p, lo=0, lo_open=True),
                   tasks_per_node=num(r, "tasks_per_node", p, kind=int, lo=1, default=None), gres=r.get("gres"))

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node or self.gpus_per_node or 1


@dataclass(frozen=True)
class SlurmOptions:
    """executor.* of executor=slurm, validated where it is defined (one line naming the key, exit 2)."""

    resources: dict[str, Resources]  # per stage
    folder: str | None = None  # job scripts and logs (null: <paths.artifacts>/slurm)
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()  # shell lines run before each task
    max_array_parallelism: int = 64
    signal_delay_s: int = 120  # SIGUSR1 this long before the time limit: checkpoint and requeue
    wait: bool = False  # block until the jobs end (tests, CI)
    python: str | None = None  # interpreter in the jobs (null: the one that submits)

    @classmethod
    def of(cls, cfg: Config) -> SlurmOptions:
        opts = to_dict(cfg.executor.options) or {}
        known(opts, "executor", OPTIONS)
        for key in ("folder", "partition", "account", "qos", "constraint", "python"):
            if opts.get(key) is not None and not isinstance(opts[key], str):
                raise ConfigError(f"executor.{key}", f"must be a string or null, got {opts[key]!r}")
        setup = opts.get("setup") or ()
        if not isinstance(setup, (list, tuple)) or not all(isinstance(s, str) for s in setup):
            raise ConfigError("executor.setup", "must be a list of shell lines")
        if not isinstance(opts.get("wait", False), bool):
            raise ConfigError("executor.wait", f"must be true or false, got {opts['wait']!r}")
        res = opts.get("resources")
        if not isinstance(res, Mapping):
            raise ConfigError("executor.resources", f"must map each stage ({', '.join(LEVELS)}) to its resources")
        known(res, "executor.resources", set(LEVELS))
        return cls(resources={s: Resources.parse(res.get(s), f"executor.resources.{s}") for s in LEVELS},
                   **{k: opts.get(k) for k in ("folder", "partition", "account", "qos", "constraint", "python")},
                   setup=tuple(setup), wait=opts.get("wait", False),
                   max_array_parallelism=num(opts, "max_array_parallelism", "executor", kind=int, lo=1, default=64),
                   signal_delay_s=num(opts, "signal_delay_s", "executor", kind=int, lo=0, default=120))

    def task_resources(self) -> dict[str, Any]:
        """Per stage, what one task runs on (pipeline.checks.Resources): the checks read these."""
        from pipeline.checks import Resources as TaskResources

        return {s: TaskResources(processes=r.ntasks_per_node * r.nodes, gpus=r.gpus_per_node * r.nodes,
                                 where=f"executor.resources.{s}", time_min=r.time_min,
                                 tasks_per_node=r.ntasks_per_node, gpus_per_node=r.gpus_per_node, gres=r.gres,
                                 signal_delay_s=self.signal_delay_s, cpus=r.cpus_per_task)
                for s, r in self.resources.items()}


def check(cfg: Config) -> None:
    """Refuse a bad executor config, or a machine without sbatch, before anything is planned or written."""
    SlurmOptions.of(cfg)
    if cfg.stage != "plan" and not shutil.which("sbatch"):
        raise ConfigError("executor", "slurm needs `sbatch` on the PATH (run on a cluster login node, or executor=local)")


@dataclass
class ArrayJob:
    stage: str
    tasks: list[Task]
    plan_file: Path
    script: Path
    dependency: str | None = None
    job_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def log_pattern(self) -> Path:
        return self.script.parent / "logs" / f"{self.stage}-%A_%a.out"

    def log_of(self, index: int) -> Path:
        return self.script.parent / "logs" / f"{self.stage}-{self.job_id}_{index}.out"


def _sbatch_lines(name: str, n: int, r: Resources, opts: SlurmOptions, log_pattern: Path) -> list[str]:
    lines = [
        f"--job-name={name}",
        f"--array=0-{n - 1}%{min(n, opts.max_array_parallelism)}",
        f"--nodes={r.nodes}",
        f"--ntasks-per-node={r.ntasks_per_node}",
        f"--cpus-per-task={r.cpus_per_task}",
        f"--mem={max(1, round(r.mem_gb * 1024))}M",
        f"--time={r.time_min}",
    ]
    if r.gres:  # e.g. shard:1 or mps:25, to pack several small finetunes on one GPU
        lines.append(f"--gres={r.gres}")
    elif r.gpus_per_node:
        lines.append(f"--gres=gpu:{r.gpus_per_node}")
    lines += [f"--{k}={getattr(opts, k)}" for k in ("partition", "account", "qos", "constraint") if getattr(opts, k)]
    lines += [f"--output={log_pattern}", "--open-mode=append", "--requeue", f"--chdir={Path.cwd()}"]
    if opts.signal_delay_s:
        lines.append(f"--signal=B:USR1@{opts.signal_delay_s}")
    return lines


def job_script(job: ArrayJob, sweep: str, r: Resources, opts: SlurmOptions) -> str:
    """The batch script of one level: #SBATCH lines, the user's setup lines, then the task (under srun when
    the stage spans several processes: one per GPU, every node)."""
    n = len(job.tasks)
    ntasks = r.ntasks_per_node * r.nodes
    python = opts.python or sys.executable
    run = f"{shlex.quote(python)} -m pipeline.task {shlex.quote(str(job.plan_file))} \"$SLURM_ARRAY_TASK_ID\""
    out = [
        "#!/bin/bash",
        f"# Generated by pipeline/executors/slurm.py: stage {job.stage} of sweep {sweep}, {n} task(s).",
        f"# Element i runs task i of {job.plan_file}; a task that finished already is skipped.",
        *(f"#SBATCH {line}" for line in _sbatch_lines(f"ds-{sweep}-{job.stage}", n, r, opts, job.log_pattern)),
        "set -eo pipefail",
        *opts.setup,
        f"export PYTHONPATH={shlex.quote(str(ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}",
        'echo "$(date -Is) job $SLURM_JOB_ID (array $SLURM_ARRAY_JOB_ID element $SLURM_ARRAY_TASK_ID) on $(hostname)"',
    ]
    if ntasks > 1:
        out += [
            "# One process per GPU on every node; ranks come from SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.",
            'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "export MASTER_PORT=$((15000 + SLURM_JOB_ID % 20000))  # per element: two elements may share a node",
            "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK  # srun no longer inherits it (Slurm >= 22.05)",
            f"exec srun --kill-on-bad-exit=1 {run}  # srun forwards USR1/TERM to every rank",
        ]
    else:
        out.append(f"exec {run}  # exec: the task itself receives B:USR1")
    return "\n".join(out) + "\n"


class SlurmExecutor:
    def __init__(self, cfg: Config):
        check(cfg)
        self.cfg = cfg
        self.opts = SlurmOptions.of(cfg)
        self.poll_s = POLL_S

    def levels(self, tasks: list[Task]) -> list[tuple[str, list[Task]]]:
        """(stage, unfinished tasks) per DAG level in order; levels with nothing to do are left out."""
        out = []
        for stage in LEVELS:
            todo = [t for t in tasks if t.stage == stage and not is_complete(t)]
            if todo:
                out.append((stage, todo))
        return out

    def run(self, plan: Plan, tasks: list[Task]) -> int:
        levels = self.levels(tasks)
        if levels:
            from pipeline.checks import check_stages

            # a job that would fail: refused before sbatch (memory measured once per process, cached)
            check_stages(self.cfg, [stage for stage, _ in levels], self.opts.task_resources())
        write_plan(plan, self.cfg.paths.artifacts)
        if not levels:
            print(f"sweep {plan.sweep}: all {len(tasks)} selected tasks are finished; nothing to submit")
            return 0
        folder = Path(self.opts.folder or Path(self.cfg.paths.artifacts) / "slurm")
        folder = folder.resolve() / f"{plan.sweep}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        (folder / "logs").mkdir(parents=True)  # SLURM does not create the --output directory
        jobs: list[ArrayJob] = []
        try:
            for stage, todo in levels:
                job = ArrayJob(stage, todo, folder / "plans" / f"{stage}.json", folder / f"{stage}.sbatch")
                atomic_write_json(job.plan_file, Plan(plan.sweep, todo, plan.cells, plan.summary).to_dict())
                atomic_write_text(job.script, job_script(job, plan.sweep, self.opts.resources[stage], self.opts))
                if jobs:  # read stages run whatever happened before them, like the local executor
                    kind = "afterany" if stage in READ_STAGES else "afterok"
                    job.dependency = f"{kind}:{jobs[-1].job_id}"
                job.job_id = sbatch(job.script, job.dependency)
                jobs.append(job)
        except ConfigError:
            cancel([j.job_id for j in jobs if j.job_id])  # no half-submitted chain left behind
            raise
        atomic_write_json(folder / "jobs.json", [
            {"stage": j.stage, "job_id": j.job_id, "dependency": j.dependency, "plan": str(j.plan_file),
             "script": str(j.script), "log": str(j.log_pattern), "tasks": [t.id for t in j.tasks]} for j in jobs])
        self._announce(plan, jobs, folder)
        if self.opts.wait:
            return self.wait(jobs)
        return 0

    @staticmethod
    def _announce(plan: Plan, jobs: list[ArrayJob], folder: Path) -> None:
        ids = ",".join(str(j.job_id) for j in jobs)
        print(f"sweep {plan.sweep}: submitted {len(jobs)} job array(s), {sum(len(j.tasks) for j in jobs)} task(s)")
        for j in jobs:
            dep = f"  after {j.dependency}" if j.dependency else ""
            print(f"  {j.stage:<10} job {j.job_id:<10} {len(j.tasks):>5} task(s){dep}")
        print(f"watch:  squeue -u {os.environ.get('USER', '$USER')}\n"
              f"        sacct -X -j {ids} --format=JobID,JobName%30,State,Elapsed,ExitCode\n"
              f"logs:   {folder}/logs/<stage>-<job>_<index>.out (and task.log in each task's directory)\n"
              f"cancel: scancel {ids.replace(',', ' ')}    (resubmitting the same command skips finished tasks)",
              flush=True)

    def wait(self, jobs: list[ArrayJob]) -> int:
        """Block until no job of this submission is queued or running, then report failures (sacct and disk)."""
        ids = {str(j.job_id) for j in jobs}
        errors = 0
        while True:
            q = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True)
            if q.returncode == 0:
                errors = 0
                if not ids & set(q.stdout.split()):
                    break
            else:
                errors += 1  # the controller may be restarting; give up only when it stays away
                if errors >= 60:
                    log.error("squeue keeps failing (%s); stopped waiting", q.stderr.strip())
                    return 1
            time.sleep(self.poll_s)
        return self._summary(jobs)

    def _summary(self, jobs: list[ArrayJob]) -> int:
        ids = [str(j.job_id) for j in jobs]
        states = sacct_states(ids)
        for _ in range(12):  # accounting lags the controller by a moment
            if not ACTIVE & set(states.values()):
                break
            time.sleep(self.poll_s)
            states = sacct_states(ids)
        failed: list[str] = []
        for j in jobs:
            for i, t in enumerate(j.tasks):
                state = states.get((str(j.job_id), i))
                bad_disk = t.stage not in READ_STAGES and not is_complete(t)
                if (state and state != "COMPLETED") or bad_disk:
                    failed.append(f"{t.id}: {state or 'not finished'} (log: {j.log_of(i)}; {Path(t.dir) / 'task.log'})")
        n = sum(len(j.tasks) for j in jobs)
        log.info("SLURM jobs %s ended: %d of %d tasks finished", ",".join(str(j.job_id) for j in jobs),
                 n - len(failed), n)
        for f in failed:
            log.error("FAILED %s", f)
        return 1 if failed else 0


def sbatch(script: Path, dependency: str | None) -> str:
    args = ["sbatch", "--parsable"]
    if dependency:
        args += [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"]  # a failed level cancels the rest
    p = subprocess.run([*args, str(script)], capture_output=True, text=True)
    if p.returncode != 0:
        msg = " ".join(p.stderr.split()) or f"exit status {p.returncode}"
        raise ConfigError("executor", f"sbatch refused {script.name}: {msg}")
    return p.stdout.strip().split(";")[0]  # "<id>[;cluster]"


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True)


def sacct_states(job_ids: list[str]) -> dict[tuple[str, int], str]:
    """(array job id, element) -> final state from accounting; empty when the cluster keeps none."""
    if not job_ids or not shutil.which("sacct"):
        return {}
    p = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", "JobID,State"],
                       capture_output=True, text=True)
    out: dict[tuple[str, int], str] = {}
    if p.returncode != 0:
        return out
    for line in p.stdout.splitlines():
        jid, _, state = line.partition("|")
        base, _, idx = jid.partition("_")
        state = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        if idx.startswith("["):  # elements that never started: "12_[3-7%2]" or "12_[1,4]"
            for part in idx.strip("[]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    out[(base, i)] = state
        elif idx.isdigit():
            out[(base, int(idx))] = state
    return out


def hand_commands(plan_file: Path) -> list[str]:
    """The sbatch lines that submit a whole plan by hand with the slurm/ templates: the planner orders tasks
    by level, so each level is one contiguous index range of the plan, one array, afterok on the last."""
    tasks = load_plan(plan_file).tasks
    lines = [f"plan={shlex.quote(str(plan_file))}"]
    for stage in LEVELS:
        idx = [i for i, t in enumerate(tasks) if t.stage == stage]
        if not idx:
            continue
        if idx != list(range(idx[0], idx[-1] + 1)):
            raise ValueError(f"the {stage} tasks of {plan_file} are not contiguous: submit it with executor=slurm")
        template = "slurm/pretrain.sbatch" if stage == "pretrain" else "slurm/stage.sbatch"
        dep = "" if len(lines) == 1 else f" --dependency={'afterany' if stage in READ_STAGES else 'afterok'}:$j --kill-on-invalid-dep=yes"
        lines.append(f"j=$(sbatch --parsable --job-name={stage} --array={idx[0]}-{idx[-1]}{dep} {template} \"$plan\")"
                     f"  # {len(idx)} {stage}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m pipeline.executors.slurm <plan.json>   (prints the sbatch lines for slurm/*.sbatch)",
              file=sys.stderr)
        return 2
    print("\n".join(hand_commands(Path(argv[0]))))
    return 0


def read_jobs(folder: Path) -> list[dict[str, Any]]:
    """The record a submission leaves in its folder (stage, job id, dependency, plan, script, tasks)."""
    return json.loads((Path(folder) / "jobs.json").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
