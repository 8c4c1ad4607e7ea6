"""The writer lock: one backup at a time. Readers (verify, restore, listing) never lock."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from recovery.errors import RepositoryError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WriterLock:
    def __init__(self, root: Path):
        self.path = root / "lock"
        self.held = False

    def acquire(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder and holder.get("host") == me["host"] and not _alive(int(holder.get("pid", 0))):
                    self.path.unlink(missing_ok=True)   # left by a killed backup on this machine
                    continue
                who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
                raise RepositoryError(
                    f"the repository is busy: a backup by {who} holds {self.path}; "
                    "wait for it, or delete that file if no backup is running"
                ) from None
            except OSError as exc:
                raise RepositoryError(f"cannot lock the repository: {exc.strerror}") from exc
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise RepositoryError(f"cannot take the repository lock {self.path}")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
