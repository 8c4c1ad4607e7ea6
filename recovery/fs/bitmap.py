"""Allocation bitmap -> runs of set bits, fast.

ext2/3/4 block bitmaps and NTFS's $Bitmap both number bits least-significant first within
each byte. A 1 TB ext4 has 32 MB of bitmap, so walking bits in Python is out of the
question: the bitmap is compared chunk by chunk against all-zero and all-one chunks (memcmp),
regular expressions find the non-zero stretches and the bytes other than 0xFF inside the
remaining chunks, and only those mixed bytes are split into bit runs in Python (through a
table made once).
"""

from __future__ import annotations

import re

# For every byte value, its runs of set bits as (first bit, count), least significant first.
_BYTE_RUNS: tuple[tuple[tuple[int, int], ...], ...] = tuple(
    tuple(
        (start, length)
        for start, length in (
            (m.start(), m.end() - m.start())
            for m in re.finditer("1+", format(value, "08b")[::-1])
        )
    )
    for value in range(256)
)

# The regex engine scans a character class at some 20-40 ns a byte, too slow for 32 MB of
# mostly empty bitmap; comparing fixed-size chunks with an all-zero or all-one chunk runs at
# memcmp speed, so only chunks holding both kinds of bit go through the expressions below.
CHUNK = 256
_ZERO_CHUNK = bytes(CHUNK)
_FULL_CHUNK = b"\xff" * CHUNK
_NONZERO_RUN = re.compile(rb"[^\x00]+")
_NOT_FULL = re.compile(rb"[^\xff]")


def set_bit_runs(bitmap: bytes, nbits: int | None = None) -> list[tuple[int, int]]:
    """Runs of set bits as (first bit, count), sorted and merged; bits from `nbits` on are ignored."""
    if nbits is None:
        nbits = len(bitmap) * 8
    view = bitmap[: (nbits + 7) // 8] if nbits < len(bitmap) * 8 else bytes(bitmap)
    runs: list[tuple[int, int]] = []
    run_start = run_end = -1

    def add(start: int, end: int) -> None:
        nonlocal run_start, run_end
        if start == run_end:
            run_end = end
        else:
            if run_end > run_start:
                runs.append((run_start, run_end - run_start))
            run_start, run_end = start, end

    length = len(view)
    for chunk_start in range(0, length, CHUNK):
        chunk_end = min(chunk_start + CHUNK, length)
        chunk = view[chunk_start:chunk_end]
        if chunk_end - chunk_start == CHUNK:
            if chunk == _ZERO_CHUNK:
                continue
            if chunk == _FULL_CHUNK:
                add(chunk_start * 8, chunk_end * 8)
                continue
        for stretch in _NONZERO_RUN.finditer(view, chunk_start, chunk_end):
            pos, end = stretch.span()
            # Inside a stretch of non-zero bytes only the bytes other than 0xFF need bit work.
            for mixed in _NOT_FULL.finditer(view, pos, end):
                at = mixed.start()
                if at > pos:
                    add(pos * 8, at * 8)
                base = at * 8
                for first, count in _BYTE_RUNS[view[at]]:
                    add(base + first, base + first + count)
                pos = at + 1
            if pos < end:
                add(pos * 8, end * 8)
    if run_end > run_start:
        runs.append((run_start, run_end - run_start))
    # Clip the padding bits past nbits (the last byte may be partly outside the map).
    while runs and runs[-1][0] + runs[-1][1] > nbits:
        start, count = runs.pop()
        if start < nbits:
            runs.append((start, nbits - start))
            break
    return runs


def bitmap_ranges(bitmap: bytes, unit: int, base: int = 0, nbits: int | None = None) -> list[tuple[int, int]]:
    """Set bits as byte ranges (offset, length): bit i covers [base + i*unit, base + (i+1)*unit)."""
    return [(base + start * unit, count * unit) for start, count in set_bit_runs(bitmap, nbits)]
