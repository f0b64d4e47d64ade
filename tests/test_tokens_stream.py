"""The tokens stage's sharded streams (issue 25): the stream is the seeded shuffle of the documents whatever the
shards, the workers or the kills; a kill (SIGKILL, or SIGUSR1 as SLURM sends it) and a rerun give the same bytes;
a stream source (mC4's layout) is read file by file with its document limit; `data=local` text larger than the
process's memory limit is tokenized without being held in memory.

The reference stream is computed here as the stage computed it before it was sharded (every document in a list,
shuffled by `default_rng([seed, 7919])`, each followed by EOS, cut at max_tokens): the same text, the same order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import ROOT  # noqa: E402

from pipeline.config import DataConfig, TokensConfig, _freeze  # noqa: E402
from pipeline.plan import Task  # noqa: E402
from pipeline.streams import open_stream  # noqa: E402
from pipeline.tokens import TokensSpec  # noqa: E402
from pipeline.tokens import run as run_tokens  # noqa: E402

WORDS = random.Random(0)
VOCAB_WORDS = ["".join(WORDS.choice("abcdefghijklmnopqrstuvwxyzäöüé") for _ in range(WORDS.randint(2, 9)))
               for _ in range(800)]


def make_docs(n: int, seed: int, max_words: int = 300) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        if i % 97 == 5:
            docs.append("")  # no document (skipped by the source)
        elif i % 89 == 7:
            docs.append("   ")  # a document with no tokens
        else:
            docs.append(" ".join(rng.choice(VOCAB_WORDS) for _ in range(rng.randint(1, max_words))))
    return docs


def write_jsonl(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A local source: 3,000 English documents (about 2M tokens), held-out text, a small tokenizer."""
    from pipeline.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("tokens")
    write_jsonl(root / "en.jsonl", make_docs(3000, 1))
    write_jsonl(root / "en-val.jsonl", make_docs(40, 2))
    train_tokenizer(iter(make_docs(400, 3)), 400, 10).save_pretrained(str(root / "tok"))
    return root


def local_data(root: Path, mono: Path | None = None) -> DataConfig:
    return DataConfig(source="local", languages=("en",), pairs=(), options=_freeze(
        {"mono": {"en": str(mono or root / "en.jsonl")}, "mono_validation": {"en": str(root / "en-val.jsonl")}}))


def make_spec(root: Path, data: DataConfig | None = None, max_tokens: int | None = None, **tokens) -> TokensSpec:
    cfg = TokensConfig(**{"workers": 1, "shard_mb": 0.05, "commit_seconds": 0.0, **tokens})
    return TokensSpec(config={}, lang="en", tokenizer_dir=str(root / "tok"), data=data or local_data(root),
                      cache=str(root / "cache"), max_tokens=max_tokens, seed=0, tokens=cfg)


def task(spec: TokensSpec, out: Path) -> Task:
    return Task(id=f"tokens/{out.name}", stage="tokens", name="tokens-en", dir=str(out), deps=(), spec=spec)


def stream_bytes(out: Path, split: str = "train") -> bytes:
    s = open_stream(out / f"{split}.bin", 400)
    return np.asarray(s[0:len(s)]).tobytes()


def reference(root: Path, texts_file: Path | None = None, max_tokens: int | None = None, seed: int = 0) -> bytes:
    """The stream as the unsharded stage wrote it."""
    from pipeline.vocab import load_tokenizer

    tok = load_tokenizer(root / "tok")
    with open(texts_file or root / "en.jsonl", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    docs = [d for d in docs if d]
    order = np.random.default_rng([seed, 7919]).permutation(len(docs))
    ids = tok([docs[i] for i in order if docs[i].strip()], add_special_tokens=False).input_ids
    flat = np.array([t for x in ids for t in [*x, tok.eos_token_id]], dtype=np.uint16)
    return (flat[:max_tokens] if max_tokens is not None else flat).tobytes()


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "tokens-en"
    run_tokens(task(make_spec(corpus), out))
    return out


def test_the_stream_is_the_seeded_shuffle_whatever_the_shards(corpus, uninterrupted, tmp_path):
    ref = reference(corpus)
    assert stream_bytes(uninterrupted) == ref
    manifest = json.loads((uninterrupted / "train" / "manifest.json").read_text())
    assert len(manifest["shards"]) > 20  # the test exercises many shards
    assert sum(s["tokens"] for s in manifest["shards"]) == manifest["tokens"] == len(ref) // 2
    for s in manifest["shards"]:  # the exact token count of every shard, and its hash
        assert (uninterrupted / "train" / s["file"]).stat().st_size == 2 * s["tokens"]
    meta = json.loads((uninterrupted / "meta.json").read_text())
    assert meta["train_tokens"] == len(ref) // 2 and meta["train_shards"] == len(manifest["shards"])
    # one big shard: the same bytes; a leftover temporary of a killed older version is removed
    out = tmp_path / "one"
    out.mkdir()
    (out / ".train.bin.4242.tmp").write_bytes(b"\0" * 100)
    run_tokens(task(make_spec(corpus, shard_mb=1000), out))
    assert stream_bytes(out) == ref and stream_bytes(out, "validation") == stream_bytes(uninterrupted, "validation")
    assert not (out / ".train.bin.4242.tmp").exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == ["00000.bin", "layout.json", "manifest.json"]


def test_the_cap_cuts_the_stream_and_drops_unneeded_shards(corpus, tmp_path):
    cap = 300_001
    run_tokens(task(make_spec(corpus, max_tokens=cap), tmp_path))
    assert stream_bytes(tmp_path) == reference(corpus, max_tokens=cap)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    files = sorted(p.name for p in (tmp_path / "train").glob("*.bin"))
    assert files == [s["file"] for s in manifest["shards"]] and manifest["tokens"] == cap


def test_the_sampler_reads_the_sharded_stream(corpus, uninterrupted):
    from pipeline.mixture import MixtureSampler

    ref = np.frombuffer(reference(corpus), dtype=np.uint16)
    sampler = MixtureSampler.from_dirs({"en": str(uninterrupted)}, {"en": 4}, 113, 400)
    for step in (0, 7, 51):  # batches that straddle shard boundaries (shards hold ~40k tokens)
        raw, _ = sampler.batch(step)
        assert np.array_equal(raw.ravel(), ref[step * 4 * 113:(step + 1) * 4 * 113])
    assert sampler.steps_available() == len(ref) // (4 * 113)


def test_a_stream_source_is_read_file_by_file_with_its_document_limit(corpus, tmp_path):
    from test_sources import data, hub_options

    opts = hub_options(tmp_path, max_documents_per_language=5, max_validation_documents=1)
    hub = data("hub", opts, ["en", "de"], ["en-de"])
    spec = TokensSpec(config={}, lang="de", tokenizer_dir=str(corpus / "tok"), data=hub, cache=str(tmp_path / "c"),
                      max_tokens=None, seed=0, tokens=TokensConfig(shard_mb=0.05, commit_seconds=0.0))
    from pipeline.sources import get_source
    from pipeline.vocab import load_tokenizer

    source = get_source(hub, tmp_path / "c")
    assert len(source.text_files("de")) == 2  # mC4's files are the shards
    run_tokens(task(spec, tmp_path / "de"))
    tok = load_tokenizer(corpus / "tok")
    ids = tok(list(source.iter_texts("de")), add_special_tokens=False).input_ids  # the stream, limit applied
    assert stream_bytes(tmp_path / "de") == np.array([t for x in ids for t in [*x, 1]], dtype=np.uint16).tobytes()
    meta = json.loads((tmp_path / "de" / "meta.json").read_text())
    assert meta["train_docs"] == 5 and meta["validation_docs"] == 1


class StopAfter:
    """A stop flag that is raised after `n` checks (one check a tokenizer batch): a signal at a known point."""

    def __init__(self, n: int):
        self.n = n

    @property
    def requested(self) -> bool:
        self.n -= 1
        return self.n < 0


def test_a_stop_commits_the_position_inside_a_stream_file_and_the_rerun_continues(corpus, tmp_path, monkeypatch):
    from test_sources import data, hub_options

    import pipeline.tokens as tokens

    monkeypatch.setattr(tokens, "BATCH_DOCS", 2)  # mC4's stand-in files hold 3 documents
    hub = data("hub", hub_options(tmp_path), ["en", "de"], ["en-de"])

    def spec(max_tokens=None):
        return TokensSpec(config={}, lang="de", tokenizer_dir=str(corpus / "tok"), data=hub,
                          cache=str(tmp_path / "c"), max_tokens=max_tokens, seed=0,
                          tokens=TokensConfig(commit_seconds=3600.0))  # commits only on the stop

    ref = tmp_path / "ref"
    run_tokens(task(spec(), ref))
    out = tmp_path / "stopped"
    assert tokens.work(spec(), out, "train", stop=StopAfter(1)) is False  # inside the first file
    assert json.loads((out / "train" / "00000.pos.json").read_text())["docs"] == 2
    assert tokens.work(spec(), out, "train", stop=StopAfter(3)) is False  # first file done, into the second
    assert (out / "train" / "00000.json").is_file() and (out / "train" / "00001.pos.json").is_file()
    run_tokens(task(spec(), out))
    assert stream_bytes(out) == stream_bytes(ref)
    # a cap inside the second file: the stream is the uninterrupted one cut there
    capped = tmp_path / "capped"
    n = len(stream_bytes(ref)) // 2 - 3
    run_tokens(task(spec(max_tokens=n), capped))
    assert stream_bytes(capped) == stream_bytes(ref)[:2 * n]


# ------------------------------------------------------------------------------ workers, kills, memory


RUNNER = """
import json, sys
from pipeline.plan import Task
from pipeline.task import execute
spec, out = json.loads(open(sys.argv[1]).read()), sys.argv[2]
print(execute(Task(id="tokens/x", stage="tokens", name="tokens-en", dir=out, deps=(), spec=spec)), flush=True)
"""


IMPORTS = ("import resource, pipeline.task, pipeline.tokens, pipeline.training, pipeline.tokenizer, datasets, transformers\n"
           "vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmData')).split()[1]) * 1024\n")


def start(spec: TokensSpec, out: Path, tmp: Path, limit_data: int | None = None) -> subprocess.Popen:
    (tmp / "spec.json").write_text(json.dumps(spec.to_dict()))
    code = RUNNER
    if limit_data is not None:  # the memory limit, set once the process's own code is loaded
        code = (IMPORTS + f"resource.setrlimit(resource.RLIMIT_DATA, (vm + {limit_data}, vm + {limit_data}))\n"
                "print('limit', vm + " + str(limit_data) + ", flush=True)\n" + RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-c", code, str(tmp / "spec.json"), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_one_and_two_workers_write_the_same_stream(corpus, uninterrupted, tmp_path):
    out = tmp_path / "w2"
    p = start(make_spec(corpus, workers=2), out, tmp_path)
    log = p.communicate(timeout=900)[0]
    assert p.returncode == 0 and log.strip().endswith("ok"), log[-3000:]
    assert stream_bytes(out) == stream_bytes(uninterrupted) and stream_bytes(out, "validation") == stream_bytes(
        uninterrupted, "validation")
    m1, m2 = (json.loads((d / "train" / "manifest.json").read_text()) for d in (uninterrupted, out))
    for m in (m1, m2):  # the same shards, tokens, documents and hashes; only the time each took differs
        assert all(s.pop("seconds") > 0 for s in m["shards"])
    assert m1 == m2


def work_started(out: Path) -> bool:
    d = out / "train"
    return d.is_dir() and any(p.name.endswith(".json") and p.name[:5].isdigit() for p in d.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("sig,workers", [(signal.SIGKILL, 1), (signal.SIGUSR1, 1), (signal.SIGKILL, 2),
                                         (signal.SIGUSR1, 2)])
def test_a_killed_stage_reruns_to_the_same_bytes(corpus, uninterrupted, tmp_path, sig, workers):
    out = tmp_path / "killed"
    spec = make_spec(corpus, workers=workers)
    rng = random.Random(sig * 10 + workers)
    p = start(spec, out, tmp_path)
    t0 = time.time()
    while not work_started(out):  # a shard committed or a position: the stage is inside its work
        assert p.poll() is None, p.communicate()[0][-3000:]
        assert time.time() - t0 < 600
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.5))
    if sig == signal.SIGKILL:
        os.killpg(p.pid, sig)  # the whole process group, as a scheduler kills a job
    else:
        p.send_signal(sig)  # SLURM's warning goes to the batch step; the stage passes it to its workers
    log = p.communicate(timeout=600)[0]
    assert not (out / "train" / "manifest.json").exists(), "the stage finished before the signal: nothing tested"
    if sig == signal.SIGKILL:
        assert p.returncode == -signal.SIGKILL
    else:  # committed and stopped, as training does; not a failure
        assert p.returncode == 0 and log.strip().endswith("preempted"), log[-3000:]
        assert not (out / "status.json").exists()
    committed = [q for q in (out / "train").iterdir() if q.name[:5].isdigit() and q.suffix == ".json"]
    assert committed  # the rerun has something to continue from
    p = start(spec, out, tmp_path)
    log = p.communicate(timeout=900)[0]
    assert p.returncode == 0 and log.strip().endswith("ok"), log[-3000:]
    assert stream_bytes(out) == stream_bytes(uninterrupted)
    assert stream_bytes(out, "validation") == stream_bytes(uninterrupted, "validation")
    leftovers = [q.name for q in out.rglob("*") if q.name.startswith(".") and q.name.endswith(".tmp")
                 or q.suffix in (".lock", ".idx") or q.name.endswith(".pos.json")]
    assert leftovers == []


@pytest.mark.slow
def test_local_text_larger_than_the_memory_limit(corpus, tmp_path):
    """RLIMIT_DATA (the heap and every private mapping) is set to 300 MB above what the process holds once its
    code is loaded; the text file is larger than that whole limit. The stage indexes and shuffles all of it,
    reading documents one at a time; it tokenizes up to the ladder's cap (here 2M tokens)."""
    import resource  # noqa: F401 (POSIX only: the test's premise)

    limit = 300 * 2**20
    probe = subprocess.run([sys.executable, "-c", IMPORTS + "print(vm)"], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    vm_after_imports = int(probe.stdout.split()[-1])
    big = tmp_path / "big.jsonl"
    docs = make_docs(400, 9, max_words=4000)
    with open(big, "wb") as f:  # larger than the whole limit, with 10% to spare
        i = written = 0
        while written < 1.1 * (vm_after_imports + limit):
            written += f.write((json.dumps({"text": f"{i} " + docs[i % len(docs)]}, ensure_ascii=False) + "\n").encode())
            i += 1
    size = big.stat().st_size
    out = tmp_path / "big"
    cap = 2_000_000
    p = start(make_spec(corpus, data=local_data(corpus, big), max_tokens=cap, shard_mb=16), out, tmp_path,
              limit_data=limit)
    log = p.communicate(timeout=1500)[0]
    assert p.returncode == 0 and log.strip().endswith("ok"), log[-3000:]
    limit_set = int(next(line for line in log.splitlines() if line.startswith("limit")).split()[1])
    assert size > limit_set
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_tokens"] == cap
    with open(big, "rb") as f:
        n_docs = sum(1 for _ in f)
    layout = json.loads((out / "train" / "layout.json").read_text())
    assert layout["documents"] == n_docs  # every document was indexed and shuffled


@pytest.mark.slow
def test_a_slurm_array_of_workers_then_the_task_writes_the_same_stream(corpus, uninterrupted, tmp_path):
    """`python -m pipeline.tokens PLAN INDEX --worker I --workers 2` as two array elements write every shard;
    the task itself then only finishes the split."""
    out = tmp_path / "array"
    t = task(make_spec(corpus), out)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"sweep": "x", "summary": {}, "tasks": [t.to_dict()]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.tokens", str(plan), "0", "--worker", str(i),
                               "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    for p in procs:
        log = p.communicate(timeout=900)[0]
        assert p.returncode == 0, log[-3000:]
    layout = json.loads((out / "train" / "layout.json").read_text())
    assert all((out / "train" / f"{k:05d}.json").is_file() for k in range(layout["shards"]))
    written = {k: (out / "train" / f"{k:05d}.bin").stat().st_mtime_ns for k in range(layout["shards"])}
    assert not (out / "train" / "manifest.json").exists()
    run_tokens(task(make_spec(corpus), out))
    assert stream_bytes(out) == stream_bytes(uninterrupted)
    assert {k: (out / "train" / f"{k:05d}.bin").stat().st_mtime_ns for k in written} == written  # none rewritten
    bad = subprocess.run([sys.executable, "-m", "pipeline.tokens", str(plan), "0", "--worker", "2", "--workers", "2"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "--worker must be in 0..1" in bad.stderr


def test_the_document_index_is_built_once_when_workers_find_it_missing_together(corpus, tmp_path, monkeypatch):
    """Two workers (threads here: flock locks an open file, not a process) open the same file's documents at
    once: one pass over the file builds the index, the other waits for it; both read the file's documents."""
    import threading

    from pipeline.sources import base

    built = []
    real = base._write_index

    def slow_write(path, index, chunk=1 << 16):
        built.append(index)
        time.sleep(0.5)  # long enough that the other worker arrives while it builds
        real(path, index, chunk=7)  # chunks of 7: the written index crosses several writes

    monkeypatch.setattr(base, "_write_index", slow_write)
    docs: list = [None, None]

    def open_docs(i: int) -> None:
        docs[i] = base.JsonlDocuments(corpus / "en.jsonl", tmp_path / "cache")

    threads = [threading.Thread(target=open_docs, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1
    with open(corpus / "en.jsonl", encoding="utf-8") as f:
        texts = [t for t in (json.loads(line)["text"] for line in f) if t]
    for d in docs:
        assert len(d) == len(texts) and [d[i] for i in (0, 1, len(d) - 1)] == [texts[0], texts[1], texts[-1]]
        assert [d[i] for i in range(len(d))] == texts
    assert not list((tmp_path / "cache" / "sources" / "index").glob("*.tmp"))


def test_a_file_without_documents_has_an_empty_index(tmp_path):
    from pipeline.sources import base

    path = write_jsonl(tmp_path / "empty.jsonl", ["", ""])
    docs = base.JsonlDocuments(path, tmp_path / "cache")
    assert len(docs) == 0 and docs.sizes().shape == (0,)
