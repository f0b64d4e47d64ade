"""Orchestration: download -> extract (parallel) -> pair help pages -> split -> filter mono -> write + manifest.

Output layout (the contract other stages read):
    <cache>/l10n/manifest.json, LICENSES.md, mono/{en,de,fr,ro}.jsonl,
    pairs/en-XX/{train,validation,test,validation_indomain,test_indomain}.jsonl
test/validation are whole held-out packages (an unseen domain); the *_indomain sets are a sample of the other
packages' pairs with every near-duplicate of them out of train (pipeline.corpus.indomain). Every held-out sentence
of either kind is also out of the monolingual text.
Every file is written atomically; the manifest is written last, so its presence means the build is complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from . import packages as P
from .clean import PH
from .extract import LANGS, Extract, extract_package, help_docs, pair_gimphelp, pair_lohelp
from .fetch import download, licence, read_copyright
from .indomain import indomain_split, norm
from .split import filter_doc, pick_heldout, split_pairs, text_keys

VERSION = 2  # 2: the in-domain held-out sets
SPLITS = ("train", "validation", "test", "validation_indomain", "test_indomain")
HELDOUT = {  # per pair: test/validation targets (pairs) and the package sizes that count as "mid-sized"
    "test": 2500,
    "validation": 1500,
    "min_pkg": 100,
    "max_pkg": 1200,
    "seed": "l10n-heldout-v1",
}
INDOMAIN = {"test": 2000, "validation": 1000, "seed": "indomain-v1", "similarity": 85.0}


def corpus_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "l10n"


def built_version(out: Path) -> int | None:
    """The builder version of the corpus at `out` (None when there is none or it is unreadable)."""
    try:
        return json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None


def default_cache() -> Path:
    return Path(os.environ.get("DS_CACHE") or Path(__file__).resolve().parents[2] / ".cache")


def write_atomic(path: Path, chunks) -> None:
    """Write an iterable of str to path via a temp file in the same directory, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonl(rows) -> object:
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _extract(task: tuple[str, str, str | None]) -> Extract:
    name, deb, lang = task
    ex = extract_package(name, Path(deb), lang)
    # plain dicts pickle smaller and do not drag the default factories along
    ex.pairs, ex.mono, ex.help = dict(ex.pairs), dict(ex.mono), dict(ex.help)
    return ex


def build(
    cache_dir: Path, lean: bool = False, force: bool = False, jobs: int | None = None, log=print
) -> Path:
    """Build the corpus under corpus_dir(cache_dir) and return that directory. Raises fetch.AptUnavailable."""
    out = corpus_dir(cache_dir)
    manifest = out / "manifest.json"
    if manifest.exists() and not force and built_version(out) == VERSION:
        return out
    if manifest.exists():
        manifest.unlink()  # the old files are no longer a complete build
    t0 = time.time()
    names = P.all_packages(lean)
    debs = download(names, Path(cache_dir) / "l10n-debs", log=log)
    t_dl = time.time()

    # extract: biggest packages first so that two workers finish together
    tasks = sorted(
        ((n, str(d.path), P.FORTUNE_LANG.get(n)) for n, d in debs.items()),
        key=lambda t: -os.path.getsize(t[1]),
    )
    exs: dict[str, Extract] = {}
    pool = Pool(jobs or os.cpu_count() or 1)
    try:
        bar = tqdm(
            pool.imap_unordered(_extract, tasks),
            total=len(tasks),
            desc="extract",
            disable=not sys.stderr.isatty(),
        )
        for ex in bar:
            exs[ex.pkg] = ex
        t_ex = time.time()
        return _assemble(exs, debs, out, pool, lean, cache_dir, log, t0, t_dl, t_ex)
    finally:
        pool.terminate()


def _split_task(args: tuple) -> tuple:
    pair, pk = args
    sizes = {p: len({e for e, _ in prs}) for p, prs in pk.items()}
    total = sum(sizes.values())
    n_test = min(HELDOUT["test"], total // 20)
    n_val = min(HELDOUT["validation"], total // 30)
    test_pkgs, val_pkgs = pick_heldout(
        sizes, n_test, n_val, HELDOUT["min_pkg"], HELDOUT["max_pkg"], HELDOUT["seed"]
    )
    sp, h_en, h_tg = split_pairs(pk, test_pkgs, val_pkgs)
    train = sp["train"]
    distinct = len({norm(e) for e, _, _ in train})  # held-out rows are one per normalised English text
    idx = indomain_split([(e, t) for e, t, _ in train], min(INDOMAIN["test"], distinct // 20),
                         min(INDOMAIN["validation"], distinct // 40), INDOMAIN["seed"], INDOMAIN["similarity"])
    sp = {**sp, **{f"{s}_indomain": [train[i] for i in idx[s]] for s in ("test", "validation")},
          "train": [train[i] for i in idx["train"]]}
    for s in ("test_indomain", "validation_indomain"):
        h_en = h_en.union(*(text_keys(e) for e, _, _ in sp[s]))
        h_tg = h_tg.union(*(text_keys(t) for _, t, _ in sp[s]))
    return pair, sp, h_en, h_tg, {"test": test_pkgs, "validation": val_pkgs}


def _mono_task(args: tuple) -> tuple:
    lang, docs, heldout_pkgs, held = args
    seen: set[str] = set()
    kept = []
    for pkg, d in docs:
        if pkg in heldout_pkgs:
            continue
        d = filter_doc(d, held, seen)
        if d:
            kept.append((pkg, d))
    return lang, kept


def _assemble(exs, debs, out, pool, lean, cache_dir, log, t0, t_dl, t_ex) -> Path:
    # licences; a doc dir that is a symlink (gcc-12-locales -> gcc-12-base) points at the package that has it
    lic: dict[str, str] = {}
    links = {
        n: ex.copyright_link.strip("/").split("/")[0]
        for n, ex in exs.items()
        if not ex.copyright and ex.copyright_link
    }
    targets = sorted(set(links.values()) - set(exs))
    extra = download(targets, Path(cache_dir) / "l10n-debs", log=log) if targets else {}
    for n, ex in exs.items():
        text = ex.copyright
        if not text and n in links:
            t = links[n]
            text = exs[t].copyright if t in exs else read_copyright(extra[t].path, t) if t in extra else None
            text = text or f"see the package {t}"
        lic[n] = licence(text)

    # pairs per (pair, source package); help pages join an English package with a target-language one
    by_pair: dict[str, dict[str, list]] = {f"en-{lang}": defaultdict(list) for lang in LANGS}
    mono_docs: dict[str, list[tuple[str, str]]] = defaultdict(list)  # lang -> [(pkg, doc)]
    for n in sorted(exs):
        ex = exs[n]
        for lang, prs in ex.pairs.items():
            by_pair[f"en-{lang}"][n] += prs
        for lang, docs in ex.mono.items():
            mono_docs[lang] += [(n, d) for d in docs]
    for table, join in ((P.LO_HELP, pair_lohelp), (P.GIMP_HELP, pair_gimphelp)):
        en = exs.get(table["en"])
        if en is None:
            continue
        mono_docs["en"] += [(en.pkg, d) for d in help_docs(en.help.get("en", {}))]
        for lang in LANGS:
            tex = exs.get(table.get(lang, ""))
            if tex is None:
                continue
            prs, pages = join(en.help.get("en", {}), tex.help.get(lang, {}))
            by_pair[f"en-{lang}"][tex.pkg] += prs
            mono_docs[lang] += [(tex.pkg, d) for _, d in sorted(pages.items())]

    # held-out packages and splits, per pair; then monolingual text: held-out packages dropped whole, lines
    # holding a held-out sentence or seen before dropped (both phases one task per pair / language)
    splits, held_keys, report = {}, defaultdict(set), {}
    for pair, sp, h_en, h_tg, rep in pool.imap_unordered(
        _split_task, [(p, dict(pk)) for p, pk in by_pair.items()]
    ):
        splits[pair], report[pair] = sp, rep
        held_keys["en"] |= h_en
        held_keys[pair[3:]] |= h_tg
    splits, report = dict(sorted(splits.items())), dict(sorted(report.items()))
    heldout_pkgs = {p for r in report.values() for ps in r.values() for p in ps}
    langs = ("en", *LANGS)
    tasks = [(lang, mono_docs.get(lang, []), heldout_pkgs, held_keys[lang]) for lang in langs]
    mono = dict(pool.imap_unordered(_mono_task, tasks))
    mono = {lang: mono[lang] for lang in langs}
    t_split = time.time()

    # write: data files, LICENSES.md, then the manifest
    for pair, sp in splits.items():
        lang = pair[3:]
        for s in SPLITS:
            rows = ({"translation": {"en": e, lang: t}, "source": p} for e, t, p in sp[s])
            write_atomic(out / "pairs" / pair / f"{s}.jsonl", _jsonl(rows))
    for lang, docs in mono.items():
        write_atomic(out / "mono" / f"{lang}.jsonl", _jsonl({"text": d, "source": p} for p, d in docs))

    kept = Counter((pair, r[2]) for pair, sp in splits.items() for rows in sp.values() for r in rows)
    mono_n, mono_w = Counter(), Counter()
    for lang, docs in mono.items():
        for p, d in docs:
            mono_n[lang, p] += 1
            mono_w[lang, p] += len(d.split())
    pkgs = {}
    for n in sorted(exs):
        contrib_pairs = {}
        for pair, pk in by_pair.items():
            if pk.get(n):
                where = (
                    "test"
                    if n in report[pair]["test"]
                    else "validation"
                    if n in report[pair]["validation"]
                    else "train"
                )
                contrib_pairs[pair] = {"extracted": len(pk[n]), "split": where, "kept": kept[pair, n]}
        contrib_mono = {
            lang: {"docs": mono_n[lang, n], "words": mono_w[lang, n]} for lang in mono if mono_n[lang, n]
        }
        d = debs[n]
        pkgs[n] = {
            "version": d.version,
            "deb": d.path.name,
            "sha256": d.sha256,
            "licence": lic[n],
            "pairs": contrib_pairs,
            "mono": contrib_mono,
        }
    write_atomic(out / "LICENSES.md", _licences_md(pkgs))
    t_end = time.time()
    man = {
        "corpus": "l10n",
        "version": VERSION,
        "built": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": {
            "download": round(t_dl - t0, 1),
            "extract": round(t_ex - t_dl, 1),
            "split": round(t_split - t_ex, 1),
            "write": round(t_end - t_split, 1),
            "total": round(t_end - t0, 1),
        },
        "params": {
            "lean": lean,
            "placeholder_token": PH,
            "min_en_words": 4,
            "max_en_words": 150,
            "max_char_ratio": 2.5,
            "heldout": HELDOUT,
            "indomain": INDOMAIN,
            "debian": _debian_release(),
        },
        "pairs": {
            pair: {**{s: len(sp[s]) for s in SPLITS}, "heldout_packages": report[pair]}
            for pair, sp in splits.items()
        },
        "mono": {
            lang: {
                "docs": len(docs),
                "words": sum(len(d.split()) for _, d in docs),
                "chars": sum(len(d) for _, d in docs),
            }
            for lang, docs in mono.items()
        },
        "packages": pkgs,
    }
    write_atomic(out / "manifest.json", [json.dumps(man, ensure_ascii=False, indent=1) + "\n"])
    return out


def _debian_release() -> str:
    try:
        return Path("/etc/debian_version").read_text().strip()
    except OSError:
        return "unknown"


def _licences_md(pkgs: dict) -> list[str]:
    lines = [
        "# Licences of the l10n corpus\n\n",
        "**Built locally, never redistribute.** These texts come from the translations shipped in Debian\n",
        "packages and keep their packages' licences (GPL, LGPL, MPL-2.0, GFDL, CC-BY-SA, ...): use them for your\n",
        "own experiments; do not publish or commit this directory. Full texts: `/usr/share/common-licenses/` and\n",
        "each package's `usr/share/doc/PKG/copyright` (inside its .deb in the cache's l10n-debs/).\n\n",
        "| package | version | licence |\n|---|---|---|\n",
    ]
    lines += [
        f"| {n} | {p['version']} | {p['licence'].replace('|', '/')} |\n" for n, p in sorted(pkgs.items())
    ]
    return lines
