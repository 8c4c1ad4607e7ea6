"""A snapshot's recorded places (recovery/repo/locations.py) read from a drive that fails
under the read: the repositories live on a real ext4 image, served through the kernel's FUSE
with one 4 KiB block answering EIO (tests/integration/faulty_disk.py), attached to a loop
device and mounted read-only. The place is right, so the blob comes back from its pack's
parity (counted as read at its place); without parity the drive's failure stands."""

from __future__ import annotations

import random
import subprocess

import pytest

from recovery.backup import backup
from recovery.errors import DamageError
from recovery.repo.format import ID_SIZE
from recovery.repo.locations import LOCATION, PIECE_WINDOWS, SnapshotBlobs, decode_location
from recovery.repo.packs import pack_name
from recovery.repo.repository import Repository
from recovery.storage.base import storage_failure
from tests import fsimages as fi
from tests.integration.faulty_disk import faulty_disk

pytestmark = pytest.mark.loop   # FUSE, loop devices and mounting need root here

MiB = 1024 * 1024


def data_window(repo: Repository, m, blobs: SnapshotBlobs) -> tuple[int, bytes, object]:
    """A stored window of the snapshot's partition: (window, chunk id, recorded place)."""
    part = m.partitions[0]
    table = blobs.chunk_table(part)
    for w in range(len(table) // ID_SIZE):
        bid = table[w * ID_SIZE:(w + 1) * ID_SIZE]
        piece = blobs._piece(part.number, w // PIECE_WINDOWS)
        at = (w % PIECE_WINDOWS) * LOCATION.size
        loc = decode_location(piece[at:at + LOCATION.size])
        if loc is not None and loc.offset >= 8192:     # inside a pack, clear of its header block
            return w, bytes(bid), loc
    raise AssertionError("no stored window")


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    """An ext4 image holding two repositories of one backup, with and without parity; for
    each, the window read and the byte of the image where its chunk lies."""
    tmp = tmp_path_factory.mktemp("failing")
    tree = tmp / "tree"
    tree.mkdir()
    rng = random.Random(7)
    for i in range(3):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(MiB + i))
    source = fi.make_ext4(tmp / "source.img", 8 * MiB, tree)
    held = tmp / "held"
    held.mkdir()
    where = {}
    for name, version in (("parity", None), ("plain", 1)):
        repo = Repository.init(held / name, **({} if version is None else {"version": version}))
        backup(str(source), repo)
        m = repo.load_manifest(repo.resolve("latest"))
        w, bid, loc = data_window(repo, m, SnapshotBlobs(repo, m))
        want = repo.read_blob(bid)
        repo.close()
        where[name] = (m.id, w, bid, loc, want)
    image = fi.make_ext4(tmp / "drive.img", 64 * MiB, held)
    bad = {}
    for name, (_, _, _, loc, _) in where.items():
        block = loc.offset // 4096
        out = subprocess.run(["debugfs", "-R", f"bmap /{name}/{pack_name(loc.pack_id)} {block}", str(image)],
                             capture_output=True, text=True, check=True).stdout.split()
        bad[name] = int(out[-1]) * 4096
    return tmp, image, where, bad


@pytest.fixture
def mounted(drive, loops, tmp_path):
    """mount(name): the drive with the block under that repository's chunk failing, mounted
    read-only; yields the mount point."""
    tmp, image, where, bad = drive
    served, points = [], []

    def mount(name):
        fuse = tmp_path / "fuse"
        served.append(faulty_disk(image, fuse, "--bad-read", f"{bad[name]}:4096"))
        disk = served[-1].__enter__()
        dev = loops.attach(disk, read_only=True)
        point = tmp_path / "m"
        point.mkdir()
        subprocess.run(["mount", "-t", "ext4", "-o", "ro,noload", dev, str(point)], check=True)
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", str(point)], check=True)
    loops.detach_all()
    for cm in served:
        cm.__exit__(None, None, None)


def test_a_chunk_on_a_failing_block_comes_back_from_its_packs_parity(drive, mounted):
    tmp, image, where, bad = drive
    snap, w, bid, loc, want = where["parity"]
    point = mounted("parity")
    repo = Repository.open(point / "parity")
    try:
        m = repo.load_manifest(snap)
        blobs = SnapshotBlobs(repo, m)
        number = m.partitions[0].number
        with pytest.raises(DamageError) as err:        # the drive does fail there
            repo.read_at(bid, loc)
        assert storage_failure(err.value).endswith(": Input/output error")
        blobs._piece(number, w // PIECE_WINDOWS)        # the location table's piece, read apart
        before = blobs.direct_reads
        assert before >= 1                              # that piece was read at its place too
        assert blobs.chunk(number, w, bid) == want
        assert blobs.direct_reads == before + 1 and blobs.fell_back is None
        assert repo.repaired_in_memory == {pack_name(loc.pack_id)}
    finally:
        repo.close()


def test_a_chunk_on_a_failing_block_without_parity_fails_with_the_drive(drive, mounted):
    tmp, image, where, bad = drive
    snap, w, bid, loc, want = where["plain"]
    point = mounted("plain")
    repo = Repository.open(point / "plain")
    try:
        m = repo.load_manifest(snap)
        blobs = SnapshotBlobs(repo, m)
        number = m.partitions[0].number
        blobs._piece(number, w // PIECE_WINDOWS)        # the location table's piece, read apart
        before = blobs.direct_reads
        with pytest.raises(DamageError) as err:
            blobs.chunk(number, w, bid)
        assert storage_failure(err.value).endswith(": Input/output error")
        assert blobs.direct_reads == before and blobs.fell_back is None   # not a stale place
    finally:
        repo.close()
