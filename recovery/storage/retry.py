"""Retrying a network storage call while its server is away, for a bounded time.

A backup or restore that loses its server (restarted, network cut) keeps trying with growing
pauses for LIFEBOAT_RETRY_SECONDS (300 by default), then fails with one line. Once a call has
given up, later calls on the same storage try only once, so cleaning up after the failure
does not wait the whole time again. Before the first call succeeds nothing is retried: a
wrong address or a server that is not there is reported at once.
"""

from __future__ import annotations

import logging
import time

from recovery.units import env_seconds

log = logging.getLogger(__name__)
DEFAULT_SECONDS = 300.0


def retry_seconds() -> float:
    return env_seconds("LIFEBOAT_RETRY_SECONDS", DEFAULT_SECONDS)


class Retrier:
    def __init__(self, seconds: float | None = None):
        self.seconds = retry_seconds() if seconds is None else seconds
        self.reached = False        # a call has succeeded: the address is right
        self.gave_up = False

    def call(self, fn, transient, fail):
        """fn(); `transient(exc)` says whether an error may pass (server away, 5xx), and
        `fail(exc, waited)` turns the last one into the error to raise."""
        start = time.monotonic()
        pause = 0.5
        while True:
            try:
                result = fn()
            except Exception as exc:     # noqa: BLE001 - sorted by transient() below
                if not transient(exc):
                    raise
                waited = time.monotonic() - start
                if not self.reached or self.gave_up or waited >= self.seconds:
                    if self.reached:
                        self.gave_up = True
                    raise fail(exc, waited) from exc
                nap = min(pause, self.seconds - waited)
                log.warning("storage unreachable (%s); trying again in %.1f s", type(exc).__name__, nap)
                time.sleep(nap)
                pause = min(pause * 2, 10.0)
                continue
            self.reached = True
            self.gave_up = False
            return result
