"""Read a disk's partition table into a Layout: GPT, MBR (with extended and logicals) or none.

Identities (disk GUID / MBR signature, partition GUIDs, types, names, attribute bits) come from
`sfdisk --json`, because pyparted on Debian 12 cannot see them; pyparted then re-reads the
geometry and the extended/logical structure independently, and the two must agree. A 4Kn GPT
inside a plain image file is read by our own parser (recovery.probe.gpt): neither sfdisk 2.38
nor libparted can be told that a file has 4096-byte sectors.
"""

from __future__ import annotations

import json
import logging
import os
import struct

import parted

from recovery.errors import DiskError
from recovery.fs import boot_sector_filesystem
from recovery.model.layout import Layout, PartitionEntry
from recovery.probe import blockdev, gpt
from recovery.host import tools
from recovery.host.tools import first_line

log = logging.getLogger("recovery.probe.table")

EXTENDED_TYPES = {"5", "f", "85"}   # MBR ids of an extended container (CHS, LBA, Linux)
NO_TABLE_HINT = "does not contain a recognized partition table"


def read_layout(path: str) -> Layout:
    """The partition layout of a whole-disk block device or a raw disk-image file."""
    kind = blockdev.require_whole_disk(path)
    disk_size = blockdev.size_of(path)
    sector_size = blockdev.logical_sector_size(path)
    if disk_size < 2 * sector_size:
        raise DiskError(f"{path} is too small to be a disk ({disk_size} bytes)")
    if kind == "file" and sector_size != 512:
        return _read_4kn_image(path, sector_size, disk_size)
    dump = _sfdisk_dump(path)
    if dump is None:
        _refuse_damaged_gpt(path, sector_size, disk_size)
        return Layout(table="none", sector_size=sector_size, disk_size=disk_size)
    if dump.get("label") == "dos" and whole_disk_filesystem(path, sector_size, disk_size):
        # FAT or NTFS written straight onto the disk (or a dd image of one partition): its
        # boot sector ends in 0x55AA like an MBR, and sfdisk reads it as one.
        return Layout(table="none", sector_size=sector_size, disk_size=disk_size)
    layout = layout_from_sfdisk(dump, disk_size)
    if layout.sector_size != sector_size:
        raise DiskError(f"sfdisk sees {layout.sector_size}-byte sectors on {path}, the kernel {sector_size}")
    _cross_check_with_parted(path, layout)
    return layout


def whole_disk_filesystem(path: str, sector_size: int, disk_size: int) -> str | None:
    """"vfat" or "ntfs" when sector 0 of `path` is that filesystem's boot sector rather than
    an MBR: the filesystem's own checks pass (recovery.fs) and the four MBR entries do not
    describe a partition table (a real MBR always does, even one whose boot code kept an old
    BPB, as GRUB's does)."""
    try:
        with open(path, "rb") as f:
            head = os.pread(f.fileno(), max(512, sector_size), 0)
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror}") from exc
    fs = boot_sector_filesystem(lambda off, n: head[off:off + n], disk_size)
    if fs is None or mbr_entries_valid(head, sector_size, disk_size):
        return None
    return fs


def mbr_entries_valid(sector: bytes, sector_size: int, disk_size: int) -> bool:
    """True when the four primary entries of an MBR sector are a plausible table: every boot
    flag 0 or 0x80, at least one partition, each with a type, inside the disk, none
    overlapping another (pure)."""
    spans = []
    for i in range(4):
        entry = sector[446 + 16 * i: 462 + 16 * i]
        boot, ptype = entry[0], entry[4]
        start, count = struct.unpack_from("<II", entry, 8)
        if boot not in (0, 0x80):
            return False
        if ptype == 0 and count == 0:
            continue
        if ptype == 0 or start == 0 or count == 0 or (start + count) * sector_size > disk_size:
            return False
        spans.append((start, start + count))
    spans.sort()
    return bool(spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def _sfdisk_dump(path: str) -> dict | None:
    """sfdisk's JSON for `path`, or None when there is no partition table at all."""
    try:
        result = tools.run(["sfdisk", "--json", path], check=False)
    except OSError as exc:
        raise DiskError(f"cannot run sfdisk on {path}: {exc.strerror}") from exc
    if result.returncode != 0:
        if NO_TABLE_HINT in result.stderr:
            return None
        raise DiskError(f"cannot read the partition table of {path}: {first_line(result.stderr)}")
    try:
        return json.loads(result.stdout)["partitiontable"]
    except (ValueError, KeyError) as exc:
        raise DiskError(f"sfdisk printed something unexpected for {path}") from exc


def layout_from_sfdisk(dump: dict, disk_size: int) -> Layout:
    """Turn one `sfdisk --json` partitiontable object into a Layout (pure; sectors -> bytes)."""
    label = dump.get("label")
    if label not in ("gpt", "dos"):
        raise DiskError(f"partition tables of type {label!r} are not supported (only GPT and MBR)")
    ss = int(dump.get("sectorsize", 512))
    device = dump.get("device", "")
    parts = []
    for item in dump.get("partitions", []):
        number = _number_from_node(device, item["node"])
        ptype = str(item["type"])
        if label == "gpt":
            ptype, kind = ptype.upper(), "primary"
        else:
            ptype = ptype.lower()
            if ptype == "ee":
                raise DiskError(f"the GPT partition table of {device} is damaged "
                                "(only its protective MBR is readable; is the image cut short?)")
            kind = "logical" if number > 4 else "extended" if ptype in EXTENDED_TYPES else "primary"
        parts.append(PartitionEntry(
            number=number,
            start=int(item["start"]) * ss,
            size=int(item["size"]) * ss,
            type=ptype,
            uuid=item["uuid"].upper() if item.get("uuid") else None,
            name=item.get("name") or None,
            attrs=item.get("attrs") or None,
            bootable=bool(item.get("bootable", False)),
            kind=kind,
        ))
    parts.sort(key=lambda p: p.number)
    disk_id = dump.get("id")
    if disk_id:
        disk_id = disk_id.upper() if label == "gpt" else "0x" + disk_id.lower().removeprefix("0x").zfill(8)
    return Layout(
        table=label, sector_size=ss, disk_size=disk_size, disk_id=disk_id,
        first_lba=dump.get("firstlba") if label == "gpt" else None,
        last_lba=dump.get("lastlba") if label == "gpt" else None,
        partitions=tuple(parts))


def _number_from_node(device: str, node: str) -> int:
    # libfdisk names partitions device + number, with a "p" between when the device ends in a
    # digit, and udev's way, device + "-part" + number, for a /dev/disk/by-* link.
    if device and node.startswith(device):
        tail = node[len(device):]
    else:
        tail = node[len(node.rstrip("0123456789")):]
    tail = tail.removeprefix("-part").removeprefix("p")
    if not tail.isdigit():
        raise DiskError(f"cannot tell the partition number of {node}")
    return int(tail)


def _read_gpt_here(path: str, sector_size: int, disk_size: int) -> Layout | None:
    """Our own GPT reader on `path` (DiskError naming the path when damaged or unreadable)."""
    try:
        with open(path, "rb") as f:
            return gpt.read_gpt(lambda off, n: os.pread(f.fileno(), n, off), sector_size, disk_size)
    except OSError as exc:
        raise DiskError(f"cannot read {path}: {exc.strerror}") from exc
    except DiskError as exc:
        raise DiskError(f"{path}: {exc.message}") from exc


def _read_4kn_image(path: str, sector_size: int, disk_size: int) -> Layout:
    layout = _read_gpt_here(path, sector_size, disk_size)
    if layout is None:
        raise DiskError(f"cannot read the 4096-byte-sector GPT of {path}")
    return layout


def _refuse_damaged_gpt(path: str, sector_size: int, disk_size: int) -> None:
    """sfdisk found no table: make sure that is not a GPT it could not read."""
    _read_gpt_here(path, sector_size, disk_size)


def _cross_check_with_parted(path: str, layout: Layout) -> None:
    """libparted must see the same partitions at the same places (independent second reader)."""
    try:
        device = parted.getDevice(path)
    except Exception as exc:  # noqa: BLE001 - _ped raises its own classes (IOException, ...)
        raise DiskError(f"libparted cannot open {path}: {_one_line(exc)}") from exc
    try:
        # libparted caches devices by path; a loop device re-attached with another sector
        # size would otherwise be read with the old geometry.
        if device.sectorSize != layout.sector_size or device.length * device.sectorSize != layout.disk_size:
            device.removeFromCache()
            device = parted.getDevice(path)
        disk = parted.newDisk(device)
        _compare_with_parted(path, layout, device, disk)
    except DiskError:
        raise
    except Exception as exc:  # noqa: BLE001 - _ped raises its own classes (DiskException, ...)
        raise DiskError(f"the partition table of {path} is damaged: {_one_line(exc)}") from exc
    finally:
        device.removeFromCache()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _compare_with_parted(path: str, layout: Layout, device, disk) -> None:
    kinds = {parted.PARTITION_NORMAL: "primary", parted.PARTITION_LOGICAL: "logical",
             parted.PARTITION_EXTENDED: "extended"}
    seen = sorted((p.number, p.geometry.start * device.sectorSize, p.geometry.length * device.sectorSize,
                   kinds.get(p.type, "other")) for p in disk.partitions)
    ours = sorted((p.number, p.start, p.size, p.kind) for p in layout.partitions)
    if disk.type != {"dos": "msdos"}.get(layout.table, layout.table) or seen != ours:
        log.warning("sfdisk and libparted disagree on %s: %s vs %s", path, ours, seen)
        raise DiskError(f"the partition table of {path} looks damaged: sfdisk and libparted disagree")
