"""Logging as a composite of backends: a JSONL file always (the source of truth), wandb when asked.

The loop calls `tracker.log(metrics, step)` and nothing else; backends are imported lazily and closed in
a `finally`, so a failed task leaves nothing open. The wandb run id derives from the task's hash, so a
requeued job continues its run instead of starting a new one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from pipeline.typed import to_dict

log = logging.getLogger(__name__)


class Backend:
    def log(self, metrics: dict[str, Any], step: int) -> None: ...
    def log_image(self, key: str, path: Path) -> None: ...
    def close(self) -> None: ...


class JsonlBackend(Backend):
    """Appends one JSON object a line. On resume, lines past the resumed step are dropped first, so the
    curve of a killed-and-resumed run equals the uninterrupted one."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [ln for ln in self.path.read_text().splitlines() if _step_of(ln) is not None and _step_of(ln) <= resume_step]
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            os.replace(tmp, self.path)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()

    def log_image(self, key: str, path: Path) -> None:
        # the figure itself is a file beside this one: the line says which key it was logged under
        self.f.write(json.dumps({"image": key, "path": str(path)}) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class WandbBackend(Backend):
    def __init__(self, run_id: str, name: str, config: dict[str, Any], project: str, entity: str | None, mode: str,
                 directory: Path, group: str | None = None):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(id=run_id, name=name, project=project, entity=entity, mode=mode, config=config,
                              dir=str(directory), group=group, resume="allow", reinit="create_new")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def log_image(self, key: str, path: Path) -> None:
        self.run.log({key: self.wandb.Image(str(path))})

    def close(self) -> None:
        self.run.finish()


class Tracker:
    def __init__(self, backends: list[Backend]):
        self.backends = backends

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for b in self.backends:
            b.log(metrics, step)

    def log_image(self, key: str, path: Path) -> None:
        for b in self.backends:
            b.log_image(key, path)

    def close(self) -> None:
        for b in self.backends:
            try:
                b.close()
            except Exception as e:  # closing must never mask the task's own error
                log.warning("closing %s failed: %s", type(b).__name__, e)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_tracker(run_dir: Path, tracking: Any, *, run_id: str, name: str,
                 config: dict[str, Any] | None = None, resume_step: int | None = None, group: str | None = None,
                 file: str = "metrics.jsonl", enabled: bool = True) -> Tracker:
    """`enabled=False` (non-zero ranks) gives a tracker that logs nothing."""
    if not enabled:
        return Tracker([])
    backends: list[Backend] = [JsonlBackend(Path(run_dir) / file, resume_step)]
    tracking = to_dict(tracking or {})  # a TrackingConfig, or its plan.json form
    if tracking.get("backend") == "wandb" and tracking.get("mode", "offline") != "disabled":
        backends.append(WandbBackend(run_id=run_id, name=name, config=config or {}, project=tracking.get("project", "downstream-scaling"),
                                     entity=tracking.get("entity"), mode=tracking.get("mode", "offline"),
                                     directory=Path(run_dir), group=group))
    return Tracker(backends)


def read_stage_run_id(stage: str, spec: dict[str, Any]) -> str:
    """The wandb run id of a fit or report task: a hash of what it reads (sweep, table, fit settings), so a
    rerun of the same task continues its run and a different table starts another."""
    from pipeline.artifacts import stable_hash

    return f"{stage}-{spec.get('sweep')}-{stable_hash({k: v for k, v in spec.items() if k != 'tracking'})}"


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v
