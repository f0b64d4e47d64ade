"""The worker of the 2-process runtime test (tests/test_distributed.py), importable by spawned processes:
a few steps of a tiny T5 through `pipeline.distributed` exactly as the stages drive it."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pipeline.distributed import (
    agree,
    clip_grad_norm,
    dp_mode,
    no_sync,
    setup_runtime,
    unwrap,
    wrap_model,
)
from pipeline.model import PRESETS, Seq2SeqLoss, build_model
from pipeline.training import make_optimizer, save_training_checkpoint, step_dir

GLOBAL_BATCH, MICRO = 8, 2  # rows per step; rows per micro-batch
MAX_NORM = 0.5  # below the gradients' norm, so clipping acts


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randint(3, 300, (GLOBAL_BATCH, 24), generator=g), torch.randint(3, 300, (GLOBAL_BATCH, 8), generator=g)


def build(rt, mode: str, optimizer: str, activation_checkpointing: bool = False):
    from transformers.models.t5.modeling_t5 import T5Block

    model = build_model(PRESETS["t5_tiny"], 320, seed=0)
    dmodel = wrap_model(Seq2SeqLoss(model).train(), rt, dp_mode(mode, rt), T5Block, activation_checkpointing)
    return dmodel, make_optimizer(dmodel.parameters(), optimizer, 1e-2)


def train(dmodel, opt, rt, steps: range) -> list[float]:
    """Each rank its contiguous share of the global batch, in micro-batches, the gradient synced on the last."""
    norms, per = [], GLOBAL_BATCH // rt.world
    for s in steps:
        ids, labels = batch(s)
        n = per // MICRO
        for i in range(n):
            sl = slice(rt.rank * per + i * MICRO, rt.rank * per + (i + 1) * MICRO)
            with no_sync(dmodel, i < n - 1):
                loss = dmodel(input_ids=ids[sl], labels=labels[sl]).loss * (MICRO * rt.world / GLOBAL_BATCH)
            loss.backward()
        norms.append(float(clip_grad_norm(dmodel, MAX_NORM)))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return norms


def run(rank: int, world: int, port: int, out: str, steps: int, activation_checkpointing: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    rt = setup_runtime("fp32", "fsdp")
    dmodel, opt = build(rt, "fsdp", "adafactor", activation_checkpointing)
    norms = train(dmodel, opt, rt, range(steps))
    # The optimizer's statistics of a matrix: DTensors of the whole matrix's row and column sizes (factored).
    w = unwrap(dmodel).encoder.block[0].layer[1].DenseReluDense.wi_0.weight
    st = opt.state[w]
    factored = {k: (type(st[k]).__name__, tuple(st[k].shape)) for k in ("exp_avg_sq_row", "exp_avg_sq_col")}
    local_rows = w.to_local().shape[0]
    # One rank's signal flag; the agreed decision is every rank's.
    stop, save = agree(rt, 10 if rank == 1 else 0, rank == 0)
    save_training_checkpoint(rt, step_dir(Path(out), steps), dmodel, opt, None, {"step": steps}, {"step": steps})
    if rt.is_main:
        torch.save({"norms": norms, "factored": factored, "shape": tuple(w.shape), "local_rows": local_rows,
                    "agreed": (stop, save)}, Path(out) / "result.pt")
    torch.distributed.destroy_process_group()
