"""What the kernel says about a path: block device or image file, size, sector sizes, parent disk.

Everything here works without udev; sysfs is read through `sys_root` so tests can point at
recorded trees.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct

from recovery.errors import DiskError

BLKSSZGET = 0x1268          # logical sector size (int)
BLKPBSZGET = 0x127B         # physical sector size (unsigned int)
BLKGETSIZE64 = 0x80081272   # size in bytes (u64)
BLKRRPART = 0x125F          # re-read the partition table

GPT_SIGNATURE = b"EFI PART"


def path_kind(path: str) -> str:
    """'block' or 'file'; anything else (missing, directory, char device) is a DiskError."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise DiskError(f"{path} does not exist") from exc
    except OSError as exc:
        raise DiskError(f"cannot look at {path}: {exc.strerror}") from exc
    if stat.S_ISBLK(st.st_mode):
        return "block"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        raise DiskError(f"{path} is a directory, not a disk or a disk-image file")
    raise DiskError(f"{path} is neither a block device nor a disk-image file")


def _ioctl_int(path: str, request: int, fmt: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DiskError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        buf = fcntl.ioctl(fd, request, bytes(struct.calcsize(fmt)))
        return struct.unpack(fmt, buf)[0]
    except OSError as exc:
        raise DiskError(f"cannot ask the kernel about {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def size_of(path: str) -> int:
    """Size in bytes of a block device or an image file."""
    if path_kind(path) == "file":
        return os.stat(path).st_size
    return _ioctl_int(path, BLKGETSIZE64, "Q")


def logical_sector_size(path: str) -> int:
    """The kernel's logical sector size for a block device; for an image file, what its table says."""
    if path_kind(path) == "file":
        return image_sector_size(path)
    return _ioctl_int(path, BLKSSZGET, "i")


def physical_sector_size(path: str) -> int:
    if path_kind(path) == "file":
        return image_sector_size(path)
    return _ioctl_int(path, BLKPBSZGET, "I")


def image_sector_size(path: str) -> int:
    """4096 when the file holds a 4Kn GPT (its header at byte 4096, not at 512), else 512.

    An image file carries no sector size of its own; a GPT header gives it away. An MBR on a
    4Kn disk cannot be told apart and is read as 512.
    """
    try:
        with open(path, "rb") as f:
            at512 = os.pread(f.fileno(), 8, 512)
            at4096 = os.pread(f.fileno(), 8, 4096)
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror}") from exc
    if at512 != GPT_SIGNATURE and at4096 == GPT_SIGNATURE:
        return 4096
    return 512


def sysfs_dir(path: str, sys_root: str = "/sys") -> str:
    """The sysfs directory of a block device (/sys/devices/.../block/sdb or .../sdb/sdb1)."""
    rdev = os.stat(path).st_rdev
    link = f"{sys_root}/dev/block/{os.major(rdev)}:{os.minor(rdev)}"
    return os.path.realpath(link)


def is_partition(path: str, sys_root: str = "/sys") -> bool:
    return os.path.exists(os.path.join(sysfs_dir(path, sys_root), "partition"))


def parent_disk(path: str, sys_root: str = "/sys") -> str:
    """/dev/sdb for /dev/sdb1 (the whole disk a partition belongs to)."""
    parent = os.path.basename(os.path.dirname(sysfs_dir(path, sys_root)))
    return f"/dev/{parent}"


def require_whole_disk(path: str) -> str:
    """The kind of `path` ('block' or 'file'), refusing partitions with a line naming the disk."""
    kind = path_kind(path)
    if kind == "block" and is_partition(path):
        disk = parent_disk(path)
        raise DiskError(f"{path} is a partition; give the whole disk {disk}")
    return kind
