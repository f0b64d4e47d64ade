"""The configuration: every group composes through Hydra's compose API and validates; bad values are
refused with one line naming the key (exit status 2 from the command line), before anything is written."""

from __future__ import annotations

import pytest
from conftest import CONF, cli, compose

from pipeline.config import ConfigError, load_config
from pipeline.study import Mixture

SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
SCALES = ["smoke", "cpu", "desk", "desk2", "gpu", "paper"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_and_scale_composes_and_validates(sweep, scale):
    cfg = load_config(compose([f"+sweep={sweep}", f"scale={scale}"]))
    assert cfg.scale == scale and cfg.sweep.name == sweep
    assert cfg.sweep.tasks and all(t.mixtures for t in cfg.sweep.tasks)
    assert list(cfg.pretrain.dp_ladder) == sorted(cfg.pretrain.dp_ladder)


def test_scale_picks_a_model_and_the_command_line_overrides_it():
    assert [m.name for m in load_config(compose(["+sweep=en_de", "scale=paper"])).models] == ["t5_3b"]
    assert [m.name for m in load_config(compose(["+sweep=en_de"])).models] == ["t5_tiny"]
    assert [m.name for m in load_config(compose(["+sweep=en_de", "model=t5_mini"])).models] == ["t5_mini"]
    both = load_config(compose(["+sweep=en_de", "model=[t5_tiny,t5_mini]"]))
    assert sorted(m.name for m in both.models) == ["t5_mini", "t5_tiny"]


def test_all_sweep_shares_the_english_only_mixture():
    cfg = load_config(compose(["+sweep=all"]))
    assert sorted(t.pair for t in cfg.sweep.tasks) == ["en-de", "en-fr", "en-ro"]
    mixes = cfg.sweep.mixtures()
    assert sum(m.name == "en100" for m in mixes) == 1  # pretrained once, serves all three tasks
    assert len(mixes) == 4


@pytest.mark.parametrize("weights,src,tgt,expected", [
    ({"en": 0.5, "de": 0.5}, "en", "de", 1.0),     # Isik et al.: 50/50 -> 1.0
    ({"en": 1.0}, "en", "de", 0.7),                 # 100% source -> 0.7
    ({"de": 1.0}, "en", "de", 0.8),                 # 100% target -> 0.8
    ({"en": 0.3, "de": 0.7}, "en", "de", 0.3 * 0.7 + 0.7 * 0.3 + 0.8 * 0.7),
    ({"fr": 1.0}, "en", "de", 0.0),                 # an unrelated language
    ({"en": 0.5, "fr": 0.5}, "en", "de", 0.35),
])
def test_alignment_score_is_isik_eq2(weights, src, tgt, expected):
    m = Mixture("m", tuple(sorted(weights.items())))
    assert m.alignment(src, tgt) == pytest.approx(expected)


BAD = [
    (["sweep.tasks.en-de.mixtures.en50_de50.de=0.6"], "sweep.tasks.en-de.mixtures.en50_de50", "sum to 1"),
    (["sweep.tasks.en-de.mixtures.en50_de50.de=-0.5", "sweep.tasks.en-de.mixtures.en50_de50.en=1.5"],
     "sweep.tasks.en-de.mixtures.en50_de50.de", ">= 0"),
    (["+sweep.tasks.en-de.mixtures.en50_de50.xx=0.0"], "sweep.tasks.en-de.mixtures.en50_de50", "unknown language 'xx'"),
    (["+sweep.tasks.en-xx.mixtures.a.en=1.0"], "sweep.tasks.en-xx", "unknown language 'xx'"),
    (["finetune.df_ladder=[1000,-5]"], "finetune.df_ladder", "positive"),
    (["pretrain.dp_ladder=[-1]"], "pretrain.dp_ladder", "positive"),
    (["pretrain.dp_ladder=[4096,1024]"], "pretrain.dp_ladder", "increasing"),
    (["pretrain.micro_batch_size=7"], "pretrain.micro_batch_size", "divide"),
    (["pretrain.lr=0"], "pretrain.lr", "> 0"),
    (["stage=train"], "stage", "allowed: plan, all"),
    (["pretrain.optimizer=sgd"], "pretrain.optimizer", "allowed: adamw, adafactor"),
    (["finetune.methods=[full,prefix]"], "finetune.methods", "allowed: full, lora"),
    (["evaluate.num_beams=0"], "evaluate.num_beams", ">= 1"),
    (["+pretrain.learning_rate=1e-3"], "pretrain.learning_rate", "unknown key"),
    (["tokenizer.vocab_size=50"], "tokenizer.vocab_size", ">="),
    (["finetune.schedule=cosine"], "finetune.schedule", "allowed: constant, inverse_sqrt, linear"),
    (["finetune.warmup_steps=-1"], "finetune.warmup_steps", ">= 0"),
    (["finetune.validation_split=test"], "finetune.validation_split", "allowed: validation, validation_indomain"),
    (["evaluate.test_splits=[train]"], "evaluate.test_splits", "allowed: test, test_indomain"),
    (["evaluate.test_splits=[test,test]"], "evaluate.test_splits", "one or two different splits"),
    (["fit.bleu_law=chinchilla"], "fit.bleu_law", "allowed: bleu_log, power"),  # two inputs: not a curve law
    (["fit.good_rel_err=0"], "fit.good_rel_err", "> 0"),
    # the distributed runtime's settings
    (["finetune.micro_batch_tokens=100"], "finetune.micro_batch_tokens", "must hold one pair"),
    (["finetune.distributed=deepspeed"], "finetune.distributed", "allowed: auto, none, ddp, fsdp"),
    (["pretrain.activation_checkpointing=sometimes"], "pretrain.activation_checkpointing", "true or false"),
    (["finetune.lr_search=every_seed"], "finetune.lr_search", "allowed: per_seed, first_seed"),
    (["pretrain.max_epochs=0.5"], "pretrain.max_epochs", ">= 1"),
    (["finetune.max_epochs=0"], "finetune.max_epochs", ">= 1"),
]


@pytest.mark.parametrize("overrides,key,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, key, words):
    with pytest.raises(ConfigError) as e:
        load_config(compose(["+sweep=en_de", *overrides]))
    assert e.value.key == key
    assert words in str(e.value) and "\n" not in str(e.value)


def test_missing_sweep_is_refused():
    with pytest.raises(ConfigError, match=r"\+sweep=NAME"):
        load_config(compose([]))


@pytest.mark.parametrize("args,words", [
    (["+sweep=en_xx"], "sweep=en_xx: unknown sweep; allowed: all, desk2_abl_all"),
    (["+sweep=en_de", "scale=huge"], "scale=huge: unknown scale; allowed: cpu, desk, desk2, gpu, paper, smoke"),
    (["+sweep=en_de", "model=t5_giant"], "model=t5_giant: unknown model"),
    (["+sweep=en_de", "data=s3"], "data=s3: unknown data; allowed: hub, l10n, local"),
    (["+sweep=en_de", "executor=k8s"], "executor=k8s: unknown executor; allowed: local, slurm"),
    (["+sweep=en_de", "pretrain.no_such_key=1"], "no_such_key"),
    (["+sweep=en_de", "sweep.tasks.en-de.mixtures.en100.en=0.9"], "weights must sum to 1, got 0.9"),
    (["+sweep=en_de", "finetune.df_ladder=[0]"], "finetune.df_ladder: sizes must be positive"),
    (["+sweep=en_de", "data=local", "evaluate.test_splits=[test_indomain]"],
     "evaluate.test_splits: test_indomain exists in data=l10n only, not in data=local"),
])
def test_command_line_gives_one_line_and_exit_2_before_writing(tmp_path, args, words):
    art = tmp_path / "artifacts"
    r = cli(*args, f"paths.artifacts={art}", f"paths.reports={tmp_path / 'reports'}", "stage=plan")
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert words in lines[0]
    assert "Traceback" not in r.stderr
    assert not art.exists() and not (tmp_path / "reports").exists()


# ------------------------------------------------------------------------------------- identities

# The fields of each section that no stage identity holds, as every finished run so far was named: a change
# here renames every pretraining run or finetuning cell, so a sweep under way would no longer find its work.
RUN_ONLY = {
    "pretrain": {"dp_ladder", "micro_batch_size", "distributed", "log_every", "checkpoint_minutes", "compile",
                 "activation_checkpointing", "max_epochs"},
    "finetune": {"df_ladder", "seeds", "methods", "lrs", "seeds_df_max", "distributed", "activation_checkpointing",
                 "micro_batch_tokens", "lr_search"},
}


def _other(v):
    """A different value of the same kind (validity does not matter: only the identity reads it)."""
    import dataclasses

    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v * 2 + 1
    if isinstance(v, str):
        return v + "-other"
    if isinstance(v, tuple):
        return (*v, *v[:1]) if v else (1,)
    if v is None:
        return 1
    f = dataclasses.fields(v)[0].name
    return dataclasses.replace(v, **{f: _other(getattr(v, f))})


@pytest.mark.parametrize("section", sorted(RUN_ONLY))
def test_an_identity_leaves_out_exactly_the_declared_run_only_fields(section):
    import dataclasses

    from pipeline.config import identity

    sec = getattr(load_config(compose(["+sweep=en_de"])), section)
    cls = type(sec)
    assert RUN_ONLY[section] == cls.RUN_ONLY
    names = {f.name for f in dataclasses.fields(cls)}
    assert names >= cls.RUN_ONLY and {k for k, _ in cls.RUN_ONLY_AT} <= names - cls.RUN_ONLY
    base = identity(sec)
    for f in names:
        changed = identity(dataclasses.replace(sec, **{f: _other(getattr(sec, f))}))
        assert (changed != base) == (f not in cls.RUN_ONLY), f"{section}.{f}"


def test_auto_precision_is_left_out_of_a_cell_identity_and_a_forced_one_is_in():
    import dataclasses

    from pipeline.config import identity

    cfg = load_config(compose(["+sweep=en_de"]))
    ft = dataclasses.replace(cfg.finetune, dtype="auto")
    assert "dtype" not in identity(ft)
    assert identity(dataclasses.replace(ft, dtype="bf16"))["dtype"] == "bf16"
    assert identity(dataclasses.replace(cfg.pretrain, dtype="auto"))["dtype"] == "auto"  # as pretraining always had it
