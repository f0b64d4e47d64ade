"""Data-parallel pretraining: two CPU processes (gloo), launched by torchrun on localhost as a user would
(`torchrun --nproc_per_node 2 -m pipeline.task plan.json 0`), each taking half of the same global batch,
end with the weights, loss curve and rungs of a single-process run, to float tolerance.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_training import (
    curve,
    first,
    free_port,
    max_abs_diff,
    run_upto,
    small_plan,
    subprocess_env,
    weights,
    with_spec,
    write_plan_file,
)

from pipeline.training import step_dir

LADDER = [8192, 16384]  # 8 and 15 steps of 16 x 70 raw tokens


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    from pipeline.task import execute

    _, plan = small_plan(tmp_path)
    run_upto(plan, "pretrain")
    base = first(plan, "pretrain", "en50_de50")
    assert base.spec["pretrain"]["batch_size"] == 16 and base.spec["pretrain"]["distributed"] == "auto"
    # One process: the global batch of 16 in one micro-batch. Two: 8 rows each, gradients all-reduced.
    single = with_spec(base, tmp_path / "single", dp_ladder=LADDER)
    assert execute(single) == "ok"
    ddp = with_spec(base, tmp_path / "ddp", dp_ladder=LADDER, pretrain={"micro_batch_size": 8})
    plan_file = write_plan_file(ddp, tmp_path / "plan.json")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "pipeline.task", str(plan_file), "0"]
    r = subprocess.run(cmd, env={**subprocess_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert "data-parallel over 2 processes (ddp, gloo)" in r.stderr, r.stderr[-2000:]

    last = 15
    a, b = weights(step_dir(tmp_path / "single" / "checkpoints", last)), weights(step_dir(tmp_path / "ddp" / "checkpoints", last))
    init = weights(base.spec["init_dir"] + "/model")
    assert max_abs_diff(a, {k: init[k] for k in a}) > 1e-3  # training moved the weights
    assert max_abs_diff(a, b) < 1e-5
    got, want = curve(tmp_path / "ddp"), curve(tmp_path / "single")
    assert [s for s, _ in got] == [s for s, _ in want]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-5)
    rungs = [json.loads((tmp_path / d / "rungs.json").read_text()) for d in ("single", "ddp")]
    assert rungs[0].keys() == rungs[1].keys() == {str(x) for x in LADDER}
    for k in rungs[0]:
        assert rungs[0][k]["dp_tokens"] == rungs[1][k]["dp_tokens"]
        assert rungs[0][k]["upstream_mixture"] == pytest.approx(rungs[1][k]["upstream_mixture"], rel=1e-5)
