"""Memory per GPU of each training and evaluation stage, measured on the real model under FakeTensorMode.

Nothing is allocated: the model (`transformers`' T5 from our presets) is built from fake tensors, which carry
shapes, dtypes and storages but no data, and one step runs at the configured shapes while `LiveBytes` (a
dispatch mode) counts the bytes of every storage an op creates until it is freed. So activations, the
fused loss's buffers, the attention scores, dropout masks, a block recomputed under activation checkpointing
and a beam-search step are what the code really allocates, not a formula's guess. What a formula states
exactly (weights, gradients and optimizer state of the model's real parameter shapes, divided among the
processes that shard them) is counted from the fake model's parameters.

The runtime modelled (pipeline/distributed.py):
- fsdp: FSDP2 `fully_shard` per T5 block and at the root; on GPUs bf16 compute parameters and fp32 sharded
  master parameters, gradients reduced in fp32 and kept sharded, optimizer state sharded. Each rank also
  holds the root's parameters unsharded in bf16 (embedding, lm_head, final norms: FSDP2 keeps the root
  gathered between forward and backward) and up to two blocks unsharded (the one computing and the one
  prefetched), plus one block's unsharded bf16 gradients and their fp32 copy while they are reduce-scattered.
- ddp / none: fp32 parameters and gradients whole on every GPU, bf16 autocast; DDP adds its gradient buckets
  (as large as the gradients, torch's default `gradient_as_bucket_view=False`).
- Activations of one micro-batch (its rows x lengths), measured with and without per-block activation
  checkpointing (`torch.utils.checkpoint`, non-reentrant, as `activation_checkpointing: true` runs).
- The optimizer step comes after backward has freed the activations, so its temporaries do not add to the
  peak, which is in the backward pass.
- Evaluation runs on one GPU: fp32 weights under bf16 autocast, the reference cross-entropy pass (whole
  logits) and a beam-search step with its caches at full length (batch x beams rows; self-attention cache of
  `max_new_tokens`, cross-attention cache of the source length).

Speed: a fake model of two and of three layers per stack is measured and the result extrapolated linearly in
the number of layers (every preset has as many decoder as encoder layers; memory per layer is the same for
every layer but the first, which owns the relative position bias and is in both), so t5_3b plans in seconds. `MEASURE_FULL` turns the extrapolation off (the tests compare the two).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline.model import CE_CHUNK_ELEMENTS, ModelPreset, linear_cross_entropy, lm_head_input, t5_config

GiB = 1024**3
# Bytes the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation take beyond what tensors
# hold: a fixed reserve plus a share of the measured peak (what `torch.cuda.max_memory_reserved` shows above
# `max_memory_allocated` on T5 training). Stated in the table's "reserve" column.
CUDA_CONTEXT_BYTES = 2 * GiB
FRAGMENTATION = 0.10
PREFETCHED_BLOCKS = 2  # FSDP2: the block computing and the next one, gathered ahead
MEASURE_FULL = False
LOSS_CHUNKS = 8


# --------------------------------------------------------------------------------------------- counting


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created inside the mode and still alive: `current`, and `peak` since entry.
    Storages are told apart by identity (views share one), and leave the count when garbage collected."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = st._cdata  # the StorageImpl's address: one per storage, whatever views share it
        if key in self.live:
            return
        n = st.nbytes()
        self.live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=False)


def _build(preset: ModelPreset, vocab: int, dtype: torch.dtype, dropout: float):
    """The stages' model (our preset, transformers' T5), built with parameters in `dtype`; call inside a fake mode."""
    from transformers import T5ForConditionalGeneration

    cfg = t5_config(dataclasses.replace(preset, dropout_rate=float(dropout)), vocab)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return T5ForConditionalGeneration(cfg)
    finally:
        torch.set_default_dtype(old)


def _layers(preset: ModelPreset, n: int) -> ModelPreset:
    return dataclasses.replace(preset, num_layers=n, num_decoder_layers=n)


def _by_layers(measure: Callable[[ModelPreset], int], preset: ModelPreset) -> int:
    """`measure` at the preset's depth, from one- and two-layer models (linear in depth) unless MEASURE_FULL."""
    if MEASURE_FULL or preset.num_layers != preset.num_decoder_layers or preset.num_layers <= 3:
        return measure(preset)
    two, three = measure(_layers(preset, 2)), measure(_layers(preset, 3))
    return two + (preset.num_layers - 2) * (three - two)


# ------------------------------------------------------------------------------------------ measurements


@functools.lru_cache(maxsize=256)
def train_peak(preset: ModelPreset, vocab: int, rows: int, src_len: int, tgt_len: int, compute: str,
               dropout: float, checkpointing: bool) -> int:
    """Peak bytes of activations and temporaries of one training micro-batch (forward + backward of our fused
    loss), weights and gradients excluded: each gradient is dropped as soon as it is accumulated, as FSDP's
    reduce-scatter does and as the separately counted gradient buffers hold it.

    compute: "bf16" (parameters cast to bf16: FSDP2's mixed precision), "autocast" (fp32 parameters under bf16
    autocast: ddp/none on GPUs), "fp32"."""
    return _by_layers(lambda p: _train_peak(p, vocab, rows, src_len, tgt_len, compute, dropout, checkpointing),
                      preset)


def _train_peak(preset, vocab, rows, src_len, tgt_len, compute, dropout, checkpointing) -> int:
    with _fake_mode():
        model = _build(preset, vocab, torch.bfloat16 if compute == "bf16" else torch.float32, dropout)
        model.train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for p in model.parameters():
            p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
        ids = torch.randint(2, vocab, (rows, src_len))
        labels = torch.randint(2, vocab, (rows, tgt_len))
        amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=compute == "autocast")
        with LiveBytes() as live:
            with amp:
                loss = _loss(model, ids, labels)
            loss.backward()
            del loss
        return live.peak


def _loss(model, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`Seq2SeqLoss`'s forward (the training loss of both stages), its fused output layer run in at most
    LOSS_CHUNKS chunks: faking a thousand small chunks takes minutes, and each chunk's logits are temporaries,
    so larger chunks overstate the peak by at most tokens x vocabulary x 6 bytes / LOSS_CHUNKS."""
    enc = model.encoder(input_ids=ids)[0]
    dec = model.decoder(input_ids=model._shift_right(labels), encoder_hidden_states=enc, use_cache=False)[0]
    h = lm_head_input(model, dec).flatten(0, 1)
    w = model.lm_head.weight
    chunk = max(CE_CHUNK_ELEMENTS // w.shape[0], -(-h.shape[0] // LOSS_CHUNKS))
    return linear_cross_entropy(h, w, labels.flatten(), chunk)


@functools.lru_cache(maxsize=256)
def ce_peak(preset: ModelPreset, vocab: int, rows: int, src_len: int, tgt_len: int, autocast: bool) -> int:
    """Peak bytes beyond the weights of `seq2seq.reference_ce` on one batch: a no-grad forward with whole
    logits, their fp32 copy and cross-entropy (validation in finetuning, the CE pass of evaluation)."""
    def one(p: ModelPreset) -> int:
        with _fake_mode():
            model = _build(p, vocab, torch.float32, 0.0).eval()
            ids = torch.randint(2, vocab, (rows, src_len))
            labels = torch.randint(2, vocab, (rows, tgt_len))
            with LiveBytes() as live, torch.no_grad():
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).logits
                torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum")
                del logits
            return live.peak

    return _by_layers(one, preset)


@functools.lru_cache(maxsize=256)
def beam_peak(preset: ModelPreset, vocab: int, batch: int, beams: int, src_len: int, new_tokens: int,
              autocast: bool) -> int:
    """Peak bytes beyond the weights of the last step of beam search: the encoder output expanded to
    batch x beams rows, the cross-attention cache, the self-attention cache at `new_tokens`, one decoder step
    and its scores over batch x beams x vocabulary (log-softmax and top-k as `generate` takes them)."""
    def one(p: ModelPreset) -> int:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        rows = batch * beams
        adt = torch.bfloat16 if autocast else torch.float32
        with _fake_mode():
            model = _build(p, vocab, torch.float32, 0.0).eval()
            ids = torch.randint(2, vocab, (batch, src_len))
            with LiveBytes() as live, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                enc = model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids))[0]
                enc = enc.repeat_interleave(beams, dim=0)  # generate expands the encoder output per beam
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
                shape = (rows, p.num_heads, new_tokens - 1, p.d_kv)
                for i in range(p.num_decoder_layers):  # the self-attention cache as it stands at the last step
                    cache.self_attention_cache.update(torch.zeros(shape, dtype=adt), torch.zeros(shape, dtype=adt), i)
                step = torch.randint(2, vocab, (rows, 1))
                out = model(encoder_outputs=(enc,), attention_mask=torch.ones(rows, src_len, dtype=torch.long),
                            decoder_input_ids=step, past_key_values=cache, use_cache=True,
                            cache_position=torch.tensor([new_tokens - 1]))
                scores = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).view(batch, beams * vocab)
                torch.topk(scores, 2 * beams, dim=1)
                del out, scores, cache, enc
            return live.peak

    return _by_layers(one, preset)


# ------------------------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class StageMemory:
    """Bytes per GPU of one stage's process, by part; `total` adds the CUDA reserve."""

    stage: str
    processes: int  # processes (GPUs) the work is split over
    mode: str  # fsdp | ddp | none | eval
    compute: str  # bf16 | autocast | fp32
    rows: int  # sequences in one micro-batch (evaluation: batch x beams)
    parts: dict[str, int]
    activations_other: int | None = None  # the activations with the other activation-checkpointing setting
    checkpointing: bool = False

    @property
    def tensors(self) -> int:
        return sum(self.parts.values())

    @property
    def reserve(self) -> int:
        """What the CUDA context and the caching allocator take beyond the tensors (none on a CPU)."""
        return CUDA_CONTEXT_BYTES + int(FRAGMENTATION * self.tensors) if self.compute != "fp32" else 0

    @property
    def total(self) -> int:
        return self.tensors + self.reserve


@functools.lru_cache(maxsize=16)
def _param_shapes(preset: ModelPreset, vocab: int) -> tuple[tuple[tuple[int, ...], ...], int, int]:
    """The real model's parameter shapes (each shared tensor once), the elements of its largest T5 block, and
    those outside the blocks (the root FSDP2 unit)."""
    with _fake_mode():
        model = _build(preset, vocab, torch.float32, 0.0)
        shapes = tuple(tuple(p.shape) for p in model.parameters())
        blocks = list(model.encoder.block) + list(model.decoder.block)
        in_blocks = [sum(p.numel() for p in b.parameters()) for b in blocks]
        return shapes, max(in_blocks), sum(math.prod(s) for s in shapes) - sum(in_blocks)


def optimizer_bytes(shapes, optimizer: str) -> int:
    """fp32 optimizer state of these parameter shapes: AdamW's two moments; Adafactor (transformers', no first
    moment, as make_optimizer builds it) a row and a column second moment per matrix, a full one per vector."""
    if optimizer == "adamw":
        return 8 * sum(math.prod(s) for s in shapes)
    total = 0
    for s in shapes:
        if len(s) >= 2:
            total += 4 * (math.prod(s[:-1]) + math.prod(s[:-2]) * s[-1])
        else:
            total += 4 * math.prod(s)
    return total


def training_memory(stage: str, preset: ModelPreset, vocab: int, *, processes: int, mode: str, gpu: bool,
                    rows: int, src_len: int, tgt_len: int, optimizer: str, dropout: float, checkpointing: bool,
                    validation_rows: int = 0, validation_lengths: tuple[int, int] = (0, 0)) -> StageMemory:
    """Memory per GPU of a training stage at one micro-batch of `rows` x (src_len, tgt_len)."""
    shapes, block, root = _param_shapes(preset, vocab)
    n = sum(math.prod(s) for s in shapes)
    sharded = mode == "fsdp" and processes > 1
    w = processes if sharded else 1
    compute = ("bf16" if sharded else "autocast") if gpu else "fp32"
    parts = {"weights": 4 * n // w, "gradients": 4 * n // w, "optimizer": optimizer_bytes(shapes, optimizer) // w}
    if sharded:
        # gathered bf16 compute copies (root + prefetched blocks) and one block's gradients being reduce-scattered
        parts["gathered"] = (2 if gpu else 4) * (root + PREFETCHED_BLOCKS * block) + (2 + 4) * block
    elif mode == "ddp" and processes > 1:
        parts["ddp_buckets"] = 4 * n
    act = train_peak(preset, vocab, rows, src_len, tgt_len, compute, dropout, checkpointing)
    other = train_peak(preset, vocab, rows, src_len, tgt_len, compute, dropout, not checkpointing)
    if validation_rows:  # validation CE between steps: the activations are gone then, the weights are not
        ce = ce_peak(preset, vocab, validation_rows, *validation_lengths, gpu)
        act, other = max(act, ce), max(other, ce)
    parts["activations"] = act
    return StageMemory(stage, processes, mode if processes > 1 else "none", compute, rows, parts, other,
                       checkpointing)


def evaluation_memory(preset: ModelPreset, vocab: int, *, gpu: bool, batch: int, beams: int, src_len: int,
                      new_tokens: int) -> StageMemory:
    """Memory of the evaluate stage on one GPU: fp32 weights and the larger of its CE pass and beam search."""
    shapes, _, _ = _param_shapes(preset, vocab)
    n = sum(math.prod(s) for s in shapes)
    act = max(ce_peak(preset, vocab, batch, src_len, new_tokens, gpu),
              beam_peak(preset, vocab, batch, beams, src_len, new_tokens, gpu))
    return StageMemory("evaluate", 1, "eval", "autocast" if gpu else "fp32", batch * beams,
                       {"weights": 4 * n, "activations": act})


def describe(m: StageMemory) -> dict[str, Any]:
    """The parts in GiB, for plan.json and the docs."""
    out = {k: round(v / GiB, 2) for k, v in m.parts.items()}
    out.update(reserve=round(m.reserve / GiB, 2), total=round(m.total / GiB, 2))
    if m.activations_other is not None:
        out["activations_" + ("without" if m.checkpointing else "with") + "_checkpointing"] = round(
            m.activations_other / GiB, 2)
    return out
