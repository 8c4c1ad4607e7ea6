"""Repository locks. Backups take a shared lock (many machines back up into one repository
at once), and so do restores and verify while they read the data (prune must not delete or
repack a pack under them); only operations that delete data take the exclusive one. Listing
never locks.

    lock                  the exclusive lock (one object; older Lifeboat backups wrote it too)
    lock/<holder>.json    one shared lock per running backup, restore or verify

Each lock says who holds it and until when: a holder rewrites it every third of its lifetime,
so a lock whose writer crashed or lost the network expires. A lock is stale when it expired,
or when it names a process of this machine that no longer runs; a stale lock is removed and
reported (logged, and kept in `broken`). A live holder's lock is never broken. On a local
folder, `lock` is a file or a folder, never both, which makes the two kinds exclusive of each
other there; on an object store each side checks for the other after writing its own.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid

from recovery.errors import BusyError, RepositoryError
from recovery.host.tools import pid_alive
from recovery.storage.base import NoPermissionError, Storage, StorageError, UnreachableError
from recovery.units import env_seconds

log = logging.getLogger(__name__)

EXCLUSIVE = "lock"
SHARED_PREFIX = "lock/"
DEFAULT_TTL = 600.0


def ttl_seconds() -> float:
    return env_seconds("LIFEBOAT_LOCK_TTL", DEFAULT_TTL, 1.0)



def stale_reason(holder: dict, now: float | None = None) -> str | None:
    """Why a lock's holder is gone, or None when it may still be working."""
    now = time.time() if now is None else now
    host = holder.get("host")
    try:
        pid = int(holder.get("pid", 0))
    except (TypeError, ValueError):
        pid = 0
    if host == os.uname().nodename and pid and not pid_alive(pid):
        return f"process {pid} on {host} is no longer running"
    expires = holder.get("expires")
    if isinstance(expires, (int, float)) and now > expires:
        return f"it expired {int(now - expires)} s ago (its writer on {host} stopped refreshing it)"
    return None


def who(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"process {holder.get('pid')} on {holder.get('host')}"


# How long a write already sent may take to land in an object store: an exclusive lock taken
# there is read back at once and again after this pause before it counts as held.
SETTLE_SECONDS = 2.0


class Lock:
    def __init__(self, storage: Storage, exclusive: bool = False, ttl: float | None = None,
                 purpose: str = "backup"):
        self.storage = storage
        self.exclusive = exclusive
        self.purpose = purpose            # said to whoever waits for this lock ("backup", "restore", ...)
        self.ttl = ttl_seconds() if ttl is None else ttl
        self.token = uuid.uuid4().hex[:12]      # tells this holder's lock object from any other
        me = f"{os.uname().nodename}-{os.getpid()}-{self.token}"
        self.name = EXCLUSIVE if exclusive else f"{SHARED_PREFIX}{me}.json"
        self.held = False
        self.broken: list[str] = []       # stale locks removed while taking this one
        self._since = time.time()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    # -- what is there ----------------------------------------------------------------
    def _read(self, name: str) -> dict | None:
        """A lock object's content; {} when it exists but cannot be parsed; None when absent."""
        try:
            raw = self.storage.read(name)
        except (FileNotFoundError, IsADirectoryError):
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _break(self, name: str, holder: dict, reason: str) -> None:
        line = f"removed a stale repository lock held by {who(holder)}: {reason}"
        log.warning(line)
        self.broken.append(line)
        self.storage.delete(name)

    def _exclusive_holder(self) -> dict | None:
        """The live holder of the exclusive lock (a stale one is broken), or None."""
        holder = self._read(EXCLUSIVE)
        if holder is None:
            return None
        reason = stale_reason(holder) if holder else None
        if reason:
            self._break(EXCLUSIVE, holder, reason)
            return None
        return holder

    def _shared_holders(self) -> list[dict]:
        live = []
        for info in self.storage.list(SHARED_PREFIX):
            if info.name == self.name:
                continue
            holder = self._read(info.name)
            if holder is None:
                continue
            reason = stale_reason(holder) if holder else None
            if reason:
                self._break(info.name, holder, reason)
            else:
                live.append(holder)
        return live

    @staticmethod
    def _refuse_if_backups(others: list[dict]) -> None:
        if others:
            names = ", ".join(f"{h.get('purpose', 'backup')} by {who(h)}" for h in others)
            raise BusyError(f"the repository is busy: backups or restores are running ({names}); "
                                  "wait for them to finish")

    def _content(self) -> bytes:
        now = time.time()
        return json.dumps({
            "host": os.uname().nodename, "pid": os.getpid(),
            "mode": "exclusive" if self.exclusive else "shared", "purpose": self.purpose,
            "since": self._since, "refreshed": now, "expires": now + self.ttl, "token": self.token,
        }).encode()

    def _busy(self, holder: dict | None) -> BusyError:
        return BusyError(
            f"the repository is busy: {who(holder)} holds its lock "
            f"({self.storage.where(EXCLUSIVE)}) to delete data; wait for it to finish, or delete "
            "that lock if nothing is running there")

    # -- taking and leaving ------------------------------------------------------------
    def acquire(self) -> None:
        try:
            self._acquire()
        except (UnreachableError, NoPermissionError):
            raise          # the server is away, or refuses the folder: its line says so already
        except StorageError as exc:
            raise RepositoryError(f"cannot lock the repository: {exc.message}") from exc
        self._refresher = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._refresher.start()

    def _acquire(self) -> None:
        if self.exclusive:
            holder = self._exclusive_holder()
            if holder is not None:
                raise self._busy(holder)
            self._refuse_if_backups(self._shared_holders())
            self.storage.remove_folder(SHARED_PREFIX)     # emptied of stale locks (a folder)
            if not self.storage.write_new(EXCLUSIVE, self._content()):
                self._refuse_if_backups(self._shared_holders())
                raise self._busy(self._read(EXCLUSIVE))
            if not self.storage.atomic_create:
                # Another taker may have found no lock either and written its own over ours (or
                # be about to): the object names the winner once every write in flight landed.
                for pause in (0.0, SETTLE_SECONDS):
                    time.sleep(pause)
                    holder = self._read(EXCLUSIVE)
                    if not holder or holder.get("token") != self.token:
                        raise self._busy(holder)
            self.held = True
            others = self._shared_holders()
            if others:
                self.release()
                self._refuse_if_backups(others)
            return
        self._shared_holders()            # stale shared locks are reported and removed
        for _ in range(3):
            holder = self._exclusive_holder()
            if holder is not None:
                raise self._busy(holder)
            try:
                self.storage.write(self.name, self._content())
            except StorageError:
                if self._exclusive_holder() is None:
                    raise                 # the store refuses writes (read-only, full): not busy
                continue                  # the exclusive lock appeared meanwhile (local folder)
            self.held = True
            holder = self._exclusive_holder()
            if holder is not None:
                self.release()
                raise self._busy(holder)
            return
        raise self._busy(self._read(EXCLUSIVE))

    def _refresh(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.storage.write(self.name, self._content())
            except Exception as exc:      # noqa: BLE001 - the next round tries again
                log.warning("cannot refresh the repository lock: %s", exc)

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None and self._refresher is not threading.current_thread():
            self._refresher.join()
            self._refresher = None
        if self.held:
            self.held = False
            try:
                self.storage.delete(self.name)
                if not self.exclusive:
                    self.storage.remove_folder(SHARED_PREFIX)
            except StorageError as exc:
                log.warning("cannot remove the repository lock: %s", exc)


    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_report(storage: Storage) -> list[dict]:
    """Every lock in a repository with its holder and whether it is stale (for people)."""
    out = []
    names = [EXCLUSIVE] + [i.name for i in storage.list(SHARED_PREFIX)]
    for name in names:
        try:
            raw = storage.read(name)
        except (FileNotFoundError, IsADirectoryError):
            continue
        try:
            holder = json.loads(raw)
        except ValueError:
            holder = {}
        if not isinstance(holder, dict):   # valid JSON of another shape is as unreadable
            holder = {}
        out.append({"name": name, "holder": who(holder), "since": holder.get("since"),
                    "stale": stale_reason(holder) if holder else "unreadable"})
    return out


# The name older code used; a write session takes the shared lock.
WriterLock = Lock
