"""A folder on a drive that misbehaves: a FUSE filesystem (the kernel's own FUSE, through
mfusepy) passing every call through to a real folder, except that it can read slowly (a tired
USB disk: a person has time to press Ctrl-C) or return one byte altered in every read of a
file under a chosen subfolder (a drive whose flash lies: what was written is not what comes
back), or answer EIO for reads touching a byte range of every file under a chosen subfolder
(bad sectors; parity sidecars, `*.par`, are spared so that what they protect can be repaired).
Nothing is cached by the kernel (direct_io), so every read reaches this process.

Run as a program: python -m tests.integration.faulty_folder FOLDER MOUNTPOINT
[--read-mibps N] [--flip-reads-under SUBFOLDER] [--bad-reads-under SUBFOLDER:START:LEN].
Tests use `faulty_folder(...)`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import time
from pathlib import Path


def serve(root: str, mountpoint: str, read_mibps: float | None, flip_under: str | None,
          bad_under: tuple[str, int, int] | None = None) -> None:
    import mfusepy

    def real(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    def passthrough(fn):
        def call(self, path, *args):
            try:
                return fn(self, path, *args)
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None
        return call

    class Folder(mfusepy.Operations):
        @passthrough
        def getattr(self, path, fh=None):
            st = os.lstat(real(path))
            return {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid",
                                                 "st_atime", "st_mtime", "st_ctime")}

        @passthrough
        def readdir(self, path, fh):
            return [".", "..", *os.listdir(real(path))]

        @passthrough
        def mkdir(self, path, mode):
            os.mkdir(real(path), mode)

        @passthrough
        def rmdir(self, path):
            os.rmdir(real(path))

        @passthrough
        def unlink(self, path):
            os.unlink(real(path))

        @passthrough
        def rename(self, old, new):
            os.rename(real(old), real(new))

        @passthrough
        def open(self, path, flags):
            return os.open(real(path), flags & ~os.O_DIRECT)

        @passthrough
        def create(self, path, mode, fi=None):
            return os.open(real(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

        @passthrough
        def read(self, path, length, offset, fh):
            if read_mibps:
                time.sleep(length / (read_mibps * 1024 * 1024))
            if bad_under and path.startswith(f"/{bad_under[0]}/") and not path.endswith(".par") \
                    and offset < bad_under[1] + bad_under[2] and bad_under[1] < offset + length:
                raise OSError(errno.EIO, "bad sector")
            data = os.pread(fh, length, offset)
            if flip_under and path.startswith(f"/{flip_under}/") and data:
                data = bytes([data[0] ^ 0x01]) + data[1:]
            return data

        @passthrough
        def write(self, path, data, offset, fh):
            return os.pwrite(fh, data, offset)

        @passthrough
        def truncate(self, path, length, fh=None):
            os.truncate(real(path), length)

        @passthrough
        def release(self, path, fh):
            os.close(fh)

        @passthrough
        def fsync(self, path, datasync, fh):
            os.fsync(fh)

        def fsyncdir(self, path, datasync, fh):
            return 0

        def flush(self, path, fh):
            return 0

        @passthrough
        def statfs(self, path):
            st = os.statvfs(real(path))
            return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                 "f_files", "f_ffree", "f_favail", "f_namemax")}

        @passthrough
        def utimens(self, path, times=None):
            os.utime(real(path), ns=times)

        @passthrough
        def chmod(self, path, mode):
            os.chmod(real(path), mode)

    mfusepy.FUSE(Folder(), mountpoint, foreground=True, nothreads=False, direct_io=True)


@contextlib.contextmanager
def faulty_folder(folder: Path, mountpoint: Path, *args: str):
    """Mount the faulty view of `folder` at `mountpoint`; yields the mountpoint."""
    from tests.integration.faulty_disk import fuse_program

    folder.mkdir(exist_ok=True)
    # the folder's own entries show through once it is mounted; an empty one gets a marker
    marker = folder / ".faulty-folder"
    marker.touch()
    with fuse_program("tests.integration.faulty_folder", [str(folder), str(mountpoint), *args], mountpoint,
                      mountpoint / marker.name):
        yield mountpoint
    marker.unlink(missing_ok=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("folder")
    p.add_argument("mountpoint")
    p.add_argument("--read-mibps", type=float)
    p.add_argument("--flip-reads-under")
    p.add_argument("--bad-reads-under", help="SUBFOLDER:START:LEN")
    a = p.parse_args()
    bad = None
    if a.bad_reads_under:
        sub, start, length = a.bad_reads_under.split(":")
        bad = (sub, int(start), int(length))
    serve(a.folder, a.mountpoint, a.read_mibps, a.flip_reads_under, bad)


if __name__ == "__main__":
    main()
