"""The resolved Hydra config, validated once into frozen dataclasses: each section's dataclass validates its
own section (`FitConfig.parse`, ...; the sweep's in pipeline/study.py) with the checks of pipeline/validate.py.

Everything downstream reads these objects, never the raw DictConfig. A bad value raises `ConfigError`,
which the entry points turn into ONE line naming the key and what is allowed, and exit status 2.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pipeline import stages
from pipeline.data_sources import SOURCES
from pipeline.metrics import METRICS, curve_metrics
from pipeline.study import SweepConfig
from pipeline.typed import freeze as _freeze
from pipeline.typed import to_dict  # noqa: F401 (config.to_dict: used across the package)
from pipeline.validate import ConfigError  # noqa: F401 (config.ConfigError: imported across the package)
from pipeline.validate import as_list as _list
from pipeline.validate import auto_boolean as _auto_bool
from pipeline.validate import boolean as _bool
from pipeline.validate import choice as _choice
from pipeline.validate import get as _get
from pipeline.validate import known as _known
from pipeline.validate import ladder as _ladder
from pipeline.validate import mapping as _mapping
from pipeline.validate import num as _num
from pipeline.validate import req as _req

FF_TYPES = ("gated-gelu", "relu")
EXECUTORS = ("local", "slurm")
TRACKERS = ("none", "wandb")
# Held-out splits a stage may read: whole unseen packages (every source), or the training packages' own domains
# (the offline corpus only: pipeline/corpus/indomain.py)
VALIDATION_SPLITS = ("validation", "validation_indomain")
TEST_SPLITS = ("test", "test_indomain")
LR_SEARCH = ("per_seed", "first_seed")  # finetune.lr_search
# Languages the code knows how to name in reports; a data source may offer fewer.
KNOWN_LANGUAGES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


# ----------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class ModelPresetRef:
    """A model preset as configured (the full dataclass lives in pipeline.model)."""

    name: str
    fields: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.fields)

    @staticmethod
    def parse_all(d: Any) -> tuple[ModelPresetRef, ...]:
        _req(isinstance(d, Mapping) and len(d) > 0, "model", "no model preset selected (model=NAME, see conf/model/)")
        out = []
        for name, fields in d.items():
            _req(isinstance(fields, Mapping), f"model.{name}", "must be a mapping of preset fields")
            # The preset's own validation lives with the model code; only the name is checked here.
            out.append(ModelPresetRef(name=str(name), fields=_freeze(dict(fields))))
        return tuple(out)


@dataclass(frozen=True)
class TokenizerConfig:
    vocab_size: int
    algorithm: str
    sample_lines_per_language: int
    num_sentinels: int

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> TokenizerConfig:
        p = "tokenizer"
        _known(d, p, {f.name for f in dataclasses.fields(cls)})
        n_sent = _num(d, "num_sentinels", p, kind=int, lo=1, hi=1000)
        return cls(
            vocab_size=_num(d, "vocab_size", p, kind=int, lo=n_sent + 200, hi=1_000_000),
            algorithm=_choice(d, "algorithm", p, ("unigram", "bpe")),
            sample_lines_per_language=_num(d, "sample_lines_per_language", p, kind=int, lo=100),
            num_sentinels=n_sent,
        )


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
    compile: bool | None  # None: auto (pipeline.precision.resolve_compile)
    checkpoint_minutes: float
    log_every: int
    eval_sequences: int
    distributed: str
    activation_checkpointing: bool = False  # recompute each T5 block's activations in backward (less memory)
    # Passes over a language's unique text a run may make (Dp counts tokens seen, repeats included); 1 = never
    # repeat (the planner refuses a ladder that would). Not in a run's identity: epoch 0 is the stream's order
    # whatever the limit, so a ladder that grows past the text resumes the same run.
    max_epochs: float = 1.0

    # Not part of a run's identity (pipeline/plan.py): its length (the schedule does not depend on it, so a longer
    # ladder resumes the same run), and how it is split over processes, logged, checkpointed, compiled, or limited
    # (max_epochs: the data of a step does not depend on it, pipeline/mixture.py). Every other field is.
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset({
        "dp_ladder", "micro_batch_size", "distributed", "log_every", "checkpoint_minutes", "compile",
        "activation_checkpointing", "max_epochs"})
    RUN_ONLY_AT: ClassVar[tuple[tuple[str, Any], ...]] = ()  # (field, value): left out at that value only

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> PretrainConfig:
        p = "pretrain"
        _known(d, p, {f.name for f in dataclasses.fields(cls)})
        batch = _num(d, "batch_size", p, kind=int, lo=1)
        micro = _num(d, "micro_batch_size", p, kind=int, lo=1)
        _req(batch % micro == 0, f"{p}.micro_batch_size", f"must divide batch_size ({batch}), got {micro}")
        betas = _list(d, "betas", p)
        _req(len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas), f"{p}.betas",
             f"must be two numbers in [0, 1), got {betas}")
        return cls(
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
            compile=_auto_bool(d, "compile", p),
            checkpoint_minutes=_num(d, "checkpoint_minutes", p, lo=0, lo_open=True),
            log_every=_num(d, "log_every", p, kind=int, lo=1),
            eval_sequences=_num(d, "eval_sequences", p, kind=int, lo=1),
            distributed=_choice(d, "distributed", p, ("auto", "none", "ddp", "fsdp")),
            activation_checkpointing=_bool(d, "activation_checkpointing", p, False),
            max_epochs=_num(d, "max_epochs", p, lo=1, default=1.0),
        )


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
    max_epochs: int | None  # None: as many epochs as early stopping takes, max_steps the only guard
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
    distributed: str = "auto"  # auto | none | ddp | fsdp, as pretrain.distributed
    activation_checkpointing: bool = False
    micro_batch_tokens: int | None = None  # padded source + target tokens per micro-batch and process (None: whole batch)
    dtype: str = "auto"  # the cells' precision, training and evaluation: auto | fp32 | bf16 (pipeline/precision.py)
    # The lrs grid is searched on every seed (per_seed), or on the first seed only and its winner reused for the
    # other seeds of the same (checkpoint, Df, method) (first_seed: those cells are planned once it is finished)
    lr_search: str = "per_seed"

    # Not part of a cell's identity (pipeline/plan.py): the grids, which the planner expands into each cell's own
    # keys (df, seed, method, lr), which cells a sweep runs (seeds_df_max, lr_search), and how a cell is split over
    # processes and memory. Every other field is.
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset({
        "df_ladder", "seeds", "methods", "lrs", "seeds_df_max", "lr_search", "distributed",
        "activation_checkpointing", "micro_batch_tokens"})
    # `auto` precision is left out (what it chose depends on the processor, not the cell); fp32 or bf16 is in
    RUN_ONLY_AT: ClassVar[tuple[tuple[str, Any], ...]] = (("dtype", "auto"),)

    def step_cap(self, pairs: int) -> int:
        """The most optimiser steps a cell of `pairs` training pairs takes (early stopping may take fewer)."""
        if self.max_epochs is None:
            return self.max_steps
        return min(self.max_steps, self.max_epochs * -(-pairs // self.batch_size))

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> FinetuneConfig:
        p = "finetune"
        _known(d, p, {f.name for f in dataclasses.fields(cls)})
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
        mbt = _num(d, "micro_batch_tokens", p, kind=int, lo=1, default=None)
        longest = _num(d, "max_source_length", p, kind=int, lo=4) + _num(d, "max_target_length", p, kind=int, lo=4)
        _req(mbt is None or mbt >= longest, f"{p}.micro_batch_tokens",
             f"must hold one pair at max_source_length + max_target_length ({longest} tokens), got {mbt}")
        return cls(
            df_ladder=_ladder(d, "df_ladder", p),
            seeds=tuple(seeds),
            methods=methods,
            lrs=tuple(float(x) for x in lrs),
            batch_size=_num(d, "batch_size", p, kind=int, lo=1),
            max_steps=_num(d, "max_steps", p, kind=int, lo=1),
            max_epochs=_num(d, "max_epochs", p, kind=int, lo=1, default=None),
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
            distributed=_choice(d, "distributed", p, ("auto", "none", "ddp", "fsdp"), "auto"),
            activation_checkpointing=_bool(d, "activation_checkpointing", p, False),
            micro_batch_tokens=mbt,
            dtype=_choice(d, "dtype", p, ("auto", "fp32", "bf16"), "auto"),
            lr_search=_choice(d, "lr_search", p, LR_SEARCH, "per_seed"),
            lora=LoraConfig(
                r=_num(lora_d, "r", f"{p}.lora", kind=int, lo=1),
                alpha=_num(lora_d, "alpha", f"{p}.lora", lo=0, lo_open=True),
                dropout=_num(lora_d, "dropout", f"{p}.lora", lo=0, hi=0.9),
                target_modules=tuple(str(x) for x in _list(lora_d, "target_modules", f"{p}.lora")),
            ),
        )


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
    # The generation cap per sentence, as NMT toolkits set it (fairseq's max_len_a/b): a·(source tokens) + b new
    # tokens, never more than max_new_tokens (the hard ceiling). max_len_a = 0 gives the fixed cap b.
    max_len_a: float = 1.5
    max_len_b: int = 10
    length_penalty: float = 1.0  # beam search: hypotheses scored by log-probability / length**length_penalty
    # A runaway output: it hit its cap, or it is longer than runaway_ratio × its reference (words) and repeats
    # one n-gram (n <= 4 words) at least runaway_repeats times in a row (pipeline.evaluate.runaway)
    runaway_ratio: float = 1.5
    runaway_repeats: int = 3

    def cap(self, source_len: int) -> int:
        """New tokens allowed for a source of `source_len` tokens (as the model reads it, prefix and EOS included)."""
        return max(1, min(self.max_new_tokens, int(self.max_len_a * source_len + self.max_len_b)))

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> EvaluateConfig:
        p = "evaluate"
        _known(d, p, {f.name for f in dataclasses.fields(cls)})
        splits = tuple(str(x) for x in _list(d, "test_splits", p, ["test"]))
        for s in splits:
            _req(s in TEST_SPLITS, f"{p}.test_splits", f"unknown test split {s!r}; allowed: {', '.join(TEST_SPLITS)}")
        _req(len(set(splits)) == len(splits) <= 2, f"{p}.test_splits", f"one or two different splits, got {list(splits)}")
        return cls(
            test_splits=splits,
            test_size=_num(d, "test_size", p, kind=int, lo=1, default=None),
            batch_size=_num(d, "batch_size", p, kind=int, lo=1),
            num_beams=_num(d, "num_beams", p, kind=int, lo=1, hi=64),
            max_new_tokens=_num(d, "max_new_tokens", p, kind=int, lo=1),
            bleu_tokenize=_choice(d, "bleu_tokenize", p, ("13a", "intl", "char", "none", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200")),
            max_len_a=_num(d, "max_len_a", p, lo=0, default=1.5),
            max_len_b=_num(d, "max_len_b", p, kind=int, lo=0, default=10),
            length_penalty=_num(d, "length_penalty", p, lo=-5, hi=5, default=1.0),
            runaway_ratio=_num(d, "runaway_ratio", p, lo=1, default=1.5),
            runaway_repeats=_num(d, "runaway_repeats", p, kind=int, lo=2, default=3),
        )


@dataclass(frozen=True)
class FitConfig:
    holdout_largest: int
    bootstrap: int
    bleu_delta: float
    ce_delta: float
    interval: str = "laplace"  # how the fits' intervals are made (pipeline.scaling.fit.INTERVALS)
    level: float = 0.9
    # the law fitted to each metric's curve against Dp (a name in pipeline.scaling.LAWS taking one input); the
    # default is the metric's declared law (pipeline/metrics.py)
    bleu_law: str = METRICS["bleu"].law
    ce_law: str = METRICS["ce"].law
    # a law "holds" on a curve when its mean held-out relative error is at most this (the misalignment
    # verdict and the report's sentences)
    good_rel_err: float = 0.1
    # the report flags a BLEU comparison whose two sides' output/reference length ratios differ by more than this
    # (a BLEU gap that may be a length accident rather than translation quality)
    length_ratio_flag: float = 0.1

    def curve_laws(self) -> tuple[tuple[str, str, float], ...]:
        """(metric, law, Huber delta) of every per-curve fit, in the registry's order (pipeline.metrics): the
        metric's declared law and delta, or this config's `<metric>_law` / `<metric>_delta` where it has that
        field; a delta declared nowhere is the law's own. The one place the fit stage, the misalignment verdict,
        the methods table and the report read which law goes with which metric."""
        out = []
        for name in curve_metrics():
            law = getattr(self, f"{name}_law", METRICS[name].law)
            delta = getattr(self, f"{name}_delta", METRICS[name].delta)
            if delta is None:
                from pipeline.scaling.laws import LAWS  # the law's own delta (imported late: it loads torch)

                delta = LAWS[law].delta
            out.append((name, law, delta))
        return tuple(out)

    def curve_law(self, metric: str) -> tuple[str, float]:
        """The law and Huber delta fitted to one metric's curves (its row of `curve_laws`)."""
        return next((law, delta) for m, law, delta in self.curve_laws() if m == metric)

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> FitConfig:
        p = "fit"
        _known(d, p, {f.name for f in dataclasses.fields(cls)})
        return cls(
            holdout_largest=_num(d, "holdout_largest", p, kind=int, lo=0),
            bootstrap=_num(d, "bootstrap", p, kind=int, lo=0),
            bleu_delta=_num(d, "bleu_delta", p, lo=0, lo_open=True),
            ce_delta=_num(d, "ce_delta", p, lo=0, lo_open=True),
            interval=_choice(d, "interval", p, _intervals(), "laplace"),
            level=_num(d, "level", p, lo=0, hi=0.999, lo_open=True, default=0.9),
            bleu_law=_choice(d, "bleu_law", p, _curve_laws(), cls.bleu_law),
            ce_law=_choice(d, "ce_law", p, _curve_laws(), cls.ce_law),
            good_rel_err=_num(d, "good_rel_err", p, lo=0, lo_open=True, default=0.1),
            length_ratio_flag=_num(d, "length_ratio_flag", p, lo=0, lo_open=True, default=0.1),
        )


# ------------------------------------------------------------------------------------ infrastructure


@dataclass(frozen=True)
class DataConfig:
    source: str
    languages: tuple[str, ...]
    pairs: tuple[str, ...]
    options: tuple[tuple[str, Any], ...] = ()  # the source's own section (l10n/hub/local), as plain data

    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @classmethod
    def parse(cls, d: Any) -> DataConfig:
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
        return cls(source=source, languages=langs, pairs=pairs, options=_freeze(dict(opts)))


@dataclass(frozen=True)
class TokensConfig:
    """How the tokens stage does its work; none of it changes the streams it writes (not in their identity)."""

    workers: int = 1  # local processes a language's train stream is split across
    shard_mb: float = 64.0  # text per shard of a bounded source (a stream's shard is one of its files)
    commit_seconds: float = 60.0  # a shard being written commits its position this often (what a kill loses)

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> TokensConfig:
        _known(d, "tokens", {"workers", "shard_mb", "commit_seconds"})
        return cls(workers=_num(d, "workers", "tokens", kind=int, lo=1, hi=1024, default=1),
                   shard_mb=_num(d, "shard_mb", "tokens", kind=float, lo=0, lo_open=True, default=64.0),
                   commit_seconds=_num(d, "commit_seconds", "tokens", kind=float, lo=0.0, default=60.0))


@dataclass(frozen=True)
class ExecutorConfig:
    kind: str
    options: tuple[tuple[str, Any], ...] = ()

    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @classmethod
    def parse(cls, d: Any) -> ExecutorConfig:
        _req(isinstance(d, Mapping), "executor", f"must be one of {', '.join(EXECUTORS)}")
        kind = _choice(d, "kind", "executor", EXECUTORS)
        _num(d, "gpu_mem_gb", "executor", lo=0, lo_open=True, default=80)
        if kind == "local":
            _known(d, "executor", {"kind", "workers", "threads_per_worker", "gpu_mem_gb"})
            _num(d, "workers", "executor", kind=int, lo=1, hi=256)
            _num(d, "threads_per_worker", "executor", kind=int, lo=1, default=None)
        return cls(kind=kind, options=_freeze({k: v for k, v in d.items() if k != "kind"}))


@dataclass(frozen=True)
class TrackingConfig:
    backend: str
    project: str = "downstream-scaling"
    entity: str | None = None
    mode: str = "offline"

    @classmethod
    def parse(cls, d: Any) -> TrackingConfig:
        _req(isinstance(d, Mapping), "tracking", f"must be one of {', '.join(TRACKERS)}")
        backend = _choice(d, "backend", "tracking", TRACKERS)
        if backend == "none":
            return cls(backend="none")
        _known(d, "tracking", {"backend", "project", "entity", "mode"})
        return cls(
            backend=backend,
            project=str(_get(d, "project", "tracking")),
            entity=d.get("entity"),
            mode=_choice(d, "mode", "tracking", ("offline", "online", "disabled")),
        )


@dataclass(frozen=True)
class Paths:
    cache: Path
    artifacts: Path
    reports: Path
    results: Path | None

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> Paths:
        def path(key: str, optional: bool = False) -> Path | None:
            v = d.get(key)
            if v is None and optional:
                return None
            _req(isinstance(v, str) and v.strip() != "", f"paths.{key}", "must be a directory path")
            return Path(os.path.expanduser(v)).resolve()

        return cls(cache=path("cache"), artifacts=path("artifacts"), reports=path("reports"),
                     results=path("results", optional=True))


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
    tokens: TokensConfig = TokensConfig()
    raw: tuple[tuple[str, Any], ...] = field(default=(), compare=False, repr=False)


# ------------------------------------------------------------------------------------------ parsing


def _curve_laws() -> tuple[str, ...]:
    from pipeline.scaling.laws import LAWS  # the registry (imported late: it loads torch)

    return tuple(name for name, law in LAWS.items() if law.nx == 1)


def _intervals() -> tuple[str, ...]:
    from pipeline.scaling.fit import INTERVALS  # the fitter's own list (imported late: it loads torch)

    return INTERVALS


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
    data = DataConfig.parse(d.get("data"))
    scale = d.get("scale") or {}
    _req(isinstance(scale, Mapping), "scale", f"must be a scale preset (scale=NAME, see conf/scale/), got {scale!r}")
    return Config(
        stage=stage,
        seed=_num(d, "seed", "", kind=int, lo=0, default=0),
        scale=str(scale.get("name", "custom")),
        scale_description=str(scale.get("description", "")),
        sweep=SweepConfig.parse(d.get("sweep"), data.languages, data.pairs),
        models=ModelPresetRef.parse_all(d.get("models")),
        tokenizer=TokenizerConfig.parse(_mapping(d, "tokenizer")),
        pretrain=PretrainConfig.parse(_mapping(d, "pretrain")),
        finetune=FinetuneConfig.parse(_mapping(d, "finetune")),
        evaluate=EvaluateConfig.parse(_mapping(d, "evaluate")),
        fit=FitConfig.parse(_mapping(d, "fit")),
        data=data,
        executor=ExecutorConfig.parse(d.get("executor")),
        tracking=TrackingConfig.parse(d.get("tracking")),
        paths=Paths.parse(_mapping(d, "paths")),
        tokens=TokensConfig.parse(d.get("tokens") or {}),
        raw=_freeze(d),
    )


def identity(section: Any) -> dict[str, Any]:
    """A config section's part of a stage's identity (hashed into its directory name): its plain data less the
    fields its class declares run-only (`RUN_ONLY`, and `RUN_ONLY_AT` at those values)."""
    cls = type(section)
    at = dict(cls.RUN_ONLY_AT)
    return {k: v for k, v in to_dict(section).items()
            if k not in cls.RUN_ONLY and not (k in at and v == at[k])}


def data_config(d: Mapping[str, Any]) -> DataConfig:
    """A DataConfig back from its plan.json form (what a task receives)."""
    return DataConfig(source=d["source"], languages=tuple(d["languages"]), pairs=tuple(d["pairs"]),
                      options=_freeze(d.get("options") or {}))
