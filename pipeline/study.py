"""What a sweep studies: the pretraining mixtures (with Isik et al.'s alignment score), the translation tasks
and the sweep that holds them, validated from the `sweep:` config by `SweepConfig.parse`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.validate import ConfigError
from pipeline.validate import get as _get
from pipeline.validate import known as _known
from pipeline.validate import num as _num
from pipeline.validate import req as _req


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

    @classmethod
    def parse(cls, d: Any, data_languages: tuple[str, ...], data_pairs: tuple[str, ...]) -> SweepConfig:
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
        return cls(name=str(name), tasks=tuple(tasks))
