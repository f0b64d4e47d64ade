"""T5 model presets, construction, parameter counts, training FLOPs, faster kernels and the fused training loss.

Our own presets are T5 v1.1-style (gated-GELU feed-forward, untied lm_head, no dropout in
pretraining); the paper's T5-3B keeps the original T5's ReLU feed-forward and tied embeddings.
The model is `transformers.T5ForConditionalGeneration`; transformers is pinned below 5 because
5.x always ties T5's lm_head to the input embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import Seq2SeqLMOutput

FEED_FORWARD = ("gated-gelu", "relu")


@dataclass(frozen=True)
class ModelPreset:
    name: str
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int  # encoder layers
    num_decoder_layers: int
    feed_forward_proj: str  # "gated-gelu" (T5 v1.1) or "relu" (original T5)
    tie_embeddings: bool  # lm_head shares the input embedding (original T5) or not (v1.1)
    dropout_rate: float = 0.0
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128

    def __post_init__(self) -> None:
        def bad(key: str, allowed: str) -> ValueError:
            return ValueError(
                f"model preset {self.name!r}: {key} must be {allowed} (got {getattr(self, key)!r})"
            )

        if not isinstance(self.name, str) or not self.name:
            raise bad("name", "a non-empty string")
        for key in (
            "d_model",
            "d_kv",
            "num_heads",
            "d_ff",
            "num_layers",
            "num_decoder_layers",
            "relative_attention_num_buckets",
            "relative_attention_max_distance",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(key, "a positive integer")
        if self.feed_forward_proj not in FEED_FORWARD:
            raise bad("feed_forward_proj", "one of " + ", ".join(FEED_FORWARD))
        if not isinstance(self.tie_embeddings, bool):
            raise bad("tie_embeddings", "true or false")
        if (
            isinstance(self.dropout_rate, bool)
            or not isinstance(self.dropout_rate, (int, float))
            or not 0.0 <= self.dropout_rate < 1.0
        ):
            raise bad("dropout_rate", "a number in [0, 1)")


PRESET_FIELDS = tuple(f.name for f in dataclasses.fields(ModelPreset))


def _v11(name: str, d_model: int, heads: int, d_kv: int, d_ff: int, layers: int) -> ModelPreset:
    return ModelPreset(name, d_model, d_kv, heads, d_ff, layers, layers, "gated-gelu", False)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        _v11("t5_tiny", 64, 4, 16, 256, 2),  # ~27k tokens/s on 2 CPU cores
        _v11("t5_mini", 128, 4, 32, 512, 4),
        _v11("t5_small", 256, 4, 64, 1024, 4),  # ~2.3k tokens/s on 2 CPU cores
        _v11("t5_base", 768, 12, 64, 2048, 12),  # T5 v1.1-base-like, for one GPU
        _v11("t5_770m", 1024, 16, 64, 2816, 24),  # T5 v1.1-large-like: 717.4M non-embedding
        # the original T5-3B: ReLU, tied embeddings, 32 heads of 128 on d_model 1024: 2,818.7M non-embedding
        ModelPreset("t5_3b", 1024, 128, 32, 16384, 24, 24, "relu", True),
    )
}


def load_preset(mapping: Mapping[str, Any]) -> ModelPreset:
    """A validated ModelPreset from a mapping (a YAML/Hydra node). One-line ValueError on bad input."""
    if not isinstance(mapping, Mapping):
        raise ValueError(f"model preset must be a mapping of fields, got {type(mapping).__name__}")
    name = mapping.get("name", "?")
    for key in mapping:
        if key not in PRESET_FIELDS:
            raise ValueError(
                f"model preset {name!r}: unknown field {key!r} (allowed: {', '.join(PRESET_FIELDS)})"
            )
    required = [f.name for f in dataclasses.fields(ModelPreset) if f.default is dataclasses.MISSING]
    for key in required:
        if key not in mapping:
            raise ValueError(
                f"model preset {name!r}: missing field {key!r} (required: {', '.join(required)})"
            )
    values = dict(mapping.items())
    if isinstance(values.get("dropout_rate"), int) and not isinstance(values["dropout_rate"], bool):
        values["dropout_rate"] = float(values["dropout_rate"])  # YAML `0` means 0.0
    return ModelPreset(**values)


# ----------------------------------------------------------------------------- construction


def t5_config(preset: ModelPreset, vocab_size: int, *, pad_id: int = 0, eos_id: int = 1) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=preset.d_model,
        d_kv=preset.d_kv,
        d_ff=preset.d_ff,
        num_layers=preset.num_layers,
        num_decoder_layers=preset.num_decoder_layers,
        num_heads=preset.num_heads,
        relative_attention_num_buckets=preset.relative_attention_num_buckets,
        relative_attention_max_distance=preset.relative_attention_max_distance,
        dropout_rate=preset.dropout_rate,
        layer_norm_epsilon=1e-6,
        feed_forward_proj=preset.feed_forward_proj,  # "gated-gelu" -> gelu_new, as T5 v1.1
        tie_word_embeddings=preset.tie_embeddings,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,  # T5 starts decoding from pad
    )


def build_model(
    preset: ModelPreset,
    vocab_size: int,
    *,
    pad_id: int = 0,
    eos_id: int = 1,
    dropout_rate: float | None = None,
    seed: int | None = None,
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 for `preset`; `dropout_rate` overrides the preset's (e.g. for finetuning).

    With `seed`, initialisation is reproducible and leaves the global torch RNG untouched.
    """
    if dropout_rate is not None:
        preset = dataclasses.replace(preset, dropout_rate=float(dropout_rate))
    config = t5_config(preset, vocab_size, pad_id=pad_id, eos_id=eos_id)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = T5ForConditionalGeneration(config)
        if not preset.tie_embeddings:
            # HF draws an untied lm_head with std 1.0 (as for the embedding), so logits start with
            # std ~sqrt(d_model) and the initial loss is ~31 at d_model 64 instead of ~ln V.
            # Mesh-TF (T5 v1.1) builds the untied output layer with mtf.layers.dense and its default
            # VarianceScalingInitializer(scale=1, fan_in): std = d_model ** -0.5 (truncated normal).
            if model.lm_head.weight is model.shared.weight:  # transformers 5.x always ties
                raise RuntimeError(
                    "this transformers ties T5's lm_head to the embedding: install transformers<5"
                )
            with torch.no_grad():
                model.lm_head.weight.normal_(0.0, preset.d_model**-0.5)
    return model


# ----------------------------------------------------------------------------- counting


def _ff_params(p: ModelPreset) -> int:
    # relu: wi, wo; gated-gelu: wi_0, wi_1, wo. No biases anywhere in T5.
    return (3 if p.feed_forward_proj == "gated-gelu" else 2) * p.d_model * p.d_ff


def _stack_params(p: ModelPreset, decoder: bool) -> int:
    """Non-embedding parameters of the encoder (or decoder) stack."""
    attention = 4 * p.d_model * p.num_heads * p.d_kv  # q, k, v, o
    layers = p.num_decoder_layers if decoder else p.num_layers
    per_layer = (
        (2 if decoder else 1) * attention  # self-attention (+ cross-attention)
        + _ff_params(p)
        + (3 if decoder else 2) * p.d_model  # one RMS-norm scale per sub-layer
    )
    relative_bias = p.relative_attention_num_buckets * p.num_heads  # first layer's self-attention only
    return layers * per_layer + relative_bias + p.d_model  # + final norm


def count_params(preset: ModelPreset, vocab_size: int) -> dict[str, int]:
    """Parameter counts from the architecture's formulas (nothing is instantiated).

    non_embedding = encoder + decoder stacks (attention, feed-forward, norms, relative biases);
    embedding = the input embedding shared by encoder and decoder; lm_head = the output layer when
    untied (0 when tied: it is the embedding). total = the three, each shared tensor counted once.
    """
    non_embedding = _stack_params(preset, False) + _stack_params(preset, True)
    embedding = vocab_size * preset.d_model
    lm_head = 0 if preset.tie_embeddings else vocab_size * preset.d_model
    return {
        "total": non_embedding + embedding + lm_head,
        "non_embedding": non_embedding,
        "embedding": embedding,
        "lm_head": lm_head,
    }


def flops_per_token(
    preset: ModelPreset, vocab_size: int, inputs_length: int, targets_length: int
) -> dict[str, float]:
    """Training FLOPs (forward + backward = 3 x forward) of one span-corruption example, and per token.

    With I, T = inputs_length, targets_length, V = vocab_size, h * d_kv = the attention width,
    W_enc, W_dec = the stacks' matmul weights and W_xkv = the decoder's cross-attention K and V
    projections (2 * d_model * h * d_kv per decoder layer), which read the encoder output:

        per_example = 6 * (W_enc + W_xkv) * I                 weights applied per input token
                    + 6 * (W_dec - W_xkv + V * d_model) * T   weights and output layer per target token
                    + 12 * h * d_kv * (L_enc * I**2 + L_dec * (T**2 + T * I))   attention
        per_token   = per_example / (I + T)

    Attention: per layer the scores (Q K^T) and the weighted values (A V) each cost
    2 * Lq * Lk * h * d_kv forward; encoder self (I x I), decoder self (T x T, counted in full
    although causal, as the hardware computes it) and cross (T x I). The output layer's matmul is
    paid whether or not it is tied. Norms, relative biases, softmax and lookups are left out; so
    this equals torch's FlopCounterMode on forward + backward exactly (tested).

    `approx_per_example` is the usual shorthand 6 * N_enc * I + 6 * (N_dec + V * d_model) * T
    + attention (N = non-embedding parameters), which charges the cross-attention K/V projections
    to target tokens: at I >> T it undercounts (by 8% for t5_3b at 512/114).
    """
    p = preset
    inner = p.num_heads * p.d_kv
    ff = _ff_params(p)
    w_enc = p.num_layers * (4 * p.d_model * inner + ff)
    w_dec = p.num_decoder_layers * (8 * p.d_model * inner + ff)
    w_xkv = p.num_decoder_layers * 2 * p.d_model * inner
    lm_head = vocab_size * p.d_model
    I, T = inputs_length, targets_length  # noqa: E741 - the formula's names
    weights = 6.0 * (w_enc + w_xkv) * I + 6.0 * (w_dec - w_xkv + lm_head) * T
    attention = 12.0 * inner * (p.num_layers * I**2 + p.num_decoder_layers * (T**2 + T * I))
    per_example = weights + attention
    approx = 6.0 * _stack_params(p, False) * I + 6.0 * (_stack_params(p, True) + lm_head) * T + attention
    return {
        "per_example": per_example,
        "per_token": per_example / (I + T),
        "weights_per_example": weights,
        "attention_per_example": attention,
        "approx_per_example": approx,
    }


def describe(preset: ModelPreset, vocab_size: int) -> str:
    """One line for logs and the plan: name, shape and counts."""
    c = count_params(preset, vocab_size)
    return (
        f"{preset.name}: d_model {preset.d_model}, {preset.num_layers}+{preset.num_decoder_layers} layers, "
        f"{preset.num_heads}x{preset.d_kv} heads, d_ff {preset.d_ff} ({preset.feed_forward_proj}), "
        f"{c['non_embedding'] / 1e6:.1f}M non-embedding, {c['total'] / 1e6:.1f}M total"
        + (", tied" if preset.tie_embeddings else "")
    )


# ----------------------------------------------------------------------------- fast kernels


class _RMSNorm(torch.nn.Module):
    """T5LayerNorm as one fused kernel; the same `weight` parameter (state-dict keys unchanged) and the
    same fp32 arithmetic as transformers' version for fp32 weights."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.variance_epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.rms_norm(x.float(), (x.shape[-1],), self.weight, self.eps)
        if torch.is_autocast_enabled(x.device.type):
            # Every reader of a norm is a linear layer that autocast feeds in its dtype (q, k and v; wi_0 and wi_1;
            # the output layer; each decoder layer's cross-attention k and v read the encoder's): one cast here
            # instead of one per reader, the same values. The norm itself stays fp32, as the residual stream.
            y = y.to(torch.get_autocast_dtype(x.device.type))
        return y


class _FeedForward(torch.nn.Module):
    """T5DenseActDense / T5DenseGatedActDense (the same children, so the same state-dict keys) without their cast
    of the hidden layer to `wo`'s weight dtype: under autocast it turned the bf16 hidden layer, the widest
    activation, into fp32 and `wo` turned it back, two copies each way a layer for the same values."""

    def __init__(self, ff: torch.nn.Module):
        super().__init__()
        self.gated = hasattr(ff, "wi_0")
        if self.gated:
            self.wi_0, self.wi_1 = ff.wi_0, ff.wi_1
        else:
            self.wi = ff.wi
        self.wo, self.dropout, self.act = ff.wo, ff.dropout, ff.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(self.dropout(h))


def use_fused_kernels(model: T5ForConditionalGeneration) -> T5ForConditionalGeneration:
    """Swap transformers' composite gelu_new (six element-wise kernels each way) for torch's tanh GELU and
    T5LayerNorm for torch's rms_norm: the same functions, ~20-30% less time per step for small presets on a
    CPU; and the feed-forward blocks for `_FeedForward` (no fp32 round trip of the hidden layer under bf16
    autocast). Only with fp32 weights (transformers' norm casts to half weights, which this would not)."""
    from transformers.activations import NewGELUActivation
    from transformers.models.t5.modeling_t5 import T5DenseActDense, T5DenseGatedActDense, T5LayerNorm

    if any(p.dtype != torch.float32 for p in model.parameters()):
        return model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(module, name, torch.nn.GELU(approximate="tanh"))
            elif isinstance(child, T5LayerNorm):
                setattr(module, name, _RMSNorm(child))
    for module in list(model.modules()):  # after the GELUs above: _FeedForward keeps the children it is given
        for name, child in list(module.named_children()):
            if type(child) in (T5DenseActDense, T5DenseGatedActDense):
                setattr(module, name, _FeedForward(child))
    return model


def load_model(path: str | Path, **config_overrides: Any) -> T5ForConditionalGeneration:
    """A checkpoint (`from_pretrained` directory) with the fused kernels swapped in: how every stage loads a
    model, so training and evaluation run the same functions. `config_overrides`: e.g. dropout_rate=0.1."""
    return use_fused_kernels(T5ForConditionalGeneration.from_pretrained(str(path), **config_overrides))


def lm_head_input(model, hidden: torch.Tensor) -> torch.Tensor:
    """The decoder's output as T5's lm_head takes it: rescaled by d_model ** -0.5 when the output layer is
    tied to the embedding (the original T5, as T5ForConditionalGeneration does), unchanged when untied."""
    return hidden * model.config.d_model**-0.5 if model.config.tie_word_embeddings else hidden


# Logits per chunk of the fused output-layer loss: 4 MB of fp32 stays in cache between the matmul that makes
# them and the two that consume their gradient (128 rows of an 8k vocabulary, 32 of T5's 32k).
CE_CHUNK_ELEMENTS = 1 << 20


class _LinearCrossEntropy(torch.autograd.Function):
    """Token-mean cross-entropy of `h @ w.T` against `target` (-100 ignored), a chunk of rows at a time.

    The [tokens, vocab] logits never exist whole (at t5_tiny's batch they are 30 MB, more than the cache),
    and the gradients are formed in the same pass, while a chunk's probabilities are still in cache:
    softmax minus one-hot, times `w` for `h` and times `h` for `w`. Backward only scales them. One exp a
    logit instead of log-softmax's two, and no 30 MB tensors written and read back.
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, w: torch.Tensor, target: torch.Tensor, chunk: int) -> torch.Tensor:
        grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        acc = torch.promote_types(torch.promote_types(h.dtype, w.dtype), torch.float32)  # softmax in >= fp32
        valid = target != -100
        count = valid.sum().clamp(min=1)
        safe = target.clamp(min=0)
        total = torch.zeros((), dtype=acc, device=h.device)
        gh = torch.empty_like(h) if grads else None
        gw = torch.zeros_like(w, dtype=acc) if grads else None
        for s in range(0, h.shape[0], chunk):
            hc, tc, vc = h[s:s + chunk], safe[s:s + chunk], valid[s:s + chunk]
            logits = (hc @ w.t()).to(acc)
            rows = torch.arange(hc.shape[0], device=h.device)
            picked = logits[rows, tc]
            top = logits.amax(-1)
            p = logits.sub_(top[:, None]).exp_()  # unnormalised probabilities, in place of the logits: one exp
            z = p.sum(-1)
            total += ((z.log() + top - picked) * vc).sum()
            if grads:
                p.mul_((vc / z)[:, None])  # softmax, zero on ignored rows
                p[rows, tc] -= vc.to(acc)  # minus the one-hot target
                gh[s:s + chunk] = p.to(w.dtype) @ w  # under autocast the matmuls run in its dtype
                gw += (p.t().to(hc.dtype) @ hc).to(acc)
        if grads:
            ctx.save_for_backward(gh, gw, count)
            ctx.w_dtype = w.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gh, gw, count = ctx.saved_tensors
        scale = grad / count
        return gh * scale.to(gh.dtype), (gw * scale).to(ctx.w_dtype), None, None


def linear_cross_entropy(h: torch.Tensor, w: torch.Tensor, target: torch.Tensor,
                         chunk_rows: int | None = None) -> torch.Tensor:
    """`cross_entropy(h @ w.T, target, ignore_index=-100)` (token mean) without materialising the logits;
    `chunk_rows` rows at a time (default: CE_CHUNK_ELEMENTS logits)."""
    if h.dim() != 2 or target.shape != h.shape[:1]:
        raise ValueError(f"linear_cross_entropy: h must be [tokens, d] and target [tokens], got {tuple(h.shape)} "
                         f"and {tuple(target.shape)}")
    return _LinearCrossEntropy.apply(h, w, target, chunk_rows or max(1, CE_CHUNK_ELEMENTS // w.shape[0]))


class Seq2SeqLoss(torch.nn.Module):
    """T5's teacher-forced training loss with the output layer and cross-entropy fused (`linear_cross_entropy`):
    the same value as `T5ForConditionalGeneration(input_ids, labels=...).loss`, returned the same way
    (`.loss`). The training loops call it, and DDP wraps it so its gradient hooks see the whole step.
    The model stays reachable as `.module` (what `distributed.unwrap` peels)."""

    def __init__(self, model: T5ForConditionalGeneration):
        super().__init__()
        self.module = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None):
        m = self.module
        enc = m.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        dec = m.decoder(input_ids=m._shift_right(labels), attention_mask=decoder_attention_mask,
                        encoder_hidden_states=enc, encoder_attention_mask=attention_mask, use_cache=False)[0]
        loss = linear_cross_entropy(lm_head_input(m, dec).flatten(0, 1), m.lm_head.weight, labels.flatten())
        return Seq2SeqLMOutput(loss=loss)
