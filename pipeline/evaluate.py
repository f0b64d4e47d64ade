"""Stage `evaluate`: BLEU and chrF (sacrebleu, called directly, signature stored) and downstream
cross-entropy of a finetuned cell on the held-out test set; predictions written beside the metrics.

The test sample is the same for every cell (a fixed seed, independent of the cell). Generation runs in
length-sorted batches with an explicit `max_new_tokens` (never the library's silent 20-token default);
-100 (the label padding) is replaced by pad before anything is decoded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import greedy
from pipeline.artifacts import atomic_write_json, atomic_write_text, read_json
from pipeline.config import DataConfig, EvaluateConfig, TrackingConfig
from pipeline.model import load_model
from pipeline.seq2seq import encode_pairs, pad_batch, reference_ce
from pipeline.tokenizer import load_tokenizer
from pipeline.training import setup_runtime
from pipeline.typed import Spec

log = logging.getLogger(__name__)
TEST_SEED = 20_240_207


def test_rows(source, pair: str, size: int | None, split: str = "test") -> list[dict[str, str]]:
    test = source.parallel(pair, split)
    if size is not None and size < len(test):
        idx = np.sort(np.random.default_rng(TEST_SEED).choice(len(test), size=size, replace=False))
        test = test.select(idx)
    return [r["translation"] for r in test]


def decode(tokenizer, ids) -> list[str]:
    """Texts of a batch of token ids. Labels carry -100 where they are padded (the loss ignores it); the
    tokenizer cannot decode it, so it becomes pad, which skip_special_tokens drops."""
    ids = torch.as_tensor(ids)
    ids = torch.where(ids == -100, torch.full_like(ids, tokenizer.pad_token_id), ids)
    return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def generate_ids(model, sources: list[list[int]], pad_id: int, eos_id: int, batch_size: int, max_new_tokens: int,
                 num_beams: int, device, autocast) -> list[list[int]]:
    """Generated token ids per source, in the input order, without the decoder start and cut after EOS.
    Batches are sorted by source length (longest first) so padding stays small. Greedy search on a T5
    runs `pipeline.greedy` (the same tokens as `generate`, without its per-token overhead)."""
    order = np.argsort([len(s) for s in sources], kind="stable")[::-1]
    out: list[list[int]] = [[] for _ in sources]
    model.eval()
    fast = num_beams == 1 and greedy.supported(model)
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids = pad_batch([sources[j] for j in idx], pad_id).to(device)
            with autocast():
                if fast:
                    rows = greedy.greedy_ids(model, ids, (ids != pad_id).long(), max_new_tokens, eos_id)
                else:
                    gen = model.generate(input_ids=ids, attention_mask=(ids != pad_id).long(),
                                         max_new_tokens=max_new_tokens, min_new_tokens=0, num_beams=num_beams,
                                         do_sample=False, early_stopping=num_beams > 1)
                    rows = [r[: r.index(eos_id) + 1] if eos_id in r else r for r in gen[:, 1:].tolist()]
            for j, row in zip(idx, rows):
                out[j] = row
    return out


def generate(model, tokenizer, sources: list[list[int]], batch_size: int, max_new_tokens: int, num_beams: int,
             device, autocast) -> list[str]:
    """Decoded hypotheses in the input order (see generate_ids)."""
    ids = generate_ids(model, sources, tokenizer.pad_token_id, tokenizer.eos_token_id, batch_size, max_new_tokens,
                       num_beams, device, autocast)
    return decode(tokenizer, pad_batch(ids, tokenizer.pad_token_id)) if ids else []


def score(hyps: list[str], refs: list[str], tokenize: str) -> dict[str, Any]:
    """sacreBLEU corpus BLEU (with its signature, BP, n-gram precisions, lengths) and chrF."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": b.score, "bleu_signature": str(bleu.get_signature()), "bp": b.bp,
            "precisions": list(b.precisions), "sys_len": b.sys_len, "ref_len": b.ref_len,
            "chrf": c.score, "chrf_signature": str(chrf.get_signature())}


@dataclass(frozen=True)
class EvaluateSpec(Spec):
    config: dict[str, Any]  # identity: evaluate settings, pair, data identity
    evaluate: EvaluateConfig
    pair: str
    src: str
    tgt: str
    finetune_dir: str  # the cell's finetune task directory (its `best/` is evaluated)
    task_prefix: str  # as in finetuning
    max_source_length: int
    data: DataConfig
    cache: str
    tracking: TrackingConfig


def run(task) -> None:
    from pipeline.sources import get_source

    spec: EvaluateSpec = task.spec
    cfg = spec.evaluate
    out = Path(task.dir)
    # The cell is evaluated in the precision it was trained in (pipeline.plan.sweep_precision decided it).
    trained = read_json(Path(spec.finetune_dir) / "finetune.json") if (Path(spec.finetune_dir) / "finetune.json").exists() else {}
    rt = setup_runtime(trained.get("dtype", "auto"), "none")
    best = Path(spec.finetune_dir) / "best"
    tokenizer = load_tokenizer(best)
    model = load_model(best).to(rt.device).eval()
    source = get_source(spec.data, Path(spec.cache))
    splits = cfg.test_splits
    results = [score_split(model, tokenizer, source, spec, split, rt) for split in splits]
    metrics = {**results[0][0], "test_split": splits[0]}
    if len(results) > 1:  # the second held-out set: its own predictions file, its numbers under "other"
        other, rows, hyps = results[1]
        metrics["other"] = {**other, "test_split": splits[1]}
        write_predictions(out / f"predictions-{splits[1]}.jsonl", [r[spec.src] for r in rows],
                          [r[spec.tgt] for r in rows], hyps)
    _, rows, hyps = results[0]
    write_outputs(out, [r[spec.src] for r in rows], [r[spec.tgt] for r in rows], hyps, metrics)
    for (m, _, _), split in zip(results, splits):
        log.info("%s: %s BLEU %.2f chrF %.2f CE %.4f (%d sentences, %.1f sentences/s)", task.name, split, m["bleu"],
                 m["chrf"], m["ce"], m["n_test"], m["sentences_per_s"])


def score_split(model, tokenizer, source, spec: EvaluateSpec, split: str,
                rt) -> tuple[dict[str, Any], list[dict[str, str]], list[str]]:
    """BLEU, chrF and reference CE of one held-out split; with its rows and hypotheses."""
    cfg = spec.evaluate
    rows = test_rows(source, spec.pair, cfg.test_size, split)
    src, tgt = spec.src, spec.tgt
    # References are scored in full (a generous cap only guards memory); sources as in finetuning.
    s_ids, t_ids = encode_pairs(tokenizer, rows, src, tgt, spec.task_prefix, spec.max_source_length, 1024)
    t0 = time.time()
    ce, n_tok = reference_ce(model, s_ids, t_ids, tokenizer.pad_token_id, cfg.batch_size, rt.device, rt.autocast)
    t_ce = time.time() - t0
    gen = generate_ids(model, s_ids, tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.batch_size,
                       cfg.max_new_tokens, cfg.num_beams, rt.device, rt.autocast)
    hyps = decode(tokenizer, pad_batch(gen, tokenizer.pad_token_id))
    t_gen = time.time() - t0 - t_ce
    metrics = score(hyps, [r[tgt] for r in rows], cfg.bleu_tokenize)
    gen_len = [len(g) for g in gen]
    metrics.update({
        "ce": ce, "ce_tokens": n_tok, "n_test": len(rows), "gen_len_mean": float(np.mean(gen_len)) if gen_len else 0.0,
        "hit_max_new_tokens": int(sum(tokenizer.eos_token_id not in g for g in gen)),
        "num_beams": cfg.num_beams, "max_new_tokens": cfg.max_new_tokens,
        "seconds_ce": t_ce, "seconds_generate": t_gen, "sentences_per_s": len(rows) / max(t_gen, 1e-9),
        "device": str(rt.device), "dtype": rt.dtype,
    })
    return metrics, rows, hyps


def write_predictions(path: Path, sources: list[str], refs: list[str], hyps: list[str]) -> None:
    """One line per test sentence (source, reference, hypothesis), for a person and for the significance tests."""
    atomic_write_text(path, "".join(json.dumps({"source": s, "reference": r, "hypothesis": h}, ensure_ascii=False)
                                    + "\n" for s, r, h in zip(sources, refs, hyps)))


def write_outputs(out: Path, sources: list[str], refs: list[str], hyps: list[str], metrics: dict[str, Any]) -> None:
    """predictions.jsonl and metrics.json, each replaced atomically; metrics last (its presence means done)."""
    write_predictions(Path(out) / "predictions.jsonl", sources, refs, hyps)
    atomic_write_json(Path(out) / "metrics.json", metrics)
