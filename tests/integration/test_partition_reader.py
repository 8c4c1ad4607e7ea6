"""PartitionReader, the one way to read a saved partition: sequential and random reads give
the partition's used bytes exactly (zeros elsewhere), sequential reads decode the next window
ahead, random reads do not, and a damaged chunk is a DamageError for the reads that need it."""

from __future__ import annotations

import random

import pytest

from recovery.backup import backup
from recovery.errors import DamageError
from recovery.repo.reader import PartitionReader
from recovery.repo.repository import Repository
from tests import fsimages as fi
from tests.tui.helpers import damage_chunk

MiB = 1024 * 1024


@pytest.fixture
def saved(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(2)
    for i in range(6):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(3 * MiB + i))
    image = fi.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    repo = Repository.init(tmp_path / "repo", version=1)     # no parity: damage tests see it
    backup(str(image), repo)
    m = repo.load_manifest(repo.resolve("latest"))
    yield image, repo, m
    repo.close()


def expected(image, reader) -> bytes:
    """The image with every byte outside the used ranges zeroed: what the reader must give."""
    want = bytearray(reader.size)
    data = image.read_bytes()
    for off, length in reader.used_ranges():
        want[off:off + length] = data[off:off + length]
    return bytes(want)


def test_sequential_and_random_reads_give_the_saved_bytes(saved):
    image, repo, m = saved
    reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
    want = expected(image, reader)
    rng = random.Random(3)
    for _ in range(300):
        off = rng.randrange(0, reader.size)
        n = rng.choice([1, 512, 4096, 70_000, 3 * MiB])
        assert reader.read(off, n) == want[off:off + n]
    jumping = PartitionReader(repo, m.partitions[0], m.chunk_size)
    for w in (0, 7, 2, 9, 4, 11, 6, 13, 3):
        off = w * m.chunk_size + 1000
        assert jumping.read(off, 4096) == want[off:off + 4096]
    assert jumping._pool is None            # reads that jump about start no readahead
    got = b"".join(reader.read(off, 128 * 1024) for off in range(0, reader.size, 128 * 1024))
    assert got == want
    assert reader._pool is not None         # reading on started decoding ahead
    assert reader.read(reader.size - 10, 100) == want[-10:] and reader.read(reader.size, 5) == b""


def test_damage_is_raised_to_the_reader_even_when_read_ahead(saved, tmp_path):
    image, repo, m = saved
    damage_chunk(repo.path, m.partitions[0].number)
    fresh = Repository.open(repo.path)
    reader = PartitionReader(fresh, fresh.load_manifest(m.id).partitions[0], m.chunk_size)
    with pytest.raises(DamageError, match="is damaged"):
        for off in range(0, reader.size, 128 * 1024):
            reader.read(off, 128 * 1024)
    fresh.close()
