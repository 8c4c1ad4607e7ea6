"""Per-filesystem used-block maps.

Contract shared by every module here (one per filesystem):

    probe(read, size) -> FsInfo | None

``read(offset, length) -> bytes`` reads the partition (offset relative to its start;
short reads only at the end). ``size`` is the partition size in bytes. A module returns
None when the signature is not its filesystem, and raises FsMapError when the signature is
there but the metadata is damaged (the caller then images the partition whole, with a
warning saying why). The used map may only err towards copying more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Reader = Callable[[int, int], bytes]


class FsMapError(Exception):
    """The filesystem's metadata cannot be trusted; image the partition whole."""


@dataclass(frozen=True)
class FsInfo:
    fs: str                       # "ext2/3/4", "vfat", "ntfs", "swap", or a whole-image kind
    label: str | None = None
    uuid: str | None = None
    block_size: int = 4096        # granularity of the used map
    used: tuple[tuple[int, int], ...] = ()   # (offset, length) byte ranges, sorted, merged
    warnings: tuple[str, ...] = field(default_factory=tuple)
    whole: bool = False           # True: the map is the whole partition (unknown or untrusted)

    @property
    def used_bytes(self) -> int:
        return sum(length for _, length in self.used)


def merge_ranges(ranges, limit: int) -> tuple[tuple[int, int], ...]:
    """Sort, clip to [0, limit) and merge touching (offset, length) ranges."""
    out: list[list[int]] = []
    for off, length in sorted(ranges):
        end = min(off + length, limit)
        if end <= off:
            continue
        if out and off <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([off, end])
    return tuple((a, b - a) for a, b in out)
