"""Data sources on tmp files of the real schemas: l10n (the offline corpus layout), hub (allenai/c4 and wmt/wmt17
layouts as local directories, through the same `datasets` calls), local (user files, and every bad input)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

# Nothing here may reach the network; set before `datasets` (or huggingface_hub) is first imported.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import yaml  # noqa: E402

from pipeline.config import ConfigError, DataConfig, _freeze  # noqa: E402
from pipeline.sources import HubSource, L10nSource, LocalSource, as_pairs, check_jsonl, get_source  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LANGS = ("en", "de", "fr", "ro")
PAIRS = ("en-de", "en-fr", "en-ro")


def data(source: str, options: dict, languages=LANGS, pairs=PAIRS) -> DataConfig:
    # Frozen exactly as pipeline.config freezes a composed config.
    return DataConfig(source=source, languages=tuple(languages), pairs=tuple(pairs), options=_freeze(options))


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def tr(src: str, tgt: str, a: str, b: str) -> dict:
    return {"translation": {src: a, tgt: b}}


# ------------------------------------------------------------------------------------------- l10n

MONO = {
    "en": ["The file could not be opened.", "Save the document before closing it."],
    "de": ["Die Datei konnte nicht geöffnet werden.", "Speichern Sie das Dokument."],
    "fr": ["Le fichier n'a pas pu être ouvert."],
    "ro": ["Fișierul nu a putut fi deschis.", "Salvați documentul.", "Închideți fereastra."],
}


def make_l10n(root: Path, manifest_mono: bool = True, reverse_de: bool = False) -> Path:
    d = root / "l10n"
    for lang, docs in MONO.items():
        write_jsonl(d / "mono" / f"{lang}.jsonl", [{"text": t, "source": "manpages"} for t in docs])
    counts = {}
    for pair in PAIRS:
        src, tgt = pair.split("-")
        name = f"{tgt}-{src}" if (reverse_de and tgt == "de") else pair
        counts[pair] = {}
        for split, n in (("train", 5), ("validation", 3), ("test", 2)):
            rows = [{**tr(src, tgt, f"{split} sentence {i}", f"{tgt} {split} {i}"), "source": "gimp"} for i in range(n)]
            if split == "validation":  # an English sentence shared across pairs: en's held-out text has it once
                rows.append({**tr(src, tgt, "Open a file", f"{tgt} open"), "source": "gimp"})
                rows.append({**tr(src, tgt, "Open a file", f"{tgt} open again"), "source": "gimp"})
            write_jsonl(d / "pairs" / name / f"{split}.jsonl", rows)
            counts[pair][split] = len(rows)
    manifest = {"pairs": counts, "packages": [{"name": "gimp", "version": "2.10", "sha256": "0" * 64}]}
    if manifest_mono:
        manifest["mono"] = {lang: {"docs": 1000 + i, "words": 2000 + i, "chars": 9000 + i} for i, lang in enumerate(LANGS)}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def l10n(tmp_path: Path, **kw) -> L10nSource:
    d = make_l10n(tmp_path, **kw)
    s = get_source(data("l10n", {"dir": str(d)}), tmp_path / "cache")
    assert isinstance(s, L10nSource)
    return s


def test_l10n_reads_the_corpus_through_datasets(tmp_path):
    s = l10n(tmp_path)
    s.validate(LANGS, PAIRS)
    assert list(s.iter_texts("ro")) == MONO["ro"]
    assert list(s.iter_texts("de", "train")) == MONO["de"]
    # validation text = the language's side of the validation pairs, over every pair of the corpus, deduplicated
    en_val = list(s.iter_texts("en", "validation"))
    assert en_val.count("Open a file") == 1 and "validation sentence 0" in en_val
    assert len(en_val) == len(set(en_val)) == 4
    assert list(s.iter_texts("de", "validation")) == ["de validation 0", "de validation 1", "de validation 2",
                                                      "de open", "de open again"]
    test = s.parallel("en-fr", "test")
    assert len(test) == 2 and test.column_names == ["translation"]
    assert test[0]["translation"] == {"en": "test sentence 0", "fr": "fr test 0"}
    assert s.pool_size("en-de", "train") == 5 and s.pool_size("en-ro", "validation") == 5
    assert s.text_stats("fr") == {"docs": 1002, "words": 2002, "chars": 9002}  # from the manifest
    assert s.bounded and s.name == "l10n"


def test_l10n_counts_what_the_manifest_lacks_and_serves_a_reversed_pair(tmp_path):
    s = l10n(tmp_path, manifest_mono=False, reverse_de=True)
    assert s.text_stats("en") == {"docs": 2, "words": 12, "chars": 65}
    assert (s.dir / "pairs" / "de-en").is_dir() and not (s.dir / "pairs" / "en-de").exists()
    s.validate(LANGS, PAIRS)
    rows = s.parallel("en-de", "train")
    assert rows[1]["translation"]["en"] == "train sentence 1" and rows[1]["translation"]["de"] == "de train 1"


def test_l10n_identity_is_the_manifest_hash(tmp_path):
    s = l10n(tmp_path)
    m = s.dir / "manifest.json"
    assert s.identity() == {"source": "l10n", "manifest_sha256": hashlib.sha256(m.read_bytes()).hexdigest()}
    before = s.identity()
    m.write_text(m.read_text().replace("2.10", "2.11"))
    assert get_source(data("l10n", {"dir": str(s.dir)}), tmp_path).identity() != before


def test_l10n_missing_corpus_says_how_to_build_it(tmp_path):
    d = tmp_path / "nowhere" / "l10n"
    s = get_source(data("l10n", {"dir": str(d)}), tmp_path)  # constructing reads nothing
    for call in (lambda: s.validate(["en"], ["en-de"]), lambda: next(s.iter_texts("en")), s.identity):
        with pytest.raises(ConfigError) as e:
            call()
        assert e.value.key == "data.l10n.dir"
        assert str(e.value) == (f"data.l10n.dir: the offline corpus is not built at {d.resolve()}; "
                                "run `make corpus` (python scripts/build_corpus.py)")


def test_l10n_default_dir_is_under_the_cache(tmp_path):
    make_l10n(tmp_path)
    s = get_source(data("l10n", {}), tmp_path)
    assert s.dir == (tmp_path / "l10n").resolve()
    s.validate(["en"], ["en-de"])


def test_l10n_validate_names_a_missing_split(tmp_path):
    s = l10n(tmp_path)
    (s.dir / "pairs" / "en-ro" / "test.jsonl").unlink()
    s.validate(LANGS, ["en-de", "en-fr"])  # a pair outside the sweep is not needed
    with pytest.raises(ConfigError) as e:
        s.validate(LANGS, PAIRS)
    assert e.value.key == "data.l10n.dir" and "en-ro/test.jsonl" in str(e.value) and "\n" not in str(e.value)


def test_l10n_validate_checks_files_not_lines(tmp_path):
    # Start-up must stay fast on the real corpus: validate looks at the manifest and the files, never every line.
    s = l10n(tmp_path)
    with open(s.mono_file("en"), "a") as f:
        f.write("x" * 5_000_000 + "\n")
    s.validate(LANGS, PAIRS)
    s.mono_file("ro").write_text("")
    with pytest.raises(ConfigError, match=r"mono/ro\.jsonl: no ro text"):
        s.validate(LANGS, PAIRS)


# -------------------------------------------------------------------------------------------- hub

C4_README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*.json.gz
  - split: validation
    path: en/c4-validation.*.json.gz
- config_name: de
  data_files:
  - split: train
    path: multilingual/c4-de.*.json.gz
  - split: validation
    path: multilingual/c4-de-validation.*.json.gz
- config_name: en-multi
  data_files:
  - split: train
    path: multilingual/c4-en.*.json.gz
  - split: validation
    path: multilingual/c4-en-validation.*.json.gz
---
# C4 (a local stand-in with the hub layout)
"""

WMT_README = """---
dataset_info:
- config_name: de-en
  features:
  - name: translation
    dtype:
      translation:
        languages:
        - de
        - en
  splits:
  - name: train
    num_examples: 6
  - name: validation
    num_examples: 2
  - name: test
    num_examples: 3
configs:
- config_name: de-en
  data_files:
  - split: train
    path: de-en/train-*
  - split: validation
    path: de-en/validation-*
  - split: test
    path: de-en/test-*
---
# WMT17 (a local stand-in with the hub layout)
"""


def c4_doc(lang: str, shard: int, i: int, split: str = "train") -> dict:
    return {"text": f"{lang} {split} document {shard}.{i}\nsecond line", "timestamp": "2019-04-25T12:57:54Z",
            "url": f"https://example.{lang}/{shard}/{i}"}


def make_c4(root: Path) -> Path:
    """allenai/c4's multilingual layout: gzipped json lines per shard, train and validation shards per language."""
    d = root / "allenai" / "c4"
    (d / "multilingual").mkdir(parents=True)
    (d / "README.md").write_text(C4_README)
    for lang in ("en", "de"):
        for shard in range(2):
            with gzip.open(d / "multilingual" / f"c4-{lang}.tfrecord-{shard:05d}-of-00002.json.gz", "wt") as f:
                f.writelines(json.dumps(c4_doc(lang, shard, i)) + "\n" for i in range(3))
        with gzip.open(d / "multilingual" / f"c4-{lang}-validation.tfrecord-00000-of-00001.json.gz", "wt") as f:
            f.writelines(json.dumps(c4_doc(lang, 0, i, "validation")) + "\n" for i in range(2))
    return d


def make_wmt17(root: Path) -> Path:
    """wmt/wmt17 today: parquet per config directory, de-en/{split}-NNNNN-of-MMMMM.parquet, a Translation column."""
    import datasets

    d = root / "wmt" / "wmt17"
    (d / "de-en").mkdir(parents=True)
    (d / "README.md").write_text(WMT_README)
    feats = datasets.Features({"translation": datasets.Translation(languages=["de", "en"])})
    for split, shards, n in (("train", 2, 3), ("validation", 1, 2), ("test", 1, 3)):
        for s in range(shards):
            rows = [{"de": f"Hallo {split} {s}.{i}", "en": f"Hello {split} {s}.{i}"} for i in range(n)]
            ds = datasets.Dataset.from_dict({"translation": rows}, features=feats)
            ds.to_parquet(str(d / "de-en" / f"{split}-{s:05d}-of-{shards:05d}.parquet"))
    return d


def hub_options(tmp_path: Path, **over) -> dict:
    """conf/data/hub.yaml as shipped, with each dataset path pointed at a local copy of its layout."""
    opts = yaml.safe_load((ROOT / "conf" / "data" / "hub.yaml").read_text())["hub"]
    opts["mono"]["path"] = str(make_c4(tmp_path))
    opts["parallel"]["en-de"]["path"] = str(make_wmt17(tmp_path))
    opts["cache_dir"] = str(tmp_path / "hf")
    opts.update(over)
    return opts


def test_hub_yaml_names_the_real_layouts():
    opts = yaml.safe_load((ROOT / "conf" / "data" / "hub.yaml").read_text())["hub"]
    assert opts["mono"]["path"] == "allenai/c4"
    assert opts["mono"]["train_files"].format(lang="de") == "multilingual/c4-de.tfrecord-*.json.gz"
    assert opts["parallel"]["en-de"] == {"path": "wmt/wmt17", "data_dir": "de-en"}
    assert opts["parallel"]["en-fr"] == {"path": "wmt/wmt15", "data_dir": "fr-en"}
    assert opts["parallel"]["en-ro"] == {"path": "wmt/wmt16", "data_dir": "ro-en"}


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_mc4_per_language(tmp_path, streaming):
    s = get_source(data("hub", hub_options(tmp_path, streaming=streaming), ["en", "de"], ["en-de"]), tmp_path)
    assert isinstance(s, HubSource) and not s.bounded and s.text_stats("de") is None
    s.validate(["en", "de"], ["en-de"])
    de = list(s.iter_texts("de"))
    assert de == [c4_doc("de", shard, i)["text"] for shard in range(2) for i in range(3)]  # no validation shard
    assert list(s.iter_texts("en", "validation")) == [c4_doc("en", 0, i, "validation")["text"] for i in range(2)]


def test_hub_stops_streaming_at_the_document_limits(tmp_path):
    opts = hub_options(tmp_path, max_documents_per_language=4, max_validation_documents=1)
    s = get_source(data("hub", opts, ["de"], ["en-de"]), tmp_path)
    assert len(list(s.iter_texts("de"))) == 4
    assert len(list(s.iter_texts("de", "validation"))) == 1


def test_hub_wmt_pair_in_our_direction(tmp_path):
    s = get_source(data("hub", hub_options(tmp_path), ["en", "de"], ["en-de"]), tmp_path)
    sizes = {split: len(s.parallel("en-de", split)) for split in ("train", "validation", "test")}
    assert sizes == {"train": 6, "validation": 2, "test": 3}
    row = s.parallel("en-de", "test")[1]["translation"]
    assert row["en"] == "Hello test 0.1" and row["de"] == "Hallo test 0.1"
    # the dataset's README config name works as well as its directory
    opts = hub_options(tmp_path / "by-name")
    opts["parallel"]["en-de"] = {"path": opts["parallel"]["en-de"]["path"], "name": "de-en"}
    by_name = get_source(data("hub", opts, ["en", "de"], ["en-de"]), tmp_path).parallel("en-de", "test")
    assert list(by_name["translation"]) == list(s.parallel("en-de", "test")["translation"])
    # a dataset that lacks one of the task's languages is refused, naming the key
    with pytest.raises(ConfigError) as e:
        as_pairs(s.parallel("en-de", "test"), "en-fr", "data.hub.parallel.en-fr")
    assert str(e.value) == "data.hub.parallel.en-fr: missing language key 'fr' in 'translation' (has: de, en)"


def test_hub_identity_and_validate(tmp_path):
    opts = hub_options(tmp_path)
    s = get_source(data("hub", opts, ["en", "de"], ["en-de"]), tmp_path)
    ident = s.identity()
    assert ident["mono"]["train_files"] == "multilingual/c4-{lang}.tfrecord-*.json.gz"
    assert ident["parallel"]["en-de"]["data_dir"] == "de-en" and ident["mono"]["path"] == opts["mono"]["path"]
    assert "cache_dir" not in ident and "streaming" not in ident
    with pytest.raises(ConfigError) as e:  # no ro shards in the local copy
        get_source(data("hub", opts, ["en", "ro"], ["en-de"]), tmp_path).validate(["en", "ro"], ["en-de"])
    assert e.value.key == "data.hub.mono.train_files" and "c4-ro.tfrecord" in str(e.value)
    with pytest.raises(ConfigError) as e:
        get_source(data("hub", {**opts, "parallel": {}}), tmp_path).validate(["en"], ["en-ro"])
    assert e.value.key == "data.hub.parallel.en-ro"
    # a hub id (not a local directory) is not looked up at start-up: no network there
    get_source(data("hub", yaml.safe_load((ROOT / "conf/data/hub.yaml").read_text())["hub"]), tmp_path).validate(LANGS, PAIRS)


# ------------------------------------------------------------------------------------------ local


def make_local(root: Path) -> dict:
    d = root / "user"
    opts = {
        "mono": {lang: str(write_jsonl(d / f"{lang}.jsonl", [{"text": t} for t in MONO[lang]])) for lang in ("en", "de")},
        "pairs": {"en-de": {split: str(write_jsonl(d / f"en-de.{split}.jsonl",
                                                   [tr("en", "de", f"{split} {i}", f"{split} de {i}") for i in range(n)]))
                            for split, n in (("train", 4), ("validation", 2), ("test", 3))}},
    }
    return opts


def local(tmp_path: Path, opts: dict, languages=("en", "de"), pairs=("en-de",)) -> LocalSource:
    s = get_source(data("local", opts, languages, pairs), tmp_path / "cache")
    assert isinstance(s, LocalSource)
    return s


def test_local_reads_user_files(tmp_path):
    opts = make_local(tmp_path)
    s = local(tmp_path, opts)
    s.validate(["en", "de"], ["en-de"])
    assert list(s.iter_texts("de")) == MONO["de"]
    assert list(s.iter_texts("de", "validation")) == ["validation de 0", "validation de 1"]  # from the pairs
    opts["mono_validation"] = {"en": str(write_jsonl(tmp_path / "val.en.jsonl", [{"text": "held out"}]))}
    s = local(tmp_path, opts)
    s.validate(["en", "de"], ["en-de"])
    assert list(s.iter_texts("en", "validation")) == ["held out"]
    train = s.parallel("en-de", "train")
    assert len(train) == 4 and train[3]["translation"] == {"en": "train 3", "de": "train de 3"}
    assert s.pool_size("en-de", "test") == 3
    assert s.text_stats("en") == {"docs": 2, "words": 12, "chars": 65}
    assert s.text_stats("fr") is None


def test_local_identity_hashes_content_and_caches_the_hash(tmp_path):
    opts = make_local(tmp_path)
    s = local(tmp_path, opts)
    ident = s.identity()
    f = Path(opts["pairs"]["en-de"]["test"]).resolve()
    assert ident["files"]["pairs.en-de.test"] == {"path": str(f), "size": f.stat().st_size,
                                                  "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    cache = tmp_path / "cache" / "sources" / "sha256.json"
    assert any(k.startswith(f"{f}|") for k in json.loads(cache.read_text()))
    # the cached hash is what a second identity() uses: keyed by (path, size, mtime)
    st = f.stat()
    entries = json.loads(cache.read_text())
    entries[f"{f}|{st.st_size}|{st.st_mtime_ns}"] = "cached"
    cache.write_text(json.dumps(entries))
    assert local(tmp_path, opts).identity()["files"]["pairs.en-de.test"]["sha256"] == "cached"
    write_jsonl(f, [tr("en", "de", "changed", "geändert")])
    assert local(tmp_path, opts).identity()["files"]["pairs.en-de.test"]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


BAD = {
    "missing file": (lambda p: None, "no such file"),
    "empty file": (lambda p: p.write_text("\n\n"), "empty file (no records)"),
    "malformed JSON": (lambda p: p.write_text(json.dumps(tr("en", "de", "a", "b")) + "\n{\"translation\": {\n"),
                       ":2: malformed JSON"),
    "missing translation": (lambda p: write_jsonl(p, [tr("en", "de", "a", "b"), {"en": "a", "de": "b"}]),
                            ":2: missing key 'translation'"),
    "missing language key": (lambda p: write_jsonl(p, [tr("en", "de", "a", "b"), tr("en", "fr", "a", "b")]),
                             ":2: missing language key 'de' in 'translation' (has: en, fr)"),
    "invalid UTF-8": (lambda p: p.write_bytes(json.dumps(tr("en", "de", "a", "b")).encode() + b"\n"
                                              + b'{"translation": {"en": "caf\xe9", "de": "b"}}\n'), ":2: invalid UTF-8"),
    "empty string": (lambda p: write_jsonl(p, [tr("en", "de", "a", " ")]), ":1: translation['de'] is empty"),
    "not a string": (lambda p: write_jsonl(p, [tr("en", "de", "a", 3)]), ":1: translation['de'] must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_local_bad_pair_file_is_one_line_naming_file_and_key(tmp_path, case):
    opts = make_local(tmp_path)
    bad = tmp_path / "bad.jsonl"
    write, expected = BAD[case]
    write(bad)
    opts["pairs"]["en-de"]["validation"] = str(bad)
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts).validate(["en", "de"], ["en-de"])
    msg = str(e.value)
    assert e.value.key == "data.local.pairs.en-de.validation"
    assert msg.startswith(f"data.local.pairs.en-de.validation: {bad.resolve()}") and expected in msg
    assert "\n" not in msg


@pytest.mark.parametrize("content, expected", [
    ('{"txt": "a"}\n', ":1: missing key 'text'"),
    ('{"text": ""}\n', ":1: 'text' is empty"),
    ('["a"]\n', ":1: expected a JSON object, got list"),
])
def test_local_bad_text_file(tmp_path, content, expected):
    opts = make_local(tmp_path)
    (tmp_path / "de.jsonl").write_text(content)
    opts["mono"]["de"] = str(tmp_path / "de.jsonl")
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts).validate(["en", "de"], ["en-de"])
    assert e.value.key == "data.local.mono.de" and str(tmp_path / "de.jsonl") in str(e.value) and expected in str(e.value)


def test_local_language_without_text_or_pair_without_files(tmp_path):
    opts = make_local(tmp_path)
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts, LANGS, PAIRS).validate(["en", "ro"], ["en-de"])
    assert e.value.key == "data.local.mono.ro" and "no ro text" in str(e.value)
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts, LANGS, PAIRS).validate(["en", "de"], ["en-ro"])
    assert e.value.key == "data.local.pairs.en-ro"
    opts["mono"]["fr"] = opts["mono"]["en"]  # text, but no held-out fr text anywhere
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts, LANGS, PAIRS).validate(["en", "fr"], ["en-de"])
    assert e.value.key == "data.local.mono_validation.fr"
    with pytest.raises(ConfigError, match=r"^data\.local\.mono\.fr: unknown language; allowed: en, de$"):
        local(tmp_path, opts).validate(["en", "de"], ["en-de"])
    del opts["mono"]["fr"], opts["pairs"]["en-de"]["test"]
    with pytest.raises(ConfigError) as e:
        local(tmp_path, opts).validate(["en", "de"], ["en-de"])
    assert str(e.value) == "data.local.pairs.en-de.test: is required (a jsonl file)"
    with pytest.raises(ConfigError, match=r"^data\.local\.pair: unknown key"):
        local(tmp_path, {**opts, "pair": {}}).validate(["en"], [])


def test_local_source_is_lazy(tmp_path):
    s = local(tmp_path, {"mono": {"en": "/does/not/exist.jsonl"}, "pairs": {}})
    with pytest.raises(ConfigError, match="no such file"):
        s.validate(["en"], [])


def test_check_jsonl_counts_records(tmp_path):
    p = write_jsonl(tmp_path / "x.jsonl", [{"text": "a"}, {"text": "b c"}])
    assert check_jsonl(p, "k") == 2


def test_shipped_data_configs_parse_into_sources(tmp_path):
    """conf/data/*.yaml through the config layer's own parsing (frozen options, empty mappings included)."""
    from omegaconf import OmegaConf

    from pipeline.config import DataConfig

    def parse(name: str, *dotlist: str):
        d = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "data" / f"{name}.yaml"), OmegaConf.from_dotlist(list(dotlist)))
        return get_source(DataConfig.parse(OmegaConf.to_container(d)), tmp_path)

    opts = make_local(tmp_path)
    s = parse("local", f"local.mono.en={opts['mono']['en']}", f"local.mono.de={opts['mono']['de']}",
              *(f"local.pairs.en-de.{k}={v}" for k, v in opts["pairs"]["en-de"].items()))
    s.validate(["en", "de"], ["en-de"])
    assert s.mono_validation == {} and len(s.parallel("en-de", "validation")) == 2
    with pytest.raises(ConfigError, match=r"^data\.local\.mono\.en: no en text"):
        parse("local").validate(["en"], [])
    assert isinstance(parse("hub"), HubSource)
    make_l10n(tmp_path)
    parse("l10n", f"l10n.dir={tmp_path / 'l10n'}").validate(LANGS, PAIRS)
