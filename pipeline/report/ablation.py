"""An ablation across sweeps: the same Df column finetuned under several recipes (issue 28: the desk recipe, then
each control alone, then all of them), and what each recipe does to pretraining's effect. Reads each sweep's
`results.csv` and `comparisons.csv` from `<reports>/<sweep>/` (what collect wrote), nothing else.

    python -m pipeline.report.ablation --reports ~/ds/reports --base desk2_abl_old \\
        desk2_abl_stop desk2_abl_lr desk2_abl_pretrain desk2_abl_all

One row per (sweep, mixture, Df, pretrained rung): the finetuning each side had (steps, whether a cap ended it,
the learning rate), BLEU and CE without and with pretraining, the BLEU difference with its test (the noise it covers
named), the CE difference (seed means, descriptive), and the gap between this recipe's BLEU difference and the base
recipe's at its top rung, with `significance.gap_test`'s p. A sweep not run yet is a row that says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.report.document import Block, to_markdown
from pipeline.report.fmt import fmt_df, fmt_tokens
from pipeline.results import ResultsError, load_results, usable
from pipeline.significance import gap_test, p_is

HEADER = ["recipe", "mixture", "Df", "Dp", "steps (none / pretrained)", "ended by a cap", "lr (none / pretrained)",
          "BLEU none → pretrained", "BLEU Δ [95% CI], p", "noise", "CE none → pretrained", "length ratio",
          "Δ BLEU against the base recipe"]


def read_sweep(reports: Path, sweep: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(usable results rows, comparisons) of one sweep, or None when it has no results table yet."""
    path = Path(reports) / sweep / "results.csv"
    try:
        results = usable(load_results(path))
    except (ResultsError, FileNotFoundError):
        return None
    comp_path = path.with_name("comparisons.csv")
    comp = pd.read_csv(comp_path) if comp_path.exists() and comp_path.stat().st_size > 1 else pd.DataFrame()
    return results, comp


def _side(rows: pd.DataFrame) -> dict[str, str | float]:
    """One side's seed means and what its finetuning did."""
    cap = rows["hit_cap"].astype(str).str.lower() == "true" if "hit_cap" in rows else pd.Series(False, rows.index)
    lr = rows["lr_chosen"] if "lr_chosen" in rows and rows["lr_chosen"].notna().all() else rows["lr"]
    return {"bleu": float(rows["bleu"].mean()), "ce": float(rows["ce"].mean()), "seeds": len(rows),
            "steps": ", ".join(str(int(s)) for s in rows.sort_values("seed")["finetune_steps"]),
            "cap": int(cap.sum()), "lr": ", ".join(dict.fromkeys(f"{float(x):g}" for x in lr)),
            "len": float(rows["len_ratio"].mean()) if "len_ratio" in rows else np.nan}


def _pretraining(comp: pd.DataFrame, mix: str, df, rung: int) -> pd.Series | None:
    if comp.empty:
        return None
    c = comp[(comp["kind"] == "pretraining") & (comp["mixture_b"] == mix) & (comp["df"].astype(str) == str(df))
             & (comp["dp_rung_b"].astype(int) == rung)]
    return c.iloc[0] if len(c) else None


def ablation_rows(reports: Path, sweeps: list[str], base: str) -> list[list[str]]:
    """The table's rows, the base recipe first."""
    out: list[list[str]] = []
    ref: dict[tuple[str, str], pd.Series] = {}  # the base recipe's top-rung comparison per (mixture, Df)
    for sweep in dict.fromkeys([base, *sweeps]):
        read = read_sweep(reports, sweep)
        if read is None:
            out.append([sweep, *["—"] * (len(HEADER) - 2), "not run yet (no results.csv)"])
            continue
        results, comp = read
        for (mix, df), g in results[results["dp_rung"] > 0].groupby(["mixture", "df"], sort=False):
            none = results[(results["dp_rung"] == 0) & (results["mixture"] == mix) & (results["df"] == df)]
            if none.empty:
                continue
            a = _side(none)
            rungs = sorted(g["dp_rung"].astype(int).unique())
            for rung in rungs:
                b = _side(g[g["dp_rung"] == rung])
                c = _pretraining(comp, mix, df, rung)
                if c is not None and sweep == base and rung == rungs[-1]:
                    ref[(mix, str(df))] = c
                base_c = ref.get((mix, str(df)))
                if c is None:
                    test, noise, gap = f"{b['bleu'] - a['bleu']:+.2f} (untested)", "—", "—"
                else:
                    test = (f"{float(c['delta']):+.2f} [{float(c['delta_lo']):+.2f}, {float(c['delta_hi']):+.2f}], "
                            f"{p_is(float(c['p_value']))}")
                    noise = str(c.get("noise") or "test sentences")
                    if sweep == base or base_c is None:
                        gap = "(base)" if sweep == base else "—"
                    else:
                        d, p = gap_test(float(c["delta"]), float(c["delta_lo"]), float(c["delta_hi"]),
                                        float(base_c["delta"]), float(base_c["delta_lo"]), float(base_c["delta_hi"]))
                        gap = f"{d:+.2f}, {p_is(p)}"
                out.append([sweep, str(mix), fmt_df(df), fmt_tokens(rung), f"{a['steps']} / {b['steps']}",
                            f"{a['cap']} of {a['seeds']} / {b['cap']} of {b['seeds']}", f"{a['lr']} / {b['lr']}",
                            f"{a['bleu']:.2f} → {b['bleu']:.2f}", test, noise, f"{a['ce']:.3f} → {b['ce']:.3f}",
                            f"{a['len']:.2f} → {b['len']:.2f}", gap])
    return out


def ablation_blocks(reports: Path, sweeps: list[str], base: str) -> list[Block]:
    return [Block("table", header=HEADER, rows=ablation_rows(reports, sweeps, base)),
            Block("p", f"Steps and learning rates per seed (seed 0 / seed 1); BLEU and CE seed means. The last column: "
                       f"this row's BLEU difference minus {base}'s at its top rung, a z-test from the two 95% "
                       "intervals taken as independent (pipeline.significance.gap_test: conservative, the two share "
                       "the test sentences). CE differences are descriptive.")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=Path, required=True, help="paths.reports of the sweeps")
    ap.add_argument("--base", required=True, help="the recipe the others are read against")
    ap.add_argument("sweeps", nargs="+")
    a = ap.parse_args(argv)
    print(to_markdown(ablation_blocks(a.reports, a.sweeps, a.base)))


if __name__ == "__main__":
    main()
