"""The results table (`results.csv`): its columns, what an older table is given for a column it lacks, how it
is read, and its reading rules (which rows are fitted, why the others are left out, one point per Dp over the
seeds). One schema for the stage that writes it (collect) and the stages and libraries that read it (fit,
report); docs/ARCHITECTURE.md explains each column. The metric columns come from the metric registry
(pipeline/metrics.py): a new metric is declared there, not here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import FitConfig, TrackingConfig
from pipeline.metrics import METRICS, required_metrics
from pipeline.typed import Spec


def columns() -> list[str]:
    """The table's columns, in the order collect writes them (each declared metric after `test_split`, and the
    second split's `other_<metric>` after `other_split`). Old tables may lack later ones."""
    return [
        "task", "src", "tgt", "mixture", "alignment", "model", "params", "params_non_embedding",
        "dp", "dp_rung", "pretrain_steps", "df", "df_tokens", "df_tokens_source", "df_tokens_target",
        "seed", "method", "lr", "selected",
        "test_split", *METRICS, "bp", "p1", "p2", "p3", "p4", "sys_len", "ref_len", "gen_len", "n_test",
        "other_split", *(f"other_{m}" for m in METRICS),
        "upstream_loss_mixture", "upstream_loss_src", "upstream_loss_tgt",
        "finetune_steps", "best_step", "best_val_ce", "stopped", "wall_seconds",
        # the precision the cell was finetuned in (and its reference CE scored in); its checkpoint's pretraining
        "dtype", "pretrain_dtype",
        # the training controls: stopped by a cap (not by early stopping), epochs finetuned, the rate chosen for the
        # cell and on which seed's search, what the rung's pretraining read (unique tokens among Dp, epochs)
        "hit_cap", "ft_epochs", "lr_chosen", "lr_search", "pt_unique_tokens", "pt_epochs",
        "device", "checkpoint", "config_hash", "git_sha", "bleu_signature", "status", "reason",
        # decoding: does BLEU measure translation? output/reference length (sacreBLEU's sys_len / ref_len), the share
        # of runaway outputs and the count that hit the generation cap (pipeline.evaluate), the beam size
        "len_ratio", "runaway", "gen_at_cap", "num_beams", "decode_dtype",
    ]


def required() -> list[str]:
    """Without these a table cannot be fitted; every other column a reader uses has a default (`defaults`)."""
    return ["task", "mixture", "model", "dp", "df", *required_metrics(), "status"]


def defaults() -> dict[str, Any]:
    """What a table written before a column existed is given for it."""
    return {
        "method": "full", "seed": 0, "selected": True, "alignment": np.nan, "src": None, "tgt": None,
        **{m: np.nan for m in METRICS if m not in required_metrics()},
        "upstream_loss_mixture": np.nan, "upstream_loss_tgt": np.nan, "params": np.nan, "reason": "",
        "test_split": "test", "other_split": None, **{f"other_{m}": np.nan for m in METRICS},
        "len_ratio": np.nan, "runaway": np.nan,
        "dtype": None, "pretrain_dtype": None, "decode_dtype": None,
        # the training controls (older tables: unknown)
        "hit_cap": np.nan, "ft_epochs": np.nan, "lr_chosen": np.nan, "lr_search": None, "pt_unique_tokens": np.nan,
        "pt_epochs": np.nan,
    }


@dataclass(frozen=True)
class Cell:
    """One row of the results table: what was finetuned from what, and where its evaluation lands."""

    task: str
    src: str
    tgt: str
    mixture: str
    alignment: float
    model: str
    dp_rung: int  # the nominal rung (0 = no pretraining)
    dp_tokens: int  # raw text tokens actually consumed at that checkpoint
    pretrain_steps: int
    df: int
    seed: int
    method: str
    lr: float
    finetune_id: str  # "" for a cell not planned yet (it waits for the learning rate searched on lr_from)
    evaluate_id: str
    lr_from: int | None = None  # the seed whose lrs search chose this cell's rate (None: its own, or no grid)


class ResultsError(ValueError):
    """A results table the fitter cannot read (missing columns, unreadable file)."""


def load_results(path: Path) -> pd.DataFrame:
    """Read a results table, old or new: missing optional columns get defaults; required ones must exist."""
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read the results table ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    need = required()
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}; a results table has {', '.join(need)}")
    fill = defaults()
    if "decode_dtype" not in df.columns and "dtype" in df.columns:
        df["decode_dtype"] = df["dtype"]  # before decode_dtype, a cell decoded in the precision it was evaluated in
    for k, v in fill.items():
        if k not in df.columns:
            df[k] = v
    df["method"] = df["method"].fillna(fill["method"])
    df["selected"] = df["selected"].astype(str).str.lower().isin(["true", "1"])
    return df


# ------------------------------------------------------------------------------ reading rules

GROUP = ["task", "mixture", "model", "method", "df"]  # one curve against Dp
# seed_means column of each upstream loss, and its name in fits.csv / correlations.csv
UPSTREAM = {"mixture": "upstream", "tgt": "upstream_tgt"}


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Evaluated, selected (learning-rate grid) rows with finite metrics; the rest is reported, not fitted."""
    return df[_exclusion(df).isna()].copy()


def _exclusion(df: pd.DataFrame) -> pd.Series:
    """Why each row is left out of the fits (NaN: it is used)."""
    why = pd.Series(np.nan, index=df.index, dtype=object)
    # later assignments win: a failed status explains its missing metrics better than "bleu is NaN" would, and
    # the first required metric's reason wins over the others'
    for c in ("df", "dp", *reversed(required_metrics())):
        why[~np.isfinite(pd.to_numeric(df[c], errors="coerce"))] = f"{c} is not a finite number"
    why[~df["selected"]] = "not selected (another learning rate had the better validation CE)"
    bad = df["status"] != "ok"
    why[bad] = "status " + df.loc[bad, "status"].astype(str)
    return why


def excluded(df: pd.DataFrame) -> pd.DataFrame:
    """The rows `usable` leaves out, each with the reason; listed in the report, never silently dropped."""
    why = _exclusion(df)
    cols = [c for c in ("task", "mixture", "model", "method", "dp", "df", "seed") if c in df.columns]
    out = df.loc[why.notna(), cols].copy()
    out["why"] = why[why.notna()]
    return out


def seed_means(df: pd.DataFrame) -> pd.DataFrame:
    """One point per Dp: each metric over the seeds as its declaration says (pipeline.metrics), with its spread
    `<metric>_sd`, the number of seeds, and the upstream losses."""
    per_metric = {}
    for m in METRICS.values():
        per_metric |= {m.name: (m.name, m.seeds), f"{m.name}_sd": (m.name, "std")}
    agg = df.groupby([*GROUP, "dp"], dropna=False).agg(
        **per_metric, n_seeds=("status", "size"), alignment=("alignment", "first"),
        params=("params", "first"), upstream=("upstream_loss_mixture", "mean"),
        upstream_tgt=("upstream_loss_tgt", "mean")).reset_index()
    return agg.sort_values([*GROUP, "dp"])


@dataclass(frozen=True)
class Scale:
    name: str
    description: str


@dataclass(frozen=True)
class ReadSpec(Spec):
    """What the stages that read the results table (collect, fit, report) are given."""

    sweep: str
    reports_dir: str  # <paths.reports>/<sweep>: the table, the fits and the report
    results: str | None  # paths.results: a table copied back from elsewhere, read instead of the sweep's own
    fit: FitConfig
    tracking: TrackingConfig
    scale: Scale
    data_source: str

    def table(self) -> tuple[Path, pd.DataFrame]:
        """The results table this task reads (the sweep's own, or paths.results), and where it is."""
        path = Path(self.results) if self.results else Path(self.reports_dir) / "results.csv"
        if not path.exists():
            raise ResultsError(f"no results table at {path}: run the sweep (or `stage=collect`) first")
        return path, load_results(path)


def is_ok(v: Any) -> bool:
    """An `ok` cell of fits.csv / methods.csv read back by pandas (bool, 'True' or 'true')."""
    return str(v).lower() == "true"
