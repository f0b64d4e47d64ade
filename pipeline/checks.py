"""Every stage's resources against its config, before anything runs or is submitted.

`stage_checks(cfg, stages)` gives one `StageCheck` per stage: its processes and GPUs (from the executor),
its memory per GPU (pipeline.memory, for the training and evaluation stages on GPUs) and the problems that
would make it fail at start or on its first step:

- global batch vs micro-batch x processes (pretraining), batch vs processes and one row vs the token
  micro-batch (finetuning);
- processes a task runs vs what the stage can use: only pretraining and finetuning run data-parallel, and a
  GPU per process (tasks_per_node above gpus_per_node puts two ranks on one device);
- the time limit vs the requeue signal (SLURM's USR1 comes `signal_delay_s` before the limit);
- the tokens stage's worker processes (`tokens.workers`) vs the CPUs its job is given (`cpus_per_task`);
- memory per GPU vs `executor.gpu_mem_gb`.

`stage=plan` prints `format_table` and refuses a config with a problem (one line naming the settings to change,
exit 2); the SLURM executor calls `refuse` again before its first `sbatch`. On the local executor without a
GPU the batch checks apply and the memory ones do not (the table says so).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import Config, ConfigError
from pipeline.memory import GiB, StageMemory, describe, evaluation_memory, training_memory

PARALLEL = ("pretrain", "finetune")  # the stages that run data-parallel over several processes
MEASURED = ("pretrain", "finetune", "evaluate")  # the stages whose memory per GPU is measured
MIN_WORK_SHARE = 0.5  # a job must compute for at least this share of its time limit before the requeue signal


@dataclass(frozen=True)
class Resources:
    """What one task of a stage runs on, as its executor gives it (`SlurmOptions.task_resources`, or
    `local_resources` on this machine): processes (ranks) and GPUs in all, and for SLURM the per-node numbers,
    the time limit and the requeue signal's lead."""

    processes: int
    gpus: int
    where: str = "executor"  # the config path of these resources, for messages
    time_min: int | None = None
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    gres: str | None = None  # a GRES other than whole GPUs (e.g. shard:1): processes may share a GPU
    signal_delay_s: int | None = None
    cpus: int | None = None  # CPUs one task's job is given (SLURM's cpus_per_task; None: not limited)


@dataclass(frozen=True)
class StageCheck:
    stage: str
    resources: Resources
    memory: StageMemory | None = None
    gpu_bytes: int | None = None  # memory of one GPU the stage is checked against (None: not checked)
    note: str = ""
    problems: tuple[ConfigError, ...] = field(default=())

    @property
    def fits(self) -> bool | None:
        if self.memory is None or self.gpu_bytes is None:
            return None
        return self.memory.total <= self.gpu_bytes


# ------------------------------------------------------------------------------------------ resources


def gpu_mem_gb(cfg: Config) -> float:
    v = cfg.executor.opts().get("gpu_mem_gb", 80)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError("executor.gpu_mem_gb", f"must be a number of GB > 0 (memory of one GPU), got {v!r}")
    return float(v)


@functools.lru_cache(maxsize=1)
def _local_gpu() -> tuple[int, str] | None:
    """(bytes, name) of this machine's first GPU, or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    return p.total_memory, p.name


def local_resources() -> Resources:
    """The local executor: one process, on this machine's GPU if it has one."""
    return Resources(1, 1 if _local_gpu() else 0)


# ---------------------------------------------------------------------------------------------- checks


def _batch_problems(cfg: Config, stage: str, r: Resources) -> list[ConfigError]:
    out = []
    w = r.processes
    where = f"{r.where}.gpus_per_node" if r.time_min is not None else r.where
    if stage == "pretrain":
        p = cfg.pretrain
        if w > 1 and p.distributed == "none":
            out.append(ConfigError(f"pretrain.distributed / {r.where}",
                                   f"{w} processes each train the whole run with distributed=none; set "
                                   f"pretrain.distributed=auto|ddp|fsdp or one task per node"))
        elif p.batch_size % (p.micro_batch_size * w):
            out.append(ConfigError(
                f"pretrain.micro_batch_size / {where}",
                f"pretrain.batch_size {p.batch_size} must be a multiple of micro_batch_size x processes "
                f"({p.micro_batch_size} x {w}); pretraining would stop at its start: make micro_batch_size divide "
                f"{p.batch_size // w if p.batch_size % w == 0 else p.batch_size} or change the processes"))
    elif stage == "finetune":
        f = cfg.finetune
        dist = getattr(f, "distributed", "auto")
        if w > 1 and dist == "none":
            out.append(ConfigError(f"finetune.distributed / {r.where}",
                                   f"{w} processes each train the whole cell with distributed=none; set "
                                   f"finetune.distributed=auto|ddp|fsdp or one task per node"))
        elif f.batch_size % w:
            out.append(ConfigError(f"finetune.batch_size / {where}",
                                   f"finetune.batch_size {f.batch_size} must be a multiple of the {w} processes"))
        # a micro-batch too small for one pair is refused by the config itself (FinetuneConfig.parse)
    elif w > 1:
        out.append(ConfigError(f"{r.where}.tasks_per_node",
                               f"the {stage} stage runs in one process, not {w}: set tasks_per_node: 1 and nodes: 1"))
    return out


def _slurm_problems(cfg: Config, stage: str, r: Resources) -> list[ConfigError]:
    out = []
    if r.gpus_per_node and not r.gres and r.tasks_per_node > r.gpus_per_node:
        out.append(ConfigError(f"{r.where}.tasks_per_node",
                               f"{r.tasks_per_node} processes per node on {r.gpus_per_node} GPUs: each process "
                               f"drives its own GPU (cuda:LOCAL_RANK); set tasks_per_node <= gpus_per_node"))
    delay = r.signal_delay_s or 0
    if r.time_min is not None and delay > MIN_WORK_SHARE * r.time_min * 60:
        out.append(ConfigError(
            f"executor.signal_delay_s / {r.where}.time_min",
            f"the requeue signal comes {delay} s before a {r.time_min}-minute limit: less than "
            f"{MIN_WORK_SHARE:.0%} of each job would compute; lower signal_delay_s or raise time_min"))
    if stage == "tokens" and r.cpus is not None and cfg.tokens.workers > r.cpus:
        out.append(ConfigError(
            f"tokens.workers / {r.where}.cpus_per_task",
            f"{cfg.tokens.workers} tokenizer processes in a job of {r.cpus} CPU(s): they would take turns on "
            f"them, no faster than {r.cpus}; set tokens.workers <= cpus_per_task or give the tokens stage more CPUs"))
    if stage == "pretrain" and r.time_min is not None and not delay and cfg.pretrain.checkpoint_minutes >= r.time_min:
        out.append(ConfigError(
            f"pretrain.checkpoint_minutes / {r.where}.time_min",
            f"without a requeue signal (signal_delay_s 0) and a checkpoint every {cfg.pretrain.checkpoint_minutes:g} "
            f"min, a {r.time_min}-minute job never saves before it is killed; checkpoint more often or set "
            f"executor.signal_delay_s"))
    return out


def measure(cfg: Config, stage: str, r: Resources) -> StageMemory:
    """Memory per GPU of `stage` as configured (the first model preset of the sweep that needs the most)."""
    from pipeline.model import load_preset

    vocab, gpu = cfg.tokenizer.vocab_size, r.gpus > 0
    worst = None
    for ref in cfg.models:
        preset = load_preset(ref.as_dict())
        m = _measure_one(cfg, stage, preset, vocab, r.processes, gpu)
        worst = m if worst is None or m.total > worst.total else worst
    return worst


def _dp_mode(requested: str, processes: int) -> str:
    """What the runtime does with `distributed` at this many processes (auto: ddp over several)."""
    if processes == 1 or requested == "none":
        return "none"
    return "ddp" if requested == "auto" else requested


def _measure_one(cfg: Config, stage: str, preset, vocab: int, w: int, gpu: bool) -> StageMemory:
    if stage == "pretrain":
        from pipeline.span_corruption import compute_lengths

        p = cfg.pretrain
        _, targets = compute_lengths(p.inputs_length, p.noise_density, p.mean_noise_span_length)
        return training_memory("pretrain", preset, vocab, processes=w, mode=_dp_mode(p.distributed, w), gpu=gpu,
                               rows=p.micro_batch_size, src_len=p.inputs_length, tgt_len=targets,
                               optimizer=p.optimizer, dropout=0.0,
                               checkpointing=bool(getattr(p, "activation_checkpointing", False)))
    if stage == "finetune":
        f = cfg.finetune
        per_process = max(1, f.batch_size // w)
        row = f.max_source_length + f.max_target_length
        mbt = getattr(f, "micro_batch_tokens", None)
        # the worst micro-batch: every pair at the length caps (attention grows with length at a fixed token count)
        rows = per_process if mbt is None else max(1, min(per_process, mbt // row))
        return training_memory("finetune", preset, vocab, processes=w,
                               mode=_dp_mode(getattr(f, "distributed", "auto"), w), gpu=gpu, rows=rows,
                               src_len=f.max_source_length, tgt_len=f.max_target_length, optimizer="adamw",
                               dropout=f.dropout_rate,
                               checkpointing=bool(getattr(f, "activation_checkpointing", False)),
                               validation_rows=2 * per_process,
                               validation_lengths=(f.max_source_length, f.max_target_length))
    e = cfg.evaluate
    return evaluation_memory(preset, vocab, gpu=gpu, batch=e.batch_size, beams=e.num_beams,
                             src_len=cfg.finetune.max_source_length, new_tokens=e.max_new_tokens)


MEMORY_KEY = {"pretrain": "pretrain.micro_batch_size", "finetune": "finetune.micro_batch_tokens",
              "evaluate": "evaluate.batch_size"}
MEMORY_FIX = {
    "pretrain": "pretrain.micro_batch_size, pretrain.activation_checkpointing or pretrain.distributed=fsdp "
                "over more GPUs (executor.resources.pretrain.gpus_per_node)",
    "finetune": "finetune.micro_batch_tokens, finetune.activation_checkpointing or finetune.distributed=fsdp "
                "over more GPUs (executor.resources.finetune.gpus_per_node)",
    "evaluate": "evaluate.batch_size (or evaluate.num_beams, evaluate.max_new_tokens)",
}


def stage_checks(cfg: Config, stages: list[str] | tuple[str, ...], memory: bool = True,
                 resources: Mapping[str, Resources] | None = None) -> list[StageCheck]:
    """One StageCheck per stage in `stages` (DAG order), problems and (with `memory`) memory per GPU included.
    `resources`: per stage, as the executor gives them (pipeline.executors.task_resources); default: local."""
    limit = gpu_mem_gb(cfg)
    out = []
    for stage in stages:
        r = resources[stage] if resources is not None else local_resources()
        problems = _batch_problems(cfg, stage, r)
        if r.time_min is not None:  # a batch scheduler's job
            problems += _slurm_problems(cfg, stage, r)
        mem, gpu_bytes, note = None, None, ""
        if stage in MEASURED and memory:
            mem = measure(cfg, stage, r)
            if r.gpus:
                local = _local_gpu() if r.time_min is None else None  # this machine runs it: its own GPU
                gpu_bytes = local[0] if local else int(limit * GiB)
                note = f"on {local[1]}" if local else ""
                if mem.total > gpu_bytes:
                    problems.append(ConfigError(
                        MEMORY_KEY[stage],
                        f"the {stage} stage needs about {mem.total / GiB:.1f} GiB per GPU but one GPU has "
                        f"{gpu_bytes / GiB:.1f} GiB (executor.gpu_mem_gb); change {MEMORY_FIX[stage]}"))
            else:
                note = "CPU: GPU memory not checked"
        out.append(StageCheck(stage, r, mem, gpu_bytes, note, tuple(problems)))
    return out


def refuse(checks: list[StageCheck]) -> None:
    """The first problem, as the one line a user reads (ConfigError: exit 2)."""
    for c in checks:
        if c.problems:
            raise c.problems[0]


def check_stages(cfg: Config, stages: list[str] | tuple[str, ...],
                 resources: Mapping[str, Resources] | None = None) -> list[StageCheck]:
    checks = stage_checks(cfg, stages, resources=resources)
    refuse(checks)
    return checks


# ---------------------------------------------------------------------------------------------- output


def _gib(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / GiB:.1f}" if n >= GiB else f"{n / GiB:.2f}" if n >= GiB / 100 else "<.01"


def format_table(checks: list[StageCheck], cfg: Config) -> str:
    """The plan's resource table: stage, processes and GPUs, memory per GPU by part, fits or not."""
    head = (f"resources per task ({cfg.executor.kind} executor; GiB per GPU, measured on the real model under "
            f"FakeTensorMode; one GPU = {gpu_mem_gb(cfg):g} GB, executor.gpu_mem_gb)")
    cols = (f"  {'stage':<10} {'procs':>5} {'GPUs':>4}  {'mode':<5} {'rows':>4}  {'weights':>7} {'grads':>6} "
            f"{'optim':>6} {'gather':>6} {'act':>7} {'act AC':>7} {'total':>6}  fits")
    lines = [head, cols]
    for c in checks:
        r, m = c.resources, c.memory
        if m is None:
            row = f"  {c.stage:<10} {r.processes:>5} {r.gpus:>4}" + ("  (not measured)" if c.stage in MEASURED else "")
        else:
            p = m.parts
            act = {m.checkpointing: p["activations"], not m.checkpointing: m.activations_other}
            mark = {m.checkpointing: "*", not m.checkpointing: " "}
            acts = [f"{_gib(act[k]) + (mark[k] if act[k] is not None else ' '):>7}" for k in (False, True)]
            fits = {True: "yes", False: "NO", None: "n/a"}[c.fits]
            row = (f"  {c.stage:<10} {r.processes:>5} {r.gpus:>4}  {m.mode:<5} {m.rows:>4}  {_gib(p.get('weights')):>7} "
                   f"{_gib(p.get('gradients')):>6} {_gib(p.get('optimizer')):>6} "
                   f"{_gib(p.get('gathered', p.get('ddp_buckets'))):>6} {acts[0]} {acts[1]} {_gib(m.total):>6}  {fits}")
            if c.note:
                row += f" ({c.note})"
        lines.append(row)
        lines += [f"    problem: {e}" for e in c.problems]
    lines.append("  act: peak activations and temporaries of one micro-batch (evaluation: CE pass or beam search), "
                 "without and with activation checkpointing per block, * as configured; gather: FSDP's gathered "
                 "blocks (ddp: its buckets); total adds a CUDA reserve on GPUs (2 GiB + 10%)")
    return "\n".join(lines)


def summary(checks: list[StageCheck]) -> list[dict[str, Any]]:
    """The checks as plain data, for plan.json."""
    return [{"stage": c.stage, "processes": c.resources.processes, "gpus": c.resources.gpus,
             "memory_gib": describe(c.memory) if c.memory else None, "fits": c.fits, "note": c.note,
             "problems": [str(e) for e in c.problems]} for c in checks]
