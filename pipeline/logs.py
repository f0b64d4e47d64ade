"""Logging set-up for every entry point (the CLI, `python -m pipeline.task`, the local executor's workers).

A stdlib-only leaf: the lowest layers (task, executors) import it without importing the CLI. On a stderr that
is not a terminal (a SLURM log, a file, a pipe) the libraries' progress bars are switched off, so a log holds
lines, not thousands of carriage-returned bar updates ("Generating train split: ...").
"""

from __future__ import annotations

import logging
import os
import sys

NOISY = ("httpx", "urllib3", "datasets", "filelock", "fsspec")
# read by datasets / huggingface_hub (and so transformers' downloads) when they are imported
PROGRESS_ENV = ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS")


def quiet_progress_bars() -> None:
    """Progress bars of datasets, huggingface_hub and transformers off, whether or not they are imported yet.
    (tokenizers' trainer bar is switched off where it is called: `show_progress=False` in tokenizer.py.)"""
    for var in PROGRESS_ENV:
        os.environ.setdefault(var, "1")
    if "datasets" in sys.modules:  # imported before us: its config already read the environment
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not sys.stderr.isatty():
        quiet_progress_bars()
