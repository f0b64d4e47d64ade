"""`python -m pipeline +sweep=en_de [scale=...] [stage=...]`: the Hydra app that plans and runs a sweep.

Bad configuration is refused before anything is written: one line naming the key and what is allowed,
exit status 2. Hydra's own errors (an unknown group option, a key that does not exist) are caught by
composing the config once with the compose API before Hydra's app runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("sweep", "scale", "model", "data", "executor", "tracking")
log = logging.getLogger("pipeline")


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def precheck(argv: list[str]) -> None:
    """Unknown group options and keys, in one line and exit 2 (Hydra would print a block and exit 1)."""
    overrides = [a for a in argv if not a.startswith("-") and "=" in a]
    for a in overrides:
        key, _, value = a.lstrip("+~").partition("=")
        if key in GROUPS:
            for v in value.strip("[]").split(","):
                v = v.strip()
                if v and v not in _options(key):
                    fail(f"{key}={v}: unknown {key}; allowed: {', '.join(_options(key))}")
    if "-m" in argv or "--multirun" in argv or any(a.startswith("--") for a in argv):
        return  # sweeps and Hydra flags: let Hydra parse them
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        fail(" ".join(str(e).split())[:300])


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from pipeline.run import run

    setup_logging()
    try:
        code = run(cfg)
    except ConfigError as e:
        fail(str(e))
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
