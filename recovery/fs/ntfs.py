"""NTFS used-block map (in progress)."""

from __future__ import annotations

from recovery.fs import FsInfo, Reader


def identify(read: Reader, size: int):
    return ("ntfs", None, None) if read(3, 8) == b"NTFS    " else None


def probe(read: Reader, size: int) -> FsInfo | None:
    if identify(read, size) is None:
        return None
    from recovery.fs import FsMapError
    raise FsMapError("NTFS map not implemented yet")
