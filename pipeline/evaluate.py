"""Stage `evaluate`: BLEU and chrF (sacrebleu, called directly, signature stored) and downstream
cross-entropy of a finetuned cell on the held-out test set; predictions written beside the metrics.

The test sample is the same for every cell (a fixed seed, independent of the cell). Generation runs in
length-sorted batches with an explicit cap per sentence (never the library's silent 20-token default): as NMT
toolkits set it, `max_len_a`·(source tokens) + `max_len_b`, never above `max_new_tokens`; a sentence that reaches
its cap stops there (greedy) or is made to end there (beam search, as fairseq does). -100 (the label padding) is
replaced by pad before anything is decoded.

Beside BLEU, two numbers say whether BLEU measures translation or decoding accidents: `len_ratio`, the output's
length over the reference's (sacreBLEU's sys_len / ref_len, the ratio its brevity penalty reads), and `runaway`,
the share of outputs that ran away (`runaway`: hit the cap, or longer than `runaway_ratio` × the reference with an
n-gram loop).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline import greedy
from pipeline.artifacts import atomic_write_json, atomic_write_text, read_json
from pipeline.config import DataConfig, EvaluateConfig, TrackingConfig
from pipeline.distributed import setup_runtime
from pipeline.metrics import METRICS
from pipeline.model import load_model
from pipeline.precision import decode_dtype
from pipeline.seq2seq import encode_pairs, pad_batch, reference_ce
from pipeline.typed import Spec
from pipeline.vocab import load_tokenizer

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


def _force_eos_at_cap(caps: torch.Tensor, eos_id: int, num_beams: int):
    """A logits processor for `generate`: a row that has generated its cap of tokens may only emit EOS (fairseq's
    rule at max_len), so beam search ends its hypotheses there and scores them as ended. The EOS forced in is
    cut by `generate_ids` (the row reads as one that hit its cap, as in greedy's loop)."""
    from transformers import LogitsProcessor

    per_beam = caps.repeat_interleave(num_beams)

    class ForceEos(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            done = per_beam.to(scores.device) <= input_ids.shape[1] - 1  # tokens generated (less the start)
            if done.any():
                eos = scores[:, eos_id].clone()
                scores = scores.masked_fill(done[:, None], float("-inf"))
                scores[:, eos_id] = eos
            return scores

    return ForceEos()


def generate_ids(model, sources: list[list[int]], pad_id: int, eos_id: int, batch_size: int,
                 max_new_tokens: int | Sequence[int], num_beams: int, device, autocast,
                 length_penalty: float = 1.0) -> list[list[int]]:
    """Generated token ids per source, in the input order, without the decoder start, cut after EOS or at the
    source's cap (`max_new_tokens`: one for all, or one per source). Batches are sorted by source length (longest
    first) so padding stays small. Greedy search on a T5 runs `pipeline.greedy` (the same tokens as `generate`,
    without its per-token overhead); beam search scores hypotheses by log-probability / length**length_penalty."""
    caps = [max_new_tokens] * len(sources) if isinstance(max_new_tokens, int) else [int(c) for c in max_new_tokens]
    order = np.argsort([len(s) for s in sources], kind="stable")[::-1]
    out: list[list[int]] = [[] for _ in sources]
    model.eval()
    fast = num_beams == 1 and greedy.supported(model)
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids = pad_batch([sources[j] for j in idx], pad_id).to(device)
            cap = [caps[j] for j in idx]
            with autocast():
                if fast:
                    rows = greedy.greedy_ids(model, ids, (ids != pad_id).long(), cap, eos_id)
                else:
                    from transformers import LogitsProcessorList

                    gen = model.generate(input_ids=ids, attention_mask=(ids != pad_id).long(),
                                         max_new_tokens=max(cap) + 1, min_new_tokens=0, num_beams=num_beams,
                                         do_sample=False, early_stopping=num_beams > 1,
                                         length_penalty=length_penalty, logits_processor=LogitsProcessorList(
                                             [_force_eos_at_cap(torch.tensor(cap), eos_id, num_beams)]))
                    rows = [r[: r.index(eos_id) + 1] if eos_id in r[:c] else r[:c]
                            for r, c in zip(gen[:, 1:].tolist(), cap)]
            for j, row in zip(idx, rows):
                out[j] = row
    return out


def generate(model, tokenizer, sources: list[list[int]], batch_size: int, max_new_tokens: int | Sequence[int],
             num_beams: int, device, autocast, length_penalty: float = 1.0) -> list[str]:
    """Decoded hypotheses in the input order (see generate_ids)."""
    ids = generate_ids(model, sources, tokenizer.pad_token_id, tokenizer.eos_token_id, batch_size, max_new_tokens,
                       num_beams, device, autocast, length_penalty)
    return decode(tokenizer, pad_batch(ids, tokenizer.pad_token_id)) if ids else []


def loops(words: Sequence[str], repeats: int, longest: int = 4) -> bool:
    """True when some n-gram (n <= `longest` words) occurs `repeats` times in a row ("der Liste der Liste der
    Liste" for n = 2, repeats = 3)."""
    for n in range(1, longest + 1):
        for i in range(len(words) - n * repeats + 1):
            unit = words[i:i + n]
            if all(words[i + k * n:i + (k + 1) * n] == unit for k in range(1, repeats)):
                return True
    return False


def runaway(hyp: str, ref: str, hit_cap: bool, ratio: float, repeats: int) -> bool:
    """A runaway output: it reached its generation cap without EOS, or it is longer than `ratio` × its reference
    (whitespace words) and loops (an n-gram of <= 4 words `repeats` times in a row). A long output without a loop
    (a verbose but real translation) and a loop no longer than the reference ("sehr sehr sehr") are not."""
    words = hyp.split()
    return hit_cap or (len(words) > ratio * len(ref.split()) and loops(words, repeats))


def score(hyps: list[str], refs: list[str], tokenize: str) -> dict[str, Any]:
    """sacreBLEU corpus BLEU (with its signature, BP, n-gram precisions, lengths) and chrF."""
    from sacrebleu.metrics import BLEU, CHRF

    bleu, chrf = BLEU(tokenize=tokenize), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": b.score, "bleu_signature": str(bleu.get_signature()), "bp": b.bp,
            "precisions": list(b.precisions), "sys_len": b.sys_len, "ref_len": b.ref_len,
            "chrf": c.score, "chrf_signature": str(chrf.get_signature())}


# The computation of each metric declared in pipeline.metrics that `score` and the reference CE do not give:
# name -> f(sources, hypotheses, references) -> its corpus-level value on the split. A new metric is its
# declaration there and its function here (docs/ARCHITECTURE.md, "How to add a metric").
Scorer = Callable[[Sequence[str], Sequence[str], Sequence[str]], float]
SCORERS: dict[str, Scorer] = {}


def measure(sources: Sequence[str], hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """The SCORERS' metrics of one split's outputs."""
    return {name: float(f(sources, hyps, refs)) for name, f in SCORERS.items()}


def unmeasured(metrics: dict[str, Any]) -> list[str]:
    """The declared metrics (pipeline.metrics) a split's metrics lack: declared with no computation here."""
    return [name for name in METRICS if name not in metrics]


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
    # The cell's reference CE is scored in the precision it was trained in (pipeline.sweep_precision decided it);
    # its decoding in `decode_dtype`'s (fp32 on a CPU: bf16 decoding is slower there).
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
    caps = [cfg.cap(len(s)) for s in s_ids]
    dec_dtype = decode_dtype(rt.dtype, rt.device)
    dec_autocast = rt.autocast if dec_dtype == rt.dtype else contextlib.nullcontext
    gen = generate_ids(model, s_ids, tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.batch_size,
                       caps, cfg.num_beams, rt.device, dec_autocast, cfg.length_penalty)
    hyps = decode(tokenizer, pad_batch(gen, tokenizer.pad_token_id))
    t_gen = time.time() - t0 - t_ce
    refs = [r[tgt] for r in rows]
    metrics = score(hyps, refs, cfg.bleu_tokenize) | measure([r[src] for r in rows], hyps, refs)
    gen_len = [len(g) for g in gen]
    hit = [tokenizer.eos_token_id not in g for g in gen]
    ran = [runaway(h, r, c, cfg.runaway_ratio, cfg.runaway_repeats) for h, r, c in zip(hyps, refs, hit)]
    metrics.update({
        "ce": ce, "ce_tokens": n_tok, "n_test": len(rows), "gen_len_mean": float(np.mean(gen_len)) if gen_len else 0.0,
        "len_ratio": metrics["sys_len"] / metrics["ref_len"] if metrics["ref_len"] else float("nan"),
        "runaway": float(np.mean(ran)) if ran else 0.0, "runaway_n": int(sum(ran)), "hit_cap": int(sum(hit)),
        "num_beams": cfg.num_beams, "length_penalty": cfg.length_penalty, "max_new_tokens": cfg.max_new_tokens,
        "max_len_a": cfg.max_len_a, "max_len_b": cfg.max_len_b,
        "seconds_ce": t_ce, "seconds_generate": t_gen, "sentences_per_s": len(rows) / max(t_gen, 1e-9),
        "device": str(rt.device), "dtype": rt.dtype, "decode_dtype": dec_dtype,
    })
    missing = unmeasured(metrics)
    if missing:
        raise RuntimeError(f"metric(s) {', '.join(missing)} declared in pipeline.metrics but not computed: add "
                           "the computation to pipeline.evaluate.SCORERS")
    return metrics, rows, hyps


def write_predictions(path: Path, sources: list[str], refs: list[str], hyps: list[str]) -> None:
    """One line per test sentence (source, reference, hypothesis), for a person and for the significance tests."""
    atomic_write_text(path, "".join(json.dumps({"source": s, "reference": r, "hypothesis": h}, ensure_ascii=False)
                                    + "\n" for s, r, h in zip(sources, refs, hyps)))


def write_outputs(out: Path, sources: list[str], refs: list[str], hyps: list[str], metrics: dict[str, Any]) -> None:
    """predictions.jsonl and metrics.json, each replaced atomically; metrics last (its presence means done)."""
    write_predictions(Path(out) / "predictions.jsonl", sources, refs, hyps)
    atomic_write_json(Path(out) / "metrics.json", metrics)
