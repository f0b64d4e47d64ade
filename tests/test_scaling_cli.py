"""`python -m pipeline.scaling fit`: one line and exit 2 on bad input; parameters or one JSON object otherwise."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.scaling.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    dp = np.geomspace(1e6, 1e10, 9)
    df = pd.DataFrame(
        {"Dp": dp, "ce": (1.5 + 40 * dp**-0.3) * (1 + 1e-4 * rng.standard_normal(9)), "keep": 1}
    )
    df.loc[8, "keep"] = 0
    path = tmp_path_factory.mktemp("cli") / "curve.csv"
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--law", "nope", "--x", "Dp", "--y", "ce"], "unknown law"),
        (["--law", "power", "--x", "Dp,zzz", "--y", "ce"], "zzz"),
        (["--law", "power", "--x", "Dp", "--y", "nothere"], "nothere"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--where", "ce > 1e9"], "no rows selected"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--where", "ce >> (("], "not a valid expression"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--holdout", "nocol > 3"], "not a valid expression"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--where", "ce + 1"], "True/False"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--opt", "q0=0.2"], "no option"),
        (["--law", "power", "--x", "Dp"], "required"),
        (["--law", "power", "--x", "Dp", "--y", "ce", "--bootstrap", "many"], "bootstrap"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(csv, capsys, args, says):
    assert main(["fit", "--csv", csv, *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and says in err


def test_missing_file_is_exit_2(capsys, tmp_path):
    assert main(["fit", "--csv", str(tmp_path / "none.csv"), "--law", "power", "--x", "a", "--y", "b"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_text_output(csv, capsys):
    rc = main(["fit", "--csv", csv, "--law", "power", "--x", "Dp", "--y", "ce", "--where", "keep == 1",
               "--holdout", "Dp > 3e9", "--bootstrap", "20"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "law power: ok" in out and "points fitted 7" in out and "alpha" in out and "90% interval" in out
    assert "held out 1" in out  # keep == 1 drops Dp = 1e10


def test_failed_fit_is_exit_1(csv, capsys):
    rc = main(["fit", "--csv", csv, "--law", "power", "--x", "Dp", "--y", "ce", "--where", "Dp < 2e6"])
    assert rc == 1 and "too few points" in capsys.readouterr().out


def test_json_via_python_m(csv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipeline.scaling", "fit", "--csv", csv, "--law", "power", "--x", "Dp",
           "--y", "ce", "--holdout", "Dp > 3e9", "--delta", "1e-3", "--json"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["ok"] and d["law"] == "power" and d["n_fit"] == 7 and d["delta"] == 1e-3
    assert d["params"]["alpha"] == pytest.approx(0.3, rel=0.02) and d["params"]["E"] == pytest.approx(
        1.5, rel=0.02
    )
    assert [h["x"] > 3e9 for h in d["holdout"]] == [True, True]
    assert all(h["rel_err"] < 0.01 for h in d["holdout"])
