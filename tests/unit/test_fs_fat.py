"""FAT12/16/32 used-block map against real mkfs.vfat images filled with mtools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from recovery.fs import FsInfo, fat, pread_reader, probe_partition
from tests import fsimages

MiB = fsimages.MiB


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fsimages.make_tree(tmp_path_factory.mktemp("tree") / "tree")


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory, tree):
    small = tmp_path_factory.mktemp("small") / "tree"
    shutil.copytree(tree / "small", small / "small")
    shutil.copytree(tree / "one", small / "one")
    shutil.copy(tree / "readme.txt", small)
    return small


def probe_file(path) -> FsInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        return probe_partition(pread_reader(fd), os.path.getsize(path))
    finally:
        os.close(fd)


def fsck_used_clusters(image) -> int:
    out = subprocess.run(["fsck.vfat", "-n", str(image)], capture_output=True, text=True).stdout
    return int(re.search(r"files, (\d+)/\d+ clusters", out).group(1))


def geometry(image) -> tuple[int, int, int]:
    """(data area offset, its end, cluster bytes) from the boot sector."""
    with open(image, "rb") as f:
        bpb = fat._Bpb(f.read(512))
    start = bpb.data_start * bpb.bytes_per_sector
    return start, start + bpb.cluster_count * bpb.cluster_bytes, bpb.cluster_bytes


@pytest.mark.parametrize("bits,size_mib,cluster_sectors,sector,use_small", [
    (32, 64, None, 512, False),
    (32, 300, 8, 512, False),     # 4 KiB clusters
    (16, 32, None, 512, False),
    (16, 64, 16, 512, False),     # 8 KiB clusters
    (16, 64, 1, 4096, False),     # 4Kn sectors
    (12, 8, None, 512, True),
])
def test_map_matches_the_fat_and_copy_is_identical(tmp_path, tree, small_tree, bits, size_mib, cluster_sectors,
                                                   sector, use_small):
    content = small_tree if use_small else tree
    image = fsimages.make_vfat(tmp_path / "fs.img", size_mib * MiB, content, fat=bits,
                               cluster_sectors=cluster_sectors, sector_size=sector)
    info = probe_file(image)
    assert info.fs == "vfat" and not info.whole and info.warnings == ()
    assert info.block_size == sector
    data_offset, data_end, cluster = geometry(image)
    # Everything before the data area, then exactly the clusters fsck.vfat counts as used.
    assert info.used[0][0] == 0 and info.used[0][1] >= data_offset
    data_mapped = sum(min(a + n, size_mib * MiB) - max(a, data_offset)
                      for a, n in info.used if a + n > data_offset)
    tail = size_mib * MiB - data_end   # sectors past the last cluster are kept as they are
    assert data_mapped - tail == fsck_used_clusters(image) * cluster
    assert info.used_bytes < 0.6 * size_mib * MiB
    assert fsimages.free_space_garbage(image, info.used) > 0.9

    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("vfat", copy)
    original = fsimages.vfat_tree(image)
    assert fsimages.vfat_tree(copy) == original
    # FAT keeps no symlinks or hard links: mcopy stored what they point at.
    assert original == fsimages.tree_hashes(content, follow_symlinks=True)


def test_label_and_serial_match_blkid(tmp_path, small_tree):
    image = fsimages.make_vfat(tmp_path / "fs.img", 40 * MiB, small_tree, fat=16, label="MY STICK")
    info = probe_file(image)
    fields = {key: subprocess.run(["blkid", "-s", key, "-o", "value", str(image)],
                                  capture_output=True, text=True).stdout.strip() for key in ("LABEL", "UUID")}
    assert (info.label, info.uuid) == (fields["LABEL"], fields["UUID"])
    assert info.label == "MY STICK" and re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", info.uuid)
    fd = os.open(image, os.O_RDONLY)
    try:
        assert fat.identify(pread_reader(fd), 40 * MiB) == ("vfat", "MY STICK", info.uuid)
    finally:
        os.close(fd)


def test_second_fat_copy_can_only_grow_the_map(tmp_path, small_tree):
    image = fsimages.make_vfat(tmp_path / "fs.img", 64 * MiB, small_tree, fat=32)
    before = probe_file(image)
    with open(image, "rb") as f:
        bpb = fat._Bpb(f.read(512))
    # Mark the last cluster allocated in FAT copy 2 only.
    last = bpb.cluster_count + 1
    with open(image, "r+b") as f:
        f.seek((bpb.reserved + bpb.fat_size) * bpb.bytes_per_sector + last * 4)
        f.write((0x0FFFFFFF).to_bytes(4, "little"))
    after = probe_file(image)
    last_offset = bpb.data_start * bpb.bytes_per_sector + (last - 2) * bpb.cluster_bytes
    assert after.used_bytes == before.used_bytes + bpb.cluster_bytes
    assert any(a <= last_offset < a + n for a, n in after.used)


def test_damaged_boot_sector_falls_back_to_whole(tmp_path, small_tree):
    image = fsimages.make_vfat(tmp_path / "fs.img", 32 * MiB, small_tree, fat=16)
    with open(image, "r+b") as f:
        f.seek(0x16)                  # sectors per FAT: far too small for the clusters
        f.write((1).to_bytes(2, "little"))
    info = probe_file(image)
    assert info.whole and info.used == ((0, 32 * MiB),)
    assert info.fs == "vfat" and "damaged" in info.warnings[0] and "whole" in info.warnings[0]


def test_truncated_partition_falls_back_to_whole(tmp_path, small_tree):
    image = fsimages.make_vfat(tmp_path / "fs.img", 64 * MiB, small_tree, fat=32)
    os.truncate(image, 48 * MiB)
    info = probe_file(image)
    assert info.whole and "larger than its partition" in info.warnings[0]
