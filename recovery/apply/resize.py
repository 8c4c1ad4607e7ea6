"""A restored filesystem grows with its partition: ext2/3/4, NTFS, swap; FAT left as is.

    grow_filesystem(target, entry, fs, old_size, uuid, label) -> note

``target`` is the partition's own device (/dev/sdb3, /dev/loop3p2), the whole disk it is on
(the partition is found by ``entry.number``, or reached through a loop device over its byte
range when the node is missing) or a disk-image file (root: a loop device over
``entry.start``/``entry.size``, detached afterwards; not root: the filesystem is left at its
old size and the note says so). ``entry`` is the partition as planned on the target (start
and size in bytes), ``old_size`` its size in the backup.

ext2/3/4: e2fsck -fy, resize2fs, e2fsck -fn.
NTFS: ntfsresize -ff (no questions; it marks the volume for a check by Windows, as it always
does), then ntfsfix -n. Swap (larger or smaller): mkswap with the same UUID and label. FAT:
left as is (no maintained tool resizes it), with a note.

Shrinking ext2/3/4 and NTFS is not done here: it needs the data that lay beyond the new end,
which only the backup holds, so the restore calls recovery.apply.shrink.shrink_filesystem
before it writes the table; this module refuses a smaller partition for them.

A failing tool raises ToolError saying what state the partition is in.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager

from recovery.errors import ToolError
from recovery.model.layout import PartitionEntry
from recovery.plan.layout import fs_family
from recovery.host import loops, tools
from recovery.host.tools import why
from recovery.units import human_size



def grow_filesystem(device_or_image: str, entry: PartitionEntry, fs: str | None, old_size: int,
                    uuid: str | None, label: str | None, *, table_written: bool = True) -> str:
    """Make the filesystem in `entry` fill it; returns one line saying what was done.
    `table_written=False`: the disk's partition table is not written yet (a restore writes it
    last), so the partition is reached through a loop device over its byte range, never
    through a partition node the kernel may still keep from the old table."""
    family = fs_family(fs)
    name = f"partition {entry.number} ({fs or 'no filesystem'})"
    if family is None:
        return f"{name.capitalize()}: left as it is (no filesystem Lifeboat can resize)."
    if family == "fat":
        if entry.size == old_size:
            return f"{name.capitalize()}: unchanged."
        return (f"{name.capitalize()}: the FAT filesystem keeps its size of {human_size(old_size)} "
                f"in the {human_size(entry.size)} partition (no maintained tool resizes FAT).")
    if entry.size == old_size and family != "swap":
        return f"{name.capitalize()}: unchanged."
    if entry.size < old_size and family in ("ext", "ntfs"):
        raise ToolError(f"{name} is smaller than its saved filesystem, which only the restore's shrink step "
                        f"can fit into it (recovery.apply.shrink); its filesystem was left as it is")
    with _partition_device(device_or_image, entry, table_written) as dev:
        if dev is None:
            return (f"{name.capitalize()}: the filesystem was left at its old size of {human_size(old_size)} "
                    f"(growing it inside a disk-image file needs root).")
        if family == "ext":
            return _ext(dev, name, entry, old_size)
        if family == "ntfs":
            return _ntfs(dev, name, entry, old_size)
        return _swap(dev, name, entry, uuid, label)


# ----------------------------------------------------------------------------- devices


def _is_block(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _is_partition(path: str) -> bool:
    name = os.path.basename(os.path.realpath(path))
    return os.path.exists(f"/sys/class/block/{name}/partition")


@contextmanager
def _partition_device(target: str, entry: PartitionEntry, table_written: bool = True):
    """Yield a block device holding exactly the partition, or None when that needs root."""
    if _is_block(target) and (_is_partition(target) or entry.number == 0):
        yield target
        return
    if _is_block(target) and table_written:
        from recovery.apply.table import partition_path   # the lead's naming rule
        node = partition_path(target, entry.number)
        if node and _is_block(node) and _size_of(node) == entry.size:
            yield node
            return
    if os.geteuid() != 0:
        yield None
        return
    try:
        loop = loops.attach(target, entry.start, entry.size)
    except ToolError as exc:
        raise ToolError(f"cannot reach partition {entry.number} of {target} through a loop device: "
                        f"{exc.message}; its filesystem is restored at its old size") from exc
    try:
        yield loop
    finally:
        loops.detach(loop)


def _size_of(dev: str) -> int:
    fd = os.open(dev, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- ext2/3/4


def _ext(dev: str, name: str, entry: PartitionEntry, old_size: int) -> str:
    pre = tools.step(["e2fsck", "-f", "-y", dev])
    if pre.returncode >= 4:
        raise ToolError(f"e2fsck could not repair the restored {name} on {dev} ({why(pre)}); "
                        f"it is at its old size of {human_size(old_size)}: check it by hand before using it")
    grow = tools.step(["resize2fs", dev])
    if grow.returncode != 0:
        raise ToolError(f"resize2fs failed on {name} ({dev}): {why(grow)}; the partition holds the restored "
                        f"filesystem at its old size of {human_size(old_size)}, intact")
    post = tools.step(["e2fsck", "-f", "-n", dev])
    if post.returncode != 0:
        raise ToolError(f"after resizing, e2fsck reports problems on {name} ({dev}): {why(post)}; "
                        f"run e2fsck -f {dev} before using it")
    return (f"{name.capitalize()}: filesystem grown from {human_size(old_size)} to {human_size(entry.size)}, "
            f"checked clean.")


# ----------------------------------------------------------------------------- NTFS


def _ntfs(dev: str, name: str, entry: PartitionEntry, old_size: int) -> str:
    res = tools.step(["ntfsresize", "--force", "--force", "--no-progress-bar", dev])
    if res.returncode != 0:
        raise ToolError(f"ntfsresize failed on {name} ({dev}): {why(res)}; the partition holds the restored "
                        f"NTFS at its old size of {human_size(old_size)}; Windows can extend it in Disk Management")
    check = tools.step(["ntfsfix", "--no-action", dev])
    if check.returncode != 0:
        raise ToolError(f"after growing, ntfsfix reports problems on {name} ({dev}): {why(check)}; "
                        f"let Windows check the disk (chkdsk) before using it")
    return (f"{name.capitalize()}: NTFS grown from {human_size(old_size)} to {human_size(entry.size)}; "
            f"Windows checks it once at its next start.")


# ----------------------------------------------------------------------------- swap


def _swap(dev: str, name: str, entry: PartitionEntry, uuid: str | None, label: str | None) -> str:
    args = ["mkswap"]
    if uuid:
        args += ["-U", uuid]
    if label:
        args += ["-L", label]
    res = tools.step(args + [dev])
    if res.returncode != 0:
        raise ToolError(f"mkswap failed on {name} ({dev}): {why(res)}; the partition holds no usable swap: "
                        f"run mkswap on it (the system still starts, without swap)")
    return f"{name.capitalize()}: swap re-created over {human_size(entry.size)} with the same UUID and label."
