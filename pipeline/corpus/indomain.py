"""An in-domain held-out set carved from a training pool, with nothing near it left in training.

The corpus's own test and validation sets are whole unseen packages: a new domain, hard for small models. The
in-domain set measures translation of the pool's own domains instead. It is a seeded uniform sample of the pool's
pairs (so it has the pool's mix of packages), and every training pair that is a near-duplicate of a sampled pair
leaves the pool with it: the same text up to case, punctuation, digits and placeholders on either side, or a
normalised English or target side within an edit-distance ratio of `similarity` of a sampled one. What stays in
training never repeats a held-out sentence, so BLEU on this set is translation, not recall.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_NON_WORD = re.compile(r"[\W\d_]+", re.UNICODE)
_PLACEHOLDER = re.compile(r"\bx\b")  # the corpus writes every placeholder as X
SIMILARITY = 85.0  # rapidfuzz ratio (0-100) at and above which two normalised sides are near-duplicates
CHUNK = 256  # held-out rows compared with the whole pool at once (a CHUNK x pool uint8 matrix)


def norm(text: str) -> str:
    """Lower case, letters only, placeholders dropped: the text two near-duplicates share."""
    return " ".join(_PLACEHOLDER.sub(" ", _NON_WORD.sub(" ", text.lower())).split())


def _near(held: Sequence[str], pool: Sequence[str], cutoff: float) -> np.ndarray:
    """Mask over the pool: rows within `cutoff` (rapidfuzz ratio) of any held-out row, or equal to one."""
    from rapidfuzz import fuzz, process

    out = np.isin(np.asarray(pool, dtype=object), np.asarray(list(set(held)), dtype=object))
    for i in range(0, len(held), CHUNK):
        scores = process.cdist(held[i:i + CHUNK], pool, scorer=fuzz.ratio, score_cutoff=cutoff, dtype=np.uint8,
                               workers=1)
        out |= scores.max(axis=0) >= cutoff
    return out


def indomain_split(pairs: Sequence[tuple[str, str]], n_test: int, n_val: int, seed: str,
                   similarity: float = SIMILARITY) -> dict[str, np.ndarray]:
    """Indices into `pairs` of the in-domain test and validation sets and of the training pairs that remain.

    Held-out rows are drawn in a seeded hash order of their normalised English (a function of the text, not of
    the pool's order), one per normalised English text, test first; train keeps every row not near either."""
    en = [norm(s) for s, _ in pairs]
    tg = [norm(t) for _, t in pairs]
    order = sorted(range(len(pairs)), key=lambda i: hashlib.sha256(f"{seed}:{en[i]}".encode()).hexdigest())
    picked: list[int] = []
    seen: set[str] = set()
    for i in order:
        if len(picked) == n_test + n_val:
            break
        if en[i] and tg[i] and en[i] not in seen:
            seen.add(en[i])
            picked.append(i)
    if len(picked) < n_test + n_val:
        raise ValueError(f"a pool of {len(pairs):,} pairs cannot give {n_test:,} + {n_val:,} in-domain held-out pairs")
    test, val = np.array(picked[:n_test], dtype=int), np.array(picked[n_test:], dtype=int)
    # Validation rows near a test row would let model selection see the test set.
    val = val[~_near([en[i] for i in test], [en[i] for i in val], similarity)
              & ~_near([tg[i] for i in test], [tg[i] for i in val], similarity)]
    held = np.concatenate([test, val])
    drop = _near([en[i] for i in held], en, similarity) | _near([tg[i] for i in held], tg, similarity)
    drop[held] = True
    return {"train": np.flatnonzero(~drop), "validation": np.sort(val), "test": np.sort(test)}
