"""A disk-image file that fails like real hardware: a FUSE filesystem (the kernel's own FUSE,
through mfusepy) exposing one file, `disk.img`, backed by a real image, which answers EIO for
reads of a bad range, or an errno of choice for every write, or every read, after a number of
bytes (a USB disk pulled out mid-restore, or mid-copy from it, answers ENODEV/ENXIO/EIO); or one that is slow to write (a cheap USB
stick: a person has time to press Ctrl-C), or that reads back one byte other than was written
(a stick whose flash lies).

Run as a program: python -m tests.integration.faulty_disk IMAGE MOUNTPOINT [--bad-read START:LEN]
[--fail-writes-after N] [--fail-reads-after N] [--errno NAME] [--write-mibps N] [--flip-read BYTE]. The test mounts it, uses MOUNTPOINT/disk.img, unmounts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

from recovery.probe.mounts import current_mounts

NAME = "/disk.img"


def serve(image: str, mountpoint: str, bad_read: tuple[int, int] | None, fail_after: int | None, fail_errno: int,
          write_mibps: float | None = None, flip_read: int | None = None, fail_reads_after: int | None = None):
    import mfusepy

    fd = os.open(image, os.O_RDWR)
    size = os.fstat(fd).st_size
    written = [0]
    read_total = [0]
    lock = threading.Lock()

    class Faulty(mfusepy.Operations):
        def getattr(self, path, fh=None):
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path == NAME:
                return {"st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": size}
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", NAME[1:]]

        def open(self, path, flags):
            return 0

        def read(self, path, length, offset, fh):
            if bad_read and offset < bad_read[0] + bad_read[1] and offset + length > bad_read[0]:
                raise mfusepy.FuseOSError(errno.EIO)
            if fail_reads_after is not None:
                with lock:
                    if read_total[0] + length > fail_reads_after:
                        read_total[0] = fail_reads_after      # gone for good, however small the next read
                        raise mfusepy.FuseOSError(fail_errno)
                    read_total[0] += length
            data = os.pread(fd, length, offset)
            if flip_read is not None and offset <= flip_read < offset + len(data):
                i = flip_read - offset
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
            return data

        def write(self, path, data, offset, fh):
            with lock:
                if fail_after is not None and written[0] + len(data) > fail_after:
                    raise mfusepy.FuseOSError(fail_errno)
                written[0] += len(data)
            if write_mibps:
                time.sleep(len(data) / (write_mibps * 1024 * 1024))
            return os.pwrite(fd, data, offset)

        def truncate(self, path, length, fh=None):
            return 0

        def fsync(self, path, datasync, fh):
            os.fsync(fd)
            return 0

    mfusepy.FUSE(Faulty(), mountpoint, foreground=True, nothreads=False, direct_io=True)


@contextlib.contextmanager
def fuse_program(module: str, args: list[str], mountpoint: Path, ready: Path):
    """Run `python -m module *args` (a FUSE server) until the block ends; waits for `ready` to
    appear first, and unmounts `mountpoint` after."""
    mountpoint.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", module, *args],
                            cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{module} did not mount: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        yield
    finally:
        # The loop device over the FUSE file may let go a moment after it is detached: until
        # then the unmount is refused as busy. A mount left behind would outlive the test (a
        # dead FUSE mount in the run's folder, which the next run cannot remove), so after a
        # few tries it is unmounted lazily, and for certain once its server is gone.
        for _ in range(30):
            subprocess.run(["fusermount", "-u", str(mountpoint)], capture_output=True)
            if not mounted(mountpoint):
                break
            time.sleep(0.1)
        else:
            subprocess.run(["fusermount", "-u", "-z", str(mountpoint)], capture_output=True)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if mounted(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def mounted(path: Path) -> bool:
    return any(m.target == str(path) for m in current_mounts())


@contextlib.contextmanager
def faulty_disk(image: Path, mountpoint: Path, *args: str):
    """Mount the faulty view of `image`; yields the path of the faulty disk-image file."""
    with fuse_program("tests.integration.faulty_disk", [str(image), str(mountpoint), *args], mountpoint,
                      mountpoint / NAME[1:]):
        yield mountpoint / NAME[1:]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("mountpoint")
    p.add_argument("--bad-read")
    p.add_argument("--fail-writes-after", type=int)
    p.add_argument("--fail-reads-after", type=int)
    p.add_argument("--errno", default="EIO")
    p.add_argument("--write-mibps", type=float)
    p.add_argument("--flip-read", type=int)
    a = p.parse_args()
    bad = tuple(int(x) for x in a.bad_read.split(":")) if a.bad_read else None
    serve(a.image, a.mountpoint, bad, a.fail_writes_after, getattr(errno, a.errno), a.write_mibps, a.flip_read,
          a.fail_reads_after)


if __name__ == "__main__":
    main()
