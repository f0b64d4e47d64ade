"""Held-out sets by source package, deduplication, and removal of every held-out sentence from train and mono.

The catalogs are full of near-duplicates ("could not open file %s" in 30 packages), so a random split of pairs
would leak: test and validation take whole packages, and any train pair or monolingual line whose normalised
text (or one of whose sentences) equals a held-out sentence is dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache

from .clean import key, quick_clean

Pair = tuple[str, str]
_SENT = re.compile(r"(?<=[.!?;:])\s+|\n+")
MIN_PIECE_TOKENS = 3  # a shared two-word fragment ("Note:") is not a leak


@lru_cache(maxsize=1 << 20)  # English sentences recur in all three pairs and in the mono text
def text_keys(s: str) -> frozenset[str]:
    """Key of the whole text, and of each of its sentences that has MIN_PIECE_TOKENS tokens or more."""
    c = quick_clean(s)
    keys = {key(c)}
    parts = _SENT.split(c)
    if len(parts) > 1:
        for p in parts:
            k = key(p)
            if k.count(" ") + 1 >= MIN_PIECE_TOKENS:
                keys.add(k)
    keys.discard("")
    return frozenset(keys)


def pick_heldout(
    sizes: dict[str, int], n_test: int, n_val: int, lo: int, hi: int, seed: str
) -> tuple[list[str], list[str]]:
    """Deterministic test and validation packages: mid-sized ones (lo..hi pairs) in a seeded hash order,
    taken until each set reaches its target without overshooting it by more than a fifth."""
    cands = sorted(
        (p for p, n in sizes.items() if lo <= n <= hi),
        key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest(),
    )
    test, val, nt, nv = [], [], 0, 0
    for p in cands:
        n = sizes[p]
        if nt < n_test and nt + n <= n_test * 6 // 5:
            test.append(p)
            nt += n
        elif nt >= n_test and nv < n_val and nv + n <= n_val * 6 // 5:
            val.append(p)
            nv += n
    return sorted(test), sorted(val)


def _dedup_by_source(rows: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    seen, out = set(), []
    for en, tgt, pkg in rows:
        k = key(en)
        if k not in seen:
            seen.add(k)
            out.append((en, tgt, pkg))
    return out


def split_pairs(
    by_pkg: dict[str, list[Pair]], test_pkgs: list[str], val_pkgs: list[str]
) -> tuple[dict[str, list[tuple[str, str, str]]], set[str], set[str]]:
    """-> ({split: [(en, tgt, pkg)]}, held-out English keys, held-out target keys).
    Test and validation keep one pair per English sentence; train keeps one per (en, tgt) up to the key."""
    rows = {
        s: [(en, t, p) for p in sorted(ps) for en, t in by_pkg.get(p, [])]
        for s, ps in (("test", test_pkgs), ("validation", val_pkgs))
    }
    test = _dedup_by_source(rows["test"])
    t_en = set().union(*(text_keys(e) for e, _, _ in test)) if test else set()
    t_tg = set().union(*(text_keys(t) for _, t, _ in test)) if test else set()
    val = [
        r
        for r in _dedup_by_source(rows["validation"])
        if not (text_keys(r[0]) & t_en or text_keys(r[1]) & t_tg)
    ]
    held_en = t_en.union(*(text_keys(e) for e, _, _ in val))
    held_tg = t_tg.union(*(text_keys(t) for _, t, _ in val))
    heldout = set(test_pkgs) | set(val_pkgs)
    train, seen = [], set()
    for p in sorted(by_pkg):
        if p in heldout:
            continue
        for en, t in by_pkg[p]:
            k = (key(en), key(t))
            if k in seen:
                continue
            seen.add(k)
            if text_keys(en) & held_en or text_keys(t) & held_tg:
                continue
            train.append((en, t, p))
    return {"train": train, "validation": val, "test": test}, held_en, held_tg


def filter_doc(doc: str, held: set[str], seen: set[str]) -> str:
    """Drop the lines of a monolingual document that hold a held-out sentence, or that an earlier
    document already had (exact repeats: licence boilerplate, "Could not open file" across catalogs)."""
    out = []
    for ln in doc.split("\n"):
        if ln in seen or text_keys(ln) & held:
            continue
        seen.add(ln)
        out.append(ln)
    return "\n".join(out)
