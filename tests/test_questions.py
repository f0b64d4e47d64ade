"""`+sweep=questions` end to end at smoke scale on the real corpus: two model sizes, full finetuning and LoRA,
upstream losses recorded; the report answers the three questions of issue #10 with numbers from the run."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from conftest import cli
from test_report import check_numbers


@pytest.mark.slow
def test_questions_sweep_reports_the_three_questions(tmp_path, l10n_corpus):
    # smoke scale with the questions' axes; Df and steps shrunk, five rungs so that the two-stage route has
    # the four fit points its three-parameter stage needs (smoke's own ladder has three)
    r = cli("+sweep=questions", "scale=smoke", "finetune.df_ladder=[200,400]", "finetune.max_steps=20",
            "pretrain.dp_ladder=[8192,16384,32768,65536,131072]",
            "fit.bootstrap=5", f"paths.artifacts={tmp_path / 'artifacts'}", f"paths.reports={tmp_path / 'reports'}", timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "reports" / "questions"
    results = pd.read_csv(out / "results.csv")
    assert set(results["model"]) == {"t5_tiny", "t5_mini"} and set(results["method"]) == {"full", "lora"}
    assert results.loc[results["dp"] > 0, "upstream_loss_mixture"].notna().all()
    md = (out / "report.md").read_text()
    sections = {q: md.split(f"## Question {q}")[1].split("\n## ")[0] for q in (1, 2, 3)}
    # 1: correlations with intervals, and the two routes to the largest-Dp BLEU
    assert re.search(r"\| -?\d\.\d+ \[-?\d\.\d+, -?\d\.\d+\] \|", sections[1]), sections[1][:2000]
    assert "two-stage (mixture loss): predicted" in sections[1]
    # 2: the per-size laws side by side, and the laws across sizes (fitted or failed with a reason)
    assert "t5_tiny: α" in sections[2] and "t5_mini: α" in sections[2]
    assert "Chinchilla" in md and "L(N, Dp)" in sections[2]
    # 3: the gap between LoRA and full finetuning per curve
    assert re.search(r"\| lora − full \| -?\d", sections[3]), sections[3][:2000]
    assert len(list(out.glob("fig_*_sizes.png"))) == 2 and len(list(out.glob("fig_*_methods.png"))) == 2
    c = check_numbers(out, results=out / "results.csv")  # a sweep writes its table beside the report
    assert not c.errors, "\n".join(c.errors[:20])
