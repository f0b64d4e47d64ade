import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from transformers import T5ForConditionalGeneration

from pipeline.model import (
    PRESET_FIELDS,
    PRESETS,
    ModelPreset,
    build_model,
    count_params,
    flops_per_token,
    load_preset,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
TINY = PRESETS["t5_tiny"]
# the paper presets' layouts at toy size: tied + ReLU (original T5), untied + gated-GELU (v1.1),
# and attention wider than d_model as in T5-3B (32 x 128 on 1024)
TINY_TIED_RELU = dataclasses.replace(
    TINY, name="tiny_tied_relu", feed_forward_proj="relu", tie_embeddings=True
)
TINY_WIDE = dataclasses.replace(TINY, name="tiny_wide", d_kv=32, num_layers=3, num_decoder_layers=1)


def n_unique_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a shared tensor once


# ----------------------------------------------------------------------------- counts


@pytest.mark.parametrize("preset", [TINY, TINY_TIED_RELU, TINY_WIDE, PRESETS["t5_mini"], PRESETS["t5_small"]])
def test_analytic_count_equals_instantiated_model(preset):
    vocab = 1000
    model = build_model(preset, vocab, seed=0)
    counts = count_params(preset, vocab)
    assert counts["total"] == n_unique_params(model)
    assert counts["embedding"] == model.shared.weight.numel()
    assert counts["lm_head"] == (0 if preset.tie_embeddings else model.lm_head.weight.numel())
    assert counts["total"] == counts["non_embedding"] + counts["embedding"] + counts["lm_head"]


def test_paper_preset_counts():
    t5_3b = count_params(PRESETS["t5_3b"], 32128)
    assert abs(t5_3b["non_embedding"] / 1e6 - 2818.7) <= 0.1
    assert t5_3b["non_embedding"] == 2_818_699_264
    assert t5_3b["lm_head"] == 0  # tied, as the original T5
    t5_770m = count_params(PRESETS["t5_770m"], 32128)
    assert abs(t5_770m["non_embedding"] / 1e6 - 717.4) <= 0.1
    assert t5_770m["non_embedding"] == 717_351_936
    assert t5_770m["lm_head"] == 32128 * 1024  # untied, as T5 v1.1


# ----------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("preset", [TINY, TINY_TIED_RELU, PRESETS["t5_mini"]])
def test_initial_loss_is_close_to_log_vocab(preset):
    vocab = 8192
    model = build_model(preset, vocab, seed=0)
    gen = torch.Generator().manual_seed(0)
    inputs = torch.randint(2, vocab, (8, 64), generator=gen)
    labels = torch.randint(2, vocab, (8, 16), generator=gen)
    with torch.no_grad():
        loss = model(input_ids=inputs, labels=labels).loss.item()
    # HF's default std-1.0 untied lm_head gives ~31 here; ours starts at ~ln V, as Mesh-TF's does
    assert abs(loss - math.log(vocab)) < 1.0, loss


def test_untied_lm_head_uses_mesh_tf_fan_in_init():
    model = build_model(PRESETS["t5_mini"], 8192, seed=0)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert abs(model.lm_head.weight.std().item() - 128**-0.5) < 0.01 * 128**-0.5
    assert abs(model.shared.weight.std().item() - 1.0) < 0.01  # the embedding keeps T5's std 1


def test_save_and_load_keep_lm_head_untied_and_weights_equal(tmp_path):
    model = build_model(TINY, 500, seed=1)
    model.save_pretrained(tmp_path)
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config.tie_word_embeddings is False
    assert loaded.lm_head.weight.data_ptr() != loaded.shared.weight.data_ptr()
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for key, value in original.items():
        torch.testing.assert_close(reloaded[key], value, rtol=0, atol=0, msg=key)
    assert n_unique_params(loaded) == count_params(TINY, 500)["total"]


def test_tied_preset_round_trips_tied(tmp_path):
    model = build_model(TINY_TIED_RELU, 500, seed=1)
    model.save_pretrained(tmp_path)
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.shared.weight.data_ptr()
    torch.testing.assert_close(loaded.shared.weight, model.shared.weight, rtol=0, atol=0)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(TINY, 300, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(TINY, 300, seed=7)
    c = build_model(TINY, 300, seed=8)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_config_is_t5_v1_1_style_and_dropout_override():
    model = build_model(TINY, 300, pad_id=0, eos_id=1)
    cfg = model.config
    assert cfg.feed_forward_proj == "gated-gelu" and cfg.dense_act_fn == "gelu_new"
    assert cfg.dropout_rate == 0.0 and cfg.decoder_start_token_id == 0 and cfg.eos_token_id == 1
    assert build_model(TINY, 300, dropout_rate=0.1).config.dropout_rate == 0.1
    assert build_model(TINY_TIED_RELU, 300).config.dense_act_fn == "relu"


# ----------------------------------------------------------------------------- FLOPs


@pytest.mark.parametrize("preset", [TINY, TINY_TIED_RELU, TINY_WIDE])
def test_flops_formula_equals_torch_flop_counter(preset):
    vocab, batch, inputs_length, targets_length = 1000, 2, 48, 12
    model = build_model(preset, vocab, seed=0)
    inputs = torch.randint(2, vocab, (batch, inputs_length))
    labels = torch.randint(2, vocab, (batch, targets_length))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=inputs, labels=labels).loss.backward()
    flops = flops_per_token(preset, vocab, inputs_length, targets_length)
    assert flops["per_example"] == pytest.approx(counter.get_total_flops() / batch, rel=1e-9)
    assert flops["per_token"] == pytest.approx(flops["per_example"] / (inputs_length + targets_length))
    assert flops["approx_per_example"] < flops["per_example"]  # the shorthand misses cross-attention K/V


def test_paper_preset_flops_are_dominated_by_weights():
    flops = flops_per_token(PRESETS["t5_3b"], 32128, 512, 114)
    # ~6 N per token: 2.8B non-embedding parameters, most of them applied to the 512 input tokens
    assert 5e12 < flops["per_example"] < 6e12
    assert flops["attention_per_example"] < 0.1 * flops["per_example"]


# ----------------------------------------------------------------------------- presets and validation


def test_every_preset_has_a_yaml_file_that_loads_to_it():
    files = sorted(CONF.glob("*.yaml"))
    assert {f.stem for f in files} == set(PRESETS)
    for path in files:
        first_line = path.read_text().splitlines()[0]
        assert first_line == f"# @package models.{path.stem}"
        assert load_preset(yaml.safe_load(path.read_text())) == PRESETS[path.stem]


def test_presets_have_the_documented_shapes():
    assert (TINY.d_model, TINY.num_layers, TINY.num_heads, TINY.d_kv, TINY.d_ff) == (64, 2, 4, 16, 256)
    t5_3b = PRESETS["t5_3b"]
    assert (t5_3b.feed_forward_proj, t5_3b.tie_embeddings) == ("relu", True)
    for name in ("t5_tiny", "t5_mini", "t5_small", "t5_base", "t5_770m"):
        assert PRESETS[name].feed_forward_proj == "gated-gelu" and not PRESETS[name].tie_embeddings
        assert PRESETS[name].dropout_rate == 0.0


@pytest.mark.parametrize(
    "change, key",
    [
        ({"n_layers": 2}, "n_layers"),  # unknown field: named, with the allowed ones
        ({"feed_forward_proj": "gelu"}, "feed_forward_proj"),
        ({"d_model": -64}, "d_model"),
        ({"num_heads": 2.5}, "num_heads"),
        ({"d_ff": True}, "d_ff"),
        ({"tie_embeddings": "no"}, "tie_embeddings"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
        ({"name": ""}, "name"),
    ],
)
def test_load_preset_rejects_bad_values_in_one_line(change, key):
    mapping = {**dataclasses.asdict(TINY), **change}
    with pytest.raises(ValueError) as err:
        load_preset(mapping)
    message = str(err.value)
    assert key in message and "\n" not in message
    if key == "n_layers":
        assert all(field in message for field in PRESET_FIELDS)
    if key == "feed_forward_proj":
        assert "gated-gelu" in message and "relu" in message


def test_load_preset_requires_fields_and_accepts_defaults():
    mapping = dataclasses.asdict(TINY)
    del mapping["d_ff"]
    with pytest.raises(ValueError, match="missing field 'd_ff'"):
        load_preset(mapping)
    minimal = {k: v for k, v in dataclasses.asdict(TINY).items() if k not in ("dropout_rate",)}
    minimal["relative_attention_num_buckets"] = 32
    assert load_preset({**minimal, "dropout_rate": 0}) == TINY
    assert isinstance(load_preset(minimal), ModelPreset)


def test_load_preset_rejects_a_non_mapping():
    with pytest.raises(ValueError, match="mapping"):
        load_preset(["t5_tiny"])


def test_load_preset_takes_a_hydra_node():
    omegaconf = pytest.importorskip("omegaconf")
    node = omegaconf.OmegaConf.create(yaml.safe_load((CONF / "t5_770m.yaml").read_text()))
    assert load_preset(node) == PRESETS["t5_770m"]
