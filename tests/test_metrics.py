"""One registry per extension point: a metric is declared once (pipeline/metrics.py) and a data source listed
once (pipeline/data_sources.py), and every stage reads the declaration. A new metric is one declaration plus its
computation in evaluate: the test below adds one and finds it in results.csv, fits.csv, correlations.csv and the
report, with no other edit."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import compose
from test_collect import REFS, collect_task, finish_finetune, make_cells

from pipeline import collect, evaluate, fit, metrics, report
from pipeline.artifacts import write_status
from pipeline.config import ConfigError, FitConfig, TrackingConfig, load_config
from pipeline.data_sources import SOURCES
from pipeline.metrics import METRICS, Metric
from pipeline.results import ReadSpec, Scale, columns, defaults, load_results, required
from pipeline.sources import reader
from pipeline.sources.base import Source

# results.csv as it was written before the registry: the declared metrics must keep giving these columns
BUILT_IN = ("bleu", "chrf", "ce")
OLD_COLUMNS = [
    "task", "src", "tgt", "mixture", "alignment", "model", "params", "params_non_embedding",
    "dp", "dp_rung", "pretrain_steps", "df", "df_tokens", "df_tokens_source", "df_tokens_target",
    "seed", "method", "lr", "selected",
    "test_split", "bleu", "chrf", "ce", "bp", "p1", "p2", "p3", "p4", "sys_len", "ref_len", "gen_len", "n_test",
    "other_split", "other_bleu", "other_chrf", "other_ce",
    "upstream_loss_mixture", "upstream_loss_src", "upstream_loss_tgt",
    "finetune_steps", "best_step", "best_val_ce", "stopped", "wall_seconds", "dtype", "pretrain_dtype",
    "hit_cap", "ft_epochs", "lr_chosen", "lr_search", "pt_unique_tokens", "pt_epochs",
    "device", "checkpoint", "config_hash", "git_sha", "bleu_signature", "status", "reason",
    "len_ratio", "runaway", "gen_at_cap", "num_beams", "decode_dtype",
]
FIT = FitConfig(holdout_largest=1, bootstrap=0, bleu_delta=0.1, ce_delta=1e-3)


def test_the_declared_metrics_give_the_tables_columns_in_their_old_order():
    new = [m for m in METRICS if m not in BUILT_IN]
    assert [c for c in columns() if c.removeprefix("other_") not in new] == OLD_COLUMNS
    assert required() == ["task", "mixture", "model", "dp", "df", "bleu", "ce", "status"]
    assert {k for k in defaults() if k in BUILT_IN or k.startswith("other_")} == {
        "chrf", "other_split", "other_bleu", "other_chrf", "other_ce"}


def test_every_declared_law_is_a_law_of_one_input_and_the_config_fits_it():
    from pipeline.scaling import LAWS

    for m in METRICS.values():
        assert m.law is None or (m.law in LAWS and LAWS[m.law].nx == 1), m.name
        assert m.seeds in ("mean", "median", "min", "max"), m.name
    cfg = load_config(compose(["+sweep=en_de", "scale=smoke"])).fit
    assert cfg.curve_laws() == (("bleu", "bleu_log", cfg.bleu_delta), ("ce", "power", cfg.ce_delta))
    assert FitConfig(1, 0, 0.1, 1e-3, bleu_law="power").curve_law("bleu") == ("power", 0.1)
    assert metrics.curve_metrics() == ("bleu", "ce") and metrics.corr_metrics() == ("bleu", "chrf", "ce")


def test_a_metric_declared_with_no_computation_is_named():
    m = evaluate.score(["Die Datei."], ["Die Datei."], "13a") | {"ce": 1.0}
    assert evaluate.unmeasured(m) == []
    assert evaluate.unmeasured({"bleu": 1.0, "ce": 1.0}) == ["chrf"]


def words(sources, hyps, refs) -> float:
    """A stand-in metric: words per output sentence."""
    return float(np.mean([len(h.split()) for h in hyps]))


def test_a_new_metric_is_one_declaration_plus_its_computation(tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "words", Metric("words", "words/sentence", "Words per sentence",
                                                 "words per output sentence", higher_is_better=False, law="power",
                                                 delta=1e-3))
    monkeypatch.setitem(evaluate.SCORERS, "words", words)
    # five rungs of one curve; the outputs get shorter with Dp: 2 + 40 / 2^i words
    cells, dirs = make_cells(tmp_path / "cells", 5)
    for i, cell in enumerate(cells):
        finish_finetune(cell, dirs)
        hyps = [" ".join(["Datei"] * (2 + round(40 * 0.5**i)))] * len(REFS)
        m = evaluate.score(hyps, REFS, "13a") | evaluate.measure(["a", "b"], hyps, REFS) | {
            "ce": 3.0 - 0.2 * i, "n_test": 2, "gen_len_mean": 6.0, "seconds_ce": 0.1, "seconds_generate": 0.2,
            "device": "cpu"}
        assert evaluate.unmeasured(m) == []
        evaluate.write_outputs(Path(dirs[cell.evaluate_id]), ["a", "b"], REFS, hyps, m)
        write_status(Path(dirs[cell.evaluate_id]), "ok", started=time.time())
    out = tmp_path / "reports"
    collect.run(collect_task(cells, dirs, out))
    table = load_results(out / "results.csv")
    assert list(pd.read_csv(out / "results.csv").columns) == columns() and "other_words" in columns()
    assert table["words"].tolist() == [2 + round(40 * 0.5**i) for i in range(5)]

    spec = ReadSpec(sweep="en_de", reports_dir=str(out), results=None, fit=FIT, tracking=TrackingConfig("none"),
                    scale=Scale("smoke", ""), data_source="l10n")
    task = SimpleNamespace(spec=spec, name="t")
    fit.run(task)
    fits = pd.read_csv(out / "fits.csv")
    row = fits[fits["metric"] == "words"]
    assert len(row) == 1 and row["law"].iloc[0] == "power" and bool(row["ok"].iloc[0]), row.T
    per_curve = fits[fits["x"] == "dp"]
    assert per_curve["metric"].tolist() == ["bleu", "ce", "words"]  # the other metrics are fitted as before
    assert per_curve["law"].tolist() == ["bleu_log", "power", "power"]
    corr = pd.read_csv(out / "correlations.csv")
    assert "words" in set(corr["metric"])

    report.run(task)
    md = (out / "report.md").read_text()
    from pipeline.scaling import LAWS

    assert f"### Words per sentence: {LAWS['power'].formula}, Huber δ = 1e-3" in md  # its fitted law's table
    assert "| CE | words/sentence | BP |" in md  # the cells table's column
    assert "| CE r | CE ρ | words/sentence r | words/sentence ρ |" in md  # the correlations table


def test_every_data_source_is_listed_once_and_read_by_its_reader():
    conf = {p.stem for p in (Path(__file__).resolve().parent.parent / "conf" / "data").glob("*.yaml")}
    assert conf == set(SOURCES)
    for name in SOURCES:
        assert issubclass(reader(name), Source), name
    with pytest.raises(ConfigError, match="data.source: unknown value 'nope'; allowed: l10n, hub, local"):
        load_config(compose(["+sweep=en_de", "scale=smoke", "data.source=nope"]))
