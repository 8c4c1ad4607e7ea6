"""Fixed-size windows over a partition, fed by its used-block map.

A window is `chunk_size` bytes at a multiple of `chunk_size` from the partition start. The
chunk table of a partition holds one id per window; a window with no used byte holds NO_DATA
and stores nothing. Inside a stored window, unused bytes are zero, so garbage in free space
never reaches the repository and identical used content dedups whatever the garbage was.
"""

from __future__ import annotations

from typing import Iterator

Ranges = list[tuple[int, int]]


def used_windows(ranges, size: int, chunk_size: int) -> Iterator[tuple[int, Ranges]]:
    """Yield (window number, used ranges inside it relative to the window start), in order,
    for every window that holds at least one used byte. `ranges` must be sorted and merged."""
    current = -1
    parts: Ranges = []
    for off, length in ranges:
        end = min(off + length, size)
        while off < end:
            w = off // chunk_size
            w_end = min((w + 1) * chunk_size, end)
            if w != current:
                if parts:
                    yield current, parts
                current, parts = w, []
            parts.append((off - w * chunk_size, w_end - off))
            off = w_end
    if parts:
        yield current, parts


def window_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


def window_length(w: int, size: int, chunk_size: int) -> int:
    return min(chunk_size, size - w * chunk_size)


def split(data: bytes, piece: int) -> list[bytes]:
    """Cut metadata into pieces so no single blob grows with the disk."""
    return [data[i : i + piece] for i in range(0, len(data), piece)] or [b""]
