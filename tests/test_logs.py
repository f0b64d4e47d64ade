"""Logging set-up: off a terminal (a SLURM log, a file) the libraries' progress bars are switched off, so a log
holds lines, not thousands of carriage-returned bar updates; on a terminal they stay."""

from __future__ import annotations

import io
import os

import pytest

from pipeline import logs


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_progress_bars_are_quiet_only_off_a_terminal(monkeypatch, tty):
    import datasets

    for var in logs.PROGRESS_ENV:
        monkeypatch.delenv(var, raising=False)
    datasets.enable_progress_bars()
    monkeypatch.setattr("sys.stderr", _Tty() if tty else io.StringIO())
    logs.setup_logging()
    assert datasets.is_progress_bar_enabled() is tty
    assert all((os.environ.get(v) == "1") is not tty for v in logs.PROGRESS_ENV)
    datasets.enable_progress_bars()
