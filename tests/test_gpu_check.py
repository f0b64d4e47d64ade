"""scripts/gpu_check.sh in its shrunken form: the same steps a GPU session runs, on the smoke scale on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


def test_gpu_check_small_runs_end_to_end_and_summarises(l10n_corpus, tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "GPU_CHECK_WORK": str(tmp_path / "work"),
           "PY": sys.executable, "DS_CACHE": str(l10n_corpus.parent), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--small"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["scale"] == "smoke" and s["study_rc"] == 0 and s["bench_rc"] == 0
    # one Df column: both mixtures' rungs and the Dp = 0 baseline at the first Df only
    assert s["cells_ok"] == s["cells"] > 0 and {row["df"] for row in s["results"]} == {s["df"]}
    assert len(s["pretrain"]) == 2 and all(v["tokens_per_s"] > 0 for v in s["pretrain"].values())
    assert s["stage_seconds"]["evaluate"]["tasks"] == s["stage_seconds"]["finetune"]["tasks"] > 0
    assert s["bench_train"][-1].startswith("bf16/fp32 step ratio: ")  # bench_train.py's last line
    assert s["preflight"].startswith("gpu_check preflight ok: ") and s["bench_step_rc"] == 0
    assert "tokens/s, MFU" in s["bench_step"][0] and s["bench_step"][-1].startswith("| cpu | t5_tiny |")
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "tokens/s" in md and "ratio:" in md


def test_gpu_check_refuses_without_its_packages_or_corpus(tmp_path):
    if (ROOT / ".cache" / "l10n-en-de.tar.xz").exists():  # before running it: it would unpack it and run for good
        pytest.skip("a corpus bundle is present (make gpu-bundle): the script would unpack it instead of refusing")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DS_CACHE": str(tmp_path / "empty-cache"),
           "PY": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--small"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no corpus" in r.stdout


def test_preflight_refuses_a_version_off_its_pin_on_the_gpu_and_reports_it_on_a_cpu(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_preflight", ROOT / "scripts" / "gpu_preflight.py")
    pre = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pre)
    monkeypatch.setattr(pre, "pins", lambda: {"pyyaml": "0.0.1", "no-such-package-xyz": "1.0"})
    gpu, cpu = pre.problems(cpu=False), pre.problems(cpu=True)
    assert "no-such-package-xyz is not installed (gpu-requirements.txt pins 1.0)" in gpu + cpu
    drifted = [p for p in gpu if p.startswith("pyyaml ") and p.endswith("gpu-requirements.txt pins 0.0.1")]
    assert drifted and not [p for p in cpu if p.startswith("pyyaml ")]  # a dev venv resolves its own versions
