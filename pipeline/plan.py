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
import math
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
from pipeline.config import Config, ConfigError, to_dict
from pipeline.results import Cell, ReadSpec, Scale
from pipeline.stages import LEVELS, READ_STAGES
from pipeline.study import Mixture
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


def _pretrain_identity(cfg: Config) -> dict[str, Any]:
    """What defines a pretraining run: not its length (the schedule does not depend on it, so a longer
    ladder resumes the same run), not how it is split over processes or logged."""
    d = to_dict(cfg.pretrain)
    # max_epochs is a limit like the ladder: the data of a step does not depend on it (pipeline.mixture)
    for k in ("dp_ladder", "micro_batch_size", "distributed", "log_every", "checkpoint_minutes", "compile",
              "activation_checkpointing", "max_epochs"):
        d.pop(k)
    return d


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


def _finetune_identity(cfg: Config) -> dict[str, Any]:
    d = to_dict(cfg.finetune)
    for k in ("df_ladder", "seeds", "methods", "lrs", "seeds_df_max", "distributed", "activation_checkpointing",
              "micro_batch_tokens", "lr_search"):
        d.pop(k)
    if d["dtype"] == "auto":  # what auto chose is not the cell's identity (it depends on the processor)
        d.pop("dtype")
    return d


def precision_record(cfg: Config) -> Path:
    """Where a sweep's `auto` precision is recorded once decided (delete it to probe again)."""
    return cfg.paths.artifacts / "plans" / f"precision-{cfg.sweep.name}-{cfg.scale}.json"


def sweep_precision(cfg: Config, presets) -> dict[str, Any]:
    """The precision of the sweep's pretraining and of its cells, decided once for the whole sweep.

    Forced values (`fp32`, `bf16`) are taken as they are. `auto` is one decision for every task: with the local
    executor the planner measures it here (pipeline.precision's probe at the sweep's largest model) and
    `record_precision` writes it beside the plans, so a relaunch, a resume or a longer ladder keeps the first
    decision instead of probing again; elsewhere (SLURM) it is left to each task on its node (bf16 on GPUs
    that support it). The stage hashes hold what was asked (`auto`), never what a processor chose, and every
    cell records the dtype it ran in (results.csv `dtype`), so a study that mixed them says so."""
    asked = {"pretrain": cfg.pretrain.dtype, "finetune": cfg.finetune.dtype}
    out: dict[str, Any] = dict(asked, asked=dict(asked), rule="forced", probe=None, recorded=False)
    if "auto" not in asked.values():
        return out
    if cfg.executor.kind != "local":
        return out | {"rule": "auto: decided by each task on its node (bf16 on a GPU that supports it)"}
    rec = precision_record(cfg)
    if rec.exists():
        d = read_json(rec)
        return out | {k: d["dtype"] if v == "auto" else v for k, v in asked.items()} | {
            "rule": f"auto: {d['dtype']}, as first decided for this sweep ({rec.name}: {d['rule']})",
            "probe": d.get("probe"), "recorded": True}
    import torch

    from pipeline.precision import ProbeShape, resolve_dtype

    big = max(presets, key=lambda p: (p.d_model * p.d_ff, p.d_model))
    dtype, info = resolve_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu",
                                ProbeShape(big.d_model, big.d_ff, cfg.tokenizer.vocab_size))
    return out | {k: dtype if v == "auto" else v for k, v in asked.items()} | {
        "rule": f"auto: {info['rule']}", "probe": info, "decided": dtype}


def record_precision(cfg: Config, plan: Plan) -> None:
    """Write the sweep's freshly decided `auto` precision (see sweep_precision) before its tasks run."""
    p = plan.summary.get("precision") or {}
    if p.get("decided") and not p.get("recorded"):
        atomic_write_json(precision_record(cfg), {"dtype": p["decided"], "rule": p["rule"], "probe": p["probe"]})


# --------------------------------------------------------------------------------------------- plan


def build_plan(cfg: Config, source: Any) -> Plan:
    """Expand the sweep into tasks. `source` is a pipeline.sources.Source (for identity and sizes)."""
    from pipeline.collect import CollectSpec
    from pipeline.evaluate import EvaluateSpec
    from pipeline.finetune import FinetuneSpec, Rung
    from pipeline.mixture import mixture_counts
    from pipeline.pretrain import InitSpec, PretrainSpec
    from pipeline.span_corruption import compute_lengths
    from pipeline.tokenizer import TokenizerSpec
    from pipeline.tokens import TokensSpec

    art = cfg.paths.artifacts
    tasks: dict[str, Task] = {}
    cache = str(cfg.paths.cache)

    def add(stage: str, name: str, deps: list[Task], spec: Spec) -> Task:
        """A task named by the hash of its spec's identity slice and its inputs' hashes."""
        d = stage_dir(art, stage, name, spec.config, [dir_hash(Path(x.dir)) for x in deps])
        t = Task(id=f"{stage}/{d.name}", stage=stage, name=name, dir=str(d), deps=tuple(x.id for x in deps),
                 spec=spec.to_dict())
        tasks.setdefault(t.id, t)
        return tasks[t.id]

    data_id = source.identity()
    # The vocabulary is learnt from the languages the study reads (its mixtures and its tasks' two sides)
    tok_slice = {"tokenizer": to_dict(cfg.tokenizer), "data": data_id, "languages": cfg.sweep.languages()}
    tok = add("tokenizer", f"tok-{cfg.tokenizer.algorithm}{cfg.tokenizer.vocab_size}", [],
              TokenizerSpec(config=tok_slice, data=cfg.data, cache=cache))
    tok_dir = str(Path(tok.dir) / "tokenizer")

    raw_len, targets_len = compute_lengths(cfg.pretrain.inputs_length, cfg.pretrain.noise_density,
                                           cfg.pretrain.mean_noise_span_length)
    tokens_per_step = cfg.pretrain.batch_size * raw_len

    def steps_for(dp: int) -> int:
        return math.ceil(dp / tokens_per_step)

    # Languages whose text is tokenized: every mixture's languages and every task's (for upstream losses).
    langs = cfg.sweep.languages()
    needed = {lang: 0 for lang in langs}  # tokens each language must supply without repetition
    ladders: dict[tuple, tuple[int, ...]] = {}
    for t in cfg.sweep.tasks:
        ladder = tuple(d for d in cfg.pretrain.dp_ladder if t.dp_max is None or d <= t.dp_max)
        if not ladder:
            raise ConfigError(f"sweep.tasks.{t.pair}.dp_max", f"{t.dp_max} is below the smallest rung {cfg.pretrain.dp_ladder[0]}")
        for m in t.mixtures:
            key = m.weights
            ladders[key] = tuple(sorted(set(ladders.get(key, ())) | set(ladder)))
    for m in cfg.sweep.mixtures():
        counts = mixture_counts(m, cfg.pretrain.batch_size)
        top = steps_for(max(ladders[m.weights]))
        for lang, n in counts.items():
            needed[lang] = max(needed[lang], top * n * raw_len)
    tokens = {}
    for lang in langs:
        max_tokens = source_max_tokens(source, needed[lang])
        tokens[lang] = add("tokens", f"tokens-{lang}", [tok], TokensSpec(
            config={"lang": lang, "data": data_id, "max_tokens": max_tokens, "seed": cfg.seed},
            lang=lang, tokenizer_dir=tok_dir, data=cfg.data, cache=cache, max_tokens=max_tokens, seed=cfg.seed,
            tokens=cfg.tokens))
    # Data too small for the sweep: refused before any compute, except by stage=plan, which prints the budget
    # anyway (the paper's scale planned against the offline corpus) and says what running it would meet.
    problems: list[ConfigError] = []
    epochs: dict[str, float] = {}  # passes over each language's unique text the ladder makes
    max_epochs = cfg.pretrain.max_epochs
    for lang in langs:
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
    if problems and cfg.stage != "plan":
        raise problems[0]

    # The data is fine: now the model code (seconds to import) for parameter counts and FLOPs.
    from pipeline.model import load_preset

    presets = [load_preset(m.as_dict()) for m in cfg.models]

    vocab = cfg.tokenizer.vocab_size
    precision = sweep_precision(cfg, presets)
    inits, pretrains = {}, {}
    pt_id = _pretrain_identity(cfg)
    for preset in presets:
        p = dataclasses.asdict(preset)
        inits[preset.name] = add("init", f"init-{preset.name}", [tok], InitSpec(
            config={"model": p, "seed": cfg.seed}, model=preset, seed=cfg.seed, tokenizer_dir=tok_dir))
        for m in cfg.sweep.mixtures():
            val_langs = sorted(set(m.languages) | {lang for t in cfg.sweep.tasks if m in t.mixtures for lang in (t.tgt,)})
            deps = [tok, inits[preset.name]] + [tokens[lang] for lang in sorted(set(m.languages) | set(val_langs))]
            pretrains[(m.weights, preset.name)] = add("pretrain", f"pt-{m.name}-{preset.name}", deps, PretrainSpec(
                config={"model": p, "mixture": m.key(), "pretrain": pt_id, "seed": cfg.seed},
                model=preset, mixture=m.key(), mixture_name=m.name, pretrain=cfg.pretrain,
                dp_ladder=ladders[m.weights], seed=cfg.seed, tokenizer_dir=tok_dir, init_dir=inits[preset.name].dir,
                tracking=cfg.tracking,
                tokens_dirs={lang: tokens[lang].dir for lang in sorted(set(m.languages) | set(val_langs))},
                raw_length=raw_len, targets_length=targets_len, dtype=precision["pretrain"]))

    ft_id = _finetune_identity(cfg)
    cells: list[Cell] = []
    searched: dict[tuple, dict[float, Task]] = {}  # (pair, model, rung, Df, method) -> the first seed's cell per rate
    deferred: list[int] = []  # Df of each finetuning run waiting for the first seed's search (lr_search=first_seed)
    for t in cfg.sweep.tasks:
        for preset in presets:
            rungs: list[tuple[Mixture | None, int, Task]] = [(None, 0, inits[preset.name])]
            ladder = tuple(d for d in cfg.pretrain.dp_ladder if t.dp_max is None or d <= t.dp_max)
            for m in t.mixtures:
                rungs += [(m, dp, pretrains[(m.weights, preset.name)]) for dp in ladder]
            for m, dp, parent in rungs:
                steps = steps_for(dp) if dp else 0
                rung = Rung(parent_dir=parent.dir, dp_rung=dp, steps=steps)
                for df in cfg.finetune.df_ladder:
                    for seed in seeds_at(cfg, df):
                        for method in cfg.finetune.methods:
                            key = (t.pair, preset.name, parent.id, dp, df, method)
                            lrs, lr_from = cfg.finetune.lrs, None
                            if reuse_lr(cfg, seed):
                                lr_from = cfg.finetune.seeds[0]
                                lrs = searched_lr(searched[key])
                                if not lrs:
                                    deferred.append(df)
                                    for mix in ([m] if m else list(t.mixtures)):
                                        cells.append(Cell(
                                            task=t.pair, src=t.src, tgt=t.tgt, mixture=mix.name,
                                            alignment=round(mix.alignment(t.src, t.tgt), 6), model=preset.name,
                                            dp_rung=dp, dp_tokens=steps * tokens_per_step, pretrain_steps=steps,
                                            df=df, seed=seed, method=method, lr=math.nan, finetune_id="",
                                            evaluate_id="", lr_from=lr_from))
                            for lr in lrs:
                                cell_name = f"ft-{t.pair}-{m.name if m else 'init'}-{preset.name}-dp{dp}-df{df}-s{seed}-{method}"
                                ft = add("finetune", cell_name, [parent], FinetuneSpec(
                                    config={"finetune": ft_id, "pair": t.pair,
                                            "checkpoint": {"dp_rung": dp, "steps": steps}, "df": df, "seed": seed,
                                            "method": method, "lr": lr, "data": data_id},
                                    finetune=cfg.finetune, pair=t.pair, src=t.src, tgt=t.tgt, checkpoint=rung, df=df,
                                    seed=seed, method=method, lr=lr, model=preset, data=cfg.data, cache=cache,
                                    tokenizer_dir=tok_dir, tracking=cfg.tracking, dtype=precision["finetune"]))
                                if seed == cfg.finetune.seeds[0]:
                                    searched.setdefault(key, {})[lr] = ft
                                ev = add("evaluate", cell_name.replace("ft-", "ev-", 1), [ft], EvaluateSpec(
                                    config={"evaluate": to_dict(cfg.evaluate), "pair": t.pair, "data": data_id},
                                    evaluate=cfg.evaluate, pair=t.pair, src=t.src, tgt=t.tgt, finetune_dir=ft.dir,
                                    task_prefix=cfg.finetune.task_prefix,
                                    max_source_length=cfg.finetune.max_source_length, data=cfg.data, cache=cache,
                                    tracking=cfg.tracking))
                                for mix in ([m] if m else list(t.mixtures)):  # the baseline belongs to every mixture
                                    cells.append(Cell(
                                        task=t.pair, src=t.src, tgt=t.tgt, mixture=mix.name,
                                        alignment=round(mix.alignment(t.src, t.tgt), 6), model=preset.name,
                                        dp_rung=dp, dp_tokens=steps * tokens_per_step, pretrain_steps=steps, df=df,
                                        seed=seed, method=method, lr=lr, finetune_id=ft.id, evaluate_id=ev.id,
                                        lr_from=lr_from))

    evals = [x for x in tasks.values() if x.stage == "evaluate"]
    collect = Task(id=f"collect/{cfg.sweep.name}", stage="collect", name=f"collect-{cfg.sweep.name}",
                   dir=str(cfg.paths.reports / cfg.sweep.name), deps=tuple(e.id for e in evals),
                   spec=CollectSpec(**vars(_read_spec(cfg)), cells=tuple(cells),
                                    dirs={x.id: x.dir for x in tasks.values() if x.stage in ("finetune", "evaluate")}
                                    ).to_dict())
    ordered = sorted(tasks.values(), key=_run_order) + [collect, *_fit_report(cfg, collect.id)]

    stored = {lang: stored_tokens(source, lang, tokens[lang], needed[lang]) for lang in langs}
    summary = _summary(cfg, presets, vocab, raw_len, targets_len, ladders, needed, langs, source, cells, deferred)
    summary["data_problems"] = [str(e) for e in problems]
    summary["precision"] = precision
    summary["lr_search"] = cfg.finetune.lr_search
    summary["lr_deferred"] = len(deferred)
    summary["pretrain_epochs"] = {lang: round(e, 4) for lang, e in epochs.items()}
    summary["pretrain_max_epochs"] = max_epochs
    summary["tokens_stored"] = stored
    return Plan(sweep=cfg.sweep.name, tasks=ordered, cells=cells, summary=summary)


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
    return "done" if st.get("status") == "ok" else st.get("status", "failed")


def is_task_done(task: Task) -> bool:
    return task.stage not in READ_STAGES and is_done(Path(task.dir))
