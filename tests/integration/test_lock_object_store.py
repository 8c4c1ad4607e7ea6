"""Repository locks (recovery/repo/lock.py) on a real object store (SeaweedFS's S3), where
`lock` and `lock/<holder>.json` can both exist: each kind of taker reads the other kind back
after writing its own, so a lock of the other kind that lands just after ours (scripted at
that moment) makes this taker give its lock back and say who holds the other."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest

from recovery.errors import BusyError
from recovery.repo import lock as lockmod
from recovery.repo.lock import Lock
from recovery.storage.location import parse
from recovery.storage.s3 import S3Storage


def live(mode: str) -> bytes:
    return json.dumps({"host": "nas", "pid": 77, "mode": mode, "token": "theirs",
                       "expires": time.time() + 60}).encode()


class SharedLandsAfter(S3Storage):
    """A backup's shared lock lands just after our exclusive one."""

    def write_new(self, name, data):
        made = super().write_new(name, data)
        if made and name == "lock":
            super().write("lock/nas-77.json", live("shared"))
        return made


class ExclusiveLandsAfter(S3Storage):
    """A prune's exclusive lock lands just after our shared one."""

    def write(self, name, data):
        super().write(name, data)
        if name.startswith("lock/") and not self.exists("lock"):
            super().write("lock", live("exclusive"))


@pytest.fixture
def store(seaweedfs, monkeypatch, request):
    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(lockmod, "SETTLE_SECONDS", 0.0)     # the pause is measured in test_lock_races
    bucket = seaweedfs.bucket(f"locks-{os.getpid()}-{request.node.name[5:20].replace('_', '-')}")
    opened = []

    def make(kind):
        opened.append(kind(parse(f"s3://{bucket}/r")))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


def test_an_exclusive_lock_gives_way_to_a_shared_one_landing_just_after_it(store):
    s3 = store(SharedLandsAfter)
    taker = Lock(s3, exclusive=True, ttl=60)
    with pytest.raises(BusyError) as err:
        taker.acquire()
    assert str(err.value) == ("the repository is busy: backups or restores are running (backup by process 77 "
                              "on nas); wait for them to finish")
    assert not taker.held and not s3.exists("lock") and s3.exists("lock/nas-77.json")


def test_a_shared_lock_gives_way_to_an_exclusive_one_landing_just_after_it(store):
    s3 = store(ExclusiveLandsAfter)
    taker = Lock(s3, ttl=60)
    with pytest.raises(BusyError) as err:
        taker.acquire()
    assert str(err.value).startswith("the repository is busy: process 77 on nas holds its lock (")
    assert not taker.held and not s3.exists(taker.name)
    assert json.loads(s3.read("lock"))["token"] == "theirs"
    assert socket.gethostname() in taker.name          # it was ours that went
