"""Disk classification on records recorded on the build VM (tests/data: virtio, loop, zram) and on
hand-made records (HANDMADE_*, tests/data/*-handmade.json) for buses not recorded yet: NVMe, USB, SATA."""

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
    ({"name": "loop5", "attrs": {"size": "0"}}, "no image file is attached to this loop device"),
    ({"name": "dm-0", "attrs": {"size": "100"}}, "it is a device-mapper volume (LVM, encryption); give the disk underneath"),
    ({"name": "sdb1", "attrs": {"size": "100", "partition": "1"}}, "it is a partition"),
    ({"name": "sr0", "attrs": {"size": "100"}}, "it is an optical, floppy, network or hardware-boot device"),
    ({"name": "sdc", "attrs": {"size": "0"}}, "it holds no medium (size 0)"),
    ({"name": "sdc", "attrs": {"size": "100"}}, None),
])
def test_not_a_disk_reasons(record, reason):
    assert classify.not_a_disk_reason(record) == reason


# Hand-made, not recorded: records in the shape read_record produces, for buses this VM does not have.
HANDMADE_NVME = {"name": "nvme0n1", "devpath": "/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1",
        "attrs": {"size": "1000215216", "device/serial": "S4EWNX0R123456  ", "device/model": "Samsung SSD 970 EVO Plus 500GB",
                  "queue/logical_block_size": "512", "queue/physical_block_size": "512"},
        "by_id": ["/dev/disk/by-id/nvme-eui.0025385b91b2c3d4", "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EWNX0R123456"],
        "partitions": [{"name": "nvme0n1p1", "attrs": {"partition": "1", "start": "2048", "size": "1048576"},
                        "mountpoints": ["/boot/efi"], "udev": {"ID_PART_ENTRY_TYPE": "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                                                               "ID_FS_TYPE": "vfat"}}],
        "all_mountpoints": ["/boot/efi"]}
HANDMADE_USB = {"name": "sdb", "devpath": "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
       "attrs": {"size": "60063744", "removable": "1", "device/vendor": "SanDisk ", "device/model": "Ultra Fit       "},
       "udev": {"ID_BUS": "usb", "ID_SERIAL_SHORT": "4C530001230915117204", "ID_MODEL": "Ultra_Fit"},
       "partitions": [{"name": "sdb1", "attrs": {"partition": "1", "start": "2048", "size": "60061696"},
                       "blkid": {"PART_ENTRY_TYPE": "0x0c", "TYPE": "vfat", "LABEL": "BACKUPS"},
                       "mountpoints": ["/run/live/medium"]}],
       "all_mountpoints": ["/run/live/medium"]}
HANDMADE_SATA = {"name": "sda", "devpath": "/devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda",
        "attrs": {"size": "1953525168", "device/vendor": "ATA     ", "device/model": "WDC WD10EZEX-08W", "device/vpd_pg80": "WD-WCC6Y0123456"},
        "udev": {}, "partitions": [], "all_mountpoints": ["/mnt/old"]}


def test_nvme_system_disk():
    info = classify.disk_info(HANDMADE_NVME)
    assert info.transport == "nvme" and info.serial == "S4EWNX0R123456"
    assert info.model == "Samsung SSD 970 EVO Plus 500GB"
    assert info.by_id == "/dev/disk/by-id/nvme-Samsung_SSD_970_EVO_Plus_500GB_S4EWNX0R123456"
    assert info.is_system and info.partitions[0].mountpoints == ("/boot/efi",)


def test_usb_live_medium():
    info = classify.disk_info(HANDMADE_USB)
    assert info.transport == "usb" and info.removable and info.is_system
    assert info.serial == "4C530001230915117204" and info.model == "SanDisk Ultra Fit"
    assert info.partitions[0].type == "c" and info.partitions[0].label == "BACKUPS"


def test_sata_without_udev():
    info = classify.disk_info(HANDMADE_SATA)
    assert info.transport == "sata" and info.serial == "WD-WCC6Y0123456"
    assert info.model == "WDC WD10EZEX-08W" and not info.is_system


def test_scsi_bus_behind_usb_bridge_is_usb():
    record = dict(HANDMADE_USB, udev={"ID_BUS": "scsi"})
    assert classify.transport_of(record) == "usb"


@pytest.mark.parametrize("target", ["/run/lifeboat/medium", "/run/live/medium", "/lib/live/mount/medium", "/boot"])
def test_live_media_and_boot_mounts_are_system(target):
    assert classify.is_system(dict(HANDMADE_SATA, all_mountpoints=[target]))
    assert not classify.is_system(dict(HANDMADE_SATA, all_mountpoints=[target + "-not"]))
