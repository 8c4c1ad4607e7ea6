"""Virtual disks as sources: VHD (fixed and dynamic), VHDX, qcow2, VMDK (monolithic sparse and
flat), read through QEMU (recovery.host.qemu), never by a parser of our own.

QEMU exports the virtual disk as a read-only raw file over FUSE; from there it is a raw disk
image (recovery.sources.raw): table, boot areas, used-block maps. Opening runs the format's
own consistency check (qemu-img check, where the format has one: not VHD); prove() reads every
used byte through QEMU, which fails on a missing or unreadable cluster.
"""

from __future__ import annotations

import os

from recovery.errors import DamageError
from recovery.host import qemu
from recovery.sources.raw import RawDiskSource

# qemu's format name -> what a person calls it
FORMATS = {"vpc": "VHD", "vhdx": "VHDX", "qcow2": "qcow2", "vmdk": "VMDK"}
SUFFIXES = {".vhd": "vpc", ".vhdx": "vhdx", ".qcow2": "qcow2", ".qcow": "qcow2", ".vmdk": "vmdk"}
VHD_COOKIE = b"conectix"     # a fixed VHD is raw bytes with this 512-byte footer; qemu reads it as vpc


class VirtualDiskSource(RawDiskSource):
    def __init__(self, path: str, fmt: str, *, kind: str | None = None, created: str | None = None):
        info = qemu.image_info(path, fmt)
        self.format = fmt
        # The format's own consistency check reads its metadata only: a cut or corrupt image
        # is named here, before its table is even looked at.
        problems = qemu.image_check(path, fmt)
        if problems:
            raise DamageError(f"{path} is damaged: it fails its {FORMATS[fmt]} check ({problems})")
        self.export = qemu.RawExport(path, fmt, int(info["virtual-size"]))
        try:
            super().__init__(self.export.path, kind=kind or f"{FORMATS[fmt]} image", shown=path, created=created)
        except BaseException:
            self.export.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.export.close()


def detect(path: str) -> str | None:
    """qemu's format name for a virtual disk file, by its name or its first/last bytes; None
    for anything else (a raw image is left to recovery.sources.raw)."""
    if not os.path.isfile(path):
        return None
    fmt = SUFFIXES.get(os.path.splitext(path)[1].lower())
    with open(path, "rb") as f:
        head = f.read(8)
        f.seek(max(os.fstat(f.fileno()).st_size - 512, 0))
        tail = f.read(8)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head == b"vhdxfile":
        return "vhdx"
    if head == VHD_COOKIE or tail == VHD_COOKIE:
        return "vpc"
    if head[:4] == b"KDMV" or (fmt == "vmdk" and head.startswith(b"#")):
        return "vmdk"
    return fmt


def open_virtual(path: str) -> VirtualDiskSource | None:
    fmt = detect(path)
    if fmt is None:
        return None
    return VirtualDiskSource(path, fmt)
