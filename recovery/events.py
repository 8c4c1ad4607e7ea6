"""Progress as typed events. Long operations call `on_event(Progress(...))` a few times a second.

JSON form (``--json`` with ``--progress-json``, and the TUI's log): ``{"type": "progress", ...fields}``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable

from recovery.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    phase: str               # "backup", "verify", "restore", "check", "table", "resize"
    done: int                # bytes processed in this phase
    total: int               # bytes expected in this phase (0 when unknown)
    partition: int | None = None   # partition number being processed, if any
    stored_new: int = 0      # bytes newly written to the repository (backup only)
    rate: float = 0.0        # bytes per second, averaged over the phase
    eta: float | None = None  # seconds left, when it can be estimated
    message: str = ""

    def to_json(self) -> dict:
        return {"type": "progress", **asdict(self)}


@dataclass(frozen=True)
class Warning_:
    message: str

    def to_json(self) -> dict:
        return {"type": "warning", "message": self.message}


Event = Progress | Warning_
EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    pass


@dataclass
class Meter:
    """Turns byte counts into throttled Progress events with rate and ETA."""

    phase: str
    total: int
    sink: EventSink = ignore
    interval: float = 0.2
    done: int = 0
    stored_new: int = 0
    partition: int | None = None
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def add(self, nbytes: int, stored_new: int = 0, force: bool = False) -> None:
        self.done += nbytes
        self.stored_new += stored_new
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self.sink(self.snapshot(now))

    def snapshot(self, now: float | None = None) -> Progress:
        elapsed = max((now or time.monotonic()) - self.started, 1e-6)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 and self.total else None
        return Progress(self.phase, self.done, self.total, self.partition, self.stored_new, rate, eta)

    def finish(self) -> None:
        self.add(0, force=True)


class CancelToken:
    """Checked between chunks by every long job; set from another thread (TUI Cancel, SIGINT)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    @contextmanager
    def on_interrupt(self):
        """While inside, Ctrl-C (SIGINT) also cancels this token. Python raises the
        KeyboardInterrupt wherever the main thread is, and one raised inside a weakref callback
        or a __del__ is dropped: the token makes the job stop at its next chunk all the same,
        instead of running on to the end. Python would print such a dropped interrupt as a
        traceback ("Exception ignored in ..."); the token has it in hand, so it is not shown."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def interrupted(signum, frame):
            self.cancel()
            raise KeyboardInterrupt

        def unraisable(info, shown=sys.unraisablehook):
            if not (issubclass(info.exc_type, KeyboardInterrupt) and self.cancelled):
                shown(info)

        before = signal.signal(signal.SIGINT, interrupted)
        hook, sys.unraisablehook = sys.unraisablehook, unraisable
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, before)
            sys.unraisablehook = hook
