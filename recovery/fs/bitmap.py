"""Allocation bitmap -> runs of set bits, fast.

ext2/3/4 block bitmaps and NTFS's $Bitmap both number bits least-significant first within
each byte. A 1 TB ext4 has 32 MB of bitmap, so walking bits in Python is out of the
question: a regular expression finds runs of 0xFF bytes and lone mixed bytes in C, all-zero
stretches are skipped without being looked at, and only mixed bytes are split into bit runs
(through a table made once).
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

# A stretch of full bytes, or one byte that is neither empty nor full.
_FULL_OR_MIXED = re.compile(rb"\xff+|[^\x00\xff]")


def set_bit_runs(bitmap: bytes, nbits: int | None = None) -> list[tuple[int, int]]:
    """Runs of set bits as (first bit, count), sorted and merged; bits from `nbits` on are ignored."""
    if nbits is None:
        nbits = len(bitmap) * 8
    view = bitmap[: (nbits + 7) // 8] if nbits < len(bitmap) * 8 else bitmap
    runs: list[tuple[int, int]] = []
    run_start = run_end = -1
    for match in _FULL_OR_MIXED.finditer(view):
        pos = match.start()
        value = view[pos]
        if value == 0xFF:
            pieces = ((pos * 8, match.end() * 8),)
        else:
            base = pos * 8
            pieces = tuple((base + s, base + s + n) for s, n in _BYTE_RUNS[value])
        for start, end in pieces:
            if start == run_end:
                run_end = end
            else:
                if run_end > run_start:
                    runs.append((run_start, run_end - run_start))
                run_start, run_end = start, end
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
