"""Checks on the real corpus when it has been built ($DS_CACHE or .cache; skipped otherwise)."""

import json
import os
from pathlib import Path

import pytest

from pipeline.corpus import corpus_dir
from pipeline.corpus.clean import norm_key

CACHE = Path(os.environ.get("DS_CACHE") or Path(__file__).resolve().parents[1] / ".cache")
OUT = corpus_dir(CACHE)
pytestmark = pytest.mark.skipif(not (OUT / "manifest.json").exists(), reason=f"no corpus built in {OUT}")
PAIRS = {"en-de": "de", "en-fr": "fr", "en-ro": "ro"}


@pytest.fixture(scope="module")
def manifest():
    return json.loads((OUT / "manifest.json").read_text())


def rows(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def test_manifest_sizes_and_licences(manifest):
    for pair in PAIRS:
        c = manifest["pairs"][pair]
        assert 1000 <= c["test"] <= 4000, (pair, c["test"])
        assert 500 <= c["validation"] <= 3000, (pair, c["validation"])
        assert c["train"] >= (30_000 if pair == "en-ro" else 80_000), (pair, c["train"])
        held = c["heldout_packages"]
        assert held["test"] and held["validation"] and not set(held["test"]) & set(held["validation"])
        for s in ("train", "validation", "test"):
            with open(OUT / "pairs" / pair / f"{s}.jsonl", "rb") as f:
                n = sum(1 for _ in f)
            assert n == c[s]
    for lang in ("en", "de", "fr", "ro"):
        assert manifest["mono"][lang]["words"] > 300_000
    for name, p in manifest["packages"].items():
        assert isinstance(p["licence"], str) and p["licence"], name
        assert len(p["sha256"]) == 64 and p["version"], name
    assert "never redistribute" in (OUT / "LICENSES.md").read_text()


def test_schema_with_datasets():
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset("json", data_files=str(OUT / "pairs/en-ro/test.jsonl"), split="train")
    assert set(ds.column_names) == {"translation", "source"}
    assert set(ds[0]["translation"]) == {"en", "ro"}


def test_no_heldout_sentence_in_train_or_mono(manifest):
    """Whole-text normalised keys of every test/validation sentence vs every train pair of the same pair
    and every mono line (mono against the held-out sentences of all pairs: one pretraining serves all tasks)."""
    held: dict[str, set[str]] = {"en": set()}
    for pair, lang in PAIRS.items():
        held_en, held_tg = set(), set()
        for s in ("test", "validation"):
            for r in rows(OUT / "pairs" / pair / f"{s}.jsonl"):
                t = r["translation"]
                assert set(t) == {"en", lang} and t["en"] and t[lang] and r["source"]
                held_en.add(norm_key(t["en"]))
                held_tg.add(norm_key(t[lang]))
        heldout_pkgs = {p for ps in manifest["pairs"][pair]["heldout_packages"].values() for p in ps}
        for r in rows(OUT / "pairs" / pair / "train.jsonl"):
            t = r["translation"]
            assert r["source"] not in heldout_pkgs
            assert norm_key(t["en"]) not in held_en, t
            assert norm_key(t[lang]) not in held_tg, t
        held["en"] |= held_en
        held[lang] = held_tg
    all_held_pkgs = {
        p for c in manifest["pairs"].values() for ps in c["heldout_packages"].values() for p in ps
    }
    for lang in ("en", "de", "fr", "ro"):
        for d in rows(OUT / "mono" / f"{lang}.jsonl"):
            assert set(d) == {"text", "source"} and d["source"] not in all_held_pkgs
            for ln in d["text"].split("\n"):
                assert norm_key(ln) not in held[lang], (lang, ln)
