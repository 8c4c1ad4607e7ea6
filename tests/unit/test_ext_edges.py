"""ext2/3/4 at its edges (recovery/fs/ext.py), on real mke2fs images read in memory: every
superblock sanity bound (the last value accepted and the first refused, with its message),
how the kind is told from feature flags, journal devices, and the superblock's state bits."""

from __future__ import annotations

import struct
import subprocess

import pytest

from recovery.fs import FsMapError, ext, probe_partition
from tests import fsimages

MiB = fsimages.MiB
SB = 1024


def mkfs(tmp_path, name: str, size: int, *options: str, fs: str = "ext4") -> bytes:
    image = tmp_path / name
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([f"mkfs.{fs}", "-q", "-F", "-E", "nodiscard", *options, str(image)], capture_output=True, check=True)
    return image.read_bytes()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext")
    return {
        "ext4": mkfs(tmp, "ext4.img", 32 * MiB, "-b", "4096"),
        "ext4-1k": mkfs(tmp, "ext4-1k.img", 32 * MiB, "-b", "1024"),
        "bigalloc": mkfs(tmp, "bigalloc.img", 64 * MiB, "-b", "4096", "-O", "bigalloc", "-C", "16384"),
        "ext2": mkfs(tmp, "ext2.img", 16 * MiB, "-b", "1024", fs="ext2"),
    }


def sb_of(image: bytes) -> bytes:
    return image[SB: SB + 1024]


def patched(image: bytes, *fields: tuple[int, str, int]) -> bytes:
    """The superblock of `image` with each (offset, struct format, value) written in."""
    sb = bytearray(sb_of(image))
    for offset, fmt, value in fields:
        struct.pack_into("<" + fmt, sb, offset, value)
    return bytes(sb)


def geometry_error(sb: bytes, size: int) -> str | None:
    try:
        ext._Geometry(sb, size)
    except FsMapError as exc:
        return str(exc)
    return None


def test_the_images_are_what_the_bounds_below_assume(images):
    geo = ext._Geometry(sb_of(images["ext4"]), 32 * MiB)
    assert (geo.block_size, geo.is_64bit, geo.desc_size, geo.inode_size) == (4096, True, 64, 256)
    assert geo.blocks_per_group == geo.clusters_per_group == 32768 and geo.cluster_ratio == 1
    big = ext._Geometry(sb_of(images["bigalloc"]), 64 * MiB)
    assert (big.block_size, big.cluster_ratio, big.clusters_per_group) == (4096, 4, 32768)
    assert big.blocks_per_group == 4 * 32768
    small = ext._Geometry(sb_of(images["ext2"]), 16 * MiB)
    assert (small.block_size, small.first_data_block, small.is_64bit, small.desc_size) == (1024, 1, False, 32)


# (image, fields, partition size, message or None when the value is still accepted)
BOUNDS = [
    ("ext4", [(0x18, "I", 6)], 1 << 40, None),                   # 64 KiB blocks: the largest
    ("ext4", [(0x18, "I", 7)], None, "ext4 superblock is damaged (block size field 7)"),
    ("bigalloc", [(0x1C, "I", 2), (0x20, "I", 32768)], None, None),   # clusters as large as blocks
    ("bigalloc", [(0x1C, "I", 20), (0x24, "I", 1), (0x20, "I", 1 << 18)], None, None),   # 1 GiB clusters
    ("bigalloc", [(0x1C, "I", 1)], None, "ext4 superblock is damaged (cluster size field 1)"),
    ("bigalloc", [(0x1C, "I", 21)], None, "ext4 superblock is damaged (cluster size field 21)"),
    ("bigalloc", [(0x24, "I", 32767)], None,
     "ext4 superblock is damaged (blocks and clusters per group disagree)"),
    ("ext4", [(0x4, "I", 0)], None, "ext4 superblock is damaged (block count 0)"),
    ("ext2", [(0x14, "I", 2)], None, "ext2 superblock is damaged (block count 16384)"),
    ("ext2", [(0x4, "I", 1)], None, "ext2 superblock is damaged (block count 1)"),
    ("ext2", [(0x4, "I", 2)], None, None),
    ("ext4", [(0x20, "I", 0)], None, "ext4 superblock is damaged (blocks per group 0)"),
    ("ext4", [(0x20, "I", 32769)], None, "ext4 superblock is damaged (blocks per group 32769)"),
    ("ext4", [(0x28, "I", 0)], None, "ext4 superblock is damaged (inode geometry)"),
    ("ext4", [(0x58, "H", 128)], None, None),
    ("ext4", [(0x58, "H", 64)], None, "ext4 superblock is damaged (inode geometry)"),
    ("ext4", [(0x58, "H", 384)], None, "ext4 superblock is damaged (inode geometry)"),
    ("ext4", [(0x58, "H", 4096)], None, None),
    ("ext4", [(0x58, "H", 8192)], None, "ext4 superblock is damaged (inode geometry)"),
    ("ext4", [(0x4C, "I", 0), (0x58, "H", 64)], None, None),    # revision 0: inodes are 128 bytes
    ("ext4", [(0xFE, "H", 32)], None, "ext4 superblock is damaged (group descriptor size 32)"),
    ("ext4", [(0xFE, "H", 96)], None, "ext4 superblock is damaged (group descriptor size 96)"),
    ("ext4", [(0xFE, "H", 4096)], None, None),
    ("ext4", [(0xFE, "H", 8192)], None, "ext4 superblock is damaged (group descriptor size 8192)"),
    ("ext2", [(0xFE, "H", 16)], None, None),                     # not 64-bit: the field is not read
    ("ext4", [], 32 * MiB - 1, "ext4 is larger than its partition (33554432 bytes in 33554431); "
                                "the partition looks truncated"),
    ("ext4", [(0xCE, "H", 1024)], None, None),
    ("ext4", [(0xCE, "H", 1025)], None, "ext4 superblock is damaged (reserved GDT blocks 1025)"),
]


@pytest.mark.parametrize("kind,fields,size,message", BOUNDS)
def test_each_superblock_bound_accepts_its_last_value_and_names_the_first_refused(images, kind, fields, size, message):
    image = images[kind]
    assert geometry_error(patched(image, *fields), size or len(image)) == message


def test_a_damaged_superblock_is_imaged_whole_with_its_message(images):
    image = bytearray(images["ext4"])
    image[SB: SB + 1024] = patched(bytes(image), (0xCE, "H", 1025))
    info = probe_partition(lambda o, n: bytes(image[o: o + n]) if o >= 0 else b"", len(image))
    assert info.whole and info.fs == "ext4"
    assert info.warnings[0].startswith("ext4 superblock is damaged (reserved GDT blocks 1025)")
