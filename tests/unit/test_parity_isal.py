"""The direct ISA-L path that makes parity (recovery/repo/isal.py) writes the same sidecars, byte
for byte, as pyeclib's encoder with zlib's CRC-32; a pack writer that keeps its bytes in a
reused buffer writes the same sidecar as one made from the pack file, and repair works from it."""

from __future__ import annotations

import random
import zlib

import pytest

from recovery.repo import isal
from recovery.repo.format import KIND_DATA
from recovery.repo.packs import PackBuffers, PackWriter, pack_name, pack_parity_name
from recovery.repo.parity import (Geometry, _make_parity_pyeclib, make_parity,
                                  make_parity_in_place, repair)
from recovery.storage.local import LocalStorage

pytestmark = pytest.mark.skipif(not isal.available(), reason="pyeclib's ISA-L library is not loadable here")

SIZES = [1, 511, 512, 513, 5000, 262_144, 262_145, 3_000_000, 9_000_001]


@pytest.mark.parametrize("size", SIZES)
def test_the_direct_path_makes_the_same_sidecar_as_pyeclib(size):
    data = random.Random(size).randbytes(size)
    assert make_parity(data) == _make_parity_pyeclib(data)


def test_the_first_layout_is_made_alike_too():
    data = random.Random(7).randbytes(1_000_000)
    old = Geometry(len(data), 4096, 200, 40)             # LBPARIT2's k <= 200, 4 %
    assert make_parity(data, geometry=old) == _make_parity_pyeclib(data, geometry=old)


def test_crc32_matches_zlib():
    buf = bytearray(random.Random(1).randbytes(4096 * 5))
    assert isal.crc32_sectors(buf, 5, 4096) == [zlib.crc32(buf[i * 4096:(i + 1) * 4096]) for i in range(5)]


def test_in_place_zeroes_stale_bytes_past_the_object_and_grows_a_short_buffer():
    data = random.Random(2).randbytes(1_000_003)
    stale = bytearray(data) + bytearray(b"\xff" * 300_000)    # a reused buffer's old content
    assert make_parity_in_place(stale, len(data)) == _make_parity_pyeclib(data)
    short = bytearray(data)                                    # no room for the last row's padding
    assert make_parity_in_place(short, len(data)) == _make_parity_pyeclib(data)
    assert short[: len(data)] == data


def test_packs_written_through_reused_buffers_carry_their_own_parity(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    rng = random.Random(5)
    buffers = PackBuffers(600_000, keep=1)
    written = []
    # The second pack is shorter than the first and reuses its buffer: stale bytes past its end.
    for count, size in ((9, 70_000), (3, 50_000), (20, 40_000)):
        writer = PackWriter(storage, parity=True, buffers=buffers)
        for _ in range(count):
            raw = rng.randbytes(size)
            writer.add(rng.randbytes(32), raw, len(raw), KIND_DATA, 0)
        pack_id, _ = writer.finish()
        written.append(pack_id)
    assert len(buffers._free) == 1                             # given back, kept for the next pack
    for pack_id in written:
        data = (tmp_path / pack_name(pack_id)).read_bytes()
        side = (tmp_path / pack_parity_name(pack_id)).read_bytes()
        assert side == _make_parity_pyeclib(data)
        damaged = bytearray(data)
        run = Geometry.for_length(len(data)).guaranteed_run
        damaged[1000 : 1000 + run] = bytes(run)
        fixed = repair(damaged, side, pack_id)
        assert fixed.repaired and fixed.data == data
    storage.close()


def test_an_aborted_pack_gives_its_buffer_back(tmp_path):
    storage = LocalStorage(tmp_path)
    (tmp_path / "tmp").mkdir()
    buffers = PackBuffers(10_000)
    writer = PackWriter(storage, parity=True, buffers=buffers)
    writer.add(b"i" * 32, b"x" * 100, 100, KIND_DATA, 0)
    writer.abort()
    assert len(buffers._free) == 1
    assert not list(tmp_path.rglob("*.pack")) and not list(tmp_path.rglob("*.par"))
    storage.close()
