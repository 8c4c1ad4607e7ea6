"""Disk classification on records recorded on the build VM (tests/data: virtio, loop, zram) and in
the live system under QEMU (NVMe, SATA, USB storage, virtio, device-mapper; with and without
udev). Hand-made records are named so, for cases no recording shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recovery.probe import classify

DATA = Path(__file__).resolve().parent.parent / "data"


def recorded(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def test_virtio_system_disk_of_the_build_vm():
    record = recorded("probe_virtio_vda.json")
    assert classify.is_listed_disk(record)
    info = classify.disk_info(record)
    assert info.path == "/dev/vda" and info.name == "vda"
    assert info.transport == "virtio" and info.serial == "overlayblk" and info.model is None
    assert info.size == 274877906944 and (info.logical_sector, info.physical_sector) == (512, 4096)
    assert info.is_system, "the root filesystem is mounted from it"
    assert info.table is None and info.partitions == ()
    assert not info.removable and not info.read_only and not info.is_image


def test_loop_disk_without_udev_uses_blkid():
    info = classify.disk_info(recorded("probe_loop_gpt_windows.json"))
    assert info.transport == "loop" and info.table == "gpt" and not info.is_system
    assert info.size == 64 * 1024 * 1024 and info.serial is None and info.by_id is None
    assert [(p.number, p.path, p.start, p.size) for p in info.partitions][:2] == [
        (1, "/dev/loop0p1", 1024 * 1024, 8 * 1024 * 1024), (2, "/dev/loop0p2", 9 * 1024 * 1024, 2 * 1024 * 1024)]
    esp = info.partitions[0]
    assert esp.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert (esp.fs, esp.label, esp.uuid) == ("vfat", "WINBOOT", "7F43-FB5F")
    assert info.partitions[1].fs is None
    assert [p.type for p in info.partitions][2:] == ["EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
                                                    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"]


def test_loop_disk_with_udev_properties():
    info = classify.disk_info(recorded("probe_loop_gpt_udev.json"))
    assert info.table == "gpt" and info.transport == "loop"
    assert info.partitions[0].type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    assert info.partitions[0].fs is None


def test_zram_is_not_a_disk():
    record = recorded("probe_zram0.json")
    assert not classify.is_listed_disk(record)
    assert classify.not_a_disk_reason(record) == "it is a RAM disk"


@pytest.mark.parametrize("record,reason", [
    ({"name": "sdb1", "attrs": {"size": "100", "partition": "1"}}, "it is a partition"),
    ({"name": "sdc", "attrs": {"size": "0"}}, "it holds no medium (size 0)"),
    ({"name": "sdc", "attrs": {"size": "100"}}, None),
])
def test_not_a_disk_reasons_handmade(record, reason):
    """Hand-made: cases no recording shows (the listing never reads a partition as a disk;
    an empty card reader)."""
    assert classify.not_a_disk_reason(record) == reason


# Recorded in the live system under QEMU (tests/vm/record_probe_data.py): an NVMe disk (ESP, root),
# a SATA disk with a device-mapper volume on it, a USB stick and a virtio disk, read once with
# the live system's udev daemon and once after it was stopped.
LIVE_UDEV = "probe_qemu_live_udev.json"
LIVE_NO_UDEV = "probe_qemu_live_no_udev.json"


def live_record(recording: str, name: str) -> dict:
    return next(r for r in recorded(recording)["records"] if r["name"] == name)


def test_the_recordings_are_what_they_say():
    assert recorded(LIVE_UDEV)["udev_running"] and not recorded(LIVE_NO_UDEV)["udev_running"]
    assert live_record(LIVE_UDEV, "sda")["udev"] and not live_record(LIVE_NO_UDEV, "sda")["udev"]


@pytest.mark.parametrize("recording", [LIVE_UDEV, LIVE_NO_UDEV])
def test_nvme_disk(recording):
    info = classify.disk_info(live_record(recording, "nvme0n1"))
    assert info.transport == "nvme" and info.serial == "REC-NVME-0001" and info.model == "QEMU NVMe Ctrl"
    assert info.by_id == "/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_REC-NVME-0001"
    assert info.size == 256 * 1024 * 1024 and info.table == "gpt" and not info.removable
    esp, root = info.partitions
    assert (esp.path, esp.type, esp.fs, esp.label) == ("/dev/nvme0n1p1", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "vfat", "ESP")
    assert (root.fs, root.label, root.mountpoints) == ("ext4", "nvme-root", ("/mnt/nvroot",))
    assert not info.is_system, "mounted at /mnt/nvroot, which is no system place"


@pytest.mark.parametrize("recording", [LIVE_UDEV, LIVE_NO_UDEV])
def test_sata_disk_with_a_device_mapper_volume_on_it(recording):
    info = classify.disk_info(live_record(recording, "sda"))
    assert info.transport == "sata" and info.serial == "REC-SATA-0002" and info.model == "QEMU HARDDISK"
    assert info.table == "dos" and [(p.number, p.type, p.fs, p.label) for p in info.partitions] == [
        (1, "7", "ntfs", "Windows"), (2, "83", "ext4", "sata-data")]
    # the volume stacked on sda2 is mounted: the disk counts as in use through it
    assert info.partitions[1].mountpoints == ("/mnt/lv",)


@pytest.mark.parametrize("recording", [LIVE_UDEV, LIVE_NO_UDEV])
def test_usb_stick(recording):
    info = classify.disk_info(live_record(recording, "sdb"))
    assert info.transport == "usb" and info.removable and not info.is_system
    assert info.serial == "REC-USB-0003", "without udev the serial comes from the USB device in sysfs"
    assert info.model == "QEMU QEMU HARDDISK"
    assert [(p.type, p.fs, p.label) for p in info.partitions] == [("c", "vfat", "BACKUPS")]


@pytest.mark.parametrize("recording", [LIVE_UDEV, LIVE_NO_UDEV])
def test_virtio_disk(recording):
    info = classify.disk_info(live_record(recording, "vda"))
    assert info.transport == "virtio" and info.serial == "REC-VIRTIO-0004" and info.table is None


@pytest.mark.parametrize("recording", [LIVE_UDEV, LIVE_NO_UDEV])
@pytest.mark.parametrize("name,reason", [
    ("dm-0", "it is a device-mapper volume (LVM, encryption); give the disk underneath"),
    ("sr0", "it is an optical, floppy, network or hardware-boot device"),
    ("loop3", "no image file is attached to this loop device"),
])
def test_recorded_devices_that_are_not_disks(recording, name, reason):
    assert classify.not_a_disk_reason(live_record(recording, name)) == reason


def test_scsi_bus_behind_usb_bridge_is_usb():
    """A UAS bridge makes udev say ID_BUS=scsi; the sysfs path still runs through usb."""
    record = dict(live_record(LIVE_UDEV, "sdb"), udev={"ID_BUS": "scsi"})
    assert classify.transport_of(record) == "usb"


SATA = live_record(LIVE_NO_UDEV, "sda")


@pytest.mark.parametrize("target", ["/run/lifeboat/medium", "/run/live/medium", "/lib/live/mount/medium", "/boot"])
def test_live_media_and_boot_mounts_are_system(target):
    assert classify.is_system(dict(SATA, all_mountpoints=[target]))
    assert not classify.is_system(dict(SATA, all_mountpoints=[target + "-not"]))
