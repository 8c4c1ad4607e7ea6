"""`repo upgrade` (recovery/repo/upgrade.py) in process, on a small format 1 repository in a
real folder: what it counts and writes, the config rewritten last and only when every object
is protected, objects that already have a sidecar (an interrupted run resumed), damage of each
kind named and left without parity, and the faults met on the way (an object removed or
unreadable under the run, the server gone, the config that cannot be written, a lock held,
a cancel): each leaves a readable repository that a second run finishes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from recovery.errors import BusyError, Cancelled, RepositoryError
from recovery.events import CancelToken
from recovery.model.layout import Layout
from recovery.repo.format import KIND_DATA
from recovery.repo.keys import KdfParams
from recovery.repo.lock import Lock
from recovery.repo.manifest import Manifest
from recovery.repo.packs import PACK_MAGIC, read_footer
from recovery.repo.parity import make_parity, parity_name, sidecar_matches
from recovery.repo.repository import PARITY_CONFIG, NewEncryption, Repository
from recovery.repo.upgrade import UpgradeResult, _objects, upgrade
from recovery.storage.base import UnreachableError
from recovery.storage.local import LocalStorage
from tests.unit.test_repo_format import store


def _store_sealed(repo: Repository, blobs: list[bytes]) -> None:
    """`store`, for an encrypted repository: keyed ids, sealed blobs."""
    with repo.writer() as session:
        for raw in blobs:
            bid = repo.blob_id(raw)
            stored, codec = session.compressor.compress(raw)
            session.add(bid, session.seal_blob(bid, KIND_DATA, stored), len(raw), KIND_DATA, codec)


def _fill(repo: Repository) -> None:
    """Several packs, two index files and two manifests."""
    for _ in range(2):
        (_store_sealed if repo.encrypted else store)(repo, [os.urandom(20_000) for _ in range(5)])
    for name in ("pc", "laptop"):
        repo.write_manifest(Manifest(name, "2026-12-01T00:00:00Z", "t", 4096, {}, Layout("none", 512, 1 << 20), [], []))


@pytest.fixture
def v1(tmp_path, monkeypatch) -> Repository:
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    _fill(Repository.init(tmp_path / "r", version=1))
    return Repository.open(tmp_path / "r")


def objects_on_disk(root: Path) -> list[str]:
    found = [*root.glob("packs/*/*.pack"), *root.glob("index/*.idx"), *root.glob("snapshots/*.json")]
    return sorted(str(p.relative_to(root)) for p in found)


def protected(root: Path, name: str) -> bool:
    side = root / parity_name(name)
    return side.exists() and sidecar_matches(side.read_bytes(), (root / name).read_bytes())


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def config_on_disk(root: Path) -> dict:
    return json.loads((root / "lifeboat-repo.json").read_text())


class Events:
    """A progress sink that keeps every event and runs `at(event)` (to act on the repository
    mid-run)."""

    def __init__(self, at=None):
        self.seen = []
        self.at = at

    def __call__(self, event):
        self.seen.append(event)
        if self.at:
            self.at(event)


def test_every_object_gets_parity_then_the_config_says_version_2(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    assert sum(n.startswith("packs/") for n in names) >= 4 and sum(n.startswith("index/") for n in names) == 2
    sizes = {n: (root / n).stat().st_size for n in names}
    old = config_on_disk(root)
    seen_lock = []

    def at(event):
        if not seen_lock:
            seen_lock.append(json.loads((root / "lock").read_bytes()))

    events = Events(at)
    result = upgrade(v1, on_event=events)
    assert result == UpgradeResult(1, 2, objects=len(names), added=len(names),
                                   bytes_added=sum((root / parity_name(n)).stat().st_size for n in names))
    assert result.to_json() == {"version_before": 1, "version": 2, "objects": len(names), "added": len(names),
                                "bytes_added": result.bytes_added, "damaged": []}
    assert all(protected(root, n) for n in names)
    assert {n: (root / n).stat().st_size for n in names} == sizes
    # The config: the old one with the version and the parity scheme, written as init writes it.
    new = dict(old, version=2, parity=PARITY_CONFIG)
    assert (root / "lifeboat-repo.json").read_text() == json.dumps(new, indent=2) + "\n"
    assert v1.config == new and v1.parity and Repository.open(root).parity
    # Under the exclusive lock, said to be the upgrade's; released after.
    assert seen_lock[0]["mode"] == "exclusive" and seen_lock[0]["purpose"] == "upgrade"
    assert not (root / "lock").exists()
    # Progress over the objects' bytes, from 0 to all of them.
    seen = events.seen
    assert {e.phase for e in seen} == {"upgrade"} and {e.total for e in seen} == {sum(sizes.values())}
    assert seen[0].done == 0 and seen[-1].done == sum(sizes.values())
    # Again: nothing to add, and the config is not written a second time.
    inode = (root / "lifeboat-repo.json").stat().st_ino
    again = upgrade(Repository.open(root))
    assert again == UpgradeResult(2, 2, objects=len(names))
    assert (root / "lifeboat-repo.json").stat().st_ino == inode


def test_only_packs_index_files_and_manifests_are_listed(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    for stray in ("packs/ab/left.tmp", "index/old/nested.idx", "snapshots/sub/nested.json", "verified/x.json",
                  "tmp/y.pack", "index/a.idx.par", "snapshots/b.json.par"):
        (root / stray).parent.mkdir(parents=True, exist_ok=True)
        (root / stray).write_bytes(b"stray")
    listed = _objects(v1.storage)
    assert listed == [(n, (root / n).stat().st_size) for n in names]


def test_an_interrupted_run_is_resumed_and_a_stale_or_garbled_sidecar_dealt_with(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    # A run killed after its first three sidecars: they are kept as they are.
    done = names[:3]
    for n in done:
        (root / parity_name(n)).write_bytes(make_parity((root / n).read_bytes()))
    kept = {n: (root / parity_name(n)).stat().st_ino for n in done}
    # A sidecar cut short by a copy: no sidecar at all, so it is made again.
    garbled = names[3]
    (root / parity_name(garbled)).write_bytes(b"half a sidecar")
    result = upgrade(v1)
    new = names[3:]
    assert result == UpgradeResult(1, 2, objects=len(names), added=len(new),
                                   bytes_added=sum((root / parity_name(n)).stat().st_size for n in new))
    assert all(protected(root, n) for n in names)
    assert {n: (root / parity_name(n)).stat().st_ino for n in done} == kept


def test_an_object_that_no_longer_matches_its_sidecar_is_left_for_verify_repair(v1):
    root = v1.local_path
    pack = next(n for n in objects_on_disk(root) if n.startswith("packs/"))
    (root / parity_name(pack)).write_bytes(make_parity((root / pack).read_bytes()))
    flip(root / pack, 40)
    sidecar = (root / parity_name(pack)).read_bytes()
    result = upgrade(v1)
    label = f"pack {Path(pack).name[:16]}"
    assert result.damaged == [f"{label} is damaged: run lifeboat verify --repair"]
    assert result.version == 1 and config_on_disk(root)["version"] == 1 and v1.config["version"] == 1
    assert (root / parity_name(pack)).read_bytes() == sidecar       # its parity stays, to repair it from
    assert result.added == result.objects - 1


def test_damage_of_each_kind_is_named_and_gets_no_parity(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    packs = [n for n in names if n.startswith("packs/")]
    index = next(n for n in names if n.startswith("index/"))
    manifest = next(n for n in names if n.startswith("snapshots/"))
    first = read_footer(root / packs[0])[0]
    assert first.offset == len(PACK_MAGIC)
    flip(root / packs[0], first.offset)              # a blob's bytes
    flip(root / packs[1], -1)                        # the footer's magic
    flip(root / index, 40)
    flip(root / manifest, 10)
    before = (root / "lifeboat-repo.json").read_bytes()
    result = upgrade(v1)
    label = {n: Path(n).name[:16] for n in names}
    assert result.damaged == [
        f"index file {Path(index).name} is damaged",
        f"pack {label[packs[0]]}: chunk {first.id.hex()[:16]} is damaged (hash mismatch)",
        f"pack {Path(packs[1]).name} has a damaged footer",
        f"the manifest of snapshot {label[manifest][:8]} is damaged",
    ]
    bad = {packs[0], packs[1], index, manifest}
    assert result.added == len(names) - 4 and result.objects == len(names) and result.version == 1
    assert [n for n in names if (root / parity_name(n)).exists()] == [n for n in names if n not in bad]
    assert (root / "lifeboat-repo.json").read_bytes() == before and v1.config["version"] == 1


def test_an_object_removed_or_unreadable_under_the_run(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    packs = [n for n in names if n.startswith("packs/")]

    def at(event):
        if event.done == 0:           # listed, not yet read: a prune removes one, another breaks
            (root / packs[0]).unlink(missing_ok=True)
            if (root / packs[1]).is_file():
                (root / packs[1]).unlink()
                (root / packs[1]).mkdir()

    result = upgrade(v1, on_event=Events(at))
    assert result.objects == len(names) and result.added == len(names) - 2
    assert result.damaged == [f"pack {Path(packs[1]).name[:16]} cannot be read "
                              f"([Errno 21] Is a directory: '{root / packs[1]}')"]
    assert result.version == 1 and config_on_disk(root)["version"] == 1
    (root / packs[1]).rmdir()
    again = upgrade(Repository.open(root))
    assert again.damaged == [] and again.version == 2 and again.added == 0 and again.objects == len(names) - 2


class GoneServer(LocalStorage):
    """A store whose server stops answering when the packs are read."""

    def read(self, name, offset=0, length=None):
        if name.startswith("packs/"):
            raise UnreachableError("the server stopped answering")
        return super().read(name, offset, length)


def test_a_server_gone_is_not_taken_for_damage(v1):
    root = v1.local_path
    v1.storage = GoneServer(root)
    with pytest.raises(UnreachableError):
        upgrade(v1)
    assert config_on_disk(root)["version"] == 1 and not (root / "lock").exists()


def test_a_config_that_cannot_be_written_leaves_a_v1_repository_that_a_rerun_finishes(v1):
    root = v1.local_path
    names = objects_on_disk(root)
    before = (root / "lifeboat-repo.json").read_bytes()

    def at(event):
        if event.done == event.total and (root / "tmp").is_dir():    # every sidecar written
            (root / "tmp").rename(root / "tmp-away")
            (root / "tmp").write_bytes(b"")          # the config's scratch copy cannot be made

    with pytest.raises(RepositoryError) as err:
        upgrade(v1, on_event=Events(at))
    assert str(err.value) == ("the parity was added but the config could not be rewritten "
                              "(cannot write to the repository: Not a directory); run upgrade again")
    assert (root / "lifeboat-repo.json").read_bytes() == before and v1.config["version"] == 1
    assert all(protected(root, n) for n in names) and not (root / "lock").exists()
    (root / "tmp").unlink()
    (root / "tmp-away").rename(root / "tmp")
    again = upgrade(Repository.open(root))
    assert again == UpgradeResult(1, 2, objects=len(names))
    assert config_on_disk(root)["version"] == 2


def test_a_backup_running_keeps_the_upgrade_out(v1):
    root = v1.local_path
    with Lock(v1.storage, purpose="backup"):
        with pytest.raises(BusyError) as err:
            upgrade(v1)
    assert str(err.value) == (f"the repository is busy: backups or restores are running (backup by process "
                              f"{os.getpid()} on {socket.gethostname()}); wait for them to finish")
    assert not list(root.rglob("*.par")) and config_on_disk(root)["version"] == 1


def test_a_cancel_stops_before_the_next_object_and_changes_no_config(v1):
    root = v1.local_path
    token = CancelToken()
    with pytest.raises(Cancelled):
        upgrade(v1, on_event=Events(lambda event: token.cancel()), cancel=token)
    assert not list(root.rglob("*.par")) and config_on_disk(root)["version"] == 1
    assert not (root / "lock").exists()


def test_an_encrypted_repository_missing_sidecars_gets_them_back(tmp_path, monkeypatch):
    """Encrypted repositories are format 2 from the start; sidecars lost since (deleted, or a
    copy that left them out) are made again, each object proven with the repository's keys."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    repo = Repository.init(tmp_path / "r", encryption=NewEncryption("pw", KdfParams(16, 1, 2)))
    _fill(repo)
    root = repo.local_path
    names = objects_on_disk(root)
    for side in root.rglob("*.par"):
        side.unlink()
    result = upgrade(repo)
    assert result == UpgradeResult(2, 2, objects=len(names), added=len(names),
                                   bytes_added=sum((root / parity_name(n)).stat().st_size for n in names))
    assert all(protected(root, n) for n in names)


class ConfigRefused(LocalStorage):
    """A mounted folder whose write of the config fails with the system's own error."""

    def write(self, name, data):
        if name == "lifeboat-repo.json":
            raise OSError(5, "Input/output error")
        return super().write(name, data)


def test_a_config_write_failing_with_a_system_error_names_it(v1):
    v1.storage = ConfigRefused(v1.local_path)
    with pytest.raises(RepositoryError) as err:
        upgrade(v1)
    assert str(err.value) == ("the parity was added but the config could not be rewritten "
                              "([Errno 5] Input/output error); run upgrade again")
    assert config_on_disk(v1.local_path)["version"] == 1
