"""The collect stage: one row per planned cell, missing and failed cells kept with their reason (in the
table and on stdout), and no row lost or file torn when many evaluate jobs and collects run at once.

The evaluate directories are written with the stage's own writers (evaluate.write_outputs, write_status);
the metric values come from sacrebleu on small fixed sentences.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from pipeline import collect
from pipeline.artifacts import atomic_write_json, provenance, write_status
from pipeline.collect import CollectSpec
from pipeline.config import FitConfig, TrackingConfig
from pipeline.evaluate import score, write_outputs
from pipeline.plan import Cell
from pipeline.results import Scale, columns

N = 32
REFS = ["Die Datei wurde nicht gefunden.", "Öffnen Sie das Menü Bearbeiten."]


def make_cells(root: Path, n: int) -> tuple[list[Cell], dict[str, str]]:
    cells, dirs = [], {}
    for i in range(n):
        ft, ev = f"finetune/ft-{i}", f"evaluate/ev-{i}"
        dirs[ft], dirs[ev] = str(root / f"ft-{i:02d}-abc{i:03d}"), str(root / f"ev-{i:02d}-def{i:03d}")
        cells.append(Cell(task="en-de", src="en", tgt="de", mixture="en50_de50", alignment=1.0, model="t5_tiny",
                          dp_rung=2 ** (10 + i), dp_tokens=2 ** (10 + i) + 3, pretrain_steps=i, df=64, seed=0,
                          method="full", lr=1e-3, finetune_id=ft, evaluate_id=ev))
    return cells, dirs


def finish_finetune(cell: Cell, dirs: dict[str, str]) -> None:
    d = Path(dirs[cell.finetune_id])
    atomic_write_json(d / "finetune.json", {
        "steps": 12, "best_step": 8, "best_val_ce": 4.5 + cell.pretrain_steps, "stopped": "max_steps",
        "df_tokens": {"source": 700, "target": 800}, "seconds": 1.5, "checkpoint": str(d / "none")})
    write_status(d, "ok", started=time.time())


def finish_evaluate(cell: Cell, dirs: dict[str, str]) -> None:
    hyps = ["Die Datei wurde gefunden.", "Öffnen Sie das Menü." + " Bearbeiten" * (cell.pretrain_steps % 3)]
    m = score(hyps, REFS, "13a") | {"ce": 3.0 + cell.pretrain_steps, "n_test": 2, "gen_len_mean": 6.0,
                                     "seconds_ce": 0.1, "seconds_generate": 0.2, "device": "cpu"}
    write_outputs(Path(dirs[cell.evaluate_id]), ["a", "b"], REFS, hyps, m)
    write_status(Path(dirs[cell.evaluate_id]), "ok", started=time.time())


def collect_task(cells, dirs, reports: Path):
    spec = CollectSpec(sweep="en_de", reports_dir=str(reports), results=None,
                       fit=FitConfig(holdout_largest=1, bootstrap=0, bleu_delta=0.1, ce_delta=1e-3),
                       tracking=TrackingConfig("none"),
                       scale=Scale("smoke", ""), data_source="l10n", cells=tuple(cells), dirs=dirs)
    return SimpleNamespace(spec=CollectSpec.from_dict(spec.to_dict()))  # as pipeline.task gives it


def read_table(reports: Path) -> pd.DataFrame:
    # Parse from the bytes read once: a torn file fails here, not a later re-read.
    return pd.read_csv(io.BytesIO((reports / "results.csv").read_bytes()))


def test_missing_and_failed_cells_keep_their_row_and_reason(tmp_path, capsys):
    cells, dirs = make_cells(tmp_path / "a", 5)
    for c in cells[:2]:
        finish_finetune(c, dirs)
        finish_evaluate(c, dirs)
    finish_finetune(cells[2], dirs)
    write_status(Path(dirs[cells[2].evaluate_id]), "failed", started=time.time(), error="RuntimeError: out of memory")
    write_status(Path(dirs[cells[3].finetune_id]), "failed", started=time.time(), error="ValueError: bad batch")
    # cells[4]: nothing at all
    collect.run(collect_task(cells, dirs, tmp_path / "r"))
    t = read_table(tmp_path / "r")
    assert list(t.columns) == columns() and len(t) == 5
    assert list(t["status"]) == ["ok", "ok", "failed", "failed", "missing"]
    assert t["reason"][2] == "evaluate failed: RuntimeError: out of memory"
    assert t["reason"][3] == "finetune failed: ValueError: bad batch"
    assert t["reason"][4] == "not finetuned yet"
    assert t["dp_rung"].tolist() == [c.dp_rung for c in cells]  # the failed rows keep their identity
    ok = t[t["status"] == "ok"]
    assert ok["bleu"].notna().all() and t["bleu"][2:].isna().all()
    out = capsys.readouterr().out
    assert "2 of 5 cells evaluated" in out
    for reason in ("out of memory", "bad batch", "not finetuned yet"):
        assert sum(reason in line for line in out.splitlines()) == 1, (reason, out)


def test_the_table_holds_the_stored_metrics(tmp_path):
    cells, dirs = make_cells(tmp_path / "a", 3)
    for c in cells:
        finish_finetune(c, dirs)
        finish_evaluate(c, dirs)
    collect.run(collect_task(cells, dirs, tmp_path / "r"))
    t = read_table(tmp_path / "r")
    for c, (_, row) in zip(cells, t.iterrows()):
        m = collect.read_json(Path(dirs[c.evaluate_id]) / "metrics.json")
        assert row["bleu"] == pytest.approx(m["bleu"], rel=1e-9) and row["p4"] == pytest.approx(m["precisions"][3])
        assert (row["sys_len"], row["ref_len"], row["ce"]) == (m["sys_len"], m["ref_len"], m["ce"])
        assert row["bleu_signature"] == m["bleu_signature"] and row["df_tokens"] == 1500
        assert row["dp"] == c.dp_tokens and row["pretrain_steps"] == c.pretrain_steps


def test_the_table_holds_the_decoding_numbers_and_reads_old_metrics(tmp_path):
    """len_ratio, runaway, gen_at_cap (metrics.json's hit_cap) and num_beams as evaluate stored them; a metrics.json from before them still
    gives the length ratio (sys_len / ref_len) and leaves the runaway share blank."""
    cells, dirs = make_cells(tmp_path / "a", 2)
    for c in cells:
        finish_finetune(c, dirs)
        finish_evaluate(c, dirs)
    new = Path(dirs[cells[0].evaluate_id]) / "metrics.json"
    m = collect.read_json(new)
    atomic_write_json(new, m | {"len_ratio": 1.25, "runaway": 0.5, "hit_cap": 1, "num_beams": 4})
    collect.run(collect_task(cells, dirs, tmp_path / "r"))
    t = read_table(tmp_path / "r")
    assert (t.loc[0, "len_ratio"], t.loc[0, "runaway"], t.loc[0, "gen_at_cap"], t.loc[0, "num_beams"]) == (1.25, 0.5, 1, 4)
    old = collect.read_json(Path(dirs[cells[1].evaluate_id]) / "metrics.json")
    assert t.loc[1, "len_ratio"] == pytest.approx(old["sys_len"] / old["ref_len"]) and pd.isna(t.loc[1, "runaway"])


def _evaluate_then_collect(i, cells, dirs, reports, barrier) -> None:
    barrier.wait()  # every process finishes its evaluate task at the same moment
    finish_evaluate(cells[i], dirs)
    collect.run(collect_task(cells, dirs, reports))


def test_32_evaluate_jobs_finishing_together_then_collect_lose_nothing(tmp_path):
    """32 processes write their evaluate outputs after one barrier and each runs collect at once (as
    SLURM array elements and an eager `make report` would): the last table written has every row."""
    provenance()  # computed once here, inherited by the forked processes
    cells, dirs = make_cells(tmp_path / "a", N)
    for c in cells:
        finish_finetune(c, dirs)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(N)
    procs = [ctx.Process(target=_evaluate_then_collect, args=(i, cells, dirs, tmp_path / "r", barrier))
             for i in range(N)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * N
    t = read_table(tmp_path / "r")
    assert len(t) == N and (t["status"] == "ok").all(), t[["status", "reason"]]
    assert sorted(t["dp_rung"]) == sorted(c.dp_rung for c in cells)
    for c in cells:  # every evaluate file parses and is complete
        d = Path(dirs[c.evaluate_id])
        assert len((d / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 2
        assert collect.read_json(d / "metrics.json")["n_test"] == 2
        assert not [p for p in d.iterdir() if p.name.startswith(".")]
    assert [p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".") and "lock" not in p.name] == []


def _collect_loop(cells, dirs, reports, rounds) -> None:
    for _ in range(rounds):
        collect.run(collect_task(cells, dirs, reports))


def test_racing_collects_leave_a_complete_parseable_table_at_every_moment(tmp_path):
    provenance()
    cells, dirs = make_cells(tmp_path / "a", N)
    for c in cells:
        finish_finetune(c, dirs)
        finish_evaluate(c, dirs)
    reports = tmp_path / "r"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_collect_loop, args=(cells, dirs, reports, 15)) for _ in range(2)]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):
        if (reports / "results.csv").exists():
            t = read_table(reports)
            assert len(t) == N and (t["status"] == "ok").all() and list(t.columns) == columns()
            reads += 1
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert reads > 0
    assert len(read_table(reports)) == N


def _slow_collect(cells, dirs, reports, reading) -> None:
    row = collect._cell_row

    def slow_row(c, d):
        out = row(c, d)
        reading.set()
        time.sleep(0.05)
        return out

    collect._cell_row = slow_row  # this forked process only
    collect.run(collect_task(cells, dirs, reports))


def test_a_collect_that_read_earlier_never_overwrites_a_newer_table(tmp_path):
    """Collect A has read the first cell, still unevaluated, when the cell finishes and collect B runs.
    However the two interleave, the table left behind has the finished cell."""
    provenance()
    cells, dirs = make_cells(tmp_path / "a", N)
    for c in cells:
        finish_finetune(c, dirs)
    for c in cells[1:]:
        finish_evaluate(c, dirs)
    ctx = mp.get_context("fork")
    reading = ctx.Event()
    a = ctx.Process(target=_slow_collect, args=(cells, dirs, tmp_path / "r", reading))
    a.start()
    assert reading.wait(30)
    finish_evaluate(cells[0], dirs)
    collect.run(collect_task(cells, dirs, tmp_path / "r"))
    a.join(60)
    assert a.exitcode == 0
    t = read_table(tmp_path / "r")
    assert len(t) == N and (t["status"] == "ok").all(), t[["status", "reason"]].head(2)


def test_the_training_controls_of_each_cell(tmp_path):
    """Per cell: whether a cap (not early stopping) ended it, the rate chosen for it and on which seed's search,
    and what its rung's pretraining read (unique tokens, epochs); a cell waiting for the first seed's search keeps
    its row and says so."""
    root = tmp_path / "a"
    rung = root / "pt" / "checkpoints" / "step-00000004"
    atomic_write_json(rung / "meta.json", {"upstream": {"unique_tokens": 6000, "epochs": 1.37, "upstream": {}}})
    spec = [  # (dp, steps, seed, lr, lr_from, best validation CE, why it stopped)
        (0, 0, 0, 1e-3, None, 5.0, "early_stopping"), (0, 0, 0, 3e-3, None, 4.0, "max_steps"),
        (0, 0, 1, 3e-3, 0, 4.2, "max_epochs"), (0, 0, 2, float("nan"), 0, None, None),
        (8192, 4, 0, 1e-3, None, 3.9, "early_stopping")]
    cells, dirs = [], {}
    for i, (dp, steps, seed, lr, lr_from, ce, stopped) in enumerate(spec):
        ft, ev = (f"finetune/ft-{i}", f"evaluate/ev-{i}") if ce else ("", "")
        cells.append(Cell(task="en-de", src="en", tgt="de", mixture="en50_de50", alignment=1.0, model="t5_tiny",
                          dp_rung=dp, dp_tokens=dp, pretrain_steps=steps, df=64, seed=seed, method="full", lr=lr,
                          finetune_id=ft, evaluate_id=ev, lr_from=lr_from))
        if not ce:
            continue
        dirs[ft], dirs[ev] = str(root / f"ft-{i}"), str(root / f"ev-{i}")
        atomic_write_json(Path(dirs[ft]) / "finetune.json", {
            "steps": 12, "best_step": 8, "best_val_ce": ce, "stopped": stopped, "epochs": 1.5,
            "hit_cap": stopped != "early_stopping", "df_tokens": {"source": 700, "target": 800}, "seconds": 1.5,
            "checkpoint": str(rung if steps else root / "init")})
        write_status(Path(dirs[ft]), "ok", started=time.time())
        finish_evaluate(cells[-1], dirs)
    collect.run(collect_task(cells, dirs, tmp_path / "r"))
    t = read_table(tmp_path / "r")
    assert list(t["selected"]) == [False, True, True, False, True]
    assert list(t["lr_chosen"].fillna(0)) == [3e-3, 3e-3, 3e-3, 0, 1e-3]
    assert list(t["lr_search"]) == ["own seed", "own seed", "seed 0", "seed 0", "fixed"]
    assert list(t["hit_cap"].iloc[[0, 1, 2, 4]]) == [False, True, True, False]
    assert t.loc[3, "status"] == "missing" and "waits for the learning rate searched on seed 0" in t.loc[3, "reason"]
    assert list(t["ft_epochs"].iloc[[0, 4]]) == [1.5, 1.5]
    assert (t.loc[0, "pt_unique_tokens"], t.loc[0, "pt_epochs"]) == (0, 0)
    assert (t.loc[4, "pt_unique_tokens"], t.loc[4, "pt_epochs"]) == (6000, 1.37)
