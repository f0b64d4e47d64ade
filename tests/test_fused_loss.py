"""The fused output-layer loss (pipeline.model.linear_cross_entropy, Seq2SeqLoss) against the plain
computation it replaces: the same value and the same gradients, chunked or not, with ignored targets,
tied or untied output layers."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.model as pm
from pipeline.model import PRESETS, Seq2SeqLoss, build_model, linear_cross_entropy, use_fused_kernels

TINY = PRESETS["t5_tiny"]
TIED_RELU = dataclasses.replace(TINY, name="tiny_tied_relu", feed_forward_proj="relu", tie_embeddings=True)


def reference(h, w, t):
    return F.cross_entropy(h @ w.t(), t, ignore_index=-100)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 70), d=st.integers(1, 12), v=st.integers(2, 50), chunk_rows=st.integers(1, 80),
       ignore=st.floats(0.0, 0.9), seed=st.integers(0, 2**16))
def test_linear_cross_entropy_equals_cross_entropy_of_the_logits(n, d, v, chunk_rows, ignore, seed):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randint(0, v, (n,), generator=g)
    t[torch.rand(n, generator=g) < ignore] = -100
    t[0] = int(t[0].clamp(min=0))  # at least one target counts (an all-ignored batch is tested below)
    ours = linear_cross_entropy(h, w, t, chunk_rows)
    gh, gw = torch.autograd.grad(ours * 3.0, (h, w))  # a non-unit upstream gradient must scale both
    ref = reference(h, w, t)
    rh, rw = torch.autograd.grad(ref * 3.0, (h, w))
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gh, rh, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(gw, rw, rtol=1e-6, atol=1e-9)


def test_all_ignored_targets_give_zero_loss_and_gradient():
    h = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    loss = linear_cross_entropy(h, w, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0.0 and h.grad.abs().sum() == 0 and w.grad.abs().sum() == 0


def test_without_gradients_it_only_computes_the_loss():
    h, w, t = torch.randn(6, 4), torch.randn(9, 4), torch.randint(0, 9, (6,))
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), reference(h, w, t))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="tokens"):
        linear_cross_entropy(torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3, dtype=torch.long))


def assert_same_loss_and_gradients(model, params, **batch):
    """Seq2SeqLoss(model) gives the model's own loss and the same gradient for each (name, parameter)."""
    ref = model(**batch).loss
    ref_grads = torch.autograd.grad(ref, [p for _, p in params])
    ours = Seq2SeqLoss(model)(**batch).loss
    grads = torch.autograd.grad(ours, [p for _, p in params])
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for (name, _), a, b in zip(params, grads, ref_grads, strict=True):  # float32 sums in another order: ~1e-6 apart
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("preset", [TINY, TIED_RELU], ids=lambda p: p.name)
@pytest.mark.parametrize("padded", [False, True])
def test_seq2seq_loss_equals_t5s_own_loss_and_gradients(monkeypatch, preset, padded):
    monkeypatch.setattr(pm, "CE_CHUNK_ELEMENTS", 7 * 300)  # several chunks, the last one short
    model = use_fused_kernels(build_model(preset, 300, seed=0))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 300, (4, 12), generator=g)
    labels = torch.randint(2, 300, (4, 5), generator=g)
    kw = {}
    if padded:  # finetuning's layout: padded sources, -100 after each target's end
        kw["attention_mask"] = torch.ones_like(ids)
        kw["attention_mask"][1, 7:] = 0
        ids[1, 7:] = 0
        labels[2, 3:] = -100
    assert_same_loss_and_gradients(model, list(model.named_parameters()), input_ids=ids, labels=labels, **kw)


def test_seq2seq_loss_under_bf16_autocast_stays_close():
    model = use_fused_kernels(build_model(TINY, 300, seed=0))
    g = torch.Generator().manual_seed(3)
    ids, labels = torch.randint(2, 300, (4, 12), generator=g), torch.randint(2, 300, (4, 5), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(input_ids=ids, labels=labels).loss
        ours = Seq2SeqLoss(model)(input_ids=ids, labels=labels).loss
    ours.backward()
    assert ours.dtype == torch.float32 and abs(ours.item() - ref.item()) < 0.05
    assert all(p.grad is not None and p.grad.dtype == p.dtype and torch.isfinite(p.grad).all()
               for p in model.parameters())


def test_the_wrapper_exposes_the_model_as_module():
    from pipeline.distributed import unwrap

    model = build_model(TINY, 300, seed=0)
    wrapped = Seq2SeqLoss(model)
    assert unwrap(wrapped) is model
    assert [n.removeprefix("module.") for n, _ in wrapped.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_seq2seq_loss_through_a_lora_model_equals_peft_s_own_loss():
    from pipeline.config import LoraConfig
    from pipeline.finetune import load_for_finetune

    peft = pytest.importorskip("peft")  # noqa: F841
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        build_model(TINY, 300, seed=0).save_pretrained(d)
        model = load_for_finetune(d, "lora", 0.0, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=("q", "v")))
    for n, p in model.named_parameters():  # non-zero adapters, so a path that skipped them would differ
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    g = torch.Generator().manual_seed(2)
    ids, labels = torch.randint(2, 300, (3, 9), generator=g), torch.randint(2, 300, (3, 4), generator=g)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert_same_loss_and_gradients(model, trainable, input_ids=ids, labels=labels)
