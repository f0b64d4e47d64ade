"""What pretraining and finetuning share: precision, optimizer and schedule, checkpoints that survive
being killed, RNG capture, the signals SLURM sends before a timeout, and data-parallel setup.

A checkpoint is a directory that `T5ForConditionalGeneration.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` load, plus `training_state.pt` (optimizer, scheduler, RNG, step,
data position) and, written last, `COMPLETE` (sizes and hashes of the files). A directory without a
valid `COMPLETE` is never read as a checkpoint; a corrupted newest one is skipped for the previous one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_dir, atomic_write_text, clean_temporaries, file_sha256
from pipeline.precision import describe, resolve_dtype

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
STATE = "training_state.pt"
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


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: str  # "bf16" | "fp32"
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    precision: dict[str, Any] = field(default_factory=dict, compare=False)  # how the dtype was chosen

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def setup_runtime(dtype: str = "auto", distributed: str = "auto", shape=None) -> Runtime:
    """Pick the device and precision (`pipeline.precision.resolve_dtype`; `shape`, a `ProbeShape`, the model's
    shapes for the CPU probe of `auto`); join the process group when launched by torchrun or srun."""

    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) or 0)
    if distributed == "none":
        world, rank, local_rank = 1, 0, 0
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
        # TF32 for the fp32 parts (optimizer, norms): free speed on Ampere+ with no visible change in loss.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo", rank=rank, world_size=world)
    requested = dtype
    dtype, info = resolve_dtype(dtype, device, shape)
    if requested == "auto" and device.type == "cpu" and world > 1 and torch.distributed.is_initialized():
        # Each rank probed on its own: rank 0's choice is everyone's, so no two ranks train in different dtypes.
        choice = torch.tensor([dtype == "bf16"], dtype=torch.int32)
        torch.distributed.broadcast(choice, 0)
        if (dtype == "bf16") != bool(choice.item()):
            dtype = "bf16" if choice.item() else "fp32"
            info = {**info, "dtype": dtype, "rule": f"rank 0's choice ({info['rule']} here)"}
    if rank == 0:
        log.info("%s", describe(info))
    return Runtime(device=device, dtype=dtype, rank=rank, world=world, local_rank=local_rank, precision=info)


def keep_dtype(rt: Runtime, saved: str | None, what: str) -> Runtime:
    """A resumed run continues in the precision it was saved in (`saved`, from its checkpoint), so no run mixes
    fp32 and bf16 steps, whatever this process would choose now."""
    if not saved or saved == rt.dtype:
        return rt
    log.warning("%s: resuming in %s, the precision it was started in (this process chose %s)", what, saved, rt.dtype)
    return dataclasses.replace(rt, dtype=saved, precision={**rt.precision, "dtype": saved,
                                                           "rule": f"resumed in {saved}, the run's precision"})


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAKS.items() if k in name), None)


# ------------------------------------------------------------------------------ optimizer, schedule


def make_optimizer(params, name: str, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0):
    params = [p for p in params if p.requires_grad]
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed learning rate (the schedule sets it), no parameter scaling: as nanoT5 and T5's finetuning.
        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         weight_decay=weight_decay)
    # The fused update (one kernel over all parameters; CPU and CUDA since torch 2.4): on CPU, t5_tiny's
    # clipping + update take 3.4 ms a step with it against ~10 with foreach, the fallback elsewhere.
    fused = all(p.device.type in ("cpu", "cuda") for p in params) and _fused_adamw_supported()
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay,
                             fused=fused or None, foreach=None if fused else True)


def _fused_adamw_supported() -> bool:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) >= (2, 4)


def lr_lambda(kind: str, warmup: int, total: int | None = None):
    """Linear warmup, then constant, inverse square root, or linear to 0 at step `total`. The first two do not
    depend on the run's length, so the checkpoint at any step stands for a run of that length (Isik et al.):
    pretraining uses those; `linear` is for finetuning, whose length is known when it starts."""
    warmup = max(0, int(warmup))
    if kind == "linear" and not total:
        raise ValueError("the linear schedule needs the run's total steps")

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "inverse_sqrt":
            return math.sqrt(max(warmup, 1)) / math.sqrt(max(step, warmup, 1))
        if kind == "linear":
            return max(0.0, (total - step) / max(total - warmup, 1))
        return 1.0

    return f


def make_schedule(opt, kind: str, warmup: int):
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(kind, warmup))


# --------------------------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, model, tokenizer, state: dict[str, Any] | None, meta: dict[str, Any],
                    state_dict: dict[str, Any] | None = None) -> Path:
    """Atomically write a loadable checkpoint directory; COMPLETE (with file sizes and hashes) goes last.
    `state_dict` is the gathered full state of a sharded (FSDP) model."""
    path = Path(path)
    clean_temporaries(path.parent)
    with atomic_dir(path) as tmp:
        unwrap(model).save_pretrained(str(tmp), safe_serialization=True, state_dict=state_dict)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if state is not None:
            torch.save(state, tmp / STATE)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MARKER).write_text(json.dumps({"files": files}, indent=2) + "\n")
    return path


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


def load_state(ckpt: Path) -> dict[str, Any]:
    """The training state saved beside a checkpoint's weights (what `latest_checkpoint` found resumable)."""
    return torch.load(Path(ckpt) / STATE, map_location="cpu", weights_only=False)


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
        marker["files"].pop(STATE, None)
        atomic_write_text(p / MARKER, json.dumps(marker, indent=2) + "\n")  # marker first: never lists a missing file
        (p / STATE).unlink()


# ----------------------------------------------------------------------------------------- signals


class StopFlag:
    """SIGTERM and SIGUSR1 (what SLURM sends before a time limit) set a flag the loop checks each step."""

    def __init__(self):
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGUSR1):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal = signum
        log.warning("received %s: checkpointing at the end of this step", signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# ------------------------------------------------------------------------------------ distributed


def unwrap(model):
    """The bare model inside DDP/FSDP and torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            return model
        model = inner


def wrap_data_parallel(model, rt: Runtime, mode: str, block_cls=None):
    """DDP for models that fit on one device, FSDP (full sharding, bf16 compute) for the 770M/3B presets."""
    if rt.world == 1 or mode == "none":
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import MixedPrecision, ShardingStrategy
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        mp = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if rt.dtype == "bf16" else None
        return FSDP(model, auto_wrap_policy=ModuleWrapPolicy({block_cls}) if block_cls else None,
                    sharding_strategy=ShardingStrategy.FULL_SHARD, mixed_precision=mp,
                    device_id=rt.device if rt.device.type == "cuda" else None, use_orig_params=True)
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)


@contextlib.contextmanager
def no_sync(model, active: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if active and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def barrier(rt: Runtime) -> None:
    if rt.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _is_fsdp(model) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    except ImportError:  # pragma: no cover
        return False
    return isinstance(getattr(model, "_orig_mod", model), FSDP)


def full_state_for_save(model, opt):
    """((bare model, full state dict or None), optimizer state dict), gathered on rank 0 under FSDP."""
    inner = unwrap(model)
    if _is_fsdp(model):
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        m = getattr(model, "_orig_mod", model)
        with FSDP.state_dict_type(m, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
                                  FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=True)):
            return (inner, m.state_dict()), FSDP.optim_state_dict(m, opt)
    return (inner, None), opt.state_dict()


def load_optimizer_state(model, opt, state: dict[str, Any]) -> None:
    """Load a full optimizer state (saved by full_state_for_save) into a plain, DDP or FSDP model's optimizer."""
    if _is_fsdp(model):
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        m = getattr(model, "_orig_mod", model)
        with FSDP.state_dict_type(m, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True),
                                  FullOptimStateDictConfig(offload_to_cpu=True)):
            state = FSDP.optim_state_dict_to_load(m, opt, state)
    opt.load_state_dict(state)
