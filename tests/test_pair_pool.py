"""A task's training pool is encoded once (`seq2seq.EncodedPool`, cached by content) and every cell takes its Df
subset from it (issue 25): the ids are those `encode_pairs` gives the cell's rows, so the batches and the
losses of a cell are what they were when each cell re-tokenized the pool; the cache is reused, and a changed
tokenizer or encoding setting gets its own entry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from test_sources import data, tr, write_jsonl  # noqa: E402

import pipeline.finetune as finetune  # noqa: E402
import pipeline.seq2seq as seq2seq  # noqa: E402
from pipeline.finetune import epoch_batches, nested_subset  # noqa: E402
from pipeline.seq2seq import EncodedPool, encode_pairs  # noqa: E402
from pipeline.sources import get_source  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from pipeline.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    words = ["Datei", "file", "öffnen", "open", "speichern", "save", "Fenster", "window", "der", "the", "ein", "a"]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words, size=n))

    rows = [tr("en", "de", sentence(int(rng.integers(1, 90))), sentence(int(rng.integers(1, 90)))) for _ in range(2500)]
    files = {split: str(write_jsonl(root / f"{split}.jsonl", rows if split == "train" else rows[:20]))
             for split in ("train", "validation", "test")}
    source = get_source(data("local", {"pairs": {"en-de": files}}, ["en", "de"], ["en-de"]), root / "cache")
    tok = train_tokenizer(iter([sentence(12) for _ in range(300)]), 200, 10)
    return root, source, tok


ENC = {"src": "en", "tgt": "de", "prefix": "translate English to German: ", "max_src": 64, "max_tgt": 48}


def test_a_cells_pairs_from_the_pool_are_its_rows_encoded(setup, monkeypatch):
    root, source, tok = setup
    pool = EncodedPool.get(source, "en-de", "train", tok, root / "cache", **ENC)
    rows = source.parallel("en-de", "train")
    assert len(pool) == len(rows) == 2500
    for df, seed in ((100, 0), (2500, 0), (700, 3)):
        idx = nested_subset(len(pool), df, seed)
        src, tgt = pool.take(idx)
        want = encode_pairs(tok, [r["translation"] for r in rows.select(idx)], **ENC)
        assert (src, tgt) == want  # the same ids in the same order: truncation and EOS as before
        lengths = np.array([len(a) + len(b) for a, b in zip(src, tgt)])
        want_lengths = np.array([len(a) + len(b) for a, b in zip(*want)])
        for epoch in (0, 1):  # so the same batches
            assert all(np.array_equal(a, b) for a, b in zip(epoch_batches(lengths, 32, seed, epoch),
                                                            epoch_batches(want_lengths, 32, seed, epoch)))
    # encoded once: a second cell reads the cache
    monkeypatch.setattr(seq2seq, "_encode_pool", lambda *a, **k: pytest.fail("the pool was encoded twice"))
    again = EncodedPool.get(source, "en-de", "train", tok, root / "cache", **ENC)
    assert again.dir == pool.dir and again.take([5, 1]) == pool.take([5, 1])


def test_another_encoding_or_tokenizer_gets_its_own_entry(setup):
    from pipeline.tokenizer import train_tokenizer

    root, source, tok = setup
    base = EncodedPool.get(source, "en-de", "train", tok, root / "cache", **ENC)
    other = EncodedPool.get(source, "en-de", "train", tok, root / "cache", **{**ENC, "max_tgt": 8})
    assert other.dir != base.dir and max(map(len, other.take(range(100))[1])) == 8
    tok2 = train_tokenizer(iter(["speichern öffnen"] * 50 + ["the file"] * 50), 150, 10)
    assert EncodedPool.get(source, "en-de", "train", tok2, root / "cache", **ENC).dir != base.dir
    assert not list((root / "cache" / "pairs").glob(".*.tmp"))  # written atomically, nothing left over
    # an encoding killed half-way leaves its temporary copy; the next cell removes it and encodes the pool
    shutil.rmtree(base.dir)
    stale = base.dir.parent / f".{base.dir.name}.killed.tmp"
    stale.mkdir()
    (stale / "src.bin").write_bytes(b"\0" * 10)
    again = EncodedPool.get(source, "en-de", "train", tok, root / "cache", **ENC)
    assert again.dir == base.dir and not stale.exists() and again.take([3]) == encode_pairs(
        tok, [source.parallel("en-de", "train")[3]["translation"]], **ENC)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_cell_trains_exactly_as_when_it_encoded_its_own_rows(tmp_path, monkeypatch):
    """One finetuning cell of the small en-de sweep, run with the pool cache and with the old per-cell encoding
    (`encode_pairs` of the cell's rows): the same validation curve and train losses, bit for bit."""
    from test_training import first, small_plan, with_spec

    from pipeline.task import execute

    _, plan = small_plan(tmp_path)
    for s in ("tokenizer", "init"):
        assert execute(first(plan, s)) == "ok"
    cell = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] == 0)
    steps = {"max_steps": 30, "eval_every": 10, "patience": 100}
    finetune.run(with_spec(cell, tmp_path / "cached", finetune=steps))
    assert list((Path(cell.spec["cache"]) / "pairs").glob("en-de-train-*/meta.json"))

    class PerCell:  # the old path: the cell's own rows, encoded by the cell
        def __init__(self, source, pair, split, tokenizer, cache, **enc):
            self.rows, self.tok, self.enc = source.parallel(pair, split), tokenizer, enc

        get = classmethod(lambda cls, *a, **k: cls(*a, **k))

        def __len__(self):
            return len(self.rows)

        def take(self, idx):
            return encode_pairs(self.tok, [r["translation"] for r in self.rows.select(idx)], **self.enc)

    monkeypatch.setattr(finetune, "EncodedPool", PerCell)
    finetune.run(with_spec(cell, tmp_path / "per-cell", finetune=steps))
    a, b = (json.loads((tmp_path / d / "finetune.json").read_text()) for d in ("cached", "per-cell"))
    assert a["curve"] == b["curve"] and a["df_tokens"] == b["df_tokens"] and a["best_step"] == b["best_step"]
    assert len(a["curve"]) == 4
