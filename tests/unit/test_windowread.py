"""Reading windows of a source disk: the O_DIRECT path and the buffered path give the same
bytes, used ranges as on disk and zeros elsewhere, at any alignment."""

from __future__ import annotations

import os
import random

import pytest

from recovery.diskio import Disk
from recovery.errors import DiskError
from recovery.windowread import MERGE_GAP, WindowReader, spans

CHUNK = 64 * 1024


def expected(data: bytes, base: int, length: int, subs) -> bytes:
    out = bytearray(length)
    for off, n in subs:
        out[off : off + n] = data[base + off : base + off + n]
    return bytes(out)


@pytest.fixture
def image(tmp_path):
    """A disk image of garbage whose size is not a multiple of 4096, as some images are."""
    data = random.Random(7).randbytes(10 * CHUNK + 3 * 512)
    path = tmp_path / "disk.img"
    path.write_bytes(data)
    return str(path), data


CASES = [
    (0, CHUNK, [(0, CHUNK)]),                                  # a whole aligned window
    (63 * 512, CHUNK, [(0, 1024), (4096, 512), (40_000, 7)]),   # an MBR-era unaligned start
    (3 * CHUNK + 512, CHUNK, [(100, 10), (60_000, 5536)]),      # two ranges far apart
    (9 * CHUNK + 1536, CHUNK // 2, [(0, 512), (CHUNK // 2 - 512, 512)]),   # ends at the disk's end
]


@pytest.mark.parametrize("base,length,subs", CASES)
def test_direct_and_buffered_reads_agree_and_zero_the_rest(image, base, length, subs):
    path, data = image
    want = expected(data, base, length, subs)
    with Disk(path) as disk, WindowReader(disk, CHUNK) as reader:
        assert reader.direct                      # the test's filesystem takes O_DIRECT
        assert bytes(reader.read(base, length, subs, "disk")) == want
        reader.read(0, CHUNK, [(0, CHUNK)], "disk")  # the buffer is reused: no stale bytes leak
        assert bytes(reader.read(base, length, subs, "disk")) == want
    with Disk(path) as disk, WindowReader(disk, CHUNK) as reader:
        reader._direct_works = False              # the buffered path, as on tmpfs or FUSE
        reader.read(0, CHUNK, [(0, CHUNK)], "disk")
        assert bytes(reader.read(base, length, subs, "disk")) == want


def test_a_read_past_the_end_is_a_plain_error(image):
    path, data = image
    with Disk(path) as disk, WindowReader(disk, CHUNK) as reader:
        with pytest.raises(DiskError, match="ended early"):
            reader.read(len(data) - 512, CHUNK, [(0, 4096)], "partition 1")


def test_spans_merge_only_small_gaps():
    assert spans([(0, 10), (20, 5), (25 + MERGE_GAP, 3)], MERGE_GAP) == [(0, MERGE_GAP + 28)]
    assert spans([(0, 10), (20, 5), (26 + MERGE_GAP, 3)], MERGE_GAP) == [(0, 25), (MERGE_GAP + 26, MERGE_GAP + 29)]
    assert spans([], MERGE_GAP) == []
