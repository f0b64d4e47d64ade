"""The planner: a sweep expands into a DAG of tasks, each named by the hash of its config slice and inputs.

    tokenizer ─► tokens[lang] ─► pretrain[mixture, model] ─► finetune[task, rung, Df, seed, method, lr] ─► evaluate
              └► init[model] ─┘ (the Dp = 0 baseline, and every pretraining run's starting point)
    evaluate* ─► collect ─► fit ─► report

A task carries in `spec` everything its function needs (config slice and the directories of its inputs),
so `python -m pipeline.task plan.json i` can run it anywhere (a SLURM array element) from the plan alone.
Validation that needs the data (Df against the pool, Dp against the unique text) happens here, before any
compute, and raises ConfigError (one line, exit 2).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.artifacts import (
    atomic_write_json,
    dir_hash,
    is_done,
    read_json,
    read_status,
    stable_hash,
    stage_dir,
)
from pipeline.budget import CHARS_PER_TOKEN
from pipeline.config import Config, ConfigError, identity, to_dict
from pipeline.results import Cell, ReadSpec, Scale
from pipeline.stages import LEVELS, READ_STAGES
from pipeline.study import Mixture, TaskSpec
from pipeline.sweep_precision import sweep_precision
from pipeline.typed import Spec


@dataclass(frozen=True)
class Task:
    id: str  # "<stage>/<dirname>", unique in a plan
    stage: str
    name: str
    dir: str
    deps: tuple[str, ...]
    spec: dict[str, Any] | Spec = field(hash=False, compare=False)  # plan.json's plain data; typed in a stage

    def to_dict(self) -> dict[str, Any]:
        spec = self.spec.to_dict() if isinstance(self.spec, Spec) else self.spec
        return {"id": self.id, "stage": self.stage, "name": self.name, "dir": self.dir, "deps": list(self.deps),
                "spec": spec}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Task:
        return Task(id=d["id"], stage=d["stage"], name=d["name"], dir=d["dir"], deps=tuple(d["deps"]), spec=d["spec"])


@dataclass
class Plan:
    sweep: str
    tasks: list[Task]
    cells: list[Cell]
    summary: dict[str, Any]

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}

    def to_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "summary": self.summary, "tasks": [t.to_dict() for t in self.tasks],
                "cells": [dataclasses.asdict(c) for c in self.cells]}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Plan:
        return Plan(sweep=d["sweep"], tasks=[Task.from_dict(t) for t in d["tasks"]],
                    cells=[Cell(**c) for c in d["cells"]], summary=d["summary"])

    def select(self, stage: str) -> list[Task]:
        """The tasks `stage=<stage>` runs: training stages run everything up to them; collect/fit/report
        only read what exists on disk (`make report` never trains)."""
        if stage in ("all", "plan"):
            return list(self.tasks)
        if stage in READ_STAGES:
            keep = READ_STAGES[: READ_STAGES.index(stage) + 1]
            return [t for t in self.tasks if t.stage in keep]
        upto = LEVELS.index(stage)
        return [t for t in self.tasks if LEVELS.index(t.stage) <= upto]


def load_plan(path: Path) -> Plan:
    return Plan.from_dict(read_json(path))


# ------------------------------------------------------------------------------------------ helpers


def seeds_at(cfg: Config, df: int) -> tuple[int, ...]:
    """The finetuning seeds of a Df: all of them, or past `seeds_df_max` the first only (seed variance is
    measured where it is largest and cheapest, at the small Df)."""
    s = cfg.finetune.seeds
    return s if cfg.finetune.seeds_df_max is None or df <= cfg.finetune.seeds_df_max else s[:1]


def reuse_lr(cfg: Config, seed: int) -> bool:
    """Whether a seed's cells take the rate searched on the first seed instead of searching the grid themselves."""
    ft = cfg.finetune
    return ft.lr_search == "first_seed" and len(ft.lrs) > 1 and seed != ft.seeds[0]


def searched_lr(cells: dict[float, Task]) -> tuple[float, ...]:
    """The rate with the lowest validation CE among the first seed's cells of one (checkpoint, Df, method), once
    every one of them is finished (ties: the first in the grid); () while any is not."""
    if not all(is_done(Path(t.dir)) for t in cells.values()):
        return ()
    ce = {lr: read_json(Path(t.dir) / "finetune.json")["best_val_ce"] for lr, t in cells.items()}
    return (min(ce, key=lambda lr: (ce[lr], list(ce).index(lr))),)


# --------------------------------------------------------------------------------------------- plan


def build_plan(cfg: Config, source: Any) -> Plan:
    """Expand the sweep into tasks, one builder per stage in pipeline order. `source` is a pipeline.sources.Source
    (for identity and sizes)."""
    from pipeline.span_corruption import compute_lengths

    b = _Builder(cfg, source, source.identity(), *compute_lengths(
        cfg.pretrain.inputs_length, cfg.pretrain.noise_density, cfg.pretrain.mean_noise_span_length))
    tok = _tokenizer_task(b)
    ladders = task_ladders(cfg)
    mix_ladders = mixture_ladders(cfg, ladders)
    needed = _tokens_needed(b, mix_ladders)
    tokens = _tokens_tasks(b, tok, needed)
    # Data too small for the sweep: refused before any compute, except by stage=plan, which prints the budget
    # anyway (the paper's scale planned against the offline corpus) and says what running it would meet.
    problems, epochs = _data_problems(cfg, source, tokens, needed)
    if problems and cfg.stage != "plan":
        raise problems[0]

    # The data is fine: now the model code (seconds to import) for parameter counts and FLOPs.
    from pipeline.model import load_preset

    presets = [load_preset(m.as_dict()) for m in cfg.models]
    precision = sweep_precision(cfg, presets)
    inits = _init_tasks(b, presets, tok)
    pretrains = _pretrain_tasks(b, presets, tok, inits, tokens, mix_ladders, precision["pretrain"])
    cells, deferred = _cell_tasks(b, _points(b, presets, inits, pretrains, ladders), tok, precision["finetune"])
    collect = _collect_task(b, cells)
    ordered = sorted(b.tasks.values(), key=_run_order) + [collect, *_fit_report(cfg, collect.id)]

    langs = cfg.sweep.languages()
    stored = {lang: stored_tokens(source, lang, tokens[lang], needed[lang]) for lang in langs}
    summary = _summary(cfg, presets, cfg.tokenizer.vocab_size, b.raw_len, b.targets_len, mix_ladders, needed, langs,
                       source, cells, deferred)
    summary["data_problems"] = [str(e) for e in problems]
    summary["precision"] = precision
    summary["lr_search"] = cfg.finetune.lr_search
    summary["lr_deferred"] = len(deferred)
    summary["pretrain_epochs"] = {lang: round(e, 4) for lang, e in epochs.items()}
    summary["pretrain_max_epochs"] = cfg.pretrain.max_epochs
    summary["tokens_stored"] = stored
    return Plan(sweep=cfg.sweep.name, tasks=ordered, cells=cells, summary=summary)


@dataclass
class _Builder:
    """What every stage's builder reads (the config, the data source and its identity, the pretraining lengths)
    and the tasks built so far."""

    cfg: Config
    source: Any
    data_id: Any
    raw_len: int  # raw text tokens per pretraining example, before span corruption
    targets_len: int
    tasks: dict[str, Task] = field(default_factory=dict)

    @property
    def cache(self) -> str:
        return str(self.cfg.paths.cache)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.pretrain.batch_size * self.raw_len

    def steps_for(self, dp: int) -> int:
        """Pretraining steps of the checkpoint that stands for Dp."""
        return math.ceil(dp / self.tokens_per_step)

    def add(self, stage: str, name: str, deps: list[Task], spec: Spec) -> Task:
        """A task named by the hash of its spec's identity slice and its inputs' hashes (once, however often asked)."""
        d = stage_dir(self.cfg.paths.artifacts, stage, name, spec.config, [dir_hash(Path(x.dir)) for x in deps])
        t = Task(id=f"{stage}/{d.name}", stage=stage, name=name, dir=str(d), deps=tuple(x.id for x in deps),
                 spec=spec.to_dict())
        return self.tasks.setdefault(t.id, t)


def task_ladders(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Each task's Dp ladder (by pair): the sweep's, capped by the task's dp_max."""
    out = {}
    for t in cfg.sweep.tasks:
        out[t.pair] = tuple(d for d in cfg.pretrain.dp_ladder if t.dp_max is None or d <= t.dp_max)
        if not out[t.pair]:
            raise ConfigError(f"sweep.tasks.{t.pair}.dp_max", f"{t.dp_max} is below the smallest rung {cfg.pretrain.dp_ladder[0]}")
    return out


def mixture_ladders(cfg: Config, ladders: dict[str, tuple[int, ...]]) -> dict[tuple, tuple[int, ...]]:
    """Each mixture's pretraining ladder (by its weights): every rung any of its tasks reads."""
    out: dict[tuple, tuple[int, ...]] = {}
    for t in cfg.sweep.tasks:
        for m in t.mixtures:
            out[m.weights] = tuple(sorted(set(out.get(m.weights, ())) | set(ladders[t.pair])))
    return out


def _tokenizer_dir(tok: Task) -> str:
    return str(Path(tok.dir) / "tokenizer")


def _tokenizer_task(b: _Builder) -> Task:
    """The vocabulary, learnt from the languages the study reads (its mixtures' and its tasks' two sides)."""
    from pipeline.tokenizer import TokenizerSpec

    cfg = b.cfg
    tok_slice = {"tokenizer": to_dict(cfg.tokenizer), "data": b.data_id, "languages": cfg.sweep.languages()}
    return b.add("tokenizer", f"tok-{cfg.tokenizer.algorithm}{cfg.tokenizer.vocab_size}", [],
                 TokenizerSpec(config=tok_slice, data=cfg.data, cache=b.cache))


def _tokens_needed(b: _Builder, mix_ladders: dict[tuple, tuple[int, ...]]) -> dict[str, int]:
    """Tokens each language must supply without repetition: the most any mixture's run reads of it."""
    from pipeline.mixture import mixture_counts

    cfg = b.cfg
    needed = {lang: 0 for lang in cfg.sweep.languages()}
    for m in cfg.sweep.mixtures():
        top = b.steps_for(max(mix_ladders[m.weights]))
        for lang, n in mixture_counts(m, cfg.pretrain.batch_size).items():
            needed[lang] = max(needed[lang], top * n * b.raw_len)
    return needed


def _tokens_tasks(b: _Builder, tok: Task, needed: dict[str, int]) -> dict[str, Task]:
    """One token stream per language the study reads: every mixture's, and every task's (for upstream losses)."""
    from pipeline.tokens import TokensSpec

    cfg, out = b.cfg, {}
    for lang in cfg.sweep.languages():
        max_tokens = source_max_tokens(b.source, needed[lang])
        out[lang] = b.add("tokens", f"tokens-{lang}", [tok], TokensSpec(
            config={"lang": lang, "data": b.data_id, "max_tokens": max_tokens, "seed": cfg.seed},
            lang=lang, tokenizer_dir=_tokenizer_dir(tok), data=cfg.data, cache=b.cache, max_tokens=max_tokens,
            seed=cfg.seed, tokens=cfg.tokens))
    return out


def _data_problems(cfg: Config, source: Any, tokens: dict[str, Task],
                   needed: dict[str, int]) -> tuple[list[ConfigError], dict[str, float]]:
    """What the data cannot give the sweep (too little text for the ladder, a Df larger than a pair's pool), and
    the passes over each language's unique text the ladder makes."""
    problems: list[ConfigError] = []
    epochs: dict[str, float] = {}
    max_epochs = cfg.pretrain.max_epochs
    for lang in cfg.sweep.languages():
        unique, exact = unique_tokens(source, lang, tokens[lang])
        if unique:
            epochs[lang] = needed[lang] / unique
        if unique is not None and max_epochs > 1 and needed[lang] > max_epochs * unique:
            problems.append(ConfigError(
                "pretrain.max_epochs",
                f"the ladder would read {lang} text {needed[lang] / unique:.2f} times: it needs {needed[lang]:,} "
                f"{lang} tokens, the {cfg.data.source} source has {'' if exact else 'about '}{unique:,} unique ones "
                f"and max_epochs is {max_epochs:g}; raise it, lower the ladder or cap it with sweep.tasks.<pair>.dp_max"))
        elif unique is not None and max_epochs <= 1 and needed[lang] > unique:
            problems.append(ConfigError(
                "pretrain.dp_ladder",
                f"the ladder would repeat {lang} text: it needs {needed[lang]:,} {lang} tokens but the "
                f"{cfg.data.source} source has {'' if exact else 'about '}{unique:,} unique ones; lower "
                f"the ladder, cap it with sweep.tasks.<pair>.dp_max, use a larger source (data=hub), or allow "
                f"repeats with pretrain.max_epochs"))
    for t in cfg.sweep.tasks:
        pool = source.pool_size(t.pair, "train") if hasattr(source, "pool_size") else None
        if pool is not None and cfg.finetune.df_ladder[-1] > pool:
            problems.append(ConfigError(
                "finetune.df_ladder",
                f"Df {cfg.finetune.df_ladder[-1]:,} is larger than the {pool:,} training pairs of {t.pair}"))
    return problems, epochs


def _init_tasks(b: _Builder, presets: list, tok: Task) -> dict[str, Task]:
    """The random initialisation of each model: the Dp = 0 baseline and every pretraining run's start."""
    from pipeline.pretrain import InitSpec

    seed = b.cfg.seed
    return {p.name: b.add("init", f"init-{p.name}", [tok], InitSpec(
        config={"model": dataclasses.asdict(p), "seed": seed}, model=p, seed=seed, tokenizer_dir=_tokenizer_dir(tok)))
        for p in presets}


def _pretrain_tasks(b: _Builder, presets: list, tok: Task, inits: dict[str, Task], tokens: dict[str, Task],
                    mix_ladders: dict[tuple, tuple[int, ...]], dtype: str) -> dict[tuple, Task]:
    """One pretraining run per (mixture, model), keyed so; its identity leaves out the ladder and how it runs
    (PretrainConfig.RUN_ONLY), so a longer ladder resumes the same run."""
    from pipeline.pretrain import PretrainSpec

    cfg, out = b.cfg, {}
    pt_id = identity(cfg.pretrain)
    for preset in presets:
        p = dataclasses.asdict(preset)
        for m in cfg.sweep.mixtures():
            # its streams: the mixture's languages, and its tasks' targets (held-out losses)
            langs = sorted(set(m.languages) | {t.tgt for t in cfg.sweep.tasks if m in t.mixtures})
            out[(m.weights, preset.name)] = b.add(
                "pretrain", f"pt-{m.name}-{preset.name}", [tok, inits[preset.name], *(tokens[x] for x in langs)],
                PretrainSpec(
                    config={"model": p, "mixture": m.key(), "pretrain": pt_id, "seed": cfg.seed},
                    model=preset, mixture=m.key(), mixture_name=m.name, pretrain=cfg.pretrain,
                    dp_ladder=mix_ladders[m.weights], seed=cfg.seed, tokenizer_dir=_tokenizer_dir(tok),
                    init_dir=inits[preset.name].dir, tracking=cfg.tracking,
                    tokens_dirs={x: tokens[x].dir for x in langs}, raw_length=b.raw_len,
                    targets_length=b.targets_len, dtype=dtype))
    return out


@dataclass(frozen=True)
class _Point:
    """A cell of the grid before its learning rate: (task, model, rung, Df, seed, method)."""

    task: TaskSpec
    preset: Any  # pipeline.model.ModelPreset
    mixture: Mixture | None  # None: the Dp = 0 baseline, which belongs to every mixture of its task
    dp: int
    parent: Task  # the init or pretraining task whose checkpoint the cell starts from
    steps: int  # that checkpoint's pretraining steps (0: the init)
    df: int
    seed: int
    method: str

    @property
    def name(self) -> str:
        t = self.task
        return (f"ft-{t.pair}-{self.mixture.name if self.mixture else 'init'}-{self.preset.name}-dp{self.dp}"
                f"-df{self.df}-s{self.seed}-{self.method}")

    @property
    def search(self) -> tuple:
        """What the first seed's rate search is shared over (lr_search=first_seed)."""
        return (self.task.pair, self.preset.name, self.parent.id, self.dp, self.df, self.method)

    def rows(self, lr: float, tokens_per_step: int, finetune_id: str = "", evaluate_id: str = "",
             lr_from: int | None = None) -> list[Cell]:
        """The results table's rows of the cell: one per mixture it stands for."""
        t = self.task
        return [Cell(task=t.pair, src=t.src, tgt=t.tgt, mixture=mix.name, alignment=round(mix.alignment(t.src, t.tgt), 6),
                     model=self.preset.name, dp_rung=self.dp, dp_tokens=self.steps * tokens_per_step,
                     pretrain_steps=self.steps, df=self.df, seed=self.seed, method=self.method, lr=lr,
                     finetune_id=finetune_id, evaluate_id=evaluate_id, lr_from=lr_from)
                for mix in ([self.mixture] if self.mixture else t.mixtures)]


def _points(b: _Builder, presets: list, inits: dict[str, Task], pretrains: dict[tuple, Task],
            ladders: dict[str, tuple[int, ...]]) -> Iterator[_Point]:
    """Every cell of the sweep but its rate, in the results table's order: per task and model, the baseline and
    each mixture's rungs, each over the (Df, seed, method) grid."""
    ft = b.cfg.finetune
    grid = [(df, seed, method) for df in ft.df_ladder for seed in seeds_at(b.cfg, df) for method in ft.methods]
    for t in b.cfg.sweep.tasks:
        for preset in presets:
            rungs = [(None, 0, inits[preset.name])] + [
                (m, dp, pretrains[(m.weights, preset.name)]) for m in t.mixtures for dp in ladders[t.pair]]
            for (m, dp, parent), (df, seed, method) in itertools.product(rungs, grid):
                yield _Point(t, preset, m, dp, parent, b.steps_for(dp) if dp else 0, df, seed, method)


def _cell_tasks(b: _Builder, points: Iterable[_Point], tok: Task, dtype: str) -> tuple[list[Cell], list[int]]:
    """Each cell's finetuning and evaluation tasks, one per rate of the grid (or, with lr_search=first_seed, the
    other seeds' at the rate the first seed's cells chose, once they are finished). Returns the table's cells
    and the Df of each finetuning run still waiting for that choice."""
    ft = b.cfg.finetune
    cells: list[Cell] = []
    deferred: list[int] = []
    searched: dict[tuple, dict[float, Task]] = {}  # Point.search -> the first seed's finetuning task per rate
    for pt in points:
        lrs, lr_from = ft.lrs, None
        if reuse_lr(b.cfg, pt.seed):
            lr_from = ft.seeds[0]
            lrs = searched_lr(searched[pt.search])
            if not lrs:
                deferred.append(pt.df)
                cells += pt.rows(math.nan, b.tokens_per_step, lr_from=lr_from)
        for lr in lrs:
            f = _finetune_task(b, pt, lr, tok, dtype)
            if pt.seed == ft.seeds[0]:
                searched.setdefault(pt.search, {})[lr] = f
            e = _evaluate_task(b, pt, f)
            cells += pt.rows(lr, b.tokens_per_step, f.id, e.id, lr_from)
    return cells, deferred


def _finetune_task(b: _Builder, pt: _Point, lr: float, tok: Task, dtype: str) -> Task:
    """A cell's finetuning run; its identity leaves out the grids and how it runs (FinetuneConfig.RUN_ONLY)."""
    from pipeline.finetune import FinetuneSpec, Rung

    cfg, t = b.cfg, pt.task
    return b.add("finetune", pt.name, [pt.parent], FinetuneSpec(
        config={"finetune": identity(cfg.finetune), "pair": t.pair, "checkpoint": {"dp_rung": pt.dp, "steps": pt.steps},
                "df": pt.df, "seed": pt.seed, "method": pt.method, "lr": lr, "data": b.data_id},
        finetune=cfg.finetune, pair=t.pair, src=t.src, tgt=t.tgt,
        checkpoint=Rung(parent_dir=pt.parent.dir, dp_rung=pt.dp, steps=pt.steps), df=pt.df, seed=pt.seed,
        method=pt.method, lr=lr, model=pt.preset, data=cfg.data, cache=b.cache, tokenizer_dir=_tokenizer_dir(tok),
        tracking=cfg.tracking, dtype=dtype))


def _evaluate_task(b: _Builder, pt: _Point, finetune: Task) -> Task:
    """The evaluation of a finetuned cell on the pair's test splits."""
    from pipeline.evaluate import EvaluateSpec

    cfg, t = b.cfg, pt.task
    return b.add("evaluate", finetune.name.replace("ft-", "ev-", 1), [finetune], EvaluateSpec(
        config={"evaluate": to_dict(cfg.evaluate), "pair": t.pair, "data": b.data_id},
        evaluate=cfg.evaluate, pair=t.pair, src=t.src, tgt=t.tgt, finetune_dir=finetune.dir,
        task_prefix=cfg.finetune.task_prefix, max_source_length=cfg.finetune.max_source_length, data=cfg.data,
        cache=b.cache, tracking=cfg.tracking))


def _collect_task(b: _Builder, cells: list[Cell]) -> Task:
    """The sweep's results table, from every evaluation (no hash identity: it always reruns)."""
    from pipeline.collect import CollectSpec

    cfg, tasks = b.cfg, b.tasks.values()
    return Task(id=f"collect/{cfg.sweep.name}", stage="collect", name=f"collect-{cfg.sweep.name}",
                dir=str(cfg.paths.reports / cfg.sweep.name), deps=tuple(x.id for x in tasks if x.stage == "evaluate"),
                spec=CollectSpec(**vars(_read_spec(cfg)), cells=tuple(cells),
                                 dirs={x.id: x.dir for x in tasks if x.stage in ("finetune", "evaluate")}).to_dict())


def _run_order(task: Task) -> tuple:
    """Stage by stage; the finetuning cells cheapest Df first, and within a Df the baseline, then the largest
    Dp downwards: a sweep stopped part-way has the smallest-Df column whole (where pretraining matters most)
    and each column's two ends first. The executors start ready tasks in this order."""
    if task.stage != "finetune":
        return (LEVELS.index(task.stage),)
    dp = task.spec["checkpoint"]["dp_rung"]  # a FinetuneSpec's plain data
    return (LEVELS.index(task.stage), task.spec["df"], dp != 0, -dp)


def _read_spec(cfg: Config) -> ReadSpec:
    return ReadSpec(sweep=cfg.sweep.name, reports_dir=str(cfg.paths.reports / cfg.sweep.name),
                    results=str(cfg.paths.results) if cfg.paths.results else None, fit=cfg.fit, tracking=cfg.tracking,
                    scale=Scale(cfg.scale, cfg.scale_description), data_source=cfg.data.source)


def _fit_report(cfg: Config, collect_id: str | None) -> list[Task]:
    """The fit and report tasks. collect/fit/report always rerun (cheap, and they must reflect whatever
    exists on disk): no hash identity, their directory is the sweep's reports directory."""
    reports, spec = str(cfg.paths.reports / cfg.sweep.name), _read_spec(cfg).to_dict()
    fit = Task(id=f"fit/{cfg.sweep.name}", stage="fit", name=f"fit-{cfg.sweep.name}", dir=reports,
               deps=(collect_id,) if collect_id else (), spec=dict(spec))
    report = Task(id=f"report/{cfg.sweep.name}", stage="report", name=f"report-{cfg.sweep.name}", dir=reports,
                  deps=(fit.id,), spec=dict(spec))
    return [fit, report]


def build_read_plan(cfg: Config) -> Plan:
    """`stage=fit|report paths.results=TABLE`: fit and report from a table copied back from a cluster. Nothing
    of the data, the model code or the artifacts is needed."""
    return Plan(sweep=cfg.sweep.name, tasks=_fit_report(cfg, None), cells=[],
                summary={"scale": cfg.scale, "scale_description": cfg.scale_description, "from_results": True})


# Conservative average for unique-token estimates before the tokenizer exists (8k-unigram on this corpus
# averages ~3.6 characters a token; the check uses the exact count once the tokens stage has run).


def unique_tokens(source: Any, lang: str, tokens_task: Task) -> tuple[int | None, bool]:
    """Unique training tokens of a language: exact once its tokens task has run, else estimated from characters."""
    if is_done(Path(tokens_task.dir)):
        return int(read_json(Path(tokens_task.dir) / "meta.json")["train_tokens"]), True
    stats = source.text_stats(lang)
    if not stats:
        return None, False
    return int(stats["chars"] / CHARS_PER_TOKEN), False


def stored_tokens(source: Any, lang: str, tokens_task: Task, needed: int) -> int:
    """Tokens the tokens stage writes for a language (train + validation): exact once it has run; else all
    of a bounded source's text (estimated from characters) or what the ladder takes from a stream."""
    if is_done(Path(tokens_task.dir)):
        meta = read_json(Path(tokens_task.dir) / "meta.json")
        return int(meta["train_tokens"]) + int(meta.get("validation_tokens", 0))
    cap = source_max_tokens(source, needed)
    if cap is not None:
        return cap
    stats = source.text_stats(lang)
    return int(stats["chars"] / CHARS_PER_TOKEN) if stats else needed


def source_max_tokens(source: Any, needed: int) -> int | None:
    """How much text a tokens task takes: all of a bounded source, what the ladder needs (+5%) of a stream."""
    return None if getattr(source, "bounded", True) else int(needed * 1.05) + 1


def _summary(cfg: Config, presets, vocab, raw_len, targets_len, ladders, needed, langs, source, cells,
             deferred: list[int]) -> dict[str, Any]:
    from pipeline.budget import compute, mean_pair_tokens

    tokens_per_step = cfg.pretrain.batch_size * raw_len
    # every finetuning run, those still waiting for the first seed's learning rate included (one rate each)
    ft_dfs = list({c.finetune_id: c.df for c in cells if c.finetune_id}.values()) + deferred
    n_ft = len(ft_dfs)
    n_test = sum(source.pool_size(t.pair, split) or 0 if cfg.evaluate.test_size is None
                 else min(cfg.evaluate.test_size, source.pool_size(t.pair, split) or cfg.evaluate.test_size)
                 for t in cfg.sweep.tasks[:1] for split in cfg.evaluate.test_splits)
    c = compute(cfg, presets, vocab, targets_len, tokens_per_step, ladders, ft_dfs, mean_pair_tokens(source, cfg),
                n_test)
    models, pretrain_flops, ft_flops, steps, eval_flops = c
    return {
        "scale": cfg.scale,
        "vocab_size": vocab,
        "scale_description": cfg.scale_description,
        "data_source": cfg.data.source,
        "tasks": [{"pair": t.pair, "mixtures": [{"name": m.name, "weights": m.key(),
                                                  "alignment": round(m.alignment(t.src, t.tgt), 4)} for m in t.mixtures]}
                  for t in cfg.sweep.tasks],
        "raw_length": raw_len,
        "inputs_length": cfg.pretrain.inputs_length,
        "targets_length": targets_len,
        "tokens_per_step": tokens_per_step,
        "dp_ladder": list(cfg.pretrain.dp_ladder),
        "df_ladder": list(cfg.finetune.df_ladder),
        "seeds": list(cfg.finetune.seeds),
        "methods": list(cfg.finetune.methods),
        "lrs": list(cfg.finetune.lrs),
        "models": models,
        "tokens_needed": needed,
        "text_stats": {lang: source.text_stats(lang) for lang in langs},
        "n_finetune": n_ft,
        "n_cells": len(cells),
        "pretrain_flops": pretrain_flops,
        "finetune_flops_max": ft_flops,
        "finetune_steps": steps,
        "finetune_cell_steps_max": max(cfg.finetune.step_cap(df) for df in cfg.finetune.df_ladder),
        "evaluate_flops": eval_flops,
        "test_sentences": n_test,
    }


def write_plan(plan: Plan, root: Path) -> Path:
    path = Path(root) / "plans" / f"{plan.sweep}-{stable_hash([t.id for t in plan.tasks])}.json"
    atomic_write_json(path, plan.to_dict())
    return path


def task_state(task: Task) -> str:
    """done | failed | partial (started: running, or killed and resumable) | pending, from what is on disk."""
    if task.stage in READ_STAGES:
        return "done" if (Path(task.dir) / {"collect": "results.csv", "fit": "fits.csv", "report": "report.md"}[task.stage]).exists() else "pending"
    st = read_status(Path(task.dir))
    if st is None:
        return "partial" if Path(task.dir).exists() else "pending"
    if st.get("status") == "ok":
        return "done" if ladder_reached(task) else "partial"  # a pretraining run this ladder asks more of
    return st.get("status", "failed")


def ladder_reached(task: Task) -> bool:
    """A pretraining run has a finished checkpoint for every rung of the task's ladder (rungs.json lists those it
    keeps; a run shared with a sweep of another ladder may lack some, or stop below its top). Other stages: True."""
    if task.stage != "pretrain":
        return True
    from pipeline.pretrain import read_rungs

    ladder = task.spec.dp_ladder if isinstance(task.spec, Spec) else task.spec["dp_ladder"]  # typed, or plan.json's
    return {int(dp) for dp in ladder} <= set(read_rungs(task.dir))


def is_task_done(task: Task) -> bool:
    return task.stage not in READ_STAGES and is_done(Path(task.dir))
