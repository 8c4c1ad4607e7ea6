"""Opening disks and disk-image files for whole-disk reads and writes, with plain errors."""

from __future__ import annotations

import errno
import os
import stat
import threading

from recovery.errors import DiskError, NoSpaceError
from recovery.host import direct

# The target is gone (USB pulled, NVMe reset) rather than merely failing a sector.
VANISHED = {errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.ESHUTDOWN}


class Disk:
    """A whole disk or image file opened by path; size known; preadv/pwrite with plain errors."""

    def __init__(self, path: str, writable: bool = False, incomplete: str | None = None):
        self.path = path
        self.incomplete = incomplete or INCOMPLETE     # what a failed write leaves, for people
        flags = os.O_RDWR if writable else os.O_RDONLY
        try:
            st = os.stat(path)
            self.is_block = stat.S_ISBLK(st.st_mode)
            if not (self.is_block or stat.S_ISREG(st.st_mode)):
                raise DiskError(f"{path} is neither a disk nor a disk-image file")
            if writable and self.is_block:
                flags |= os.O_EXCL    # the kernel refuses this while anything has it mounted
            self.fd = os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            raise DiskError(f"{path} does not exist") from None
        except PermissionError:
            raise DiskError(f"{path} cannot be opened: permission denied (run as root?)") from None
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DiskError(f"{path} is in use (mounted or opened by another program)") from None
            raise DiskError(f"{path} cannot be opened: {exc.strerror}") from exc
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        self._flusher: threading.Thread | None = None
        if not writable:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)   # larger read-ahead

    def read_into(self, buf, offset: int, what: str) -> None:
        view = memoryview(buf)
        pos = offset
        while view:
            try:
                n = os.preadv(self.fd, [view], pos)
            except OSError as exc:
                raise DiskError(
                    f"cannot read {self.path} at byte {pos} ({what}): {exc.strerror}; "
                    "the disk may be failing"
                ) from exc
            if n == 0:
                raise DiskError(f"{self.path} ended early at byte {pos} ({what})")
            view = view[n:]
            pos += n

    def read(self, offset: int, length: int) -> bytes:
        try:
            return os.pread(self.fd, length, offset)
        except OSError as exc:
            raise DiskError(f"cannot read {self.path} at byte {offset}: {exc.strerror}") from exc

    def write(self, data, offset: int, what: str) -> None:
        view = memoryview(data)
        pos = offset
        while view:
            try:
                n = os.pwrite(self.fd, view, pos)
            except OSError as exc:
                raise self._dropped(what, exc) or write_error(self.path, pos, what, exc, self.incomplete) from exc
            view = view[n:]
            pos += n

    def sync(self) -> None:
        self._wait_flush()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise self._dropped("flushing", exc) or write_error(self.path, 0, "flushing", exc, self.incomplete) from exc

    def _dropped(self, what: str, exc: OSError) -> DiskError | None:
        """A block device refuses writes inside its own size with ENOSPC when the kernel has
        dropped it to a smaller size (an NVMe or USB drive that stopped answering and was reset
        or detached); that is a vanished disk, not a full one."""
        if exc.errno != errno.ENOSPC or not self.is_block:
            return None
        try:
            now = os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            now = 0
        if now >= self.size:
            return None
        return DiskError(f"the target {self.path} stopped answering while writing ({what}): the kernel now "
                         f"reports {now} bytes instead of {self.size}; {self.incomplete}")

    def flush_behind(self) -> None:
        """Start writing what is cached to the drive on a background thread, unless the last
        start is still running: the drive then writes while the caller keeps decoding, and
        the final sync() finds little left to do. No cache flush is asked of the drive here."""
        if self._flusher is not None and self._flusher.is_alive():
            return
        self._wait_flush()
        self._flusher = threading.Thread(target=direct.start_writeback, args=(self.fd,), name="write-behind",
                                         daemon=True)
        self._flusher.start()

    def _wait_flush(self) -> None:
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None

    def close(self) -> None:
        self._wait_flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


INCOMPLETE = "the target is incomplete and will not boot; run the restore again"


def write_error(path: str, pos: int, what: str, exc: OSError, incomplete: str = INCOMPLETE) -> DiskError:
    if exc.errno in VANISHED:
        return DiskError(f"the target {path} vanished while writing ({what}); {incomplete}")
    if exc.errno == errno.ENOSPC:
        return NoSpaceError(f"no space left writing {path} at byte {pos} ({what}); {incomplete}")
    return DiskError(f"cannot write {path} at byte {pos} ({what}): {exc.strerror}; {incomplete}")
