"""Ctrl-C during a job: the token is cancelled wherever the interrupt lands, and one that lands
where Python cannot raise it (a __del__ or a weakref callback) is not printed as a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import signal
from recovery.events import CancelToken

class Dropped:
    def __init__(self, error):
        self.error = error
    def __del__(self):
        if self.error:
            raise ValueError("a real fault in a finaliser")
        signal.raise_signal(signal.SIGINT)     # the handler runs here, inside __del__
        for _ in range(1000):
            pass

token = CancelToken()
with token.on_interrupt():
    Dropped({error})
    print("cancelled" if token.cancelled else "running", flush=True)
"""


def run(error: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(error=error)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_an_interrupt_inside_a_finaliser_cancels_the_token_and_prints_nothing():
    out = run(error=False)
    assert out.returncode == 0 and out.stdout == "cancelled\n"
    assert out.stderr == ""             # was "Exception ignored in ... KeyboardInterrupt" and a traceback


def test_other_faults_in_a_finaliser_are_still_shown():
    out = run(error=True)
    assert out.stdout == "running\n"
    assert "ValueError: a real fault in a finaliser" in out.stderr
