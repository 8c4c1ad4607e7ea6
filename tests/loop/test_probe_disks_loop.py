"""describe() and list_disks() on this machine: images, loop devices this test made, the system disk."""

from __future__ import annotations

import os
import subprocess

import pytest

from recovery.errors import DiskError
from recovery.probe.disks import describe, list_disks
from tests.diskimages import ESP, LINUX_FS, MiB, PartSpec, make_disk, mbr_logical_parts


@pytest.fixture
def fs_images(tmp_path):
    fat, ext = tmp_path / "fat.img", tmp_path / "ext.img"
    fat.write_bytes(b"")
    os.truncate(fat, 8 * MiB)
    subprocess.run(["mkfs.vfat", "-n", "ESPLABEL", str(fat)], check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", str(ext), "16M"], check=True, capture_output=True)
    return fat, ext


def make_sample(path, fs_images, sector_size=512):
    fat, ext = fs_images
    return make_disk(path, 64 * MiB, "gpt", [PartSpec(8 * MiB, ESP, name="EFI", content=str(fat)),
                                             PartSpec(16 * MiB, LINUX_FS, name="root", content=str(ext))],
                     sector_size=sector_size)


def test_describe_image(tmp_path, fs_images):
    img = tmp_path / "laptop.img"
    make_sample(img, fs_images)
    info = describe(str(img))
    assert info.is_image and info.transport == "file" and info.model is None
    assert info.name == "laptop.img" and info.path == str(img) and info.size == 64 * MiB
    assert info.table == "gpt" and not info.is_system
    assert [(p.number, p.path, p.start, p.fs, p.label) for p in info.partitions] == [
        (1, None, 1 * MiB, "vfat", "ESPLABEL"), (2, None, 9 * MiB, "ext4", "rootfs")]
    assert info.partitions[1].type == LINUX_FS


def test_describe_4kn_image_and_blank_image(tmp_path, fs_images):
    img = tmp_path / "4kn.img"
    make_sample(img, fs_images, sector_size=4096)
    info = describe(str(img))
    assert info.logical_sector == 4096 and info.partitions[1].fs == "ext4"
    blank = tmp_path / "blank.img"
    make_disk(blank, 8 * MiB, "none", [])
    assert describe(str(blank)).table is None and describe(str(blank)).partitions == ()


def test_describe_mbr_image_hides_the_extended_container(tmp_path):
    img = tmp_path / "mbr.img"
    make_disk(img, 64 * MiB, "dos", mbr_logical_parts())
    assert [p.number for p in describe(str(img)).partitions] == [1, 2, 5, 6, 7]


def test_wrong_paths(tmp_path):
    with pytest.raises(DiskError, match=r"/nothing/here does not exist$"):
        describe("/nothing/here")
    with pytest.raises(DiskError, match="is a directory"):
        describe(str(tmp_path))
    with pytest.raises(DiskError, match="neither a block device nor a disk-image file"):
        describe("/dev/null")


@pytest.mark.loop
def test_describe_loop_device_and_its_mounts(tmp_path, loops, fs_images):
    img = tmp_path / "disk.img"
    make_sample(img, fs_images)
    dev = loops.attach(img)
    info = describe(dev)
    assert info.transport == "loop" and not info.is_image and info.table == "gpt"
    assert info.size == 64 * MiB and info.logical_sector == 512
    assert [(p.number, p.path, p.start, p.size, p.fs, p.label) for p in info.partitions] == [
        (1, f"{dev}p1", 1 * MiB, 8 * MiB, "vfat", "ESPLABEL"), (2, f"{dev}p2", 9 * MiB, 16 * MiB, "ext4", "rootfs")]
    assert info.partitions[0].type == ESP
    target = tmp_path / "mnt"
    target.mkdir()
    subprocess.run(["mount", "-o", "ro", f"{dev}p2", str(target)], check=True, capture_output=True)
    try:
        assert describe(dev).partitions[1].mountpoints == (str(target),)
        assert describe(str(img)).partitions[1].mountpoints == (str(target),)
        assert describe(dev).partitions[0].mountpoints == ()
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


@pytest.mark.loop
def test_describe_partition_is_refused_with_the_disk_named(tmp_path, loops, fs_images):
    img = tmp_path / "disk.img"
    make_sample(img, fs_images)
    dev = loops.attach(img)
    with pytest.raises(DiskError) as err:
        describe(f"{dev}p1")
    assert str(err.value) == f"{dev}p1 is a partition; give the whole disk {dev}"


@pytest.mark.loop
def test_describe_4kn_loop(tmp_path, loops, fs_images):
    img = tmp_path / "4kn.img"
    make_sample(img, fs_images, sector_size=4096)
    dev = loops.attach(img, sector_size=4096)
    info = describe(dev)
    assert info.logical_sector == 4096 and info.table == "gpt"
    assert [(p.start, p.size) for p in info.partitions] == [(1 * MiB, 8 * MiB), (9 * MiB, 16 * MiB)]


@pytest.mark.loop
def test_list_disks_on_this_machine(tmp_path, loops, fs_images):
    img = tmp_path / "disk.img"
    make_sample(img, fs_images)
    dev = loops.attach(img)
    disks = {d.path: d for d in list_disks()}
    assert dev in disks and not disks[dev].is_system and disks[dev].transport == "loop"
    assert [p.fs for p in disks[dev].partitions] == ["vfat", "ext4"]
    assert not any(name.startswith(("/dev/zram", "/dev/ram", "/dev/dm-")) for name in disks)
    for path, disk in disks.items():
        assert disk.size > 0 and not disk.is_image
        if path.startswith("/dev/loop"):
            with open(f"/sys/block/{path[5:]}/loop/backing_file") as f:
                assert f.read().strip(), "unattached loop devices are not disks"
    root_disks = [d for d in disks.values() if d.is_system]
    assert root_disks, "the disk holding / must be marked"
    if os.path.exists("/sys/block/vda"):
        assert disks["/dev/vda"].is_system and disks["/dev/vda"].transport == "virtio"
