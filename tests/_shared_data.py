"""Where the published reference data lives: ../shared/data beside the checkout, $DS_SHARED_DATA, or
/work/shared/data; tests that need it skip when none exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = [
    Path(__file__).resolve().parents[1].parent / "shared" / "data",
    *([Path(os.environ["DS_SHARED_DATA"])] if os.environ.get("DS_SHARED_DATA") else []),
    Path("/work/shared/data"),
]


def shared_file(*parts: str) -> Path:
    """Path of a file under the shared data folder, or skip the test."""
    for root in _CANDIDATES:
        if (root / Path(*parts)).is_file():
            return root / Path(*parts)
    pytest.skip(f"shared data {'/'.join(parts)} not found (set DS_SHARED_DATA)")
