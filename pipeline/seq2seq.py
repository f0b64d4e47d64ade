"""Translation pairs as model inputs, shared by finetuning and evaluation: token ids of the prefixed sources
and the targets, padded batches (labels padded with -100), and the references' teacher-forced cross-entropy."""

from __future__ import annotations

import numpy as np
import torch


def encode_pairs(tokenizer, rows: list[dict[str, str]], src: str, tgt: str, prefix: str, max_src: int,
                 max_tgt: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids (EOS included, truncated keeping EOS) of the prefixed sources and of the targets."""
    def enc(texts: list[str], n: int) -> list[list[int]]:
        return [x[: n - 1] + [tokenizer.eos_token_id] if len(x) > n else x
                for x in tokenizer(texts, add_special_tokens=True).input_ids]

    return (enc([prefix + r[src] for r in rows], max_src), enc([r[tgt] for r in rows], max_tgt))


def pad_batch(seqs: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(src: list[list[int]], tgt: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids = pad_batch(src, pad_id)
    return {"input_ids": ids, "attention_mask": (ids != pad_id).long() if pad_id is not None else None,
            "labels": pad_batch(tgt, -100)}


def reference_ce(model, src: list[list[int]], tgt: list[list[int]], pad_id: int, batch_size: int, device,
                 autocast) -> tuple[float, int]:
    """Token-mean negative log-likelihood of the references under teacher forcing, and the token count.
    Batches are sorted by length so padding stays small; -100 labels are ignored."""
    order = np.argsort([len(s) + len(t) for s, t in zip(src, tgt)], kind="stable")
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            b = collate([src[j] for j in idx], [tgt[j] for j in idx], pad_id)
            b = {k: v.to(device) for k, v in b.items()}
            with autocast():
                logits = model(**b).logits
            nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), b["labels"].flatten(),
                                                    ignore_index=-100, reduction="sum")
            total += nll.item()
            count += int((b["labels"] != -100).sum())
    model.train(was_training)
    return total / max(count, 1), count
