"""Stage `tokens`: a language's text as one flat token stream, in a seeded document order, written in shards.

Data order is an artifact: a bounded source's documents (l10n, local) are shuffled once from the seed, a stream's
(mC4) are taken in the stream's order, and each document is tokenized and followed by EOS. Pretraining reads
position `step x count x raw_length` of the concatenation, so a resumed or distributed run sees the same text.

The stream of a split is cut into shards fixed before any work starts (`<split>/layout.json`): runs of the shuffled
documents of about `tokens.shard_mb` of text, or one file of the stream each. A shard's bytes depend only on its
documents, so any number of workers (`tokens.workers` local processes, or a SLURM array calling
`python -m pipeline.tokens PLAN INDEX --worker I --workers N`) write the same stream, and the stage's identity
leaves workers and shard size out. A shard being written commits its position (documents read, tokens written)
every `tokens.commit_seconds` and on SIGTERM/SIGUSR1, so a kill loses at most that much work and the rerun
continues from there; a shard is done when its marker `NNNNN.json` (tokens, documents, sha256) exists. The
finishing step cuts the stream at the cap (max_tokens; a stream's document limit) and writes `<split>/manifest.json`
with the exact token count of every shard: what `open_stream` reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.artifacts import atomic_write_json, clean_temporaries, read_json
from pipeline.config import DataConfig, TokensConfig
from pipeline.streams import token_dtype
from pipeline.typed import Spec

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
BATCH_DOCS = 512  # documents a tokenizer call, at most
BATCH_CHARS = 1 << 20  # characters a tokenizer call, at most: its encodings cost ~100 bytes a token while alive
PREEMPTED = 3  # a worker process's exit status after committing on a signal


# ------------------------------------------------------------------------------------------ the spec


@dataclass(frozen=True)
class TokensSpec(Spec):
    config: dict[str, Any]  # identity: language, data identity, max_tokens, seed (not workers or shard size)
    lang: str
    tokenizer_dir: str
    data: DataConfig
    cache: str
    max_tokens: int | None  # None: all of a bounded source
    seed: int
    tokens: TokensConfig = TokensConfig()


# ------------------------------------------------------------------------------------------ layout


def _layout(spec: TokensSpec, source, split: str, directory: Path) -> dict[str, Any]:
    """The split's shards, fixed once in `layout.json` (a rerun with another shard size keeps the first one)."""
    f = directory / "layout.json"
    if f.is_file():
        return read_json(f)
    if split == "validation":  # held-out text is small: one shard, read in order
        layout: dict[str, Any] = {"kind": "whole", "shards": 1}
    elif (docs := source.documents(spec.lang)) is not None:
        order = _order(len(docs), spec.seed)
        cum = np.cumsum(docs.sizes()[order], dtype=np.int64)
        step = max(1, int(spec.tokens.shard_mb * 2**20))
        cuts = np.searchsorted(cum, np.arange(step, int(cum[-1]) if len(cum) else 0, step), side="left") + 1
        bounds = sorted({0, len(docs), *(int(c) for c in cuts if 0 < c < len(docs))})
        layout = {"kind": "shuffled", "documents": len(docs), "bounds": bounds, "shards": len(bounds) - 1}
    else:
        files = source.text_files(spec.lang, split)
        layout = {"kind": "files", "files": files, "shards": len(files)}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(f, layout)
    return layout


def _order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([seed, 7919]).permutation(n)


def _shard_docs(spec: TokensSpec, source, split: str, layout: dict[str, Any]) -> Callable[[int], Iterator[str]]:
    """Shard k's documents, in order: a pure function of (source, seed, layout, k)."""
    if layout["kind"] == "whole":
        return lambda k: source.iter_texts(spec.lang, split)
    if layout["kind"] == "files":
        return lambda k: source.iter_file(spec.lang, split, layout["files"][k])
    docs = source.documents(spec.lang)
    if len(docs) != layout["documents"]:
        raise RuntimeError(f"the {spec.lang} text changed since its shards were laid out ({len(docs):,} documents, "
                           f"{layout['documents']:,} before); delete {spec.lang}'s tokens directory to start again")
    order = _order(len(docs), spec.seed)
    bounds = layout["bounds"]
    return lambda k: (docs[int(i)] for i in order[bounds[k]:bounds[k + 1]])


def _caps(spec: TokensSpec, source, split: str, layout: dict[str, Any]) -> tuple[int | None, int | None]:
    """(tokens, documents) at which the split's stream ends: the ladder's need, a stream's document limit."""
    if split == "validation":
        return None, None  # the source applies its own held-out limit
    docs = getattr(source, "max_docs", None) if layout["kind"] == "files" else None
    return spec.max_tokens, docs


# ------------------------------------------------------------------------------------------ writing


def _name(k: int) -> str:
    return f"{k:05d}"


def _committed(directory: Path, k: int) -> dict[str, Any] | None:
    f = directory / f"{_name(k)}.json"
    return read_json(f) if f.is_file() else None


def _prefix_done(directory: Path, before: int, caps: tuple[int | None, int | None],
                 seen: dict[int, dict[str, Any]]) -> bool:
    """Do the committed shards 0..before-1 already reach a cap (so shard `before` and later are not needed)?
    `seen` keeps the markers read so far (a marker never changes once written)."""
    max_tok, max_docs = caps
    if max_tok is None and max_docs is None:
        return False
    n_tok = n_docs = 0
    for k in range(before):
        m = seen.get(k) or _committed(directory, k)
        if m is None:
            return False
        seen[k] = m
        n_tok, n_docs = n_tok + m["tokens"], n_docs + m["docs"]
        if (max_tok is not None and n_tok >= max_tok) or (max_docs is not None and n_docs >= max_docs):
            return True
    return False


def _write_shard(directory: Path, k: int, docs: Iterator[str], tokenizer, dtype: np.dtype, commit_s: float,
                 stop, desc: str) -> bool:
    """Tokenize shard k, continuing from its committed position. Returns False when a stop was asked for
    (the position is committed), True when the shard is done."""
    name = _name(k)
    data, ends, pos_file = directory / f"{name}.bin", directory / f"{name}.idx", directory / f"{name}.pos.json"
    pos = read_json(pos_file) if pos_file.is_file() else {"docs": 0, "tokens": 0}
    for f, n in ((data, pos["tokens"] * dtype.itemsize), (ends, pos["docs"] * 8)):
        with open(f, "ab") as fh:  # drop what was written after the last commit
            fh.truncate(n)
    eos = tokenizer.eos_token_id
    n_docs, n_tok = pos["docs"], pos["tokens"]
    t0, last = time.perf_counter(), time.time()
    done_tok = 0
    it = itertools.islice(docs, n_docs, None)
    with open(data, "ab") as fd, open(ends, "ab") as fe:

        def commit() -> None:
            for fh in (fd, fe):
                fh.flush()
                os.fsync(fh.fileno())
            atomic_write_json(pos_file, {"docs": n_docs, "tokens": n_tok,
                                         "seconds": pos.get("seconds", 0.0) + time.perf_counter() - t0})

        while True:
            batch, chars = [], 0
            for doc in it:
                batch.append(doc)
                chars += len(doc)
                if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
                    break
            if not batch:
                break
            keep = [d for d in batch if d and d.strip()]
            ids = iter(tokenizer(keep, add_special_tokens=False).input_ids if keep else [])
            lens = np.zeros(len(batch), dtype=np.int64)
            parts = []
            for j, d in enumerate(batch):
                if d and d.strip():
                    x = next(ids)
                    x.append(eos)
                    parts.append(x)
                    lens[j] = len(x)
            flat = np.fromiter(itertools.chain.from_iterable(parts), dtype=dtype, count=int(lens.sum()))
            flat.tofile(fd)
            (n_tok + np.cumsum(lens)).astype(np.int64).tofile(fe)
            n_tok += len(flat)
            n_docs += len(batch)
            done_tok += len(flat)
            if stop.requested:
                commit()
                log.warning("%s: shard %s committed at document %s, %s tokens", desc, name, f"{n_docs:,}", f"{n_tok:,}")
                return False
            if time.time() - last >= commit_s:
                commit()
                last = time.time()
        commit()
    sha = hashlib.sha256()
    with open(data, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    atomic_write_json(directory / f"{name}.json", {"file": data.name, "tokens": n_tok, "docs": n_docs,
                                                   "sha256": sha.hexdigest(),
                                                   "seconds": round(pos.get("seconds", 0.0) + time.perf_counter() - t0, 3)})
    pos_file.unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    log.info("%s: shard %s done, %s tokens in %s documents (%s tokens/s)", desc, name, f"{n_tok:,}", f"{n_docs:,}",
             f"{done_tok / max(dt, 1e-9):,.0f}")
    return True


@contextlib.contextmanager
def _shard_lock(directory: Path, k: int, wait: bool):
    """One writer a shard: a second worker on the same shard (a requeued array element, the finishing task)
    skips it, or waits for it with `wait`. The lock dies with its process."""
    with open(directory / f"{_name(k)}.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def work(spec: TokensSpec, out: Path, split: str, worker: int = 0, workers: int = 1, stop=None,
         wait: bool = False) -> bool:
    """Write the shards k = worker, worker + workers, ... of a split that are not done and still needed.
    Returns False when stopped by a signal (positions committed)."""
    from pipeline.distributed import StopFlag
    from pipeline.sources import get_source
    from pipeline.vocab import load_tokenizer

    directory = out / split
    if (directory / "manifest.json").is_file():  # finished (its markers are gone): nothing to redo
        return True
    source = get_source(spec.data, Path(spec.cache))
    layout = _layout(spec, source, split, directory)
    caps = _caps(spec, source, split, layout)
    tokenizer = load_tokenizer(spec.tokenizer_dir)
    dtype = token_dtype(len(tokenizer))
    shard_docs = _shard_docs(spec, source, split, layout)
    desc = f"tokens {spec.lang} {split}"
    seen: dict[int, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        stop = stop if stop is not None else stack.enter_context(StopFlag())
        for k in range(worker, layout["shards"], workers):
            if stop.requested:
                return False
            if _committed(directory, k) is not None or _prefix_done(directory, k, caps, seen):
                continue
            with _shard_lock(directory, k, wait) as mine:
                if not mine or _committed(directory, k) is not None:
                    continue
                if not _write_shard(directory, k, shard_docs(k), tokenizer, dtype, spec.tokens.commit_seconds,
                                    stop, desc):
                    return False
    return True


def finish(out: Path, split: str, caps: tuple[int | None, int | None], dtype: np.dtype) -> dict[str, int]:
    """Cut the split at its caps and write its manifest (the commit point); then drop what lies past the cut.
    Idempotent: a rerun after a kill here redoes the cut from the manifest."""
    directory = out / split
    mf = directory / "manifest.json"
    if not mf.is_file():
        layout = read_json(directory / "layout.json")
        max_tok, max_docs = caps
        shards, n_tok, n_docs = [], 0, 0
        for k in range(layout["shards"]):
            m = _committed(directory, k)
            if m is None:
                raise RuntimeError(f"{directory}: shard {_name(k)} is not done")
            tok, docs = m["tokens"], m["docs"]
            if max_docs is not None and n_docs + docs >= max_docs:  # the stream's document limit
                docs = max_docs - n_docs
                tok = int(np.fromfile(directory / f"{_name(k)}.idx", dtype=np.int64, count=docs)[-1]) if docs else 0
            if max_tok is not None and n_tok + tok >= max_tok:
                tok = max_tok - n_tok
                ends = np.fromfile(directory / f"{_name(k)}.idx", dtype=np.int64, count=docs)
                docs = int(np.searchsorted(ends, tok, side="left")) + 1  # documents with a token before the cut
                docs = min(docs, len(ends))
            shards.append({"file": m["file"], "tokens": tok, "docs": docs, "seconds": m.get("seconds"),
                           "sha256": m["sha256"] if tok == m["tokens"] else None})
            n_tok, n_docs = n_tok + tok, n_docs + docs
            if (max_tok is not None and n_tok >= max_tok) or (max_docs is not None and n_docs >= max_docs):
                break
        for s in shards:
            if s["sha256"] is None:  # a cut shard: hash what stays
                s["sha256"] = _sha256_prefix(directory / s["file"], s["tokens"] * dtype.itemsize)
        atomic_write_json(mf, {"dtype": dtype.name, "tokens": n_tok, "docs": n_docs, "shards": shards})
    manifest = read_json(mf)
    keep = {s["file"] for s in manifest["shards"]}
    for s in manifest["shards"]:
        f = directory / s["file"]
        if f.stat().st_size > s["tokens"] * dtype.itemsize:
            with open(f, "r+b") as fh:
                fh.truncate(s["tokens"] * dtype.itemsize)
    for p in directory.iterdir():  # shards past the cut; markers, positions, locks, document ends: all in the manifest
        past_cut = p.suffix == ".bin" and p.name not in keep
        if past_cut or p.suffix in (".lock", ".idx") or (p.name[:5].isdigit() and p.suffix == ".json"):
            p.unlink(missing_ok=True)
    clean_temporaries(directory)
    return {"tokens": manifest["tokens"], "docs": manifest["docs"], "shards": len(manifest["shards"])}


def _sha256_prefix(path: Path, n: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while n > 0:
            block = f.read(min(n, 1 << 22))
            if not block:
                break
            sha.update(block)
            n -= len(block)
    return sha.hexdigest()


def _worker_main(spec_file: str, out: str, split: str, worker: int, workers: int) -> int:
    """A worker process (`_run_workers`): one thread of tokenization each (the processes are the parallelism)."""
    from pipeline.logs import setup_logging

    setup_logging()
    spec = TokensSpec.from_dict(read_json(Path(spec_file)))
    return 0 if work(spec, Path(out), split, worker, workers) else PREEMPTED


def _run_workers(spec: TokensSpec, out: Path, split: str, stop) -> bool:
    """`tokens.workers` processes on one split; a signal to this process is passed on to each."""
    import signal
    import subprocess

    n = spec.tokens.workers
    spec_file = out / split / "worker-spec.json"
    atomic_write_json(spec_file, spec.to_dict())
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; from pipeline.tokens import _worker_main; "
                               f"sys.exit(_worker_main({str(spec_file)!r}, {str(out)!r}, {split!r}, {i}, {n}))"],
                              env=env) for i in range(n)]
    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if stop.requested and not forwarded:
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGUSR1)
                forwarded = True
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait()
        spec_file.unlink(missing_ok=True)
    # A worker signalled before it could install its handler dies of the signal: stopped, not failed.
    stopped = (0, PREEMPTED, -signal.SIGUSR1) if stop.requested else (0, PREEMPTED)
    bad = [p.returncode for p in procs if p.returncode not in stopped]
    if bad:
        raise RuntimeError(f"tokens {spec.lang} {split}: a worker died (exit status {bad[0]}); "
                           "rerun to continue from the committed shards")
    return not stop.requested and all(p.returncode == 0 for p in procs)


def run(task) -> None:
    from pipeline.distributed import StopFlag
    from pipeline.sources import get_source
    from pipeline.training import Preempted
    from pipeline.vocab import load_tokenizer

    spec: TokensSpec = task.spec
    out = Path(task.dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_temporaries(out)  # a killed older version's `.train.bin.<pid>.tmp`, a half-written json
    for split in SPLITS:
        clean_temporaries(out / split)
    source = get_source(spec.data, Path(spec.cache))
    vocab = len(load_tokenizer(spec.tokenizer_dir))
    dtype = token_dtype(vocab)
    counts = {}
    with StopFlag() as stop:
        for split in SPLITS:
            if not (out / split / "manifest.json").is_file():
                layout = _layout(spec, source, split, out / split)
                parallel = split == "train" and spec.tokens.workers > 1 and layout["shards"] > 1
                if parallel and not _run_workers(spec, out, split, stop):
                    raise Preempted(f"{task.name}: stopped by signal; rerun the same command to continue", stop.signal)
                # One process (or what workers left: a died worker's shards, another array's) finishes the split.
                if not work(spec, out, split, stop=stop, wait=True):
                    raise Preempted(f"{task.name}: stopped by signal; rerun the same command to continue", stop.signal)
            counts[split] = finish(out, split, _caps(spec, source, split, read_json(out / split / "layout.json")), dtype)
    if counts["train"]["tokens"] == 0:
        raise RuntimeError(f"no {spec.lang} training text in the {source.name} source")
    meta = {"lang": spec.lang, "train_tokens": counts["train"]["tokens"], "train_docs": counts["train"]["docs"],
            "train_shards": counts["train"]["shards"], "validation_tokens": counts["validation"]["tokens"],
            "validation_docs": counts["validation"]["docs"], "dtype": dtype.name, "vocab_size": vocab}
    atomic_write_json(out / "meta.json", meta)
    log.info("tokens %s: %s train tokens in %s documents (%d shards), %s validation tokens", spec.lang,
             f"{meta['train_tokens']:,}", f"{meta['train_docs']:,}", meta["train_shards"],
             f"{meta['validation_tokens']:,}")


def main(argv: list[str] | None = None) -> int:
    """`python -m pipeline.tokens PLAN INDEX --worker I --workers N`: one worker of a tokens task's train split,
    as an element of a SLURM array (`--worker $SLURM_ARRAY_TASK_ID`); the task itself then finishes the split."""
    import argparse

    from pipeline.logs import setup_logging

    ap = argparse.ArgumentParser(prog="python -m pipeline.tokens")
    ap.add_argument("plan")
    ap.add_argument("index", type=int)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--workers", type=int, required=True)
    a = ap.parse_args(argv)
    if not 0 <= a.worker < a.workers:
        print(f"error: --worker must be in 0..{a.workers - 1}", file=sys.stderr)
        return 2
    setup_logging()
    task = read_json(Path(a.plan))["tasks"][a.index]  # plan.json read as data: pipeline.plan imports this module
    if task["stage"] != "tokens":
        print(f"error: task {a.index} is a {task['stage']} task, not tokens", file=sys.stderr)
        return 2
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ok = work(TokensSpec.from_dict(task["spec"]), Path(task["dir"]), "train", a.worker, a.workers)
    return 0 if ok else PREEMPTED


if __name__ == "__main__":
    raise SystemExit(main())
