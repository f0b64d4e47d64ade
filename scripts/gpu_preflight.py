"""The GPU check's preflight: imports, versions, CUDA and bf16, in one line; exit 2 on the first problem.

    python scripts/gpu_preflight.py [--cpu]      # --cpu: no CUDA required (scripts/gpu_check.sh --small)

With --cpu (a development machine, CI) a version that differs from its pin is reported, not refused: the venv
there is resolved by `make install` from the registry of the day, not from gpu-requirements.txt.

Versions: every package pinned in gpu-requirements.txt must be installed at exactly its pin (what make
gpu-bundle carries and what this project runs), transformers below 5 (5.x ties T5's lm_head), and the modules
the pipeline imports must import (datasets needs httpx, hydra needs antlr4 4.9.3).
"""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ("torch", "transformers", "tokenizers", "datasets", "hydra", "omegaconf", "sacrebleu", "rapidfuzz",
           "safetensors", "pandas", "pyarrow", "scipy", "httpx")


def pins(path: Path = ROOT / "gpu-requirements.txt") -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            out[name.strip()] = version.strip()
    return out


def drift() -> list[str]:
    """Pinned packages installed at another version."""
    out = []
    for name, want in pins().items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        if have != want:
            out.append(f"{name} {have} is installed, gpu-requirements.txt pins {want}")
    return out


def problems(cpu: bool) -> list[str]:
    out = []
    for name, want in pins().items():
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(f"{name} is not installed (gpu-requirements.txt pins {want})")
    if not cpu:
        out += drift()
    for mod in IMPORTS:
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 - any import failure is the one line we print
            out.append(f"import {mod} fails: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    if not out:
        import torch
        import transformers

        if int(transformers.__version__.split(".")[0]) >= 5:
            out.append(f"transformers {transformers.__version__}: this project needs transformers<5")
        if not cpu:
            if not torch.cuda.is_available():
                out.append(f"torch {torch.__version__} sees no CUDA device")
            elif not torch.cuda.is_bf16_supported():
                out.append(f"{torch.cuda.get_device_name()} does not support bf16")
    return out


def main(argv: list[str]) -> int:
    cpu = "--cpu" in argv
    bad = problems(cpu)
    if bad:
        print(f"gpu_check preflight FAILED: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
        return 2
    import datasets
    import torch
    import transformers

    dev = (f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, bf16)" if torch.cuda.is_available()
           else f"CPU only, {torch.get_num_threads()} threads")
    off = drift()
    pinned = f"{len(pins())} pins match" if not off else f"{len(off)} of {len(pins())} pins differ (--cpu: {off[0]})"
    print(f"gpu_check preflight ok: python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, datasets {datasets.__version__}, {pinned}; {dev}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
