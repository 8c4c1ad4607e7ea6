"""Linux swap: only the header page holds anything worth keeping.

A swap area that holds a hibernation image is different: resuming needs all of it, so it is
imaged whole (FsMapError with the reason).
"""

from __future__ import annotations

import uuid as uuidlib

from recovery.fs import FsInfo, FsMapError, Reader

# The signature sits in the last 10 bytes of the first page; the page size is the writer's.
PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")
HIBERNATION_MAGICS = (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001")


def _find(read: Reader) -> tuple[int, bytes] | None:
    for page in PAGE_SIZES:
        tail = read(page - 10, 10)
        if tail in SWAP_MAGICS:
            return page, tail
        for magic in HIBERNATION_MAGICS:
            if tail.startswith(magic) or tail.endswith(magic):
                return page, tail
    return None


def identify(read: Reader, size: int) -> tuple[str, str | None, str | None] | None:
    found = _find(read)
    if found is None:
        return None
    header = read(1024, 44)
    if found[1] != b"SWAPSPACE2" or len(header) < 44:
        return ("swap", None, None)
    raw_uuid = header[12:28]
    label = header[28:44].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return ("swap", label, str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else None)


def probe(read: Reader, size: int) -> FsInfo | None:
    found = _find(read)
    if found is None:
        return None
    page, magic = found
    if magic not in SWAP_MAGICS:
        raise FsMapError("swap holds a Linux hibernation image")
    _, label, fs_uuid = identify(read, size)
    return FsInfo(fs="swap", label=label, uuid=fs_uuid, block_size=page, used=((0, min(page, size)),))
