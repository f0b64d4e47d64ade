"""Stage directories: identity from content, atomic writes, and the status that says a stage is finished.

A stage's directory is `<root>/<stage>/<name>-<hash>` where the hash covers its config slice and the
hashes of its inputs, so a relaunch finds finished work (skip) or partial work (resume). A directory
is finished only when its `status.json` says `ok`; everything is written to a temporary name in the same
directory, fsynced and renamed, so a killed process never leaves a torn file behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.validate import ConfigError

STATUS = "status.json"


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of JSON-serialisable data, independent of dict order and of float formatting quirks."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (checkpoint markers, data files, downloads)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def stage_dir(root: Path, stage: str, name: str, config_slice: Any, input_hashes: list[str] | tuple = ()) -> Path:
    h = stable_hash({"stage": stage, "config": config_slice, "inputs": sorted(input_hashes)})
    return Path(root) / stage / f"{name}-{h}"


def dir_hash(path: Path) -> str:
    """The hash part of a stage directory's name (what downstream stages key on)."""
    return Path(path).name.rsplit("-", 1)[-1]


# ------------------------------------------------------------------------------------ atomic writes


UMASK = os.umask(0)
os.umask(UMASK)  # read once at import (os.umask can only be read by setting it)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600: results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it into place when the block succeeds.

    If `final` already exists it is replaced (the old one is moved aside first, then deleted), so readers
    see either the old complete directory or the new complete one, never a mix.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700: checkpoints are shared with other users' jobs
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_temporaries(directory: Path) -> list[Path]:
    """Remove half-written temporaries (`.<name>.*.tmp`, `.<name>.old-*`) that a killed process left behind."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for p in directory.iterdir():
        if p.name.startswith(".") and (p.name.endswith(".tmp") or ".old-" in p.name):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


# ------------------------------------------------------------------------------------------- status


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_status(stage_path: Path) -> dict[str, Any] | None:
    try:
        return read_json(Path(stage_path) / STATUS)
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return None


def is_done(stage_path: Path) -> bool:
    st = read_status(stage_path)
    return bool(st and st.get("status") == "ok")


def write_status(stage_path: Path, status: str, *, started: float, error: str | None = None,
                 extra: dict[str, Any] | None = None) -> None:
    payload = {
        "status": status,
        "error": error,
        "started": started,
        "finished": time.time(),
        "seconds": round(time.time() - started, 3),
        **provenance(),
        **(extra or {}),
    }
    atomic_write_json(Path(stage_path) / STATUS, payload)


_PROVENANCE: dict[str, Any] | None = None


def git_sha() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        sha = out.stdout.strip()
        if out.returncode != 0 or not sha:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance() -> dict[str, Any]:
    """Git SHA, package versions, host and device: what a reader needs to trust a number."""
    global _PROVENANCE
    if _PROVENANCE is None:
        from importlib import metadata

        versions = {}
        for pkg in ("torch", "transformers", "datasets", "tokenizers", "sacrebleu", "numpy", "scipy", "peft"):
            try:
                versions[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                versions[pkg] = None
        _PROVENANCE = {
            "git_sha": git_sha(),
            "versions": versions,
            "python": platform.python_version(),
            "host": socket.gethostname(),
            "device": device_name(),
        }
    return dict(_PROVENANCE)


def check_writable(directory: Path, key: str) -> None:
    """Refuse an artifacts/reports directory we cannot write, before any compute.

    The nearest existing ancestor is probed by creating (and removing) a file in it: permission bits say
    nothing to root, a read-only mount or a pseudo-filesystem (/sys, /proc) refuses root too."""
    d = Path(directory)
    probe = d
    while not probe.exists() and not probe.is_symlink():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(key, f"{d} is not writable: {probe} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ds-write-probe.", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ConfigError(key, f"{d} is not writable ({probe}: {e.strerror or e})") from None
