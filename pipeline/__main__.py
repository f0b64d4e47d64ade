"""`python -m pipeline +sweep=en_de [scale=...] [stage=...]`: the Hydra app that plans and runs a sweep.

Bad configuration is refused before anything is written: one line naming the key and what is allowed,
exit status 2. Hydra's own errors (an unknown group option, a key that does not exist) are caught by
composing the config once with the compose API before Hydra's app runs.
"""

from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import ConfigError
from pipeline.logs import setup_logging

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("sweep", "scale", "model", "data", "executor", "tracking")
MAX_CHECKED_RUNS = 256  # runs of a multirun validated before any starts
log = logging.getLogger("pipeline")


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _expand(overrides: list[str]) -> list[list[str]]:
    """The runs of a Hydra multirun (`-m a=1,2 b=x,y`): one override list per combination, as Hydra's basic
    sweeper makes them. Hydra's own settings (hydra.*, hydra/...) are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = []
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.get_key_element().lstrip("+~").startswith(("hydra.", "hydra/")):
            continue
        if o.is_sweep_override():
            choices.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.product(*choices)]


def precheck(argv: list[str]) -> None:
    """Unknown group options and keys, and bad values, in one line and exit 2 (Hydra would print a block and
    exit 1), before Hydra creates anything. A multirun (`-m`) is prepared run by run (config, data, disk)
    before any starts."""
    overrides = [a for a in argv if not a.startswith("-") and "=" in a or a.startswith("~")]
    for a in overrides:
        key, _, value = a.lstrip("+~").partition("=")
        if key in GROUPS:
            for v in value.strip("[]").split(","):
                v = v.strip()
                if v and v not in _options(key):
                    fail(f"{key}={v}: unknown {key}; allowed: {', '.join(_options(key))}")
    flags = [a for a in argv if a.startswith("-")]
    multirun = bool({"-m", "--multirun"} & set(flags))
    if set(flags) - {"-m", "--multirun"}:
        return  # Hydra's own flags (--cfg, --info, --help, ...): let Hydra answer them
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pipeline.run import prepare

    try:
        runs = _expand(overrides) if multirun else [overrides]
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        fail(" ".join(str(e).split())[:300])
    if len(runs) > MAX_CHECKED_RUNS:
        return  # a very large sweep: each run still refuses bad values itself
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for run_overrides in runs:
            swept = [o for o in run_overrides if o not in overrides]  # the values this run of the sweep takes
            where = f" (in the run with {' '.join(swept)})" if multirun and swept else ""
            try:
                cfg = compose("config", overrides=run_overrides)
            except (HydraException, OmegaConfBaseException, ValueError) as e:
                fail(" ".join(str(e).split())[:300] + where)
            if multirun:  # a single run validates in main(); a sweep must not start a run before a bad one
                try:  # everything that can refuse a run, the checks against the data included (Df vs pool)
                    prepare(cfg)
                except ConfigError as e:
                    fail(f"{e}{where}")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from pipeline.run import Stopped, run

    setup_logging()
    try:
        code = run(cfg)
    except ConfigError as e:
        fail(str(e))
    except Stopped as e:
        # SystemExit, not a return: Hydra's multirun would start its next sweep after a return (and catches
        # exceptions), so a signal would end one sweep and not the command
        log.warning("%s", e)
        raise SystemExit(e.rc) from None
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
