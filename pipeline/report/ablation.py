"""An ablation across sweeps: the same Df column finetuned under several recipes (issue 28: the desk recipe, then
each control alone, then all of them), and what each recipe does to pretraining's effect. Reads each sweep's
`results.csv` and `comparisons.csv` from `<reports>/<sweep>/` (what collect wrote), nothing else.

    python -m pipeline.report.ablation --reports ~/ds/reports --base desk2_abl_old \\
        desk2_abl_stop desk2_abl_lr desk2_abl_pretrain desk2_abl_all

One row per (sweep, mixture, Df, pretrained rung): the finetuning each side had (steps, whether a cap ended it,
the learning rate), BLEU and CE without and with pretraining, the BLEU difference with its test (the noise it covers
named), the CE difference (seed means, descriptive), and the gap between this recipe's BLEU difference and the base
recipe's at the same rung (its top rung for a rung it did not run), with `significance.gap_test`'s p; a row whose
cells are an earlier recipe's (recipes that compose share cells: a rate search that chose the old rate, a ladder
that adds a rung) names that recipe instead of testing them twice. A sweep not run yet is a row that says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.report.document import Block, to_markdown
from pipeline.report.fmt import fmt_df, fmt_tokens
from pipeline.report.verdicts import BLEU_FLOOR
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


def _pretraining(comp: pd.DataFrame, key: tuple, rung: int) -> pd.Series | None:
    """The comparison of `rung` against no pretraining for key = (task, model, method, mixture, Df)."""
    if comp.empty:
        return None
    task, model, method, mix, df = key
    c = comp[(comp["kind"] == "pretraining") & (comp["task"] == task) & (comp["model"] == model)
             & (comp["method"] == method) & (comp["mixture_b"] == mix) & (comp["df"].astype(str) == str(df))
             & (comp["dp_rung_b"].astype(int) == rung)]
    return c.iloc[0] if len(c) else None


def _t_df(c: pd.Series) -> float:
    return float(c["t_df"]) if "t_df" in c and pd.notna(c["t_df"]) else float("inf")


def ablation_rows(reports: Path, sweeps: list[str], base: str) -> list[list[str]]:
    """The table's rows, the base recipe first. A recipe's row is read against the base recipe's row at the same
    rung, or, for a rung the base did not run (more pretraining), against the base's top rung: what the recipe
    changes, all of it."""
    out: list[list[str]] = []
    ref: dict[tuple, dict[int, pd.Series]] = {}  # the base recipe's comparisons per cell key, by rung
    seen: dict[frozenset, str] = {}  # a row's cells (both sides' evaluation hashes) -> the first recipe that has them
    keys = ["task", "model", "method", "mixture", "df"]
    for sweep in dict.fromkeys([base, *sweeps]):
        read = read_sweep(reports, sweep)
        if read is None:
            out.append([sweep, *["—"] * (len(HEADER) - 2), "not run yet (no results.csv)"])
            continue
        results, comp = read
        for key, g in results[results["dp_rung"] > 0].groupby(keys, sort=False):
            at = results[(results[keys] == pd.Series(key, index=keys)).all(axis=1)]
            none = at[at["dp_rung"] == 0]
            if none.empty:
                continue
            a = _side(none)
            for rung in sorted(g["dp_rung"].astype(int).unique()):
                b = _side(g[g["dp_rung"] == rung])
                c = _pretraining(comp, key, rung)
                if c is not None and sweep == base:
                    ref.setdefault(key, {})[rung] = c
                floor = max(a["bleu"], b["bleu"]) < BLEU_FLOOR
                # Recipes that compose share cells (a grid searched to the same rate, a ladder that adds a rung):
                # such a row is no second measurement, and says whose it is.
                cells = (frozenset(none["config_hash"]) | frozenset(g[g["dp_rung"] == rung]["config_hash"])
                         if "config_hash" in results else frozenset())
                same = seen.setdefault(cells, sweep) if cells else sweep
                if c is None:
                    test, noise, gap = f"{b['bleu'] - a['bleu']:+.2f} (untested)", "—", "—"
                else:
                    test = (f"{float(c['delta']):+.2f} [{float(c['delta_lo']):+.2f}, {float(c['delta_hi']):+.2f}], "
                            f"{p_is(float(c['p_value']))}")
                    noise = str(c.get("noise") or "test sentences")
                    base_rungs = ref.get(key, {})
                    if sweep == base:
                        gap = "(base)"
                    elif same != sweep:
                        gap = f"the same cells as {same}"
                    elif not base_rungs:
                        gap = "—"
                    else:
                        r0 = rung if rung in base_rungs else max(base_rungs)
                        c0 = base_rungs[r0]
                        d, p = gap_test(float(c["delta"]), float(c["delta_lo"]), float(c["delta_hi"]),
                                        float(c0["delta"]), float(c0["delta_lo"]), float(c0["delta_hi"]),
                                        _t_df(c), _t_df(c0))
                        gap = f"{d:+.2f}, {p_is(p)}" + ("" if r0 == rung else f" (against {fmt_tokens(r0)})")
                out.append([sweep, str(key[3]), fmt_df(key[4]), fmt_tokens(rung), f"{a['steps']} / {b['steps']}",
                            f"{a['cap']} of {a['seeds']} / {b['cap']} of {b['seeds']}", f"{a['lr']} / {b['lr']}",
                            f"{a['bleu']:.2f} → {b['bleu']:.2f}" + (f" (below BLEU {BLEU_FLOOR:g})" if floor else ""),
                            test, noise, f"{a['ce']:.3f} → {b['ce']:.3f}", f"{a['len']:.2f} → {b['len']:.2f}", gap])
    return out


def ablation_blocks(reports: Path, sweeps: list[str], base: str) -> list[Block]:
    return [Block("table", header=HEADER, rows=ablation_rows(reports, sweeps, base)),
            Block("p", "Each column gives the side without pretraining, then the pretrained one (`none / "
                       "pretrained`); steps are listed per seed (seed 0, seed 1), the learning rates each side used "
                       "once each; BLEU and CE are seed means. The last column: this row's BLEU difference minus "
                       f"{base}'s at the same rung (at its top rung where {base} has no such rung), a t-test from "
                       "the two 95% intervals taken as independent (pipeline.significance.gap_test: conservative, "
                       f"the two share the test sentences), or the recipe whose cells the row's are. CE "
                       f"differences are descriptive. Below BLEU "
                       f"{BLEU_FLOOR:g} a difference counts stray n-grams, not translation.")]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=Path, required=True, help="paths.reports of the sweeps")
    ap.add_argument("--base", required=True, help="the recipe the others are read against")
    ap.add_argument("sweeps", nargs="+")
    a = ap.parse_args(argv)
    print(to_markdown(ablation_blocks(a.reports, a.sweeps, a.base)))


if __name__ == "__main__":
    main()
