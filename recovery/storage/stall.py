"""An NFS server that stopped answering: noticed from the mount's own counters, and the calls
waiting on it ended, so the backup says so instead of sitting still.

The kernel's NFS client gives a request up (`softerr`) only on some paths. Over a TCP
connection that stays up while the server is frozen (a hung NAS, a stopped process), or while
it keeps reconnecting to one that is gone, an NFSv4 request can wait for ever, and with it the
backup, without a word. The watch reads the transport's count of replies received for this
mount (/proc/self/mountstats): when calls of ours are under way and no reply has come for
`stall_seconds()`, it force-unmounts the place (netmounts.force_unmount). For NFS that ends
every waiting request with EIO and leaves the mount where it is (it is held open); the calls
then fail as a dropped connection does, and storage/retry.py waits, tries again, and after
its window gives its one line. A slow server is not stalled: each reply counts as progress.

The kernel does not always let go: seen in the live system, a request ended this way can be
followed at once by another the client issues itself (its state recovery), which the next
forced unmount does not end. A call of ours can then never return, nor the process end (its
threads are joined at exit). So when the server has shown no progress for the retry window
after the first cut, the watch gives up itself: `on_give_up(line)`, which the command line and
the live system's restore set to say the line and end the process (`end_when_held`).

Calls of ours are those the mounted storage wraps, and also any thread of this process the
kernel shows waiting inside its NFS client (`waits_in_nfs`): closing a file, a look at the
mount point, anything the wrappers do not see, would otherwise wait unwatched.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from recovery.units import env_seconds

log = logging.getLogger(__name__)

DEFAULT_STALL_SECONDS = 60.0
POLL_SECONDS = 1.0
# Set by a program that can end itself, or its job, when the server holds its calls for good
# (the CLI, the TUI): on_give_up(line), called once the places are let go of
# (mounted.let_go_all). Without it the watch goes on ending requests and waiting.
on_give_up: Callable[[str], None] | None = None


def end_when_held(report: Callable[[str], object]) -> None:
    """For a program that ends with its run (the CLI, the live system's unattended restore):
    when a server holds the calls for good, `report(line)` as any error is, and end the
    process at once, its waiting threads could never be joined. A restore cut off so leaves
    its target marked incomplete, as any stopped one."""
    global on_give_up

    def end(message: str) -> None:
        from recovery.storage.base import UnreachableError

        report(message)
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(UnreachableError.exit_code)

    on_give_up = end


def stall_seconds() -> float:
    return env_seconds("LIFEBOAT_STALL_SECONDS", DEFAULT_STALL_SECONDS, 1.0)


def nfs_replies(mountpoint: Path, stats: str | None = None) -> int | None:
    """Replies the NFS client has received for the mount at `mountpoint` (the `recvs` field of
    its `xprt:` line in /proc/self/mountstats), or None when it is not an NFS mount there."""
    if stats is None:
        try:
            stats = Path("/proc/self/mountstats").read_text()
        except OSError:
            return None
    # mountstats escapes a space in a path as \040, as /proc/mounts does
    wanted = str(mountpoint).replace(" ", "\\040")
    inside = False
    for line in stats.splitlines():
        if line.startswith("device "):
            words = line.split()
            inside = (len(words) >= 8 and words[3] == "on" and words[4] == wanted
                      and words[7].startswith("nfs"))
            continue
        if inside and line.strip().startswith("xprt:"):
            fields = line.split()
            # xprt: tcp <port> <bind> <connect> <connect time> <idle> <sends> <recvs> ...
            # xprt: udp <port> <bind> <sends> <recvs> ...
            at = {"tcp": 8, "rdma": 8, "udp": 5}.get(fields[1] if len(fields) > 1 else "")
            if at is not None and len(fields) > at:
                return int(fields[at])
    return None


def waits_in_nfs(stack: str) -> bool:
    """A thread's kernel stack (/proc/.../stack) or its wait channel (wchan) is inside the NFS
    client: its sunrpc or nfs functions (as modules or built in)."""
    return "nfs" in stack or "sunrpc" in stack or "rpc_" in stack


def threads_in_nfs() -> bool:
    """Some thread of this process, other than the caller, waits inside the NFS client. The
    kernel stack needs root (as an NFS mount does); without it the wait channel is read."""
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return False
    for tid in tids:
        if tid == str(me):
            continue
        for what in ("stack", "wchan"):
            try:
                with open(f"/proc/self/task/{tid}/{what}") as f:
                    text = f.read()
            except OSError:
                continue              # not root (stack), or the thread has ended
            if not text.strip():
                continue              # a kernel that keeps no stacks: its wait channel then
            if waits_in_nfs(text):
                return True
            break
    return False


class StallWatch:
    """Calls of ours under way on one mount, and a thread that `cut()`s when they wait
    `seconds` with no `progress()` (a counter that grows with each reply from the server)."""

    def __init__(self, progress: Callable[[], int | None], cut: Callable[[], None], seconds: float | None = None,
                 poll: float = POLL_SECONDS, give_up: Callable[[float], None] | None = None,
                 give_up_after: float = 0.0, held: Callable[[], bool] | None = None):
        self.progress = progress
        self.cut = cut
        self.held = held                     # held(): a wait the calls of ours do not count (the kernel's view)
        self.seconds = stall_seconds() if seconds is None else seconds
        self.poll = poll
        self.give_up = give_up               # give_up(seconds without progress), once
        self.give_up_after = give_up_after   # counted from the first cut
        self.cuts = 0
        self._busy = 0
        self._busy_since = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-watch", daemon=True)
        self._thread.start()

    @contextmanager
    def call(self):
        with self._lock:
            if self._busy == 0:
                self._busy_since = time.monotonic()
            self._busy += 1
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1

    def _run(self) -> None:
        last = self._progress()
        since = time.monotonic()           # when the server last showed progress, or we last waited on nothing
        first_cut = None                   # the first cut since the server last showed progress
        held_since = None                  # when a wait outside the calls of ours was first seen
        while not self._stop.wait(self.poll):
            now = time.monotonic()
            seen = self._progress()
            with self._lock:
                idle, busy_since = self._busy == 0, self._busy_since
            if idle and self._held():
                held_since = held_since or now
                idle, busy_since = False, held_since
            else:
                held_since = None
            if seen != last:
                last, since, first_cut = seen, now, None
                continue
            if idle:
                since = now
                continue
            # a wait is counted from the later of the last progress and the first call under way
            if now - max(since, busy_since) >= self.seconds:
                self.cuts += 1
                log.warning("the server has not answered for %.0f s: ending the calls waiting on it", now - since)
                try:
                    self.cut()
                except Exception:          # noqa: BLE001 - the watch must go on watching
                    log.exception("ending the waiting calls failed")
                since = time.monotonic()
                first_cut = first_cut or now
            if first_cut is not None and self.give_up is not None and now - first_cut >= self.give_up_after:
                give_up, self.give_up = self.give_up, None
                give_up(now - first_cut + self.seconds)

    def _held(self) -> bool:
        try:
            return self.held is not None and self.held()
        except (OSError, ValueError):
            return False

    def _progress(self) -> int | None:
        try:
            return self.progress()
        except (OSError, ValueError):      # unreadable counters: no progress seen
            return None

    def halt(self) -> None:
        """Stop watching, without waiting for the watch's thread (which may be the caller)."""
        self._stop.set()

    def stop(self) -> None:
        self.halt()
        self._thread.join(timeout=5)
