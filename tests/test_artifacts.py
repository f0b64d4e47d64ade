"""Stage identity and atomic writes: the contracts every stage relies on to skip, resume and never tear."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.artifacts import (
    atomic_dir,
    atomic_write_json,
    clean_temporaries,
    is_done,
    stable_hash,
    stage_dir,
    write_status,
)


def test_identity_is_computed_from_config_and_inputs(tmp_path):
    a = stage_dir(tmp_path, "finetune", "ft", {"lr": 1e-3, "df": 100}, ["abc", "def"])
    assert a == stage_dir(tmp_path, "finetune", "ft", {"df": 100, "lr": 1e-3}, ["def", "abc"])  # order-free
    assert a != stage_dir(tmp_path, "finetune", "ft", {"lr": 1e-3, "df": 101}, ["abc", "def"])
    assert a != stage_dir(tmp_path, "finetune", "ft", {"lr": 1e-3, "df": 100}, ["abc", "xyz"])
    assert a.parent == tmp_path / "finetune" and a.name.startswith("ft-")
    assert stable_hash({"x": [1, 2]}) != stable_hash({"x": [2, 1]})


def test_status_ok_is_what_marks_a_stage_finished(tmp_path):
    assert not is_done(tmp_path)
    write_status(tmp_path, "failed", started=time.time(), error="boom")
    assert not is_done(tmp_path)
    st = json.loads((tmp_path / "status.json").read_text())
    assert st["error"] == "boom" and st["git_sha"] and st["versions"]["torch"] and st["host"] and st["device"]
    write_status(tmp_path, "ok", started=time.time())
    assert is_done(tmp_path)


def test_atomic_dir_leaves_nothing_when_the_block_fails(tmp_path):
    final = tmp_path / "ckpt"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights").write_bytes(b"x" * 100)
        raise RuntimeError("killed mid-write")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_bytes(b"new")
    assert (final / "weights").read_bytes() == b"new"


def test_a_killed_writer_leaves_the_old_file_or_the_new_one_and_a_temporary_that_is_cleaned(tmp_path):
    target = tmp_path / "table.json"
    atomic_write_json(target, {"v": 0})
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
            "from pipeline.artifacts import atomic_write_json\n"
            f"i = 0\nwhile True:\n    i += 1\n    atomic_write_json({str(target)!r}, {{'v': i, 'pad': 'x' * 200000}})\n")
    p = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(1.5)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert json.loads(target.read_text())["v"] >= 0  # always a complete JSON document
    clean_temporaries(tmp_path)
    assert [x.name for x in tmp_path.iterdir()] == ["table.json"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    # mkstemp creates 0600 files: a results table or report only its writer could read
    from pipeline.artifacts import UMASK, atomic_write_text

    atomic_write_text(tmp_path / "results.csv", "a,b\n")
    assert (tmp_path / "results.csv").stat().st_mode & 0o777 == 0o666 & ~UMASK
    with atomic_dir(tmp_path / "checkpoint") as d:
        (d / "w").write_bytes(b"x")
    assert (tmp_path / "checkpoint").stat().st_mode & 0o777 == 0o777 & ~UMASK
