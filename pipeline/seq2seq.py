"""Translation pairs as model inputs, shared by finetuning and evaluation: token ids of the prefixed sources
and the targets, padded batches (labels padded with -100), and the references' teacher-forced cross-entropy."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.artifacts import atomic_dir, stable_hash

log = logging.getLogger(__name__)
POOL_FORMAT = 1  # bump when the cached encoding changes
POOL_CHUNK = 10_000  # pairs a tokenizer call while a pool is encoded


def encode_pairs(tokenizer, rows: list[dict[str, str]], src: str, tgt: str, prefix: str, max_src: int,
                 max_tgt: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids (EOS included, truncated keeping EOS) of the prefixed sources and of the targets."""
    def enc(texts: list[str], n: int) -> list[list[int]]:
        return [x[: n - 1] + [tokenizer.eos_token_id] if len(x) > n else x
                for x in tokenizer(texts, add_special_tokens=True).input_ids]

    return (enc([prefix + r[src] for r in rows], max_src), enc([r[tgt] for r in rows], max_tgt))


class EncodedPool:
    """A training pool's pairs encoded once (`encode_pairs` over every pair) and memory-mapped: every cell of the
    task takes its Df subset from it instead of re-tokenizing the pool. Cached under
    `<cache>/pairs/<pair>-<hash>/` by content: the data's identity, the split, the tokenizer's own serialisation
    and the encoding settings, so any change gives a new entry and an unchanged pool is encoded once."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.meta = json.loads((self.dir / "meta.json").read_text())
        self._src = _ragged(self.dir, "src")
        self._tgt = _ragged(self.dir, "tgt")

    def __len__(self) -> int:
        return int(self.meta["pairs"])

    def take(self, idx: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
        """Token ids of the pairs at `idx`, in that order: what `encode_pairs` gives for those rows."""
        return ([_row(self._src, int(i)) for i in idx], [_row(self._tgt, int(i)) for i in idx])

    @classmethod
    def get(cls, source: Any, pair: str, split: str, tokenizer, cache: Path, *, src: str, tgt: str, prefix: str,
            max_src: int, max_tgt: int) -> EncodedPool:
        key = {"format": POOL_FORMAT, "data": source.identity(), "pair": pair, "split": split, "src": src, "tgt": tgt,
               "prefix": prefix, "max_src": max_src, "max_tgt": max_tgt, "tokenizer": tokenizer_hash(tokenizer)}
        d = Path(cache) / "pairs" / f"{pair}-{split}-{stable_hash(key, 16)}"
        if not (d / "meta.json").is_file():
            import fcntl

            d.parent.mkdir(parents=True, exist_ok=True)
            with open(d.parent / f".{d.name}.lock", "a+") as lock:  # cells started together encode it once
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not (d / "meta.json").is_file():
                    for stale in d.parent.glob(f".{d.name}.*.tmp"):  # a killed encoding's half-written copy
                        shutil.rmtree(stale, ignore_errors=True)
                    _encode_pool(d, source.parallel(pair, split), tokenizer, key, src=src, tgt=tgt, prefix=prefix,
                                 max_src=max_src, max_tgt=max_tgt)
        return cls(d)


def tokenizer_hash(tokenizer) -> str:
    """The tokenizer's content (its serialised model, normaliser and specials), not where it was loaded from."""
    h = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.eos_token_id], sort_keys=True).encode())
    return h.hexdigest()


def _encode_pool(d: Path, pool, tokenizer, key: dict[str, Any], **enc) -> None:
    n = len(pool)
    log.info("encoding the %s %s pool once for every cell (%s pairs) into %s", key["pair"], key["split"], f"{n:,}", d)
    dtype = np.uint16 if len(tokenizer) <= 2**16 else np.uint32
    with atomic_dir(d) as tmp:
        with contextlib.ExitStack() as files:
            out = {side: files.enter_context(open(tmp / f"{side}.bin", "wb")) for side in ("src", "tgt")}
            lens: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
            for i in range(0, n, POOL_CHUNK):
                rows = pool[i:i + POOL_CHUNK]["translation"]
                for side, ids in zip(("src", "tgt"), encode_pairs(tokenizer, rows, **enc)):
                    np.fromiter((t for x in ids for t in x), dtype=dtype).tofile(out[side])
                    lens[side].append(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)))
        for side in ("src", "tgt"):
            ends = np.concatenate([np.zeros(1, np.int64), *lens[side]]).cumsum()
            np.save(tmp / f"{side}.idx.npy", ends)
        (tmp / "meta.json").write_text(json.dumps({"pairs": n, "dtype": np.dtype(dtype).name, "key": key}, indent=1))


def _ragged(d: Path, side: str) -> tuple[np.ndarray, np.ndarray]:
    meta = json.loads((d / "meta.json").read_text())
    ends = np.load(d / f"{side}.idx.npy", mmap_mode="r")
    f = d / f"{side}.bin"
    ids = np.memmap(f, dtype=meta["dtype"], mode="r") if f.stat().st_size else np.zeros(0, meta["dtype"])
    return ids, ends


def _row(ragged: tuple[np.ndarray, np.ndarray], i: int) -> list[int]:
    ids, ends = ragged
    return ids[int(ends[i]):int(ends[i + 1])].tolist()


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
