"""Bitmap -> runs: exact against a bit-by-bit reference, and fast on a 1 TB-sized bitmap."""

import random
import time

import pytest

from recovery.fs.bitmap import CHUNK, bitmap_ranges, set_bit_runs


def reference_runs(bitmap: bytes, nbits: int) -> list[tuple[int, int]]:
    runs, start = [], None
    for i in range(nbits):
        bit = bitmap[i // 8] >> (i % 8) & 1
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            runs.append((start, i - start))
            start = None
    if start is not None:
        runs.append((start, nbits - start))
    return runs


@pytest.mark.parametrize("seed", range(12))
def test_matches_bit_by_bit_reference(seed):
    rng = random.Random(seed)
    # Mix long empty and full stretches with random bytes, as real bitmaps have.
    parts = []
    for _ in range(40):
        kind = rng.choice(("zero", "full", "mixed", "edge"))
        n = rng.randrange(1, 50)
        parts.append({"zero": b"\0" * n, "full": b"\xff" * n,
                      "mixed": rng.randbytes(n), "edge": bytes([rng.choice((1, 0x80, 0x7F, 0xFE))])}[kind])
    bitmap = b"".join(parts)
    for nbits in (len(bitmap) * 8, len(bitmap) * 8 - 3, rng.randrange(1, len(bitmap) * 8)):
        assert set_bit_runs(bitmap, nbits) == reference_runs(bitmap, nbits)


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_across_whole_chunks(seed):
    # Stretches longer than the fast path's chunk, starting at odd offsets, so whole zero and
    # full chunks, chunks cut by a boundary and a short final chunk all occur.
    rng = random.Random(100 + seed)
    parts = [rng.randbytes(rng.randrange(0, 5))]
    for _ in range(12):
        n = rng.randrange(1, 3 * CHUNK)
        parts.append(rng.choice((b"\0" * n, b"\xff" * n, rng.randbytes(n))))
    bitmap = b"".join(parts)
    for nbits in (len(bitmap) * 8, rng.randrange(1, len(bitmap) * 8)):
        assert set_bit_runs(bitmap, nbits) == reference_runs(bitmap, nbits)


def test_edges_and_clipping():
    assert set_bit_runs(b"") == []
    assert set_bit_runs(b"\x00\x00") == []
    assert set_bit_runs(b"\xff\xff") == [(0, 16)]
    assert set_bit_runs(b"\x80\x01") == [(7, 2)]           # a run crossing a byte boundary
    assert set_bit_runs(b"\xff\xff", nbits=11) == [(0, 11)]  # padding bits past the map ignored
    assert set_bit_runs(b"\x00\xf0", nbits=12) == []
    assert set_bit_runs(bytes(CHUNK) + b"\xff" * CHUNK + b"\x01") == [(CHUNK * 8, CHUNK * 8 + 1)]
    assert set_bit_runs(bytearray(b"\x0f")) == [(0, 4)]
    assert bitmap_ranges(b"\x06", unit=4096, base=1024) == [(1024 + 4096, 8192)]


def test_one_terabyte_of_ext4_bitmaps_converts_in_seconds():
    # 1 TB of 4 KiB blocks = 2**28 bits = 32 MiB: mostly full or empty groups, with a
    # fragmented region of mixed bytes (0.5% of the bytes) like a long-used disk.
    rng = random.Random(1)
    group = 4096
    chunks = []
    for g in range(32 * 1024 * 1024 // group):
        r = rng.random()
        if r < 0.45:
            chunks.append(b"\xff" * group)
        elif r < 0.9:
            chunks.append(b"\0" * group)
        else:
            head = rng.randrange(group)
            body = bytearray(b"\xff" * head + b"\0" * (group - head))
            for _ in range(200):
                body[rng.randrange(group)] = rng.randrange(256)
            chunks.append(bytes(body))
    bitmap = b"".join(chunks)
    started = time.perf_counter()
    runs = set_bit_runs(bitmap)
    elapsed = time.perf_counter() - started
    print(f"32 MiB bitmap -> {len(runs)} runs in {elapsed:.2f} s")
    assert sum(n for _, n in runs) == int.from_bytes(bitmap, "little").bit_count()
    assert runs and all(b[0] > a[0] + a[1] for a, b in zip(runs, runs[1:]))
    assert elapsed < 10


def test_bitmap_ranges_start_at_the_bitmaps_own_origin_unless_told():
    """Bit 0 covers bytes [0, unit) when no base is given (a map that starts the partition)."""
    assert bitmap_ranges(b"\x01\x80", 4096) == [(0, 4096), (15 * 4096, 4096)]
    assert bitmap_ranges(b"\x01", 512, base=1024) == [(1024, 512)]


class ScanRecorder:
    """Stands in for the non-zero-stretch expression and notes which byte spans it was asked to
    scan: the fast path's promise is about what is read, which the runs alone cannot show."""

    def __init__(self, pattern):
        self.pattern, self.scanned = pattern, []

    def finditer(self, data, pos, endpos):
        self.scanned.append((pos, endpos))
        return self.pattern.finditer(data, pos, endpos)


def test_whole_empty_and_full_chunks_skip_the_expressions_and_bytes_past_nbits_are_not_read(monkeypatch):
    import recovery.fs.bitmap as bitmap

    recorder = ScanRecorder(bitmap._NONZERO_RUN)
    monkeypatch.setattr(bitmap, "_NONZERO_RUN", recorder)
    mixed = b"\x5a" * CHUNK
    data = bytes(CHUNK) + b"\xff" * CHUNK + mixed + mixed + b"\x0f" * CHUNK
    nbits = (3 * CHUNK + 10) * 8  # ends on a byte edge 10 bytes into the fourth chunk
    assert set_bit_runs(data, nbits) == reference_runs(data, nbits)
    assert recorder.scanned == [(2 * CHUNK, 3 * CHUNK), (3 * CHUNK, 3 * CHUNK + 10)]
