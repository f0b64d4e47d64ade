"""The bad-input catalogue (issue #8): every kind of bad configuration or data is refused at start-up with ONE
line that names the problem, exit status 2, no traceback and nothing written; the inputs that are not
refusals (NaN metrics, too few Dp points, bf16 without CUDA) give a documented outcome instead of a crash.

test_config.py covers unknown group names (sweep, scale, model, data, executor), unknown keys and value
checks of the config; this file covers what needs data, files, the machine or the command line as a whole.
Every case runs at smoke scale with `stage=plan` where it can (nothing trains: a refusal that did not come
would print a plan, not start a sweep).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli, compose

from pipeline.config import load_config

SMOKE = ["+sweep=en_de", "scale=smoke"]


def refused(r, *words: str) -> str:
    """The contract of a refusal: exit 2, one line on stderr starting `error: `, no traceback."""
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def run_plan(tmp_path: Path, *args: str, env: dict | None = None):
    art, rep = tmp_path / "artifacts", tmp_path / "reports"
    r = cli(*args, f"paths.artifacts={art}", f"paths.reports={rep}", env=env)
    return r, art, rep


def nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "reports").exists()


# ----------------------------------------------------------------------------------- the sweep's data


@pytest.fixture
def needs_corpus(l10n_corpus):
    return l10n_corpus


def test_negative_mixture_weight(tmp_path):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", "sweep.tasks.en-de.mixtures.en50_de50.en=-0.5",
                       "sweep.tasks.en-de.mixtures.en50_de50.de=1.5")
    refused(r, "sweep.tasks.en-de.mixtures.en50_de50.en", "weights must be numbers >= 0")
    nothing_written(tmp_path)


def test_mixture_share_not_a_whole_number_of_sequences(tmp_path, needs_corpus):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", "pretrain.batch_size=15", "pretrain.micro_batch_size=5")
    refused(r, "pretrain.batch_size", "not a whole number of sequences")
    nothing_written(tmp_path)


# Data too small for the sweep: a run is refused before anything is written; stage=plan still prints the
# budget (the paper's scale planned on a laptop) and says what a run would meet.
def test_dp_ladder_that_would_repeat_text(tmp_path, needs_corpus):
    r, _, _ = run_plan(tmp_path, *SMOKE, "pretrain.dp_ladder=[1e6,1e9]")
    refused(r, "pretrain.dp_ladder", "would repeat de text", "dp_max")
    nothing_written(tmp_path)


def test_plan_of_a_sweep_too_big_for_the_data_prints_the_budget_and_the_problem(tmp_path, needs_corpus):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", "pretrain.dp_ladder=[1e6,1e9]", "finetune.df_ladder=[100,1e8]")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "GPU-hours" in r.stdout
    problems = [x for x in r.stdout.splitlines() if "NOT ENOUGH DATA" in x]
    assert len(problems) == 3, r.stdout  # en and de text, and the en-de finetuning pool
    assert "would repeat de text" in r.stdout and "larger than the" in r.stdout


def test_dp_max_below_the_smallest_rung(tmp_path, needs_corpus):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", "sweep.tasks.en-de.dp_max=100")
    refused(r, "sweep.tasks.en-de.dp_max", "below the smallest rung")
    nothing_written(tmp_path)


def test_df_larger_than_the_finetuning_pool(tmp_path, needs_corpus):
    r, _, _ = run_plan(tmp_path, *SMOKE, "finetune.df_ladder=[100,1e8]")
    refused(r, "finetune.df_ladder", "larger than the", "training pairs of en-de")
    nothing_written(tmp_path)


def test_l10n_corpus_without_a_language(tmp_path, needs_corpus):
    # a copy of the corpus (links) that lacks the German text
    d = tmp_path / "l10n"
    (d / "mono").mkdir(parents=True)
    (d / "manifest.json").symlink_to(needs_corpus / "manifest.json")
    (d / "pairs").symlink_to(needs_corpus / "pairs")
    (d / "mono" / "en.jsonl").symlink_to(needs_corpus / "mono" / "en.jsonl")
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", f"data.l10n.dir={d}")
    refused(r, "data.l10n.dir", "no de text")
    nothing_written(tmp_path)


def test_l10n_corpus_not_built(tmp_path):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", f"data.l10n.dir={tmp_path / 'nowhere'}")
    refused(r, "data.l10n.dir", "not built", "make corpus")
    nothing_written(tmp_path)


# ------------------------------------------------------------------------------- data=local jsonl files

GOOD_PAIR = {"translation": {"en": "Open the file", "de": "Datei öffnen"}}


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def local_files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    files = {"en": jsonl(d / "en.jsonl", [{"text": f"english text {i}"} for i in range(20)]),
             "de": jsonl(d / "de.jsonl", [{"text": f"deutscher Text {i}"} for i in range(20)])}
    for split in ("train", "validation", "test"):
        files[split] = jsonl(d / f"{split}.jsonl", [GOOD_PAIR] * 20)
    return files


def local_args(files: dict[str, Path], tmp_path: Path, **replace: Path) -> list[str]:
    f = {**files, **replace}
    return ["data=local", f"paths.cache={tmp_path / 'cache'}",
            *(f"+data.local.mono.{lang}={f[lang]}" for lang in ("en", "de") if f.get(lang)),
            *(f"+data.local.pairs.en-de.{s}={f[s]}" for s in ("train", "validation", "test"))]


def bad_train_file(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / "in" / f"bad-{kind}.jsonl"
    good = (json.dumps(GOOD_PAIR, ensure_ascii=False) + "\n").encode()
    body = {
        "empty": b"",
        "blank-lines": b"\n  \n\n",
        "malformed": good + b'{"translation": {"en": "a",\n',
        "not-an-object": good + b'["en", "de"]\n',
        "no-translation": good + b'{"text": "hello"}\n',
        "no-language": good + b'{"translation": {"en": "hello", "fr": "bonjour"}}\n',
        "invalid-utf8": good + b'{"translation": {"en": "caf\xe9", "de": "Kaffee"}}\n',
        "empty-string": good + b'{"translation": {"en": "", "de": "leer"}}\n',
        "not-a-string": good + b'{"translation": {"en": 42, "de": "zweiundvierzig"}}\n',
    }[kind]
    p.write_bytes(body)
    return p


LOCAL_CASES = [
    ("empty", "empty file"),
    ("blank-lines", "empty file"),
    ("malformed", ":2: malformed JSON"),
    ("not-an-object", ":2: expected a JSON object"),
    ("no-translation", ":2: missing key 'translation'"),
    ("no-language", ":2: missing language key 'de'"),
    ("invalid-utf8", ":2: invalid UTF-8"),
    ("empty-string", ":2: translation['en'] is empty"),
    ("not-a-string", ":2: translation['en'] must be a string"),
]


@pytest.mark.parametrize("kind,words", LOCAL_CASES, ids=[c[0] for c in LOCAL_CASES])
def test_bad_local_jsonl(tmp_path, local_files, kind, words):
    bad = bad_train_file(tmp_path, kind)
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", *local_args(local_files, tmp_path, train=bad))
    refused(r, "data.local.pairs.en-de.train", str(bad), words)
    nothing_written(tmp_path)
    assert not (tmp_path / "cache").exists()


def test_local_language_without_text(tmp_path, local_files):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", *local_args({**local_files, "de": None}, tmp_path))
    refused(r, "data.local.mono.de", "no de text")
    nothing_written(tmp_path)


def test_local_unknown_key(tmp_path, local_files):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", *local_args(local_files, tmp_path), "+data.local.monolingual=x")
    refused(r, "data.local.monolingual", "unknown key")
    nothing_written(tmp_path)


# ------------------------------------------------------------------------------------- the machine


def test_unwritable_artifacts_directory(tmp_path, needs_corpus):
    # /sys refuses new files even to root (permission bits do not); the check creates a probe file
    if os.access("/sys", os.W_OK) and Path("/sys").is_dir():
        try:
            (Path("/sys") / ".ds-probe").touch()
        except OSError:
            pass
        else:
            pytest.skip("/sys is writable here")
    r = cli(*SMOKE, "stage=plan", "paths.artifacts=/sys/ds-artifacts", f"paths.reports={tmp_path / 'reports'}")
    refused(r, "paths.artifacts", "/sys/ds-artifacts is not writable")
    assert not (tmp_path / "reports").exists()


def test_artifacts_path_below_a_file(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("")
    r = cli(*SMOKE, "stage=plan", f"paths.artifacts={f / 'artifacts'}", f"paths.reports={tmp_path / 'reports'}")
    refused(r, "paths.artifacts", "is not a directory")


def test_slurm_without_sbatch(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    r, _, _ = run_plan(tmp_path, *SMOKE, "executor=slurm", env={"PATH": str(empty)})
    refused(r, "executor", "sbatch")
    nothing_written(tmp_path)


def test_bf16_without_cuda_runs_on_the_cpu_with_a_warning(monkeypatch, caplog):
    """The documented CPU fallback: pretrain.dtype=bf16 on a machine without CUDA is bf16 autocast on the CPU,
    said in one warning line at start-up (a login node submitting to SLURM is not warned: its jobs get GPUs)."""
    import torch

    from pipeline.run import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        check_device(load_config(compose([*SMOKE, "pretrain.dtype=bf16"])))
        check_device(load_config(compose([*SMOKE, "pretrain.dtype=bf16", "executor=slurm"])))
        check_device(load_config(compose([*SMOKE, "pretrain.dtype=auto"])))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "pretrain.dtype=bf16 without CUDA" in warned[0] and "CPU" in warned[0], warned


# --------------------------------------------------------------------------- the command line as a whole


def test_multirun_with_a_bad_value_refuses_before_any_run(tmp_path):
    r, _, _ = run_plan(tmp_path, "-m", "+sweep=en_de,en_fr", "scale=smoke", "stage=plan", "pretrain.lr=0")
    refused(r, "pretrain.lr", "must be > 0", "in the run with +sweep=en_de")
    nothing_written(tmp_path)  # Hydra's multirun folder (under artifacts) was never created


def test_multirun_with_an_unknown_key(tmp_path):
    r, _, _ = run_plan(tmp_path, "-m", "+sweep=en_de,en_fr", "scale=smoke", "stage=plan", "pretrain.nokey=1")
    refused(r, "pretrain.nokey")
    nothing_written(tmp_path)


def test_not_a_mapping_for_a_group(tmp_path):
    r, _, _ = run_plan(tmp_path, *SMOKE, "stage=plan", "pretrain=7")
    refused(r, "pretrain")
    nothing_written(tmp_path)


# ------------------------------------------------------------------------------ results tables (report)


RUNGS = (0, *(16384 * 2**k for k in range(6)))  # smoke holds the largest rung out: 5 fit points a curve


def results_table(path: Path, dps=RUNGS, **set_values) -> Path:
    """A results table as collect writes it: two mixtures, one Df, BLEU rising and CE falling with Dp."""
    from pipeline.results import columns

    rows = []
    for mix, align in (("en50_de50", 1.0), ("en100", 0.7)):
        for dp in dps:
            u = math.log1p(dp / 8192)
            rows.append({c: None for c in columns()} | {
                "task": "en-de", "src": "en", "tgt": "de", "mixture": mix, "alignment": align, "model": "t5_tiny",
                "params": 552_000, "dp": dp, "dp_rung": dp, "df": 200, "seed": 0, "method": "full", "lr": 1e-3,
                "selected": True, "bleu": 2.0 + 1.5 * u * align, "chrf": 10.0 + u, "ce": 3.0 + 4.0 / (1 + u * align),
                "bp": 1.0, "gen_len": 9.0, "finetune_steps": 30, "status": "ok", "reason": ""})
    df = pd.DataFrame(rows, columns=columns())
    for col, (where, value) in set_values.items():
        df.loc[where(df), col] = value
    df.to_csv(path, index=False)
    return path


def report(tmp_path: Path, table: Path, *extra: str):
    return cli(*SMOKE, "stage=report", f"paths.results={table}", f"paths.reports={tmp_path / 'reports'}",
               f"paths.artifacts={tmp_path / 'artifacts'}", *extra)


def test_results_table_with_missing_columns(tmp_path):
    table = results_table(tmp_path / "results.csv")
    pd.read_csv(table).drop(columns=["ce", "status"]).to_csv(table, index=False)
    r = report(tmp_path, table)
    refused(r, "paths.results", "missing column(s) ce, status")
    nothing_written(tmp_path)


def test_results_table_that_does_not_exist(tmp_path):
    r = report(tmp_path, tmp_path / "nope.csv")
    refused(r, "paths.results", "no such file")
    nothing_written(tmp_path)


def test_results_table_that_is_not_a_table(tmp_path):
    p = tmp_path / "results.csv"
    p.write_bytes(b"\x00\xff\xfe garbage")
    r = report(tmp_path, p)
    refused(r, "paths.results")
    nothing_written(tmp_path)


def report_files(tmp_path: Path) -> tuple[str, pd.DataFrame]:
    out = tmp_path / "reports" / "en_de"
    return (out / "report.md").read_text(), pd.read_csv(out / "fits.csv")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_metrics_make_cells_unusable_not_a_crash(tmp_path, value):
    # one mixture's three largest rungs have a non-finite BLEU: that curve keeps too few points to fit and
    # says so; the other mixture is fitted; the report is written, exit status 0
    table = results_table(tmp_path / "results.csv",
                          bleu=(lambda d: (d["mixture"] == "en100") & (d["dp"] >= 131072), value))
    r = report(tmp_path, table)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    md, fits = report_files(tmp_path)
    bl = fits[fits["law"] == "bleu_log"].set_index("mixture")
    assert str(bl.loc["en50_de50", "ok"]) == "True"
    assert str(bl.loc["en100", "ok"]) == "False" and "too few points" in bl.loc["en100", "reason"]
    assert "failed: too few points" in md


def test_too_few_dp_points_is_reported_not_crashed(tmp_path):
    table = results_table(tmp_path / "results.csv", dps=RUNGS[:4])  # 3 rungs: 2 fit points, 1 held out
    r = report(tmp_path, table)
    assert r.returncode == 0, r.stderr[-3000:]
    md, fits = report_files(tmp_path)
    assert not fits["ok"].astype(str).eq("True").any()
    laws = fits[fits["law"].isin(["bleu_log", "power"])]
    assert len(laws) == 4 and laws["reason"].str.contains("too few points to fit").all(), laws["reason"].tolist()
    assert "too few points to fit" in md

