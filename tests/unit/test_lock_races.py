"""Repository locks (recovery/repo/lock.py) at the moments other takers act, in a real folder
whose other takers are scripted at exactly that moment, and the waits the design promises:
the read back after a settling pause on a store without exclusive create, a refresh every
third of the lifetime, and a refresher that never keeps a finished process alive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recovery.errors import BusyError
from recovery.repo import lock as lockmod
from recovery.repo.lock import Lock
from recovery.storage.local import LocalStorage

LIVE = {"host": "nas", "pid": 77, "token": "theirs"}


def live() -> str:
    return json.dumps({**LIVE, "expires": time.time() + 60})


class SharedFolder(LocalStorage):
    """A folder whose exclusive create the server may not honour (a network share)."""

    atomic_create = False


class RacedFolder(SharedFolder):
    """The same, where another taker's exclusive lock lands just after ours."""

    def write_new(self, name, data):
        made = super().write_new(name, data)
        if made:
            (self.root / name).write_text(live())
        return made


def test_an_exclusive_lock_without_exclusive_create_counts_only_after_the_settling_pause(tmp_path):
    (tmp_path / "tmp").mkdir()
    assert lockmod.SETTLE_SECONDS == 2.0
    with SharedFolder(tmp_path) as folder:
        start = time.monotonic()
        with Lock(folder, exclusive=True, ttl=60) as ex:
            took = time.monotonic() - start
            assert ex.held
    # read back at once and again after the pause: 2 s, not one second more
    assert 2.0 <= took < 2.9


def test_a_lost_race_is_seen_at_once_not_after_a_pause(tmp_path):
    (tmp_path / "tmp").mkdir()
    with RacedFolder(tmp_path) as raced:
        start = time.monotonic()
        with pytest.raises(BusyError, match="^the repository is busy: process 77 on nas holds its lock"):
            Lock(raced, exclusive=True, ttl=60).acquire()
        assert time.monotonic() - start < 0.9


def test_a_held_lock_is_first_refreshed_a_third_of_its_lifetime_later_not_sooner(tmp_path):
    (tmp_path / "tmp").mkdir()
    with LocalStorage(tmp_path) as storage, Lock(storage, ttl=3.0) as held:
        first = json.loads((tmp_path / held.name).read_bytes())["refreshed"]
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            time.sleep(0.05)
            again = json.loads((tmp_path / held.name).read_bytes())["refreshed"]
            if again > first:
                break
        else:
            pytest.fail("the lock was not refreshed")
    assert 0.95 <= again - first < 2.0            # 1 s (a third of 3 s); a wait never ends early


def test_a_process_that_ends_without_releasing_is_not_kept_alive_by_its_refresher(tmp_path):
    (tmp_path / "tmp").mkdir()
    root = Path(lockmod.__file__).resolve().parents[2]
    program = ("import sys\n"
               "from recovery.repo.lock import Lock\n"
               "from recovery.storage.local import LocalStorage\n"
               "Lock(LocalStorage(sys.argv[1]), ttl=60).acquire()\n"
               "print('held', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", program, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("the process did not end: its lock's refresher kept it alive")
    assert proc.returncode == 0 and out == "held\n"
    assert len(list((tmp_path / "lock").glob("*.json"))) == 1      # left behind, to expire


class VanishingFolder(LocalStorage):
    """A folder where the first shared lock listed is released by its holder just after
    the listing (before it is read)."""

    def list(self, prefix):
        found = sorted(super().list(prefix), key=lambda i: i.name)
        if prefix == "lock/" and found:
            (self.root / found[0].name).unlink(missing_ok=True)
        return found


def test_a_shared_lock_released_while_the_others_are_read_does_not_hide_them(tmp_path):
    (tmp_path / "tmp").mkdir()
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "a.json").write_text(live())
    (tmp_path / "lock" / "b.json").write_text(json.dumps({"host": "nas", "pid": 3, "expires": time.time() - 100}))
    with VanishingFolder(tmp_path) as folder, Lock(folder, ttl=60) as shared:
        # a.json went between the listing and its reading; b.json, stale, is still broken
        assert shared.broken == ["removed a stale repository lock held by process 3 on nas: it expired 100 s "
                                 "ago (its writer on nas stopped refreshing it)"]
        assert not (tmp_path / "lock" / "b.json").exists()


class Contended(LocalStorage):
    """A folder where another taker's exclusive lock lands just before each of this taker's
    first `times` shared-lock writes (which then fail: `lock` is a file) and is released
    just after this taker has read it."""

    def __init__(self, root, times: int):
        super().__init__(root)
        self.times = times
        self.tries = 0

    def write(self, name, data):
        if name.startswith("lock/"):
            self.tries += 1
            if self.tries <= self.times:
                (self.root / "lock").write_text(live())
        return super().write(name, data)

    def read(self, name, offset=0, length=None):
        data = super().read(name, offset, length)
        if name == "lock" and self.tries <= self.times:
            (self.root / "lock").unlink()
        return data


def test_a_shared_lock_write_refused_by_a_passing_exclusive_lock_is_tried_again(tmp_path):
    (tmp_path / "tmp").mkdir()
    with Contended(tmp_path, times=1) as folder, Lock(folder, ttl=60) as shared:
        assert shared.held and folder.tries == 2
        assert (tmp_path / shared.name).exists()


def test_a_shared_lock_is_tried_three_times_then_refused(tmp_path):
    (tmp_path / "tmp").mkdir()
    with Contended(tmp_path, times=3) as folder:
        taker = Lock(folder, ttl=60)
        with pytest.raises(BusyError, match="^the repository is busy: another process holds its lock"):
            taker.acquire()
        assert folder.tries == 3 and not taker.held


def test_a_lock_that_cannot_be_removed_at_release_is_said(tmp_path, caplog):
    (tmp_path / "tmp").mkdir()
    with LocalStorage(tmp_path) as storage:
        held = Lock(storage, ttl=60)
        held.acquire()
        # something made a folder where the lock file was: unlink fails with EISDIR
        (tmp_path / held.name).unlink()
        (tmp_path / held.name).mkdir()
        (tmp_path / held.name / "x").write_text("")
        held.release()
    assert not held.held
    assert [r.getMessage() for r in caplog.records if "repository lock" in r.getMessage()] == [
        f"cannot remove the repository lock: cannot delete {tmp_path / held.name}: Is a directory"]
