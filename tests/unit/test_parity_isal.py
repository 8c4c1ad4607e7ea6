"""The direct ISA-L path that makes parity (recovery/repo/isal.py) writes the same sidecars, byte
for byte, as pyeclib's encoder with zlib's CRC-32, whatever holds the object's bytes (bytes, a
buffer longer than the object, a read-only view, a file mapped, pieces of any sizes back to
back); a pack writer makes its sidecar from the blobs it was given (a file) or from the bytes
its storage's writer gathers (an object store), and repair works from it. Without libisal,
pyeclib makes the same bytes."""

from __future__ import annotations

import mmap
import random
import zlib

import pytest

from recovery.repo import isal
from recovery.repo.format import KIND_DATA
from recovery.repo.packs import PackBuffer, PackBuffers, PackWriter, pack_name, pack_parity_name
from recovery.repo.parity import Geometry, _make_parity_pyeclib, make_parity, make_parity_of_pieces, repair
from recovery.storage.base import BufferWriter
from recovery.storage.local import LocalStorage

pytestmark = pytest.mark.skipif(not isal.available(), reason="pyeclib's ISA-L library is not loadable here")

# Empty; around the small sectors; the small/large boundary; sectors exactly filling the
# object (4 096 000 = 1000 sectors) and not; several code words.
SIZES = [0, 1, 511, 512, 513, 5000, 262_144, 262_145, 3_000_000, 4_096_000, 9_000_001]


@pytest.mark.parametrize("size", SIZES)
def test_the_direct_path_makes_the_same_sidecar_as_pyeclib(size):
    data = random.Random(size).randbytes(size)
    assert make_parity(data) == _make_parity_pyeclib(data)


def test_the_first_layout_is_made_alike_too():
    data = random.Random(7).randbytes(1_000_000)
    old = Geometry(len(data), 4096, 200, 40)             # LBPARIT2's k <= 200, 4 %
    assert make_parity(data, geometry=old) == _make_parity_pyeclib(data, geometry=old)


def test_crc32_matches_zlib_across_batches():
    count = 2 * isal.CRC_BATCH + 7
    buf = bytearray(random.Random(1).randbytes(512 * count))
    with isal.pinned(buf) as base:
        sums = isal.crc32_sectors(base, count, 512)
    assert sums == [zlib.crc32(buf[i * 512:(i + 1) * 512]) for i in range(count)]


def test_every_kind_of_buffer_gives_the_same_sidecar_and_nothing_past_the_end_is_read(tmp_path):
    data = random.Random(2).randbytes(1_000_003)
    want = _make_parity_pyeclib(data)
    assert make_parity(bytearray(data)) == want
    assert make_parity(memoryview(data)) == want                       # read-only: copied once
    longer = bytearray(data) + bytearray(b"\xff" * 300_000)            # stale bytes past the object
    assert make_parity(memoryview(longer)[: len(data)]) == want
    assert longer[len(data):] == b"\xff" * 300_000                     # and left as they were
    path = tmp_path / "object"
    path.write_bytes(data)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), len(data)) as mapped:
        assert make_parity(mapped) == want


def cut(data: bytes, sizes: list[int]) -> list:
    """`data` in pieces of the given sizes (repeated), of every kind a writer is given."""
    pieces, at, i = [], 0, 0
    while at < len(data):
        piece = data[at : at + sizes[i % len(sizes)]]
        pieces.append([bytes, bytearray, memoryview][i % 3](piece))
        at, i = at + len(piece), i + 1
    return pieces


@pytest.mark.parametrize("sizes", [
    [4096], [8, 4088], [5000], [1, 2, 4093], [100_000, 3], [7, 70_001, 4096 * 3, 12_000], [3_000_000]])
@pytest.mark.parametrize("size", [4096 * 300, 1_000_003, 9_000_001])
def test_pieces_make_the_same_sidecar_as_their_bytes_together(size, sizes):
    # Pieces shorter than a sector, sectors straddling two or three pieces, pieces ending on a
    # sector boundary, pieces longer than the object.
    data = random.Random(size + len(sizes)).randbytes(size)
    assert make_parity_of_pieces(cut(data, sizes)) == _make_parity_pyeclib(data)


def test_pieces_of_a_small_object_and_of_nothing():
    data = random.Random(4).randbytes(70_000)           # 512-byte sectors
    assert make_parity_of_pieces(cut(data, [300, 900, 512])) == _make_parity_pyeclib(data)
    assert make_parity_of_pieces([]) == make_parity_of_pieces([b"", bytearray()]) == _make_parity_pyeclib(b"")


def test_without_libisal_pyeclib_makes_the_same_bytes(monkeypatch):
    data = random.Random(3).randbytes(2_000_001)
    direct = make_parity(data)
    pieces = make_parity_of_pieces(cut(data, [70_000, 5]))
    monkeypatch.setattr(isal, "_lib", None)              # as when no libisal can be loaded
    monkeypatch.setattr(isal, "_tried", True)
    assert not isal.available()
    assert make_parity(data) == make_parity_of_pieces(cut(data, [70_000, 5])) == direct == pieces
    assert direct == _make_parity_pyeclib(data)


class MemoryWriterStorage(LocalStorage):
    """A folder whose packs are gathered in memory and written whole, as an object store's are."""

    def create(self) -> BufferWriter:
        return BufferWriter(self)


@pytest.mark.parametrize("kind", [LocalStorage, MemoryWriterStorage])
def test_packs_carry_their_own_parity(tmp_path, kind):
    storage = kind(tmp_path)
    (tmp_path / "tmp").mkdir()
    rng = random.Random(5)
    buffers = PackBuffers(600_000)
    written = []
    # Packs of one, several and many segments; the second is shorter than the first and
    # reuses its buffer (stale bytes past its end); the third outgrows the buffer.
    for count, size in ((9, 70_000), (3, 50_000), (30, 40_000), (1, 4096 - 8)):
        writer = PackWriter(storage, parity=True, buffers=buffers)
        assert (writer._kept is None) == (kind is MemoryWriterStorage)     # the writer's own bytes
        for i in range(count):
            raw = rng.randbytes(size)
            writer.add(rng.randbytes(32), [raw, bytearray(raw), memoryview(raw)][i % 3], len(raw), KIND_DATA, 0)
        pack_id, _ = writer.finish()
        assert writer._kept is None                                       # given back once sealed
        written.append(pack_id)
    assert len(buffers._free) == (1 if kind is LocalStorage else 0)
    for pack_id in written:
        data = (tmp_path / pack_name(pack_id)).read_bytes()
        side = (tmp_path / pack_parity_name(pack_id)).read_bytes()
        assert side == _make_parity_pyeclib(data)
        damaged = bytearray(data)
        run = Geometry.for_length(len(data)).guaranteed_run
        damaged[10 : 10 + run] = bytes(run)
        fixed = repair(damaged, side, pack_id)
        assert fixed.repaired and fixed.data == data
    assert list((tmp_path / "tmp").iterdir()) == []
    storage.close()


def test_a_pack_buffer_gives_back_what_was_put_segment_by_segment_aligned():
    data = random.Random(8).randbytes(3 * PackBuffer.SEGMENT + 12_345)
    kept = PackBuffer(PackBuffer.SEGMENT)                                 # too small: it grows
    at = 0
    for size in (5, PackBuffer.SEGMENT - 5, 1, 2 * PackBuffer.SEGMENT, 12_344):
        kept.put(at, data[at : at + size])
        at += size
    pieces = kept.pieces(len(data))
    assert [len(p) for p in pieces] == [PackBuffer.SEGMENT] * 3 + [12_345]
    assert b"".join(pieces) == data
    with isal.pinned(pieces[1]) as first, isal.pinned(pieces[2]) as second:
        assert second % 64 == 0 and first % 64 == 0 and (second - first) % 4096 != 0
    for piece in pieces:
        piece.release()


def test_a_pack_waits_for_the_one_buffer_with_its_pieces_and_one_that_never_gets_it_uses_them(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    rng = random.Random(9)
    buffers = PackBuffers(300_000)                      # one at most, as a backup has
    first, second, third = (PackWriter(storage, parity=True, buffers=buffers) for _ in range(3))

    def add(writer, count):
        for _ in range(count):
            raw = rng.randbytes(rng.randint(1, 90_000))
            writer.add(rng.randbytes(32), [raw, bytearray(raw)][count % 2], len(raw), KIND_DATA, 0)

    add(first, 5)
    add(second, 4)                                      # the buffer is the first's: these wait
    assert first._kept is not None and second._kept is None and len(second._waiting) == 5
    ids = [first.finish()[0]]                           # gives the buffer back
    add(second, 3)                                      # takes it, copies in what waited
    assert second._kept is not None and second._waiting == []
    add(third, 6)                                       # never gets it: parity from its pieces
    ids.append(third.finish()[0])
    assert second._kept is not None and not buffers._free
    ids.append(second.finish()[0])
    assert len(buffers._free) == 1 and buffers._made == 1
    for pack_id in ids:
        data = (tmp_path / pack_name(pack_id)).read_bytes()
        assert (tmp_path / pack_parity_name(pack_id)).read_bytes() == _make_parity_pyeclib(data)
    storage.close()


def test_a_view_given_to_a_pack_is_copied_so_reusing_its_buffer_changes_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    reused = bytearray(random.Random(6).randbytes(300_000))
    writer = PackWriter(storage, parity=True)
    writer.add(b"v" * 32, memoryview(reused), len(reused), KIND_DATA, 0)
    reused[:] = bytes(len(reused))                      # the reader's buffer, filled again
    pack_id, _ = writer.finish()
    data = (tmp_path / pack_name(pack_id)).read_bytes()
    assert (tmp_path / pack_parity_name(pack_id)).read_bytes() == _make_parity_pyeclib(data)
    storage.close()


def test_an_aborted_pack_leaves_nothing(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    writer = PackWriter(storage, parity=True)
    writer.add(b"i" * 32, b"x" * 100, 100, KIND_DATA, 0)
    writer.abort()
    assert writer._kept is None
    assert not list(tmp_path.rglob("*.pack")) and not list(tmp_path.rglob("*.par"))
    assert list((tmp_path / "tmp").iterdir()) == []
    storage.close()
