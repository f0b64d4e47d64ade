"""Scaling laws and their fitter: see `fit.py` for the API (and the modules it calls: `minimise`, `intervals`,
`flags`, `result`), `laws.py` for the laws, `predict.py` for prediction
and inversion, `backtest.py` for the measured coverage of the intervals (docs/fitting.md)."""

from .fit import FitResult, fit, objective
from .laws import LAWS
from .verdict import Misalignment, misalignment

__all__ = ["LAWS", "FitResult", "Misalignment", "fit", "misalignment", "objective"]
