"""Stage `collect`: every evaluated cell of the sweep into one table, `<reports>/<sweep>/results.csv`.

One row per planned cell, with provenance. A cell that is missing or failed keeps its row, with `status`
and `reason`, and is listed on stdout: nothing is silently dropped. Each evaluate task writes only its
own directory (atomically), so evaluate jobs finishing together cannot lose rows. collect holds a lock
while it reads the cells and replaces the table (temp file + rename): racing collects run one after the
other, so the last table written is also the last one read, and a reader never sees a torn file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.artifacts import atomic_write_text, dir_hash, read_json, read_status
from pipeline.metrics import METRICS
from pipeline.results import Cell, ReadSpec, columns

log = logging.getLogger(__name__)

def _cell_row(cell: Cell, dirs: dict[str, str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task": cell.task, "src": cell.src, "tgt": cell.tgt, "mixture": cell.mixture, "alignment": cell.alignment,
        "model": cell.model, "dp": cell.dp_tokens, "dp_rung": cell.dp_rung, "pretrain_steps": cell.pretrain_steps,
        "df": cell.df, "seed": cell.seed, "method": cell.method, "lr": cell.lr,
        "lr_search": "own seed" if cell.lr_from is None else f"seed {cell.lr_from}",
    }
    if not cell.finetune_id:  # finetune.lr_search=first_seed: planned once the first seed's grid is finished
        return {**row, "status": "missing", "reason": f"waits for the learning rate searched on seed {cell.lr_from} "
                                                      "(the same command plans it once that search is finished)"}
    ev, ft = Path(dirs[cell.evaluate_id]), Path(dirs[cell.finetune_id])
    row["config_hash"] = dir_hash(ev)
    st = read_status(ev)
    if st is None:
        ft_st = read_status(ft)
        if ft_st and ft_st.get("status") == "failed":
            return {**row, "status": "failed", "reason": f"finetune failed: {ft_st.get('error')}"}
        reason = "not evaluated yet" if ft.exists() else "not finetuned yet"
        return {**row, "status": "missing", "reason": reason}
    if st.get("status") != "ok":
        return {**row, "status": "failed", "reason": f"evaluate failed: {st.get('error')}"}
    m = read_json(ev / "metrics.json")
    f = read_json(ft / "finetune.json")
    ft_st = read_status(ft) or {}
    p = m.get("precisions") or [None] * 4
    # every declared metric (pipeline.metrics); one an older evaluation did not compute is left empty
    row.update({name: m.get(name) for name in METRICS})
    row.update({
        "bp": m["bp"], "p1": p[0], "p2": p[1], "p3": p[2],
        "p4": p[3], "sys_len": m["sys_len"], "ref_len": m["ref_len"], "gen_len": m["gen_len_mean"],
        "n_test": m["n_test"], "bleu_signature": m["bleu_signature"], "test_split": m.get("test_split", "test"),
        "df_tokens_source": f["df_tokens"]["source"], "df_tokens_target": f["df_tokens"]["target"],
        "df_tokens": f["df_tokens"]["source"] + f["df_tokens"]["target"],
        "finetune_steps": f["steps"], "best_step": f["best_step"], "best_val_ce": f["best_val_ce"],
        "stopped": f["stopped"], "wall_seconds": round(f["seconds"] + m["seconds_ce"] + m["seconds_generate"], 3),
        "device": m["device"], "checkpoint": f["checkpoint"], "git_sha": st.get("git_sha") or ft_st.get("git_sha"),
        "status": "ok", "reason": "",
    })
    # decoding (metrics.json before the runaway count lacks these: the ratio is still sys_len / ref_len)
    row.update({"len_ratio": m.get("len_ratio", m["sys_len"] / m["ref_len"] if m["ref_len"] else None),
                "runaway": m.get("runaway"), "gen_at_cap": m.get("hit_cap", m.get("hit_max_new_tokens")),
                "num_beams": m.get("num_beams")})
    row.update({"dtype": m.get("dtype") or f.get("dtype"), "pretrain_dtype": f.get("pretrain_dtype")})
    row["decode_dtype"] = m.get("decode_dtype") or row["dtype"]  # before it was recorded: decoded as evaluated
    row["hit_cap"] = bool(f.get("hit_cap", f["stopped"] != "early_stopping"))
    row["ft_epochs"] = f.get("epochs")
    other = m.get("other")
    if other:  # the second held-out split, scored beside the first
        row.update({"other_split": other["test_split"], **{f"other_{name}": other.get(name) for name in METRICS}})
    meta = _checkpoint_meta(f["checkpoint"])
    if meta:
        params = meta.get("params") or {}
        row["params"], row["params_non_embedding"] = params.get("total"), params.get("non_embedding")
        up = meta.get("upstream") or {}
        losses = up.get("upstream") or {}
        row["upstream_loss_mixture"] = up.get("upstream_mixture")
        row["upstream_loss_src"] = losses.get(cell.src)
        row["upstream_loss_tgt"] = losses.get(cell.tgt)
        if "unique_tokens" in up:  # what the rung read (runs written before repetition existed lack it)
            row["pt_unique_tokens"], row["pt_epochs"] = up["unique_tokens"], up["epochs"]
    if cell.pretrain_steps == 0:
        row["pt_unique_tokens"], row["pt_epochs"] = 0, 0.0
    return row


def _checkpoint_meta(path: str) -> dict[str, Any] | None:
    """meta.json of the checkpoint a cell started from; rung checkpoints carry the upstream losses, and
    parameter counts are read from the run's init checkpoint when the rung does not repeat them."""
    p = Path(path) / "meta.json"
    if not p.exists():
        return None
    meta = read_json(p)
    if "params" not in meta:
        init = _init_meta(Path(path))
        if init:
            meta["params"] = init.get("params")
    return meta


def _init_meta(ckpt: Path) -> dict[str, Any] | None:
    cfg = ckpt.parent.parent / "config.yaml"  # <run>/checkpoints/step-N -> <run>/config.yaml
    if not cfg.exists():
        return None
    import yaml

    init_dir = yaml.safe_load(cfg.read_text()).get("init_dir")
    p = Path(init_dir) / "model" / "meta.json" if init_dir else None
    return read_json(p) if p and p.exists() else None


LR_KEYS = ["task", "mixture", "model", "dp_rung", "df", "seed", "method"]  # one cell of the study, any rate


def select_lr(df: pd.DataFrame) -> pd.Series:
    """With a learning-rate grid, each cell keeps the rate with the best validation CE (Isik et al.)."""
    ok = df[df["status"] == "ok"]
    winners = ok.groupby(LR_KEYS)["best_val_ce"].idxmin() if len(ok) else []
    return pd.Series(df.index.isin(list(winners)), index=df.index)


def chosen_lr(df: pd.DataFrame) -> pd.Series:
    """Every row's cell's winning rate (the selected row's lr; NaN while none of the cell's rates is finished)."""
    win = df[df["selected"]].set_index(LR_KEYS)["lr"]
    keys = pd.MultiIndex.from_frame(df[LR_KEYS])
    return pd.Series(win.reindex(keys).to_numpy(dtype=float), index=df.index)


def collect(cells: list[Cell], dirs: dict[str, str]) -> pd.DataFrame:
    rows = [_cell_row(c, dirs) for c in cells]
    df = pd.DataFrame(rows, columns=columns())
    df["selected"] = select_lr(df)
    df["lr_chosen"] = chosen_lr(df)
    # A cell planned at one rate with no rate of its own to choose from says so (a grid of one, or reused)
    n_rates = df.groupby(LR_KEYS, dropna=False)["lr"].transform("nunique")
    df.loc[(n_rates <= 1) & (df["lr_search"] == "own seed"), "lr_search"] = "fixed"
    return df


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_results(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.10g"))


def comparisons(df: pd.DataFrame, cells: list[Cell], dirs: dict[str, str], out: Path) -> pd.DataFrame:
    """The paired-bootstrap BLEU comparisons the report reads (pipeline.significance), from each cell's stored
    predictions; those of an earlier comparisons.csv whose cells did not change are kept."""
    from pipeline.significance import compare_cells

    def predictions(i: int) -> tuple[list[str], list[str]]:
        rows = [json.loads(x) for x in (Path(dirs[cells[i].evaluate_id]) / "predictions.jsonl").read_text(
            encoding="utf-8").splitlines() if x.strip()]
        return [r["hypothesis"] for r in rows], [r["reference"] for r in rows]

    cached = pd.read_csv(out) if out.exists() and out.stat().st_size > 1 else None
    sig = df["bleu_signature"].dropna()
    tokenize = sig.iloc[0].split("tok:")[1].split("|")[0] if len(sig) and "tok:" in sig.iloc[0] else "13a"
    return compare_cells(df, predictions, tokenize, cached)


@dataclass(frozen=True)
class CollectSpec(ReadSpec):
    cells: tuple[Cell, ...]  # every planned cell, so a missing one keeps its row
    dirs: dict[str, str]  # task id -> directory, of every cell's finetune and evaluate task


def run(task) -> None:
    spec: CollectSpec = task.spec
    out = Path(spec.reports_dir) / "results.csv"
    # Read and write under one lock: with the lock around the write alone, a collect that read the cells
    # earlier could replace a newer table with its older snapshot.
    with locked(out.with_name(".results.lock")):
        df = collect(list(spec.cells), spec.dirs)
        write_results(df, out)
        comp = comparisons(df, list(spec.cells), spec.dirs, out.with_name("comparisons.csv"))
        atomic_write_text(out.with_name("comparisons.csv"), comp.to_csv(index=False, float_format="%.10g"))
    bad = df[df["status"] != "ok"]
    print(f"collect {spec.sweep}: {int((df['status'] == 'ok').sum())} of {len(df)} cells evaluated -> {out}")
    for _, r in bad.iterrows():
        print(f"  {r['status']:<8} {r['task']} {r['mixture']} {r['model']} Dp={r['dp_rung']} Df={r['df']} "
              f"seed={r['seed']} {r['method']}: {r['reason']}")
