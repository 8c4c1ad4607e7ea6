"""Used-block maps read from real partition block devices (loop devices with partition nodes),
512-byte and 4096-byte sectors: the same map as from the plain image file, and identify()
agrees with blkid on the device."""

from __future__ import annotations

import os
import subprocess

import pytest

from recovery.fs import identify, probe_partition
from tests import fsimages

MiB = fsimages.MiB

pytestmark = pytest.mark.loop


def map_of(path, offset: int = 0, size: int | None = None):
    fd = os.open(path, os.O_RDONLY)
    try:
        if size is None:
            size = os.lseek(fd, 0, os.SEEK_END)
        # An unclipped reader over the whole disk, as a caller might pass: probing must stay inside.
        read = lambda at, n: os.pread(fd, n, offset + at)  # noqa: E731
        return probe_partition(read, size), identify(read, size)
    finally:
        os.close(fd)


def blkid(device) -> dict[str, str]:
    out = {}
    for key in ("TYPE", "LABEL", "UUID"):
        out[key] = subprocess.run(["blkid", "-s", key, "-o", "value", device],
                                  capture_output=True, text=True).stdout.strip() or None
    return out


def build_disk(tmp_path, loops, sector: int, parts):
    """A GPT disk image holding the given filesystem images, attached as a loop device."""
    total = sum(size for _, size in parts) + 4 * MiB
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(total)
    dev = loops.attach(disk, sector_size=sector)
    args = ["sgdisk", "-Z"]
    for number, (_, size) in enumerate(parts, 1):
        args += [f"-n{number}:0:+{size // 1024}K"]
    subprocess.run([*args, dev], capture_output=True, check=True)
    subprocess.run(["partx", "-u", dev], capture_output=True)
    subprocess.run(["partx", "-a", dev], capture_output=True)
    for number, (image, _size) in enumerate(parts, 1):
        subprocess.run(["dd", f"if={image}", f"of={dev}p{number}", "bs=1M", "conv=fsync,notrunc", "status=none"],
                       check=True)
    return dev


def test_partitions_of_a_512_byte_sector_disk(tmp_path, loops):
    tree = fsimages.make_tree(tmp_path / "tree")
    parts = [
        (fsimages.make_vfat(tmp_path / "esp.img", 40 * MiB, tree, fat=32, label="ESP"), 40 * MiB),
        (fsimages.make_ext4(tmp_path / "root.img", 48 * MiB, tree, label="root"), 48 * MiB),
        (fsimages.make_ntfs(tmp_path / "data.img", 32 * MiB, tree, label="Data"), 32 * MiB),
        (fsimages.make_swap(tmp_path / "swap.img", 8 * MiB, label="swap"), 8 * MiB),
    ]
    dev = build_disk(tmp_path, loops, 512, parts)
    for number, (image, size) in enumerate(parts, 1):
        node = f"{dev}p{number}"
        info, found = map_of(node)
        from_file, _ = map_of(image)
        assert info == from_file and not info.whole
        tool = blkid(node)
        assert found == (tool["TYPE"], tool["LABEL"], tool["UUID"])
        assert (info.fs, info.label, info.uuid) == found


def test_partitions_of_a_4096_byte_sector_disk(tmp_path, loops):
    tree = fsimages.make_tree(tmp_path / "tree")
    ntfs = tmp_path / "data.img"
    fsimages.fill_garbage(ntfs, 32 * MiB)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", "-s", "4096", "-L", "Data4K", str(ntfs)], capture_output=True, check=True)
    parts = [
        (fsimages.make_ext4(tmp_path / "root.img", 48 * MiB, tree, label="root4k"), 48 * MiB),
        (ntfs, 32 * MiB),
    ]
    dev = build_disk(tmp_path, loops, 4096, parts)
    assert subprocess.run(["blockdev", "--getss", dev], capture_output=True, text=True).stdout.strip() == "4096"
    for number, (image, _size) in enumerate(parts, 1):
        info, found = map_of(f"{dev}p{number}")
        assert info == map_of(image)[0] and not info.whole
        tool = blkid(f"{dev}p{number}")
        assert found == (tool["TYPE"], tool["LABEL"], tool["UUID"])
    # The same maps read through the whole-disk device at each partition's offset.
    for number, (image, size) in enumerate(parts, 1):
        start = int(open(f"/sys/class/block/{os.path.basename(dev)}p{number}/start").read()) * 512
        info, _ = map_of(dev, offset=start, size=size)
        assert info == map_of(image)[0]
