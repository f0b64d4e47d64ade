"""Hydra multirun (`python -m pipeline -m a=1,2 b=x,y`): every combination is validated before the first one
starts, so a bad value anywhere in the sweep is refused in one line (exit 2) with nothing run or written; a
good multirun runs every combination. `stage=plan` keeps it cheap. (test_bad_input.py covers a value that is
bad in every run and an unknown key.)
"""

from __future__ import annotations

import re
import sys
from types import SimpleNamespace

import pytest
from conftest import cli

SMOKE = ["scale=smoke", "stage=plan"]


def refused_before_anything(r, tmp_path, *words: str) -> None:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "plan written to" not in r.stdout  # not even the good first run started
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "reports").exists()


def paths(tmp_path) -> list[str]:
    return [f"paths.artifacts={tmp_path / 'artifacts'}", f"paths.reports={tmp_path / 'reports'}"]


def test_a_bad_value_in_the_last_run_refuses_the_whole_multirun(tmp_path, l10n_corpus):
    r = cli("-m", "+sweep=en_de", *SMOKE, "pretrain.lr=1e-3,2e-3,0", *paths(tmp_path))
    refused_before_anything(r, tmp_path, "pretrain.lr", "must be > 0", "(in the run with pretrain.lr=0)")


def test_a_bad_value_in_one_combination_is_named(tmp_path, l10n_corpus):
    # valid apart, invalid together: a Df ladder larger than the pools. Not stage=plan, which prints the plan
    # of a sweep too big for its data instead of refusing it: a run is refused before any run starts.
    r = cli("-m", "+sweep=en_de,en_ro", "scale=smoke", "stage=tokenizer", "finetune.df_ladder=[200],[200,10000000]",
            *paths(tmp_path))
    refused_before_anything(r, tmp_path, "finetune.df_ladder", "larger than the", "(in the run with +sweep=en_de finetune.df_ladder=[200,10000000])")


def test_an_unknown_option_in_a_sweep_list(tmp_path):
    r = cli("-m", "+sweep=en_de", "scale=smoke,huge", "stage=plan", *paths(tmp_path))
    refused_before_anything(r, tmp_path, "scale=huge", "unknown scale", "allowed: ", "smoke")


def test_a_good_multirun_runs_every_combination(tmp_path, l10n_corpus):
    r = cli("-m", "+sweep=en_de,en_fr", *SMOKE, "tokenizer.vocab_size=2000,1000", *paths(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    heads = re.findall(r"^sweep (en_\w\w) · scale smoke", r.stdout, re.M)
    assert sorted(heads) == ["en_de", "en_de", "en_fr", "en_fr"], r.stdout[-3000:]
    written = re.findall(r"^plan written to (\S+)$", r.stdout, re.M)
    assert len(set(written)) == 4 and all(p.startswith(str(tmp_path / "artifacts" / "plans")) for p in written)
    # the vocabulary shows in the parameter count: two models a sweep
    params = re.findall(r"^  model t5_tiny: (\S+) parameters", r.stdout, re.M)
    assert len(params) == 4 and len(set(params)) == 2, params


class FakeExecutor:
    """Stands in for the local executor: each run() is counted; `stop_at`: the call whose sweep a signal stops."""

    def __init__(self, stop_at: int | None):
        self.calls, self.stop_at, self.stopped = 0, stop_at, None

    def run(self, plan, tasks) -> int:
        self.calls += 1
        self.stopped = "SIGTERM" if self.calls == self.stop_at else None
        return 0


@pytest.mark.parametrize("stop_at", [1, None], ids=["stopped", "not-stopped"])
def test_a_stopped_sweep_is_not_started_again_by_the_re_plan(monkeypatch, stop_at):
    """finetune.lr_search=first_seed: once the search's cells are done, pipeline.run plans again and runs the other
    seeds. After a stop signal it must not (desk2, 2026-12-07: a SIGTERM stopped the sweep, and the re-plan started
    it again two seconds later)."""
    import pipeline.executors as executors
    import pipeline.run as prun
    from pipeline.plan import Plan

    cfg = SimpleNamespace(stage="all", executor=SimpleNamespace(kind="local"))
    deferred = iter([4, 2, 0])  # runs waiting for the searched rate: fewer at each plan
    plans = []

    def prepare(_):
        plans.append(Plan(sweep="toy", tasks=[], cells=[], summary={"lr_deferred": next(deferred)}))
        return cfg, plans[-1]

    ex = FakeExecutor(stop_at)
    monkeypatch.setattr(prun, "prepare", prepare)
    monkeypatch.setattr(prun, "record_precision", lambda *a: None)
    monkeypatch.setattr(executors, "get_executor", lambda _: ex)
    if stop_at:
        with pytest.raises(prun.Stopped, match="stopped by SIGTERM: the command ends here") as e:
            prun.run(None)
        assert ex.calls == 1 and len(plans) == 1 and e.value.rc == 0
    else:
        assert prun.run(None) == 0
        assert ex.calls == 3 and len(plans) == 3  # planned and ran again until nothing waited


@pytest.mark.parametrize("stopped,rc", [(True, 0), (True, 1), (False, 0)], ids=["stopped", "stopped-failed", "not-stopped"])
def test_a_stop_signal_ends_a_multirun_at_the_sweep_it_stopped(tmp_path, monkeypatch, stopped, rc):
    """Hydra's multirun starts its next sweep after one returns, and catches a sweep's exceptions: a stopped sweep
    must end the whole command, with its exit status (0, or 1 if a task of it failed; the same command continues
    it)."""
    import pipeline.run as prun
    from pipeline.__main__ import main

    swept = []

    def run(cfg) -> int:
        swept.append(cfg.sweep.name)
        if stopped:
            raise prun.Stopped(f"sweep {cfg.sweep.name} stopped by SIGTERM: the command ends here", rc)
        return 0

    monkeypatch.setattr(prun, "run", run)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pipeline", "-m", "+sweep=en_de,en_fr", "scale=smoke", *paths(tmp_path),
                                      f"hydra.sweep.dir={tmp_path / 'multirun'}"])
    if stopped:
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == rc and swept == ["en_de"]
    else:
        main()
        assert swept == ["en_de", "en_fr"]
