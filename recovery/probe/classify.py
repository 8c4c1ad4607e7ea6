"""Turn a recorded block-device dict into a DiskInfo: pure functions, no I/O.

A *record* is what recovery.probe.disks gathers at the edge (sysfs attributes, udev properties,
/dev/disk/by-id links, blkid results, mount targets), as plain JSON-able data, so these rules can
be tested on machines recorded under tests/data. Every rule prefers udev's answer when a udev
daemon filled one in and falls back to what sysfs or blkid say without it.
"""

from __future__ import annotations

import re

from recovery.model.disk import DiskInfo, PartInfo

# Mount points that make a disk the running system's (or the live medium it booted from).
# /run/lifeboat/medium is where Lifeboat's own initramfs keeps its boot medium mounted.
SYSTEM_MOUNTS = ("/", "/boot", "/boot/efi", "/efi", "/usr", "/run/lifeboat/medium", "/run/live/medium",
                 "/lib/live/mount/medium", "/run/initramfs/live", "/cdrom")

# Names of block devices that are never disks a person images or restores to.
_NOT_DISKS = re.compile(r"^(ram\d+|zram\d+|dm-\d+|md\d+|sr\d+|fd\d+|nbd\d+|mtdblock\d+|"
                        r"mmcblk\d+boot\d+|mmcblk\d+rpmb)$")

_UDEV_BUS = {"ata": "sata", "usb": "usb", "nvme": "nvme", "scsi": "scsi", "virtio": "virtio",
             "mmc": "mmc", "ieee1394": "scsi"}

# Preferred /dev/disk/by-id prefixes, most telling first (wwn- and nvme-eui. say little to a person).
_BY_ID_ORDER = ("nvme-", "ata-", "usb-", "scsi-", "virtio-", "mmc-", "wwn-", "nvme-eui.")


def attr(record: dict, name: str) -> str | None:
    value = record.get("attrs", {}).get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _int_attr(record: dict, name: str, default: int = 0) -> int:
    value = attr(record, name)
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def not_a_disk_reason(record: dict) -> str | None:
    """Why this block device is not a whole disk a person could image or restore to (None if it is)."""
    name = record["name"]
    if record.get("udev", {}).get("DEVTYPE", "disk") != "disk" or attr(record, "partition"):
        return "it is a partition"
    if name.startswith(("ram", "zram")):
        return "it is a RAM disk"
    if name.startswith("dm-"):
        return "it is a device-mapper volume (LVM, encryption); give the disk underneath"
    if name.startswith("md"):
        return "it is a software RAID array; give one of its member disks"
    if name.startswith("loop") and not attr(record, "loop/backing_file"):
        return "no image file is attached to this loop device"
    if _NOT_DISKS.match(name):
        return "it is an optical, floppy, network or hardware-boot device"
    if _int_attr(record, "size") <= 0:
        return "it holds no medium (size 0)"
    return None


def is_listed_disk(record: dict) -> bool:
    """A whole disk a person could image or restore to: not a partition, not RAM/zram/optical,
    not device-mapper, not an unattached (empty) loop device."""
    return not_a_disk_reason(record) is None


def transport_of(record: dict) -> str | None:
    """'nvme', 'sata', 'usb', 'virtio', 'loop', 'scsi', 'mmc' — from udev ID_BUS, else the sysfs path."""
    devpath = record.get("devpath", "")
    bus = record.get("udev", {}).get("ID_BUS")
    # USB bridges often report their SCSI/ATA side in ID_BUS; the device path knows better.
    if "/usb" in devpath:
        return "usb"
    if bus in _UDEV_BUS:
        return _UDEV_BUS[bus]
    if record["name"].startswith("loop") or "/virtual/block/loop" in devpath:
        return "loop"
    for marker, transport in (("/nvme", "nvme"), ("/virtio", "virtio"), ("/ata", "sata"),
                              ("/mmc_host/", "mmc"), ("/host", "scsi")):
        if marker in devpath:
            return transport
    return None


def serial_of(record: dict) -> str | None:
    """udev's ID_SERIAL_SHORT, else what sysfs exposes (virtio: serial; nvme: device/serial;
    SCSI/SATA: the unit serial number VPD page 0x80, stored here already decoded; USB storage:
    the USB device's iSerial, which is what udev reports for it)."""
    udev = record.get("udev", {}).get("ID_SERIAL_SHORT")
    if udev:
        return udev
    for name in ("serial", "device/serial", "device/vpd_pg80", "usb/serial"):
        value = attr(record, name)
        if value:
            return value
    return None


def model_of(record: dict) -> str | None:
    model = attr(record, "device/model")
    if model:
        vendor = attr(record, "device/vendor")
        # SCSI/SATA report a short vendor ("ATA" for every SATA disk); NVMe and virtio a PCI id.
        if vendor and not vendor.startswith("0x") and vendor not in ("ATA",):
            return f"{vendor} {model}"
        return model
    udev = record.get("udev", {}).get("ID_MODEL")
    return udev.replace("_", " ").strip() if udev else None


def by_id_of(record: dict) -> str | None:
    links = sorted(record.get("by_id", []))
    for prefix in _BY_ID_ORDER:
        for link in links:
            if link.rsplit("/", 1)[-1].startswith(prefix):
                return link
    return links[0] if links else None


def _normal_type(ptype: str | None) -> str:
    """Partition types as the layout writes them: GPT GUIDs upper case, MBR ids bare lower hex."""
    if not ptype:
        return ""
    if "-" in ptype:
        return ptype.upper()
    return ptype.lower().removeprefix("0x").lstrip("0") or "0"


def partition_info(part: dict) -> PartInfo:
    """One partition record (sysfs start/size are in 512-byte units whatever the sector size)."""
    udev, blkid = part.get("udev", {}), part.get("blkid", {})

    def pick(udev_key: str, blkid_key: str) -> str | None:
        return udev.get(udev_key) or blkid.get(blkid_key) or None

    return PartInfo(
        number=_int_attr(part, "partition"),
        path=f"/dev/{part['name']}",
        start=_int_attr(part, "start") * 512,
        size=_int_attr(part, "size") * 512,
        type=_normal_type(pick("ID_PART_ENTRY_TYPE", "PART_ENTRY_TYPE")),
        fs=pick("ID_FS_TYPE", "TYPE"),
        label=pick("ID_FS_LABEL", "LABEL"),
        uuid=pick("ID_FS_UUID", "UUID"),
        mountpoints=tuple(part.get("mountpoints", [])),
    )


def table_of(record: dict) -> str | None:
    table = record.get("udev", {}).get("ID_PART_TABLE_TYPE") or record.get("blkid", {}).get("PTTYPE")
    return table if table in ("gpt", "dos") else None


def is_system(record: dict) -> bool:
    """The running system or the live medium is on this disk (anything mounted at a system path
    from the disk, its partitions, or what is stacked on them)."""
    return any(target in SYSTEM_MOUNTS for target in record.get("all_mountpoints", []))


def disk_info(record: dict) -> DiskInfo:
    parts = sorted((partition_info(p) for p in record.get("partitions", [])), key=lambda p: p.number)
    return DiskInfo(
        path=f"/dev/{record['name']}",
        size=_int_attr(record, "size") * 512,
        logical_sector=_int_attr(record, "queue/logical_block_size", 512),
        physical_sector=_int_attr(record, "queue/physical_block_size", 512),
        by_id=by_id_of(record),
        model=model_of(record),
        serial=serial_of(record),
        transport=transport_of(record),
        removable=_int_attr(record, "removable") == 1,
        read_only=_int_attr(record, "ro") == 1,
        is_system=is_system(record),
        table=table_of(record),
        partitions=tuple(parts),
    )
