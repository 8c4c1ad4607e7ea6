"""ext2/3/4 used-block map against real mke2fs images: covers everything dumpe2fs calls used,
stays close to the real used size despite garbage in free space, and a copy of only the mapped
blocks passes e2fsck and holds the identical tree."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from recovery.fs import FsInfo, ext, pread_reader, probe_partition
from tests import fsimages

MiB = fsimages.MiB


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fsimages.make_tree(tmp_path_factory.mktemp("tree") / "tree")


def probe_file(path) -> FsInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        return probe_partition(pread_reader(fd), os.path.getsize(path))
    finally:
        os.close(fd)


def dumpe2fs_used(path) -> tuple[int, list[tuple[int, int]]]:
    """(block size, used block runs) as e2fsprogs itself computes them (uninit groups included)."""
    text = subprocess.run(["dumpe2fs", str(path)], capture_output=True, text=True, check=True).stdout
    block_size = int(re.search(r"^Block size:\s+(\d+)", text, re.M).group(1))
    cluster = re.search(r"^Cluster size:\s+(\d+)", text, re.M)
    # With bigalloc dumpe2fs ends a free range at the first block of its last cluster.
    ratio = int(cluster.group(1)) // block_size if cluster else 1
    used = []
    for first, last, free_list in re.findall(
            r"^Group \d+: \(Blocks (\d+)-(\d+)\).*?^  Free blocks: ?(.*?)$", text, re.M | re.S):
        pos, last = int(first), int(last)
        for item in filter(None, (x.strip() for x in free_list.split(","))):
            a, _, b = item.partition("-")
            a, b = int(a), int(b or a) + ratio - 1
            if a > pos:
                used.append((pos, a - pos))
            pos = b + 1
        if pos <= last:
            used.append((pos, last + 1 - pos))
    assert used, "dumpe2fs output not understood"
    return block_size, used


def uncovered(ranges, needed) -> list[tuple[int, int]]:
    """Byte ranges of `needed` that `ranges` (sorted, merged) does not cover."""
    missing = []
    for start, length in needed:
        end, pos = start + length, start
        for a, n in ranges:
            if a + n <= pos:
                continue
            if a > pos:
                break
            pos = max(pos, a + n)
            if pos >= end:
                break
        if pos < end:
            missing.append((pos, end - pos))
    return missing


def assert_covers_dumpe2fs(path, info):
    block_size, used = dumpe2fs_used(path)
    needed = [(a * block_size, n * block_size) for a, n in used]
    assert uncovered(info.used, needed) == []
    return sum(n for _, n in needed)


def assert_copy_is_identical(tmp_path, image, info):
    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ext4", copy)
    assert fsimages.ext_tree(copy) == fsimages.ext_tree(image)


@pytest.mark.parametrize("fs,block_size,extra", [
    ("ext4", 4096, ()),
    ("ext4", 1024, ()),                                   # 1 KiB blocks: boot block outside the bitmap
    ("ext4", 4096, ("-O", "^64bit,^flex_bg")),            # 32-byte descriptors, metadata in each group
    ("ext4", 1024, ("-O", "meta_bg,^resize_inode")),      # descriptors spread into meta groups
    ("ext4", 4096, ("-O", "bigalloc", "-C", "16384")),    # bitmaps count 16 KiB clusters
    ("ext4", 1024, ("-O", "sparse_super2")),              # only two superblock backups, where it says
    ("ext4", 4096, ("-O", "^has_journal", "-I", "128")),
    ("ext3", 1024, ()),
    ("ext2", 2048, ()),
    ("ext2", 1024, ("-O", "^sparse_super,^resize_inode")),  # a superblock backup in every group
])
def test_map_covers_dumpe2fs_and_copy_is_identical(tmp_path, tree, fs, block_size, extra):
    image = fsimages.make_ext4(tmp_path / "fs.img", 96 * MiB, tree, block_size=block_size, fs=fs, extra=extra)
    info = probe_file(image)
    assert info.fs == fs and not info.whole and info.warnings == ()
    assert info.block_size == block_size
    used_by_tool = assert_covers_dumpe2fs(image, info)
    # Close to what the filesystem really uses; the garbage in free space stays out.
    assert info.used_bytes <= used_by_tool + 64 * 1024, (info.used_bytes, used_by_tool)
    assert info.used_bytes < 0.5 * 96 * MiB
    assert fsimages.free_space_garbage(image, info.used) > 0.9
    assert_copy_is_identical(tmp_path, image, info)


def test_identity_matches_blkid(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree, label="My Data é")
    info = probe_file(image)
    fields = {key: subprocess.run(["blkid", "-s", key, "-o", "value", str(image)],
                                  capture_output=True, text=True).stdout.strip() for key in ("UUID", "TYPE")}
    assert info.uuid == fields["UUID"] and info.fs == fields["TYPE"] == "ext4"
    assert info.label == "My Data é"
    fd = os.open(image, os.O_RDONLY)
    try:
        assert ext.identify(pread_reader(fd), 32 * MiB) == ("ext4", "My Data é", fields["UUID"])
    finally:
        os.close(fd)


def test_uninitialised_groups_cost_only_their_metadata(tmp_path, tree):
    # A 2 GiB filesystem with 10 MiB in it: most groups are BLOCK_UNINIT.
    image = fsimages.make_ext4(tmp_path / "big.img", 2048 * MiB, tree, garbage=False, block_size=1024)
    out = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    assert out.count("BLOCK_UNINIT") > 100
    info = probe_file(image)
    used_by_tool = assert_covers_dumpe2fs(image, info)
    assert info.used_bytes <= used_by_tool + 64 * 1024
    assert info.used_bytes < 200 * MiB


def test_filesystem_smaller_than_partition_keeps_the_tail(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 48 * MiB, tree)
    subprocess.run(["resize2fs", str(image), "40M"], capture_output=True, check=True)
    os.truncate(image, 48 * MiB)      # resize2fs shrinks an image file too; the partition stays
    info = probe_file(image)
    assert not info.whole
    last_start, last_length = info.used[-1]
    assert last_start <= 40 * MiB and last_start + last_length == 48 * MiB
    assert info.used_bytes < 30 * MiB
    assert info.warnings == ()


def test_far_smaller_filesystem_warns_about_the_copied_tail(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    os.truncate(image, 132 * MiB)
    info = probe_file(image)
    assert info.used[-1] == (32 * MiB, 100 * MiB)
    assert info.warnings == ("ext4 ends 100 MiB before its partition does; that space is copied as it is",)


def test_damaged_superblock_falls_back_to_whole(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    with open(image, "r+b") as f:
        f.seek(1024 + 0x18)            # s_log_block_size: an impossible block size
        f.write((40).to_bytes(4, "little"))
    info = probe_file(image)
    assert info.whole and info.used == ((0, 32 * MiB),)
    assert info.fs == "ext4"
    assert len(info.warnings) == 1 and "damaged" in info.warnings[0] and "whole" in info.warnings[0]


def test_descriptor_pointing_outside_falls_back_to_whole(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree, block_size=1024)
    with open(image, "r+b") as f:
        f.seek(2048)                  # first group descriptor's block bitmap
        f.write((0xFFFFFF).to_bytes(4, "little"))
    info = probe_file(image)
    assert info.whole and "damaged" in info.warnings[0]


def test_truncated_partition_falls_back_to_whole(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    os.truncate(image, 24 * MiB)
    info = probe_file(image)
    assert info.whole and "larger than its partition" in info.warnings[0]


def test_unclean_filesystem_warns(tmp_path, tree):
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    subprocess.run(["debugfs", "-w", "-R", "ssv state 0", str(image)], capture_output=True, check=True)
    info = probe_file(image)
    assert not info.whole
    assert any("not unmounted cleanly" in w for w in info.warnings)


def test_one_terabyte_with_every_bitmap_initialised_maps_in_seconds(tmp_path):
    # A sparse 1 TB image (about 130 MB on disk): without uninit_bg mke2fs writes all 8192
    # block bitmaps (32 MiB), and the map must read and convert every one of them.
    image = tmp_path / "tera.img"
    with open(image, "wb") as f:
        f.truncate(1 << 40)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "^metadata_csum,^uninit_bg",
                    "-N", "131072", "-J", "size=16", str(image)], capture_output=True, check=True)
    started = time.perf_counter()
    info = probe_file(image)
    elapsed = time.perf_counter() - started
    print(f"1 TB ext4, 8192 initialised bitmaps: mapped in {elapsed:.2f} s, {info.used_bytes >> 20} MiB used")
    assert not info.whole and elapsed < 5
    used_by_tool = assert_covers_dumpe2fs(image, info)
    assert info.used_bytes == used_by_tool
