"""Stages `init` and `pretrain`: one T5 per (mixture, model) from the shared random init, span corruption on
packed sequences, a checkpoint each time the Dp ladder is crossed.

Resuming after any kill gives the same weights and loss curve as an uninterrupted run: the batch of a step
is a pure function of the step (pipeline.mixture), the span-corruption masks of (seed, example index),
the learning rate of the step (`training.learning_rate`), and the optimizer and RNG states are restored from
the newest intact checkpoint. The same holds for a replay: rungs below the run's last step that a ladder asks
for and the run never kept (trained for another sweep's ladder) are remade by training again from the init.
"""

from __future__ import annotations

import json
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
from pipeline.config import PretrainConfig, TrackingConfig
from pipeline.distributed import (
    Runtime,
    StopFlag,
    agree,
    clip_grad_norm,
    dp_mode,
    from_main,
    keep_dtype,
    no_sync,
    on_main,
    setup_runtime,
    wrap_model,
)
from pipeline.mixture import DataExhausted, MixtureSampler, mixture_counts
from pipeline.model import (
    ModelPreset,
    Seq2SeqLoss,
    build_model,
    count_params,
    flops_per_token,
    load_model,
)
from pipeline.precision import ProbeShape, resolve_compile
from pipeline.span_corruption import corrupt_batch
from pipeline.streams import open_stream
from pipeline.study import Mixture
from pipeline.tracking import make_tracker
from pipeline.training import (
    STATE,
    Preempted,
    capture_rng,
    checkpoint_meta,
    init_path,
    latest_checkpoint,
    learning_rate,
    load_training_checkpoint,
    make_optimizer,
    peak_flops,
    restore_rng,
    retain,
    save_checkpoint,
    save_training_checkpoint,
    seed_all,
    set_lr,
    step_dir,
    verify_checkpoint,
)
from pipeline.typed import Spec, to_dict
from pipeline.vocab import load_tokenizer, sentinel_ids

log = logging.getLogger(__name__)
EVAL_SEED = 1_000_003  # masks of the held-out sequences: fixed, so every rung is scored on the same inputs
REPLAY = "replay"  # beside a run's checkpoints: where rungs missing below its last step are remade


# -------------------------------------------------------------------------------------------- init


@dataclass(frozen=True)
class InitSpec(Spec):
    config: dict[str, Any]  # identity: the model and the seed
    model: ModelPreset
    seed: int
    tokenizer_dir: str


def run_init(task) -> None:
    """Stage `init`: the random-init checkpoint, the Dp = 0 baseline and every run's starting point."""
    spec: InitSpec = task.spec
    tokenizer = load_tokenizer(spec.tokenizer_dir)
    preset = spec.model
    seed_all(spec.seed)
    model = build_model(preset, len(tokenizer), pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id,
                        seed=spec.seed)
    meta = {"step": 0, "dp_tokens": 0, "dp_rung": 0, "model": preset.name,
            "params": count_params(preset, len(tokenizer)), "vocab_size": len(tokenizer)}
    save_checkpoint(init_path(task.dir), model, tokenizer, None, meta)


# --------------------------------------------------------------------------------------- pretrain


def upstream_losses(model, rt: Runtime, tokens_dirs: dict[str, str], langs: list[str], n_seq: int, raw_len: int,
                    vocab: int, sentinels: np.ndarray, eos: int, density: float, span: float, batch: int) -> dict[str, float]:
    """Held-out span-corruption cross-entropy (token mean) per language, on fixed sequences and masks. `model`
    is the training loop's (wrapped) model, called as in training: under FSDP2 its forward gathers the
    sharded parameters, so every rank runs this together."""
    out = {}
    model.eval()
    with torch.no_grad():
        for lang in langs:
            stream = open_stream(Path(tokens_dirs[lang]) / "validation.bin", vocab)
            n = min(n_seq, len(stream) // raw_len)
            if n == 0:
                out[lang] = float("nan")
                continue
            raw = np.asarray(stream[: n * raw_len], dtype=np.int64).reshape(n, raw_len)
            total = count = 0.0
            for i in range(0, n, batch):
                b = corrupt_batch(raw[i:i + batch], np.arange(i, min(i + batch, n)), EVAL_SEED, sentinels, eos,
                                  noise_density=density, mean_noise_span_length=span)
                ids = torch.as_tensor(b["input_ids"], device=rt.device)
                labels = torch.as_tensor(b["labels"], device=rt.device)
                with rt.autocast():
                    loss = model(input_ids=ids, labels=labels).loss
                total += loss.item() * labels.numel()
                count += labels.numel()
            out[lang] = total / count
    model.train()
    return out


@dataclass(frozen=True)
class PretrainSpec(Spec):
    config: dict[str, Any]  # identity: model, mixture, pretrain settings without the ladder, seed
    model: ModelPreset
    mixture: dict[str, float]  # language -> weight
    mixture_name: str
    pretrain: PretrainConfig
    dp_ladder: tuple[int, ...]  # this run's rungs (the sweep's ladder capped by its tasks' dp_max)
    seed: int
    tokenizer_dir: str
    init_dir: str
    tracking: TrackingConfig
    tokens_dirs: dict[str, str]  # language -> tokens directory (the mixture's and the tasks' target languages)
    raw_length: int  # raw text tokens per example before span corruption
    targets_length: int
    dtype: str = "auto"  # the sweep's precision (sweep_precision.sweep_precision); not identity: auto's choice is the processor's

    @property
    def tokens_per_step(self) -> int:
        return self.pretrain.batch_size * self.raw_length

    def rung_steps(self) -> dict[int, int]:
        """step -> the Dp rung its checkpoint stands for; the run ends at the largest."""
        return {math.ceil(dp / self.tokens_per_step): dp for dp in self.dp_ladder}


def run(task) -> None:
    spec: PretrainSpec = task.spec
    cfg = spec.pretrain
    out = Path(task.dir)
    ckroot = out / "checkpoints"
    tokenizer = load_tokenizer(spec.tokenizer_dir)
    vocab = len(tokenizer)
    preset = spec.model
    rt = setup_runtime(cfg.dtype if spec.dtype == "auto" else spec.dtype, cfg.distributed,
                       ProbeShape(preset.d_model, preset.d_ff, vocab))
    sentinels = sentinel_ids(tokenizer)
    eos = tokenizer.eos_token_id
    raw_len, targets_len = spec.raw_length, spec.targets_length
    B, micro = cfg.batch_size, cfg.micro_batch_size
    if B % (micro * rt.world):
        raise ValueError(f"batch_size {B} must be a multiple of micro_batch_size x processes ({micro} x {rt.world})")
    per_rank = B // rt.world
    tokens_per_step = spec.tokens_per_step
    rung_steps = spec.rung_steps()
    total_steps = max(rung_steps)
    mix = Mixture(name=spec.mixture_name, weights=tuple(sorted(spec.mixture.items())))
    counts = mixture_counts(mix, B)
    sampler = MixtureSampler.from_dirs(spec.tokens_dirs, counts, raw_len, vocab, seed=spec.seed,
                                       max_epochs=cfg.max_epochs)
    if sampler.steps_available() < total_steps:
        short = min(sampler.langs, key=lambda lang: len(sampler.streams[lang]) // counts[lang])
        raise DataExhausted(f"the ladder needs {total_steps:,} steps but {short} text lasts "
                            f"{sampler.steps_available():,} ({len(sampler.streams[short]):,} tokens"
                            f"{f' x {cfg.max_epochs:g} epochs' if cfg.max_epochs > 1 else ''})")
    eval_langs = sorted(spec.tokens_dirs)
    seed = spec.seed
    flops = flops_per_token(preset, vocab, cfg.inputs_length, targets_len)["per_example"]
    peak = peak_flops(rt.device)

    resume = from_main(rt, latest_checkpoint(ckroot) if rt.is_main else None)  # one choice for every rank
    rt = keep_dtype(rt, resume and checkpoint_meta(resume).get("dtype"), task.name)  # a replay trains in it too

    def train(root: Path, rung_steps: dict[int, int], resume: Path | None, stop: StopFlag,
              replay: bool) -> tuple[dict[str, Any], int]:
        """Train from `resume` (a checkpoint under root) or the init to the largest of rung_steps, a rung
        checkpoint at each, stopping at a signal; the rungs reached (history) and the last step. `replay`:
        rungs remade below the run's last step, not logged to the tracker (the run's curve is the run's)."""
        total_steps = max(rung_steps)
        model = load_model(resume or init_path(spec.init_dir)).to(rt.device)
        model.config.dropout_rate = 0.0  # no dropout in pretraining (T5 v1.1)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        model.train()
        from transformers.models.t5.modeling_t5 import T5Block

        # The fused output-layer loss is the root that DDP or FSDP2 wraps (FSDP2: its blocks sharded, the rest at
        # the root). Wrap before building the optimizer: FSDP2 shards the parameters the optimizer holds.
        mode = dp_mode(cfg.distributed, rt)
        dmodel = wrap_model(Seq2SeqLoss(model), rt, mode, T5Block, cfg.activation_checkpointing)
        if rt.world > 1 and rt.is_main:
            log.info("pretrain %s: data-parallel over %d processes (%s, %s), %d of the %d rows of a step each",
                     task.name, rt.world, mode, torch.distributed.get_backend(), per_rank, B)
        opt = make_optimizer(dmodel.parameters(), cfg.optimizer, cfg.lr, cfg.betas, cfg.weight_decay)

        def lr_at(step: int) -> float:
            return learning_rate(step, cfg.lr, cfg.schedule, cfg.warmup_steps)

        step, history = 0, {}
        # The loss logged every `log_every` steps is the mean over the window since the last log; a resume
        # inside a window restores its partial sum, so the curve equals an uninterrupted run's.
        running = torch.zeros((), device=rt.device)
        n_run = 0
        if resume is not None:
            # The rate is the step's (a checkpoint of older code also holds a LambdaLR's state: not needed)
            state = load_training_checkpoint(resume, dmodel, opt)
            restore_rng(state["rng"])
            step = state["step"]
            history = state.get("rungs", {})
            if "running_loss" in state:
                running = state["running_loss"].to(rt.device)
                n_run = state["running_steps"]
            log.info("pretrain %s: %s from %s (step %d, Dp %s)", task.name, "replay resuming" if replay else "resuming",
                     resume.name, step, f"{step * tokens_per_step:,}")
        else:
            seed_all(seed)
        use_compile, why = resolve_compile(cfg.compile, rt.dtype, rt.device)
        log.info("pretrain %s: torch.compile %s (%s)", task.name, "on" if use_compile else "off", why)
        if use_compile:
            dmodel = torch.compile(dmodel)

        tracker = make_tracker(out, spec.tracking, run_id=f"pt-{dir_hash(out)}", name=task.name,
                               config={"model": to_dict(spec.model), "mixture": spec.mixture, "pretrain": to_dict(cfg)},
                               resume_step=step if resume else None, group="pretrain",
                               enabled=rt.is_main and not replay)

        def checkpoint(rung: int | None) -> None:  # every rank, at the same step
            if rt.world > 1:  # the log window's partial loss, averaged over ranks: a resume on any number continues it
                torch.distributed.all_reduce(running)
                running.div_(rt.world)
            state = {"step": step, "rng": capture_rng(), "rungs": history, "dp_tokens": step * tokens_per_step,
                     "running_loss": running.detach().cpu().clone(), "running_steps": n_run}
            meta = {"step": step, "dp_tokens": step * tokens_per_step, "dp_rung": rung, "mixture": spec.mixture,
                    "model": preset.name, "rung": rung is not None, "upstream": history.get(str(rung)) if rung else None,
                    "dtype": rt.dtype}
            save_training_checkpoint(rt, step_dir(root, step), dmodel, opt, tokenizer, state, meta)
            if rt.is_main:
                retain(root, kept=_is_rung)  # time-based checkpoints go once two newer exist; rungs keep their weights

        last_save = time.time()
        t_run = time.perf_counter()
        bar = tqdm(total=total_steps, initial=step, desc=task.name + (" (replay)" if replay else ""), unit="step",
                   disable=not (rt.is_main and sys.stderr.isatty()))
        try:
            while step < total_steps:
                raw, idx = sampler.batch(step)
                lo, hi = rt.rank * per_rank, (rt.rank + 1) * per_rank
                b = corrupt_batch(raw[lo:hi], idx[lo:hi], seed, sentinels, eos, noise_density=cfg.noise_density,
                                  mean_noise_span_length=cfg.mean_noise_span_length)
                ids = torch.as_tensor(b["input_ids"]).to(rt.device, non_blocking=True)
                labels = torch.as_tensor(b["labels"]).to(rt.device, non_blocking=True)
                n_micro = per_rank // micro
                set_lr(opt, lr_at(step))
                for i in range(n_micro):
                    sl = slice(i * micro, (i + 1) * micro)
                    with no_sync(dmodel, i < n_micro - 1), rt.autocast():
                        # Every row has the same number of targets (no padding), so the mean of
                        # micro-batch means, weighted by rows, is the global token mean.
                        loss = dmodel(input_ids=ids[sl], labels=labels[sl]).loss / n_micro
                    loss.backward()
                    running += loss.detach()
                if cfg.grad_clip:
                    clip_grad_norm(dmodel, cfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                n_run += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step in rung_steps:
                    if rt.world > 1:
                        torch.distributed.all_reduce(running)
                        running /= rt.world
                    dt = time.perf_counter() - t_run
                    loss_v = running.item() / n_run
                    ex_s = n_run * B / dt
                    # `lr`: the next step's rate, as logged since the schedule was a LambdaLR (its last_lr)
                    row = {"loss": loss_v, "dp_tokens": step * tokens_per_step, "lr": lr_at(step),
                           "tokens_per_s": ex_s * (cfg.inputs_length + targets_len),
                           "raw_tokens_per_s": ex_s * raw_len}
                    if peak:
                        row["mfu"] = ex_s * flops / (peak * rt.world)
                    tracker.log(row, step)
                    msg = (f"{'replay ' if replay else ''}step {step}/{total_steps} Dp {step * tokens_per_step:,} "
                           f"loss {loss_v:.4f} {row['tokens_per_s']:,.0f} tok/s" + (f" MFU {row['mfu']:.1%}" if peak else ""))
                    if rt.is_main and bar.disable:  # no bar to show it (a batch job): rank 0 alone logs the progress
                        log.info("%s: %s", task.name, msg)
                    else:
                        bar.set_postfix_str(f"loss {loss_v:.3f}")
                    running.zero_()
                    n_run, t_run = 0, time.perf_counter()
                # Save and stop only as all ranks agree: one rank's signal or clock stops or saves them all.
                stop_signal, save_due = agree(rt, stop.signal or 0,
                                              time.time() - last_save > 60 * cfg.checkpoint_minutes)
                if step in rung_steps:
                    rung = rung_steps[step]
                    # Through the wrapper (FSDP2 gathers in its forward), not torch.compile's (no recompiles).
                    losses = upstream_losses(getattr(dmodel, "_orig_mod", dmodel), rt, spec.tokens_dirs, eval_langs,
                                             cfg.eval_sequences, raw_len, vocab, sentinels, eos, cfg.noise_density,
                                             cfg.mean_noise_span_length, micro)
                    mixed = sum(w * losses[lang] for lang, w in mix.weights)
                    history[str(rung)] = {"step": step, "dp_tokens": step * tokens_per_step, "upstream": losses,
                                          "upstream_mixture": mixed, **text_read(sampler, step)}
                    tracker.log({f"val_loss/{k}": v for k, v in losses.items()} | {"val_loss/mixture": mixed}, step)
                    log.info("%s: rung Dp %s reached at step %d%s; held-out loss %s (mixture %.4f)", task.name,
                             f"{rung:,}", step, " (replay)" if replay else "",
                             {k: round(v, 4) for k, v in losses.items()}, mixed)
                    checkpoint(rung)
                    last_save = time.time()
                    t_run = time.perf_counter()  # throughput counts training steps, not evaluation
                elif save_due or stop_signal:
                    checkpoint(None)
                    last_save = time.time()
                if stop_signal:
                    raise Preempted(f"{task.name}: stopped by signal at step {step}; rerun the same command to "
                                    "continue", int(stop_signal))
        finally:
            bar.close()
            tracker.close()
        return history, step

    # Rungs of this ladder below the step the run has reached, without a checkpoint: the run was trained for
    # another ladder (a run is shared by sweeps whose ladders differ). They are remade by training again from the
    # init, into a side directory, then moved in: the batches, masks and rates are functions of the step, so
    # this is the run's own trajectory (bit-identical on the same processor and threads; on a GPU up to its
    # nondeterministic kernels), and the rungs the run already has stay as they are.
    reached = checkpoint_meta(resume)["step"] if resume is not None else 0
    side = out / REPLAY / "checkpoints"
    missing, side_resume = on_main(rt, lambda: plan_replay(side, ckroot, rung_steps, reached))
    with StopFlag() as stop:  # one flag for both: a signal between them is not lost
        if missing:
            if rt.is_main:
                log.warning("pretrain %s: the run has reached step %d but keeps no checkpoint for the rungs Dp %s of "
                            "this ladder (trained for another, or deleted); training again from the init to step %d "
                            "to make them", task.name, reached, ", ".join(f"{dp:,}" for dp in missing.values()),
                            max(missing))
            train(side, missing, side_resume, stop, replay=True)
            on_main(rt, lambda: adopt_rungs(side, ckroot, missing, drop=True))
            (sig,) = agree(rt, stop.signal or 0)  # one that came after the replay's last step
            if sig:
                raise Preempted(f"{task.name}: stopped by signal after remaking its rungs; rerun the same command "
                                "to continue", int(sig))
        history, step = train(ckroot, rung_steps, resume, stop, replay=False)
    if rt.is_main:
        rungs = {**kept_rungs(ckroot), **{int(k): v for k, v in history.items()}}
        rungs = {dp: e for dp, e in rungs.items() if _kept_rung(step_dir(ckroot, e["step"]))}  # none deleted
        atomic_write_json(out / "rungs.json", {
            str(dp): {**rungs[dp], "checkpoint": str(step_dir(ckroot, rungs[dp]["step"]).relative_to(out))}
            for dp in sorted(rungs)})
        log.info("%s: done, %d steps, Dp %s", task.name, step, f"{step * tokens_per_step:,}")


def missing_rungs(ckroot: Path, rung_steps: dict[int, int], reached: int) -> dict[int, int]:
    """step -> Dp of the rungs at or below the run's last step (`reached`) that have no intact rung checkpoint."""
    return {s: dp for s, dp in sorted(rung_steps.items()) if s <= reached and not _kept_rung(step_dir(ckroot, s))}


def plan_replay(side: Path, ckroot: Path, rung_steps: dict[int, int], reached: int) -> tuple[dict[int, int], Path | None]:
    """(step -> Dp of the rungs to remake, the side checkpoint to resume the replay from). What a replay killed
    part-way made is used: its finished rungs are moved in, its newest checkpoint resumed if it is not past
    the rungs still missing; a side directory nothing needs any more is dropped."""
    missing = missing_rungs(ckroot, rung_steps, reached)
    if not side.parent.exists():
        return missing, None
    done = {s: dp for s, dp in missing.items() if _kept_rung(step_dir(side, s))}
    if done:
        adopt_rungs(side, ckroot, done, drop=False)
        missing = missing_rungs(ckroot, rung_steps, reached)
    last = latest_checkpoint(side) if missing else None
    if not missing or (last is not None and checkpoint_meta(last)["step"] > max(missing)):
        shutil.rmtree(side.parent)
        last = None
    return missing, last


def adopt_rungs(side: Path, ckroot: Path, steps: dict[int, int], drop: bool) -> None:
    """Move remade rung checkpoints into the run (`drop`: then the side directory). Each move is a rename, so a
    kill in between leaves each rung here or there, and the rerun (plan_replay) finds where."""
    for s in sorted(steps):
        src, dst = step_dir(side, s), step_dir(ckroot, s)
        if not _kept_rung(src):
            raise RuntimeError(f"{side} holds no rung checkpoint at step {s}; delete {side.parent} and rerun to make "
                               "it again from the init")
        if dst.exists():  # not a rung (missing_rungs said so): a time-based save at that step, or a damaged one
            shutil.rmtree(dst)
        src.rename(dst)
    if drop:
        shutil.rmtree(side.parent)


def kept_rungs(ckroot: Path) -> dict[int, dict[str, Any]]:
    """Dp -> the rung's entry (as rungs.json lists it) of every intact rung checkpoint, from its meta.json."""
    out = {}
    for p in sorted(Path(ckroot).glob("step-*")):
        if _kept_rung(p):
            meta = checkpoint_meta(p)
            if isinstance(meta.get("upstream"), dict) and meta.get("dp_rung"):
                out[int(meta["dp_rung"])] = meta["upstream"]
    return out


def rungs_to_remake(task) -> tuple[int, dict[int, int]]:
    """(the step a pretraining run has reached, step -> Dp of this task's rungs it must remake below it)."""
    spec = task.spec
    if not isinstance(spec, PretrainSpec):
        spec = PretrainSpec.from_dict(spec)
    ckroot = Path(task.dir) / "checkpoints"
    # read only (a sweep may be writing this run): no latest_checkpoint, which removes temporaries and logs
    resumable = [p for p in ckroot.glob("step-*") if (p / STATE).is_file() and verify_checkpoint(p) is None]
    reached = max((checkpoint_meta(p)["step"] for p in resumable), default=0)
    return reached, missing_rungs(ckroot, spec.rung_steps(), reached)


def text_read(sampler: MixtureSampler, steps: int) -> dict[str, Any]:
    """What a rung has read (rungs.json, the checkpoint's meta): unique tokens among the Dp tokens seen, and
    epochs (passes over the most repeated language's text; below 1 when nothing was read twice)."""
    cov = sampler.coverage(steps)
    return {"unique_tokens": int(sum(c["unique_tokens"] for c in cov.values())),
            "epochs": max(c["epochs"] for c in cov.values()), "epochs_by_language": {k: c["epochs"] for k, c in cov.items()}}


def _kept_rung(ckpt: Path) -> bool:
    """An intact rung checkpoint (a damaged or unreadable one is not: its rung is made again)."""
    try:
        return ckpt.is_dir() and verify_checkpoint(ckpt) is None and bool(checkpoint_meta(ckpt).get("rung"))
    except (OSError, ValueError):
        return False


def _is_rung(ckpt: Path) -> bool:
    """A rung checkpoint (kept for finetuning); an unreadable meta.json counts as one, to be safe."""
    try:
        return bool(checkpoint_meta(ckpt).get("rung"))
    except (OSError, ValueError):
        return True


def read_rungs(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    """The rungs a run keeps: rungs.json's entries whose checkpoint is an intact rung (the test the run itself makes
    before remaking one: a rung deleted or damaged since is not kept)."""
    p = Path(run_dir) / "rungs.json"
    rungs = {int(k): v for k, v in json.loads(p.read_text()).items()} if p.exists() else {}
    return {dp: e for dp, e in rungs.items() if "checkpoint" in e and _kept_rung(Path(run_dir) / e["checkpoint"])}
