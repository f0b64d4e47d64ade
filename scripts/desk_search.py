"""The desk-scale regime search: one (model shape, vocabulary, recipe) trained on en->de pairs for a CPU-time
budget, with BLEU/chrF and cross-entropy against CPU minutes. It answers how much compute translation costs
before a whole study is sized (docs/results-desk.md records every run).

    python scripts/desk_search.py --name d256x3 --d-model 256 --layers 3 --vocab 4000 --minutes 30 \
        --out $HOME/ds/search

Scores, at every evaluation, two held-out sets: the corpus's test set (whole unseen packages) and the in-domain
set carved from the training pool (pipeline.corpus.indomain), each a fixed sample of `--test-size` pairs.
`python scripts/desk_search.py --table OUT` prints every run in OUT as a markdown table.
Writes <out>/<name>.jsonl (one line per evaluation) and prints it; <out>/<name>-state/step-*/ is the finetuning
stage's resumable checkpoint at the last evaluations, so the same command with a larger --minutes continues the
run (the same data order; a run an older version saved as <out>/<name>.pt continues from that). The pipeline's own
pieces do the work (tokenizer, model, fused loss, batching, the finetuning stage's training step
`finetune.train_step`, the learning rate `training.learning_rate`, the stages' checkpoints, greedy decoding,
sacreBLEU), so what wins here is what the stages run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.corpus.indomain import indomain_split
from pipeline.distributed import Runtime
from pipeline.evaluate import TEST_SEED, decode, generate_ids, score
from pipeline.finetune import epoch_batches, nested_subset, train_step
from pipeline.model import ModelPreset, Seq2SeqLoss, build_model, count_params, use_fused_kernels
from pipeline.seq2seq import encode_pairs, pad_batch, reference_ce
from pipeline.tokenizer import sample_lines, train_tokenizer
from pipeline.training import (
    capture_rng,
    latest_checkpoint,
    learning_rate,
    load_training_checkpoint,
    make_optimizer,
    restore_rng,
    retain,
    save_training_checkpoint,
    step_dir,
)


def jsonl(path: Path, key: str | None = None) -> list:
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r[key] for r in rows] if key else rows


def tokenizer_for(corpus: Path, vocab: int, langs: list[str], cache: Path, lines: int):
    from transformers import AutoTokenizer

    path = cache / f"tok-{'-'.join(langs)}-{vocab}-{lines}"
    if not (path / "tokenizer.json").exists():
        samples = [sample_lines((d["text"] for d in jsonl(corpus / "mono" / f"{lang}.jsonl")), lines, seed=i)
                   for i, lang in enumerate(langs)]
        mixed = [x for group in zip(*samples) for x in group]
        train_tokenizer(mixed, vocab).save_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))


def split_for(pairs: list[tuple[str, str]], cache: Path, n_test: int, n_val: int) -> dict[str, np.ndarray]:
    path = cache / f"indomain-{len(pairs)}-{n_test}-{n_val}.npz"
    if not path.exists():
        np.savez(path, **indomain_split(pairs, n_test, n_val, "indomain-v1"))
    return dict(np.load(path))


def table(out: Path) -> str:
    """Every run in `out` as a markdown table: its settings, and per evaluation the CPU minutes, epochs, in-domain
    validation CE, in-domain and unseen-package BLEU/chrF (docs/results-desk.md prints this)."""
    lines = ["| run | parameters | settings | CPU min | epochs | val CE | in-domain BLEU / chrF | package BLEU / chrF |",
             "|---|---|---|---|---|---|---|---|"]
    for f in sorted(out.glob("*.jsonl")):
        rows = jsonl(f)
        head = rows[0]
        evals = [r for i, r in enumerate(rows[1:]) if i == 0 or r["step"] != rows[i]["step"]]  # a repeated last one
        a = head["args"]
        params = f"{head['params']['total'] / 1e6:.2f}M"
        settings = (f"d{a['d_model']} {a['layers']}+{a['layers']}, vocab {a['vocab']}, batch {a['batch']}, lr {a['lr']} "
                    f"{a['schedule']} (warmup {a['warmup']}), dropout {a['dropout']}")
        for i, r in enumerate(evals):
            lines.append(f"| {head['name'] if i == 0 else ''} | "
                         f"{params if i == 0 else ''} | "
                         f"{settings if i == 0 else ''} | {r['cpu_min']:.0f} | {r['epochs']:.2f} | {r['val_ce']:.3f} | "
                         f"{r['id_bleu']:.2f} / {r['id_chrf']:.1f} | {r['pkg_bleu']:.2f} / {r['pkg_chrf']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        print(table(Path(sys.argv[2])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("DS_CACHE", ".cache")) / "l10n")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ff-mult", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--tok-lines", type=int, default=50000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--schedule", choices=["constant", "inverse_sqrt"], default="inverse_sqrt")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--df", type=int, default=0, help="training pairs (0: the whole in-domain training pool)")
    ap.add_argument("--minutes", type=float, default=30.0, help="CPU-time budget of training (evaluation excluded)")
    ap.add_argument("--eval-minutes", type=float, default=6.0)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    cache.mkdir(exist_ok=True)

    tok = tokenizer_for(args.corpus, args.vocab, ["en", "de"], cache, args.tok_lines)
    pairs = args.corpus / "pairs" / "en-de"
    rows = jsonl(pairs / "train.jsonl", "translation")
    if (pairs / "test_indomain.jsonl").exists():  # a corpus that has its own in-domain sets (builder version 2)
        pool, id_test, id_val = rows, jsonl(pairs / "test_indomain.jsonl", "translation"), \
            jsonl(pairs / "validation_indomain.jsonl", "translation")
    else:
        split = split_for([(r["en"], r["de"]) for r in rows], cache, 2000, 1000)
        pool, id_test, id_val = ([rows[i] for i in split[k]] for k in ("train", "test", "validation"))
    train = pool if not args.df else [pool[i] for i in nested_subset(len(pool), args.df, args.seed)]
    pkg = jsonl(pairs / "test.jsonl", "translation")
    pkg = [pkg[i] for i in np.sort(np.random.default_rng(TEST_SEED).choice(len(pkg), args.test_size, replace=False))]
    tests = {"id": id_test[: args.test_size], "pkg": pkg}
    val = id_val[:256]
    enc = dict(tokenizer=tok, src="en", tgt="de", prefix="", max_src=args.max_len, max_tgt=args.max_len)
    tr_s, tr_t = encode_pairs(rows=train, **enc)
    va_s, va_t = encode_pairs(rows=val, **enc)
    te = {k: encode_pairs(rows=v, **{**enc, "max_tgt": 1024}) for k, v in tests.items()}

    preset = ModelPreset(args.name, args.d_model, args.d_model // args.heads, args.heads, args.ff_mult * args.d_model,
                         args.layers, args.layers, "gated-gelu", False)
    model = use_fused_kernels(build_model(preset, len(tok), dropout_rate=args.dropout, seed=args.seed)).train()
    params = count_params(preset, len(tok))
    loss_fn = Seq2SeqLoss(model)
    opt = make_optimizer(model.parameters(), "adamw", args.lr, (0.9, 0.98), 0.0)
    rt = Runtime(device=torch.device("cpu"), dtype="fp32")  # one process on the CPU, as the search is timed

    lengths = np.array([len(a) + len(b) for a, b in zip(tr_s, tr_t)])
    spe = math.ceil(len(tr_s) / args.batch)
    log_path, state_root = args.out / f"{args.name}.jsonl", args.out / f"{args.name}-state"
    legacy = args.out / f"{args.name}.pt"  # the state an older desk_search kept, before it used the stages' checkpoints
    step, cpu = 0, 0.0
    resume = latest_checkpoint(state_root)
    if resume is not None:  # a longer budget for the same name continues the run where it stopped
        state = load_training_checkpoint(resume, loss_fn, opt)
        restore_rng(state["rng"])
        step, cpu = state["loop"]["step"], state["loop"]["cpu"]
    elif legacy.exists():  # read once; its next evaluation writes the checkpoint above
        state = torch.load(legacy, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["rng"])
        step, cpu = state["step"], state["cpu"]
    else:
        log_path.unlink(missing_ok=True)
    if step:
        print(f"resuming {args.name} at step {step}, {cpu:.1f} CPU minutes", flush=True)
    header = {"name": args.name, "args": {k: str(v) for k, v in vars(args).items()}, "params": params,
              "train_pairs": len(tr_s), "train_tokens": int(lengths.sum()), "threads": torch.get_num_threads()}
    print(json.dumps(header), flush=True)
    if not step:
        with open(log_path, "a") as f:
            f.write(json.dumps(header) + "\n")

    def evaluate(step: int, cpu_min: float, train_loss: float) -> None:
        t0 = time.process_time()
        val_ce, _ = reference_ce(model, va_s, va_t, tok.pad_token_id, 128, torch.device("cpu"), torch.no_grad)
        rec = {"step": step, "cpu_min": round(cpu_min, 2), "epochs": round(step / spe, 3), "train_loss": train_loss,
               "val_ce": val_ce}
        for k, (s, t) in te.items():
            ce, _ = reference_ce(model, s, t, tok.pad_token_id, 128, torch.device("cpu"), torch.no_grad)
            gen = generate_ids(model, s, tok.pad_token_id, tok.eos_token_id, 128, 64, 1, torch.device("cpu"),
                               torch.no_grad)
            hyps = decode(tok, pad_batch(gen, tok.pad_token_id))
            m = score(hyps, [r["de"] for r in tests[k]], "13a")
            rec.update({f"{k}_bleu": round(m["bleu"], 2), f"{k}_chrf": round(m["chrf"], 2), f"{k}_ce": round(ce, 4)})
            if k == "id":
                rec["sample"] = hyps[:3]
        model.train()
        rec["eval_cpu_min"] = round((time.process_time() - t0) / 60, 2)
        print(json.dumps(rec, ensure_ascii=False), flush=True)
        with open(log_path, "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        save_training_checkpoint(rt, step_dir(state_root, step), loss_fn, opt, None,
                                 {"rng": capture_rng(), "loop": {"step": step, "cpu": cpu_min}}, {"step": step})
        retain(state_root)

    loss_ema, next_eval = float("nan"), (math.floor(cpu / args.eval_minutes) + 1) * args.eval_minutes
    batches: list[np.ndarray] = []
    while cpu < args.minutes:
        epoch, k = divmod(step, spe)
        if k == 0 or not batches:
            batches = epoch_batches(lengths, args.batch, args.seed, epoch)
        t0 = time.process_time()
        lr = learning_rate(step, args.lr, args.schedule, args.warmup)
        loss = train_step(loss_fn, rt, opt, lr, batches[k], tr_s, tr_t, tok.pad_token_id, None, 1.0)
        step += 1
        cpu += (time.process_time() - t0) / 60
        loss_ema = loss.item() if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * loss.item()
        if cpu >= next_eval:
            evaluate(step, cpu, loss_ema)
            next_eval += args.eval_minutes
    if cpu - (next_eval - args.eval_minutes) > 0.5:  # the budget's end, unless an evaluation was just made
        evaluate(step, cpu, loss_ema)


if __name__ == "__main__":
    main()
