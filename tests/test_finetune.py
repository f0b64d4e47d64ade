"""The finetune stage on a slice of the real corpus: nested Df subsets reach the right cells, one task prefix
for training and evaluation, early stopping keeps the best-validation model, the Dp = 0 baseline starts from
the random init, and SIGTERM checkpoints, exits 0 and the rerun ends where an uninterrupted run ends.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from test_training import (
    first,
    max_abs_diff,
    small_plan,
    start,
    subprocess_env,
    task_cmd,
    wait_for,
    weights,
    with_spec,
    write_plan_file,
)

import pipeline.evaluate as evaluate
import pipeline.finetune as finetune
import pipeline.seq2seq as seq2seq
from pipeline.config import LoraConfig
from pipeline.training import MARKER, STATE
from pipeline.typed import from_dict

PREFIX = "translate English to German: "


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """The small en-de plan with a task prefix; tokenizer and random init built (what Dp = 0 cells need)."""
    from pipeline.task import execute

    root = tmp_path_factory.mktemp("ft")
    _, plan = small_plan(root, extra=[f"finetune.task_prefix='{PREFIX}'"])
    for s in ("tokenizer", "init"):
        assert execute(first(plan, s)) == "ok"
    return plan


def baseline_cell(plan, df: int):
    return next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] == 0
                and t.spec["df"] == df)


def data(task):
    """(training pool, validation rows used, tokenizer) of a finetune cell, read as the stage reads them."""
    from pathlib import Path

    from pipeline.config import data_config
    from pipeline.sources import get_source
    from pipeline.training import checkpoint_for
    from pipeline.vocab import load_tokenizer

    spec = task.spec
    source = get_source(data_config(spec["data"]), Path(spec["cache"]))
    val = source.parallel(spec["pair"], "validation")
    val_rows = [r["translation"] for r in val.select(range(min(spec["finetune"]["validation_size"], len(val))))]
    tok = load_tokenizer(checkpoint_for(spec["checkpoint"]["parent_dir"], spec["checkpoint"]["steps"]))
    return source.parallel(spec["pair"], "train"), val_rows, tok


def encode(task, tok, rows):
    c = task.spec["finetune"]
    return seq2seq.encode_pairs(tok, rows, task.spec["src"], task.spec["tgt"], c["task_prefix"],
                                 c["max_source_length"], c["max_target_length"])


def record_training_batches(monkeypatch) -> list[tuple[int, ...]]:
    """Every source sequence the training loop batches (validation batches are not counted)."""
    seen: list[tuple[int, ...]] = []
    in_validation = [False]
    collate, reference_ce = seq2seq.collate, seq2seq.reference_ce

    def spy_collate(src, tgt, pad):
        if not in_validation[0]:
            seen.extend(tuple(s) for s in src)
        return collate(src, tgt, pad)

    def spy_ce(*a, **k):
        in_validation[0] = True
        try:
            return reference_ce(*a, **k)
        finally:
            in_validation[0] = False

    monkeypatch.setattr(finetune, "collate", spy_collate)
    monkeypatch.setattr(finetune, "reference_ce", spy_ce)
    return seen


def test_nested_subsets_are_prefixes_of_one_permutation():
    small, large = finetune.nested_subset(5000, 1000, 7), finetune.nested_subset(5000, 8000 // 2, 7)
    assert set(small) <= set(large) and list(large[:1000]) == list(small)
    assert len(set(large)) == 4000
    assert set(finetune.nested_subset(5000, 1000, 8)) != set(small)  # the seed matters
    with pytest.raises(ValueError, match="larger than the pool"):
        finetune.nested_subset(500, 1000, 0)


def test_epoch_batches_cover_every_pair_once_pad_little_and_depend_only_on_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(4, 120, 5000)
    b = finetune.epoch_batches(lengths, 32, seed=3, epoch=1)
    assert len(b) == -(-5000 // 32) and sorted(np.concatenate(b).tolist()) == list(range(5000))
    again = finetune.epoch_batches(lengths, 32, seed=3, epoch=1)
    assert all((x == y).all() for x, y in zip(b, again))  # a resumed run sees the same batches
    assert any((x != y).any() for x, y in zip(b, finetune.epoch_batches(lengths, 32, seed=3, epoch=2)))
    assert any((x != y).any() for x, y in zip(b, finetune.epoch_batches(lengths, 32, seed=4, epoch=1)))

    def padded(batches):  # positions a batch padded to its longest pair costs
        return sum(len(x) * lengths[x].max() for x in batches)

    perm = np.random.default_rng(0).permutation(5000)
    random_batches = [perm[i:i + 32] for i in range(0, 5000, 32)]
    assert padded(b) < 0.6 * padded(random_batches)
    # length-sorted within pools, but not one global sort: the first batches are not all the shortest
    assert len({int(lengths[x].max()) for x in b[:10]}) > 3


def test_each_cell_trains_on_exactly_its_nested_df_pairs(plan, tmp_path, monkeypatch):
    trained = {}
    for df in (64, 128):
        task = baseline_cell(plan, df)
        epoch = -(-df // task.spec["finetune"]["batch_size"])  # steps: every pair is seen once
        seen = record_training_batches(monkeypatch)
        finetune.run(with_spec(task, tmp_path / str(df), finetune={"max_steps": epoch, "patience": 100}))
        pool, _, tok = data(task)
        want, _ = encode(task, tok, [r["translation"] for r in pool.select(finetune.nested_subset(len(pool), df, 0))])
        assert set(seen) == set(map(tuple, want))
        info = json.loads((tmp_path / str(df) / "finetune.json").read_text())
        assert info["df_examples"] == df and info["df_tokens"]["source"] == sum(map(len, want))
        trained[df] = set(seen)
    assert trained[64] < trained[128]
    assert len(trained[128]) > len(trained[64])


def test_task_prefix_is_the_same_in_training_and_evaluation(plan, tmp_path, monkeypatch):
    ft = baseline_cell(plan, 64)
    ev = next(t for t in plan.tasks if t.stage == "evaluate" and ft.id in t.deps)
    assert ft.spec["finetune"]["task_prefix"] == ev.spec["task_prefix"] == PREFIX
    seen = record_training_batches(monkeypatch)
    finetune.run(with_spec(ft, tmp_path / "ft"))
    evaluated: list[list[int]] = []
    gen = evaluate.generate_ids
    monkeypatch.setattr(evaluate, "generate_ids", lambda model, src, *a: evaluated.extend(src) or gen(model, src, *a))
    (tmp_path / "ev").mkdir()
    evaluate.run(with_spec(ev, tmp_path / "ev", finetune_dir=str(tmp_path / "ft")))
    _, _, tok = data(ft)
    for name, ids in (("training", seen), ("evaluation", evaluated)):
        assert ids, name
        texts = tok.batch_decode([list(x) for x in ids], skip_special_tokens=True)
        assert all(t.startswith(PREFIX.strip()) for t in texts), (name, texts[:3])


def test_early_stopping_keeps_the_best_validation_model_not_the_last(plan, tmp_path, monkeypatch, caplog):
    """Validation CE is scripted (5, 4, 3, 3.5, 3.7 at steps 0, 4, 8, 12, 16): with patience 2 the cell
    stops at step 16 and best/ holds the weights of step 8. Without a terminal (a batch job) every evaluation
    is a progress line in the task's log."""
    task = with_spec(baseline_cell(plan, 64), tmp_path / "ft", finetune={"max_steps": 40, "patience": 2,
                                                                         "eval_every": 4})
    script, snapshots = iter([5.0, 4.0, 3.0, 3.5, 3.7]), []

    def scripted_ce(model, *a, **k):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(script), 1

    monkeypatch.setattr(finetune, "reference_ce", scripted_ce)
    with caplog.at_level("INFO", logger="pipeline.finetune"):
        finetune.run(task)
    info = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert (info["best_step"], info["steps"], info["stopped"]) == (8, 16, "early_stopping")
    progress = [r.getMessage() for r in caplog.records if "a training step" in r.getMessage()]
    assert [m.split(": ", 1)[1].split(" train loss")[0] for m in progress] == [
        f"step {s}/40" for s in (4, 8, 12, 16)]
    assert "val CE 3.5000 (best 3.0000 at step 8)" in progress[2]
    assert 0 < info["train_seconds"] < info["seconds"]  # the steps' time, validation and checkpoints left out
    assert info["best_val_ce"] == 3.0
    best = weights(tmp_path / "ft" / "best")
    assert max_abs_diff(best, {k: snapshots[2][k] for k in best}) == 0
    assert max_abs_diff(best, {k: snapshots[-1][k] for k in best}) > 1e-4


def test_a_rung_the_pretraining_run_did_not_keep_is_named_not_looked_up_on_a_hub(plan, tmp_path):
    # a pretrained cell whose run has no checkpoint at its rung (a run shared with a sweep of another ladder)
    cell = next(t for t in plan.tasks if t.stage == "finetune" and t.spec["checkpoint"]["steps"] > 0)
    with pytest.raises(FileNotFoundError, match="the pretraining run did not keep this rung"):
        finetune.run(with_spec(cell, tmp_path / "ft"))
    assert not (tmp_path / "ft" / "finetune.json").exists()


def test_dp0_baseline_starts_from_the_random_init_checkpoint(plan, tmp_path):
    from pipeline.training import init_path

    task = baseline_cell(plan, 64)
    init = first(plan, "init")
    assert task.spec["checkpoint"]["parent_dir"] == init.dir and init.id in task.deps
    finetune.run(with_spec(task, tmp_path / "ft"))
    info = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert info["checkpoint"] == str(init_path(init.dir)) and info["pretrain_steps"] == 0
    # The starting point's validation CE (step 0 of the curve) is the init model's, to the last bit.
    _, val_rows, tok = data(task)
    va_src, va_tgt = encode(task, tok, val_rows)
    ft = task.spec["finetune"]
    model = finetune.load_for_finetune(init_path(init.dir), "full", ft["dropout_rate"], from_dict(LoraConfig, ft["lora"]))
    ce, _ = seq2seq.reference_ce(model, va_src, va_tgt, tok.pad_token_id, 2 * task.spec["finetune"]["batch_size"],
                                  torch.device("cpu"), contextlib.nullcontext)
    assert info["curve"][0] == {"step": 0, "val_ce": ce}


@pytest.mark.slow
def test_sigterm_checkpoints_exits_zero_and_rerun_equals_uninterrupted(plan, tmp_path):
    change = {"max_steps": 60, "eval_every": 4, "patience": 100}
    ref = with_spec(baseline_cell(plan, 64), tmp_path / "ref", finetune=change)
    finetune.run(ref)
    task = with_spec(baseline_cell(plan, 64), tmp_path / "run", finetune=change)
    run = tmp_path / "run"
    plan_file = write_plan_file(task, tmp_path / "plan.json")
    proc = start(plan_file, tmp_path / "first.log")
    wait_for(lambda: (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().strip(), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0
    out = (tmp_path / "first.log").read_text()
    stopped = [ln for ln in out.splitlines() if "stopped by signal at step" in ln]
    assert len(stopped) == 1 and "rerun" in stopped[0], out[-2000:]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    assert step < change["max_steps"] and not (run / "finetune.json").exists()
    saved = run / "state" / f"step-{step:08d}"
    assert (saved / MARKER).exists() and (saved / STATE).exists()
    r = subprocess.run(task_cmd(plan_file), env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming at step {step}" in r.stderr
    got, want = (json.loads((d / "finetune.json").read_text()) for d in (run, tmp_path / "ref"))
    assert got["steps"] == want["steps"] == change["max_steps"] and got["best_step"] == want["best_step"]
    assert [c["step"] for c in got["curve"]] == [c["step"] for c in want["curve"]]
    np.testing.assert_allclose([c["val_ce"] for c in got["curve"]], [c["val_ce"] for c in want["curve"]], rtol=1e-6)
    assert max_abs_diff(weights(run / "best"), weights(tmp_path / "ref" / "best")) < 1e-6
