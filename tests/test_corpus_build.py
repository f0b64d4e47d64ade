"""The whole build on a handful of tiny .deb files made here: layout, schema (through `datasets`), manifest,
held-out packages, no overlap; and the CLI's two early exits."""

import importlib
import importlib.util
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.artifacts import file_sha256
from pipeline.corpus import AptUnavailable, corpus_dir
from pipeline.corpus.fetch import Deb
from pipeline.corpus.split import text_keys
from tests.test_corpus_mo import write_mo

B = importlib.import_module("pipeline.corpus.build")
ROOT = Path(__file__).resolve().parents[1]
SIZES = {"pa": 6, "pb": 7, "pc": 8, "pd": 9, "pe": 30, "pf": 30, "pg": 30, "ph": 30, "pi": 30}
WORDS = [f"{a}{b}{c}" for a in "bdgkmpst" for b in "aeiou" for c in "lnrx"]
SHARED = ("Could not open the file %s for reading", "Die Datei %s konnte nicht zum Lesen geöffnet werden")


def make_deb(tmp: Path, name: str, files: dict[str, bytes], copyright_text: str) -> Path:
    root = tmp / "src" / name
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t>\nDescription: test\n"
    )
    files = {**files, f"usr/share/doc/{name}/copyright": copyright_text.encode()}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    deb = tmp / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.fixture(scope="module")
def fake_debs(tmp_path_factory):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not available")
    tmp = tmp_path_factory.mktemp("debs")
    debs = {}
    for p, n in SIZES.items():
        cat = {b"": b"Content-Type: text/plain; charset=UTF-8\n"}
        rng = random.Random(p)
        for i in range(n):
            # distinct words, so the in-domain held-out sets find texts that are not near-duplicates
            w = [rng.choice(WORDS) for _ in range(6)]
            cat[f"This is sentence number {i} of package {p}: {' '.join(w)}".encode()] = (
                f"Das ist Satz Nummer {i} von Paket {p}: {' '.join(x.upper() for x in w)}".encode()
            )
        cat[SHARED[0].encode()] = SHARED[1].encode()  # in every package: must not leak from test into train
        files = {f"usr/share/locale/de/LC_MESSAGES/{p}.mo": write_mo(cat)}
        debs[p] = make_deb(tmp, p, files, "Format: https://x\n\nFiles: *\nLicense: GPL-2+\n")
    man = ".TH T 1\n.SH NAME\nt \\- a test page with words\n.SH DESCRIPTION\nThis is sentence number 1 of package pa\nA man page line that stays here.\n"
    page = man.encode()
    import gzip

    debs["manpages"] = make_deb(
        tmp,
        "manpages",
        {"usr/share/man/man1/t.1.gz": gzip.compress(page)},
        "GPL, see /usr/share/common-licenses/GPL-2\n",
    )
    return debs


@pytest.fixture(scope="module")
def built(fake_debs, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    names = sorted(fake_debs)
    mp.setattr(B.P, "all_packages", lambda lean=False: names)
    mp.setattr(
        B,
        "download",
        lambda ns, d, log=print: {n: Deb(n, "1.0", file_sha256(fake_debs[n]), fake_debs[n]) for n in ns},
    )
    mp.setitem(B.HELDOUT, "min_pkg", 5)
    mp.setitem(B.HELDOUT, "max_pkg", 10)
    cache = tmp_path_factory.mktemp("cache")
    out = B.build(cache, jobs=1, log=lambda *a: None)
    yield out
    mp.undo()


def test_layout_and_manifest(built):
    assert built == corpus_dir(built.parent)
    for pair in ("en-de", "en-fr", "en-ro"):
        for s in B.SPLITS:
            assert (built / "pairs" / pair / f"{s}.jsonl").exists()
    for lang in ("en", "de", "fr", "ro"):
        assert (built / "mono" / f"{lang}.jsonl").exists()
    assert "never redistribute" in (built / "LICENSES.md").read_text()
    assert not list(built.rglob(".*.tmp*"))  # atomic writes leave no temp files
    m = json.loads((built / "manifest.json").read_text())
    de = m["pairs"]["en-de"]
    held = de["heldout_packages"]
    assert held["test"] and held["validation"] and not set(held["test"]) & set(held["validation"])
    assert all(5 <= SIZES[p] + 1 <= 10 for p in held["test"] + held["validation"])
    assert m["packages"]["pa"]["licence"] == "GPL-2+"
    assert m["packages"]["manpages"]["licence"].startswith("not DEP-5")
    assert len(m["packages"]["pa"]["sha256"]) == 64
    assert m["mono"]["en"]["words"] > 0 and m["mono"]["de"]["words"] > 0
    for p in held["test"]:
        assert m["packages"][p]["pairs"]["en-de"]["split"] == "test"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_no_heldout_sentence_in_train_or_mono(built):
    m = json.loads((built / "manifest.json").read_text())
    held_pkgs = {p for ps in m["pairs"]["en-de"]["heldout_packages"].values() for p in ps}
    rows = {s: _jsonl(built / "pairs/en-de" / f"{s}.jsonl") for s in B.SPLITS}
    assert m["pairs"]["en-de"]["test_indomain"] == len(rows["test_indomain"]) > 0
    held = set()
    for s in ("validation", "test", "validation_indomain", "test_indomain"):
        for r in rows[s]:
            held |= text_keys(r["translation"]["en"]) | text_keys(r["translation"]["de"])
            assert (r["source"] in held_pkgs) == (not s.endswith("_indomain"))
    assert sum(r["translation"]["en"].startswith("Could not open") for s in rows for r in rows[s]) == 1
    for r in rows["train"]:
        assert r["source"] not in held_pkgs
        assert not (text_keys(r["translation"]["en"]) | text_keys(r["translation"]["de"])) & held
    for lang in ("en", "de"):
        for d in _jsonl(built / "mono" / f"{lang}.jsonl"):
            assert d["source"] not in held_pkgs
            for ln in d["text"].split("\n"):
                assert not text_keys(ln) & held, ln


def test_jsonl_loads_with_datasets(built):
    datasets = pytest.importorskip("datasets")
    files = {s: str(built / "pairs/en-de" / f"{s}.jsonl") for s in ("train", "validation", "test")}
    ds = datasets.load_dataset("json", data_files=files)
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].features["translation"]["de"].dtype == "string"
    assert set(ds["test"].column_names) == {"translation", "source"}
    mono = datasets.load_dataset("json", data_files=str(built / "mono" / "de.jsonl"), split="train")
    assert set(mono.column_names) == {"text", "source"} and len(mono) > 0


def _cli():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_exits_0_when_built(tmp_path, capsys):
    (corpus_dir(tmp_path)).mkdir(parents=True)
    (corpus_dir(tmp_path) / "manifest.json").write_text(json.dumps({"version": B.VERSION}))
    assert _cli().main(["--cache", str(tmp_path)]) == 0
    assert "already built" in capsys.readouterr().out


def test_cli_rebuilds_a_corpus_of_an_older_builder(tmp_path, capsys, monkeypatch):
    (corpus_dir(tmp_path)).mkdir(parents=True)
    (corpus_dir(tmp_path) / "manifest.json").write_text(json.dumps({"version": B.VERSION - 1}))
    cli = _cli()
    calls = []
    monkeypatch.setattr(cli, "build", lambda *a, **k: calls.append(k) or (_ for _ in ()).throw(AptUnavailable("x")))
    assert cli.main(["--cache", str(tmp_path)]) == 2 and len(calls) == 1
    assert f"rebuilding as {B.VERSION}" in capsys.readouterr().out


def test_cli_without_apt_says_one_line_and_exits_2(tmp_path, capsys, monkeypatch):
    cli = _cli()

    def no_apt(*a, **k):
        raise AptUnavailable("apt-get/dpkg-deb not found")

    monkeypatch.setattr(cli, "build", no_apt)
    assert cli.main(["--cache", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data=hub" in err and "data=local" in err
