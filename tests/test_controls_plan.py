"""The planner's side of the training controls: a learning-rate grid searched on the first seed and its winner
reused for the other seeds (planned once that search is finished), and repeated pretraining text allowed only
on request (pretrain.max_epochs), without changing the identity of any run planned before either existed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_training import small_plan

from pipeline.artifacts import atomic_write_json, write_status

GRID = ["finetune.lrs=[1e-3,3e-3]", "finetune.seeds=[0,1]", "finetune.df_ladder=[64]"]


def finetunes(plan) -> list:
    return [t for t in plan.tasks if t.stage == "finetune"]


def finish(task, best_val_ce: float) -> None:
    atomic_write_json(Path(task.dir) / "finetune.json", {"best_val_ce": best_val_ce})
    write_status(Path(task.dir), "ok", started=time.time())


def test_first_seed_search_plans_the_other_seeds_at_its_winner_once_it_is_done(tmp_path):
    _, per_seed = small_plan(tmp_path, extra=GRID)
    _, plan = small_plan(tmp_path, extra=[*GRID, "finetune.lr_search=first_seed"])
    n_rungs = len({t.spec["checkpoint"]["parent_dir"] + str(t.spec["checkpoint"]["steps"]) for t in finetunes(plan)})
    assert n_rungs == 1 + 2 * 3  # Dp = 0 and the three rungs of each mixture
    assert len(finetunes(per_seed)) == n_rungs * 2 * 2  # per seed: every rate on every seed
    seed0 = finetunes(plan)
    assert {t.spec["seed"] for t in seed0} == {0} and len(seed0) == n_rungs * 2
    assert plan.summary["lr_deferred"] == n_rungs and plan.summary["n_finetune"] == n_rungs * 3
    waiting = [c for c in plan.cells if not c.finetune_id]
    assert {(c.seed, c.lr_from) for c in waiting} == {(1, 0)}
    # The first seed's cells finish: the rate with the lower validation CE wins, per cell (here 3e-3 on the
    # baseline, 1e-3 on every rung), and the other seed is planned at it, in the directory a per-seed plan gives it.
    for t in seed0:
        finish(t, 4.0 if (t.spec["lr"] == 3e-3) == (t.spec["checkpoint"]["steps"] == 0) else 5.0)
    _, again = small_plan(tmp_path, extra=[*GRID, "finetune.lr_search=first_seed"])
    assert again.summary["lr_deferred"] == 0 and all(c.finetune_id for c in again.cells)
    seed1 = [t for t in finetunes(again) if t.spec["seed"] == 1]
    assert len(seed1) == n_rungs
    for t in seed1:
        assert t.spec["lr"] == (3e-3 if t.spec["checkpoint"]["steps"] == 0 else 1e-3)
    assert {t.dir for t in seed1} <= {t.dir for t in finetunes(per_seed)}
    assert {c.lr_from for c in again.cells if c.seed == 1} == {0}


def test_repeating_pretraining_text_is_refused_unless_asked_and_then_counted(tmp_path):
    from pipeline.config import ConfigError

    ladder = "pretrain.dp_ladder=[8192,400000]"  # a few times the corpus slice's text
    with pytest.raises(ConfigError) as e:
        small_plan(tmp_path, extra=[ladder])
    assert e.value.key == "pretrain.dp_ladder" and "pretrain.max_epochs" in str(e.value)
    _, plan = small_plan(tmp_path, extra=[ladder, "pretrain.max_epochs=50"])
    epochs = plan.summary["pretrain_epochs"]
    lang = max(epochs, key=epochs.get)  # the language read most often (every English mixture's)
    assert epochs[lang] > 2 and plan.summary["pretrain_max_epochs"] == 50
    with pytest.raises(ConfigError) as e:  # asked for fewer passes than the ladder makes
        small_plan(tmp_path, extra=[ladder, f"pretrain.max_epochs={max(1.0, epochs[lang] * 0.9):.3f}"])
    assert e.value.key == "pretrain.max_epochs" and f"{lang} text" in str(e.value)


def test_the_new_settings_at_their_defaults_leave_every_run_where_it_was(tmp_path):
    """pretrain.max_epochs is a limit (the data of a step does not depend on it) and lr_search says which cells
    run, not how: neither is part of a run's identity, so existing sweeps find their finished work."""
    _, plan = small_plan(tmp_path)
    # and nothing else declared run-only (config.py's RUN_ONLY) moves a run: how it is logged, checkpointed, held
    _, other = small_plan(tmp_path, extra=["pretrain.max_epochs=3", "finetune.lr_search=first_seed",
                                           "pretrain.log_every=3", "pretrain.checkpoint_minutes=7",
                                           "pretrain.activation_checkpointing=true",
                                           "finetune.activation_checkpointing=true", "finetune.micro_batch_tokens=4096"])
    assert [t.dir for t in plan.tasks] == [t.dir for t in other.tasks]
    spec = json.loads(json.dumps(next(t for t in plan.tasks if t.stage == "pretrain").spec))
    assert "max_epochs" not in spec["config"]["pretrain"]


@pytest.mark.slow  # seven plans on the whole corpus
def test_desk2_resumes_the_desk_runs_outweighs_its_cells_and_its_ablation_shares_the_study_cells(tmp_path, l10n_corpus):
    from conftest import compose

    from pipeline.run import prepare

    def plan(sweep: str, scale: str = "desk2"):
        return prepare(compose([f"+sweep={sweep}", f"scale={scale}", "stage=plan", f"paths.artifacts={tmp_path / 'a'}",
                                f"paths.reports={tmp_path / 'r'}"]))[1]

    def dirs(p, stage: str = "finetune", **spec) -> set[str]:
        return {t.dir for t in p.tasks if t.stage == stage and all(t.spec[k] == v for k, v in spec.items())}

    desk, main = plan("en_de", "desk"), plan("en_de")
    assert dirs(main, "pretrain") == dirs(desk, "pretrain")  # the desk study's runs, resumed past 8M
    s = main.summary
    cell = s["finetune_flops_max"] / s["finetune_steps"] * s["finetune_cell_steps_max"]
    assert max(r["flops"] for m in s["models"].values() for r in m["runs"]) >= 4 * cell
    assert s["pretrain_max_epochs"] > 1 and s["lr_search"] == "first_seed" and len(s["lrs"]) >= 2
    ablation = {v: plan(f"desk2_abl_{v}") for v in ("old", "stop", "lr", "pretrain", "all")}
    assert dirs(ablation["all"]) <= dirs(main)  # all three points = the study's own column
    assert dirs(ablation["stop"], seed=0) <= dirs(main)
    # the old recipe is the desk study's (its finetuning identity), and nothing of it is in desk2's study
    old = next(t for t in ablation["old"].tasks if t.stage == "finetune").spec["config"]["finetune"]
    assert old == next(t for t in desk.tasks if t.stage == "finetune").spec["config"]["finetune"]
    assert not dirs(ablation["old"]) & dirs(main)
    for v in ("lr", "pretrain"):  # each point alone shares the old recipe's cells where it does not change them
        assert dirs(ablation["old"], seed=0) <= dirs(ablation[v])


@pytest.mark.slow  # a real (tiny) sweep up to finetuning
def test_the_study_command_searches_on_the_first_seed_then_plans_and_runs_the_others_itself(tmp_path):
    from conftest import compose
    from test_training import SMALL, small_corpus

    from pipeline.plan import task_state
    from pipeline.run import prepare, run

    overrides = [*SMALL, *small_corpus(tmp_path), f"paths.artifacts={tmp_path / 'artifacts'}",
                 f"paths.reports={tmp_path / 'reports'}", "~sweep.tasks.en-de.mixtures.en100",
                 "pretrain.dp_ladder=[8192]", *GRID, "finetune.max_steps=4", "finetune.eval_every=2",
                 "finetune.lr_search=first_seed", "stage=finetune", "executor.workers=1"]
    assert run(compose(overrides)) == 0
    _, plan = prepare(compose(overrides))
    assert plan.summary["lr_deferred"] == 0
    fts = finetunes(plan)
    assert len(fts) == 2 * 3 and all(task_state(t) == "done" for t in fts)  # Dp 0 and 8192: 2 rates + 1 reused
    for t in fts:
        if t.spec["seed"] == 1:
            ce = {u.spec["lr"]: json.loads((Path(u.dir) / "finetune.json").read_text())["best_val_ce"]
                  for u in fts if u.spec["seed"] == 0 and u.spec["checkpoint"] == t.spec["checkpoint"]}
            assert t.spec["lr"] == min(ce, key=ce.get)
