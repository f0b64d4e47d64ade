"""Disk space (issue #8): the plan's estimate against the bytes a smoke pretraining run really writes; a run
refused in one line (exit 2, nothing written) when the artifacts disk cannot hold the sweep, while
`stage=plan` only warns; old optimizer states pruned once newer checkpoints exist, every rung's weights kept.

A subprocess sees a small disk through a `sitecustomize.py` (on its PYTHONPATH, written by the test) that
replaces `pipeline.budget.free_bytes` when DS_TEST_FREE_BYTES is set.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import ROOT, cli, compose
from test_training import first, small_plan, with_spec

from pipeline.budget import disk_estimate, existing_bytes, human_bytes
from pipeline.training import MARKER, STATE, checkpoint_meta, verify_checkpoint

SMOKE = ["+sweep=en_de", "scale=smoke"]
ONE_MIXTURE = ["~sweep.tasks.en-de.mixtures.en100"]

HOOK = '''
import os
if os.environ.get("DS_TEST_FREE_BYTES"):
    from pathlib import Path
    import pipeline.budget as budget

    def free_bytes(path):
        probe = Path(path)
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        return probe, int(os.environ["DS_TEST_FREE_BYTES"])

    budget.free_bytes = free_bytes
'''


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A one-mixture small sweep through pretraining (a checkpoint every step, so pruning has work to do)
    and one finetuning cell; its plan's disk estimate."""
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("disk")
    _, plan = small_plan(root, ONE_MIXTURE)
    assert len(plan.summary["models"]["t5_tiny"]["runs"]) == 1
    for t in plan.tasks:
        if t.stage in ("tokenizer", "tokens", "init"):
            assert execute(t) == "ok"
    pt = first(plan, "pretrain")
    assert execute(with_spec(pt, pt.dir, pretrain={"checkpoint_minutes": 1e-6})) == "ok"
    ft = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["dp_rung"] > 0)
    assert execute(ft) == "ok"
    _, after = small_plan(root, ONE_MIXTURE)  # planned again: token counts are exact once tokens ran
    return {"root": root, "plan": plan, "pretrain": Path(pt.dir), "finetune": Path(ft.dir),
            "estimate": disk_estimate(plan.summary), "estimate_after": disk_estimate(after.summary)}


def measured(plan, stage: str, prefix: str = "") -> int:
    return existing_bytes(t.dir for t in plan.tasks if t.stage == stage and t.name.startswith(prefix))


@pytest.mark.slow
def test_estimate_matches_what_a_smoke_pretraining_writes(written):
    """Measured bytes / estimated bytes, by kind, for the estimate printed before anything ran.

    Weights (init, each rung, each finetuned cell's best/) are estimated as 4 bytes a parameter; the files
    beside them (config.json, tokenizer, meta.json, COMPLETE, status, logs) add a few tens of KB, ~5% of a
    0.5M-parameter t5_tiny and nothing at paper scale: ratio in [1, 1.25].
    Pretraining adds two resumable states at 12 bytes a parameter (weights + AdamW's two moments), but the
    newest checkpoints are usually rungs whose weights are already counted, so the real bytes can be up to
    2 x 4 bytes a parameter less: 28/36 of the estimate for this 3-rung ladder. Ratio in [0.75, 1.25].
    Token streams are estimated at 3 characters a token before the tokenizer exists; a real tokenizer gives
    1.5 (this test's 400-token vocabulary) to ~4 (8k vocabulary): ratio in [0.5, 2.1]; once the tokens stage
    has run, the plan counts them exactly: ratio in [1, 1.01]."""
    plan, est, after = written["plan"], written["estimate"], written["estimate_after"]
    got = {"init": measured(plan, "init"), "pretrain": measured(plan, "pretrain", "pt-"),
           "finetune cell": measured(plan, "finetune", written["finetune"].name.rsplit("-", 1)[0]),
           "tokens": measured(plan, "tokens"), "tokens (after)": measured(plan, "tokens")}
    want = {"init": est["init"], "pretrain": est["pretrain"], "finetune cell": est["finetune"] // plan.summary["n_finetune"],
            "tokens": est["tokens"], "tokens (after)": after["tokens"]}
    bounds = {"init": (1, 1.25), "pretrain": (0.75, 1.25), "finetune cell": (1, 1.25), "tokens": (0.5, 2.1),
              "tokens (after)": (1, 1.01)}
    ratios = {k: got[k] / want[k] for k in want}
    print({k: (human_bytes(got[k]), human_bytes(want[k]), round(ratios[k], 3)) for k in want})
    assert all(bounds[k][0] <= r <= bounds[k][1] for k, r in ratios.items()), ratios


@pytest.mark.slow
def test_old_optimizer_states_are_pruned_and_every_rung_keeps_its_weights(written):
    ck = written["pretrain"] / "checkpoints"
    dirs = sorted(ck.iterdir())
    rungs = json.loads((written["pretrain"] / "rungs.json").read_text())
    rung_dirs = {written["pretrain"] / v["checkpoint"] for v in rungs.values()}
    assert len(rung_dirs) == 3 and rung_dirs <= set(dirs)
    for d in dirs:  # whatever is left is complete and loadable
        assert verify_checkpoint(d, deep=True) is None and (d / "model.safetensors").is_file()
    with_state = [d for d in dirs if (d / STATE).exists()]
    assert with_state == dirs[-2:]  # 37 checkpoints were written (one a step); two resumable states remain
    assert all(STATE not in json.loads((d / MARKER).read_text())["files"] for d in dirs[:-2])
    # time-based checkpoints older than the two newest are gone; rungs stay whatever their age
    assert all(checkpoint_meta(d)["rung"] for d in dirs[:-2]), [d.name for d in dirs]
    assert not (written["finetune"] / "state").exists()  # a finished cell keeps only best/


@pytest.fixture
def small_disk(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    pythonpath = os.pathsep.join([str(hook), str(ROOT), os.environ.get("PYTHONPATH", "")])

    def env(free: int) -> dict[str, str]:
        return {"PYTHONPATH": pythonpath, "DS_TEST_FREE_BYTES": str(free)}

    return env


def paths(tmp_path: Path) -> list[str]:
    return [f"paths.artifacts={tmp_path / 'artifacts'}", f"paths.reports={tmp_path / 'reports'}"]


def needed(tmp_path: Path) -> int:
    """Bytes the smoke sweep still needs on the artifacts disk (its estimate less what is written)."""
    from pipeline.run import disk_check, prepare

    cfg, plan = prepare(compose([*SMOKE, "stage=plan", *paths(tmp_path)]))
    disk = disk_check(cfg, plan)
    return disk["estimate"]["total"] - disk["have"]


def test_a_disk_too_small_refuses_the_run_in_one_line(tmp_path, small_disk, l10n_corpus):
    r = cli(*SMOKE, *paths(tmp_path), env=small_disk(needed(tmp_path) // 10))
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert re.fullmatch(r"error: paths\.artifacts: the sweep needs about \S+ \w+ of checkpoints and token files but "
                        rf"{re.escape(str(tmp_path))} has \S+ \w+ free; free space, choose another paths\.artifacts, "
                        r"or shrink the sweep", lines[0]), lines[0]
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "reports").exists()


def test_stage_plan_only_warns(tmp_path, small_disk, l10n_corpus):
    r = cli(*SMOKE, "stage=plan", *paths(tmp_path), env=small_disk(needed(tmp_path) // 10))
    assert r.returncode == 0, r.stderr[-2000:]
    warned = [x for x in r.stdout.splitlines() if "NOT ENOUGH DISK" in x]
    assert len(warned) == 1 and "running this sweep would be refused" in warned[0], r.stdout
    assert "Traceback" not in r.stderr


def test_the_threshold_is_the_estimate(tmp_path, monkeypatch, l10n_corpus):
    """One byte short of the estimate refuses, the estimate itself passes: the refusal above is the
    estimate's, not any small number's."""
    import pipeline.budget
    import pipeline.run
    from pipeline.config import ConfigError
    from pipeline.run import prepare

    need = needed(tmp_path)
    for free, refused in ((need - 1, True), (need, False)):
        fake = lambda path, free=free: (tmp_path, free)  # noqa: E731
        monkeypatch.setattr(pipeline.budget, "free_bytes", fake)
        monkeypatch.setattr(pipeline.run, "free_bytes", fake)
        cfg = compose([*SMOKE, *paths(tmp_path)])
        if refused:
            with pytest.raises(ConfigError, match="paths.artifacts: the sweep needs about"):
                prepare(cfg)
        else:
            prepare(cfg)
