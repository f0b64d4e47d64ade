"""The null-pretraining control: a rung that equals the init (pretraining at learning rate 0) finetunes and
evaluates to the Dp = 0 cell's numbers, through the real stage functions on the small en-de plan. So the
handoff from pretraining to finetuning adds nothing by itself: what a rung changes is its weights.

The comparison is shown to be able to fail: the same control with one handoff defect put in on purpose (the
rung's dropout, another RNG state, the rung's tokenizer encoding differently, the pretraining optimizer's state
carried over, one real pretraining rung) must come out different.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_training import first, max_abs_diff, run_upto, small_plan, weights, with_spec

import pipeline.evaluate as evaluate
import pipeline.finetune as finetune
import pipeline.pretrain as pretrain
from pipeline.training import checkpoint_for, init_path

pytestmark = pytest.mark.usefixtures("one_thread")

FT = {"max_steps": 8, "eval_every": 4, "patience": 100}  # short cells; early stopping never ends them


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    """The plan with its inputs built, the Dp = 0 cell finetuned and evaluated, and a zero-rate rung."""
    root = tmp_path_factory.mktemp("null")
    _, plan = small_plan(root)
    run_upto(plan, "pretrain")
    pt = first(plan, "pretrain")
    rung = pt.spec["dp_ladder"][0]
    runs = {}
    for name, lr in (("zero", 0.0), ("real", pt.spec["pretrain"]["lr"])):  # the rung at lr 0, and a real one
        task = with_spec(pt, root / f"pt-{name}", pretrain={"lr": lr}, dp_ladder=[rung])
        pretrain.run(task)
        runs[name] = task
    base = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] == 0
                and t.spec["df"] == plan.cells[0].df)
    cell = cell_run(plan, base, root / "base")
    return {"root": root, "plan": plan, "runs": runs, "base": base, "base_out": cell, "rung": rung}


def cell_run(plan, ft_task, out, parent_dir: str | None = None, steps: int = 0) -> dict:
    """Finetune and evaluate one cell into `out` (from `parent_dir`'s rung of `steps` steps, or its own)."""
    ckpt = dict(ft_task.spec["checkpoint"])
    if parent_dir is not None:
        ckpt.update(parent_dir=parent_dir, steps=steps)
    ft = with_spec(ft_task, out / "ft", finetune=FT, checkpoint=ckpt)
    finetune.run(ft)
    ev_task = next(t for t in plan.tasks if t.stage == "evaluate" and ft_task.id in t.deps)
    evaluate.run(with_spec(ev_task, out / "ev", finetune_dir=str(out / "ft")))
    return {"ft": json.loads((out / "ft" / "finetune.json").read_text()),
            "metrics": json.loads((out / "ev" / "metrics.json").read_text()),
            "best": weights(out / "ft" / "best")}


def rung_cell(null, name: str, out) -> dict:
    task = null["runs"][name]
    steps = next(iter(task.spec.rung_steps()))
    return cell_run(null["plan"], null["base"], out, task.dir, steps)


def differences(a: dict, b: dict) -> dict[str, float]:
    """How far two cells are apart: the validation curve, the best weights, and every test metric."""
    curve = [np.array([c["val_ce"] for c in x["ft"]["curve"]]) for x in (a, b)]
    out = {"val_curve": float(np.max(np.abs(curve[0] - curve[1]))) if len(curve[0]) == len(curve[1]) else np.inf,
           "best_weights": max_abs_diff(a["best"], b["best"])}
    for k in ("bleu", "chrf", "ce"):
        out[k] = abs(a["metrics"][k] - b["metrics"][k])
    out["predictions"] = float(a["metrics"]["sys_len"] != b["metrics"]["sys_len"])
    return out


TOL = {"val_curve": 1e-6, "best_weights": 1e-6, "bleu": 1e-9, "chrf": 1e-9, "ce": 1e-6, "predictions": 0.0}


def test_a_rung_that_equals_the_init_finetunes_to_the_dp0_cell(null, tmp_path):
    zero = null["runs"]["zero"]
    steps = next(iter(zero.spec.rung_steps()))
    assert steps > 0
    # The premise: pretraining at rate 0 went through the real loop (its steps, its rung) and left the weights
    # and tokenizer of the init as they were.
    rung_ckpt = checkpoint_for(zero.dir, steps)
    init = init_path(null["base"].spec["checkpoint"]["parent_dir"])
    assert max_abs_diff(weights(rung_ckpt), weights(init)) == 0
    for f in ("tokenizer.json", "special_tokens_map.json"):
        if (init / f).exists():
            assert (rung_ckpt / f).read_text() == (init / f).read_text()
    got = rung_cell(null, "zero", tmp_path)
    assert got["ft"]["pretrain_steps"] == steps and got["ft"]["checkpoint"] == str(rung_ckpt)
    base = null["base_out"]
    assert got["ft"]["steps"] == base["ft"]["steps"] == FT["max_steps"]
    assert got["ft"]["best_step"] == base["ft"]["best_step"]
    diff = differences(got, base)
    assert all(diff[k] <= TOL[k] for k in TOL), diff


def _dropout_of_the_rung(monkeypatch):
    """Defect: a pretrained rung keeps its own dropout (pretraining runs without) instead of finetuning's."""
    real = finetune.load_model
    monkeypatch.setattr(finetune, "load_model", lambda path, **kw: real(
        path, **({**kw, "dropout_rate": 0.0} if "checkpoints" in str(path) else kw)))


def _rng_not_reseeded(monkeypatch):
    """Defect: the cell's random state is not the seed's (e.g. carried over from pretraining)."""
    real = finetune.seed_all
    monkeypatch.setattr(finetune, "seed_all", lambda seed: real(seed + 1))


def _tokenizer_of_the_rung(monkeypatch):
    """Defect: the rung's tokenizer encodes differently (here: no EOS, as a tokenizer saved with other special-token
    settings would)."""
    real = finetune.load_tokenizer

    class NoEos:
        def __init__(self, tok):
            self._tok = tok

        def __getattr__(self, name):
            return getattr(self._tok, name)

        def __call__(self, texts, **kw):
            return self._tok(texts, **{**kw, "add_special_tokens": False})

        def __len__(self):
            return len(self._tok)

    monkeypatch.setattr(finetune, "load_tokenizer",
                        lambda path: NoEos(real(path)) if "checkpoints" in str(path) else real(path))


def _optimizer_state_carried(monkeypatch):
    """Defect: finetuning starts from the pretraining optimizer's moments instead of a fresh optimizer."""
    from pipeline.training import load_training_checkpoint

    real, real_load = finetune.make_optimizer, finetune.load_for_finetune
    rung, model = {}, {}
    monkeypatch.setattr(finetune, "checkpoint_for", lambda d, s: rung.setdefault("ckpt", checkpoint_for(d, s)))
    monkeypatch.setattr(finetune, "load_for_finetune", lambda *a, **kw: model.setdefault("m", real_load(*a, **kw)))

    def carried(params, *a, **kw):
        opt = real(params, *a, **kw)
        if rung.get("ckpt") and "checkpoints" in str(rung["ckpt"]):
            # the rung's sharded optimizer state (its weights are the init's: loading them changes nothing)
            load_training_checkpoint(rung["ckpt"], model["m"], opt)
        return opt

    monkeypatch.setattr(finetune, "make_optimizer", carried)


@pytest.mark.parametrize("defect", [_dropout_of_the_rung, _rng_not_reseeded, _tokenizer_of_the_rung,
                                    _optimizer_state_carried, "real"],
                         ids=["dropout", "rng", "tokenizer", "optimizer-state", "one-real-rung"])
def test_the_control_fails_when_the_handoff_changes_something(null, tmp_path, monkeypatch, defect):
    if defect == "real":  # a rung pretrained at the real rate: its weights differ, so must its cell
        got = rung_cell(null, "real", tmp_path)
    else:
        defect(monkeypatch)
        got = rung_cell(null, "zero", tmp_path)
    diff = differences(got, null["base_out"])
    assert diff["val_curve"] > 1e-4 and diff["best_weights"] > 1e-4, diff
