"""mountinfo parsing and the mount/disk joins on this machine's own, real state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recovery.probe.mounts import current_mounts, disk_of_path, mounts_on_disk, parse_mountinfo

RECORDED = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
61 27 8:17 / /media/usb\040stick ro,nosuid shared:5 - vfat /dev/sdb1 rw,fmask=0022
62 27 8:18 / /mnt/data rw,relatime shared:7 master:1 - ext4 /dev/sdb2 ro,errors=remount-ro
63 27 0:45 / /mnt/win rw,relatime - fuseblk /dev/sdc3 rw,user_id=0,allow_other
"""


def test_parse_recorded_mountinfo():
    mounts = parse_mountinfo(RECORDED)
    assert [m.target for m in mounts] == ["/proc", "/", "/media/usb stick", "/mnt/data", "/mnt/win"]
    usb = mounts[2]
    assert (usb.source, usb.fstype, usb.read_only, usb.major_minor) == ("/dev/sdb1", "vfat", True, (8, 17))
    assert mounts[3].read_only, "read-only in the superblock options counts too"
    assert not mounts[1].read_only and mounts[1].major_minor == (254, 0)
    assert mounts[4].fstype == "fuseblk" and mounts[4].major_minor == (0, 45)


def test_live_mountinfo_has_the_root():
    roots = [m for m in current_mounts() if m.target == "/"]
    assert roots and roots[-1].fstype


def test_disk_of_path_for_pseudo_filesystems_is_unknown(tmp_path):
    assert disk_of_path("/proc/self") is None
    assert disk_of_path(str(tmp_path / "missing")) is None


def test_root_filesystem_disk_is_found_and_holds_the_root_mount():
    disk = disk_of_path("/")
    if disk is None:
        pytest.skip("the root filesystem is not on a block device here (container, overlay)")
    assert os.path.exists(disk)
    assert "/" in [m.target for m in mounts_on_disk(disk)]


def test_image_file_with_no_loop_has_no_mounts(tmp_path):
    img = tmp_path / "x.img"
    img.write_bytes(bytes(4096))
    assert mounts_on_disk(str(img)) == []


def test_stacked_devices_through_a_recorded_sysfs(tmp_path):
    """The sysfs shape and mount table the live system showed under QEMU: a device-mapper
    volume (dm-0, /dev/mapper/vg0-data, as LVM makes one) over sda2, mounted at /mnt/lv."""
    from recovery.probe.mounts import devices_of_disk, whole_disk_of
    from recovery.probe.record import build_sysfs
    recording = json.loads((Path(__file__).resolve().parent.parent / "data" / "probe_qemu_live_udev.json").read_text())
    root = build_sysfs(recording["sysfs"], tmp_path / "sys")
    mounts = parse_mountinfo(recording["mountinfo"])
    assert devices_of_disk("sda", str(root)) == {(8, 0): "/dev/sda", (8, 1): "/dev/sda1", (8, 2): "/dev/sda2",
                                                 (253, 0): "/dev/dm-0"}
    lv = next(m for m in mounts if m.target == "/mnt/lv")
    assert lv.source == "/dev/mapper/vg0-data" and lv.major_minor == (253, 0)
    assert mounts_on_disk("/dev/sda", mounts, str(root)) == [lv]
    nvme_root = next(m for m in mounts if m.target == "/mnt/nvroot")
    assert mounts_on_disk("/dev/nvme0n1", mounts, str(root)) == [nvme_root]
    assert whole_disk_of((253, 0), str(root)) == "/dev/sda"
    assert whole_disk_of((8, 2), str(root)) == "/dev/sda"
    assert whole_disk_of((259, 2), str(root)) == "/dev/nvme0n1"
    assert whole_disk_of((9, 9), str(root)) is None
