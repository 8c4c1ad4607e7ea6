"""mountinfo parsing and the mount/disk joins on this machine's own, real state."""

from __future__ import annotations

import os

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


def handmade_sysfs(root):
    """A hand-made sysfs tree in the kernel's shape (the test machine's kernel has no
    device-mapper to record one from): sdz with partition sdz1, LVM volume dm-0 on top of sdz1."""
    def block(devpath, numbers, partition=None):
        d = root / devpath
        d.mkdir(parents=True)
        (d / "dev").write_text(numbers + "\n")
        (d / "holders").mkdir()
        (d / "slaves").mkdir()
        if partition:
            (d / "partition").write_text(partition + "\n")
        link = root / "class" / "block" / d.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(d)
        dev_link = root / "dev" / "block" / numbers
        dev_link.parent.mkdir(parents=True, exist_ok=True)
        dev_link.symlink_to(d)
        return d
    disk = block("devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sdz", "8:240")
    part = block(str((disk / "sdz1").relative_to(root)), "8:241", partition="1")
    dm = block("devices/virtual/block/dm-0", "254:0")
    (part / "holders" / "dm-0").symlink_to(dm)
    (dm / "slaves" / "sdz1").symlink_to(part)
    return root


def test_stacked_devices_through_a_handmade_sysfs(tmp_path):
    from recovery.probe.mounts import Mount, devices_of_disk, whole_disk_of
    root = handmade_sysfs(tmp_path)
    assert devices_of_disk("sdz", str(root)) == {(8, 240): "/dev/sdz", (8, 241): "/dev/sdz1", (254, 0): "/dev/dm-0"}
    lvm_root = Mount("/dev/mapper/vg-root", "/", "ext4", False, (254, 0))
    other = Mount("/dev/sda1", "/mnt", "ext4", False, (8, 1))
    assert mounts_on_disk("/dev/sdz", [lvm_root, other], str(root)) == [lvm_root]
    assert whole_disk_of((254, 0), str(root)) == "/dev/sdz"
    assert whole_disk_of((8, 241), str(root)) == "/dev/sdz"
    assert whole_disk_of((9, 9), str(root)) is None
