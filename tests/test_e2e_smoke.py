"""The whole DAG end to end at smoke scale on the real offline corpus: every stage, every artifact.

One sweep runs once per session (module fixture, ~1 minute on 2 cores); the tests read what it left.
"""

from __future__ import annotations

import json
import math
import time

import pandas as pd
import pytest
from conftest import cli

from pipeline.results import columns


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, request):
    from conftest import corpus_dir

    if not (corpus_dir() / "manifest.json").exists():
        pytest.skip(f"the offline corpus is not built at {corpus_dir()} (run `make corpus`)")
    root = tmp_path_factory.mktemp("smoke")
    # Both held-out sets (the in-domain one scored beside the packages one), model selection on the in-domain
    # validation set, and a warmup + linear finetuning schedule: the desk scale's choices, end to end.
    args = ["+sweep=en_de", "scale=smoke", f"paths.artifacts={root / 'artifacts'}", f"paths.reports={root / 'reports'}",
            "evaluate.test_splits=[test,test_indomain]", "finetune.validation_split=validation_indomain",
            "finetune.schedule=linear", "finetune.warmup_steps=5"]
    t0 = time.time()
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"root": root, "args": args, "seconds": time.time() - t0, "stderr": r.stderr, "stdout": r.stdout}


def test_results_table_is_complete_and_finite(smoke):
    df = pd.read_csv(smoke["root"] / "reports" / "en_de" / "results.csv")
    assert list(df.columns) == columns()
    # 2 mixtures x 3 rungs x 2 Df, plus the Dp = 0 baseline (shared, listed under each mixture) x 2 Df
    assert len(df) == 2 * 3 * 2 + 2 * 2
    assert (df["status"] == "ok").all(), df[df["status"] != "ok"][["mixture", "dp", "df", "reason"]]
    for c in ("bleu", "chrf", "ce", "bp", "dp", "df_tokens", "params", "finetune_steps"):
        assert df[c].map(lambda v: isinstance(v, (int, float)) and math.isfinite(v)).all(), c
    assert (df["ce"] > 0).all() and df["bleu_signature"].str.contains("tok:13a").all()
    assert (df["test_split"] == "test").all() and (df["other_split"] == "test_indomain").all()
    for c in ("other_bleu", "other_chrf", "other_ce"):
        assert df[c].map(math.isfinite).all(), c
    assert (df["other_ce"] != df["ce"]).all()  # another test set, not a copy
    assert set(df["alignment"].round(6)) == {1.0, 0.7}
    assert (df.loc[df["dp"] == 0, "pretrain_steps"] == 0).all()
    assert df.loc[df["dp"] > 0, "upstream_loss_mixture"].notna().all()


def test_every_rung_is_a_loadable_checkpoint_and_the_loss_falls(smoke):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    runs = sorted((smoke["root"] / "artifacts" / "pretrain").glob("pt-*"))
    assert len(runs) == 2  # one run per mixture
    for run in runs:
        rungs = json.loads((run / "rungs.json").read_text())
        assert [int(k) for k in rungs] == [16384, 32768, 65536]
        for info in rungs.values():
            d = run / info["checkpoint"]
            T5ForConditionalGeneration.from_pretrained(str(d))
            AutoTokenizer.from_pretrained(str(d))
        held_out = [rungs[k]["upstream_mixture"] for k in sorted(rungs, key=int)]
        assert held_out == sorted(held_out, reverse=True), (run.name, held_out)
        curve = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in curve if "loss" in r]
        assert losses[-1] < losses[0] - 0.5, losses


def test_every_bleu_difference_the_report_reads_was_tested(smoke):
    reports = smoke["root"] / "reports" / "en_de"
    comp = pd.read_csv(reports / "comparisons.csv")
    # per Df: 2 mixtures x 3 rungs against Dp = 0, 2 x 2 rung steps, 3 rungs between the mixtures
    assert sorted(comp.groupby("df").size()) == [6 + 4 + 3] * 2
    assert set(comp["kind"]) == {"pretraining", "rung", "mixture"}
    assert comp["p_value"].between(0, 1).all() and (comp["delta_lo"] <= comp["delta_hi"]).all()
    res = pd.read_csv(reports / "results.csv")
    for _, c in comp.iterrows():  # each side's BLEU is the table's
        a = res[(res["mixture"] == c["mixture_a"]) & (res["dp_rung"] == c["dp_rung_a"]) & (res["df"] == c["df"])]
        assert c["bleu_a"] == pytest.approx(a["bleu"].iloc[0], abs=1e-6)
    assert "Which BLEU differences are real" in (reports / "report.md").read_text()
    ev = sorted((smoke["root"] / "artifacts" / "evaluate").glob("ev-*"))[0]
    assert (ev / "predictions-test_indomain.jsonl").exists()


def test_report_files_are_written(smoke):
    out = smoke["root"] / "reports" / "en_de"
    for name in ("results.csv", "fits.csv", "fits.json", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("fig_*.png"))


def test_a_second_run_trains_nothing_and_takes_seconds(smoke):
    t0 = time.time()
    r = cli(*smoke["args"])
    assert r.returncode == 0, r.stderr[-2000:]
    skipped_line = [x for x in r.stderr.splitlines() if "tasks selected" in x][0]
    assert " 0 already done" not in skipped_line
    # only collect, fit and report run again (they always reflect what is on disk)
    assert "3 to run" in skipped_line, skipped_line
    assert time.time() - t0 < 60
