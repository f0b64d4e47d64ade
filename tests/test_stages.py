"""The stage registry is the one list of stages: every runner it names exists, every stage is a `stage=`
choice, and the planner's selection follows its order."""

from __future__ import annotations

import importlib

import pytest
from conftest import compose

from pipeline import stages
from pipeline.config import ConfigError, load_config
from pipeline.plan import Plan, Task


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda s: s.name)
def test_every_runner_is_a_function(stage):
    module, fn = stage.runner.split(":")
    assert callable(getattr(importlib.import_module(module), fn))


@pytest.mark.parametrize("name", ["tokens", "init", "report"])
def test_every_stage_is_a_stage_choice(name):
    assert load_config(compose(["+sweep=en_de", "scale=smoke", f"stage={name}"])).stage == name
    with pytest.raises(ConfigError, match="stage"):
        load_config(compose(["+sweep=en_de", "scale=smoke", "stage=nonsense"]))


def test_select_follows_the_registry_order():
    plan = Plan(sweep="s", tasks=[Task(id=f"{s}/x", stage=s, name="x", dir="d", deps=(), spec={})
                                  for s in stages.LEVELS], cells=[], summary={})
    assert [t.stage for t in plan.select("init")] == ["tokenizer", "tokens", "init"]
    assert [t.stage for t in plan.select("fit")] == ["collect", "fit"]
    assert [t.stage for t in plan.select("all")] == list(stages.LEVELS)
    assert set(stages.READ_STAGES) == {"collect", "fit", "report"} and "pretrain" in stages.STORED


def test_the_finetuning_cells_run_cheapest_df_first_baseline_then_largest_dp(tmp_path, l10n_corpus):
    # a sweep stopped part-way holds the smallest-Df column whole, each column's two ends first
    from test_training import small_plan

    _, plan = small_plan(tmp_path)
    order = [(t.spec["df"], t.spec["checkpoint"]["dp_rung"]) for t in plan.tasks if t.stage == "finetune"]
    dfs, dps = sorted({d for d, _ in order}), sorted({p for _, p in order if p})
    assert len(dfs) >= 2 and len(dps) >= 2, order
    assert [d for d, _ in order] == sorted(d for d, _ in order)
    for df in dfs:
        col = list(dict.fromkeys(p for d, p in order if d == df))
        assert col == [0, *sorted(dps, reverse=True)], (df, col)
    stages_in_order = [t.stage for t in plan.tasks]
    assert stages_in_order == sorted(stages_in_order, key=stages.LEVELS.index)


def test_every_task_spec_rebuilds_into_its_stage_dataclass_and_back(tmp_path, l10n_corpus):
    # plan.json holds plain data; pipeline.task rebuilds each stage's spec from it: nothing lost or changed,
    # and every field of the typed spec has the type the stage reads
    from test_training import small_plan

    from pipeline.config import DataConfig, PretrainConfig
    from pipeline.model import ModelPreset
    from pipeline.task import typed
    from pipeline.typed import Spec

    _, plan = small_plan(tmp_path)
    seen = set()
    for task in plan.tasks:
        t = typed(task)
        if stages.SPECS[task.stage] is None:
            assert t is task
            continue
        assert isinstance(t.spec, Spec) and type(t.spec).__name__ == stages.SPECS[task.stage]
        assert t.spec.to_dict() == task.spec, task.id
        seen.add(task.stage)
        if task.stage == "pretrain":
            assert isinstance(t.spec.pretrain, PretrainConfig) and isinstance(t.spec.model, ModelPreset)
            assert isinstance(t.spec.dp_ladder, tuple) and isinstance(t.spec.pretrain.betas, tuple)
        if task.stage == "finetune":
            assert isinstance(t.spec.data, DataConfig) and t.spec.checkpoint.parent_dir == task.spec["checkpoint"]["parent_dir"]
    assert seen == {s.name for s in stages.STAGES if s.spec}
