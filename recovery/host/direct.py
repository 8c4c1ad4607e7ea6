"""Reads that bypass the page cache (O_DIRECT), and the fallback where the kernel refuses them.

Direct reads cost no page-cache copy and never return a stale cached page, which is what a
read-back check needs. tmpfs and some FUSE drivers refuse O_DIRECT when the file is opened,
others only at the first read (EINVAL): callers then read through the cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os

BLKFLSBUF = 0x1261              # flush and drop a block device's buffer cache


def open_direct(path: str) -> int | None:
    """A descriptor for O_DIRECT reads of `path`, or None where it cannot have one (the
    caller's plain open then reports any real problem)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return None


def refused(exc: OSError) -> bool:
    """True when a direct read failed only because this file takes no O_DIRECT after all."""
    return exc.errno == errno.EINVAL


def aligned_buffer(size: int) -> memoryview:
    """A page-aligned buffer, as O_DIRECT needs."""
    return memoryview(mmap.mmap(-1, size))


def drop_cache(fd: int, is_block: bool = False) -> None:
    """Forget cached pages of `fd`, so the next read comes from the medium."""
    if is_block:
        try:
            fcntl.ioctl(fd, BLKFLSBUF, 0)
        except OSError:
            pass
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass


SYNC_FILE_RANGE_WRITE = 2


def _libc_sync_file_range():
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_sync_file_range()


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing `fd`'s dirty pages to the drive now, without waiting
    and without a cache flush (sync_file_range WRITE): a long restore then does not leave
    everything for one final flush. Best effort: where it is missing, nothing happens."""
    if _sync_file_range is None:
        return
    _sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)
