"""Time our fitter against a plain Python loop of scipy L-BFGS-B over the same 4,500-start Chinchilla grid.

    python scripts/bench_fit.py [--data FILE] [--repeats 3] [--scipy-starts N]

The scipy side is the procedure Hoffmann et al. ran and Epoch reproduced: summed Huber (delta 1e-3) of
ln L − LSE(a − α ln N, b − β ln D, e), `minimize(method="L-BFGS-B")` with its default tolerances and
finite-difference gradients, once per start, best successful objective kept. Our side is `fit("chinchilla",
interval="none")`: the optimum only, as the loop gives. The two sides alternate, `--repeats` times each, and the
median wall time of each side counts, so that a load that comes and goes hits both. The load average is printed
before and after: quote a ratio only from an idle machine. `--scipy-starts N` times only the first N starts
and scales the time up (a quick check, labelled as such). Last line: `ratio: X` (median wall-clock ratio).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from pipeline.precision import cpu_model  # noqa: E402
from pipeline.scaling import fit  # noqa: E402
from pipeline.scaling.laws import hoffmann_grid  # noqa: E402


def default_data() -> Path:
    """chinchilla_nd_loss.csv under ../shared/data beside the checkout, $DS_SHARED_DATA or /work/shared/data."""
    roots = [Path(__file__).resolve().parents[1].parent / "shared" / "data", Path("/work/shared/data")]
    if os.environ.get("DS_SHARED_DATA"):
        roots.insert(1, Path(os.environ["DS_SHARED_DATA"]))
    files = [r / "chinchilla" / "chinchilla_nd_loss.csv" for r in roots]
    return next((f for f in files if f.is_file()), files[0])


def scipy_loop(
    ln_n: np.ndarray, ln_d: np.ndarray, ln_l: np.ndarray, grid: np.ndarray
) -> tuple[float, np.ndarray, int]:
    def huber_objective(p):
        a, b, e, alpha, beta = p
        pred = np.logaddexp(np.logaddexp(a - alpha * ln_n, b - beta * ln_d), e)
        r = np.abs(ln_l - pred)
        return np.sum(np.where(r <= 1e-3, 0.5 * r**2, 1e-3 * (r - 0.5e-3)))

    best, best_x, n_ok = np.inf, None, 0
    for start in grid:
        res = minimize(huber_objective, start, method="L-BFGS-B")
        n_ok += bool(res.success)
        if res.success and res.fun < best:
            best, best_x = res.fun, res.x
    return best, best_x, n_ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--scipy-starts", type=int, default=4500)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    df = pd.read_csv(a.data)
    df = df[df.epoch_used == 1]
    x, y = df[["N_params", "D_tokens"]].to_numpy(), df["loss"].to_numpy()
    grid = hoffmann_grid()
    print(
        f"machine: {cpu_model()}, torch {torch.__version__}"
    )
    print(f"data: {len(y)} points, grid: {len(grid)} starts, {a.repeats} alternating repeats per side")
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    fit("power", x[:20, 0], y[:20])  # warm up torch's lazy initialisation, not part of the timing
    k = min(a.scipy_starts, len(grid))
    label = "" if k == len(grid) else f" (first {k} starts, times scaled to {len(grid)})"
    ln_n, ln_d, ln_l = np.log(x[:, 0]), np.log(x[:, 1]), np.log(y)
    ours_w, scipy_w, ours_c, scipy_c = [], [], [], []
    for r in range(a.repeats):
        w, c = time.perf_counter(), time.process_time()
        res = fit("chinchilla", x, y, interval="none")
        ours_w.append(time.perf_counter() - w)
        ours_c.append(time.process_time() - c)
        p = res.params
        print(
            f"[{r + 1}] ours : objective {res.objective:.8e}  {ours_w[-1]:8.2f} s wall {ours_c[-1]:8.2f} s cpu  "
            f"E={p['E']:.5f} alpha={p['alpha']:.5f} beta={p['beta']:.5f}"
        )
        w, c = time.perf_counter(), time.process_time()
        best, bx, n_ok = scipy_loop(ln_n, ln_d, ln_l, grid[:k])
        scipy_w.append((time.perf_counter() - w) * len(grid) / k)
        scipy_c.append((time.process_time() - c) * len(grid) / k)
        print(
            f"[{r + 1}] scipy: objective {best:.8e}  {scipy_w[-1]:8.2f} s wall {scipy_c[-1]:8.2f} s cpu  "
            f"E={np.exp(bx[2]):.5f} alpha={bx[3]:.5f} beta={bx[4]:.5f}  successes {n_ok}/{k}{label}"
        )
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    med = {k: float(np.median(v)) for k, v in
           {"ours": ours_w, "scipy": scipy_w, "ours_cpu": ours_c, "scipy_cpu": scipy_c}.items()}
    print(f"median wall: ours {med['ours']:.3f} s, scipy {med['scipy']:.2f} s")
    print(f"cpu ratio: {med['scipy_cpu'] / med['ours_cpu']:.1f}")
    print(f"ratio: {med['scipy'] / med['ours']:.1f}")


if __name__ == "__main__":
    main()
