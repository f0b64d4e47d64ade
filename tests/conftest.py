"""Shared test helpers: compose the real Hydra config (compose API), run the CLI, locate the corpus."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def compose(overrides: list[str]):
    """The real config, composed exactly as `python -m pipeline` does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m pipeline ...` in a subprocess (the exit code and stderr are part of the contract)."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd or ROOT, env=e, capture_output=True,
                          text=True, timeout=timeout)


def corpus_dir() -> Path:
    return Path(os.environ.get("DS_CACHE", ROOT / ".cache")) / "l10n"


@pytest.fixture
def l10n_corpus() -> Path:
    """The real offline corpus (built by `make corpus`); tests that need it skip without it."""
    d = corpus_dir()
    if not (d / "manifest.json").exists():
        pytest.skip(f"the offline corpus is not built at {d} (run `make corpus`)")
    return d


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): the
    same numerics as the one-thread subprocesses it is compared with, and no OpenMP spin-wait collapse when
    the two cores are shared with other jobs."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FAKE_SBATCH = """#!/bin/sh
# Record the call, answer like `sbatch --parsable`.
n=$(cat "$FAKE_DIR/n" 2>/dev/null || echo 100); n=$((n + 1)); echo $n > "$FAKE_DIR/n"
echo "$@" >> "$FAKE_DIR/calls"
echo "$n;cluster"
"""


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch) -> Path:
    """A stand-in `sbatch` first on PATH that records its calls (in $FAKE_DIR/calls) and answers like `--parsable`."""
    d = tmp_path / "bin"
    d.mkdir()
    (d / "sbatch").write_text(FAKE_SBATCH)
    (d / "sbatch").chmod(0o755)
    monkeypatch.setenv("FAKE_DIR", str(d))
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    return d
