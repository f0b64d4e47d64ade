"""The training runtime pretraining and finetuning share, on torch's own engine: device, precision and the
process group; the model wrapped for data parallelism (DDP where it fits on one device, FSDP2 `fully_shard`
per T5 block and at the root where it does not); activation checkpointing per block; gradient accumulation
without the gradient sync; global gradient clipping; sharded checkpoints of model and optimizer
(`torch.distributed.checkpoint`, loadable on any number of processes, and read without running code); and
the decisions that lead into a collective (save now, stop now) agreed by every rank, so one rank that got a
signal or whose clock says "save" never leaves the others waiting in a collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import logging
import os
import pickle
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from pipeline.precision import describe, resolve_dtype

T = TypeVar("T")

log = logging.getLogger(__name__)


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


def barrier(rt: Runtime) -> None:
    if rt.world > 1 and torch.distributed.is_initialized():
        torch.distributed.barrier()


# ----------------------------------------------------------------------------------------- signals


class StopFlag:
    """SIGTERM and SIGUSR1 (what SLURM sends before a time limit) set a flag the loop checks each step.
    Under several processes the flag is one rank's: the loop agrees it across ranks (`agree`) before acting."""

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


def agree(rt: Runtime, *values: float) -> list[float]:
    """The largest of each value over all ranks (one all_reduce of a small tensor): every decision that leads
    into a collective (a save, a stop, which signal stopped the job) is taken from this, never from one rank's
    own clock or signal flag, so the ranks enter the same collectives in the same order."""
    if rt.world == 1 or not torch.distributed.is_initialized():
        return [float(v) for v in values]
    # gloo reduces CPU tensors, NCCL device tensors.
    t = torch.tensor(values, dtype=torch.float64, device=rt.device if rt.device.type == "cuda" else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def from_main(rt: Runtime, value: Any) -> Any:
    """Rank 0's value on every rank (e.g. which checkpoint to resume from)."""
    if rt.world == 1 or not torch.distributed.is_initialized():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def on_main(rt: Runtime, fn: Callable[[], T]) -> T:
    """fn() run by rank 0 (file work: moving checkpoints), its result on every rank; its error raised on every
    rank, so that none is left waiting in the next collective for a rank that failed."""
    result, error = None, None
    if rt.is_main:
        try:
            result = fn()
        except Exception as e:
            if rt.world == 1 or not torch.distributed.is_initialized():
                raise
            error = e
    result, message = from_main(rt, (result, error and f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    if message is not None:
        raise RuntimeError(f"rank 0 failed: {message}")
    return result


# ---------------------------------------------------------------------------------------- wrapping


def dp_mode(requested: str, rt: Runtime) -> str:
    """none | ddp | fsdp: what `wrap_model` does for `*.distributed` (auto = DDP when there are processes)."""
    if rt.world == 1 or requested == "none":
        return "none"
    return "fsdp" if requested == "fsdp" else "ddp"


def unwrap(model):
    """The bare model inside DDP, torch.compile and the fused-loss (`Seq2SeqLoss`) wrappers. Under FSDP2 the
    model is sharded in place (its parameters are DTensors): call the wrapped model, not this, to run it."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if inner is None:
            return model
        model = inner


def wrap_model(model: torch.nn.Module, rt: Runtime, mode: str, block_cls: type | None = None,
               activation_checkpointing: bool = False) -> torch.nn.Module:
    """Activation checkpointing per block (torch's `checkpoint_wrapper`, non-reentrant) when asked, then data
    parallelism: `mode` none (one process), ddp (each rank holds the whole model; gradients all-reduced), or
    fsdp (FSDP2: `fully_shard` on every block, then on the root, so one block's parameters are gathered at a
    time; bf16 parameters with fp32 gradient reduction when training in bf16 on GPUs). Wrap before building
    the optimizer: FSDP2 replaces the parameters with sharded DTensors, and the optimizer must hold those."""
    if activation_checkpointing:
        if block_cls is None:
            raise ValueError("activation checkpointing needs the block class to checkpoint")
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            CheckpointImpl,
            apply_activation_checkpointing,
            checkpoint_wrapper,
        )

        wrapper = functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper, check_fn=lambda m: isinstance(m, block_cls))
    if mode == "none":
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy()  # fp32 throughout: CPU, or training in fp32
        if rt.dtype == "bf16" and rt.device.type == "cuda":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        units = [m for m in model.modules() if block_cls is not None and isinstance(m, block_cls)]
        if activation_checkpointing:  # shard the wrapper, so its forward (the recomputed one) gathers the block
            units = [m for m in model.modules() if type(m).__name__ == "CheckpointWrapper"]
        for m in units:
            fully_shard(m, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)


def is_sharded(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


@contextlib.contextmanager
def no_sync(model, active: bool) -> Iterator[None]:
    """Skip the gradient reduction on all but the last micro-batch of an accumulation (DDP's `no_sync`,
    FSDP2's `set_requires_gradient_sync`)."""
    inner = getattr(model, "_orig_mod", model)
    if active and is_sharded(inner):
        inner.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            inner.set_requires_gradient_sync(True)
    elif active and hasattr(inner, "no_sync"):
        with inner.no_sync():
            yield
    else:
        yield


def clip_grad_norm(model, max_norm: float) -> torch.Tensor:
    """Clip the gradients to a global norm of `max_norm`; returns that norm before clipping (a plain tensor,
    the same on every rank). Under FSDP2 the gradients are DTensor shards and torch's `clip_grad_norm_`
    reduces their norms across ranks, so the norm is the whole model's, not one shard's."""
    norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# ------------------------------------------------------------------------------------- checkpoints


def full_model_state(model) -> dict[str, torch.Tensor]:
    """The whole model's state dict, gathered to CPU on rank 0 (other ranks get an empty dict) under FSDP2, or
    the bare model's own: what a Hugging Face `save_pretrained` directory is written from. A collective under
    FSDP2: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    inner = unwrap(model)
    if not is_sharded(model):
        return inner.state_dict()
    sd = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    # Gathering copies each name's tensor: tied parameters (T5's shared embedding) share one again, so that
    # save_pretrained writes them once, as it does from the model itself.
    first: dict[int, str] = {}
    for name, p in inner.named_parameters(remove_duplicate=False):
        name = name.replace("_checkpoint_wrapped_module.", "")
        if id(p) in first and name in sd and first[id(p)] in sd:
            sd[name] = sd[first[id(p)]]
        else:
            first.setdefault(id(p), name)
    return sd


def save_sharded(directory: Path, model, opt: torch.optim.Optimizer) -> None:
    """Model and optimizer state with `torch.distributed.checkpoint`: each rank writes its own shards (under
    FSDP2) and rank 0 the metadata; a collective, every rank calls it. Readable by `load_sharded` on any number
    of processes, with or without sharding."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(unwrap(model), opt)
    with _single_process_quiet():
        dcp.save({"model": msd, "optimizer": osd}, storage_writer=dcp.FileSystemWriter(str(directory)),
                 no_dist=not torch.distributed.is_initialized())


def load_sharded(directory: Path, model, opt: torch.optim.Optimizer) -> None:
    """Load what `save_sharded` wrote, resharded to this run's processes. Reading never runs code: the
    metadata is unpickled with an allow-list of DCP's own record classes and the non-tensor entries
    (learning rates, step counts) with `torch.load(weights_only=True)`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    inner = unwrap(model)
    msd, osd = get_state_dict(inner, opt)
    state = {"model": msd, "optimizer": osd}
    reader_cls, planner_cls = _safe_loading()
    reader = reader_cls(str(directory))
    reader.read_metadata()  # refused here, in one line, rather than inside DCP's error report
    try:
        with _single_process_quiet():
            dcp.load(state, storage_reader=reader, planner=planner_cls(),
                     no_dist=not torch.distributed.is_initialized())
    except dcp.api.CheckpointException as e:
        for exc, _ in e.failures.values():
            if isinstance(exc, UnsafeCheckpoint):
                raise exc from None
        raise
    set_state_dict(inner, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every call in one process that it assumes one process: that is what it is told here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


class UnsafeCheckpoint(RuntimeError):
    """A training-state file holds something other than tensors and plain data: refused, never run."""


# What DCP's metadata file may hold besides its own record classes (torch.distributed.checkpoint.metadata):
# torch's plain types, the storage record, the checkpoint's path.
_SAFE_GLOBALS = {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
                 ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"), ("pathlib", "PosixPath"),
                 ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        import torch.distributed.checkpoint.metadata as md

        ok = (module, name) in _SAFE_GLOBALS or (
            module == md.__name__ and isinstance(getattr(md, name, None), type)) or (
            module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)))
        if ok:
            return super().find_class(module, name)
        raise UnsafeCheckpoint(f"checkpoint metadata refers to {module}.{name}, which a checkpoint never holds; "
                               "refusing to load it (unpickling it could run code)")


@functools.cache
def _safe_loading() -> tuple[type, type]:
    """DCP's file reader and load planner, reading its metadata and non-tensor entries without running code
    (classes made on first use: importing DCP is slow, and evaluation never needs it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

    class SafeReader(dcp.FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any):
            with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
                metadata = _Unpickler(f).load()
            if getattr(metadata, "storage_meta", None) is None:
                from torch.distributed.checkpoint.metadata import StorageMeta

                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class SafeLoadPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                raise UnsafeCheckpoint(f"checkpoint entry {read_item.dest_index.fqn} is not plain data ({e}); "
                                       "refusing to load it") from None
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeReader, SafeLoadPlanner

