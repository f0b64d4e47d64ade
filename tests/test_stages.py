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
