"""Unlocking in the background (Repository.open(background=True)): the Argon2id derivation runs
on its own thread while the caller works; the first use of the key waits for it; a wrong
passphrase is raised there, every time the key is asked for, and nothing has been written."""

from __future__ import annotations

import threading
import time

import pytest

from recovery.errors import WrongPassphraseError
from recovery.repo import keys
from recovery.repo.keys import KdfParams, Unlock
from recovery.repo.repository import NewEncryption, Repository

PASSPHRASE = "lantern-orchard-7-quietly"
# Slow enough that the derivation is still running when open() returns (16 MiB, 4 passes).
SLOW = KdfParams(memory_kib=16 * 1024, iterations=4, parallelism=1)


def files(where):
    return {p: p.read_bytes() for p in sorted(where.rglob("*")) if p.is_file()}


@pytest.fixture
def encrypted(tmp_path):
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption(PASSPHRASE, SLOW))
    sealer = repo.sealer
    repo.close()
    return tmp_path / "r", sealer


def test_the_key_is_derived_while_the_caller_goes_on(encrypted, monkeypatch):
    where, made = encrypted
    gate = threading.Event()
    real = keys._try_keys

    def held(*args):                 # the derivation cannot finish before the caller lets it
        gate.wait(10)
        return real(*args)

    monkeypatch.setattr(keys, "_try_keys", held)
    repo = Repository.open(where, Unlock(passphrase=PASSPHRASE), background=True)
    assert repo.encrypted and repo._pending is not None      # open returned with the hash still to do
    gate.set()
    started = time.monotonic()
    sealer = repo.sealer                                     # first use: waits for the key
    assert time.monotonic() - started < 10
    assert sealer.master == made.master and repo.blob_id(b"x") == made.blob_id(b"x")
    assert repo._pending is None and repo.key_id is not None
    assert repo.unlock_seconds > 0 and 0 < repo.unlock_wait_seconds <= repo.unlock_seconds + 0.05
    repo.close()


def test_a_wrong_passphrase_stops_at_the_first_use_of_the_key_and_writes_nothing(encrypted):
    where, _ = encrypted
    before = files(where)
    repo = Repository.open(where, Unlock(passphrase="not-the-passphrase"), background=True)
    for _ in range(2):
        with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
            repo.wait_unlocked()
    with pytest.raises(WrongPassphraseError):
        repo.sealer
    with pytest.raises(WrongPassphraseError):
        repo.blob_id(b"x")
    repo.close()
    assert files(where) == before


def test_without_background_open_unlocks_at_once(encrypted):
    where, made = encrypted
    repo = Repository.open(where, Unlock(passphrase=PASSPHRASE))
    assert repo._pending is None and repo.sealer.master == made.master
    assert repo.unlock_seconds > 0 and repo.unlock_wait_seconds == pytest.approx(repo.unlock_seconds, abs=0.05)
    repo.close()
    with pytest.raises(WrongPassphraseError):
        Repository.open(where, Unlock(passphrase="not-the-passphrase"))


def test_a_plain_repository_has_nothing_to_wait_for(tmp_path):
    Repository.init(tmp_path / "p").close()
    repo = Repository.open(tmp_path / "p", background=True)
    assert repo.sealer is None and repo._pending is None and repo.unlock_seconds == 0
    repo.wait_unlocked()
    repo.close()


def test_an_early_start_derives_once_and_a_wrong_one_still_fails(encrypted, tmp_path, monkeypatch):
    where, made = encrypted
    calls = []
    real = keys._argon2id
    monkeypatch.setattr(keys, "_argon2id", lambda *a: calls.append(1) or real(*a))
    good, bad = tmp_path / "good.pass", tmp_path / "bad.pass"
    good.write_text(PASSPHRASE + "\n")
    bad.write_text("not-the-passphrase\n")
    monkeypatch.setenv(keys.PASSPHRASE_ENV, str(good))
    keys.start_early(str(where))
    assert len(keys._early) == 1
    repo = Repository.open(where, background=True)
    assert repo.sealer.master == made.master
    assert calls == [1] and not keys._early             # the early hash was the one used, and taken
    repo.close()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, str(bad))
    keys.start_early(str(where))
    with pytest.raises(WrongPassphraseError):
        Repository.open(where)
    assert not keys._early
    for nothing in (None, str(tmp_path / "missing"), str(tmp_path)):    # no folder, no keys: left alone
        keys.start_early(nothing)
    assert not keys._early
