"""pipeline.greedy gives exactly the tokens of `model.generate(num_beams=1)`: for T5 variants (gated or plain
feed-forward, tied or untied output layer, the fused kernels of pipeline.model), for padded batches in which
some sentences stop early and others run to `max_new_tokens`; and evaluation falls back to `generate`
wherever the loop would not reproduce it.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import greedy
from pipeline.evaluate import generate_ids
from pipeline.model import use_fused_kernels

pytestmark = pytest.mark.usefixtures("one_thread")
PAD, EOS, VOCAB = 0, 1, 40
VARIANTS = {"gated-untied": ("gated-gelu", False, False), "relu-tied": ("relu", True, False),
            "gated-fused": ("gated-gelu", False, True)}
PULL = {"gated-untied": 1.3, "relu-tied": 0.0, "gated-fused": 1.3}  # EOS is picked now and then, not always


def model(variant: str, seed: int = 0, pull: float | None = None):
    from transformers import T5Config, T5ForConditionalGeneration

    ff, tied, fused = VARIANTS[variant]
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=3, num_decoder_layers=2,
                   feed_forward_proj=ff, tie_word_embeddings=tied, dropout_rate=0.0, pad_token_id=PAD,
                   eos_token_id=EOS, decoder_start_token_id=PAD, relative_attention_num_buckets=8,
                   relative_attention_max_distance=16)
    m = T5ForConditionalGeneration(cfg)
    with torch.no_grad():  # a random model rarely picks EOS: make it likely enough that rows stop at different steps
        w, u = m.lm_head.weight, torch.randn(cfg.d_model)
        w[EOS] += (PULL[variant] if pull is None else pull) * w.norm(dim=1).mean() * u / u.norm()
        if tied:  # else the input embedding of the token fed back dominates and the model echoes it forever
            m.shared.weight.mul_(0.1)
    m = use_fused_kernels(m) if fused else m
    return m.eval()


MODELS = {v: model(v) for v in VARIANTS}


def reference(m, ids: torch.Tensor, max_new: int) -> list[list[int]]:
    gen = m.generate(input_ids=ids, attention_mask=(ids != PAD).long(), max_new_tokens=max_new, min_new_tokens=0,
                     num_beams=1, do_sample=False)
    return [r[: r.index(EOS) + 1] if EOS in r else r for r in gen[:, 1:].tolist()]


def batch(lengths: list[int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), PAD)
    for i, n in enumerate(lengths):
        ids[i, : n - 1] = torch.randint(2, VOCAB, (n - 1,), generator=g)
        ids[i, n - 1] = EOS
    return ids


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variant=st.sampled_from(sorted(VARIANTS)), lengths=st.lists(st.integers(1, 20), min_size=1, max_size=9),
       seed=st.integers(0, 10_000), max_new=st.integers(1, 30))
def test_greedy_ids_equal_generate(variant, lengths, seed, max_new):
    m, ids = MODELS[variant], batch(lengths, seed)
    assert greedy.supported(m)
    assert greedy.greedy_ids(m, ids, (ids != PAD).long(), max_new, EOS) == reference(m, ids, max_new)


def test_rows_stop_at_different_steps():
    """The property test above exercises dropping finished rows: here some rows stop early, others run out."""
    m = MODELS["gated-untied"]
    ids = batch([3, 17, 9, 12, 5, 20, 8, 14, 2, 11, 6, 19], seed=7)
    got = greedy.greedy_ids(m, ids, (ids != PAD).long(), 25, EOS)
    assert got == reference(m, ids, 25)
    stopped = [len(r) for r in got if r[-1] == EOS]
    assert stopped and len(set(stopped)) > 1 and any(len(r) == 25 and EOS not in r for r in got)


def test_generate_ids_takes_the_fast_path_only_where_it_is_exact(monkeypatch):
    calls = []
    real = greedy.greedy_ids
    monkeypatch.setattr(greedy, "greedy_ids", lambda *a, **k: calls.append(1) or real(*a, **k))
    src = [r[r != PAD].tolist() for r in batch([4, 9, 13, 6, 2], seed=1)]
    m = MODELS["gated-fused"]
    kw = dict(pad_id=PAD, eos_id=EOS, batch_size=2, max_new_tokens=12, device=torch.device("cpu"),
              autocast=contextlib.nullcontext)
    fast = generate_ids(m, src, num_beams=1, **kw)
    assert calls and fast == [reference(m, torch.tensor([s]), 12)[0] for s in src]

    calls.clear()
    generate_ids(m, src, num_beams=2, **kw)  # beam search: generate
    assert not calls
    penalised = model("gated-fused")
    penalised.generation_config.repetition_penalty = 1.5
    assert not greedy.supported(penalised)
    got = generate_ids(penalised, src, num_beams=1, **kw)
    assert not calls
    assert got == [reference(penalised, torch.tensor([s]), 12)[0] for s in src]  # generate applies the penalty


def test_each_row_stops_at_its_own_cap_as_generate_does_with_that_cap():
    """The evaluation's cap grows with the source: one batch holds rows with different caps, and each row's tokens
    are what `generate` gives that row alone with its own cap (EOS before the cap still ends it)."""
    m = MODELS["gated-untied"]
    ids = batch([3, 17, 9, 12, 5, 20, 8, 14], seed=11)
    caps = [1, 25, 4, 9, 25, 2, 13, 6]
    got = greedy.greedy_ids(m, ids, (ids != PAD).long(), caps, EOS)
    want = [reference(m, ids[i:i + 1], c)[0] for i, c in enumerate(caps)]
    assert got == want
    assert all(len(r) <= c for r, c in zip(got, caps)) and any(len(r) == c and EOS not in r for r, c in zip(got, caps))


def test_generate_path_cuts_each_row_at_its_cap_like_the_fast_path(monkeypatch):
    """The `generate` path (beam search, or a model greedy cannot reproduce) forces EOS at a row's cap and cuts
    it: greedy through `generate` gives the fast loop's tokens, cap for cap; beam search never passes a cap."""
    src = [r[r != PAD].tolist() for r in batch([4, 9, 13, 6, 2, 11], seed=3)]
    caps = [2, 12, 5, 1, 9, 7]
    m = MODELS["gated-fused"]
    kw = dict(pad_id=PAD, eos_id=EOS, batch_size=3, device=torch.device("cpu"), autocast=contextlib.nullcontext)
    fast = generate_ids(m, src, max_new_tokens=caps, num_beams=1, **kw)
    monkeypatch.setattr(greedy, "supported", lambda model: False)
    assert generate_ids(m, src, max_new_tokens=caps, num_beams=1, **kw) == fast
    for lp in (0.0, 1.0, 2.0):
        beams = generate_ids(m, src, max_new_tokens=caps, num_beams=3, length_penalty=lp, **kw)
        assert all(len(r) <= c and (EOS not in r or r.index(EOS) == len(r) - 1) for r, c in zip(beams, caps))
