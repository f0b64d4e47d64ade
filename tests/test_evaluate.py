"""The evaluate stage: -100 never reaches a decoder, sacreBLEU/chrF stored with everything needed to recompute
them from the predictions file, downstream CE equal to a plain-torch teacher-forcing computation, an explicit
`max_new_tokens`, and length-sorted batches that give the predictions back in the input order.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import sacrebleu
import torch
from test_training import first, small_plan, with_spec

from pipeline.evaluate import decode, generate, generate_ids, score
from pipeline.seq2seq import collate, encode_pairs, reference_ce

CPU = torch.device("cpu")
no_autocast = contextlib.nullcontext


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """The small en-de plan with its tokenizer and random init built (what evaluation needs around it)."""
    from pipeline.task import execute
    from pipeline.vocab import load_tokenizer

    root = tmp_path_factory.mktemp("ev")
    _, plan = small_plan(root)
    for s in ("tokenizer", "init"):
        assert execute(first(plan, s)) == "ok"
    tok = load_tokenizer(first(plan, "init").dir + "/model")
    return {"root": root, "plan": plan, "tok": tok}


def tiny_t5(vocab: int, seed: int = 0):
    """A randomly initialised t5_tiny from the repo's model code (the real config's preset)."""
    from conftest import compose
    from omegaconf import OmegaConf

    from pipeline.model import build_model, load_preset

    preset = load_preset(OmegaConf.to_container(compose(["scale=smoke"]).models.t5_tiny))
    return build_model(preset, vocab, seed=seed).eval()


def pairs(stage, n: int = 12, prefix: str = ""):
    from pipeline.config import data_config
    from pipeline.sources import get_source

    spec = first(stage["plan"], "evaluate").spec
    rows = [r["translation"] for r in get_source(data_config(spec["data"]), stage["root"] / "cache")
            .parallel("en-de", "test").select(range(n))]
    src, tgt = encode_pairs(stage["tok"], rows, "en", "de", prefix, 32, 64)
    return rows, src, tgt


def test_label_padding_becomes_pad_before_decoding(stage):
    tok = stage["tok"]
    rows, src, tgt = pairs(stage)
    labels = collate(src, tgt, tok.pad_token_id)["labels"]
    assert (labels == -100).any()  # the batch really has padded labels
    want = [tok.decode(t, skip_special_tokens=True).strip() for t in tgt]
    assert decode(tok, labels) == want
    assert decode(tok, labels.tolist()) == want
    with pytest.raises((OverflowError, TypeError, IndexError)):  # what a raw decode of -100 does
        tok.batch_decode(labels, skip_special_tokens=True)


def test_score_stores_what_sacrebleu_computes():
    refs = ["Die Datei wurde nicht gefunden.", "Öffnen Sie das Menü Bearbeiten.", "Klicken Sie auf Speichern."]
    hyps = ["Die Datei wurde gefunden.", "Öffnen Sie das Menü Bearbeiten jetzt.", "Klicken Sie Speichern."]
    m = score(hyps, refs, "13a")
    b, c = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a"), sacrebleu.corpus_chrf(hyps, [refs])
    assert 0 < m["bleu"] < 100 and m["bp"] < 1  # a non-trivial case: every field means something
    assert m["bleu"] == b.score and m["bp"] == b.bp and m["precisions"] == list(b.precisions)
    assert (m["sys_len"], m["ref_len"]) == (b.sys_len, b.ref_len)
    assert m["chrf"] == c.score
    assert m["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert m["chrf_signature"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")


def test_metrics_file_equals_sacrebleu_on_the_predictions_file(stage, tmp_path):
    """The stage end to end (a finetuned Dp = 0 cell): metrics.json holds BLEU with signature, BP, the
    four precisions and the lengths, and chrF, all equal to sacreBLEU recomputed from predictions.jsonl."""
    from pipeline.evaluate import run as evaluate
    from pipeline.finetune import run as finetune

    ft = with_spec(first(stage["plan"], "finetune", "dp0-df64"), tmp_path / "ft")
    finetune(ft)
    ev = with_spec(first(stage["plan"], "evaluate", "dp0-df64"), tmp_path / "ev", finetune_dir=str(tmp_path / "ft"))
    (tmp_path / "ev").mkdir()
    evaluate(ev)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == m["n_test"] == ev.spec.evaluate.test_size
    hyps, refs = [p["hypothesis"] for p in preds], [p["reference"] for p in preds]
    b = sacrebleu.corpus_bleu(hyps, [refs], tokenize=ev.spec.evaluate.bleu_tokenize)
    assert m["bleu"] == b.score and m["bp"] == b.bp and m["precisions"] == list(b.precisions)
    assert (m["sys_len"], m["ref_len"]) == (b.sys_len, b.ref_len) and m["sys_len"] > 0
    assert m["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert "tok:13a" in m["bleu_signature"] and "version:" in m["bleu_signature"]
    assert m["max_new_tokens"] == ev.spec.evaluate.max_new_tokens
    assert m["len_ratio"] == pytest.approx(b.sys_len / b.ref_len)
    from pipeline.evaluate import runaway

    cfg = ev.spec.evaluate  # the runaway count: the long loops in the file, plus at most the outputs that hit the cap
    loopers = sum(runaway(h, r, False, cfg.runaway_ratio, cfg.runaway_repeats) for h, r in zip(hyps, refs))
    assert loopers <= m["runaway_n"] <= loopers + m["hit_cap"] and m["runaway"] == m["runaway_n"] / m["n_test"]
    assert m["ce"] > 0 and m["ce_tokens"] > m["n_test"]


def hand_ce(model, src: list[list[int]], tgt: list[list[int]], pad: int) -> float:
    """Token-mean NLL of the references, one pair at a time (no padding, no HF loss): the decoder reads
    [pad] + reference[:-1] and is scored on every reference token, EOS included."""
    total, count = 0.0, 0
    with torch.no_grad():
        for s, t in zip(src, tgt):
            t = torch.tensor([t])
            dec_in = torch.cat([torch.full((1, 1), pad), t[:, :-1]], dim=1)
            logits = model(input_ids=torch.tensor([s]), decoder_input_ids=dec_in).logits[0].double()
            total -= logits.log_softmax(-1).gather(1, t[0, :, None]).sum().item()
            count += t.shape[1]
    return total / count


def test_downstream_ce_equals_a_hand_computation(stage):
    tok = stage["tok"]
    _, src, tgt = pairs(stage, n=13)
    assert len({len(s) for s in src}) > 3 and len({len(t) for t in tgt}) > 3  # padding is exercised
    model = tiny_t5(len(tok))
    ce, n = reference_ce(model, src, tgt, tok.pad_token_id, 4, CPU, no_autocast)
    assert n == sum(map(len, tgt))
    assert ce == pytest.approx(hand_ce(model, src, tgt, tok.pad_token_id), rel=1e-5)


def never_eos(vocab: int):
    """A tiny T5 whose greedy choice is always token 10 or 11: the output layer sees one feature only."""
    model = tiny_t5(vocab)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[10, 0], model.lm_head.weight[11, 0] = 50.0, -50.0
    return model


@pytest.mark.parametrize("max_new", [7, 37])  # 37: past transformers' silent 20-token default
def test_generation_uses_the_explicit_max_new_tokens(stage, max_new):
    tok = stage["tok"]
    _, src, _ = pairs(stage, n=5)
    ids = generate_ids(never_eos(len(tok)), src, tok.pad_token_id, tok.eos_token_id, 2, max_new, 1,
                       CPU, no_autocast)
    assert [len(x) for x in ids] == [max_new] * len(src)
    assert all(set(x) <= {10, 11} for x in ids)


def test_length_sorted_batches_come_back_in_input_order(stage):
    tok = stage["tok"]
    _, src, _ = pairs(stage, n=11)
    assert sorted(src, key=len) != src  # sorting really reorders them
    model = tiny_t5(len(tok), seed=3)
    batched = generate(model, tok, src, 4, 12, 1, CPU, no_autocast)
    one_by_one = [generate(model, tok, [s], 1, 12, 1, CPU, no_autocast)[0] for s in src]
    assert len(set(one_by_one)) > 3  # different inputs give different outputs, so an order bug shows
    assert batched == one_by_one


def test_predictions_file_is_readable_next_to_metrics(stage, tmp_path):
    from pipeline.evaluate import write_outputs

    write_outputs(tmp_path, ["a"], ["b"], ["ç"], {"bleu": 0.0})
    assert json.loads((tmp_path / "predictions.jsonl").read_text()) == {"source": "a", "reference": "b",
                                                                       "hypothesis": "ç"}
    assert "ç" in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8")  # not \\u-escaped
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_the_cap_grows_with_the_source_up_to_the_ceiling(stage):
    """cap = max_len_a·(source tokens) + max_len_b, at most max_new_tokens; a model that never ends stops there."""
    from dataclasses import replace

    from pipeline.config import EvaluateConfig

    cfg = EvaluateConfig.parse({"batch_size": 2, "num_beams": 1, "max_new_tokens": 30, "bleu_tokenize": "13a",
                                "max_len_a": 1.5, "max_len_b": 4})
    assert [cfg.cap(n) for n in (1, 6, 17, 18, 100)] == [5, 13, 29, 30, 30]
    assert replace(cfg, max_len_a=0.0).cap(100) == 4  # a = 0: the fixed cap b
    tok = stage["tok"]
    _, src, _ = pairs(stage, n=6)
    cfg = replace(cfg, max_len_a=0.5, max_len_b=2, max_new_tokens=200)
    assert len({cfg.cap(len(s)) for s in src}) > 2
    ids = generate_ids(never_eos(len(tok)), src, tok.pad_token_id, tok.eos_token_id, 4,
                       [cfg.cap(len(s)) for s in src], 1, CPU, no_autocast)
    assert [len(x) for x in ids] == [cfg.cap(len(s)) for s in src]


@pytest.mark.parametrize("hyp, ref, hit, want", [
    ("Anzahl der Liste der Liste der Liste", "die Fünf von Pik", False, True),  # 7 > 1.5·4 words, a 2-gram ×3
    ("der Liste der Liste der Liste", "die Liste der Dateien in diesem Ordner", False, False),  # loop, not long
    ("Die Datei konnte wegen eines Fehlers auf der Platte nicht geöffnet werden", "Datei nicht geöffnet", False,
     False),  # long, no loop
    ("Datei Datei", "Datei", False, False),  # two in a row is not a loop (repeats = 3)
    ("ok ok ok ok", "ok", False, True),
    ("Die Datei", "Die Datei wurde gespeichert", True, True),  # hit its cap: runaway whatever it reads
])
def test_runaway_outputs_are_long_loops_or_outputs_that_hit_their_cap(hyp, ref, hit, want):
    from pipeline.evaluate import loops, runaway

    assert runaway(hyp, ref, hit, 1.5, 3) is want
    assert loops(list("abcbcbc"), 3) and not loops(list("abcbc"), 3)
    assert loops(list("xyzwxyzwxyzw"), 3) and not loops(list("xyzwvxyzwvxyzwv"), 3)  # n <= 4


def test_a_bf16_cell_scores_ce_in_bf16_and_decodes_in_fp32_on_a_cpu(stage, tmp_path, monkeypatch):
    """scripts/bench_decode.py measured bf16 greedy decoding slower than fp32 on the CPU (docs/benchmarks.md):
    a cell trained in bf16 has its reference CE scored under its bf16 autocast and its outputs decoded without
    it, and metrics.json says so."""
    import pipeline.evaluate as ev
    from pipeline.config import data_config
    from pipeline.distributed import Runtime
    from pipeline.sources import get_source

    seen = {}

    def fake_ce(model, s, t, pad, batch, device, autocast):
        with autocast():
            seen["ce"] = torch.is_autocast_enabled("cpu")
        return 1.0, 10

    def fake_generate(model, src, pad, eos, batch, caps, beams, device, autocast, length_penalty):
        with autocast():
            seen["generate"] = torch.is_autocast_enabled("cpu")
        return [[eos] for _ in src]

    monkeypatch.setattr(ev, "reference_ce", fake_ce)
    monkeypatch.setattr(ev, "generate_ids", fake_generate)
    task = with_spec(first(stage["plan"], "evaluate", "dp0-df64"), tmp_path)
    source = get_source(data_config(json.loads(json.dumps(first(stage["plan"], "evaluate").spec["data"]))),
                        stage["root"] / "cache")
    m, _, _ = ev.score_split(None, stage["tok"], source, task.spec, "test", Runtime(device=CPU, dtype="bf16"))
    assert seen == {"ce": True, "generate": False}
    assert (m["dtype"], m["decode_dtype"]) == ("bf16", "fp32")
