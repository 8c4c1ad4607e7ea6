"""Where details go: a log file per run, so a person sees one plain line and support sees all."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path


def log_dir() -> Path:
    env = os.environ.get("LIFEBOAT_LOG_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/log/lifeboat")
    return Path.home() / ".cache" / "lifeboat"


def start_log(command: str) -> Path | None:
    """Attach a file handler to the root logger; returns the file's path (None if unwritable)."""
    directory = log_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"lifeboat-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command}.log"
        handler = logging.FileHandler(path)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return path
