"""The ablation table across sweeps (pipeline.report.ablation): one row per recipe and pretrained rung, its numbers
read from each sweep's results.csv and comparisons.csv, the gap to the base recipe tested, a sweep not run said so."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.report.ablation import HEADER, ablation_rows, main
from pipeline.significance import gap_test, p_is


def write_sweep(reports: Path, sweep: str, effect: dict[int, float], steps: int, cap: bool, lr: float,
                half: float = 0.2, cells: str | None = None) -> None:
    """A one-column sweep (en50_de50, Df 8,000, seeds 0 and 1): Dp = 0 at BLEU 2.0 (seed 1: 2.2), each rung
    `effect[rung]` BLEU above it; CE 5.0 falling 0.1 a rung; each comparison's interval ± `half`. Its cells'
    identities (evaluation hashes) are those of the sweep named `cells` (default: its own)."""
    rows, comp = [], []
    for rung in (0, *effect):
        for seed in (0, 1):
            rows.append({"task": "en-de", "mixture": "en50_de50", "model": "t5_mini", "method": "full", "df": 8000,
                         "dp": rung, "dp_rung": rung, "seed": seed, "status": "ok", "selected": True, "lr": lr,
                         "lr_chosen": lr, "bleu": 2.0 + 0.2 * seed + effect.get(rung, 0.0), "chrf": 20.0,
                         "ce": 5.0 - 0.1 * sorted(effect).index(rung) - 0.1 if rung else 5.0,
                         "finetune_steps": steps + seed, "hit_cap": cap, "len_ratio": 1.0,
                         "config_hash": f"{cells or sweep}-{rung}-{seed}"})
    for rung, d in effect.items():
        comp.append({"kind": "pretraining", "task": "en-de", "model": "t5_mini", "method": "full", "df": 8000,
                     "mixture_a": "en50_de50", "dp_rung_a": 0, "mixture_b": "en50_de50", "dp_rung_b": rung,
                     "bleu_a": 2.1, "bleu_b": 2.1 + d, "delta": d, "delta_lo": d - half, "delta_hi": d + half,
                     "p_value": 0.001 if abs(d) > half else 0.5, "significant": abs(d) > half,
                     "noise": "seeds + test sentences"})
    (reports / sweep).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(reports / sweep / "results.csv", index=False)
    pd.DataFrame(comp).to_csv(reports / sweep / "comparisons.csv", index=False)


def test_each_recipe_is_a_row_per_rung_with_its_test_and_its_gap_to_the_base(tmp_path, capsys):
    write_sweep(tmp_path, "old", {8_000_000: -1.0}, steps=500, cap=True, lr=1e-3)
    write_sweep(tmp_path, "all", {8_000_000: -0.3, 16_000_000: 0.5}, steps=700, cap=False, lr=3e-3, half=0.3)
    rows = [dict(zip(HEADER, r)) for r in ablation_rows(tmp_path, ["all", "missing"], base="old")]
    assert [(r["recipe"], r["Dp"]) for r in rows] == [("old", "8M"), ("all", "8M"), ("all", "16M"),
                                                       ("missing", "—")]
    old, mid, top, missing = rows
    assert old["BLEU Δ [95% CI], p"] == "-1.00 [-1.20, -0.80], p = 0.001" and old["Δ BLEU against the base recipe"] == "(base)"
    assert old["steps (none / pretrained)"] == "500, 501 / 500, 501" and old["ended by a cap"] == "2 of 2 / 2 of 2"
    assert top["lr (none / pretrained)"] == "0.003 / 0.003" and top["ended by a cap"] == "0 of 2 / 0 of 2"
    assert top["BLEU none → pretrained"] == "2.10 → 2.60" and top["CE none → pretrained"] == "5.000 → 4.800"
    gap, p = gap_test(0.5, 0.2, 0.8, -1.0, -1.2, -0.8)
    # 16M, a rung the base recipe did not run: read against its top rung (8M), and said so
    assert top["Δ BLEU against the base recipe"] == f"+1.50, {p_is(p)} (against 8M)" and gap == pytest.approx(1.5)
    _, p_mid = gap_test(-0.3, -0.6, 0.0, -1.0, -1.2, -0.8)  # 8M against the base's own 8M
    assert mid["Δ BLEU against the base recipe"] == f"+0.70, {p_is(p_mid)}"
    assert top["noise"] == "seeds + test sentences"
    assert "not run yet" in missing["Δ BLEU against the base recipe"]
    main(["--reports", str(tmp_path), "--base", "old", "all"])
    out = capsys.readouterr().out
    assert out.startswith("| recipe | mixture |") and "| all | en50_de50 | 8,000 | 16M |" in out


def test_a_recipe_that_shares_cells_with_another_says_so_instead_of_testing_them_twice(tmp_path):
    # "ladder" adds a 16M rung to the base recipe: its 8M row is the base's own cells; "grid" searched a rate and
    # chose "stop"'s everywhere: its row is stop's cells, named, not a second measurement
    write_sweep(tmp_path, "old", {8_000_000: -1.0}, steps=500, cap=True, lr=1e-3)
    write_sweep(tmp_path, "ladder", {8_000_000: -1.0, 16_000_000: -0.4}, steps=500, cap=True, lr=1e-3, cells="old")
    write_sweep(tmp_path, "stop", {8_000_000: -0.5}, steps=900, cap=False, lr=1e-3)
    write_sweep(tmp_path, "grid", {8_000_000: -0.5}, steps=900, cap=False, lr=1e-3, cells="stop")
    rows = [dict(zip(HEADER, r)) for r in ablation_rows(tmp_path, ["ladder", "stop", "grid"], base="old")]
    gap = {(r["recipe"], r["Dp"]): r["Δ BLEU against the base recipe"] for r in rows}
    assert gap[("ladder", "8M")] == "the same cells as old"
    assert gap[("ladder", "16M")].endswith("(against 8M)") and gap[("stop", "8M")].startswith("+0.50, p")
    assert gap[("grid", "8M")] == "the same cells as stop"
