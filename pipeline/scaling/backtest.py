"""Backtest: how often does a fit's prediction interval cover the larger runs it never saw?

Every case fits a law on the smaller runs of a published dataset (or of one of our sweeps' fits) and
predicts the larger ones: the runs within EXTRAPOLATION× of the largest are held out, so every prediction is an
extrapolation of up to that factor. Per (dataset, law): the share of held-out points inside their `level`
prediction interval (the interval a measurement there falls in, FitResult.band(observed=True)) and the median
relative error. `python -m pipeline.scaling backtest` prints the table; docs/fitting.md records it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .calibration import law_label
from .fit import fit
from .laws import LAWS, TWO_STAGE_LINKS

EXTRAPOLATION = 8.0  # hold out the runs within this factor of the largest
GORDON_MIN_BYTES = 5242880  # the authors' own cut: smaller training sets are below the law's range
APPLE_FIT_MAX_FLOPS = 2.5e20  # the data's README split: fit N <= 1.34B, predict 3.2B to 6.85B
# the Apple benchmarks with a usable curve, and their chance level (README: MMLU and GSM8K sit at chance)
APPLE_BENCHMARKS = {
    "arc_easy/acc": 0.25,
    "arc_challenge/acc_norm": 0.25,
    "hellaswag/acc_norm": 0.25,
    "piqa/acc": 0.5,
    "sciq/acc": 0.25,
    "lambada_openai/acc": 0.0,
    "winogrande/acc": 0.5,
}


@dataclass
class Case:
    dataset: str
    law: str
    name: str
    x: np.ndarray
    y: np.ndarray
    holdout: np.ndarray
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:  # the law's name in the table: options can make it a different model (a link)
        return law_label(self.law, self.options)


def _tail(x: np.ndarray) -> np.ndarray:
    return x > x.max() / EXTRAPOLATION


def gordon(root: Path) -> Iterator[Case]:
    """Gordon et al. 2021: BLEU and dev CE against training bytes, one curve per (language, model size)."""
    df = pd.read_csv(root / "nmt-gordon2021" / "data_scaling.csv")
    df = df[df.data_bytes > GORDON_MIN_BYTES]
    for key, g in df.groupby(["lang", "layers", "d_model"]):
        g = g.sort_values("data_bytes")
        x = g.data_bytes.to_numpy(float)
        name = "{}-{}x{}".format(*key)
        # BLEU on BPE tokens wobbles by a few tenths at the top: that is noise, not a misaligned curve
        yield Case("gordon2021 BLEU", "bleu_log", name, x, g.bleu_dev.to_numpy(float), _tail(x), {"monotone_tol": 1.0})
        yield Case("gordon2021 CE", "power", name, x, g.ent_dev.to_numpy(float), _tail(x))


def chinchilla(root: Path) -> Iterator[Case]:
    """Hoffmann et al. 2022 (Epoch's 240 points): fitted on the smaller models, predicting the larger ones."""
    df = pd.read_csv(root / "chinchilla" / "chinchilla_nd_loss.csv")
    df = df[df.epoch_used == 1]
    x = df[["N_params", "D_tokens"]].to_numpy(float)
    yield Case("chinchilla (by model size)", "chinchilla", "N > Nmax/8", x, df.loss.to_numpy(float), _tail(x[:, 0]))


def gadre(root: Path) -> Iterator[Case]:
    """Gadre et al. 2024: their loss law on their 5-run fit set, predicting the 1.4B and 6.9B runs."""
    df = pd.read_csv(root / "gadre-overtraining" / "models.csv")
    for ds, g in df.groupby("train_dataset"):
        small = g.N_params < 1e9
        fit_set = small & ((g.tok_mult_M == 20) | ((g.N_params < 2e7) & (g.tok_mult_M == 320)))
        big = ~small
        g = g[fit_set | big]
        x = g[["N_params", "tok_mult_M"]].to_numpy(float)
        yield Case("gadre2024", "gadre_loss", ds, x, g.loss_c4_val.to_numpy(float), (g.N_params >= 1e9).to_numpy())


def apple(root: Path) -> Iterator[Case]:
    """Krajewski et al. 2025 (the stored DCLM subset, TPR 20): accuracy against compute per benchmark."""
    df = pd.read_csv(root / "apple-downstream-metrics" / "dclm_selected_wide.csv")
    df = df[df.tpr == 20]
    for col, q0 in APPLE_BENCHMARKS.items():
        g = df.dropna(subset=[col]).sort_values("flops_nominal")
        c, acc = g.flops_nominal.to_numpy(float), g[col].to_numpy(float)
        hold = c > APPLE_FIT_MAX_FLOPS
        yield Case("apple2025 DCLM", "direct", col, c, acc, hold, {"q0": q0})
        nll = col.split("/")[0] + "/neg_loglikelihood_norm"
        if nll in g:
            g2 = g.dropna(subset=[nll])
            c2 = g2.flops_nominal.to_numpy(float)
            x = np.c_[c2, g2[nll].to_numpy(float)]
            y2, hold2 = g2[col].to_numpy(float), c2 > APPLE_FIT_MAX_FLOPS
            # the linear link, then links that can bend: do they fix the linear link's misses?
            for link in TWO_STAGE_LINKS:
                yield Case("apple2025 DCLM", "two_stage", col, x, y2, hold2, {"link": link})


def fit_records(records: list[dict], label: str) -> Iterator[Case]:
    """The per-curve fits of one of our sweeps, as the fit stage writes them (fits.json): every record of a
    one-input law with its points, refitted on the same points with the same held-out ones (the fit stage holds
    out the largest `fit.holdout_largest` rungs: our ladders are too short for the 8× rule). The two-stage
    routes and the laws of two inputs are left out."""
    for rec in records:
        law, pts = rec.get("law"), rec.get("points") or {}
        if law not in LAWS or LAWS[law].nx != 1 or not pts.get("x"):
            continue
        x = np.asarray(pts["x"], dtype=float)
        hold = np.asarray(pts.get("holdout") or [False] * len(x), dtype=bool)
        name = "/".join(str(rec.get(k)) for k in ("task", "mixture", "model", "method", "df"))
        yield Case(label, law, name, x, np.asarray(pts["y"], dtype=float), hold)


PUBLISHED = (gordon, chinchilla, gadre, apple)


def default_data() -> Path:
    """../shared/data beside the checkout, $DS_SHARED_DATA, or /work/shared/data: the first that exists."""
    import os

    roots = [Path(__file__).resolve().parents[3] / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("DS_SHARED_DATA"):
        roots.insert(0, Path(os.environ["DS_SHARED_DATA"]))
    return next((r for r in roots if r.is_dir()), roots[-1])


def cases(root: Path, ours: Iterable[Case] = ()) -> Iterator[Case]:
    """Every published dataset's cases, then the caller's own (e.g. `fit_records` of a sweep's fits.json)."""
    for source in PUBLISHED:
        yield from source(root)
    yield from ours


def run(all_cases: list[Case], level: float = 0.9) -> pd.DataFrame:
    """One row per held-out point of every case (NaN interval where the fit failed)."""
    rows = []
    for c in all_cases:
        res = fit(c.law, c.x, c.y, holdout=c.holdout, level=level, **c.options)
        law = c.label
        if not res.ok:
            rows.append({"dataset": c.dataset, "law": law, "case": c.name, "ok": False, "reason": res.reason})
            continue
        for h in res.holdout:
            rows.append({"dataset": c.dataset, "law": law, "case": c.name, "ok": True, "y": h["y"],
                         "pred": h["pred"], "lo": h["lo"], "hi": h["hi"], "rel_err": h["rel_err"],
                         "flags": len(res.flags)})
    return pd.DataFrame(rows)


def summary(points: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, law): fits made, held-out points, coverage of the interval, median relative error."""
    out = []
    for (ds, law), g in points.groupby(["dataset", "law"], sort=False):
        ok = g[g.ok]
        covered = (ok.lo <= ok.y) & (ok.y <= ok.hi)
        finite = np.isfinite(ok.lo) & np.isfinite(ok.hi)
        out.append({
            "dataset": ds,
            "law": law,
            "fits ok": f"{ok.case.nunique()}/{g.case.nunique()}",
            "held out": len(ok),
            "coverage": float(covered.mean()) if len(ok) else math.nan,
            "unbounded": int((~finite).sum()),
            "median rel. error": float(ok.rel_err.median()) if len(ok) else math.nan,
            "median width / y": float(((ok.hi - ok.lo) / ok.y.abs())[finite].median()) if finite.any() else math.nan,
        })
    return pd.DataFrame(out)


def markdown(table: pd.DataFrame, level: float) -> str:
    head = ["dataset", "law", "fits ok", "held-out points", f"{level:.0%} coverage", "unbounded",
            "median rel. error", "median width / y"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        cov = f"{r.coverage:.0%}" if math.isfinite(r.coverage) else "—"
        err = f"{r[6]:.1%}" if math.isfinite(r[6]) else "—"
        width = f"{r[7]:.3g}" if math.isfinite(r[7]) else "—"
        lines.append(f"| {r.dataset} | {r.law} | {r[2]} | {r[3]} | {cov} | {r.unbounded} | {err} | {width} |")
    return "\n".join(lines)
