"""Stage `finetune`: one (checkpoint, task, Df, seed, method, lr) cell.

Full-weight finetuning (the paper's) or LoRA through `peft`, constant learning rate, the same task prefix
as evaluation, labels padded with -100. Validation cross-entropy every `eval_every` steps keeps the best
model (`best/`, loadable with `from_pretrained`) and stops after `patience` checks without improvement.
Each check also writes a resumable checkpoint (the machinery of pretraining), so a killed cell resumes
and ends with the same weights. Df subsets are nested: the first Df of one seeded permutation of the pool.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pipeline.artifacts import atomic_write_json, dir_hash
from pipeline.config import DataConfig, FinetuneConfig, LoraConfig, TrackingConfig
from pipeline.distributed import (
    Runtime,
    StopFlag,
    agree,
    barrier,
    clip_grad_norm,
    dp_mode,
    from_main,
    full_model_state,
    is_sharded,
    keep_dtype,
    no_sync,
    setup_runtime,
    wrap_model,
)
from pipeline.model import ModelPreset, Seq2SeqLoss, load_model
from pipeline.precision import ProbeShape
from pipeline.seq2seq import EncodedPool, collate, encode_pairs, reference_ce
from pipeline.tracking import make_tracker
from pipeline.training import (
    MARKER,
    Preempted,
    capture_rng,
    checkpoint_for,
    checkpoint_meta,
    latest_checkpoint,
    learning_rate,
    load_training_checkpoint,
    make_optimizer,
    restore_rng,
    retain,
    save_checkpoint,
    save_training_checkpoint,
    seed_all,
    set_lr,
    step_dir,
)
from pipeline.typed import Spec, to_dict
from pipeline.vocab import load_tokenizer

log = logging.getLogger(__name__)
SUBSET_SALT = 104_729  # the nested-subset permutation depends on the seed only, never on Df


def nested_subset(pool_size: int, df: int, seed: int) -> np.ndarray:
    """Indices of the Df-subset: a prefix of one seeded permutation, so smaller sets sit inside larger."""
    if df > pool_size:
        raise ValueError(f"Df {df:,} is larger than the pool of {pool_size:,} pairs")
    return np.random.default_rng([seed, SUBSET_SALT]).permutation(pool_size)[:df]


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, pool: int = 50) -> list[np.ndarray]:
    """One epoch's batches: a seeded shuffle, sorted by length within pools of `pool` batches so a batch pads
    little (random batches of these short sentences padded to their longest cost ~2x the compute), then the
    batches in a seeded order. A function of (seed, epoch): a resumed run sees the same batches."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    out: list[np.ndarray] = []
    for i in range(0, len(perm), batch_size * pool):
        chunk = perm[i:i + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def load_for_finetune(path: Path, method: str, dropout: float, lora: LoraConfig):
    model = load_model(path, dropout_rate=dropout)
    if method == "lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(
            task_type=peft.TaskType.SEQ_2_SEQ_LM, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules)))
    return model


def bare(model):
    """A plain T5ForConditionalGeneration with the adapters merged (LoRA), for saving and evaluation."""
    if hasattr(model, "merge_and_unload"):
        import copy

        return copy.deepcopy(model).merge_and_unload()
    return model


@dataclass(frozen=True)
class Rung:
    """The checkpoint a cell starts from: a pretraining run's rung, or the init checkpoint (Dp = 0)."""

    parent_dir: str  # the pretrain (or init) task's directory
    dp_rung: int
    steps: int  # optimizer steps of that checkpoint (0: the init checkpoint)


@dataclass(frozen=True)
class FinetuneSpec(Spec):
    config: dict[str, Any]  # identity: finetune settings without the grids, pair, checkpoint, Df, seed, method, lr, data
    finetune: FinetuneConfig
    pair: str
    src: str
    tgt: str
    checkpoint: Rung
    df: int
    seed: int
    method: str  # full | lora
    lr: float
    model: ModelPreset
    data: DataConfig
    cache: str
    tokenizer_dir: str
    tracking: TrackingConfig
    dtype: str = "auto"  # the sweep's precision for the cells (sweep_precision.sweep_precision); evaluation follows the cell's


def run(task) -> None:
    from pipeline.sources import get_source

    spec: FinetuneSpec = task.spec
    cfg = spec.finetune
    out = Path(task.dir)
    src_lang, tgt_lang = spec.src, spec.tgt
    source = get_source(spec.data, Path(spec.cache))
    ckpt = checkpoint_for(spec.checkpoint.parent_dir, spec.checkpoint.steps)
    if not (ckpt / MARKER).exists():  # say which rung is missing, not what a hub lookup of its path makes of it
        raise FileNotFoundError(
            f"{task.name}: no finished checkpoint at {ckpt} (Dp rung {spec.checkpoint.dp_rung:,}, step "
            f"{spec.checkpoint.steps}): the pretraining run did not keep this rung (deleted, or a run of older "
            "code shared with a sweep whose Dp ladder lacked it). Run the sweep again: its pretraining task remakes "
            "the rungs its run lacks before their cells")
    tokenizer = load_tokenizer(ckpt)
    rt = setup_runtime(cfg.dtype if spec.dtype == "auto" else spec.dtype, cfg.distributed,
                       ProbeShape(spec.model.d_model, spec.model.d_ff, len(tokenizer)))
    mode = dp_mode(cfg.distributed, rt)
    if mode == "fsdp" and spec.method == "lora":
        raise ValueError("finetune.distributed=fsdp shards full finetuning; a LoRA cell trains few parameters: "
                         "use finetune.distributed=ddp")
    pad = tokenizer.pad_token_id

    enc = dict(src=src_lang, tgt=tgt_lang, prefix=cfg.task_prefix, max_src=cfg.max_source_length,
               max_tgt=cfg.max_target_length)
    pool = EncodedPool.get(source, spec.pair, "train", tokenizer, Path(spec.cache), **enc)  # encoded once a task
    tr_src, tr_tgt = pool.take(nested_subset(len(pool), spec.df, spec.seed))
    val = source.parallel(spec.pair, cfg.validation_split)
    val_rows = [r["translation"] for r in val.select(range(min(cfg.validation_size, len(val))))]
    va_src, va_tgt = encode_pairs(tokenizer=tokenizer, rows=val_rows, **enc)
    df_tokens = {"source": sum(map(len, tr_src)), "target": sum(map(len, tr_tgt))}

    B = cfg.batch_size
    steps_per_epoch = math.ceil(len(tr_src) / B)
    lengths = np.array([len(a) + len(b) for a, b in zip(tr_src, tr_tgt)])
    batches: dict[int, list[np.ndarray]] = {}
    max_steps = cfg.step_cap(len(tr_src))
    state_root = out / "state"
    resume = from_main(rt, latest_checkpoint(state_root) if rt.is_main else None)  # one choice for every rank
    lora = spec.method == "lora"
    # Full finetuning resumes from the saved weights; LoRA from the base checkpoint plus its saved adapters.
    model = load_for_finetune(resume if resume and not lora else ckpt, spec.method, cfg.dropout_rate, cfg.lora)
    model.to(rt.device).train()
    from transformers.models.t5.modeling_t5 import T5Block

    if mode == "fsdp":  # sharded in place, the model its own root: validation calls its forward, which gathers
        train_loss = wrap_model(model, rt, mode, T5Block, cfg.activation_checkpointing)
    else:  # the same loss, its output layer and cross-entropy fused (DDP wraps it whole)
        train_loss = wrap_model(Seq2SeqLoss(model), rt, mode, T5Block, cfg.activation_checkpointing)
    opt = make_optimizer(train_loss.parameters(), "adamw", spec.lr, (0.9, 0.999), cfg.weight_decay)
    st: dict[str, Any] = {"step": 0, "best_val": math.inf, "best_step": 0, "bad_evals": 0, "curve": []}
    if resume is not None:
        state = load_training_checkpoint(resume, train_loss, opt)
        restore_rng(state["rng"])
        st = state["loop"]
        rt = keep_dtype(rt, st.get("dtype"), task.name)
        log.info("%s: resuming at step %d (best validation CE %.4f)", task.name, st["step"], st["best_val"])
    else:
        seed_all(spec.seed)
    st["dtype"] = rt.dtype

    def save_state() -> None:  # every rank, at the same step
        state = {"rng": capture_rng(), "loop": dict(st)}
        save_training_checkpoint(rt, step_dir(state_root, st["step"]), train_loss, opt, None, state,
                                 {"step": st["step"]}, weights=bare(model) if lora and rt.is_main else None)
        if rt.is_main:
            retain(state_root)

    def validation_ce() -> float:  # rank 0's number on every rank: the best-model and stopping decisions follow it
        return from_main(rt, reference_ce(model, va_src, va_tgt, pad, B * 2, rt.device, rt.autocast)[0])

    tracker = make_tracker(out, spec.tracking, run_id=f"ft-{dir_hash(out)}", name=task.name,
                           config={"finetune": to_dict(cfg), "pair": spec.pair, "df": spec.df, "seed": spec.seed,
                                   "method": spec.method, "lr": spec.lr},
                           resume_step=st["step"] if resume else None, group="finetune", enabled=rt.is_main)
    t0 = time.time()
    train_s = 0.0  # this attempt's seconds in training steps: validation and checkpoint writes left out
    bar = tqdm(total=max_steps, initial=st["step"], desc=task.name, unit="step",
               disable=not (rt.is_main and sys.stderr.isatty()), leave=False)
    try:
        with StopFlag() as stop:
            if st["step"] == 0:  # validation CE of the starting point: a cell that never improves keeps it
                ce = validation_ce()
                st.update(best_val=ce, best_step=0)
                st["curve"].append({"step": 0, "val_ce": ce})
                _save_best(rt, out, model, tokenizer)
            t_win, step_win = time.perf_counter(), st["step"]  # the training steps since the last evaluation
            while st["step"] < max_steps and st["bad_evals"] < cfg.patience:
                epoch, k = divmod(st["step"], steps_per_epoch)
                if epoch not in batches:
                    batches.clear()
                    batches[epoch] = epoch_batches(lengths, B, spec.seed, epoch)
                # The rate set from the step (no scheduler state): a resumed cell continues the same curve.
                lr = learning_rate(st["step"], spec.lr, cfg.schedule, cfg.warmup_steps, max_steps)
                loss = train_step(train_loss, rt, opt, lr, batches[epoch][k], tr_src, tr_tgt, pad,
                                  cfg.micro_batch_tokens, cfg.grad_clip)
                st["step"] += 1
                bar.update(1)
                stop_signal, = agree(rt, stop.signal or 0)  # one rank's signal stops them all, at the same step
                if st["step"] % cfg.eval_every == 0 or st["step"] == max_steps:
                    loss_v = loss.item()  # waits for the step on an accelerator: the window's time is its steps'
                    win = time.perf_counter() - t_win
                    train_s += win
                    ce = validation_ce()
                    st["curve"].append({"step": st["step"], "val_ce": ce, "train_loss": loss_v})
                    tracker.log({"train_loss": loss_v, "val_ce": ce, "epoch": epoch}, st["step"])
                    if ce < st["best_val"] - 1e-6:
                        st.update(best_val=ce, best_step=st["step"], bad_evals=0)
                        _save_best(rt, out, model, tokenizer)
                    else:
                        st["bad_evals"] += 1
                    save_state()
                    if rt.is_main and bar.disable:  # no progress bar (a batch job): its progress goes to task.log
                        log.info("%s: step %d/%d train loss %.4f val CE %.4f (best %.4f at step %d) %.2f s a "
                                 "training step", task.name, st["step"], max_steps, loss_v, ce, st["best_val"],
                                 st["best_step"], win / (st["step"] - step_win))
                    t_win, step_win = time.perf_counter(), st["step"]
                elif stop_signal:
                    save_state()
                if stop_signal:
                    raise Preempted(f"{task.name}: stopped by signal at step {st['step']}; rerun to continue",
                                    int(stop_signal))
    finally:
        bar.close()
        tracker.close()
    # Why it stopped: the data (validation CE stopped improving) or a cap (the step guard, or max_epochs)
    stopped = ("early_stopping" if st["bad_evals"] >= cfg.patience
               else "max_steps" if st["step"] >= cfg.max_steps else "max_epochs")
    if not rt.is_main:
        return
    shutil.rmtree(state_root, ignore_errors=True)  # the best model is what stays
    atomic_write_json(out / "finetune.json", {
        "steps": st["step"], "best_step": st["best_step"], "best_val_ce": st["best_val"], "stopped": stopped,
        "hit_cap": stopped != "early_stopping", "step_cap": max_steps,
        "df_examples": len(tr_src), "df_tokens": df_tokens, "epochs": st["step"] / steps_per_epoch,
        "validation_pairs": len(va_src), "seconds": time.time() - t0, "train_seconds": train_s,
        "curve": st["curve"], "method": spec.method,
        "lr": spec.lr, "checkpoint": str(ckpt), "dp_rung": spec.checkpoint.dp_rung,
        "pretrain_steps": spec.checkpoint.steps, "device": str(rt.device),
        "dtype": rt.dtype, "precision": rt.precision.get("rule"), "pretrain_dtype": _trained_in(ckpt)})
    log.info("%s: best validation CE %.4f at step %d of %d (%s)", task.name, st["best_val"], st["best_step"],
             st["step"], stopped)


def train_step(train_loss, rt: Runtime, opt: torch.optim.Optimizer, lr: float, sel: np.ndarray,
               src: list[list[int]], tgt: list[list[int]], pad: int, micro_batch_tokens: int | None,
               grad_clip: float) -> torch.Tensor:
    """One optimizer step on the pairs `sel` at rate `lr`: forward and backward (`_accumulate`), clipping, update.
    Every finetuning cell trains with it, and so does scripts/desk_search.py. Returns the step's loss."""
    set_lr(opt, lr)
    loss = _accumulate(train_loss, rt, sel, src, tgt, pad, micro_batch_tokens)
    if grad_clip:
        clip_grad_norm(train_loss, grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def _accumulate(train_loss, rt: Runtime, sel: np.ndarray, src: list[list[int]], tgt: list[list[int]], pad: int,
                micro_batch_tokens: int | None) -> torch.Tensor:
    """Forward and backward of one step's batch `sel`, split over the processes (contiguous parts) and, within a
    process, into micro-batches of at most `micro_batch_tokens` padded tokens (source + target), the gradient
    synced on the last only. Each micro-batch's token-mean loss is weighted by its share of the step's target
    tokens, so the gradient is the whole batch's token mean, as in one process. Every rank runs the same number
    of micro-batches (FSDP2 gathers parameters in each forward): one without rows runs a zero-weighted pass.
    Returns the step's loss (the global token mean)."""
    parts = np.array_split(sel, rt.world)  # the first part is the largest
    own = parts[rt.rank]
    padded = max(len(src[i]) for i in sel) + max(len(tgt[i]) for i in sel)  # the longest a micro-batch pads to
    rows = len(parts[0]) if micro_batch_tokens is None else max(1, micro_batch_tokens // padded)
    n_micro = -(-len(parts[0]) // rows)
    n_tokens = sum(len(tgt[i]) for i in sel)
    device = next(train_loss.parameters()).device
    total = torch.zeros((), device=device)
    for i in range(n_micro):
        mb, weight = own[i * rows:(i + 1) * rows], 1.0
        if len(mb) == 0:
            mb, weight = sel[:1], 0.0
        b = {k: v.to(device) for k, v in collate([src[j] for j in mb], [tgt[j] for j in mb], pad).items()}
        # DDP and FSDP2 average gradients over processes: the world factor makes that a sum of token shares.
        w = weight * sum(len(tgt[j]) for j in mb) * rt.world / n_tokens
        with no_sync(train_loss, i < n_micro - 1), rt.autocast():
            loss = train_loss(**b).loss
        (loss * w if w != 1.0 else loss).backward()
        total += loss.detach() * (w / rt.world)
    if rt.world > 1:
        torch.distributed.all_reduce(total)  # the step's loss for the log: each rank's share summed
    return total


def _save_best(rt: Runtime, out: Path, model, tokenizer) -> None:
    """The best model so far as a Hugging Face directory (gathered from the shards under FSDP2; every rank)."""
    full = full_model_state(model) if is_sharded(model) else None
    if rt.is_main:
        save_checkpoint(out / "best", bare(model), tokenizer, None, {}, state_dict=full)
    barrier(rt)


def _trained_in(ckpt: Path) -> str | None:
    """The precision the starting checkpoint was pretrained in (None: the init checkpoint, or an older run)."""
    try:
        return checkpoint_meta(ckpt).get("dtype")
    except (OSError, ValueError):
        return None
