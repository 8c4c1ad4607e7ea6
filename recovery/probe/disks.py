"""The machine's disks, and one disk or image described: the edge where sysfs, udev, blkid and
the mount table are read into plain records; recovery.probe.classify turns records into DiskInfo.

Works without a udev daemon (this is a live system; udev may not have run yet): sysfs gives
sizes, serials and the bus, `blkid -p` gives filesystems and table types.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from dataclasses import replace

from recovery.errors import DiskError
from recovery.model.disk import DiskInfo, PartInfo
from recovery.probe import blockdev, classify
from recovery.probe.mounts import Mount, current_mounts, devices_of_disk, loops_backed_by
from recovery.probe.restore_mark import read_mark
from recovery.probe.table import read_layout
from recovery.host import tools

log = logging.getLogger("recovery.probe.disks")

SYS = "/sys"
BY_ID = "/dev/disk/by-id"
UDEV_CONTROL = "/run/udev/control"
_DISK_ATTRS = ("size", "removable", "ro", "queue/logical_block_size", "queue/physical_block_size",
               "serial", "device/model", "device/vendor", "device/serial", "loop/backing_file")
_PART_ATTRS = ("partition", "start", "size")
EXTENDED_TYPES = {"5", "f", "85"}


# ---- the edge: everything below reads the live system ----

def _read_attrs(sysdir: str, names) -> dict:
    out = {}
    for name in names:
        try:
            with open(os.path.join(sysdir, name), errors="replace") as f:
                out[name] = f.read().strip()
        except OSError:
            continue
    # SCSI/SATA: the unit serial number page (0x80) is a 4-byte header then ASCII.
    try:
        with open(os.path.join(sysdir, "device", "vpd_pg80"), "rb") as f:
            raw = f.read()
        serial = raw[4:].decode("ascii", errors="replace").strip(" \0")
        if serial:
            out["device/vpd_pg80"] = serial
    except OSError:
        pass
    return out


def _usb_attrs(sysdir: str) -> dict:
    """A disk behind USB: its USB device's serial string (the folder above it in sysfs that
    has idVendor), as usb/serial; {} for any other disk."""
    if "/usb" not in sysdir:
        return {}
    here = os.path.dirname(sysdir)
    while here.count("/") > 2:
        if os.path.exists(os.path.join(here, "idVendor")):
            try:
                with open(os.path.join(here, "serial"), errors="replace") as f:
                    serial = f.read().strip()
            except OSError:
                return {}
            return {"usb/serial": serial} if serial else {}
        here = os.path.dirname(here)
    return {}


def udev_running() -> bool:
    """A udev daemon is answering on its control socket. The socket file alone is not enough:
    a daemon told to exit (`udevadm control --exit`) leaves it behind."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.settimeout(1.0)
        sock.connect(UDEV_CONTROL)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def udev_properties(name: str, context=None) -> dict:
    """udev's properties for /dev/<name> as a plain dict ({} when pyudev cannot tell, or when
    no udev daemon runs: a database left behind by a stopped daemon describes old devices)."""
    if not udev_running():
        return {}
    try:
        import pyudev
        context = context or pyudev.Context()
        return dict(pyudev.Devices.from_name(context, "block", name).properties)
    except Exception as exc:  # noqa: BLE001 - pyudev raises several unrelated classes; udev is optional
        log.debug("no udev data for %s: %s", name, exc)
        return {}


def blkid_probe(device: str, offset: int | None = None, size: int | None = None) -> dict:
    """Low-level `blkid -p` of a device or a region of an image file: TYPE, LABEL, UUID, PTTYPE,
    PART_ENTRY_TYPE... ({} when nothing is found or the device cannot be opened)."""
    args = ["blkid", "-p", "-o", "export"]
    if offset is not None:
        args += ["-O", str(offset)]
    if size is not None:
        args += ["-S", str(size)]
    try:
        result = tools.run(args + [device], check=False)
    except OSError:
        return {}
    if result.returncode != 0:
        return {}
    # export format escapes spaces and other specials with a backslash ("EFI\\ system")
    return {key: re.sub(r"\\(.)", r"\1", value)
            for key, value in (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)}


def by_id_index(directory: str = BY_ID) -> dict[str, list[str]]:
    """/dev/name -> its /dev/disk/by-id links (only present when udev made them)."""
    index: dict[str, list[str]] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return index
    for name in names:
        link = os.path.join(directory, name)
        index.setdefault(os.path.realpath(link), []).append(link)
    return index


def _mount_targets(devices: dict[tuple[int, int], str], mounts: list[Mount]) -> list[str]:
    nodes = set(devices.values())
    return sorted({m.target for m in mounts if m.major_minor in devices or m.source in nodes})


def read_record(name: str, *, mounts: list[Mount] | None = None, links: dict | None = None,
                context=None, sys_root: str = SYS, probe: bool = True) -> dict:
    """Everything known about block device `name`, as plain JSON-able data (see classify)."""
    mounts = current_mounts() if mounts is None else mounts
    links = by_id_index() if links is None else links
    sysdir = os.path.realpath(os.path.join(sys_root, "class", "block", name))
    record = {
        "name": name,
        "devpath": sysdir[len(os.path.realpath(sys_root)):],
        "attrs": {**_read_attrs(sysdir, _DISK_ATTRS + ("partition",)), **_usb_attrs(sysdir)},
        "udev": udev_properties(name, context),
        "by_id": sorted(links.get(f"/dev/{name}", [])),
        "partitions": [],
    }
    if probe and not record["udev"].get("ID_PART_TABLE_TYPE") and classify.is_listed_disk(record):
        record["blkid"] = {k: v for k, v in blkid_probe(f"/dev/{name}").items() if k in ("PTTYPE", "PTUUID")}
    try:
        entries = sorted(os.listdir(sysdir))
    except OSError:
        entries = []                    # the device went away while we looked (a loop detached)
    for entry in entries:
        partdir = os.path.join(sysdir, entry)
        if not entry.startswith(name) or not os.path.exists(os.path.join(partdir, "partition")):
            continue
        part = {"name": entry, "attrs": _read_attrs(partdir, _PART_ATTRS), "udev": udev_properties(entry, context)}
        if probe and not (part["udev"].get("ID_FS_TYPE") or part["udev"].get("ID_PART_ENTRY_TYPE")):
            part["blkid"] = blkid_probe(f"/dev/{entry}")
        part["mountpoints"] = _mount_targets(devices_of_disk(entry, sys_root), mounts)
        record["partitions"].append(part)
    record["all_mountpoints"] = _mount_targets(devices_of_disk(name, sys_root), mounts)
    return record


def _block_names(context=None) -> list[str]:
    try:
        import pyudev
        context = context or pyudev.Context()
        return sorted(d.sys_name for d in context.list_devices(subsystem="block", DEVTYPE="disk"))
    except Exception as exc:  # noqa: BLE001 - fall back to sysfs when libudev is unusable
        log.debug("pyudev enumeration failed (%s); listing /sys/block", exc)
        return sorted(os.listdir(os.path.join(SYS, "block")))


def _without_extended(info: DiskInfo) -> DiskInfo:
    """The kernel shows an MBR extended container as a 1 KiB partition; a person never needs it.
    A disk a restore was interrupted on says so (its mark in sector 0)."""
    return _with_restore_mark(
        replace(info, partitions=tuple(p for p in info.partitions if p.type not in EXTENDED_TYPES)))


def _with_restore_mark(info: DiskInfo) -> DiskInfo:
    if info.table:
        return info
    mark = read_mark(info.path)
    if mark is None:
        return info
    return replace(info, incomplete_restore=mark.describe(), incomplete_snapshot=mark.snapshot)


def list_disks() -> list[DiskInfo]:
    """Every whole disk on this machine, in name order, with partitions, filesystems and mounts."""
    mounts, links = current_mounts(), by_id_index()
    try:
        import pyudev
        context = pyudev.Context()
    except Exception:  # noqa: BLE001 - udev is optional
        context = None
    disks = []
    for name in _block_names(context):
        light = read_record(name, mounts=mounts, links=links, context=context, probe=False)
        if not classify.is_listed_disk(light):
            continue
        record = read_record(name, mounts=mounts, links=links, context=context)
        if classify.is_listed_disk(record):   # still there after probing
            disks.append(_without_extended(classify.disk_info(record)))
    return disks


def describe(path: str) -> DiskInfo:
    """One whole-disk block device or disk-image file, with a plain DiskError for anything else."""
    kind = blockdev.require_whole_disk(path)
    if kind == "file":
        return _describe_image(os.path.abspath(path))
    name = os.path.basename(blockdev.sysfs_dir(path))
    record = read_record(name)
    reason = classify.not_a_disk_reason(record)
    if reason:
        raise DiskError(f"{path} is not a disk: {reason}")
    return _without_extended(classify.disk_info(record))


def _describe_image(path: str) -> DiskInfo:
    layout = read_layout(path)
    mounts = current_mounts()
    # Partitions of the image are mounted through a loop device (partition N there is N here).
    loops = loops_backed_by(path)
    parts = []
    for entry in layout.data_partitions():
        found = blkid_probe(path, offset=entry.start, size=entry.size)
        targets: set[str] = set()
        for loop in loops:
            node = f"{loop}p{entry.number}"
            if os.path.exists(node):
                numbers = os.stat(node).st_rdev
                targets |= set(_mount_targets({(os.major(numbers), os.minor(numbers)): node}, mounts))
        parts.append(PartInfo(number=entry.number, path=None, start=entry.start, size=entry.size,
                              type=entry.type, fs=found.get("TYPE"), label=found.get("LABEL"),
                              uuid=found.get("UUID"), mountpoints=tuple(sorted(targets))))
    all_targets = {m.target for m in mounts if m.source == path}
    for loop in loops:
        all_targets |= set(_mount_targets(devices_of_disk(os.path.basename(loop)), mounts))
    return _with_restore_mark(DiskInfo(
        path=path, size=layout.disk_size, logical_sector=layout.sector_size, physical_sector=layout.sector_size,
        transport="file", read_only=not os.access(path, os.W_OK), is_image=True,
        is_system=any(t in classify.SYSTEM_MOUNTS for t in all_targets),
        table=layout.table if layout.table != "none" else None, partitions=tuple(parts)))


def record_profile(name: str) -> dict:
    """A record of /dev/<name> for tests/data (what classify sees on this machine)."""
    return read_record(name)


if __name__ == "__main__":  # python -m recovery.probe.disks: print this machine's disks
    import json
    print(json.dumps([d.to_json() for d in list_disks()], indent=2))
