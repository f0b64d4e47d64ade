"""The resolved Hydra config, validated once into frozen dataclasses.

Everything downstream reads these objects, never the raw DictConfig. A bad value raises `ConfigError`,
which the entry points turn into ONE line naming the key and what is allowed, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import stages
from pipeline.typed import freeze as _freeze
from pipeline.typed import to_dict  # noqa: F401 (config.to_dict: used across the package)
from pipeline.validate import ConfigError  # noqa: F401 (config.ConfigError: imported across the package)
from pipeline.validate import as_list as _list
from pipeline.validate import boolean as _bool
from pipeline.validate import choice as _choice
from pipeline.validate import get as _get
from pipeline.validate import known as _known
from pipeline.validate import ladder as _ladder
from pipeline.validate import mapping as _mapping
from pipeline.validate import num as _num
from pipeline.validate import req as _req

FF_TYPES = ("gated-gelu", "relu")
SOURCES = ("l10n", "hub", "local")
EXECUTORS = ("local", "slurm")
TRACKERS = ("none", "wandb")
# Held-out splits a stage may read: whole unseen packages (every source), or the training packages' own domains
# (the offline corpus only: pipeline/corpus/indomain.py)
VALIDATION_SPLITS = ("validation", "validation_indomain")
TEST_SPLITS = ("test", "test_indomain")
# Languages the code knows how to name in reports; a data source may offer fewer.
KNOWN_LANGUAGES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


# --------------------------------------------------------------------------------------------- study


@dataclass(frozen=True)
class Mixture:
    """Pretraining text as (language, weight) pairs, sorted by language so that identity is the content."""

    name: str
    weights: tuple[tuple[str, float], ...]

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(lang for lang, _ in self.weights)

    def weight(self, lang: str) -> float:
        return dict(self.weights).get(lang, 0.0)

    def alignment(self, src: str, tgt: str) -> float:
        """Isik et al. Eq. 2: A = P_src·P_dest + 0.7·P_src + 0.8·P_dest."""
        p_src, p_dest = self.weight(src), self.weight(tgt)
        return p_src * p_dest + 0.7 * p_src + 0.8 * p_dest

    def key(self) -> dict[str, float]:
        return dict(self.weights)


@dataclass(frozen=True)
class TaskSpec:
    pair: str  # "en-de": translate src -> tgt
    src: str
    tgt: str
    mixtures: tuple[Mixture, ...]
    dp_max: int | None = None


@dataclass(frozen=True)
class SweepConfig:
    name: str
    tasks: tuple[TaskSpec, ...]

    def mixtures(self) -> tuple[Mixture, ...]:
        """Distinct mixtures across tasks (by content): each is pretrained once, whichever tasks use it."""
        seen: dict[tuple, Mixture] = {}
        for t in self.tasks:
            for m in t.mixtures:
                seen.setdefault(m.weights, m)
        return tuple(seen.values())

    def languages(self) -> list[str]:
        """Every language the study reads: its mixtures' and its tasks' two sides, sorted."""
        return sorted({lang for t in self.tasks for m in t.mixtures for lang in m.languages}
                      | {lang for t in self.tasks for lang in (t.src, t.tgt)})


# ----------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ModelPresetRef:
    """A model preset as configured (the full dataclass lives in pipeline.model)."""

    name: str
    fields: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int
    algorithm: str
    sample_lines_per_language: int
    num_sentinels: int


@dataclass(frozen=True)
class PretrainConfig:
    dp_ladder: tuple[int, ...]
    batch_size: int
    micro_batch_size: int
    inputs_length: int
    noise_density: float
    mean_noise_span_length: float
    optimizer: str
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    grad_clip: float
    schedule: str
    warmup_steps: int
    dtype: str
    compile: bool
    checkpoint_minutes: float
    log_every: int
    eval_sequences: int
    distributed: str


@dataclass(frozen=True)
class LoraConfig:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class FinetuneConfig:
    df_ladder: tuple[int, ...]
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    lrs: tuple[float, ...]
    batch_size: int
    max_steps: int
    max_epochs: int
    eval_every: int
    patience: int
    validation_size: int
    max_source_length: int
    max_target_length: int
    task_prefix: str
    dropout_rate: float
    weight_decay: float
    grad_clip: float
    lora: LoraConfig
    schedule: str = "constant"  # after warmup: constant | inverse_sqrt | linear (to 0 at the cell's last step)
    warmup_steps: int = 0
    validation_split: str = "validation"  # model selection and early stopping: validation | validation_indomain
    seeds_df_max: int | None = None  # seeds after the first only at Df up to this (None: every seed at every Df)


@dataclass(frozen=True)
class EvaluateConfig:
    test_size: int | None
    batch_size: int
    num_beams: int
    max_new_tokens: int
    bleu_tokenize: str
    # The first split gives the table's bleu/chrf/ce, the fits and the significance tests; a second is scored
    # beside it (other_* columns): test (whole held-out packages), test_indomain (l10n only)
    test_splits: tuple[str, ...] = ("test",)


@dataclass(frozen=True)
class FitConfig:
    holdout_largest: int
    bootstrap: int
    bleu_delta: float
    ce_delta: float
    interval: str = "laplace"  # how the fits' intervals are made (pipeline.scaling.fit.INTERVALS)
    level: float = 0.9
    # the law fitted to each metric's curve against Dp (a name in pipeline.scaling.LAWS taking one input)
    bleu_law: str = "bleu_log"
    ce_law: str = "power"
    # a law "holds" on a curve when its mean held-out relative error is at most this (the misalignment
    # verdict and the report's sentences)
    good_rel_err: float = 0.1

    def curve_laws(self) -> tuple[tuple[str, str, float], ...]:
        """(metric, law, Huber delta) of every per-curve fit: the one place the fit stage, the misalignment
        verdict and the methods table read which law goes with which metric."""
        return (("bleu", self.bleu_law, self.bleu_delta), ("ce", self.ce_law, self.ce_delta))


# ------------------------------------------------------------------------------------ infrastructure


@dataclass(frozen=True)
class DataConfig:
    source: str
    languages: tuple[str, ...]
    pairs: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()  # the source's own section (l10n/hub/local), as plain data

    def opts(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    def opts(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class TrackingConfig:
    backend: str
    project: str = "downstream-scaling"
    entity: str | None = None
    mode: str = "offline"


@dataclass(frozen=True)
class Paths:
    cache: Path
    artifacts: Path
    reports: Path
    results: Path | None


@dataclass(frozen=True)
class Config:
    stage: str
    seed: int
    scale: str
    scale_description: str
    sweep: SweepConfig
    models: tuple[ModelPresetRef, ...]
    tokenizer: TokenizerConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    evaluate: EvaluateConfig
    fit: FitConfig
    data: DataConfig
    executor: ExecutorConfig
    tracking: TrackingConfig
    paths: Paths
    raw: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)


# ------------------------------------------------------------------------------------------ parsing


def _parse_sweep(d: Any, data_languages: tuple[str, ...], data_pairs: tuple[str, ...]) -> SweepConfig:
    if not isinstance(d, Mapping) or not d:
        raise ConfigError("sweep", "missing: choose one with +sweep=NAME (see conf/sweep/)")
    _known(d, "sweep", {"name", "tasks"})
    name = _get(d, "name", "sweep")
    tasks_d = _get(d, "tasks", "sweep")
    _req(isinstance(tasks_d, Mapping) and len(tasks_d) > 0, "sweep.tasks", "must map pairs like en-de to their mixtures")
    tasks = []
    for pair, spec in tasks_d.items():
        p = f"sweep.tasks.{pair}"
        parts = str(pair).split("-")
        _req(len(parts) == 2 and all(parts), p, "a task is named SRC-TGT, e.g. en-de")
        src, tgt = parts
        for lang in (src, tgt):
            _req(lang in data_languages, p, f"unknown language {lang!r}; allowed: {', '.join(data_languages)}")
        _req(pair in data_pairs, p, f"no parallel data for this pair in this data source; allowed: {', '.join(data_pairs)}")
        _req(isinstance(spec, Mapping), p, "must hold `mixtures`")
        _known(spec, p, {"mixtures", "dp_max"})
        mix_d = _get(spec, "mixtures", p)
        _req(isinstance(mix_d, Mapping) and len(mix_d) > 0, f"{p}.mixtures", "must map names to {language: weight}")
        mixtures = []
        for mname, weights in mix_d.items():
            mp = f"{p}.mixtures.{mname}"
            _req(isinstance(weights, Mapping) and len(weights) > 0, mp, "must map languages to weights, e.g. {en: 0.5, de: 0.5}")
            for lang, w in weights.items():
                _req(lang in data_languages, mp, f"unknown language {lang!r}; allowed: {', '.join(data_languages)}")
                _req(not isinstance(w, bool) and isinstance(w, (int, float)) and math.isfinite(w) and w >= 0,
                     f"{mp}.{lang}", f"weights must be numbers >= 0, got {w!r}")
            total = sum(float(w) for w in weights.values())
            _req(abs(total - 1.0) < 1e-6, mp, f"weights must sum to 1, got {total:g}")
            ws = tuple(sorted((lang, float(w)) for lang, w in weights.items() if w > 0))
            mixtures.append(Mixture(name=str(mname), weights=ws))
        dp_max = _num(spec, "dp_max", p, kind=float, lo=0, lo_open=True, default=None)
        tasks.append(TaskSpec(pair=str(pair), src=src, tgt=tgt, mixtures=tuple(mixtures),
                              dp_max=None if dp_max is None else int(dp_max)))
    # One name per mixture content, or the plan would call one pretraining run by two names.
    names: dict[tuple, str] = {}
    for t in tasks:
        for m in t.mixtures:
            prev = names.setdefault(m.weights, m.name)
            _req(prev == m.name, f"sweep.tasks.{t.pair}.mixtures.{m.name}",
                 f"same weights as mixture {prev!r}; give them one name")
    return SweepConfig(name=str(name), tasks=tuple(tasks))


def _parse_models(d: Any) -> tuple[ModelPresetRef, ...]:
    _req(isinstance(d, Mapping) and len(d) > 0, "model", "no model preset selected (model=NAME, see conf/model/)")
    out = []
    for name, fields in d.items():
        _req(isinstance(fields, Mapping), f"model.{name}", "must be a mapping of preset fields")
        # The preset's own validation lives with the model code; only the name is checked here.
        out.append(ModelPresetRef(name=str(name), fields=_freeze(dict(fields))))
    return tuple(out)


def _parse_tokenizer(d: Mapping[str, Any]) -> TokenizerConfig:
    p = "tokenizer"
    _known(d, p, {f.name for f in dataclasses.fields(TokenizerConfig)})
    n_sent = _num(d, "num_sentinels", p, kind=int, lo=1, hi=1000)
    return TokenizerConfig(
        vocab_size=_num(d, "vocab_size", p, kind=int, lo=n_sent + 200, hi=1_000_000),
        algorithm=_choice(d, "algorithm", p, ("unigram", "bpe")),
        sample_lines_per_language=_num(d, "sample_lines_per_language", p, kind=int, lo=100),
        num_sentinels=n_sent,
    )


def _parse_pretrain(d: Mapping[str, Any]) -> PretrainConfig:
    p = "pretrain"
    _known(d, p, {f.name for f in dataclasses.fields(PretrainConfig)})
    batch = _num(d, "batch_size", p, kind=int, lo=1)
    micro = _num(d, "micro_batch_size", p, kind=int, lo=1)
    _req(batch % micro == 0, f"{p}.micro_batch_size", f"must divide batch_size ({batch}), got {micro}")
    betas = _list(d, "betas", p)
    _req(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas), f"{p}.betas",
         f"must be two numbers in [0, 1), got {betas}")
    return PretrainConfig(
        dp_ladder=_ladder(d, "dp_ladder", p),
        batch_size=batch,
        micro_batch_size=micro,
        inputs_length=_num(d, "inputs_length", p, kind=int, lo=8, hi=65536),
        noise_density=_num(d, "noise_density", p, lo=0, hi=0.9, lo_open=True),
        mean_noise_span_length=_num(d, "mean_noise_span_length", p, lo=1),
        optimizer=_choice(d, "optimizer", p, ("adamw", "adafactor")),
        lr=_num(d, "lr", p, lo=0, lo_open=True),
        betas=(float(betas[0]), float(betas[1])),
        weight_decay=_num(d, "weight_decay", p, lo=0),
        grad_clip=_num(d, "grad_clip", p, lo=0),
        schedule=_choice(d, "schedule", p, ("constant", "inverse_sqrt")),
        warmup_steps=_num(d, "warmup_steps", p, kind=int, lo=0),
        dtype=_choice(d, "dtype", p, ("auto", "fp32", "bf16")),
        compile=_bool(d, "compile", p),
        checkpoint_minutes=_num(d, "checkpoint_minutes", p, lo=0, lo_open=True),
        log_every=_num(d, "log_every", p, kind=int, lo=1),
        eval_sequences=_num(d, "eval_sequences", p, kind=int, lo=1),
        distributed=_choice(d, "distributed", p, ("auto", "none", "ddp", "fsdp")),
    )


def _parse_finetune(d: Mapping[str, Any]) -> FinetuneConfig:
    p = "finetune"
    _known(d, p, {f.name for f in dataclasses.fields(FinetuneConfig)})
    lora_d = _get(d, "lora", p)
    _req(isinstance(lora_d, Mapping), f"{p}.lora", "must be a mapping")
    _known(lora_d, f"{p}.lora", {"r", "alpha", "dropout", "target_modules"})
    methods = tuple(_list(d, "methods", p))
    for m in methods:
        _req(m in ("full", "lora"), f"{p}.methods", f"unknown method {m!r}; allowed: full, lora")
    seeds = _list(d, "seeds", p)
    for s in seeds:
        _req(isinstance(s, int) and not isinstance(s, bool) and s >= 0, f"{p}.seeds", f"seeds are whole numbers >= 0, got {s!r}")
    lrs = _list(d, "lrs", p)
    for lr in lrs:
        _req(isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0, f"{p}.lrs", f"learning rates must be > 0, got {lr!r}")
    return FinetuneConfig(
        df_ladder=_ladder(d, "df_ladder", p),
        seeds=tuple(seeds),
        methods=methods,
        lrs=tuple(float(x) for x in lrs),
        batch_size=_num(d, "batch_size", p, kind=int, lo=1),
        max_steps=_num(d, "max_steps", p, kind=int, lo=1),
        max_epochs=_num(d, "max_epochs", p, kind=int, lo=1),
        eval_every=_num(d, "eval_every", p, kind=int, lo=1),
        patience=_num(d, "patience", p, kind=int, lo=1),
        validation_size=_num(d, "validation_size", p, kind=int, lo=1),
        max_source_length=_num(d, "max_source_length", p, kind=int, lo=4),
        max_target_length=_num(d, "max_target_length", p, kind=int, lo=4),
        task_prefix=str(_get(d, "task_prefix", p, "")),
        dropout_rate=_num(d, "dropout_rate", p, lo=0, hi=0.9),
        weight_decay=_num(d, "weight_decay", p, lo=0),
        grad_clip=_num(d, "grad_clip", p, lo=0),
        schedule=_choice(d, "schedule", p, ("constant", "inverse_sqrt", "linear"), "constant"),
        warmup_steps=_num(d, "warmup_steps", p, kind=int, lo=0, default=0),
        validation_split=_choice(d, "validation_split", p, VALIDATION_SPLITS, "validation"),
        seeds_df_max=_num(d, "seeds_df_max", p, kind=int, lo=1, default=None),
        lora=LoraConfig(
            r=_num(lora_d, "r", f"{p}.lora", kind=int, lo=1),
            alpha=_num(lora_d, "alpha", f"{p}.lora", lo=0, lo_open=True),
            dropout=_num(lora_d, "dropout", f"{p}.lora", lo=0, hi=0.9),
            target_modules=tuple(str(x) for x in _list(lora_d, "target_modules", f"{p}.lora")),
        ),
    )


def _parse_evaluate(d: Mapping[str, Any]) -> EvaluateConfig:
    p = "evaluate"
    _known(d, p, {f.name for f in dataclasses.fields(EvaluateConfig)})
    splits = tuple(str(x) for x in _list(d, "test_splits", p, ["test"]))
    for s in splits:
        _req(s in TEST_SPLITS, f"{p}.test_splits", f"unknown test split {s!r}; allowed: {', '.join(TEST_SPLITS)}")
    _req(len(set(splits)) == len(splits) <= 2, f"{p}.test_splits", f"one or two different splits, got {list(splits)}")
    return EvaluateConfig(
        test_splits=splits,
        test_size=_num(d, "test_size", p, kind=int, lo=1, default=None),
        batch_size=_num(d, "batch_size", p, kind=int, lo=1),
        num_beams=_num(d, "num_beams", p, kind=int, lo=1, hi=64),
        max_new_tokens=_num(d, "max_new_tokens", p, kind=int, lo=1),
        bleu_tokenize=_choice(d, "bleu_tokenize", p, ("13a", "intl", "char", "none", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200")),
    )


def _parse_fit(d: Mapping[str, Any]) -> FitConfig:
    p = "fit"
    _known(d, p, {f.name for f in dataclasses.fields(FitConfig)})
    return FitConfig(
        holdout_largest=_num(d, "holdout_largest", p, kind=int, lo=0),
        bootstrap=_num(d, "bootstrap", p, kind=int, lo=0),
        bleu_delta=_num(d, "bleu_delta", p, lo=0, lo_open=True),
        ce_delta=_num(d, "ce_delta", p, lo=0, lo_open=True),
        interval=_choice(d, "interval", p, _intervals(), "laplace"),
        level=_num(d, "level", p, lo=0, hi=0.999, lo_open=True, default=0.9),
        bleu_law=_choice(d, "bleu_law", p, _curve_laws(), "bleu_log"),
        ce_law=_choice(d, "ce_law", p, _curve_laws(), "power"),
        good_rel_err=_num(d, "good_rel_err", p, lo=0, lo_open=True, default=0.1),
    )


def _curve_laws() -> tuple[str, ...]:
    from pipeline.scaling.laws import LAWS  # the registry (imported late: it loads torch)

    return tuple(name for name, law in LAWS.items() if law.nx == 1)


def _intervals() -> tuple[str, ...]:
    from pipeline.scaling.fit import INTERVALS  # the fitter's own list (imported late: it loads torch)

    return INTERVALS


def _parse_data(d: Any) -> DataConfig:
    _req(isinstance(d, Mapping), "data", f"must be one of {', '.join(SOURCES)}")
    source = _choice(d, "source", "data", SOURCES)
    langs = tuple(str(x) for x in _list(d, "languages", "data"))
    pairs = tuple(str(x) for x in _list(d, "pairs", "data"))
    for pair in pairs:
        parts = pair.split("-")
        _req(len(parts) == 2 and all(x in langs for x in parts), "data.pairs",
             f"{pair!r} must be SRC-TGT with both in data.languages ({', '.join(langs)})")
    opts = d.get(source) or {}
    _req(isinstance(opts, Mapping), f"data.{source}", "must be a mapping")
    return DataConfig(source=source, languages=langs, pairs=pairs, options=_freeze(dict(opts)))


def _parse_executor(d: Any) -> ExecutorConfig:
    _req(isinstance(d, Mapping), "executor", f"must be one of {', '.join(EXECUTORS)}")
    kind = _choice(d, "kind", "executor", EXECUTORS)
    if kind == "local":
        _known(d, "executor", {"kind", "workers", "threads_per_worker"})
        _num(d, "workers", "executor", kind=int, lo=1, hi=256)
        _num(d, "threads_per_worker", "executor", kind=int, lo=1, default=None)
    return ExecutorConfig(kind=kind, options=_freeze({k: v for k, v in d.items() if k != "kind"}))


def _parse_tracking(d: Any) -> TrackingConfig:
    _req(isinstance(d, Mapping), "tracking", f"must be one of {', '.join(TRACKERS)}")
    backend = _choice(d, "backend", "tracking", TRACKERS)
    if backend == "none":
        return TrackingConfig(backend="none")
    _known(d, "tracking", {"backend", "project", "entity", "mode"})
    return TrackingConfig(
        backend=backend,
        project=str(_get(d, "project", "tracking")),
        entity=d.get("entity"),
        mode=_choice(d, "mode", "tracking", ("offline", "online", "disabled")),
    )


def _parse_paths(d: Mapping[str, Any]) -> Paths:
    def path(key: str, optional: bool = False) -> Path | None:
        v = d.get(key)
        if v is None and optional:
            return None
        _req(isinstance(v, str) and v.strip() != "", f"paths.{key}", "must be a directory path")
        return Path(os.path.expanduser(v)).resolve()

    return Paths(cache=path("cache"), artifacts=path("artifacts"), reports=path("reports"),
                 results=path("results", optional=True))


def load_config(cfg: Any) -> Config:
    """Validate a composed Hydra config (DictConfig or plain dict) into a frozen `Config`."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            cfg = OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # plain dicts need no OmegaConf
        pass
    except Exception as e:  # an interpolation that cannot be resolved
        raise ConfigError("config", str(e).splitlines()[0]) from None
    d: dict[str, Any] = dict(cfg)
    stage = _choice(d, "stage", "", stages.CHOICES) if "stage" in d else "all"
    data = _parse_data(d.get("data"))
    scale = d.get("scale") or {}
    _req(isinstance(scale, Mapping), "scale", f"must be a scale preset (scale=NAME, see conf/scale/), got {scale!r}")
    return Config(
        stage=stage,
        seed=_num(d, "seed", "", kind=int, lo=0, default=0),
        scale=str(scale.get("name", "custom")),
        scale_description=str(scale.get("description", "")),
        sweep=_parse_sweep(d.get("sweep"), data.languages, data.pairs),
        models=_parse_models(d.get("models")),
        tokenizer=_parse_tokenizer(_mapping(d, "tokenizer")),
        pretrain=_parse_pretrain(_mapping(d, "pretrain")),
        finetune=_parse_finetune(_mapping(d, "finetune")),
        evaluate=_parse_evaluate(_mapping(d, "evaluate")),
        fit=_parse_fit(_mapping(d, "fit")),
        data=data,
        executor=_parse_executor(d.get("executor")),
        tracking=_parse_tracking(d.get("tracking")),
        paths=_parse_paths(_mapping(d, "paths")),
        raw=_freeze(d),
    )


def data_config(d: Mapping[str, Any]) -> DataConfig:
    """A DataConfig back from its plan.json form (what a task receives)."""
    return DataConfig(source=d["source"], languages=tuple(d["languages"]), pairs=tuple(d["pairs"]),
                      options=_freeze(d.get("options") or {}))
