"""What pretraining and finetuning share besides the runtime (`pipeline.distributed`): optimizer and
schedule, checkpoints that survive being killed, RNG capture, retention.

A checkpoint is a directory that `T5ForConditionalGeneration.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` load, plus `training_state.pt` (RNG, step, data position:
plain data, read with `torch.load(weights_only=True)`), `sharded/` (model and optimizer state written by
`torch.distributed.checkpoint`, one file per rank, loadable on any number of processes) and, written last,
`COMPLETE` (sizes and hashes of every file). A directory without a valid `COMPLETE` is never read as a
checkpoint; a corrupted newest one is skipped for the previous one.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_dir, atomic_write_text, clean_temporaries, file_sha256
from pipeline.distributed import (
    Runtime,
    UnsafeCheckpoint,
    barrier,
    from_main,
    full_model_state,
    load_sharded,
    save_sharded,
    unwrap,
)

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
STATE = "training_state.pt"
SHARDED = "sharded"  # torch.distributed.checkpoint's files: model and optimizer state, one file per rank
# Dense peak FLOP/s by device name, for MFU (bf16 tensor cores; the paper-scale reference is the H100).
GPU_PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "V100": 125e12}


class Preempted(Exception):
    """SIGTERM/SIGUSR1 arrived: a checkpoint was written and the process exits 0. `signal` says which: SIGUSR1
    is SLURM's warning before the time limit (the job requeues itself); SIGTERM is `scancel`, a preemption
    or a shutdown (the job stops; rerunning or resubmitting the sweep resumes it)."""

    def __init__(self, message: str, signal: int | None = None):
        super().__init__(message)
        self.signal = signal


# ------------------------------------------------------------------------------------------- device


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAKS.items() if k in name), None)


# ------------------------------------------------------------------------------ optimizer, schedule


def make_optimizer(params, name: str, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0):
    params = [p for p in params if p.requires_grad]
    if name == "adafactor":
        # Fixed learning rate (the schedule sets it), no parameter scaling: as nanoT5 and T5's finetuning.
        return _adafactor_cls()(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                                weight_decay=weight_decay)
    # The fused update (one kernel over all parameters; CPU and CUDA since torch 2.4): on CPU, t5_tiny's
    # clipping + update take 3.4 ms a step with it against ~10 with foreach, the fallback elsewhere.
    fused = all(p.device.type in ("cpu", "cuda") for p in params) and _fused_adamw_supported()
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def _adafactor_cls():
    """transformers' Adafactor, able to step FSDP2's sharded (DTensor) parameters with the same numbers as on
    whole ones. A DTensor has its full logical shape, so Adafactor factors as on one device (row and column
    statistics of the whole matrix); but it creates its statistics as plain tensors, which cannot be mixed
    with DTensor gradients. Here they are created as replicated DTensors before its first step; every later
    operation is Adafactor's own, and DTensor reduces the row and column means across the shards."""
    from transformers.optimization import Adafactor

    class ShardedAdafactor(Adafactor):
        @torch.no_grad()
        def step(self, closure=None):
            from torch.distributed.tensor import DTensor, Replicate

            for group in self.param_groups:
                for p in group["params"]:
                    g = p.grad
                    if g is None or not isinstance(g, DTensor) or self.state[p]:
                        continue
                    factored, first_moment = self._get_options(group, g.shape)
                    zeros = torch.zeros_like(g, dtype=torch.float32)
                    replicated = [Replicate()] * g.device_mesh.ndim
                    st = self.state[p]
                    st.update(step=0, RMS=0)
                    if first_moment:
                        st["exp_avg"] = zeros.clone()
                    if factored:
                        st["exp_avg_sq_row"] = zeros.mean(dim=-1).redistribute(g.device_mesh, replicated)
                        st["exp_avg_sq_col"] = zeros.mean(dim=-2).redistribute(g.device_mesh, replicated)
                    else:
                        st["exp_avg_sq"] = zeros
            return super().step(closure)

    return ShardedAdafactor


def _fused_adamw_supported() -> bool:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)


SCHEDULES = ("constant", "inverse_sqrt", "linear")  # what learning_rate knows after its warm-up


def learning_rate(step: int, lr: float, schedule: str, warmup: int, total: int | None = None) -> float:
    """The learning rate of optimizer step `step` (0 is the first): a pure function of the step and the
    schedule's settings, so a resumed run continues the same curve with no scheduler state to save. Linear
    warmup over `warmup` steps, then `constant`, `inverse_sqrt`, or `linear` to 0 at step `total`. The first two
    do not depend on the run's length, so the checkpoint at any step stands for a run of that length (Isik et
    al.): pretraining uses those; `linear` is for finetuning, whose length is known when it starts. Pretraining,
    finetuning and scripts/desk_search.py all read it."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if schedule == "linear" and not total:
        raise ValueError("the linear schedule needs the run's total steps")
    warmup = max(0, int(warmup))
    if warmup and step < warmup:
        factor = (step + 1) / warmup
    elif schedule == "inverse_sqrt":
        factor = math.sqrt(max(warmup, 1)) / math.sqrt(max(step, warmup, 1))
    elif schedule == "linear":
        factor = max(0.0, (total - step) / max(total - warmup, 1))
    else:
        factor = 1.0
    return lr * factor


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's rate (before `opt.step()`, from `learning_rate` of the step it takes)."""
    for g in opt.param_groups:
        g["lr"] = lr


# --------------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """Every generator's state as tensors and plain data (what `torch.load(weights_only=True)` reads back)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                    int(has_gauss), float(gauss)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model, tokenizer, state: dict[str, Any] | None, meta: dict[str, Any],
                    state_dict: dict[str, Any] | None = None,
                    before_marker: Callable[[Path], None] | None = None) -> Path:
    """Atomically write a loadable checkpoint directory; COMPLETE (with every file's size and hash) goes last.
    `state_dict` is the gathered full state of a sharded model; `before_marker(tmp)` writes more into the
    directory before it is sealed (the sharded training state)."""
    path = Path(path)
    clean_temporaries(path.parent)
    with atomic_dir(path) as tmp:
        unwrap(model).save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if state is not None:
            torch.save(state, tmp / STATE)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        if before_marker is not None:
            before_marker(tmp)
        files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MARKER).write_text(json.dumps({"files": files}, indent=2) + "\n")
    return path


def save_training_checkpoint(rt: Runtime, path: Path, model, opt: torch.optim.Optimizer, tokenizer,
                             state: dict[str, Any], meta: dict[str, Any], weights=None) -> Path:
    """A resumable checkpoint of a (possibly sharded) training run; every rank calls it, at the same step.
    `weights`: the model to write as Hugging Face weights when it is not `model` itself (LoRA: the merged one).
    Rank 0 writes the Hugging Face weights (gathered to it), the tokenizer, `state` (plain data) and meta;
    every rank writes its shards of the model and optimizer state into the same temporary directory
    (`torch.distributed.checkpoint`); rank 0 seals it with COMPLETE and renames it into place once all are
    written. A process killed at any point leaves a temporary that the next run removes, never a checkpoint."""
    full = full_model_state(model) if weights is None else None  # a collective under FSDP2: on every rank first

    def sharded(tmp: Path) -> None:
        from_main(rt, str(tmp))
        save_sharded(tmp / SHARDED, model, opt)  # returns once every rank's shards and the metadata are written

    if rt.is_main:
        save_checkpoint(path, model if weights is None else weights, tokenizer, state, meta,
                        state_dict=full if rt.world > 1 else None, before_marker=sharded)
    else:
        save_sharded(Path(from_main(rt, None)) / SHARDED, model, opt)
    barrier(rt)  # no rank reads or prunes checkpoints before this one is in place
    return Path(path)


def verify_checkpoint(path: Path, deep: bool = False) -> str | None:
    """None if the checkpoint is complete and intact, else the reason it is not."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        return "no completion marker"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return "unreadable completion marker"
    for name, info in files.items():
        p = Path(path) / name
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != info["bytes"]:
            return f"{name} has {p.stat().st_size} bytes, expected {info['bytes']}"
        if deep and file_sha256(p) != info["sha256"]:
            return f"{name} does not match its hash"
    return None


def checkpoint_meta(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / "meta.json").read_text())


def latest_checkpoint(root: Path, deep: bool = True) -> Path | None:
    """The newest intact checkpoint under root (step-<8 digits> dirs) that can be resumed from (it has its
    training state); a corrupted newer one is reported in one line and skipped."""
    root = Path(root)
    if not root.is_dir():
        return None
    for p in clean_temporaries(root):
        log.warning("removed %s, half-written by a process that was killed", p.name)
    for p in sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")), reverse=True):
        reason = verify_checkpoint(p, deep=deep)
        if reason is None and (p / STATE).exists():
            return p
        if reason is not None:
            log.warning("checkpoint %s is not usable (%s); falling back to the previous one", p.name, reason)
    return None


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def init_path(init_dir: str | Path) -> Path:
    """The init stage's checkpoint (the Dp = 0 baseline and every pretraining run's start) in its directory."""
    return Path(init_dir) / "model"


def checkpoint_for(parent_dir: str | Path, steps: int) -> Path:
    """Where the checkpoint a finetuning cell starts from lives: the init (Dp = 0) or a rung of a pretraining run
    (its directory's `checkpoints/step-*`). Here, beside the checkpoint layout, so finetuning reads pretraining's
    output without importing the pretraining stage."""
    return init_path(parent_dir) if steps == 0 else step_dir(Path(parent_dir) / "checkpoints", steps)


def load_state(ckpt: Path) -> dict[str, Any]:
    """The training state saved beside a checkpoint's weights (what `latest_checkpoint` found resumable).
    Plain data only: `torch.load(weights_only=True)` refuses anything whose unpickling could run code, so a
    file planted in a shared artifacts directory cannot take over the job that resumes from it."""
    try:
        return torch.load(Path(ckpt) / STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsafeCheckpoint(f"{Path(ckpt) / STATE} holds more than tensors and plain data ({first}); refusing "
                               "to load it, since unpickling it could run code. Delete that checkpoint to resume "
                               "from the one before it.") from None


def load_training_checkpoint(ckpt: Path, model, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Resume: the model's and optimizer's state from the checkpoint's shards, resharded to this run's
    processes (any number, sharded or not), and its plain training state, which is returned. Every rank
    calls it. A checkpoint from before the sharded format carries the optimizer in the state instead."""
    state = load_state(ckpt)
    if (Path(ckpt) / SHARDED).is_dir():
        load_sharded(Path(ckpt) / SHARDED, model, opt)
    else:
        opt.load_state_dict(state["optimizer"])
    return state


def retain(root: Path, keep: int = 2, kept: Callable[[Path], bool] | None = None) -> None:
    """After a save: delete all but the `keep` newest checkpoints under root (except those `kept` says stay,
    e.g. pretraining's rungs), and drop the optimizer state of all but the `keep` newest (prune_states)."""
    for p in sorted(Path(root).glob("step-*"), reverse=True)[keep:]:
        if kept is None or not kept(p):
            shutil.rmtree(p, ignore_errors=True)
    prune_states(root, keep)


def prune_states(root: Path, keep: int = 2) -> None:
    """Drop the optimizer state of all but the `keep` newest checkpoints (the model weights of every rung
    stay). Two, so that a newest checkpoint found corrupted still has an exact predecessor to resume from."""
    done = sorted((p for p in Path(root).glob("step-*") if (p / STATE).exists() and verify_checkpoint(p) is None),
                  reverse=True)
    for p in done[keep:]:
        marker = json.loads((p / MARKER).read_text())
        marker["files"] = {k: v for k, v in marker["files"].items() if k != STATE and not k.startswith(SHARDED + "/")}
        atomic_write_text(p / MARKER, json.dumps(marker, indent=2) + "\n")  # marker first: never lists a missing file
        (p / STATE).unlink()
        shutil.rmtree(p / SHARDED, ignore_errors=True)
