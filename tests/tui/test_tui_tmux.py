"""The real `python -m recovery tui` in a real terminal: tmux at 80x25 with TERM=linux (the
Linux console: 16 colours), keys sent as a person types them, the screen read back."""

from __future__ import annotations

import os
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from recovery.repo.repository import Repository
from tests.conftest import ROOT, require

@pytest.fixture(autouse=True)
def _needs_tmux():
    require(shutil.which("tmux") is not None, "needs tmux")


pytestmark = pytest.mark.tui


class Terminal:
    """A tmux server of our own (its own socket), one 80x25 window."""

    def __init__(self, cwd, command: str):
        # in the run's temporary folder: with -L, tmux would leave /tmp/tmux-UID/NAME behind
        self.socket = str(Path(tempfile.gettempdir()) / f"lifeboat-tmux-{uuid.uuid4().hex[:8]}")
        self.tmux("new-session", "-d", "-x", "80", "-y", "25", "-c", str(cwd), command)

    def tmux(self, *args) -> str:
        # tmux runs the command with $SHELL (a service user's login shell may be nologin).
        out = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True,
                             env=dict(os.environ, SHELL="/bin/sh"))
        return out.stdout

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.tmux("send-keys", "-t", "0", key)
            time.sleep(0.3)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "0")

    def colours(self) -> set[str]:
        """The SGR colour codes on screen now (from capture-pane -e)."""
        raw = self.tmux("capture-pane", "-p", "-e", "-t", "0")
        codes = set()
        for sgr in re.findall(r"\x1b\[([0-9;]*)m", raw):
            codes.update(sgr.split(";"))
        return codes

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the screen shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


def test_real_tui_in_tmux_linux_console(machine):
    env = {
        "TERM": "linux",
        "LIFEBOAT_ONLY_GIVEN_DISKS": "1",
        "LIFEBOAT_LOG_DIR": str(machine / "logs"),
        "PYTHONPATH": str(ROOT),
    }
    envs = " ".join(f"{k}={v}" for k, v in env.items())
    command = (f"env -u COLORTERM {envs} {sys.executable} -m recovery tui --repo repo "
               f"--disk demo-pc.img --disk new-disk.img; echo LIFEBOAT-EXIT=$?; sleep 60")
    term = Terminal(machine, command)
    try:
        screen = term.wait_for("1 backup repository (1 snapshot)")
        assert "Back up a disk" in screen and "Restore a backup" in screen
        lines = screen.splitlines()
        assert len(lines) <= 25 and all(len(line) <= 80 for line in lines)

        # The Linux console has 8 colours (+ bold): the terminal's own ANSI colours are used, with
        # no 256-colour or true-colour codes (38/48) and no bright backgrounds (100-107).
        codes = {int(c) for c in term.colours() if c.isdigit()}
        assert not codes & {38, 48} and not any(c >= 90 for c in codes), sorted(codes)

        term.keys("d")                                   # the disks, drawn as maps
        screen = term.wait_for("new-disk.img")
        assert "demo-pc.img" in screen and "DEMO-ESP" in screen and "demo-root" in screen

        term.keys("Escape", "b")                         # back up demo-pc.img
        term.wait_for("Which disk do you want to back up?")
        term.keys("Enter")
        screen = term.wait_for("Where should the backup go?")
        assert "(suggested)" in screen
        term.keys("Enter")
        term.wait_for("Ready to back up")
        term.keys("Enter")                               # "Start backup" has the focus
        screen = term.wait_for("Backup finished", timeout=120)
        assert "demo-pc" in screen
        term.keys("Enter")
        term.wait_for("1 backup repository (2 snapshots)")

        term.keys("F1")                                  # help
        term.wait_for("Keys")
        term.keys("Escape", "q")
        term.wait_for("LIFEBOAT-EXIT=0")
    finally:
        term.close()

    repo = Repository.open(machine / "repo")
    try:
        assert [s.name for s in repo.snapshots()] == ["demo-pc", "demo-pc"]
    finally:
        repo.close()
    assert not os.path.exists(machine / "logs" / "lifeboat-tui.log")     # no error was logged


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a saved filesystem needs root")
def test_get_files_back_in_tmux(machine, tmp_path):
    """Home -> Get files back -> repository -> snapshot -> partition -> browse to a user's folder,
    mark two folders, copy them into a folder typed by hand; every byte compared."""
    from tests.own_mounts import views
    from tests import fsimages as fi
    from tests.tui.test_tui_get_files import root_partition

    dest = tmp_path / "usb"
    dest.mkdir()
    env = {"TERM": "linux", "LIFEBOAT_ONLY_GIVEN_DISKS": "1", "LIFEBOAT_LOG_DIR": str(machine / "logs"),
           "PYTHONPATH": str(ROOT), "TMPDIR": os.environ["TMPDIR"]}
    envs = " ".join(f"{k}={v}" for k, v in env.items())
    command = (f"env -u COLORTERM {envs} {sys.executable} -m recovery tui --repo repo "
               f"--disk demo-pc.img --disk new-disk.img; echo LIFEBOAT-EXIT=$?; sleep 60")
    term = Terminal(machine, command)
    try:
        term.wait_for("1 backup repository (1 snapshot)")
        term.keys("g")
        term.wait_for("Which backups?")
        term.keys("Enter")
        term.wait_for("Backups of")
        term.keys("Enter")
        screen = term.wait_for("Which partition holds the files?")
        assert "demo-root  ext4" in screen and "DEMO-ESP  FAT" in screen
        term.keys("Enter")
        screen = term.wait_for("Nothing marked yet")
        assert "home/" in screen and "etc/" in screen
        term.keys("h", "Enter")
        term.wait_for("alice/")
        term.keys("a", "Enter")
        screen = term.wait_for("Documents/")
        assert screen.index("Documents/") < screen.index("Pictures/")
        term.keys("Space", "Space")
        screen = term.wait_for("Marked: 2 items")
        lines = screen.splitlines()
        assert len(lines) <= 25 and all(len(line) <= 80 for line in lines)
        term.keys("F2")
        term.wait_for("Copy the files to which drive?")
        term.keys("t")
        term.wait_for("Type a folder")
        term.tmux("send-keys", "-t", "0", "-l", str(dest))
        term.keys("Enter")
        screen = term.wait_for("Files copied", timeout=120)
        assert "4 files (" in screen and "copied into" in screen
        term.keys("Enter")
        term.wait_for("Get files back")
        assert views() == []
        term.keys("q")
        term.wait_for("LIFEBOAT-EXIT=0")
    finally:
        term.close()
    start, size = root_partition(machine / "demo-pc.img")
    want = fi.ext_tree(machine / "demo-pc.img", start, size)
    (copied,) = dest.iterdir()
    assert fi.tree_hashes(copied) == {k[len("home/alice/"):]: v for k, v in want.items()
                                      if k.startswith("home/alice/")}


def _tui_pid(term: Terminal) -> int:
    """The Lifeboat process in the pane (the pane's shell runs it as its one child; env execs)."""
    shell = int(term.tmux("list-panes", "-t", "0", "-F", "#{pane_pid}").split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = open(f"/proc/{shell}/task/{shell}/children").read().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise AssertionError("the TUI process never started")


def _browse_root(term: Terminal) -> None:
    term.wait_for("1 backup repository (1 snapshot)")
    term.keys("g")
    term.wait_for("Which backups?")
    term.keys("Enter")
    term.wait_for("Backups of")
    term.keys("Enter")
    term.wait_for("Which partition holds the files?")
    term.keys("Enter")
    term.wait_for("Nothing marked yet")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a saved filesystem needs root")
def test_a_killed_or_terminated_tui_leaves_no_browse_mount(machine):
    """The real TUI browsing a partition: SIGTERM (or the terminal hanging up) ends it with the
    partition unmounted; SIGKILL, which nothing can catch, leaves a dead FUSE mount that the next
    start of the TUI removes before showing anything, with the filesystem mounted beneath it."""
    from recovery.probe.mounts import current_mounts
    from tests.own_mounts import views

    env = {"TERM": "linux", "LIFEBOAT_ONLY_GIVEN_DISKS": "1", "LIFEBOAT_LOG_DIR": str(machine / "logs"),
           "PYTHONPATH": str(ROOT), "TMPDIR": os.environ["TMPDIR"]}
    envs = " ".join(f"{k}={v}" for k, v in env.items())
    tui = (f"env -u COLORTERM {envs} {sys.executable} -m recovery tui --repo repo --disk demo-pc.img; "
           f"echo LIFEBOAT-EXIT=$?; sleep 120")

    def below(view: str) -> list[str]:
        return [m.target for m in current_mounts() if m.target.startswith(view.rstrip("/") + "/")]

    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        term = Terminal(machine, tui)
        try:
            _browse_root(term)
            (view,) = views()
            assert below(view)                    # the ext4 root mounted beneath the images
            os.kill(_tui_pid(term), sig)
            term.wait_for(f"LIFEBOAT-EXIT={code}", timeout=30)
            assert views() == [] and below(view) == []
        finally:
            term.close()

    term = Terminal(machine, tui)
    try:
        _browse_root(term)
        (view,) = views()
        os.kill(_tui_pid(term), signal.SIGKILL)
        term.wait_for("LIFEBOAT-EXIT=137", timeout=30)
        assert views() == [view] and below(view)        # the server is gone, the mounts stay
        with pytest.raises(OSError):
            os.listdir(view)                            # transport endpoint is not connected
    finally:
        term.close()
    term = Terminal(machine, tui)
    try:
        term.wait_for("1 backup repository (1 snapshot)")     # the first scan has run
        assert views() == [] and below(view) == []
        assert not os.path.exists(view)                     # its private folder went too
        term.keys("q")
        term.wait_for("LIFEBOAT-EXIT=0")
    finally:
        term.close()
