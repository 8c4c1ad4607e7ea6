"""Mounts found through loop devices and partitions of a disk this test made and mounted."""

from __future__ import annotations

import subprocess

import pytest

from recovery.probe.mounts import disk_of_path, loops_backed_by, mounts_on_disk
from tests.diskimages import LINUX_FS, MiB, PartSpec, make_disk

pytestmark = pytest.mark.loop


@pytest.fixture
def mounted(tmp_path, loops):
    """An image with two ext4 partitions, attached to a loop device, partition 2 mounted read-only."""
    fs = tmp_path / "fs.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs), "8M"], check=True, capture_output=True)
    img = tmp_path / "disk.img"
    make_disk(img, 32 * MiB, "gpt", [PartSpec(8 * MiB, LINUX_FS, content=str(fs)),
                                     PartSpec(8 * MiB, LINUX_FS, content=str(fs))])
    dev = loops.attach(img)
    target = tmp_path / "mnt dir"
    target.mkdir()
    subprocess.run(["mount", "-o", "ro", f"{dev}p2", str(target)], check=True, capture_output=True)
    try:
        yield img, dev, target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def test_mount_of_a_partition_is_found_via_disk_and_image(mounted):
    img, dev, target = mounted
    on_dev = mounts_on_disk(dev)
    assert [(m.source, m.target, m.fstype, m.read_only) for m in on_dev] == [(f"{dev}p2", str(target), "ext4", True)]
    assert mounts_on_disk(str(img)) == on_dev
    assert loops_backed_by(str(img)) == [dev]
    assert mounts_on_disk(f"{dev}p1") == [], "a partition's own node sees only its own mounts"


def test_disk_of_a_file_on_the_mounted_partition(mounted):
    _img, dev, target = mounted
    assert disk_of_path(str(target / "lost+found")) == dev
    assert disk_of_path(str(target)) == dev


def test_unmounted_disk_has_no_mounts(tmp_path, loops):
    img = tmp_path / "plain.img"
    make_disk(img, 16 * MiB, "gpt", [PartSpec(4 * MiB, LINUX_FS)])
    dev = loops.attach(img)
    assert mounts_on_disk(dev) == [] and mounts_on_disk(str(img)) == []


def test_fuse_mount_of_an_image_file_is_found(tmp_path):
    """ntfs-3g mounts a filesystem image directly (no loop): the mount's source is the file."""
    img = tmp_path / "ntfs.img"
    img.write_bytes(b"")
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    subprocess.run(["mkntfs", "-q", "-F", "-f", str(img)], check=True, capture_output=True)
    target = tmp_path / "ntfs"
    target.mkdir()
    subprocess.run(["ntfs-3g", str(img), str(target)], check=True, capture_output=True)
    try:
        hits = mounts_on_disk(str(img))
        assert [m.target for m in hits] == [str(target)]
        # files inside live on whatever disk holds the image file itself
        assert disk_of_path(str(target)) == disk_of_path(str(img))
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)
