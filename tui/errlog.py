"""Where the details of a failure go: a log file whose path the error dialog shows.

Directory: ``$LIFEBOAT_LOG_DIR``, else /var/log/lifeboat when root, else ~/.cache/lifeboat.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from pathlib import Path

from recovery.logsetup import log_dir

LOG_NAME = "lifeboat-tui.log"


def log_path() -> Path:
    return log_dir() / LOG_NAME


def write(text: str) -> Path | None:
    """Append ``text`` with a time stamp; None when even the log cannot be written."""
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(f"--- {datetime.now().isoformat(timespec='seconds')}\n{text.rstrip()}\n")
    except OSError:
        return None
    return path


def record(exc: BaseException, context: str) -> Path | None:
    """Log ``exc`` with its traceback under ``context``; returns the log file's path."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return write(f"{context}: {exc}\n{tb}")
