"""Checks that turn a configuration mapping into typed values, or refuse it with one line naming the key and
what is allowed (`ConfigError`, exit status 2). Used where each piece of configuration is validated: the config
dataclasses (pipeline/config.py) and the executors' own options (e.g. SlurmOptions). A leaf: stdlib only."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; printed as one line, exit status 2."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def key_of(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def req(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(key, message)


def get(d: Mapping[str, Any], key: str, prefix: str, default: Any = dataclasses.MISSING) -> Any:
    if key in d and d[key] is not None:
        return d[key]
    if default is not dataclasses.MISSING:
        return default
    raise ConfigError(key_of(prefix, key), "is required")


def num(d: Mapping[str, Any], key: str, prefix: str, *, kind=float, lo=None, hi=None, lo_open=False,
         default: Any = dataclasses.MISSING):
    v = get(d, key, prefix, default)
    if v is None:
        return None
    k = key_of(prefix, key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(k, f"must be a number, got {v!r}")
    if kind is int:
        if float(v) != int(v):
            raise ConfigError(k, f"must be a whole number, got {v!r}")
        v = int(v)
    else:
        v = float(v)
    req(math.isfinite(v), k, f"must be finite, got {v!r}")
    if lo is not None:
        req(v > lo if lo_open else v >= lo, k, f"must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None:
        req(v <= hi, k, f"must be <= {hi}, got {v!r}")
    return v


def choice(d: Mapping[str, Any], key: str, prefix: str, allowed, default: Any = dataclasses.MISSING) -> str:
    v = get(d, key, prefix, default)
    req(v in allowed, key_of(prefix, key), f"unknown value {v!r}; allowed: {', '.join(map(str, allowed))}")
    return v


def boolean(d: Mapping[str, Any], key: str, prefix: str, default: Any = dataclasses.MISSING) -> bool:
    v = get(d, key, prefix, default)
    req(isinstance(v, bool), key_of(prefix, key), f"must be true or false, got {v!r}")
    return v


def auto_boolean(d: Mapping[str, Any], key: str, prefix: str, default: Any = dataclasses.MISSING) -> bool | None:
    """true, false, or `auto` (None: the code decides)."""
    v = get(d, key, prefix, default)
    req(isinstance(v, bool) or v == "auto", key_of(prefix, key), f"must be true, false or auto, got {v!r}")
    return None if v == "auto" else v


def as_list(d: Mapping[str, Any], key: str, prefix: str, default: Any = dataclasses.MISSING) -> list:
    v = get(d, key, prefix, default)
    req(isinstance(v, (list, tuple)), key_of(prefix, key), f"must be a list, got {v!r}")
    req(len(v) > 0, key_of(prefix, key), "must not be empty")
    return list(v)


def ladder(d: Mapping[str, Any], key: str, prefix: str) -> tuple[int, ...]:
    k = key_of(prefix, key)
    out = []
    for v in as_list(d, key, prefix):
        req(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v), k,
             f"must hold numbers, got {v!r}")
        req(v > 0, k, f"sizes must be positive, got {v!r}")
        out.append(int(round(v)))
    req(all(a < b for a, b in zip(out, out[1:])), k, f"must be strictly increasing, got {out}")
    return tuple(out)


def mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A config section that must be a mapping of its own keys (`pretrain=7` is refused, not a TypeError)."""
    v = get(d, key, "")
    req(isinstance(v, Mapping), key, f"must be a mapping of {key}.* settings, got {v!r}")
    return v


def known(d: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
    extra = sorted(set(d) - allowed)
    req(not extra, f"{prefix}.{extra[0]}" if extra else prefix,
         f"unknown key; allowed: {', '.join(sorted(allowed))}")
