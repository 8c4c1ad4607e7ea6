"""Packs at their edges (recovery/repo/packs.py): the objects that belong to one, deleting
them, the exact bytes a pack holds, and each way a footer is refused, with its message. Real
files in a scratch folder through the local storage."""

from __future__ import annotations

import os

import blake3
import pytest

from recovery.errors import DamageError
from recovery.repo.format import PACK_END_MAGIC, PACK_END_SEALED, PACK_MAGIC, TRAILER, BlobEntry, encode_footer, pack_id_of
from recovery.repo.packs import (
    FOOTER_GUESS,
    PackWriter,
    delete_pack,
    pack_name,
    pack_objects,
    pack_parity_name,
    pack_path,
    parse_footer,
    read_footer,
)
from recovery.repo.parity import sidecar_matches
from recovery.repo.sealing import AAD_FOOTER, OVERHEAD, Sealer
from recovery.storage.local import LocalStorage


@pytest.fixture
def storage(tmp_path):
    (tmp_path / "tmp").mkdir()
    with LocalStorage(tmp_path) as s:
        yield s


def _write(storage, blobs, sealer=None, parity=False):
    w = PackWriter(storage, sealer, parity=parity)
    assert w.digest == b"" and w.size == len(PACK_MAGIC)        # set by finish()
    for i, data in enumerate(blobs):
        w.add(bytes([i]) * 32, data, len(data) * 2, 1, 2)
    return w, *w.finish()


def test_names_of_a_pack_and_its_sidecar(tmp_path):
    pid = "ab" + "0" * 62
    assert pack_name(pid) == f"packs/ab/{pid}.pack"
    assert pack_parity_name(pid) == f"packs/ab/{pid}.pack.par"
    assert pack_objects(pid) == [pack_name(pid), pack_parity_name(pid)]
    assert pack_path(tmp_path, pid) == tmp_path / "packs" / "ab" / f"{pid}.pack"


def test_a_pack_holds_magic_blobs_and_footer_and_its_id_is_the_footers_hash(storage, tmp_path):
    w, pid, entries = _write(storage, [b"one", b"second blob"])
    data = pack_path(tmp_path, pid).read_bytes()
    footer = encode_footer(entries)
    assert data == PACK_MAGIC + b"one" + b"second blob" + footer
    assert pid == pack_id_of(footer[: len(footer) - TRAILER.size])
    assert entries == [BlobEntry(bytes([0]) * 32, 8, 3, 6, 1, 2), BlobEntry(bytes([1]) * 32, 11, 11, 22, 1, 2)]
    assert w.size == len(data) and w.digest == blake3.blake3(data).digest()
    assert not storage.exists(pack_parity_name(pid))
    assert read_footer(storage, pack_name(pid)) == entries
    assert read_footer(pack_path(tmp_path, pid)) == entries        # by path, on its own storage
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_pack_with_parity_has_its_sidecar_and_delete_removes_both(storage, tmp_path):
    w, pid, entries = _write(storage, [b"x" * 5000], parity=True)
    assert storage.exists(pack_parity_name(pid)) and w._kept is None
    size = storage.size(pack_name(pid)) + storage.size(pack_parity_name(pid))
    data = pack_path(tmp_path, pid).read_bytes()
    assert sidecar_matches(storage.read(pack_parity_name(pid)), data)
    assert delete_pack(storage, pid) == size
    assert not storage.exists(pack_name(pid)) and not storage.exists(pack_parity_name(pid))
    assert delete_pack(storage, pid) == 0                          # already gone
    # a pack whose sidecar is already gone: the pack alone
    _, pid, _ = _write(storage, [b"y"], parity=True)
    os.unlink(tmp_path / pack_parity_name(pid))
    assert delete_pack(storage, pid) == storage_size_of(PACK_MAGIC + b"y", 1)
    # a sidecar left without its pack is removed too
    _, pid, _ = _write(storage, [b"z"], parity=True)
    sidecar = storage.size(pack_parity_name(pid))
    os.unlink(tmp_path / pack_name(pid))
    assert delete_pack(storage, pid) == sidecar and not storage.exists(pack_parity_name(pid))


def storage_size_of(head: bytes, count: int) -> int:
    return len(head) + count * 56 + TRAILER.size


def test_an_aborted_pack_leaves_nothing(storage, tmp_path):
    plain = PackWriter(storage)                                    # no parity unless asked
    assert plain._kept is None
    plain.abort()
    w = PackWriter(storage, parity=True)
    w.add(b"\x01" * 32, b"data", 4, 1, 0)
    w.abort()
    assert w._kept is None
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "packs").exists()


def test_a_sealed_footer_is_named_by_its_hash_and_opens_only_with_the_key(storage, tmp_path):
    sealer = Sealer(b"k" * 32)
    _, pid, entries = _write(storage, [b"secret"], sealer)
    data = pack_path(tmp_path, pid).read_bytes()
    count, reserved, digest, magic = TRAILER.unpack(data[-TRAILER.size:])
    assert (count, reserved, magic) == (1, 0, PACK_END_SEALED)
    sealed = data[len(PACK_MAGIC) + 6 : -TRAILER.size]
    assert len(sealed) == 56 + OVERHEAD and digest == blake3.blake3(sealed).digest() and pid == digest.hex()
    assert read_footer(storage, pack_name(pid), sealer=sealer) == entries
    with pytest.raises(DamageError, match=rf"^pack {pid}.pack is encrypted, unlike its repository$"):
        read_footer(storage, pack_name(pid))
    with pytest.raises(DamageError, match=r"fails authentication\)$"):
        read_footer(storage, pack_name(pid), sealer=Sealer(b"j" * 32))
    # the same bytes under another pack's name
    other = "cd" + pid[2:]
    (tmp_path / "packs" / "cd").mkdir()
    (tmp_path / pack_name(other)).write_bytes(data)
    with pytest.raises(DamageError, match=rf"^pack {other}.pack holds another pack's content \(its name does not match it\)$"):
        read_footer(storage, pack_name(other), sealer=sealer)
    # a name that is not a pack's (no .pack) is not compared
    assert parse_footer("x/somefile", len(data), data, sealer) == entries
    # two entries: the sealed footer is their 56-byte records back to back
    _, pid2, entries2 = _write(storage, [b"a", b"bc"], sealer)
    data2 = pack_path(tmp_path, pid2).read_bytes()
    sealed2 = data2[len(PACK_MAGIC) + 3 : -TRAILER.size]
    assert sealer.open(sealed2, AAD_FOOTER) == b"".join(e.pack() for e in entries2)
    assert read_footer(storage, pack_name(pid2), sealer=sealer) == entries2
    _, plain, _ = _write(storage, [b"open"])
    with pytest.raises(DamageError, match=rf"^pack {plain}.pack is not encrypted, unlike its repository$"):
        read_footer(storage, pack_name(plain), sealer=sealer)


def _plain(n: int, blob: bytes = b"b") -> bytes:
    entries = [BlobEntry(bytes([i % 256]) * 32, 8 + i, 1, 1, 1, 0) for i in range(n)]
    return PACK_MAGIC + blob * n + encode_footer(entries)


def test_footer_refusals_are_exact(storage, tmp_path):
    label = "p.pack"
    whole = _plain(2)
    with pytest.raises(DamageError, match=r"^pack p.pack is truncated$"):
        parse_footer("packs/x/" + label, len(PACK_MAGIC) + TRAILER.size - 1, whole, None)
    with pytest.raises(DamageError, match=r"^pack p.pack is truncated$"):
        parse_footer(label, len(whole), whole[-TRAILER.size + 1:], None)
    # the smallest pack: magic and an empty footer
    empty = PACK_MAGIC + encode_footer([])
    assert parse_footer(label, len(empty), empty, None) == []
    assert parse_footer(label, len(empty), empty[len(PACK_MAGIC):], None) == []
    # a wrong end magic
    bad = whole[:-8] + b"LBPKENDX"
    with pytest.raises(DamageError, match=r"^pack p.pack has a damaged footer$"):
        parse_footer(label, len(bad), bad, None)
    # a count claiming more entries than the pack can hold: exactly as many as fit is fine
    count_at = len(whole) - TRAILER.size
    def with_count(n):
        return whole[:count_at] + n.to_bytes(4, "little") + whole[count_at + 4:]
    with pytest.raises(DamageError, match=r"^pack p.pack has a damaged footer$"):
        parse_footer(label, len(whole), with_count(2 + 1), None)    # 3 * 56 > the 2 + 112 bytes before
    fits = PACK_MAGIC + encode_footer([BlobEntry(b"\x07" * 32, 8, 0, 0, 1, 0)])
    assert len(fits) == len(PACK_MAGIC) + 56 + TRAILER.size
    assert parse_footer(label, len(fits), fits, None) == [BlobEntry(b"\x07" * 32, 8, 0, 0, 1, 0)]
    # a footer whose entries would reach back into the pack's magic, even with a hash that
    # checks (forged): refused before it is parsed
    filler = b"f" * 50
    forged = PACK_MAGIC + filler + TRAILER.pack(1, 0, blake3.blake3(PACK_MAGIC[2:] + filler).digest(), PACK_END_MAGIC)
    with pytest.raises(DamageError, match=r"^pack p.pack has a damaged footer$"):
        parse_footer(label, len(forged), forged, None)
    # a damaged footer body fails its hash
    flipped = bytearray(whole)
    flipped[len(PACK_MAGIC) + 2 + 5] ^= 1
    with pytest.raises(DamageError, match=r"^pack p.pack has a damaged footer$"):
        parse_footer(label, len(flipped), bytes(flipped), None)


def test_a_short_tail_asks_for_exactly_the_footer_and_a_large_footer_costs_a_second_read(storage, tmp_path):
    whole = _plain(3)
    need = 3 * 56 + TRAILER.size
    assert parse_footer("p.pack", len(whole), whole[-TRAILER.size:], None) == need
    assert parse_footer("p.pack", len(whole), whole[-(need - 1):], None) == need
    assert len(parse_footer("p.pack", len(whole), whole[-need:], None)) == 3
    # a footer larger than the first guess: read again from where it starts
    n = FOOTER_GUESS // 56 + 10
    big = _plain(n)
    assert FOOTER_GUESS == 64 * 1024 and n * 56 > FOOTER_GUESS
    (tmp_path / "big.pack").write_bytes(big)
    reads = []
    real_read = storage.read

    def counted(name, offset=0, length=None):
        reads.append((offset, length))
        return real_read(name, offset, length)
    storage.read = counted
    entries = read_footer(storage, "big.pack")
    assert len(entries) == n and entries[-1].offset == 8 + n - 1
    assert reads == [(len(big) - FOOTER_GUESS, FOOTER_GUESS), (len(big) - n * 56 - TRAILER.size, n * 56 + TRAILER.size)]
    reads.clear()
    small = _plain(2)
    (tmp_path / "small.pack").write_bytes(small)
    assert len(read_footer(storage, "small.pack", size=len(small))) == 2
    assert reads == [(0, len(small))]                              # a small pack: read whole, once


def test_an_unreadable_pack_is_named_in_the_error(storage, tmp_path):
    with pytest.raises(DamageError, match=r"^pack gone.pack cannot be read: it is missing$"):
        read_footer(storage, "packs/xx/gone.pack")
    with pytest.raises(DamageError, match=r"^pack gone.pack cannot be read: it is missing$"):
        read_footer(tmp_path / "gone.pack")
    (tmp_path / "dir.pack").mkdir()
    with pytest.raises(DamageError, match=r"^pack dir.pack cannot be read: Is a directory$"):
        read_footer(storage, "dir.pack", size=100)
    # a read the storage itself refuses (a path through a file): its own message, named
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(DamageError) as err:
        read_footer(storage, "afile/x.pack", size=100)
    assert str(err.value) == f"pack x.pack cannot be read: cannot read {tmp_path / 'afile' / 'x.pack'}: Not a directory"


def test_every_pack_buffer_starts_its_pieces_on_64_byte_boundaries_wherever_it_was_allocated():
    # The allocator puts arrays at addresses 16 bytes apart; an alignment worked out the wrong
    # way round is right only for some of them, so look at many buffers, kept alive together.
    from recovery.repo import isal
    from recovery.repo.packs import PackBuffer

    buffers = [PackBuffer(size) for size in range(0, 64 * 40, 40)]
    residues = set()
    for buffer in buffers:
        buffer.put(0, b"\x01" * 5)
        (piece,) = buffer.pieces(5)
        with memoryview(buffer.data) as whole, isal.pinned(whole) as base, isal.pinned(piece) as at:
            residues.add(base % 64)
            assert at % 64 == 0 and bytes(piece) == b"\x01" * 5
        piece.release()
    assert len(residues) > 1          # the arrays did lie at different offsets from a boundary


def _pieces_of(buffer, length):
    """The pack's bytes as the buffer gives them, each piece checked to start on a 64-byte
    boundary (the encoder's loads)."""
    from recovery.repo import isal

    pieces = buffer.pieces(length)
    try:
        for piece in pieces:
            with isal.pinned(piece) as at:
                assert at % 64 == 0
        return [len(p) for p in pieces], b"".join(pieces)
    finally:
        for piece in pieces:
            piece.release()


@pytest.mark.parametrize("order", [
    # a whole segment first, into a buffer far too small for it (the room it grows to must
    # cover where that segment starts, not just its length)
    "segment 1 first",
    # a few bytes three segments in first, then one put across three segments that ends inside
    # the third (its last part is short: it must not cut away what lies after it), then the gap
    "the end first",
])
def test_a_pack_buffer_takes_puts_in_any_order_and_gives_back_the_same_bytes(order):
    from recovery.repo.packs import PackBuffer

    seg = PackBuffer.SEGMENT
    data = os.urandom(3 * seg + 1000)
    cuts = {
        "segment 1 first": [(seg, 2 * seg), (0, seg), (2 * seg, len(data))],
        "the end first": [(3 * seg, len(data)), (0, 2 * seg + 500), (2 * seg + 500, 3 * seg)],
    }[order]
    buffer = PackBuffer(0)
    for start, end in cuts:
        buffer.put(start, data[start:end])
    lengths, whole = _pieces_of(buffer, len(data))
    assert lengths == [seg, seg, seg, 1000]
    assert whole == data


def test_pack_buffers_grown_past_their_size_stay_aligned_and_keep_what_was_put():
    # Grown arrays are new allocations, aligned again; the bytes put before the growth move with
    # it. Many buffers at once, of sizes that stay on the heap (its arrays lie 16 bytes apart), so
    # that the first arrays and the grown ones each lie at more than one offset from a boundary.
    from recovery.repo import isal
    from recovery.repo.packs import PackBuffer

    head, tail = os.urandom(1000), os.urandom(20_000)
    buffers = [PackBuffer(size) for size in range(0, 64 * 40, 40)]
    before, after = set(), set()
    for buffer in buffers:
        buffer.put(0, head)
        with memoryview(buffer.data) as whole, isal.pinned(whole) as base:
            before.add(base % 64)
        first = buffer.data
        buffer.put(len(head), tail)
        assert buffer.data is not first                          # it did grow
        with memoryview(buffer.data) as whole, isal.pinned(whole) as base:
            after.add(base % 64)
        assert _pieces_of(buffer, len(head) + len(tail)) == ([len(head) + len(tail)], head + tail)
    assert len(before) > 1 and len(after) > 1


def test_pack_buffers_make_at_most_as_many_as_allowed_and_hand_back_those_given():
    from recovery.repo.packs import PackBuffers

    one = PackBuffers(100)                                       # one unless told
    a = one.take()
    assert a is not None and len(a.data) >= 100 and one.take() is None
    one.give(a)
    assert one.take() is a and one.take() is None
    two = PackBuffers(100, most=2)
    a, b = two.take(), two.take()
    assert a is not None and b is not None and a is not b
    assert two.take() is None and two._made == 2
    two.give(b)
    assert two.take() is b and two.take() is None


def test_a_pack_buffer_grows_to_twice_its_array_or_a_quarter_past_the_write_whichever_is_more():
    # The size of a grown array changes memory use only (the write after it always fits), but a
    # pack larger than planned should grow in few steps and not far past its need: pinned here.
    from recovery.repo.packs import PackBuffer

    buffer = PackBuffer(0)
    assert len(buffer.data) == 64 * 64 + 64                     # one segment's gaps and the alignment
    buffer.put(0, b"a" * 5000)                                   # just past it: twice the array
    assert len(buffer.data) == 2 * (64 * 64 + 64)
    end = buffer._skip + 25_000                                  # where the write ends, in the array before
    buffer.put(5000, b"b" * 20_000)                              # far past: a quarter past the write's end
    assert len(buffer.data) == end + end // 4
    assert _pieces_of(buffer, 25_000) == ([25_000], b"a" * 5000 + b"b" * 20_000)


def test_a_view_given_to_a_pack_waiting_for_a_buffer_is_copied_so_reusing_its_buffer_changes_nothing(storage, tmp_path):
    # The one buffer is another pack's for as long as this pack lives: its pieces wait, and a
    # view of a reader's buffer (refilled at once) must wait as a copy.
    from recovery.repo.packs import PackBuffers
    from recovery.repo.parity import make_parity

    buffers = PackBuffers(300_000)
    holder = PackWriter(storage, parity=True, buffers=buffers)
    writer = PackWriter(storage, parity=True, buffers=buffers)
    assert holder._kept is not None and writer._kept is None
    reused = bytearray(os.urandom(5000))
    writer.add(b"v" * 32, memoryview(reused), len(reused), 1, 0)
    reused[:] = bytes(len(reused))
    pid, _ = writer.finish()
    holder.abort()
    data = pack_path(tmp_path, pid).read_bytes()
    assert storage.read(pack_parity_name(pid)) == make_parity(data)
