"""Browsing a snapshot through the places it recorded (recovery/repo/locations.py): real
backups of a real ext4 image into plain, parity (v2) and encrypted repositories. Reading a
saved partition whole (every byte compared with the image) reads the manifest and pack
ranges only: no index file, no pack footer, and the repository's index is never built. A
snapshot without locations, one whose packs a prune repacked, and one whose tables point at
the wrong place all still read every byte (through the index), and verify names a wrong place.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest

from recovery.backup import backup
from recovery.browse.saved import open_snapshot
from recovery.repo.keys import KdfParams, Unlock
from recovery.repo.locations import LOCATION, PIECE_WINDOWS, SnapshotBlobs
from recovery.repo.packs import pack_path
from recovery.repo.prune import forget, prune
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import NewEncryption, Repository
from recovery.repo.retention import Policy
from recovery.storage.local import LocalStorage
from recovery.verify import verify
from tests import fsimages as fi

MiB = 1024 * 1024
FAST = KdfParams(memory_kib=8 * 1024, iterations=1, parallelism=1)
PASSPHRASE = "correct horse battery"


class CountingStorage(LocalStorage):
    """A repository folder that remembers the name of every object read (whole or a range)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.reads: list[str] = []
        self._count_lock = threading.Lock()

    def _note(self, name: str) -> None:
        with self._count_lock:
            self.reads.append(name)

    def read(self, name, offset=0, length=None):
        self._note(name)
        return super().read(name, offset, length)

    def read_into(self, name, offset, view):
        self._note(name)
        return super().read_into(name, offset, view)


def make_repo(where: Path, kind: str) -> Repository:
    if kind == "encrypted":
        return Repository.init(where, encryption=NewEncryption(PASSPHRASE, FAST))
    return Repository.init(where, version=1 if kind == "plain" else 2)


def reopen(where: Path, kind: str, storage=None) -> Repository:
    unlock = Unlock(passphrase=PASSPHRASE) if kind == "encrypted" else None
    return Repository.open(storage if storage is not None else where, unlock)


def filled_ext4(tmp_path: Path, seed: int, name: str = "fs.img", size: int = 24 * MiB) -> Path:
    """An ext4 image of five random files made in tmp_path/tree (left there to change)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(seed)
    for i in range(5):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(2 * MiB + 977 * i))
    return fi.make_ext4(tmp_path / name, size, tree)


def expected(image: Path, ranges) -> bytes:
    """The image with every byte outside the used ranges zero: what a saved partition reads as."""
    data = image.read_bytes()
    want = bytearray(len(data))
    for off, n in ranges:
        want[off:off + n] = data[off:off + n]
    return bytes(want)


def read_whole(disk) -> tuple[bytes, list]:
    part = disk.partitions[0]
    reader = disk.reader(part.number)
    got = b"".join(reader.read(off, 256 * 1024) for off in range(0, reader.size, 256 * 1024))
    return got, reader.used_ranges()


@pytest.fixture(params=["plain", "parity", "encrypted"])
def saved(request, tmp_path):
    kind = request.param
    image = filled_ext4(tmp_path, 1)
    repo = make_repo(tmp_path / "repo", kind)
    sid = backup(str(image), repo).snapshot
    repo.close()
    return kind, tmp_path / "repo", image, sid, tmp_path


def test_a_whole_partition_reads_without_the_index(saved):
    kind, where, image, sid, _ = saved
    storage = CountingStorage(where.absolute())
    repo = reopen(where, kind, storage)
    storage.reads.clear()               # opening read the configuration (and a key object)
    disk = open_snapshot(repo, sid)
    got, ranges = read_whole(disk)
    assert got == expected(image, ranges)
    assert repo._index is None, "the repository's index was built"
    assert not [n for n in storage.reads if n.startswith("index/")]
    assert {n.split("/")[0] for n in storage.reads} == {"snapshots", "packs"}
    assert f"snapshots/{sid}.json" in storage.reads
    # Every pack read was a blob's range: no footer was read (a footer read goes through
    # read_footer, which the index would need); the count is one per blob at most.
    m = repo.load_manifest(sid)
    assert m.locations is not None and sorted(m.locations["partitions"]) == [str(m.partitions[0].number)]
    disk.close()


def test_the_locations_read_match_the_index(saved):
    """Each recorded place is one the index gives, and SnapshotBlobs reads straight there."""
    kind, where, image, sid, _ = saved
    repo = reopen(where, kind)
    m = repo.load_manifest(sid)
    blobs = SnapshotBlobs(repo, m)
    part = m.partitions[0]
    table = blobs.chunk_table(part)
    for w in range(len(table) // 32):
        bid = table[w * 32:(w + 1) * 32]
        if any(bid):
            assert blobs.chunk(part.number, w, bytes(bid)) == repo.read_blob(bytes(bid))
    assert blobs.fell_back is None and blobs.direct_reads > 0
    report = verify(repo)
    assert report.ok and report.notes == [], report.damaged
    repo.close()


def _rewrite_manifest(repo: Repository, sid: str, change) -> str:
    """A second snapshot made from `sid`'s manifest with `change(manifest)` applied."""
    m = repo.load_manifest(sid)
    change(m)
    return repo.write_manifest(m)


def test_a_snapshot_without_locations_reads_through_the_index(tmp_path):
    image = filled_ext4(tmp_path, 2)
    repo = Repository.init(tmp_path / "repo", version=1)
    sid = backup(str(image), repo).snapshot

    def drop(m):
        m.locations = None
    old = _rewrite_manifest(repo, sid, drop)
    assert b'"locations"' not in (tmp_path / "repo" / "snapshots" / f"{old}.json").read_bytes()
    repo.close()
    repo = Repository.open(tmp_path / "repo")
    disk = open_snapshot(repo, old)
    got, ranges = read_whole(disk)
    assert got == expected(image, ranges)
    assert repo._index is not None        # read the way every snapshot was read before
    assert verify(repo, [old]).ok
    disk.close()


@pytest.mark.parametrize("kind", ["plain", "parity", "encrypted"])
def test_after_a_prune_repacked_its_packs_a_snapshot_still_reads_whole(tmp_path, kind, monkeypatch):
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(4 * MiB))      # several packs, some shared
    first = filled_ext4(tmp_path, 3, "a.img")
    tree = tmp_path / "tree"
    repo = make_repo(tmp_path / "repo", kind)
    backup(str(first), repo, name="pc")
    for i in (0, 2, 4):                   # about half the files change
        (tree / f"f{i}.bin").write_bytes(random.Random(40 + i).randbytes(2 * MiB))
    second = fi.make_ext4(tmp_path / "b.img", 24 * MiB, tree)
    import time
    time.sleep(1.05)
    sid = backup(str(second), repo, name="pc").snapshot
    before = {p.name for p in (tmp_path / "repo" / "packs").glob("*/*.pack")}
    forget(repo, Policy(last=1))
    prune(repo, threshold=100)              # every pack holding any garbage is repacked
    after = {p.name for p in (tmp_path / "repo" / "packs").glob("*/*.pack")}
    assert before - after, "the prune repacked nothing: the test proves nothing"
    m = repo.load_manifest(sid)
    repo.close()

    repo = reopen(tmp_path / "repo", kind)
    disk = open_snapshot(repo, sid)
    got, ranges = read_whole(disk)
    assert got == expected(second, ranges)
    report = verify(repo)
    assert report.ok, report.damaged
    # Places in removed packs are stale, not damage: counted in a note; a reader falls back.
    assert report.notes and "prune" in report.notes[0]
    blobs = SnapshotBlobs(repo, repo.load_manifest(sid))
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size, blobs=blobs)
    assert reader.read(0, reader.size) == got
    assert blobs.fell_back is not None
    disk.close()


def _swap_two_entries(repo: Repository, sid: str) -> str:
    """A snapshot whose location table gives two chunks each other's places (a well-formed
    table, stored and hash-checked like any, that points at the wrong place)."""
    m = repo.load_manifest(sid)
    part = m.partitions[0]
    piece_id = m.locations["partitions"][str(part.number)][0]
    piece = bytearray(repo.read_blob(bytes.fromhex(piece_id)))
    size = LOCATION.size
    used = [w for w in range(len(piece) // size) if any(piece[w * size:(w + 1) * size])]
    a, b = used[1], used[2]
    piece[a * size:(a + 1) * size], piece[b * size:(b + 1) * size] = \
        piece[b * size:(b + 1) * size], piece[a * size:(a + 1) * size]
    with repo.writer() as session:
        new_id = session.add_meta(bytes(piece))
        session.flush()
        loc = repo.index.get(bytes.fromhex(new_id))
    m.locations["partitions"][str(part.number)][0] = new_id
    m.locations["blobs"][new_id] = [loc.pack_id, loc.offset, loc.stored_len, loc.raw_len, loc.kind, loc.codec]
    return repo.write_manifest(m), a


def test_a_table_pointing_at_the_wrong_place_is_not_trusted_and_verify_names_it(saved):
    kind, where, image, sid, _ = saved
    repo = reopen(where, kind)
    wrong, first = _swap_two_entries(repo, sid)
    repo.close()
    repo = reopen(where, kind)
    disk = open_snapshot(repo, wrong)
    got, ranges = read_whole(disk)
    assert got == expected(image, ranges)        # the swapped places failed their id check
    report = verify(repo, [wrong])
    assert not report.ok
    assert [d.message for d in report.damaged] == [
        f"its location table puts 2 chunk(s) at the wrong place (first at byte {first * 1024 * 1024}); "
        "they are read through the index"]
    assert report.damaged[0].partition == disk.partitions[0].number
    assert verify(repo, [sid]).ok                # the original snapshot is untouched
    disk.close()


def test_a_wrong_place_of_a_table_piece_in_the_manifest_is_named(saved):
    kind, where, image, sid, _ = saved
    repo = reopen(where, kind)
    m = repo.load_manifest(sid)
    chunks = m.partitions[0].chunks[0]
    ranges = m.partitions[0].ranges[0]

    def misplace(m):
        m.locations["blobs"][chunks] = m.locations["blobs"][ranges]     # another blob's place
    wrong = _rewrite_manifest(repo, sid, misplace)
    repo.close()
    repo = reopen(where, kind)
    disk = open_snapshot(repo, wrong)
    got, used = read_whole(disk)
    assert got == expected(image, used)
    report = verify(repo, [wrong])
    assert [d.message for d in report.damaged] == [
        f"its manifest records a wrong place for 1 of its table piece(s) (first {chunks[:16]}); "
        "they are read through the index"]
    disk.close()


def test_a_damaged_location_table_falls_back_and_verify_names_it(tmp_path):
    """The bytes of a location-table piece flipped in its pack (no parity to mend them)."""
    image = filled_ext4(tmp_path, 4)
    repo = Repository.init(tmp_path / "repo", version=1)
    sid = backup(str(image), repo).snapshot
    m = repo.load_manifest(sid)
    piece = m.locations["partitions"][str(m.partitions[0].number)][0]
    loc = repo.index.get(bytes.fromhex(piece))
    with open(pack_path(repo.path, loc.pack_id), "r+b") as f:
        f.seek(loc.offset + loc.stored_len // 2)
        f.write(b"\xde\xad\xbe\xef")
    repo.close()
    repo = Repository.open(tmp_path / "repo")
    disk = open_snapshot(repo, sid)
    got, ranges = read_whole(disk)
    assert got == expected(image, ranges)
    report = verify(repo, [sid])
    messages = [d.message for d in report.damaged]
    assert any(msg.startswith("its location table is unreadable") for msg in messages), messages
    assert any(msg.startswith("location table: 1 chunk(s) damaged") for msg in messages), messages
    disk.close()


def test_a_large_partition_has_its_table_in_pieces(tmp_path):
    """More windows than one piece holds: the places are found in the right piece."""
    image = filled_ext4(tmp_path, 5, size=160 * MiB)
    repo = Repository.init(tmp_path / "repo", chunk_size=4096, version=1)
    sid = backup(str(image), repo).snapshot
    m = repo.load_manifest(sid)
    assert m.partitions[0].windows > PIECE_WINDOWS
    assert len(m.locations["partitions"][str(m.partitions[0].number)]) == 3
    repo.close()
    repo = Repository.open(tmp_path / "repo")
    disk = open_snapshot(repo, sid)
    got, ranges = read_whole(disk)
    assert got == expected(image, ranges)
    assert repo._index is None
    assert verify(repo).ok
    disk.close()
