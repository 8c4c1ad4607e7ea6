"""Repository locks (recovery/repo/lock.py) in a real folder: who may hold them together,
when one is stale and broken (with the line said about it), the exact refusals, the lock's
own content and the report for people."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from recovery.errors import BusyError, RepositoryError
from recovery.repo import lock as lockmod
from recovery.repo.lock import EXCLUSIVE, Lock, lock_report, stale_reason, ttl_seconds, who
from recovery.storage.local import LocalStorage

HOST = socket.gethostname()


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "tmp").mkdir()
    with LocalStorage(tmp_path) as s:
        yield s


@pytest.fixture
def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_ttl_comes_from_the_environment_within_bounds(monkeypatch):
    monkeypatch.delenv("LIFEBOAT_LOCK_TTL", raising=False)
    assert ttl_seconds() == 600.0
    monkeypatch.setenv("LIFEBOAT_LOCK_TTL", "30")
    assert ttl_seconds() == 30.0 and Lock(None).ttl == 30.0 and Lock(None, ttl=5).ttl == 5
    monkeypatch.setenv("LIFEBOAT_LOCK_TTL", "0.2")
    assert ttl_seconds() == 1.0
    monkeypatch.setenv("LIFEBOAT_LOCK_TTL", "soon")
    assert ttl_seconds() == 600.0


def test_stale_reasons_and_who(dead_pid):
    now = 1000.0
    assert stale_reason({"host": HOST, "pid": os.getpid(), "expires": now + 1}, now) is None
    assert stale_reason({"host": HOST, "pid": dead_pid}, now) == f"process {dead_pid} on {HOST} is no longer running"
    assert stale_reason({"host": HOST, "pid": str(dead_pid)}, now) is not None
    assert stale_reason({"host": "elsewhere", "pid": dead_pid}, now) is None          # not ours to judge
    assert stale_reason({"host": HOST, "pid": "x", "expires": now}, now) is None       # expires at now: not yet
    assert stale_reason({"host": "nas", "expires": now - 1.5}, now) == (
        "it expired 1 s ago (its writer on nas stopped refreshing it)")
    assert stale_reason({"host": "nas", "expires": "yesterday"}, now) is None
    assert stale_reason({"host": "nas", "expires": time.time() - 5}) is not None      # now defaults to the clock
    assert who(None) == who({}) == "another process"
    assert who({"pid": 7, "host": "nas"}) == "process 7 on nas"


def test_a_lock_writes_who_holds_it_and_removes_itself(storage, tmp_path):
    with Lock(storage, purpose="restore", ttl=60) as held:
        assert held.held and held.name == f"lock/{HOST}-{os.getpid()}-{held.token}.json"
        data = json.loads((tmp_path / held.name).read_bytes())
        assert set(data) == {"host", "pid", "mode", "purpose", "since", "refreshed", "expires", "token"}
        assert (data["host"], data["pid"], data["mode"], data["purpose"], data["token"]) == (
            HOST, os.getpid(), "shared", "restore", held.token)
        assert data["expires"] == pytest.approx(data["refreshed"] + 60) and data["since"] <= data["refreshed"]
        with Lock(storage) as other:                       # shared locks are taken together
            assert other.name != held.name
    assert not held.held and not (tmp_path / "lock").exists()
    with Lock(storage, exclusive=True, ttl=60) as ex:
        assert ex.name == EXCLUSIVE
        assert json.loads((tmp_path / "lock").read_bytes())["mode"] == "exclusive"
    assert not (tmp_path / "lock").exists()
    held.release()                                         # twice: nothing more to do


def test_exclusive_and_shared_refuse_each_other_with_their_messages(storage, tmp_path):
    with Lock(storage, purpose="verify", ttl=60):
        with pytest.raises(BusyError) as err:
            Lock(storage, exclusive=True).acquire()
        assert str(err.value) == (f"the repository is busy: backups or restores are running (verify by process "
                                  f"{os.getpid()} on {HOST}); wait for them to finish")
    with Lock(storage, exclusive=True, ttl=60):
        for exclusive in (False, True):
            with pytest.raises(BusyError) as err:
                Lock(storage, exclusive=exclusive).acquire()
            assert str(err.value) == (
                f"the repository is busy: process {os.getpid()} on {HOST} holds its lock ({tmp_path / 'lock'}) "
                "to delete data; wait for it to finish, or delete that lock if nothing is running there")
    # a shared lock of no stated purpose was a backup's
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "old.json").write_text(json.dumps({"host": "nas", "pid": 4}))
    with pytest.raises(BusyError, match=r"\(backup by process 4 on nas\)"):
        Lock(storage, exclusive=True).acquire()


def test_stale_locks_are_broken_and_said_but_unreadable_ones_stand(storage, tmp_path, dead_pid, caplog):
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "a.json").write_text(json.dumps({"host": HOST, "pid": dead_pid}))
    (tmp_path / "lock" / "b.json").write_text(json.dumps({"host": "nas", "pid": 3, "expires": time.time() - 100}))
    with Lock(storage, exclusive=True, ttl=60) as ex:
        assert sorted(ex.broken) == sorted([
            f"removed a stale repository lock held by process {dead_pid} on {HOST}: process {dead_pid} on {HOST} "
            "is no longer running",
            "removed a stale repository lock held by process 3 on nas: it expired 100 s ago (its writer on nas "
            "stopped refreshing it)"])
        assert all(line in caplog.text for line in ex.broken)
    (tmp_path / "lock").write_text(json.dumps({"host": HOST, "pid": dead_pid}))
    with Lock(storage, ttl=60) as shared:
        assert shared.broken == [f"removed a stale repository lock held by process {dead_pid} on {HOST}: "
                                 f"process {dead_pid} on {HOST} is no longer running"]
    # an exclusive lock that cannot be read may belong to a live holder: it stands
    for content in ("{not json", "[1, 2]"):
        (tmp_path / "lock").write_text(content)
        with pytest.raises(BusyError, match="^the repository is busy: another process holds its lock"):
            Lock(storage).acquire()
        assert (tmp_path / "lock").read_text() == content
    (tmp_path / "lock").unlink()
    # likewise a shared one
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "c.json").write_text("[]")
    with pytest.raises(BusyError, match=r"\(backup by another process\)"):
        Lock(storage, exclusive=True).acquire()


def test_the_report_lists_every_lock_its_holder_and_staleness(storage, tmp_path, dead_pid):
    assert lock_report(storage) == []
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock" / "a.json").write_text(json.dumps({"host": HOST, "pid": dead_pid, "since": 5}))
    (tmp_path / "lock" / "b.json").write_text("{damaged")
    (tmp_path / "lock" / "c.json").write_text("[1]")
    (tmp_path / "lock" / "d.json").write_text(json.dumps({"host": "nas", "pid": 9, "expires": time.time() + 99}))
    report = sorted(lock_report(storage), key=lambda r: r["name"])
    assert report == [
        {"name": "lock/a.json", "holder": f"process {dead_pid} on {HOST}", "since": 5,
         "stale": f"process {dead_pid} on {HOST} is no longer running"},
        {"name": "lock/b.json", "holder": "another process", "since": None, "stale": "unreadable"},
        {"name": "lock/c.json", "holder": "another process", "since": None, "stale": "unreadable"},
        {"name": "lock/d.json", "holder": "process 9 on nas", "since": None, "stale": None},
    ]
    for name in "abcd":
        (tmp_path / "lock" / f"{name}.json").unlink()
    (tmp_path / "lock").rmdir()
    (tmp_path / "lock").write_text(json.dumps({"host": "nas", "pid": 1, "since": 2}))
    assert lock_report(storage) == [{"name": "lock", "holder": "process 1 on nas", "since": 2, "stale": None}]


def test_a_held_lock_is_refreshed_every_third_of_its_lifetime(storage, tmp_path):
    with Lock(storage, ttl=1.5) as held:
        first = json.loads((tmp_path / held.name).read_bytes())["refreshed"]
        deadline = time.time() + 1.5               # refreshed well before it would expire
        while time.time() < deadline:
            time.sleep(0.05)
            if json.loads((tmp_path / held.name).read_bytes())["refreshed"] > first:
                break
        else:
            pytest.fail("the lock was not refreshed")
    assert held._refresher is None                       # release waited for the refresher to stop
    assert lockmod.WriterLock is Lock


def test_releasing_a_lock_never_taken_leaves_the_holders_lock_alone(storage, tmp_path):
    with Lock(storage, exclusive=True, ttl=60) as holder:
        refused = Lock(storage, exclusive=True)
        with pytest.raises(BusyError):
            refused.acquire()
        refused.release()                                  # as a caller's cleanup would
        Lock(storage, exclusive=True).release()            # made and dropped without acquire
        assert json.loads((tmp_path / "lock").read_bytes())["token"] == holder.token
    with Lock(storage, ttl=60) as shared:                  # a lock's purpose is a backup's unless said
        assert json.loads((tmp_path / shared.name).read_bytes())["purpose"] == "backup"


class SharedFolder(LocalStorage):
    """A folder whose exclusive create the server may not honour (a network share): the
    exclusive lock is read back before it counts as held."""

    atomic_create = False


class RacedFolder(SharedFolder):
    """The same, where another taker's exclusive lock lands just after ours."""

    def write_new(self, name, data):
        made = super().write_new(name, data)
        if made:
            (self.root / name).write_text(json.dumps({"host": "nas", "pid": 77, "token": "theirs",
                                                      "expires": time.time() + 60}))
        return made


def test_on_a_store_without_exclusive_create_the_lock_read_back_names_the_winner(tmp_path, monkeypatch):
    monkeypatch.setattr(lockmod, "SETTLE_SECONDS", 0.0)
    (tmp_path / "tmp").mkdir()
    with SharedFolder(tmp_path) as folder, Lock(folder, exclusive=True, ttl=60) as ex:
        assert ex.held and json.loads((tmp_path / "lock").read_bytes())["token"] == ex.token
    with RacedFolder(tmp_path) as raced:
        loser = Lock(raced, exclusive=True, ttl=60)
        with pytest.raises(BusyError) as err:
            loser.acquire()
        assert str(err.value).startswith("the repository is busy: process 77 on nas holds its lock")
        assert not loser.held and json.loads((tmp_path / "lock").read_bytes())["token"] == "theirs"


def test_an_exclusive_lock_replaces_a_stale_one_and_names_every_running_holder(storage, tmp_path, dead_pid):
    (tmp_path / "lock").write_text(json.dumps({"host": HOST, "pid": dead_pid}))
    with Lock(storage, exclusive=True, ttl=60) as ex:
        assert ex.broken == [f"removed a stale repository lock held by process {dead_pid} on {HOST}: "
                             f"process {dead_pid} on {HOST} is no longer running"]
    with Lock(storage, purpose="restore", ttl=60), Lock(storage, purpose="verify", ttl=60):
        with pytest.raises(BusyError) as err:
            Lock(storage, exclusive=True).acquire()
    me = f"process {os.getpid()} on {HOST}"
    assert str(err.value) in [f"the repository is busy: backups or restores are running ({a} by {me}, {b} by {me}); "
                              "wait for them to finish" for a, b in (("restore", "verify"), ("verify", "restore"))]


def test_a_store_that_refuses_writes_is_said_plainly_not_taken_for_busy(tmp_path):
    with LocalStorage(tmp_path / "gone") as missing:
        with pytest.raises(RepositoryError) as err:
            Lock(missing).acquire()
    assert str(err.value).startswith("cannot lock the repository: ") and "busy" not in str(err.value)


def test_a_refresh_that_fails_is_logged_and_tried_again(storage, tmp_path, caplog):
    with Lock(storage, ttl=0.3) as held:
        (tmp_path / "tmp").rename(tmp_path / "tmp-away")
        deadline = time.time() + 3
        while "cannot refresh the repository lock: " not in caplog.text and time.time() < deadline:
            time.sleep(0.05)
        (tmp_path / "tmp-away").rename(tmp_path / "tmp")
    assert not held.held
    assert any(r.getMessage().startswith("cannot refresh the repository lock: ") for r in caplog.records)


class RefusingFolder(LocalStorage):
    """A folder whose server refuses this account's writes (as a mounted share says it)."""

    def write(self, name, data):
        from recovery.storage.base import NoPermissionError

        raise NoPermissionError("no permission to write /srv/repo on nas: ann may log in but not write there")

    write_new = write


def test_a_refusal_that_says_what_to_fix_is_passed_on_as_it_is(storage, tmp_path):
    with RefusingFolder(tmp_path) as refusing:
        with pytest.raises(RepositoryError) as err:
            Lock(refusing).acquire()
    assert str(err.value) == "no permission to write /srv/repo on nas: ann may log in but not write there"
