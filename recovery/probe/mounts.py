"""What is mounted, and on which disk: /proc/self/mountinfo joined with sysfs.

Used by the safety rules (never write a mounted disk, nor the one holding the repository) and
by disk listings (mountpoints of each partition).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

SYS = "/sys"
MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class Mount:
    source: str                     # /dev/sdb1, an image file for FUSE, or "proc", "tmpfs", ...
    target: str                     # where it is mounted
    fstype: str                     # "ext4", "fuseblk", "vfat", ...
    read_only: bool
    major_minor: tuple[int, int]    # st_dev of the mounted filesystem (0:N for FUSE, tmpfs, btrfs)
    options: tuple[str, ...] = ()   # per-mount then superblock options ("ro", "upperdir=...", ...)


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse mountinfo text (pure). Lines: id parent major:minor root target opts [tags] - fstype source super."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            continue
        major, minor = (int(x) for x in fields[2].split(":"))
        super_options = fields[sep + 3].split(",") if len(fields) > sep + 3 else []
        options = fields[5].split(",") + super_options      # per-mount, then superblock options
        mounts.append(Mount(source=_unescape(fields[sep + 2]), target=_unescape(fields[4]),
                            fstype=fields[sep + 1], read_only="ro" in options, major_minor=(major, minor),
                            options=tuple(_unescape(o) for o in options)))
    return mounts


def current_mounts(mountinfo: str = MOUNTINFO) -> list[Mount]:
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _dev_numbers(sysdir: str) -> tuple[int, int] | None:
    try:
        with open(os.path.join(sysdir, "dev")) as f:
            major, minor = f.read().strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


def _block_sysdir(name: str, sys_root: str) -> str:
    return os.path.realpath(os.path.join(sys_root, "class", "block", name))


def devices_of_disk(disk_name: str, sys_root: str = SYS) -> dict[tuple[int, int], str]:
    """major:minor -> /dev/name of a disk, its partitions, and everything stacked on them
    (device-mapper, md), found through sysfs `holders`."""
    found: dict[tuple[int, int], str] = {}
    todo = [disk_name]
    while todo:
        name = todo.pop()
        sysdir = _block_sysdir(name, sys_root)
        numbers = _dev_numbers(sysdir)
        if numbers is None or numbers in found:
            continue
        found[numbers] = f"/dev/{name}"
        try:
            entries = os.listdir(sysdir)
        except OSError:
            continue
        todo += [e for e in entries if e.startswith(name) and os.path.exists(os.path.join(sysdir, e, "partition"))]
        try:
            todo += os.listdir(os.path.join(sysdir, "holders"))
        except OSError:
            pass
    return found


def loops_backed_by(image: str, sys_root: str = SYS) -> list[str]:
    """Loop devices (/dev/loopN) whose backing file is `image`."""
    real = os.path.realpath(image)
    found = []
    try:
        names = sorted(os.listdir(os.path.join(sys_root, "block")))
    except OSError:
        return []
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open(os.path.join(sys_root, "block", name, "loop", "backing_file")) as f:
                backing = f.read().strip()
        except OSError:
            continue                    # not attached
        if backing == real or (os.path.exists(backing) and os.path.samefile(backing, real)):
            found.append(f"/dev/{name}")
    return found


def mounts_on_disk(disk_path: str, mounts: list[Mount] | None = None, sys_root: str = SYS) -> list[Mount]:
    """Mounts of a disk itself, of any of its partitions (or what is stacked on them), and, for
    an image file, of loop devices backed by it or FUSE mounts of it."""
    mounts = current_mounts() if mounts is None else mounts
    real = os.path.realpath(disk_path)
    if os.path.isfile(real):
        hits = [m for m in mounts if m.source.startswith("/") and os.path.realpath(m.source) == real]
        for loop in loops_backed_by(real, sys_root):
            hits += [m for m in mounts_on_disk(loop, mounts, sys_root) if m not in hits]
        return hits
    devices = devices_of_disk(os.path.basename(real), sys_root)
    nodes = set(devices.values())
    return [m for m in mounts
            if m.major_minor in devices or (m.source.startswith("/dev/") and os.path.realpath(m.source) in nodes)]


def whole_disk_of(numbers: tuple[int, int], sys_root: str) -> str | None:
    """/dev/name of the whole disk under a device number, following device-mapper/md down."""
    sysdir = os.path.realpath(os.path.join(sys_root, "dev", "block", f"{numbers[0]}:{numbers[1]}"))
    if not os.path.isdir(sysdir):
        return None
    if os.path.exists(os.path.join(sysdir, "partition")):
        sysdir = os.path.dirname(sysdir)
    try:
        slaves = sorted(os.listdir(os.path.join(sysdir, "slaves")))
    except OSError:
        slaves = []
    if slaves:
        under = _dev_numbers(_block_sysdir(slaves[0], sys_root))
        return whole_disk_of(under, sys_root) if under else None
    return f"/dev/{os.path.basename(sysdir)}"


def disk_of_path(path: str, mounts: list[Mount] | None = None, sys_root: str = SYS) -> str | None:
    """The whole-disk device whose filesystem holds `path` (a file or directory); None if unknown
    (tmpfs, network filesystems, a path that does not exist)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    numbers = (os.major(st.st_dev), os.minor(st.st_dev))
    if numbers[0] != 0:
        return whole_disk_of(numbers, sys_root)
    # btrfs, FUSE (ntfs-3g) and overlay report anonymous device numbers: use the mount's source.
    mounts = current_mounts() if mounts is None else mounts
    real = os.path.realpath(path)
    best = None
    for m in mounts:
        inside = real == m.target or real.startswith(m.target.rstrip("/") + "/")
        if inside and (best is None or len(m.target) >= len(best.target)):
            best = m
    if best is None or not best.source.startswith("/") or not os.path.exists(best.source):
        return None
    if os.path.isfile(best.source):
        # a filesystem image mounted through FUSE: its files live on the disk holding the image
        return disk_of_path(best.source, mounts, sys_root) if os.path.realpath(best.source) != real else None
    rdev = os.stat(best.source).st_rdev
    return whole_disk_of((os.major(rdev), os.minor(rdev)), sys_root)


RAM_FILESYSTEMS = ("tmpfs", "ramfs", "devtmpfs")
_RAM_DISK = re.compile(r"/dev/(zram|ram)\d+$")


def mount_holding(path: str, mounts: list[Mount] | None = None) -> Mount | None:
    """The mount whose filesystem holds `path` (which must exist): the one with the same
    device number (the deepest, when bind mounts repeat it), else the deepest mount point
    above the path (btrfs subvolumes report other device numbers)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    mounts = current_mounts() if mounts is None else mounts
    real = os.path.realpath(path)

    def above(m: Mount) -> bool:
        return real == m.target or real.startswith(m.target.rstrip("/") + "/")

    numbers = (os.major(st.st_dev), os.minor(st.st_dev))
    same = [m for m in mounts if m.major_minor == numbers]
    candidates = [m for m in same if above(m)] or same or [m for m in mounts if above(m)]
    best = None
    for m in candidates:   # later lines of mountinfo hide earlier ones at the same place
        if best is None or (above(m) and len(m.target) >= len(best.target)):
            best = m
    return best


def ram_backed(path: str, mounts: list[Mount] | None = None, _depth: int = 0) -> str | None:
    """How the filesystem holding `path` lives in memory (everything in it is lost at
    power-off), in a few words such as "tmpfs at /dev/shm"; None when it is not known to.
    tmpfs, ramfs, devtmpfs, a RAM disk (zram, brd), and an overlay whose upper layer is one
    of those (the live system's root)."""
    mounts = current_mounts() if mounts is None else mounts
    m = mount_holding(path, mounts)
    if m is None:
        return None
    if m.fstype in RAM_FILESYSTEMS:
        return f"{m.fstype} at {m.target}"
    if _RAM_DISK.match(m.source):
        return f"the RAM disk {m.source} at {m.target}"
    if m.fstype == "overlay" and _depth < 4:
        return overlay_in_memory(m, mounts, _depth)
    return None


def overlay_in_memory(m: Mount, mounts: list[Mount], _depth: int = 0) -> str | None:
    """ram_backed for an overlay mount: where its upper layer (what is written) is kept."""
    upper = next((o.split("=", 1)[1] for o in m.options if o.startswith("upperdir=")), None)
    if not upper:
        return None
    if os.path.exists(upper):
        under = ram_backed(upper, mounts, _depth + 1)
    else:
        # The overlay's options keep the path its upper layer had when it was mounted; the
        # live system then moves that tmpfs (/rw becomes /run/lifeboat/rw).
        parent = os.path.dirname(upper.rstrip("/"))
        under = next((f"{r.fstype} at {r.target}" for r in mounts if r.fstype in RAM_FILESYSTEMS
                      and parent not in ("", "/")
                      and (r.target == parent or r.target.endswith("/" + parent.lstrip("/")))), None)
    return f"an overlay at {m.target} kept on {under}" if under else None


def is_on_disk(path: str, disk: str) -> bool:
    """True when `path` lives on a filesystem of the whole disk `disk` (any spelling of it)."""
    holder = disk_of_path(path)
    return holder is not None and os.path.realpath(holder) == os.path.realpath(disk)
