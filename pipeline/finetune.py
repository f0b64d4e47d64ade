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
from pipeline.model import ModelPreset, Seq2SeqLoss, load_model
from pipeline.pretrain import checkpoint_for
from pipeline.seq2seq import collate, encode_pairs, reference_ce
from pipeline.tokenizer import load_tokenizer
from pipeline.tracking import make_tracker
from pipeline.training import (
    Preempted,
    StopFlag,
    capture_rng,
    latest_checkpoint,
    load_state,
    lr_lambda,
    make_optimizer,
    restore_rng,
    retain,
    save_checkpoint,
    seed_all,
    setup_runtime,
    step_dir,
)
from pipeline.typed import Spec, to_dict

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


def run(task) -> None:
    from pipeline.sources import get_source

    spec: FinetuneSpec = task.spec
    cfg = spec.finetune
    out = Path(task.dir)
    rt = setup_runtime("auto", "none")
    src_lang, tgt_lang = spec.src, spec.tgt
    source = get_source(spec.data, Path(spec.cache))
    ckpt = checkpoint_for(spec.checkpoint.parent_dir, spec.checkpoint.steps)
    tokenizer = load_tokenizer(ckpt)
    pad = tokenizer.pad_token_id

    pool = source.parallel(spec.pair, "train")
    idx = nested_subset(len(pool), spec.df, spec.seed)
    train_rows = [r["translation"] for r in pool.select(idx)]
    val = source.parallel(spec.pair, cfg.validation_split)
    val_rows = [r["translation"] for r in val.select(range(min(cfg.validation_size, len(val))))]
    enc = dict(tokenizer=tokenizer, src=src_lang, tgt=tgt_lang, prefix=cfg.task_prefix,
               max_src=cfg.max_source_length, max_tgt=cfg.max_target_length)
    tr_src, tr_tgt = encode_pairs(rows=train_rows, **enc)
    va_src, va_tgt = encode_pairs(rows=val_rows, **enc)
    df_tokens = {"source": sum(map(len, tr_src)), "target": sum(map(len, tr_tgt))}

    B = cfg.batch_size
    steps_per_epoch = math.ceil(len(tr_src) / B)
    lengths = np.array([len(a) + len(b) for a, b in zip(tr_src, tr_tgt)])
    batches: dict[int, list[np.ndarray]] = {}
    max_steps = cfg.step_cap(len(tr_src))
    state_root = out / "state"
    resume = latest_checkpoint(state_root)
    lora = spec.method == "lora"
    # Full finetuning resumes from the saved weights; LoRA from the base checkpoint plus its saved adapters.
    model = load_for_finetune(resume if resume and not lora else ckpt, spec.method, cfg.dropout_rate, cfg.lora)
    model.to(rt.device).train()
    train_loss = Seq2SeqLoss(model)  # the same loss, its output layer and cross-entropy fused
    opt = make_optimizer(model.parameters(), "adamw", spec.lr, (0.9, 0.999), cfg.weight_decay)
    # Set from the step each time (no scheduler state): a resumed cell continues the same curve.
    lr_at = lr_lambda(cfg.schedule, cfg.warmup_steps, max_steps)
    st: dict[str, Any] = {"step": 0, "best_val": math.inf, "best_step": 0, "bad_evals": 0, "curve": []}
    if resume is not None:
        state = load_state(resume)
        if lora:
            model.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["optimizer"])
        restore_rng(state["rng"])
        st = state["loop"]
        log.info("%s: resuming at step %d (best validation CE %.4f)", task.name, st["step"], st["best_val"])
    else:
        seed_all(spec.seed)

    def save_state() -> None:
        trainable = {k: v for k, v in model.state_dict().items() if "lora_" in k} if lora else None
        state = {"optimizer": opt.state_dict(), "rng": capture_rng(), "loop": dict(st), "trainable": trainable}
        save_checkpoint(step_dir(state_root, st["step"]), bare(model), None, state, {"step": st["step"]})
        retain(state_root)

    tracker = make_tracker(out, spec.tracking, run_id=f"ft-{dir_hash(out)}", name=task.name,
                           config={"finetune": to_dict(cfg), "pair": spec.pair, "df": spec.df, "seed": spec.seed,
                                   "method": spec.method, "lr": spec.lr},
                           resume_step=st["step"] if resume else None, group="finetune")
    t0 = time.time()
    bar = tqdm(total=max_steps, initial=st["step"], desc=task.name, unit="step", disable=not sys.stderr.isatty(),
               leave=False)
    try:
        with StopFlag() as stop:
            if st["step"] == 0:  # validation CE of the starting point: a cell that never improves keeps it
                ce, _ = reference_ce(model, va_src, va_tgt, pad, B * 2, rt.device, rt.autocast)
                st.update(best_val=ce, best_step=0)
                st["curve"].append({"step": 0, "val_ce": ce})
                _save_best(out, model, tokenizer)
            while st["step"] < max_steps and st["bad_evals"] < cfg.patience:
                epoch, k = divmod(st["step"], steps_per_epoch)
                if epoch not in batches:
                    batches.clear()
                    batches[epoch] = epoch_batches(lengths, B, spec.seed, epoch)
                sel = batches[epoch][k]
                for g in opt.param_groups:
                    g["lr"] = spec.lr * lr_at(st["step"])
                b = {key: v.to(rt.device) for key, v in collate([tr_src[i] for i in sel], [tr_tgt[i] for i in sel], pad).items()}
                with rt.autocast():
                    loss = train_loss(**b).loss
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                st["step"] += 1
                bar.update(1)
                if st["step"] % cfg.eval_every == 0 or st["step"] == max_steps:
                    ce, _ = reference_ce(model, va_src, va_tgt, pad, B * 2, rt.device, rt.autocast)
                    st["curve"].append({"step": st["step"], "val_ce": ce, "train_loss": loss.item()})
                    tracker.log({"train_loss": loss.item(), "val_ce": ce, "epoch": epoch}, st["step"])
                    if ce < st["best_val"] - 1e-6:
                        st.update(best_val=ce, best_step=st["step"], bad_evals=0)
                        _save_best(out, model, tokenizer)
                    else:
                        st["bad_evals"] += 1
                    save_state()
                elif stop.requested:
                    save_state()
                if stop.requested:
                    raise Preempted(f"{task.name}: stopped by signal at step {st['step']}; rerun to continue", stop.signal)
    finally:
        bar.close()
        tracker.close()
    # Why it stopped: the data (validation CE stopped improving) or a cap (the step guard, or max_epochs)
    stopped = ("early_stopping" if st["bad_evals"] >= cfg.patience
               else "max_steps" if st["step"] >= cfg.max_steps else "max_epochs")
    shutil.rmtree(state_root, ignore_errors=True)  # the best model is what stays
    atomic_write_json(out / "finetune.json", {
        "steps": st["step"], "best_step": st["best_step"], "best_val_ce": st["best_val"], "stopped": stopped,
        "hit_cap": stopped != "early_stopping", "step_cap": max_steps,
        "df_examples": len(tr_src), "df_tokens": df_tokens, "epochs": st["step"] / steps_per_epoch,
        "validation_pairs": len(va_src), "seconds": time.time() - t0, "curve": st["curve"], "method": spec.method,
        "lr": spec.lr, "checkpoint": str(ckpt), "dp_rung": spec.checkpoint.dp_rung,
        "pretrain_steps": spec.checkpoint.steps, "device": str(rt.device)})
    log.info("%s: best validation CE %.4f at step %d of %d (%s)", task.name, st["best_val"], st["best_step"],
             st["step"], stopped)


def _save_best(out: Path, model, tokenizer) -> None:
    save_checkpoint(out / "best", bare(model), tokenizer, None, {})
