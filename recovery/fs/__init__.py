"""Per-filesystem used-block maps.

Contract shared by every module here (one per filesystem):

    probe(read, size) -> FsInfo | None

``read(offset, length) -> bytes`` reads the partition (offset relative to its start;
short reads only at the end). ``size`` is the partition size in bytes. A module returns
None when the signature is not its filesystem, and raises FsMapError when the signature is
there but the metadata is damaged (the caller then images the partition whole, with a
warning saying why). The used map may only err towards copying more.

The entry points for the rest of the engine:

    probe_partition(read, size) -> FsInfo   the map, never raising for bad content
    identify(read, size) -> (fs, label, uuid) | None   signatures only, for listings
    pread_reader(fd, offset, size) -> Reader            a Reader over a file or device

Modules: ext (ext2/3/4), fat (FAT12/16/32), ntfs, swap, foreign (signatures imaged
whole: LUKS, BitLocker, LVM, RAID, exFAT, XFS, btrfs, ReFS), bitmap (bits -> runs).
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


WHOLE = "imaged whole (every block copied)"

# Space after a filesystem's end worth telling the user about (it is copied as it is).
LARGE_TAIL = 64 * 1024 * 1024


def tail_after(fs: str, fs_end: int, size: int) -> tuple[list[tuple[int, int]], list[str]]:
    """The partition's bytes past the filesystem's end, kept because they are not the
    filesystem's to judge, and a warning when they are many (a shrunk filesystem)."""
    if fs_end >= size:
        return [], []
    tail = size - fs_end
    warnings = []
    if tail >= LARGE_TAIL:
        warnings.append(f"{fs} ends {tail // (1024 * 1024)} MiB before its partition does; "
                        "that space is copied as it is")
    return [(fs_end, tail)], warnings


def whole(fs: str, size: int, reason: str, label: str | None = None, uuid: str | None = None) -> FsInfo:
    """The map of a partition copied block for block; `reason` says why, in plain words."""
    return FsInfo(fs=fs, label=label, uuid=uuid, used=merge_ranges([(0, size)], size),
                  warnings=(f"{reason}; {WHOLE}",), whole=True)


def _steps():
    """(kind of step, handler) in the order signatures are trusted: byte-0 headers first."""
    from recovery.fs import ext, fat, foreign, ntfs, swap
    return ([("foreign", check) for check in foreign.EARLY]
            + [("known", ntfs), ("known", fat), ("known", ext), ("known", swap)]
            + [("foreign", check) for check in foreign.LATE])


def _is_io_failure(exc: BaseException) -> bool:
    from recovery.errors import LifeboatError
    return isinstance(exc, (OSError, LifeboatError))


def clipped(read: Reader, size: int) -> Reader:
    """The reader cut at the partition's end, so no probe ever sees the next partition's bytes."""
    def read_inside(offset: int, length: int) -> bytes:
        length = min(length, size - offset)
        return read(offset, length) if length > 0 and offset >= 0 else b""
    return read_inside


def identify(read: Reader, size: int) -> tuple[str, str | None, str | None] | None:
    """(fs, label, uuid) from signatures alone (cheap, for listing disks), or None if unknown.
    fs is named as blkid names it: ext4, vfat, ntfs, swap, crypto_LUKS, BitLocker, ..."""
    read = clipped(read, size)
    for kind, step in _steps():
        try:
            found = step(read) if kind == "foreign" else step.identify(read, size)
        except Exception as exc:  # noqa: BLE001 - bad content must never break a listing
            if _is_io_failure(exc):
                raise
            continue
        if found:
            return found
    return None


def boot_sector_filesystem(read: Reader, size: int) -> str | None:
    """"vfat" or "ntfs" when sector 0 is that filesystem's boot sector (a sane FAT BPB, or the
    "NTFS    " OEM id with sane geometry) for a filesystem that fits in `size` bytes: such a
    sector also ends in 0x55AA, so partition-table readers take it for an MBR."""
    from recovery.fs import fat, ntfs
    for name, module in (("ntfs", ntfs), ("vfat", fat)):
        try:
            fs_size = module.boot_sector_size(read)
        except Exception as exc:  # noqa: BLE001 - bad content is simply "not this filesystem"
            if _is_io_failure(exc):
                raise
            continue
        if fs_size and fs_size <= size:
            return name
    return None


def probe_partition(read: Reader, size: int) -> FsInfo:
    """The used map of one partition; never raises for bad content. Anything not mapped with
    confidence is imaged whole, with a warning saying why (the caller adds the partition number)."""
    from recovery.fs import foreign
    read = clipped(read, size)
    for kind, step in _steps():
        if kind == "foreign":
            try:
                found = step(read)
            except Exception as exc:  # noqa: BLE001
                if _is_io_failure(exc):
                    raise
                continue
            if found:
                fs, label, fs_uuid = found
                return whole(fs, size, foreign.REASONS.get(fs, fs), label, fs_uuid)
            continue
        try:
            info = step.probe(read, size)
        except Exception as exc:  # noqa: BLE001 - damaged metadata of any shape
            if _is_io_failure(exc):
                raise
            try:
                fs, label, fs_uuid = step.identify(read, size) or (step.__name__.rsplit(".", 1)[-1], None, None)
            except Exception:  # noqa: BLE001
                fs, label, fs_uuid = step.__name__.rsplit(".", 1)[-1], None, None
            reason = str(exc) if isinstance(exc, FsMapError) else \
                f"{fs} metadata is damaged ({type(exc).__name__}: {exc})"
            return whole(fs, size, reason, label, fs_uuid)
        if info is not None:
            return info
    return whole("unknown", size, "no known filesystem or signature found")


def pread_reader(fd: int, offset: int = 0, size: int | None = None) -> Reader:
    """A Reader over [offset, offset+size) of an open file or block device (os.pread, no seeking)."""
    import os

    def read(at: int, length: int) -> bytes:
        if at < 0 or length <= 0:
            return b""
        if size is not None:
            length = min(length, size - at)
            if length <= 0:
                return b""
        parts = []
        while length > 0:
            got = os.pread(fd, length, offset + at)
            if not got:
                break
            parts.append(got)
            at += len(got)
            length -= len(got)
        return b"".join(parts)
    return read
