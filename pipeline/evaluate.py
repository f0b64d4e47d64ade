"""Stage `evaluate`: BLEU and chrF (sacrebleu, called directly, signature stored) and downstream
cross-entropy of a finetuned cell on the held-out test set; predictions written beside the metrics.

The test sample is the same for every cell (a fixed seed, independent of the cell). Generation runs in
length-sorted batches with an explicit `max_new_tokens` (never the library's silent 20-token default);
-100 never reaches a decoder (labels are built separately from generation inputs).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_write_json, atomic_write_text
from pipeline.config import data_config
from pipeline.finetune import encode_pairs, pad_batch, reference_ce
from pipeline.tokenizer import load_tokenizer
from pipeline.training import setup_runtime

log = logging.getLogger(__name__)
TEST_SEED = 20_240_207


def test_rows(source, pair: str, size: int | None) -> list[dict[str, str]]:
    test = source.parallel(pair, "test")
    if size is not None and size < len(test):
        idx = np.sort(np.random.default_rng(TEST_SEED).choice(len(test), size=size, replace=False))
        test = test.select(idx)
    return [r["translation"] for r in test]


def generate(model, tokenizer, sources: list[list[int]], batch_size: int, max_new_tokens: int, num_beams: int,
             device, autocast) -> list[str]:
    """Decoded hypotheses in the input order; batches sorted by source length to keep padding small."""
    order = np.argsort([len(s) for s in sources], kind="stable")[::-1]
    out: list[str] = [""] * len(sources)
    pad = tokenizer.pad_token_id
    model.eval()
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids = pad_batch([sources[j] for j in idx], pad).to(device)
            with autocast():
                gen = model.generate(input_ids=ids, attention_mask=(ids != pad).long(), max_new_tokens=max_new_tokens,
                                     num_beams=num_beams, do_sample=False, early_stopping=num_beams > 1)
            for j, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
                out[j] = text.strip()
    return out


def score(hyps: list[str], refs: list[str], tokenize: str) -> dict[str, Any]:
    """sacreBLEU corpus BLEU (with its signature, BP, n-gram precisions, lengths) and chrF."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": b.score, "bleu_signature": str(bleu.get_signature()), "bp": b.bp,
            "precisions": list(b.precisions), "sys_len": b.sys_len, "ref_len": b.ref_len,
            "chrf": c.score, "chrf_signature": str(chrf.get_signature())}


def run(task) -> None:
    from transformers import T5ForConditionalGeneration

    from pipeline.sources import get_source

    spec = task.spec
    cfg = spec["evaluate"]
    out = Path(task.dir)
    rt = setup_runtime("auto", "none")
    best = Path(spec["finetune_dir"]) / "best"
    tokenizer = load_tokenizer(best)
    model = T5ForConditionalGeneration.from_pretrained(str(best)).to(rt.device)
    source = get_source(data_config(spec["data"]), Path(spec["cache"]))
    rows = test_rows(source, spec["pair"], cfg["test_size"])
    src, tgt = spec["src"], spec["tgt"]
    # References are scored in full (a generous cap only guards memory); sources as in finetuning.
    s_ids, t_ids = encode_pairs(tokenizer, rows, src, tgt, spec["task_prefix"], spec["max_source_length"], 1024)
    t0 = time.time()
    ce, n_tok = reference_ce(model, s_ids, t_ids, tokenizer.pad_token_id, cfg["batch_size"], rt.device, rt.autocast)
    t_ce = time.time() - t0
    hyps = generate(model, tokenizer, s_ids, cfg["batch_size"], cfg["max_new_tokens"], cfg["num_beams"], rt.device,
                    rt.autocast)
    t_gen = time.time() - t0 - t_ce
    refs = [r[tgt] for r in rows]
    metrics = score(hyps, refs, cfg["bleu_tokenize"])
    gen_len = [len(x) for x in tokenizer(hyps, add_special_tokens=False).input_ids]
    metrics.update({
        "ce": ce, "ce_tokens": n_tok, "n_test": len(rows), "gen_len_mean": float(np.mean(gen_len)) if gen_len else 0.0,
        "hit_max_new_tokens": int(sum(n >= cfg["max_new_tokens"] for n in gen_len)),
        "num_beams": cfg["num_beams"], "max_new_tokens": cfg["max_new_tokens"],
        "seconds_ce": t_ce, "seconds_generate": t_gen, "sentences_per_s": len(rows) / max(t_gen, 1e-9),
        "device": str(rt.device),
    })
    atomic_write_text(out / "predictions.jsonl", "".join(
        json.dumps({"source": r[src], "reference": r[tgt], "hypothesis": h}, ensure_ascii=False) + "\n"
        for r, h in zip(rows, hyps)))
    atomic_write_json(out / "metrics.json", metrics)
    log.info("%s: BLEU %.2f chrF %.2f CE %.4f (%d sentences, %.1f sentences/s)", task.name, metrics["bleu"],
             metrics["chrf"], ce, len(rows), metrics["sentences_per_s"])
