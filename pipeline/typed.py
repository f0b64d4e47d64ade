"""Frozen dataclasses <-> plain JSON-safe data, both ways, from the dataclasses' own type hints.

`to_dict` writes a config or a stage spec into plan.json and a stage's config.yaml; `from_dict` rebuilds it
(`pipeline.task` does, before a stage runs), so a stage reads typed fields and never a dict. `Spec` is the base
of every stage's spec (pipeline/<stage>.py, beside its `run`). A leaf: imports nothing from the package.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def freeze(v: Any) -> Any:
    """Plain nested data -> hashable tuples (dicts become sorted (key, value) tuples)."""
    if isinstance(v, Mapping):
        return tuple((k, freeze(x)) for k, x in sorted(v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(freeze(x) for x in v)
    return v


def _pairs(obj: Any) -> bool:
    return isinstance(obj, tuple) and bool(obj) and all(
        isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in obj)


def to_dict(obj: Any) -> Any:
    """Frozen config objects -> plain JSON-safe data (for plan.json and config.yaml of a stage)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "raw"}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if _pairs(obj):
        return {k: to_dict(v) for k, v in obj}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    return obj


def from_dict(cls: type[T], data: Any) -> T:
    """The inverse of `to_dict` for a dataclass `cls`: each field converted to its annotated type."""
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: _convert(hints[f.name], data[f.name])
                  for f in dataclasses.fields(cls) if f.init and f.name in data})


def _convert(tp: Any, v: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None:
            return None
        tp = next(a for a in args if a is not type(None))
        return _convert(tp, v)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, v)
    if tp is Path:
        return Path(v)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            inner = args[0]
            if typing.get_origin(inner) is tuple and isinstance(v, Mapping):  # (key, value) pairs stored as a dict
                return freeze(v)
            return tuple(_convert(inner, x) for x in v)
        return tuple(_convert(a, x) for a, x in zip(args, v))
    if origin in (dict, Mapping) and isinstance(v, Mapping):
        return {k: _convert(args[1], x) if args else x for k, x in v.items()}
    return v


class Spec:
    """A stage's input, as the planner built it: a frozen dataclass subclass whose field names are the keys of
    its plan.json form. `config`, where a stage has one, is its identity slice (the dictionary its directory's
    hash is made of), recorded in config.yaml."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        return from_dict(cls, data)
