"""The repository's own decisions (recovery/repo/repository.py), on small repositories in real
folders: what init writes and refuses, which configurations open, the object-store path,
locking for reads, manifests (read, repaired, cached, refused), snapshot listing and "latest",
check marks, and the read path's error mapping. Stores that fail are real folders behind a
LocalStorage whose reads or writes raise, as a failing drive or a gone server would."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import blake3
import pytest
import zstandard

from recovery.errors import BusyError, DamageError, RefusedError, RepositoryError, UsageError, WrongPassphraseError
from recovery.model.layout import Layout
from recovery.repo.format import CODEC_RAW, CODEC_ZSTD, CONFIG_FILE, KIND_DATA, blob_id
from recovery.repo.keys import KdfParams, Unlock
from recovery.repo.lock import Lock
from recovery.repo.manifest import Manifest, PartitionImage
from recovery.repo.packs import pack_name
from recovery.repo.parity import parity_name
from recovery.repo.repository import (PARITY_CONFIG, SUBDIRS, Compressor, NewEncryption, Repository,
                                      placement_problem)
from recovery.repo.sealing import AAD_MANIFEST, key_check
from recovery.storage.base import Storage, StorageError, UnreachableError
from recovery.storage.local import SCRATCH, LocalStorage
from tests.unit.test_repo_format import store

CHEAP = KdfParams(16, 1, 2)
PASSPHRASE = "harbour-lantern-9"


class ObjectStore(LocalStorage):
    """A folder reached as an object store is: no local root, so the repository is its objects."""

    remote = True

    def __init__(self, root):
        super().__init__(root)
        (self.root / SCRATCH).mkdir(parents=True, exist_ok=True)     # where its writes are staged

    @property
    def local_root(self):
        return None

    def describe(self) -> str:
        return f"store:{self.root.name}"

    # an object store's answers about the place: from its objects, not from a folder
    check_new = Storage.check_new
    place_problem = Storage.place_problem
    make_folders = Storage.make_folders
    missing_folders = Storage.missing_folders
    check_present = Storage.check_present


class Failing(LocalStorage):
    """A folder whose reads (or writes) of the names in `bad` fail with `error`."""

    def __init__(self, root, error, bad=(), writes=False):
        super().__init__(root)
        self.error, self.bad, self.writes = error, bad, writes

    def read(self, name, offset=0, length=None):
        if not self.writes and any(name.startswith(b) for b in self.bad):
            raise self.error
        return super().read(name, offset, length)

    def write(self, name, data):
        if self.writes:
            raise self.error
        return super().write(name, data)

    def write_new(self, name, data):
        if self.writes:
            raise self.error
        return super().write_new(name, data)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Copies of an object store's objects go under the test's folder, never the machine's cache."""
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))


def manifest(name="pc", created="2026-12-01T10:00:00Z", serial=None, parts=()) -> Manifest:
    source = {"model": "disk-" + name} | ({"serial": serial} if serial else {})
    return Manifest(name, created, "t", 4096, source, Layout("none", 512, 1 << 20), [], list(parts),
                    stats={"bytes_used": 111, "bytes_stored_new": 22})


def config_of(where: Path) -> dict:
    return json.loads((where / CONFIG_FILE).read_text())


def rewrite_config(where: Path, **changes) -> None:
    data = config_of(where)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    (where / CONFIG_FILE).write_text(json.dumps(data))


# -- init -------------------------------------------------------------------------------
def test_init_writes_exactly_the_documented_configuration(tmp_path):
    for version in (1, 2):
        where = tmp_path / f"v{version}"
        repo = Repository.init(where, chunk_size=4096, version=version)
        text = (where / CONFIG_FILE).read_text()
        config = json.loads(text)
        assert text == json.dumps(config, indent=2) + "\n"
        assert repo.config == config and repo.chunk_size == 4096 and repo.path == where
        assert re.fullmatch(r"[0-9a-f]{32}", config.pop("id"))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", config.pop("created"))
        expected = {"format": "lifeboat-repository", "version": version, "chunk_size": 4096,
                    "hash": "blake3-256", "compression": "zstd"}
        if version == 2:
            expected["parity"] = {"scheme": "sector-rs", "code": "isa-l-cauchy", "sidecar": ".par"}
        assert config == expected
        assert repo.parity is (version == 2) and not repo.encrypted and repo.sealer is None
        assert repo.recovery_code is None and repo.key_id is None
        assert sorted(p.name for p in where.iterdir()) == ["index", CONFIG_FILE, "packs", "snapshots", "tmp",
                                                            "verified"]
        assert not any((where / "tmp").iterdir())
        assert repo.blob_id(b"x") == blob_id(b"x")
        assert repo.local_path == where and repo.location == str(where)
        assert (repo.unlock_seconds, repo.unlock_wait_seconds, repo.unlocked) == (0.0, 0.0, None)
    assert Repository.init(tmp_path / "default").config["chunk_size"] == 1024 * 1024
    assert Repository.init(tmp_path / "default2").config["version"] == 2


def test_a_v2_config_without_parity_writes_none(tmp_path):
    Repository.init(tmp_path / "r")
    rewrite_config(tmp_path / "r", parity=...)
    assert Repository.open(tmp_path / "r").parity is False
    rewrite_config(tmp_path / "r", parity=PARITY_CONFIG, version=...)
    with pytest.raises(RepositoryError):
        Repository.open(tmp_path / "r")


def test_init_refuses_a_format_it_does_not_write(tmp_path):
    with pytest.raises(UsageError) as err:
        Repository.init(tmp_path / "r", version=3)
    assert str(err.value) == "repository format 3 is not one this Lifeboat writes"
    assert not (tmp_path / "r" / CONFIG_FILE).exists()


@pytest.mark.parametrize("size, fine", [(4096, True), (2048, False), (4095, False), (6144, False),
                                        (64 << 20, True), (128 << 20, False), (32 << 20, True)])
def test_chunk_sizes(tmp_path, size, fine):
    if fine:
        assert Repository.init(tmp_path / "r", chunk_size=size).chunk_size == size
        assert Repository.init(ObjectStore(tmp_path / "s"), chunk_size=size).chunk_size == size
        return
    for where in (tmp_path / "r", ObjectStore(tmp_path / "s")):
        with pytest.raises(RepositoryError) as err:
            Repository.init(where, chunk_size=size)
        assert str(err.value) == "chunk size must be a power of two between 4 KiB and 64 MiB"
    assert not (tmp_path / "r").exists() and not (tmp_path / "s" / CONFIG_FILE).exists()


def test_init_refuses_places_that_would_not_keep_a_repository(tmp_path):
    Repository.init(tmp_path / "r")
    with pytest.raises(RepositoryError) as err:
        Repository.init(tmp_path / "r")
    assert str(err.value) == f"{tmp_path / 'r'} already holds a Lifeboat repository"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError) as err:
        Repository.init(tmp_path / "file")
    assert str(err.value) == f"{tmp_path / 'file'} exists and is not a folder"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(RepositoryError) as err:
        Repository.init(tmp_path / "full")
    assert str(err.value) == f"{tmp_path / 'full'} is not empty; choose an empty or new folder"
    with pytest.raises(RepositoryError) as err:
        Repository.init(tmp_path / "no" / "r")
    assert str(err.value) == (f"cannot create {tmp_path / 'no' / 'r'}: the folder {tmp_path / 'no'} does not exist "
                              "(Lifeboat creates only the last folder; check the path, or create it first)")
    with pytest.raises(RepositoryError) as err:
        Repository.init(tmp_path / "file" / "r")
    assert str(err.value) == f"cannot create {tmp_path / 'file' / 'r'}: {tmp_path / 'file'} is not a folder"
    assert not (tmp_path / "no").exists() and (tmp_path / "file").read_text() == "x"
    (tmp_path / "empty").mkdir()
    assert Repository.init(tmp_path / "empty").path == tmp_path / "empty"


def test_a_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    repo = Repository.init("rel")
    assert repo.path == tmp_path / "rel" and repo.storage.local_root == tmp_path / "rel"
    again = Repository.open("rel")
    assert again.path == tmp_path / "rel" and again.storage.local_root == tmp_path / "rel"


@pytest.fixture
def in_memory():
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    where = Path("/dev/shm") / f"lifeboat-test-{uuid.uuid4().hex}"
    where.mkdir()
    yield where
    shutil.rmtree(where)


def test_a_place_in_memory_is_refused_unless_forced(in_memory, tmp_path):
    problem = placement_problem(in_memory / "r")
    assert re.fullmatch(r"/dev/shm/lifeboat-test-\w+ is in memory \(tmpfs at /dev/shm\): "
                        r"everything there is lost at power-off", problem)
    assert problem.startswith(f"{in_memory} ")
    assert placement_problem(in_memory) == problem
    with pytest.raises(RefusedError) as err:
        Repository.init(in_memory / "r")
    assert str(err.value) == (f"not creating a repository at {in_memory / 'r'}: {problem}; "
                              "choose a folder on a disk, or add --force to create it there anyway")
    assert not (in_memory / "r").exists()
    assert Repository.init(in_memory / "r", force=True).path == in_memory / "r"
    assert placement_problem(tmp_path) is None and placement_problem(tmp_path / "new") is None


def test_an_encrypted_repository_is_format_2_with_its_key_and_code(tmp_path):
    repo = Repository.init(tmp_path / "r", version=1, encryption=NewEncryption(PASSPHRASE, CHEAP))
    config = config_of(tmp_path / "r")
    assert config["version"] == 2 and repo.encrypted and repo.sealer is not None
    assert config["encryption"] == {"aead": "aes-256-gcm", "ids": "blake3-keyed", "kdf": "argon2id",
                                    "key_check": key_check(repo.sealer.master)}
    keys = sorted(p.name for p in (tmp_path / "r" / "keys").iterdir())
    assert keys == [f"{repo.key_id}.json"] and not any((tmp_path / "r" / "tmp").iterdir())
    assert repo.recovery_code and repo.blob_id(b"x") != blob_id(b"x")
    opened = Repository.open(tmp_path / "r", Unlock(passphrase=PASSPHRASE))
    assert opened.sealer.master == repo.sealer.master and opened.key_id == repo.key_id
    with pytest.raises(UsageError):
        Repository.init(tmp_path / "bad", encryption=NewEncryption(PASSPHRASE, KdfParams(16, 0, 2)))
    assert not (tmp_path / "bad").exists()


def test_a_wrong_passphrase_closes_what_it_opened(tmp_path):
    Repository.init(tmp_path / "r", encryption=NewEncryption(PASSPHRASE, CHEAP))
    closed = []

    class Watched(LocalStorage):
        def close(self):
            closed.append(True)
            super().close()

    with pytest.raises(WrongPassphraseError):
        Repository.open(Watched(tmp_path / "r"), Unlock(passphrase="wrong", terminal=False))
    assert closed == [True]
    # A plain repository takes no unlock at all.
    Repository.init(tmp_path / "plain")
    plain = Repository.open(Watched(tmp_path / "plain"), Unlock(passphrase="wrong", terminal=False))
    assert plain.sealer is None and closed == [True]


# -- opening ----------------------------------------------------------------------------
def test_open_names_what_is_wrong(tmp_path):
    with pytest.raises(RepositoryError) as err:
        Repository.open(tmp_path / "none")
    assert str(err.value) == f"no repository at {tmp_path / 'none'}: the folder does not exist"
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepositoryError) as err:
        Repository.open(tmp_path / "plain")
    assert str(err.value) == f"{tmp_path / 'plain'} is not a Lifeboat repository (no {CONFIG_FILE})"
    Repository.init(tmp_path / "r")
    (tmp_path / "r" / CONFIG_FILE).write_text("{not json")
    with pytest.raises(RepositoryError) as err:
        Repository.open(tmp_path / "r")
    assert str(err.value) == f"{tmp_path / 'r' / CONFIG_FILE} is damaged or unreadable"
    (tmp_path / "r" / CONFIG_FILE).write_bytes(b"\xff\xfe{}")
    with pytest.raises(RepositoryError, match="is damaged or unreadable"):
        Repository.open(tmp_path / "r")
    (tmp_path / "r" / CONFIG_FILE).unlink()
    (tmp_path / "r" / CONFIG_FILE).mkdir()
    with pytest.raises(RepositoryError, match="is damaged or unreadable"):
        Repository.open(tmp_path / "r")


@pytest.mark.parametrize("sub", SUBDIRS)
def test_open_names_a_missing_folder(tmp_path, sub):
    Repository.init(tmp_path / "r")
    (tmp_path / "r" / sub).rmdir()
    with pytest.raises(RepositoryError) as err:
        Repository.open(tmp_path / "r")
    assert str(err.value) == f"{tmp_path / 'r'} is damaged: the folder {sub}/ is missing"
    (tmp_path / "r" / sub).write_text("")
    with pytest.raises(RepositoryError, match=f"the folder {sub}/ is missing"):
        Repository.open(tmp_path / "r")


FOREIGN = "is not a Lifeboat repository"
FUTURE = "uses repository format"
UNKNOWN = "is encrypted in a way this Lifeboat does not know — use a newer Lifeboat"
GOOD_ENC = {"aead": "aes-256-gcm", "ids": "blake3-keyed", "kdf": "argon2id"}


@pytest.mark.parametrize("config, problem", [
    ([1, 2], FOREIGN),
    ({"format": "borg", "version": 1}, FOREIGN),
    ({"version": 1}, FOREIGN),
    ({"format": "lifeboat-repository"}, FUTURE),
    ({"format": "lifeboat-repository", "version": 0}, FUTURE),
    ({"format": "lifeboat-repository", "version": "1"}, FUTURE),
    ({"format": "lifeboat-repository", "version": 2, "encryption": "yes"}, UNKNOWN),
    ({"format": "lifeboat-repository", "version": 2, "encryption": GOOD_ENC | {"aead": "chacha"}}, UNKNOWN),
    ({"format": "lifeboat-repository", "version": 2, "encryption": GOOD_ENC | {"ids": "sha256"}}, UNKNOWN),
    ({"format": "lifeboat-repository", "version": 2, "encryption": GOOD_ENC | {"kdf": "scrypt"}}, UNKNOWN),
    ({"format": "lifeboat-repository", "version": 1, "encryption": GOOD_ENC}, UNKNOWN),
    ({"format": "lifeboat-repository", "version": 2, "encryption": {}}, UNKNOWN),
])
def test_configurations_that_do_not_open(tmp_path, config, problem):
    for where in (tmp_path / "local", tmp_path / "store"):
        Repository.init(where if where.name == "local" else ObjectStore(where), chunk_size=4096)
        full = {"chunk_size": 4096, "id": "ab" * 16} | config if isinstance(config, dict) else config
        (where / CONFIG_FILE).write_text(json.dumps(full))
    with pytest.raises(RepositoryError) as err:
        Repository.open(tmp_path / "local")
    label = str(tmp_path / "local")
    if problem == FUTURE:
        version = config.get("version")
        assert str(err.value) == (f"{label} uses repository format {version}; this Lifeboat reads "
                                  "formats 1, 2 only — use a newer Lifeboat")
    else:
        assert str(err.value) == f"{label} {problem}"
    with pytest.raises(RepositoryError) as err:
        Repository.open(ObjectStore(tmp_path / "store"))
    assert str(err.value).startswith("store:store ") and problem in str(err.value)


def test_a_null_encryption_is_a_plain_repository(tmp_path):
    Repository.init(tmp_path / "r")
    rewrite_config(tmp_path / "r", encryption=None)
    repo = Repository.open(tmp_path / "r")
    assert not repo.encrypted and repo.sealer is None


# -- an object store --------------------------------------------------------------------
def test_an_object_store_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    store_dir = tmp_path / "s"
    repo = Repository.init(ObjectStore(store_dir), chunk_size=8192, version=1)
    assert repo.path == "store:s" and repo.local_path is None and repo.location == "store:s"
    text = (store_dir / CONFIG_FILE).read_text()
    assert text == json.dumps(repo.config, indent=2) + "\n" and repo.config["version"] == 1
    assert [p.name for p in store_dir.rglob("*") if p.is_file()] == [CONFIG_FILE]
    assert repo.index_cache is not None and repo.index_cache.folder == tmp_path / "cache" / repo.config["id"]
    with pytest.raises(RepositoryError) as err:
        Repository.init(ObjectStore(store_dir))
    assert str(err.value) == "store:s already holds a Lifeboat repository"
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "other").write_text("x")
    with pytest.raises(RepositoryError) as err:
        Repository.init(ObjectStore(tmp_path / "t"))
    assert str(err.value) == "store:t is not empty; choose an empty or new place"
    opened = Repository.open(ObjectStore(store_dir))
    assert opened.config == repo.config and opened.path == "store:s" and opened.index_cache is not None
    # Missing and damaged configurations.
    (tmp_path / "u").mkdir()
    with pytest.raises(RepositoryError) as err:
        Repository.open(ObjectStore(tmp_path / "u"))
    assert str(err.value) == ("store:u is not a Lifeboat repository (no lifeboat-repo.json); "
                              "check the location, or create one with: lifeboat repo init")
    (store_dir / CONFIG_FILE).write_text("{")
    with pytest.raises(RepositoryError) as err:
        Repository.open(ObjectStore(store_dir))
    assert str(err.value) == f"{store_dir / CONFIG_FILE} is damaged or unreadable"


def test_an_encrypted_object_store_repository(tmp_path):
    repo = Repository.init(ObjectStore(tmp_path / "s"), encryption=NewEncryption(PASSPHRASE, CHEAP))
    names = sorted(str(p.relative_to(tmp_path / "s")) for p in (tmp_path / "s").rglob("*") if p.is_file())
    assert names == sorted([f"keys/{repo.key_id}.json", CONFIG_FILE])
    assert repo.recovery_code and repo.config["version"] == 2
    opened = Repository.open(ObjectStore(tmp_path / "s"), Unlock(passphrase=PASSPHRASE))
    assert opened.sealer.master == repo.sealer.master


def test_a_local_repository_keeps_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    assert Repository.init(tmp_path / "r").index_cache is None
    assert Repository.open(tmp_path / "r").index_cache is None


# -- reading under the shared lock ------------------------------------------------------
def test_reading_holds_a_shared_lock_and_leaves_it(tmp_path):
    repo = Repository.init(tmp_path / "r")
    with repo.reading("restore") as lock:
        assert lock is not None and lock.held and not lock.exclusive
        held = json.loads((tmp_path / "r" / lock.name).read_text())
        assert held["purpose"] == "restore" and held["mode"] == "shared"
    assert not (tmp_path / "r" / lock.name).exists() and repo.unlocked is None


def test_reading_is_refused_while_data_is_deleted(tmp_path):
    repo = Repository.init(tmp_path / "r")
    prune = Lock(repo.storage, exclusive=True, purpose="prune")
    prune.acquire()
    try:
        with pytest.raises(BusyError):
            with repo.reading("restore"):
                pytest.fail("read while a prune held the lock")
    finally:
        prune.release()


def test_a_repository_that_cannot_be_locked_is_read_without_the_lock(tmp_path, caplog):
    Repository.init(tmp_path / "r")
    repo = Repository.open(Failing(tmp_path / "r", StorageError("the drive is read-only"), writes=True))
    with caplog.at_level(logging.WARNING, logger="recovery.repo.repository"):
        with repo.reading("restore") as lock:
            assert lock is None
    assert repo.unlocked == "cannot lock the repository: the drive is read-only"
    assert [r.getMessage() for r in caplog.records if r.name == "recovery.repo.repository"] == [
        "reading the repository without a lock: cannot lock the repository: the drive is read-only"]


def test_a_server_gone_while_locking_is_not_read_without_the_lock(tmp_path):
    Repository.init(tmp_path / "r")
    repo = Repository.open(Failing(tmp_path / "r", UnreachableError("the server stopped answering"), writes=True))
    with pytest.raises(UnreachableError):
        with repo.reading("restore"):
            pytest.fail("read without a lock while the server was gone")
    assert repo.unlocked is None


# -- manifests --------------------------------------------------------------------------
def part(number=1, fs="ext4", label="root"):
    return PartitionImage(number, 2048, 4 << 20, fs, label, None, 4096, False, 3 << 20)


def test_a_manifest_is_written_exactly_and_named_by_its_hash(tmp_path):
    for version in (1, 2):
        repo = Repository.init(tmp_path / f"v{version}", version=version)
        made = manifest(parts=[part()])
        sid = repo.write_manifest(made)
        raw = (tmp_path / f"v{version}" / "snapshots" / f"{sid}.json").read_bytes()
        assert raw == (json.dumps(made.to_json(), sort_keys=True, indent=1) + "\n").encode()
        assert sid == blake3.blake3(raw).hexdigest() and made.id == sid
        assert (tmp_path / f"v{version}" / parity_name(f"snapshots/{sid}.json")).exists() is (version == 2)
        loaded = repo.load_manifest(sid)
        assert loaded.to_json() == made.to_json() and loaded.id == sid
        assert repo.snapshot_ids() == [sid]


def test_snapshot_ids_are_the_manifests_only_in_order(tmp_path):
    repo = Repository.init(tmp_path / "r")
    ids = sorted(repo.write_manifest(manifest(created=f"2026-12-01T10:0{i}:00Z")) for i in range(3))
    snaps = tmp_path / "r" / "snapshots"
    (snaps / "notes.txt").write_text("x")
    (snaps / "old").mkdir()
    (snaps / "old" / "x.json").write_text("{}")
    (snaps / "x.jsonx").write_text("{}")
    assert repo.snapshot_ids() == ids


def test_a_missing_or_foreign_manifest(tmp_path):
    repo = Repository.init(tmp_path / "r")
    with pytest.raises(RepositoryError) as err:
        repo.load_manifest("ab" * 32)
    assert str(err.value) == f"no snapshot abababab in {tmp_path / 'r'}"
    bodies = {
        "unsupported": (json.dumps(manifest().to_json() | {"version": 99}).encode(), RepositoryError,
                        "has an unsupported format"),
        "other format": (json.dumps(manifest().to_json() | {"format": "x"}).encode(), RepositoryError,
                         "has an unsupported format"),
        "not json": (b"\xff not json", DamageError, "its manifest cannot be read"),
        "a list": (b"[1]", DamageError, "its manifest cannot be read"),
        "a field missing": (json.dumps({k: v for k, v in manifest().to_json().items() if k != "name"}).encode(),
                            DamageError, "its manifest cannot be read"),
        "a wrong field": (json.dumps(manifest().to_json() | {"boot_areas": [{"x": 1}]}).encode(),
                          DamageError, "its manifest cannot be read"),
    }
    for what, (raw, kind, message) in bodies.items():
        sid = blake3.blake3(raw).hexdigest()
        (tmp_path / "r" / "snapshots" / f"{sid}.json").write_bytes(raw)
        with pytest.raises(kind) as err:
            repo.load_manifest(sid)
        said = f"snapshot {sid[:8]} {message}" if kind is RepositoryError else f"snapshot {sid[:8]}: {message}"
        assert type(err.value) is kind and str(err.value) == said, what


def flip_file(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_damaged_manifest_is_repaired_from_its_parity_or_named(tmp_path):
    for version in (1, 2):
        repo = Repository.init(tmp_path / f"v{version}", version=version)
        made = manifest(parts=[part()])
        sid = repo.write_manifest(made)
        name = f"snapshots/{sid}.json"
        flip_file(tmp_path / f"v{version}" / name, 20)
        if version == 1:
            with pytest.raises(DamageError) as err:
                repo.load_manifest(sid)
            assert str(err.value) == f"snapshot {sid[:8]}: its manifest file is damaged"
            assert repo.repaired_in_memory == set()
        else:
            assert repo.load_manifest(sid).to_json() == made.to_json()
            assert repo.repaired_in_memory == {name}


def test_a_damaged_manifest_without_parity_is_named(tmp_path):
    repo = Repository.init(tmp_path / "r")
    sid = repo.write_manifest(manifest())
    name = f"snapshots/{sid}.json"
    raw = (tmp_path / "r" / name).read_bytes()
    (tmp_path / "r" / parity_name(name)).unlink()
    flip_file(tmp_path / "r" / name, 10)
    with pytest.raises(DamageError) as err:
        repo.load_manifest(sid)
    assert str(err.value) == f"snapshot {sid[:8]}: its manifest file is damaged"
    assert repo.repaired_in_memory == set()


def test_an_unreadable_manifest_is_repaired_or_named(tmp_path):
    for version in (1, 2):
        Repository.init(tmp_path / f"v{version}", version=version)
        sid = Repository.open(tmp_path / f"v{version}").write_manifest(manifest())
        name = f"snapshots/{sid}.json"
        repo = Repository.open(Failing(tmp_path / f"v{version}", StorageError("Input/output error"), bad=[name]))
        if version == 1:
            with pytest.raises(DamageError) as err:
                repo.load_manifest(sid)
            assert str(err.value) == f"snapshot {sid[:8]}: its manifest cannot be read (Input/output error)"
        else:
            # Read around the bad sectors is not possible here (every read fails): no repair either.
            with pytest.raises(DamageError, match="its manifest cannot be read"):
                repo.load_manifest(sid)
        gone = Repository.open(Failing(tmp_path / f"v{version}", UnreachableError("gone"), bad=[name]))
        with pytest.raises(UnreachableError):
            gone.load_manifest(sid)


def test_an_unreadable_v2_manifest_comes_back_through_its_parity(tmp_path):
    repo = Repository.init(tmp_path / "r")
    made = manifest(parts=[part()])
    sid = repo.write_manifest(made)
    name = f"snapshots/{sid}.json"

    class OneBadRead(LocalStorage):
        def read(self, n, offset=0, length=None):
            if n == name and offset == 0 and length is None:
                raise StorageError("Input/output error")
            return super().read(n, offset, length)

        def read_into(self, n, offset, view):
            return super().read_into(n, offset, view)

    reader = Repository.open(OneBadRead(tmp_path / "r"))
    loaded = reader.load_manifest(sid)        # the whole read fails; read piece by piece, it is whole
    assert loaded.to_json() == made.to_json() and reader.repaired_in_memory == {name}


def test_manifests_come_from_the_cache_when_its_copy_is_right(tmp_path, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    repo = Repository.init(ObjectStore(tmp_path / "s"))
    first = manifest(name="a")
    sid = repo.write_manifest(first)
    cached = repo.index_cache.folder / "snapshots" / f"{sid}.json"
    assert cached.read_bytes() == (tmp_path / "s" / "snapshots" / f"{sid}.json").read_bytes()
    (tmp_path / "s" / "snapshots" / f"{sid}.json").unlink()
    (tmp_path / "s" / parity_name(f"snapshots/{sid}.json")).unlink()
    assert Repository.open(ObjectStore(tmp_path / "s")).load_manifest(sid).name == "a"
    # A wrong cached copy is not used; the store's copy is, and it is cached on the way.
    second = manifest(name="b")
    sid2 = Repository.open(ObjectStore(tmp_path / "s")).write_manifest(second)
    cached2 = repo.index_cache.folder / "snapshots" / f"{sid2}.json"
    cached2.write_bytes(cached2.read_bytes().replace(b'"b"', b'"c"'))
    assert Repository.open(ObjectStore(tmp_path / "s")).load_manifest(sid2).name == "b"
    cached2.unlink()
    assert Repository.open(ObjectStore(tmp_path / "s")).load_manifest(sid2).name == "b"
    assert cached2.read_bytes() == (tmp_path / "s" / "snapshots" / f"{sid2}.json").read_bytes()
    # Deleting the snapshot drops its copy too.
    Repository.open(ObjectStore(tmp_path / "s")).delete_snapshot(sid2)
    assert not cached2.exists() and not (tmp_path / "s" / "snapshots" / f"{sid2}.json").exists()


def test_an_encrypted_manifest_is_sealed_and_checked(tmp_path):
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption(PASSPHRASE, CHEAP))
    made = manifest(name="secret-machine")
    sid = repo.write_manifest(made)
    raw = (tmp_path / "r" / "snapshots" / f"{sid}.json").read_bytes()
    assert b"secret-machine" not in raw and sid == blake3.blake3(raw).hexdigest()
    assert repo.load_manifest(sid).name == "secret-machine"
    # Sealed with another key: the name matches its hash, the seal does not open.
    other = Repository.init(tmp_path / "o", encryption=NewEncryption(PASSPHRASE, CHEAP))
    foreign = other.sealer.seal(b"{}", AAD_MANIFEST)
    fid = blake3.blake3(foreign).hexdigest()
    (tmp_path / "r" / "snapshots" / f"{fid}.json").write_bytes(foreign)
    with pytest.raises(DamageError) as err:
        repo.load_manifest(fid)
    assert str(err.value) == f"snapshot {fid[:8]}: its manifest is forged or altered (it fails authentication)"


# -- listing and choosing snapshots -----------------------------------------------------
def test_snapshots_list_their_facts_in_time_order(tmp_path):
    repo = Repository.init(tmp_path / "r")
    late = repo.write_manifest(manifest(name="a", created="2026-12-01T12:00:00Z", serial="S1", parts=[part()]))
    early = repo.write_manifest(manifest(name="b", created="2026-12-01T09:00:00Z"))
    infos = repo.snapshots()
    assert [s.id for s in infos] == [early, late]
    info = infos[1]
    assert info.to_json() == {
        "id": late, "short_id": late[:8], "name": "a", "created": "2026-12-01T12:00:00Z",
        "disk_size": 1 << 20, "disk_model": "disk-a", "disk_serial": "S1", "bytes_used": 111,
        "bytes_stored_new": 22,
        "partitions": [{"number": 1, "fs": "ext4", "label": "root", "size": 4 << 20, "used": 3 << 20}],
        "verified": None, "damaged": None}
    assert infos[0].disk_serial is None
    assert [s.id for s in repo.snapshots("a")] == [late] and repo.snapshots("zz") == []
    bare = Manifest("c", "2026-12-01T08:00:00Z", "t", 4096, {}, Layout("none", 512, 1 << 20), [], [])
    bid = repo.write_manifest(bare)
    assert [(s.bytes_used, s.bytes_stored_new, s.disk_model) for s in repo.snapshots("c")] == [(0, 0, None)]
    assert repo.snapshots()[0].id == bid


def test_a_damaged_manifest_is_listed_as_damaged_and_never_latest(tmp_path):
    repo = Repository.init(tmp_path / "r", version=1)
    good = repo.write_manifest(manifest(created="2026-12-01T09:00:00Z"))
    bad = repo.write_manifest(manifest(created="2026-12-01T11:00:00Z"))
    flip_file(tmp_path / "r" / "snapshots" / f"{bad}.json", 10)
    infos = {s.id: s for s in repo.snapshots()}
    assert infos[bad].to_json() == {
        "id": bad, "short_id": bad[:8], "name": "(damaged)", "created": "", "disk_size": 0,
        "disk_model": None, "disk_serial": None, "bytes_used": 0, "bytes_stored_new": 0, "partitions": [],
        "verified": None, "damaged": [f"snapshot {bad[:8]}: its manifest file is damaged"]}
    assert [s.id for s in repo.snapshots()] == [bad, good]     # "" sorts first
    # Its name is unknown: it is listed whatever name is asked for.
    assert [s.id for s in repo.snapshots("pc")] == [bad, good] and [s.id for s in repo.snapshots("x")] == [bad]
    assert repo.resolve("latest") == good


def test_resolve(tmp_path):
    repo = Repository.init(tmp_path / "r")
    with pytest.raises(RepositoryError) as err:
        repo.resolve("latest")
    assert str(err.value) == "the repository holds no snapshot"
    a1 = repo.write_manifest(manifest(name="a", created="2026-12-01T09:00:00Z", serial="SA"))
    a2 = repo.write_manifest(manifest(name="a", created="2026-12-01T10:00:00Z", serial="SA"))
    assert repo.resolve("latest") == a2
    b1 = repo.write_manifest(manifest(name="b", created="2026-12-01T11:00:00Z", serial="SB"))
    with pytest.raises(RepositoryError) as err:
        repo.resolve("latest")
    assert str(err.value) == "the repository holds backups of several computers (a, b); choose one with --name"
    assert repo.resolve("latest", name="a") == a2 and repo.resolve("latest", name="b") == b1
    assert repo.resolve("latest", serial="SA") == a2 and repo.resolve("latest", serial="SB") == b1
    assert repo.resolve("latest", name="a", serial="SB") == a2
    with pytest.raises(RepositoryError, match="several computers"):
        repo.resolve("latest", serial="nope")
    with pytest.raises(RepositoryError) as err:
        repo.resolve("latest", name="c")
    assert str(err.value) == "the repository holds no snapshot named 'c'"
    assert repo.resolve(a1) == a1 and repo.resolve(a1[:6].upper()) == a1
    with pytest.raises(RepositoryError) as err:
        repo.resolve("zz")
    assert str(err.value) == f"no snapshot 'zz' in {tmp_path / 'r'}"
    common = os.path.commonprefix([a1, a2, b1])
    ids = [a1, a2, b1]
    # Find two ids sharing a first letter, or make the prefix empty (matches all).
    shared = next((i[:1] for i in ids if sum(j.startswith(i[:1]) for j in ids) > 1), common)
    with pytest.raises(RepositoryError) as err:
        repo.resolve(shared)
    assert str(err.value) == f"snapshot {shared!r} is ambiguous: give more of its id"


# -- check marks ------------------------------------------------------------------------
def test_marks_verified_then_damaged_then_verified(tmp_path):
    repo = Repository.init(tmp_path / "r")
    sid = repo.write_manifest(manifest())
    assert repo.verified_at(sid) is None and repo.damage_marked(sid) is None
    repo.mark_verified(sid)
    when = repo.verified_at(sid)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", when)
    assert json.loads((tmp_path / "r" / "verified" / f"{sid}.json").read_text()) == {"time": when}
    assert repo.snapshots()[0].verified == when
    repo.mark_damaged(sid, ["partition 1: chunk x", "boot area"])
    mark = json.loads((tmp_path / "r" / "damaged" / f"{sid}.json").read_text())
    assert sorted(mark) == ["damage", "time"] and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", mark["time"])
    assert not (tmp_path / "r" / "verified" / f"{sid}.json").exists()
    assert repo.damage_marked(sid) == ["partition 1: chunk x", "boot area"]
    info = repo.snapshots()[0]
    assert info.verified is None and info.damaged == ["partition 1: chunk x", "boot area"]
    repo.mark_verified(sid)          # written, and the verified mark written back: damage wins until then
    assert repo.damage_marked(sid) is None and not (tmp_path / "r" / "damaged" / f"{sid}.json").exists()
    repo.mark_damaged(sid, [])
    assert repo.damage_marked(sid) == ["damaged"]
    # Both marks present (a crash between writing one and removing the other): damage wins.
    (tmp_path / "r" / "verified" / f"{sid}.json").write_text(json.dumps({"time": "2026-01-01T00:00:00Z"}))
    info = repo.snapshots()[0]
    assert info.verified is None and info.damaged == ["damaged"]
    for bad in ("{", "[]", '{"time": 1}', '{"damage": 5}'):
        (tmp_path / "r" / "damaged" / f"{sid}.json").write_text(bad)
        assert repo.damage_marked(sid) == ["its damage mark is unreadable: run verify again"], bad
    (tmp_path / "r" / "damaged" / f"{sid}.json").write_text('{"damage": [1, "x"]}')
    assert repo.damage_marked(sid) == ["1", "x"]
    for bad in ("{", "[]", "{}"):
        (tmp_path / "r" / "verified" / f"{sid}.json").write_text(bad)
        assert repo.verified_at(sid) is None
    repo.delete_snapshot(sid)
    assert repo.snapshot_ids() == [] and repo.damage_marked(sid) is None
    assert not any(any((tmp_path / "r" / sub).iterdir()) for sub in ("snapshots", "verified", "damaged"))


def test_a_repository_that_refuses_writes_keeps_no_marks(tmp_path):
    repo = Repository.init(tmp_path / "r")
    sid = repo.write_manifest(manifest())
    for error in (StorageError("read-only"), OSError(30, "Read-only file system")):
        ro = Repository.open(Failing(tmp_path / "r", error, writes=True))
        ro.mark_verified(sid)
        ro.mark_damaged(sid, ["x"])
        assert ro.verified_at(sid) is None and ro.damage_marked(sid) is None
    unreadable = Repository.open(Failing(tmp_path / "r", StorageError("Input/output error"), bad=["damaged/"]))
    repo.mark_damaged(sid, ["x"])
    assert unreadable.damage_marked(sid) == ["its damage mark is unreadable: run verify again"]


def test_an_encrypted_repository_seals_its_marks_to_their_snapshot(tmp_path):
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption(PASSPHRASE, CHEAP))
    one = repo.write_manifest(manifest(name="one"))
    two = repo.write_manifest(manifest(name="two"))
    repo.mark_damaged(one, ["partition 2: /home/secret.txt"])
    repo.mark_verified(two)
    assert b"secret" not in (tmp_path / "r" / "damaged" / f"{one}.json").read_bytes()
    assert repo.damage_marked(one) == ["partition 2: /home/secret.txt"] and repo.verified_at(two)
    # Moved to the other snapshot, neither opens.
    os.replace(tmp_path / "r" / "damaged" / f"{one}.json", tmp_path / "r" / "damaged" / f"{two}.json")
    os.replace(tmp_path / "r" / "verified" / f"{two}.json", tmp_path / "r" / "verified" / f"{one}.json")
    assert repo.damage_marked(two) == ["its damage mark is unreadable: run verify again"]
    assert repo.verified_at(one) is None


# -- reading blobs ----------------------------------------------------------------------
def test_the_read_path_names_each_failure(tmp_path):
    repo = Repository.init(tmp_path / "r", version=1)
    raw = os.urandom(3000)
    (bid,) = store(repo, [raw])
    loc = repo.index.get(bid)
    name = pack_name(loc.pack_id)
    assert repo.read_blob(bid) == raw and repo.read_at(bid, loc) == raw
    missing = blob_id(b"never stored")
    with pytest.raises(DamageError) as err:
        repo.read_blob(missing)
    assert str(err.value) == f"chunk {missing.hex()[:16]} is missing from the repository"
    for error, message in ((StorageError("Input/output error"), "Input/output error"),
                           (OSError(5, "Input/output error"), "Input/output error"),
                           (FileNotFoundError(2, "No such file"), "it is missing")):
        failing = Repository.open(Failing(tmp_path / "r", error, bad=[name]))
        for read in (lambda: failing.read_blob(bid), lambda: failing.read_at(bid, loc)):
            with pytest.raises(DamageError) as err:
                read()
            assert str(err.value) == f"pack {loc.pack_id[:16]} cannot be read: {message}"
    gone = Repository.open(Failing(tmp_path / "r", UnreachableError("gone"), bad=[name]))
    with pytest.raises(UnreachableError):
        gone.read_blob(bid)


def test_decode_checks_what_it_returns(tmp_path):
    repo = Repository.init(tmp_path / "r")
    raw = b"text " * 1000
    bid = blob_id(raw)
    packed = zstandard.ZstdCompressor().compress(raw)
    assert repo.decode(bid, packed, len(raw), CODEC_ZSTD, KIND_DATA) == raw
    assert repo.decode(bid, raw, len(raw), CODEC_RAW, KIND_DATA) == raw
    with pytest.raises(DamageError) as err:
        repo.decode(bid, b"not zstd" * 10, len(raw), CODEC_ZSTD, KIND_DATA)
    assert str(err.value) == f"chunk {bid.hex()[:16]} is damaged (cannot decompress)"
    for stored, length, codec in ((packed, len(raw) - 1, CODEC_ZSTD), (raw + b"x", len(raw) + 1, CODEC_RAW),
                                  (raw[:-1] + b"X", len(raw), CODEC_RAW), (raw, len(raw) + 1, CODEC_RAW)):
        with pytest.raises(DamageError) as err:
            repo.decode(bid, stored, length, codec, KIND_DATA)
        assert str(err.value) in (f"chunk {bid.hex()[:16]} is damaged (hash mismatch)",
                                  f"chunk {bid.hex()[:16]} is damaged (cannot decompress)")
    with pytest.raises(DamageError, match="hash mismatch"):
        repo.decode(bid, raw + b"x", len(raw), CODEC_RAW, KIND_DATA)


def test_an_encrypted_blob_that_fails_authentication_is_named(tmp_path):
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption(PASSPHRASE, CHEAP))
    raw = os.urandom(2000)
    bid = repo.blob_id(raw)
    sealed = repo.sealer.seal_blob(bid, KIND_DATA, raw)
    assert repo.decode(bid, sealed, len(raw), CODEC_RAW, KIND_DATA) == raw
    with pytest.raises(DamageError) as err:
        repo.decode(bid, sealed[:-1] + bytes([sealed[-1] ^ 1]), len(raw), CODEC_RAW, KIND_DATA)
    assert str(err.value) == f"chunk {bid.hex()[:16]} is damaged or forged (it fails authentication)"


def test_a_repaired_pack_is_kept_for_the_blobs_read_after_it(tmp_path, monkeypatch):
    from recovery.repo import repository as module

    repo = Repository.init(tmp_path / "r")
    blobs = [os.urandom(100) for _ in range(3)]      # all three in one sector of the pack
    ids = store(repo, blobs)
    loc = repo.index.get(ids[0])
    pack = tmp_path / "r" / pack_name(loc.pack_id)
    for i in ids:
        flip_file(pack, repo.index.get(i).offset + 5)
    calls = []
    real = module.repair_object

    def counted(*args, **kw):
        calls.append(args[1])
        return real(*args, **kw)

    monkeypatch.setattr(module, "repair_object", counted)
    reader = Repository.open(tmp_path / "r")
    assert [reader.read_blob(i) for i in ids] == blobs
    assert calls == [pack_name(loc.pack_id)] and reader.repaired_in_memory == {pack_name(loc.pack_id)}
    reader.forget_repairs()
    assert reader.read_blob(ids[0]) == blobs[0] and len(calls) == 2
    # Parity gone: the blob's own damage is what is said.
    (tmp_path / "r" / parity_name(pack_name(loc.pack_id))).unlink()
    fresh = Repository.open(tmp_path / "r")
    with pytest.raises(DamageError, match="hash mismatch"):
        fresh.read_blob(ids[1])
    assert fresh.repaired_in_memory == set()


# -- compression ------------------------------------------------------------------------
def test_compression_pays_or_the_bytes_stay_raw():
    with pytest.raises(UsageError) as err:
        Compressor(zstandard.MAX_COMPRESSION_LEVEL + 1)
    assert str(err.value) == (f"zstd level {zstandard.MAX_COMPRESSION_LEVEL + 1} is out of range: "
                              f"the highest is {zstandard.MAX_COMPRESSION_LEVEL}")
    top = Compressor(zstandard.MAX_COMPRESSION_LEVEL, threads=1)
    assert top.compress(bytes(100))[1] == CODEC_ZSTD
    one = Compressor(3, threads=1)
    noise = os.urandom(6400)
    assert one.compress(noise) == (noise, CODEC_RAW)
    assert one.compress(bytearray(noise))[0] == noise and type(one.compress(bytearray(noise))[0]) is bytes
    packed, codec = one.compress(bytes(6400))
    assert codec == CODEC_ZSTD and zstandard.ZstdDecompressor().decompress(packed, max_output_size=6400) == bytes(6400)
    assert one.starved_s > 0
    # The edge: saving exactly 1/64 is not enough, one byte more is.
    for size in range(64 * 20, 64 * 60, 64):
        raw = os.urandom(size - size // 64 - 40) + bytes(size // 64 + 40)
        stored, codec = one.compress(raw)
        saved = len(raw) - len(zstandard.ZstdCompressor(level=3).compress(raw))
        assert codec == (CODEC_ZSTD if saved > len(raw) // 64 else CODEC_RAW)


def test_a_machine_named_like_damage_can_still_be_latest(tmp_path):
    repo = Repository.init(tmp_path / "r")
    sid = repo.write_manifest(manifest(name="(damaged)"))
    assert repo.resolve("latest") == sid


def test_a_prefix_two_snapshots_share_is_ambiguous(tmp_path):
    repo = Repository.init(tmp_path / "r")
    ids: list[str] = []
    while not any(sum(j[0] == i[0] for j in ids) == 2 for i in ids):
        ids.append(repo.write_manifest(manifest(created=f"2026-12-01T10:00:{len(ids):02d}Z")))
    letter = next(i[0] for i in ids if sum(j[0] == i[0] for j in ids) == 2)
    with pytest.raises(RepositoryError) as err:
        repo.resolve(letter)
    assert str(err.value) == f"snapshot {letter!r} is ambiguous: give more of its id"


def test_defaults_a_caller_relies_on(tmp_path):
    from recovery.repo.repository import SnapshotInfo

    assert NewEncryption("x").kdf == KdfParams()
    info = SnapshotInfo("i", "i", "n", "c", 0, None, None, 0, 0)
    assert (info.partitions, info.verified, info.damaged) == ([], None, None)
    repo = Repository.init(tmp_path / "r")
    level3 = zstandard.ZstdCompressor(level=3).compress
    text = b"".join(b"line %d of a log file, somewhat repetitive\n" % (i * 7919 % 1000) for i in range(4000))
    assert level3(text) != zstandard.ZstdCompressor(level=4).compress(text)
    with repo.writer() as session:
        assert session.compressor.compress(text) == (level3(text), CODEC_ZSTD)


def test_the_storage_given_is_the_one_kept(tmp_path):
    given = LocalStorage(tmp_path / "r")
    repo = Repository.init(given)
    assert repo.storage is given and Repository.open(LocalStorage(tmp_path / "r")).path == tmp_path / "r"
    other = Repository.init(tmp_path / "s")
    repo.sealer = other.sealer
    assert repo.sealer is None
    enc = Repository.init(tmp_path / "e", encryption=NewEncryption(PASSPHRASE, CHEAP))
    repo.sealer = enc.sealer
    assert repo.sealer is enc.sealer


def test_a_folder_that_refuses_new_entries_is_one_line(tmp_path):
    from tests.conftest import run

    where = tmp_path / "r"
    where.mkdir()
    run("chattr", "+i", where)         # not even root may add to it
    try:
        with pytest.raises(RepositoryError) as err:
            Repository.init(where)
    finally:
        run("chattr", "-i", where)
    assert str(err.value) == (f"cannot create a repository: no permission to write to {where} (Operation not "
                              "permitted): check who may write there (the folder's or the share's permissions), or "
                              "choose another repository")


def test_a_repository_whose_folders_refuse_writes_takes_no_backup_and_says_why(tmp_path):
    """An existing repository this user may read but not write (an immutable folder here; a
    read-only share or export is the same to the program): one line, exit 5, nothing written."""
    from tests.conftest import run
    from tests.fsimages import make_ext4

    repo = tmp_path / "repo"
    Repository.init(repo)
    source = make_ext4(tmp_path / "src.img", 8 * 1024 * 1024)
    folders = [repo, *[p for p in repo.iterdir() if p.is_dir()]]
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    run("chattr", "+i", *folders)
    try:
        out = subprocess.run([sys.executable, "-m", "recovery", "backup", str(source), "--repo", str(repo)],
                             capture_output=True, text=True)
    finally:
        run("chattr", "-i", *folders)
    assert out.returncode == 5, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert f"no permission to write to {repo} (Operation not permitted)" in out.stderr
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before


def test_time_waiting_for_a_compression_context_is_summed():
    import time

    one = Compressor(3, threads=1)
    started = time.perf_counter()
    one.compress(b"a" * 1000)
    assert one.starved_s == 0.0                  # a context's first use waited for nothing
    for _ in range(2):
        time.sleep(0.05)
        one.compress(b"a" * 1000)
    assert 0.1 <= one.starved_s <= time.perf_counter() - started


def compressed_to(size: int, target: int) -> bytes:
    """Bytes of `size` whose zstd level-3 form is exactly `target` bytes long: random bytes with
    a run of zeros inside (each random byte more costs about one byte more)."""
    import random

    level3 = zstandard.ZstdCompressor(level=3).compress
    noise = random.Random(size).randbytes(size)
    for k in range(size - size // 16, size):
        raw = noise[:1000] + bytes(size - k) + noise[1000:k]
        if len(level3(raw)) == target:
            return raw
    pytest.fail(f"no {size}-byte input compresses to {target} bytes")


def test_compression_must_save_more_than_a_64th():
    one = Compressor(3, threads=1)
    size = 6400                                  # a 64th is 100 bytes, a 65th 98
    for target, codec in ((6300, CODEC_RAW), (6299, CODEC_ZSTD), (6301, CODEC_RAW)):
        raw = compressed_to(size, target)
        stored, got = one.compress(raw)
        assert got == codec and (stored == raw if codec == CODEC_RAW else len(stored) == target), target


@pytest.mark.parametrize("text, size", [("", 64 * 1024 * 1024), ("16777216", 16777216), (" 4096 ", 4096),
                                        ("1", 1), ("0", None), ("8M", None), ("-5", None), ("1e6", None)])
def test_pack_size_is_a_whole_number_of_bytes_or_a_usage_line(monkeypatch, text, size):
    from recovery.repo.repository import pack_size

    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", text)
    if size is not None:
        assert pack_size() == size
    else:
        with pytest.raises(UsageError) as err:
            pack_size()
        assert str(err.value) == (f"LIFEBOAT_PACK_SIZE={text.strip()!r} is not a size: give it in bytes, "
                                  "such as 16777216 for 16 MiB")
