"""Where the gateway keeps its state, resolved the same way by the config loader and by the relock
step that runs before the config loader has been imported (so it may use the standard library only)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STATE_DIR = Path("/var/lib/door-edge")


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=, first entry), else /var/lib/door-edge."""
    env = os.environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else DEFAULT_STATE_DIR


def state_dir(configured: str | os.PathLike[str] | None, config_dir: Path) -> Path:
    """`gateway.state_dir` as written in the config (relative to the config file), or the default."""
    if configured is None:
        return default_state_dir()
    p = Path(configured)
    return p if p.is_absolute() else (config_dir / p).resolve()
