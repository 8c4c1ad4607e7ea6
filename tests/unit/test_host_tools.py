"""recovery.host.tools: a tool run with dies_with_us does not outlive Lifeboat."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from recovery.errors import ToolError
from recovery.host import tools
from tests.conftest import ROOT

# A Lifeboat stand-in: runs `sleep` through tools.run, says the sleeper's pid, waits for it.
PARENT = r"""
import sys, threading, time
from recovery.host import tools
dies = sys.argv[1] == "yes"
threading.Thread(target=tools.run, args=(["sleep", "60"],), kwargs={"dies_with_us": dies}, daemon=True).start()
time.sleep(60)
"""


def _sleeper_of(parent: int, timeout: float = 10.0) -> int:
    """The pid of the `sleep 60` under `parent` (through setpriv, which execs it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ps", "-o", "pid=,comm=", "--ppid", str(parent)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            pid, comm = line.split(None, 1)
            if comm.strip() == "sleep":
                return int(pid)
        time.sleep(0.05)
    raise AssertionError("the tool never started")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("dies", [True, False])
def test_a_tool_run_with_dies_with_us_is_killed_with_its_parent(dies):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "yes" if dies else "no"], cwd=ROOT)
    sleeper = _sleeper_of(parent.pid)
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(sleeper) and time.monotonic() < deadline:
            time.sleep(0.05)
        # Without the guard the tool goes on (the control case shows the check can tell).
        assert _alive(sleeper) is (not dies)
    finally:
        if _alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)


def test_a_missing_tool_is_named():
    with pytest.raises(ToolError, match="the tool no-such-tool-here is missing"):
        tools.run(["no-such-tool-here"], dies_with_us=True)
