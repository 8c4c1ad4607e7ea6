"""PartitionReader at its edges (recovery/repo/reader.py), on a real backup of a real ext4
image: refused arguments, reads at and past the end, a chunk table shorter than the
partition, a chunk of the wrong length, the exact damage message, and the bounded cache."""

from __future__ import annotations

import dataclasses

import pytest

from recovery.errors import DamageError
from recovery.repo.reader import DEFAULT_CACHE_BYTES, PartitionReader
from recovery.repo.repository import Repository
from tests.integration.test_partition_reader import expected, saved  # noqa: F401 - the fixture
from tests.tui.helpers import damage_chunk


def test_arguments_ends_and_the_cache_bound(saved):  # noqa: F811
    image, repo, m = saved
    part = m.partitions[0]
    reader = PartitionReader(repo, part, m.chunk_size, cache_bytes=0)
    want = expected(image, reader)
    for off, n in [(-1, 1), (0, -1)]:
        with pytest.raises(ValueError, match="^offset and length must not be negative$"):
            reader.read(off, n)
    assert reader.read(0, 0) == b"" and reader.read(reader.size, 1) == b"" and reader.read(reader.size + 9, 1) == b""
    cs = m.chunk_size
    for w in range(reader.size // cs):
        # a read ending exactly at a window's end, and one straddling into the next
        assert reader.read(w * cs, cs) == want[w * cs:(w + 1) * cs]
        assert reader.read((w + 1) * cs - 3, 6) == want[(w + 1) * cs - 3:(w + 1) * cs + 3]
        assert len(reader._cache) <= 2                 # at least two windows, never more here
    assert reader.read(reader.size - 1, 10) == want[-1:]
    assert DEFAULT_CACHE_BYTES == 8 * 1024 * 1024
    assert PartitionReader(repo, part, cs)._cache_limit == DEFAULT_CACHE_BYTES // cs
    assert PartitionReader(repo, part, cs, cache_bytes=5 * cs)._cache_limit == 5


def test_a_short_chunk_table_and_a_chunk_of_the_wrong_length_are_damage(saved):  # noqa: F811
    image, repo, m = saved
    part = m.partitions[0]
    cs = m.chunk_size
    with pytest.raises(DamageError) as err:
        PartitionReader(repo, dataclasses.replace(part, size=part.size + 1), cs)
    assert str(err.value) == f"partition {part.number}: its chunk table is shorter than the partition"
    PartitionReader(repo, dataclasses.replace(part, size=part.size - 1), cs)      # one window fewer is fine
    reader = PartitionReader(repo, part, cs)
    stored = [w for w in range(part.size // cs) if reader.window_stored(w)]
    w = stored[0]
    # the same table read as a partition whose window w would be one byte short
    shorter = PartitionReader(repo, dataclasses.replace(part, size=w * cs + cs - 1), cs)
    with pytest.raises(DamageError) as err:
        shorter.read(w * cs, 10)
    assert str(err.value) == (f"partition {part.number}: the chunk at byte {w * cs} holds {cs} bytes "
                              f"instead of {cs - 1}")


def test_a_damaged_chunk_is_named_by_its_byte(saved):  # noqa: F811
    image, repo, m = saved
    damage_chunk(repo.path, m.partitions[0].number)
    fresh = Repository.open(repo.path)
    part = fresh.load_manifest(m.id).partitions[0]
    reader = PartitionReader(fresh, part, m.chunk_size)
    messages = []
    for w in range(part.size // m.chunk_size):
        try:
            reader.read(w * m.chunk_size, 1)
        except DamageError as exc:
            messages.append((w, str(exc)))
    fresh.close()
    assert messages
    w, message = messages[0]
    assert message.startswith(f"partition {part.number}: the chunk at byte {w * m.chunk_size} is damaged (chunk ")


def test_reading_through_the_recorded_places_gives_the_same_bytes(saved):  # noqa: F811
    from recovery.repo.locations import SnapshotBlobs

    image, repo, m = saved
    part = m.partitions[0]
    plain = PartitionReader(repo, part, m.chunk_size)
    blobs = SnapshotBlobs(repo, m)
    direct = PartitionReader(repo, part, m.chunk_size, blobs=blobs)
    assert direct.used_ranges() == plain.used_ranges() and direct.used_ranges()
    want = expected(image, plain)
    got = b"".join(direct.read(off, 256 * 1024) for off in range(0, direct.size, 256 * 1024))
    assert got == want
    assert blobs.fell_back is None and blobs.direct_reads > len(part.chunks)   # chunks too, not only tables


def test_a_first_read_anywhere_starts_no_readahead(saved):  # noqa: F811
    image, repo, m = saved
    for first in (3, 1, 0):
        reader = PartitionReader(repo, m.partitions[0], m.chunk_size)
        reader.read(first * m.chunk_size, 10)
        assert reader._pool is None, first         # only a read of the next window starts it
        reader.read((first + 1) * m.chunk_size, 10)
        assert reader._pool is not None
