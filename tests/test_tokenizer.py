"""The tokenizer stage: one shared vocabulary over en/de/fr/ro, loadable with AutoTokenizer, T5's layout
(pad 0, eos 1, unk 2, sentinels last with <extra_id_0> on top), lossless on ordinary text, and cached
by the hash of its config and data (a second run does not retrain).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import corpus_dir
from test_training import small_plan

from pipeline.span_corruption import t5_sentinel_ids
from pipeline.vocab import sentinel_ids

LANGS = ("en", "de", "fr", "ro")


def all_four(root: Path) -> list[str]:
    """A mixture of the four languages, so the sweep reads them all (their held-out text: the slice's mono)."""
    return ["+sweep.tasks.en-de.mixtures.all4={en:0.25,de:0.25,fr:0.25,ro:0.25}",
            *(f"+data.local.mono_validation.{lang}={root / 'data' / f'{lang}.jsonl'}" for lang in ("fr", "ro"))]
VOCAB = 400  # tests/test_training.py SMALL


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("tok")
    # The vocabulary is learnt from the languages the sweep reads: a mixture of all four makes it read them all.
    _, plan = small_plan(root, extra=all_four(root), langs=LANGS)
    task = next(t for t in plan.tasks if t.stage == "tokenizer")
    assert execute(task) == "ok"
    return task


@pytest.fixture(scope="module")
def tok(stage):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(stage.dir, "tokenizer"))


def held_out_lines(lang: str, n: int = 60) -> list[str]:
    """Lines of the corpus far past the slice the tokenizer was trained on."""
    out = []
    with open(corpus_dir() / "mono" / f"{lang}.jsonl", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 20_000:
                out += [x for x in json.loads(line)["text"].splitlines() if x.strip()]
                if len(out) >= n:
                    break
    return out[:n]


def test_layout_specials_and_size(tok):
    assert len(tok) == VOCAB
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 0)
    assert (tok.eos_token, tok.eos_token_id) == ("</s>", 1)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", 2)
    assert tok("Hallo Welt").input_ids[-1] == tok.eos_token_id  # EOS appended, as T5 expects


def test_sentinels_are_the_last_ids_distinct_and_in_t5_order(tok):
    ids = sentinel_ids(tok)
    assert len(set(ids.tolist())) == 100
    assert ids[0] == VOCAB - 1 and ids[99] == VOCAB - 100  # <extra_id_i> = V - 1 - i
    np.testing.assert_array_equal(ids, t5_sentinel_ids(VOCAB))  # what span corruption assumes
    assert tok.convert_ids_to_tokens(int(ids[7])) == "<extra_id_7>"
    assert tok.unk_token_id not in ids


@pytest.mark.parametrize("lang", LANGS)
def test_round_trip_and_no_sentinel_from_ordinary_text(tok, lang):
    lines = held_out_lines(lang)
    sentinels = set(sentinel_ids(tok).tolist())
    norm = tok.backend_tokenizer.normalizer
    exact = 0
    for line in lines:
        ids = tok(line).input_ids
        assert not sentinels & set(ids), line
        assert max(ids) < VOCAB - 100
        back = tok.decode(ids, skip_special_tokens=True)
        if back == norm.normalize_str(line).strip():
            exact += 1
        else:  # the only loss allowed: a character the sample never had becomes <unk>
            assert tok.unk_token_id in ids, (line, back)
    assert exact >= 0.8 * len(lines), f"{exact} of {len(lines)} {lang} lines round-trip"


@pytest.mark.parametrize("text", ["Größe ändern", "Mise à jour réussie", "Fișierul nu a fost găsit",
                                  "Open the file, then save it."])
def test_each_languages_letters_are_in_the_vocabulary(tok, text):
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_the_vocabulary_is_learnt_from_the_sweeps_languages_only(tmp_path):
    _, plan = small_plan(tmp_path, langs=LANGS)  # the en-de sweep: en50_de50 and en100 on a four-language corpus
    task = next(t for t in plan.tasks if t.stage == "tokenizer")
    assert task.spec["config"]["languages"] == ["de", "en"]
    _, plan4 = small_plan(tmp_path, extra=all_four(tmp_path), langs=LANGS)
    task4 = next(t for t in plan4.tasks if t.stage == "tokenizer")
    assert task4.spec["config"]["languages"] == ["de", "en", "fr", "ro"] and task4.dir != task.dir


def test_a_second_run_is_skipped_by_hash(stage):
    from pipeline.task import execute

    f = os.path.join(stage.dir, "tokenizer", "tokenizer.json")
    before = os.stat(f).st_mtime_ns
    assert execute(stage) == "skipped"
    assert os.stat(f).st_mtime_ns == before
    stats = json.loads(Path(stage.dir, "stats.json").read_text())
    assert set(stats["lines"]) == set(LANGS) and all(v > 0 for v in stats["chars_per_token"].values())


def test_the_directory_is_named_by_the_hash_of_config_and_data(stage):
    """Another vocabulary size, algorithm or corpus is another directory; the old one is never overwritten."""
    from pipeline.artifacts import stage_dir

    cfg = stage.spec["config"]
    root = Path(stage.dir).parents[1]
    assert str(stage_dir(root, "tokenizer", stage.name, cfg)) == stage.dir
    assert cfg["tokenizer"]["vocab_size"] == VOCAB and cfg["data"]["source"] == "local"
    other = {**cfg, "tokenizer": {**cfg["tokenizer"], "vocab_size": VOCAB + 1}}
    assert stage_dir(root, "tokenizer", stage.name, other) != Path(stage.dir)


def test_training_is_a_function_of_its_input(l10n_corpus):
    # the tokenizers Unigram trainer is multi-threaded and hash-ordered: without canonical_unigram the ids of
    # rare characters (and so every token id after them) change from run to run on this very input
    import itertools

    from conftest import compose

    from pipeline.config import load_config
    from pipeline.sources import get_source
    from pipeline.tokenizer import train_tokenizer

    src = get_source(load_config(compose(["+sweep=en_de"])).data, l10n_corpus.parent)
    lines = [ln for lang in ("en", "de")
             for ln in itertools.islice((x for d in src.iter_texts(lang, "train") for x in d.splitlines() if x.strip()),
                                        8_000)]
    dumps = {train_tokenizer(iter(lines), 1000, 100).backend_tokenizer.to_str() for _ in range(3)}
    assert len(dumps) == 1


def test_a_rerun_removes_the_half_written_files_a_killed_attempt_left(stage, tmp_path):
    """SIGKILL inside an atomic write leaves `.<name>.*.tmp` in the stage directory (found by the kill-anywhere
    test in an evaluate directory); the next attempt, holding the task's lock, removes them before it writes."""
    from pipeline.task import execute

    d = Path(stage.dir)
    for f in ("status.json",):  # an unfinished stage: the next run redoes it
        (d / f).unlink()
    left = [d / ".config.yaml.x1y2z3.tmp", d / ".stats.json.abcdef.tmp"]
    for p in left:
        p.write_text("half")
    keep = d / "notes.tmp"  # not a temporary of ours: no leading dot
    keep.write_text("mine")
    assert execute(stage) == "ok"
    assert not any(p.exists() for p in left) and keep.exists()
    keep.unlink()
