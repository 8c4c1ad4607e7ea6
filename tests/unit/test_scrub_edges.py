"""Scrubbing (recovery/repo/scrub.py) on a small format 2 repository in a real folder: what it
says of each object (labels, messages, the JSON), damage repaired in memory or written back
(the damaged copy kept aside until the repaired one reads back), damaged parity rewritten,
damage beyond the parity, objects without a readable sidecar, and the faults met on the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.errors import Cancelled, DamageError
from recovery.events import CancelToken
from recovery.model.layout import Layout
from recovery.repo.manifest import Manifest
from recovery.repo.parity import HEADER_SIZE, TABLE_BLOCK, make_parity, parity_name, parse_sidecar
from recovery.repo.repository import Repository
from recovery.repo.scrub import DAMAGED_PREFIX, ObjectRepair, object_label, scrub, scrub_object, write_back
from recovery.storage.base import StorageError, UnreachableError
from recovery.storage.local import LocalStorage
from tests.unit.test_repo_format import store

PACK = "packs/ab/" + "ab12" * 16 + ".pack"


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Repository:
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(64 * 1024))
    made = Repository.init(tmp_path / "r")
    store(made, [os.urandom(20_000) for _ in range(12)])
    made.write_manifest(Manifest("pc", "2026-12-01T00:00:00Z", "t", 4096, {}, Layout("none", 512, 1 << 20), [], []))
    return Repository.open(tmp_path / "r")


def packs(repo: Repository) -> list[str]:
    return sorted(str(p.relative_to(repo.local_path)) for p in repo.local_path.glob("packs/*/*.pack"))


def flip(path: Path, *at: int) -> None:
    data = bytearray(path.read_bytes())
    for i in at:
        data[i] ^= 0x01
    path.write_bytes(bytes(data))


class Events:
    def __init__(self):
        self.seen = []

    def __call__(self, event):
        self.seen.append(event)


def test_labels_messages_and_json():
    assert object_label(PACK) == "pack ab12ab12ab12ab12"
    assert object_label("index/" + "cd" * 32 + ".idx") == "index file cdcdcdcdcdcdcdcd"
    assert object_label("snapshots/" + "ef" * 32 + ".json") == "the manifest of snapshot efefefef"
    assert object_label("lifeboat-repo.json") == "lifeboat-repo.json"
    label = "pack ab12ab12ab12ab12"
    none = ObjectRepair(PACK, label, no_parity=True, problem="it is missing")
    assert not none.repaired
    assert none.message() == f"{label} has no readable parity (it is missing); run: lifeboat repo upgrade"
    lost = ObjectRepair(PACK, label, damaged_sectors=5, lost_sectors=3)
    assert not lost.repaired
    assert lost.message() == (f"could not repair {label}: 3 of its 5 damaged sector(s) are beyond what its "
                              "parity repairs")
    memory = ObjectRepair(PACK, label, damaged_sectors=2)
    assert memory.repaired
    assert memory.message() == f"repaired {label}: 2 damaged sector(s) (in memory; run verify --repair to write it back)"
    both = ObjectRepair(PACK, label, damaged_sectors=1, parity_damaged=4, written_back=True)
    assert both.message() == f"repaired {label}: 1 damaged sector(s), 4 damaged sector(s) of its parity (written back)"
    failed = ObjectRepair(PACK, label, parity_damaged=1, problem="the disk is full")
    assert failed.message() == (f"repaired {label}: 1 damaged sector(s) of its parity "
                                "(writing it back failed: the disk is full)")
    assert both.to_json() == {"object": PACK, "damaged_sectors": 1, "lost_sectors": 0, "parity_damaged_sectors": 4,
                              "no_parity": False, "repaired": True, "written_back": True,
                              "message": both.message()}
    assert lost.to_json()["repaired"] is False and none.to_json()["no_parity"] is True


def test_intact_objects_report_nothing_and_progress_counts_their_bytes(repo):
    root = repo.local_path
    names = packs(repo) + sorted(str(p.relative_to(root)) for p in [*root.glob("index/*.idx"),
                                                                    *root.glob("snapshots/*.json")])
    assert names[-1].startswith("snapshots/")
    events = Events()
    assert scrub(repo, names[::-1], on_event=events) == []
    total = sum((root / n).stat().st_size for n in names)
    assert {e.phase for e in events.seen} == {"parity"} and {e.total for e in events.seen} == {total}
    assert events.seen[0].done == 0 and events.seen[-1].done == total
    # A name that is not there counts no bytes, and has no parity to check it against.
    events = Events()
    found = scrub(repo, ["packs/00/" + "00" * 32 + ".pack"], on_event=events)
    assert [f.message() for f in found] == [f"pack {'00' * 8} has no readable parity (it is missing); "
                                            "run: lifeboat repo upgrade"]
    assert {e.total for e in events.seen} == {0} and events.seen[-1].done == 0


def test_damage_is_repaired_in_memory_then_written_back_in_name_order(repo):
    root = repo.local_path
    first, second = packs(repo)[:2]
    originals = {n: (root / n).read_bytes() for n in (first, second)}
    flip(root / first, 100, 101)                          # one sector
    flip(root / second, 100, 700, 1300)                   # three
    found = scrub(repo, [second, first])
    assert [(f.name, f.label, f.damaged_sectors, f.lost_sectors, f.parity_damaged, f.written_back)
            for f in found] == [(first, object_label(first), 1, 0, 0, False),
                                (second, object_label(second), 3, 0, 0, False)]
    assert found[0].message().endswith("(in memory; run verify --repair to write it back)")
    assert (root / first).read_bytes() != originals[first]
    found = scrub(repo, [second, first], fix=True)
    assert [f.written_back for f in found] == [True, True] and all(f.problem == "" for f in found)
    assert {n: (root / n).read_bytes() for n in (first, second)} == originals
    assert not (root / DAMAGED_PREFIX).exists() or not any((root / DAMAGED_PREFIX).rglob("*.pack"))
    assert scrub(repo, [first, second]) == []


def test_damaged_parity_of_an_intact_object_is_rewritten(repo):
    root = repo.local_path
    name = packs(repo)[0]
    side = root / parity_name(name)
    geo = parse_sidecar(side.read_bytes(), "").geometry
    flip(side, HEADER_SIZE + geo.table_blocks * TABLE_BLOCK + 10)      # the first parity sector
    (found,) = scrub(repo, [name])
    assert (found.damaged_sectors, found.parity_damaged, found.written_back) == (0, 1, False)
    (found,) = scrub(repo, [name], fix=True)
    assert found.written_back and found.repaired
    assert side.read_bytes() == make_parity((root / name).read_bytes())
    assert scrub(repo, [name]) == []


def test_damage_beyond_the_parity_is_left_as_it_is(repo):
    root = repo.local_path
    name = packs(repo)[0]
    size = (root / name).stat().st_size
    flip(root / name, *range(0, size, 97))               # every sector
    damaged = (root / name).read_bytes()
    (found,) = scrub(repo, [name], fix=True)
    assert found.lost_sectors == found.damaged_sectors > 0 and not found.repaired and not found.written_back
    assert (root / name).read_bytes() == damaged and not (root / DAMAGED_PREFIX).exists()


def test_objects_without_a_readable_sidecar(repo, tmp_path):
    root = repo.local_path
    missing, garbled, unreadable = packs(repo)[:3]
    (root / parity_name(missing)).unlink()
    (root / parity_name(garbled)).write_bytes(b"not a sidecar")

    class BadSectors(LocalStorage):
        def read(self, name, offset=0, length=None):
            if name == parity_name(unreadable):
                raise StorageError(f"cannot read {name}: Input/output error")
            return super().read(name, offset, length)

        def size(self, name):
            if name == parity_name(unreadable):
                raise StorageError(f"cannot read {name}: Input/output error")
            return super().size(name)

    repo.storage = BadSectors(root)
    scrubbed = scrub(repo, [missing, garbled, unreadable])
    assert {f.name: (f.no_parity, f.problem) for f in scrubbed} == {
        missing: (True, "it is missing"), garbled: (True, "its header is damaged"),
        unreadable: (True, f"cannot read {parity_name(unreadable)}: Input/output error")}
    assert {(f.to_json()["damaged_sectors"], f.to_json()["parity_damaged_sectors"]) for f in scrubbed} == {(0, 0)}


def test_a_write_back_that_fails_keeps_the_damaged_object_and_says_why(repo):
    root = repo.local_path
    name = packs(repo)[0]
    flip(root / name, 100)
    damaged = (root / name).read_bytes()
    (root / "tmp").rename(root / "tmp-away")
    (root / "tmp").write_bytes(b"")
    try:
        (found,) = scrub(repo, [name], fix=True)
    finally:
        (root / "tmp").unlink()
        (root / "tmp-away").rename(root / "tmp")
    assert not found.written_back and found.problem == "cannot write to the repository: Not a directory"
    assert found.message().endswith("(writing it back failed: cannot write to the repository: Not a directory)")
    assert (root / name).read_bytes() == damaged


class LyingFolder(LocalStorage):
    """A drive that does not give back what was written to it."""

    def read_back_digest(self, name):
        return bytes(32)


def test_a_repaired_object_that_does_not_read_back_keeps_the_damaged_copy_aside(repo):
    root = repo.local_path
    name = packs(repo)[0]
    original = (root / name).read_bytes()
    flip(root / name, 100)
    damaged = (root / name).read_bytes()
    with pytest.raises(DamageError) as err:
        write_back(LyingFolder(root), name, damaged, original)
    assert str(err.value) == (f"{object_label(name)} did not read back correctly after repair; "
                              f"the damaged copy is kept as {DAMAGED_PREFIX}{name}")
    assert (root / DAMAGED_PREFIX / name).read_bytes() == damaged
    repo.storage = LyingFolder(root)
    flip(root / name, 100)
    (found,) = scrub(repo, [name], fix=True)
    assert not found.written_back and found.problem == str(err.value)
    write_back(LocalStorage(root), name, damaged, original)
    assert (root / name).read_bytes() == original and not (root / DAMAGED_PREFIX / name).exists()


class GoneServer(LocalStorage):
    """A store whose server stops answering, for reads or for writes."""

    def __init__(self, root, on):
        super().__init__(root)
        self.on = on

    def read(self, name, offset=0, length=None):
        if self.on == "read":
            raise UnreachableError("the server stopped answering")
        return super().read(name, offset, length)

    def write(self, name, data):
        if self.on == "write":
            raise UnreachableError("the server stopped answering")
        return super().write(name, data)


def test_a_server_gone_is_not_taken_for_damage(repo):
    root = repo.local_path
    name = packs(repo)[0]
    repo.storage = GoneServer(root, "read")
    with pytest.raises(UnreachableError):
        scrub(repo, [name])
    flip(root / name, 100)
    repo.storage = GoneServer(root, "write")
    with pytest.raises(UnreachableError):
        scrub(repo, [name], fix=True)
    assert scrub_object(LocalStorage(root), name, False).damaged_sectors == 1


def test_a_cancel_stops_the_scrub(repo):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scrub(repo, packs(repo), cancel=token)


class WritesRefused(LocalStorage):
    """A mounted folder whose writes fail with the system's own error."""

    def write(self, name, data):
        raise OSError(5, "Input/output error")


def test_a_write_back_failing_with_a_system_error_names_it(repo):
    root = repo.local_path
    name = packs(repo)[0]
    flip(root / name, 100)
    repo.storage = WritesRefused(root)
    (found,) = scrub(repo, [name], fix=True)
    assert not found.written_back and found.problem == "[Errno 5] Input/output error"
