"""Mounting filesystems: one set of rules for every caller.

Read-only means read-only all the way: ext3/4 are mounted with `noload` and XFS with
`norecovery`, so a journal is never replayed on a disk we only look at; NTFS goes through
ntfs-3g; exFAT falls back to the FUSE driver where the kernel has none, and FAT read-only to
fusefat where the kernel has no vfat (the live system's kernel has it); a filesystem whose
type is not known is tried with `noload` first and plain `ro` after.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from recovery.errors import DiskError
from recovery.host import tools


def fuse_ready() -> bool:
    """/dev/fuse is there, the module loaded first when it is not and root may load it: the
    live system's kernel has FUSE as a module, and nothing loads it before its first use
    (sshfs, the views for shrinking and browsing)."""
    if not os.path.exists("/dev/fuse") and os.geteuid() == 0 and shutil.which("modprobe"):
        tools.quiet(["modprobe", "fuse"])
    return os.path.exists("/dev/fuse")


def option_sets(fs: str | None, writable: bool) -> list[list[str]]:
    """The mount(8) option lists to try, in order."""
    mode = "rw" if writable else "ro"
    if fs == "ntfs":
        return [["-t", "ntfs-3g", "-o", mode]]
    if writable:
        return [["-t", fs, "-o", mode]] if fs else [["-o", mode]]
    if fs in ("ext3", "ext4"):
        return [["-o", "ro,noload"]]
    if fs == "xfs":
        return [["-o", "ro,norecovery"]]
    if fs is None:
        return [["-o", "ro,noload"], ["-o", "ro"]]
    return [["-o", "ro"]]


def mount(device: str, where: Path | str, fs: str | None = None, writable: bool = False,
          offset: int | None = None, size: int | None = None) -> None:
    """Mount `device` (or the byte range `offset`/`size` of it, through a loop) at `where`;
    DiskError with the tool's last words when it cannot."""
    Path(where).mkdir(parents=True, exist_ok=True)
    last = None
    for options in option_sets(fs, writable):
        if offset is not None:
            options = options[:-1] + [options[-1] + f",loop,offset={offset}" + (f",sizelimit={size}" if size else "")]
        proc = tools.run(["mount", *options, device, str(where)], check=False)
        if proc.returncode == 0:
            return
        last = proc
    if fs == "exfat" and shutil.which("mount.exfat-fuse"):   # this kernel may have no exFAT driver
        proc = tools.run(["mount.exfat-fuse", *([] if writable else ["-o", "ro"]), device, str(where)], check=False)
        if proc.returncode == 0:
            return
        last = proc
    if fs == "vfat" and not writable and offset is None and shutil.which("fusefat"):
        proc = tools.run(["fusefat", "-o", "ro", device, str(where)], check=False)   # read-only by default
        if proc.returncode == 0:
            return
        last = proc
    raise DiskError(f"cannot mount {device}{'' if writable else ' read-only'}: {tools.last_line(last.stderr)}")


def unmount(where: Path | str) -> bool:
    return tools.quiet(["umount", str(where)]) == 0


def temporary(device: str, fs: str | None = None, writable: bool = False, offset: int | None = None,
              size: int | None = None, prefix: str = "lifeboat-mnt-") -> Path:
    """Mount in a new temporary folder (removed again when mounting fails)."""
    where = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        mount(device, where, fs, writable, offset, size)
    except DiskError:
        remove_mountpoint(where)
        raise
    return where


def release(where: Path | str) -> None:
    """Unmount a temporary mount and remove its folder. A mount still in use (a scan of it
    finishing in another thread as the session ends) is detached lazily: it goes when its
    last user lets go, instead of staying mounted."""
    if not unmount(where):
        tools.quiet(["umount", "-l", str(where)])
    remove_mountpoint(where)


def remove_mountpoint(where: Path | str) -> None:
    try:
        os.rmdir(where)
    except OSError:
        pass
