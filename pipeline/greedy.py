"""Greedy decoding for T5 without `generate()`'s per-token machinery.

At the sizes a CPU sweep evaluates, a decoding step is a few small matmuls, and `model.generate` spends most
of each step outside them (cache objects, mask building, logits processors, stopping criteria). This loop
runs the same modules and the same operations in the same order (encoder once, decoder self-attention with a
key/value cache, cross-attention keys/values computed once, argmax), so its tokens are the ones `generate`
picks; it also drops a sentence from the batch once it has emitted EOS or reached its own cap (`max_new_tokens`
per row: the evaluation's cap grows with the source's length). Anything it does not reproduce
(beam search, logits processors configured on the model) goes through `generate` instead: see `supported`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from pipeline.model import lm_head_input

# generation_config fields that change which token greedy search picks, with their neutral values.
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "no_repeat_ngram_size": 0,
            "encoder_no_repeat_ngram_size": 0, "min_length": 0, "bad_words_ids": None, "suppress_tokens": None,
            "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
            "sequence_bias": None}


def supported(model) -> bool:
    """True when `greedy_ids` gives exactly what `model.generate(num_beams=1, do_sample=False)` gives."""
    from transformers import T5ForConditionalGeneration

    if type(model) is not T5ForConditionalGeneration:
        return False
    g = model.generation_config
    if any(getattr(g, k, None) not in (None, v) for k, v in _NEUTRAL.items()):
        return False
    attn = [m for m in model.decoder.modules() if hasattr(m, "pruned_heads")]
    return model.decoder.block[0].layer[0].SelfAttention.has_relative_attention_bias and not any(
        m.pruned_heads for m in attn)


@torch.no_grad()
def greedy_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int | Sequence[int],
               eos_id: int) -> list[list[int]]:
    """Generated ids per row (without the decoder start token), each cut after its EOS or at its cap
    (`max_new_tokens`: one for the batch, or one per row)."""
    cfg, dec = model.config, model.decoder
    enc = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    n, heads, d_kv = input_ids.shape[0], cfg.num_heads, cfg.d_kv
    # The encoder padding mask, added to cross-attention scores as T5 does (0 or the dtype's minimum).
    pad_bias = (1.0 - attention_mask[:, None, None, :].to(enc.dtype)) * torch.finfo(enc.dtype).min

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, heads, d_kv).transpose(1, 2)

    def attend(q, k, v, bias) -> torch.Tensor:
        s = torch.matmul(q, k.transpose(3, 2))
        s += bias
        w = F.softmax(s.float(), dim=-1).type_as(s)
        a = torch.matmul(w, v).transpose(1, 2).contiguous()
        return a.view(a.shape[0], 1, -1)

    cross = [(split(b.layer[1].EncDecAttention.k(enc)), split(b.layer[1].EncDecAttention.v(enc))) for b in dec.block]
    past: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(dec.block)
    rel = dec.block[0].layer[0].SelfAttention
    start = model.generation_config.decoder_start_token_id
    tok = torch.full((n, 1), cfg.decoder_start_token_id if start is None else start, dtype=torch.long,
                     device=input_ids.device)
    rows = list(range(n))  # the input row of each row still decoding
    caps = [max_new_tokens] * n if isinstance(max_new_tokens, int) else [int(c) for c in max_new_tokens]
    cap = torch.tensor(caps, device=input_ids.device)
    out: list[list[int]] = [[] for _ in range(n)]
    for t in range(max(caps, default=0)):
        h = dec.embed_tokens(tok)
        pos_bias = rel.compute_bias(t + 1, t + 1, device=h.device, cache_position=torch.tensor([t], device=h.device))
        for i, block in enumerate(dec.block):
            self_attn, cross_attn, ff = block.layer
            sa, x = self_attn.SelfAttention, self_attn.layer_norm(h)
            k, v = split(sa.k(x)), split(sa.v(x))
            if past[i] is not None:
                k, v = torch.cat([past[i][0], k], dim=2), torch.cat([past[i][1], v], dim=2)
            past[i] = (k, v)
            h = h + sa.o(attend(split(sa.q(x)), k, v, pos_bias))
            ca = cross_attn.EncDecAttention
            h = h + ca.o(attend(split(ca.q(cross_attn.layer_norm(h))), *cross[i], pad_bias))
            h = ff(h)
        h = lm_head_input(model, dec.final_layer_norm(h))
        nxt = model.lm_head(h)[:, -1, :].argmax(-1)
        for r, token in zip(rows, nxt.tolist()):
            out[r].append(token)
        alive = (nxt != eos_id) & (cap > t + 1)
        if not alive.all():
            if not alive.any():
                break
            rows = [r for r, a in zip(rows, alive.tolist()) if a]
            nxt, pad_bias, cap = nxt[alive], pad_bias[alive], cap[alive]
            past = [(k[alive], v[alive]) for k, v in past]
            cross = [(k[alive], v[alive]) for k, v in cross]
        tok = nxt[:, None]
    return out
