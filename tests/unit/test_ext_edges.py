"""ext2/3/4 at its edges (recovery/fs/ext.py), on real mke2fs images read in memory: every
superblock sanity bound (the last value accepted and the first refused, with its message),
how the kind is told from feature flags, journal devices, and the superblock's state bits."""

from __future__ import annotations

import os
import re
import struct
import subprocess

import pytest

from recovery.fs import FsMapError, ext, merge_ranges, pread_reader, probe_partition
from tests import fsimages
from tests.unit.test_fs_ext import dumpe2fs_used

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
    ("ext4", [(0x1C, "I", 0), (0x24, "I", 7)], None, None),     # without bigalloc the cluster fields are not read
    ("ext4", [(0x18, "I", 7)], None, "ext4 superblock is damaged (block size field 7)"),
    ("bigalloc", [(0x1C, "I", 2), (0x20, "I", 32768)], None, None),   # clusters as large as blocks
    ("bigalloc", [(0x1C, "I", 20), (0x24, "I", 1), (0x20, "I", 1 << 18)], None, None),   # 1 GiB clusters
    ("bigalloc", [(0x1C, "I", 1)], None, "ext4 superblock is damaged (cluster size field 1)"),
    ("bigalloc", [(0x1C, "I", 21)], None, "ext4 superblock is damaged (cluster size field 21)"),
    ("bigalloc", [(0x24, "I", 32767)], None,
     "ext4 superblock is damaged (blocks and clusters per group disagree)"),
    ("ext4", [(0x4, "I", 0)], None, "ext4 superblock is damaged (block count 0)"),
    ("ext4", [(0x4, "I", 1)], None, None),                       # one block, numbered from 0
    ("ext2", [(0x14, "I", 2)], None, "ext2 superblock is damaged (block count 16384)"),
    ("ext2", [(0x4, "I", 1)], None, "ext2 superblock is damaged (block count 1)"),
    ("ext2", [(0x4, "I", 2)], None, None),
    ("ext4", [(0x20, "I", 0)], None, "ext4 superblock is damaged (blocks per group 0)"),
    ("ext4", [(0x20, "I", 1)], None, None),
    ("ext4", [(0x28, "I", 1)], None, None),
    ("ext4", [(0x150, "I", 1)], None, "ext4 is larger than its partition (17592219598848 bytes in 33554432); "
                                      "the partition looks truncated"),    # the high half of a 64-bit count
    ("ext2", [(0x150, "I", 1)], None, None),                                 # not 64-bit: not read
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


def with_superblock(image: bytes, sb: bytes) -> bytes:
    return image[:SB] + sb + image[SB + 1024:]


def reader(image: bytes):
    return lambda offset, length: image[offset: offset + length] if offset >= 0 and length > 0 else b""


def blkid_type(tmp_path, image: bytes) -> str:
    """What blkid calls a filesystem whose first 64 KiB are `image`'s."""
    path = tmp_path / "head.img"
    with open(path, "wb") as f:
        f.write(image[:64 * 1024])
        f.truncate(len(image))
    return subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", str(path)],
                          capture_output=True, text=True).stdout.strip()


# (compat, incompat, ro_compat) set on top of a plain ext2 superblock, and the kind they make.
KINDS = [
    ((0, 0, 0), "ext2"),
    ((0, ext.INCOMPAT_FILETYPE | ext.INCOMPAT_META_BG, 0), "ext2"),
    ((0, 0, ext.RO_COMPAT_SPARSE_SUPER | ext.RO_COMPAT_LARGE_FILE | ext.RO_COMPAT_BTREE_DIR), "ext2"),
    ((ext.COMPAT_HAS_JOURNAL, 0, 0), "ext3"),
    ((ext.COMPAT_HAS_JOURNAL, ext.INCOMPAT_RECOVER | ext.INCOMPAT_META_BG | ext.INCOMPAT_FILETYPE, 0), "ext3"),
    ((ext.COMPAT_HAS_JOURNAL, 0, ext.RO_COMPAT_BTREE_DIR | ext.RO_COMPAT_LARGE_FILE), "ext3"),
    ((ext.COMPAT_HAS_JOURNAL, 0x40, 0), "ext4"),                  # extents
    ((0, 0x40, 0), "ext4"),
    ((0, ext.INCOMPAT_64BIT, 0), "ext4"),
    ((0, 0x200, 0), "ext4"),                                      # flex_bg
    ((0, 0, 0x8), "ext4"),                                        # huge_file
    ((0, 0, ext.RO_COMPAT_GDT_CSUM), "ext4"),
    ((ext.COMPAT_HAS_JOURNAL, 0, 0x20), "ext4"),                  # dir_nlink
    ((0x1, 0, 0), "ext2"),                                        # dir_prealloc is no journal
    ((ext.COMPAT_HAS_JOURNAL, 0x1, 0), "ext4"),                   # compression is beyond ext3
]


@pytest.mark.parametrize("flags,kind", KINDS)
def test_the_kind_follows_feature_flags_as_blkid_reads_them(images, tmp_path, flags, kind):
    base = sb_of(images["ext2"])
    compat, incompat, ro_compat = (struct.unpack_from("<I", base, off)[0] for off in (0x5C, 0x60, 0x64))
    assert incompat & ~ext.INCOMPAT_FILETYPE == 0 and ro_compat & ~0x3 == 0 and not compat & ext.COMPAT_HAS_JOURNAL
    image = with_superblock(images["ext2"], patched(images["ext2"], (0x5C, "I", compat | flags[0]),
                                                    (0x60, "I", flags[1]), (0x64, "I", flags[2])))
    assert ext.identify(reader(image), len(image))[0] == kind
    assert blkid_type(tmp_path, image) == kind
    if flags[1] & 0x80:                     # read as 64-bit: the descriptor size field is an ext2's 0
        assert geometry_error(sb_of(image), len(image)) == "ext4 superblock is damaged (group descriptor size 0)"
    else:
        geo = ext._Geometry(sb_of(image), len(image))
        assert (geo.is_64bit, geo.meta_bg) == (False, bool(flags[1] & 0x10))


def test_an_external_journal_is_named_and_never_mapped(tmp_path):
    image = tmp_path / "journal.img"
    with open(image, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run(["mke2fs", "-q", "-F", "-O", "journal_dev", "-L", "jlabel", str(image)], capture_output=True, check=True)
    data = image.read_bytes()
    uuid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID", str(image)], capture_output=True, text=True).stdout.strip()
    assert ext.identify(reader(data), len(data)) == ("jbd", "jlabel", uuid)
    with pytest.raises(FsMapError, match=r"^an external ext4 journal device, not a filesystem$"):
        ext.probe(reader(data), len(data))


def test_no_label_and_a_zero_uuid_read_as_none(images):
    sb = bytearray(sb_of(images["ext4"]))
    sb[0x78:0x88] = bytes(16)
    assert ext.identify(reader(with_superblock(images["ext4"], bytes(sb))), 32 * MiB)[1] is None
    sb[0x68:0x78] = bytes(16)
    assert ext.identify(reader(with_superblock(images["ext4"], bytes(sb))), 32 * MiB)[1:] == (None, None)
    sb[0x68] = 1                                       # one byte set is a uuid
    assert ext.identify(reader(with_superblock(images["ext4"], bytes(sb))), 32 * MiB)[2] == \
        "01000000-0000-0000-0000-000000000000"
    sb[0x78:0x88] = b"sixteen-letters!"                # a label filling its field has no NUL
    sb[0x88:0x8A] = b"/m"                              # and the last mounted path follows it
    assert ext.identify(reader(with_superblock(images["ext4"], bytes(sb))), 32 * MiB)[1] == "sixteen-letters!"
    sb[0x78:0x88] = b"\xffab" + bytes(13)             # not UTF-8: replaced, not refused
    assert ext.identify(reader(with_superblock(images["ext4"], bytes(sb))), 32 * MiB)[1] == "\ufffdab"


def test_a_superblock_without_the_magic_or_cut_short_is_not_ext(images):
    image = images["ext4"]
    assert ext.identify(reader(image[:SB + 1023]), len(image)) is None
    assert ext.probe(reader(image[:SB + 1023]), len(image)) is None
    bad = with_superblock(image, patched(image, (0x38, "H", 0xEF54)))
    assert ext.identify(reader(bad), len(bad)) is None and ext.probe(reader(bad), len(bad)) is None
    assert ext.identify(reader(image[:SB + 1024]), len(image))[0] == "ext4"


UNCLEAN = "ext4 was not unmounted cleanly (its journal needs recovery); the image holds it as it was left"
ERRORS = "ext4 has recorded errors; check it with e2fsck after restoring"


@pytest.mark.parametrize("state,incompat,warnings", [
    (1, 0, ()),
    (0, 0, (UNCLEAN,)),
    (3, 0, (ERRORS,)),
    (2, 0, (UNCLEAN, ERRORS)),
    (1, ext.INCOMPAT_RECOVER, (UNCLEAN,)),
    (5, 0, ()),                                         # orphans being recovered: clean enough
])
def test_the_state_field_and_recovery_flag_give_their_warnings(images, state, incompat, warnings):
    image = images["ext4"]
    base_incompat = struct.unpack_from("<I", sb_of(image), 0x60)[0]
    changed = with_superblock(image, patched(image, (0x3A, "H", state), (0x60, "I", base_incompat | incompat)))
    info = ext.probe(reader(changed), len(changed))
    assert info.warnings == warnings


def descriptor_offset(image: bytes, group: int = 0) -> tuple[ext._Geometry, int]:
    geo = ext._Geometry(sb_of(image), len(image))
    return geo, geo.gdt_block(0) * geo.block_size + group * geo.desc_size


OUTSIDE = "ext metadata is damaged (group {}'s descriptor points outside the filesystem)"


@pytest.mark.parametrize("kind,field,value,fits", [
    ("ext4-1k", 0x0, "count", False), ("ext4-1k", 0x0, "count-1", True),          # block bitmap
    ("ext4-1k", 0x4, "count", False), ("ext4-1k", 0x4, "count-1", True),          # inode bitmap
    ("ext4-1k", 0x8, "count-table", True), ("ext4-1k", 0x8, "count-table+1", False),   # inode table
    ("ext4-1k", 0x20, 1, False), ("ext4-1k", 0x24, 1, False), ("ext4-1k", 0x28, 1, False),   # 64-bit high words
    ("ext2", 0x0, 0, False), ("ext2", 0x4, 0, False), ("ext2", 0x8, 0, False),      # before block 1
    ("ext2", 0x0, 1, True),
])
def test_a_descriptor_pointing_outside_is_named(images, kind, field, value, fits):
    image = bytearray(images[kind])
    geo, at = descriptor_offset(bytes(image), group=1)
    value = {"count": geo.blocks_count, "count-1": geo.blocks_count - 1,
             "count-table": geo.blocks_count - geo.inode_table_blocks,
             "count-table+1": geo.blocks_count - geo.inode_table_blocks + 1}.get(value, value)
    struct.pack_into("<I", image, at + field, value)
    if fits:
        descs = ext._descriptors(reader(bytes(image)), geo)
        assert descs[1][field // 4] == value
    else:
        with pytest.raises(FsMapError) as err:
            ext._descriptors(reader(bytes(image)), geo)
        assert str(err.value) == OUTSIDE.format(1)


def test_64bit_descriptors_join_their_high_words(images, tmp_path):
    image = images["ext4-1k"]
    geo, at = descriptor_offset(image)
    descs = ext._descriptors(reader(image), geo)
    low = struct.unpack_from("<IIIH", image, at)[:3]
    assert [d[:3] for d in descs][0] == low and descs[0][3] == struct.unpack_from("<H", image, at + 0x12)[0]
    # dumpe2fs names the same places for every group.
    (tmp_path / "fs.img").write_bytes(image)
    out = subprocess.run(["dumpe2fs", str(tmp_path / "fs.img")], capture_output=True, text=True).stdout
    found = [tuple(int(x) for x in m) for m in re.findall(
        r"Block bitmap at (\d+).*?Inode bitmap at (\d+).*?Inode table at (\d+)", out, re.S)]
    assert [d[:3] for d in descs] == found and len(found) == geo.group_count


@pytest.mark.parametrize("cut,what", [
    ("gdt", "the group descriptor table"),
    ("bitmap", "a block bitmap"),
])
def test_metadata_past_the_end_of_what_can_be_read_is_named(images, cut, what):
    image = images["ext4-1k"]
    geo, at = descriptor_offset(image)
    descs = ext._descriptors(reader(image), geo)
    end = at if cut == "gdt" else max(d[0] for d in descs) * geo.block_size
    with pytest.raises(FsMapError) as err:
        ext.probe(reader(image[:end]), len(image))
    assert str(err.value) == f"ext metadata is damaged ({what} lies past the end of the partition)"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fsimages.make_tree(tmp_path_factory.mktemp("tree") / "tree")


def dumpe2fs_map(path) -> list[tuple[int, int]]:
    block_size, used = dumpe2fs_used(path)
    return list(merge_ranges([(a * block_size, n * block_size) for a, n in used], path.stat().st_size))


@pytest.mark.parametrize("fs,block_size,extra", [
    ("ext4", 1024, ()),
    ("ext4", 4096, ("-O", "^64bit,^flex_bg")),
    ("ext4", 1024, ("-O", "meta_bg,^resize_inode")),
    ("ext4", 1024, ("-O", "meta_bg,^resize_inode", "-E", "nodiscard,num_backup_sb=0")),
    ("ext4", 4096, ("-O", "bigalloc", "-C", "16384")),
    ("ext4", 1024, ("-O", "bigalloc", "-C", "4096")),
    ("ext4", 1024, ("-O", "sparse_super2")),
    ("ext4", 1024, ("-O", "sparse_super2", "-E", "nodiscard,num_backup_sb=1")),
    ("ext4", 1024, ("-O", "mmp")),
    ("ext4", 1024, ("-O", "^metadata_csum,^uninit_bg")),
    ("ext4", 2048, ("-O", "^metadata_csum,uninit_bg")),
    ("ext3", 1024, ()),
    ("ext2", 2048, ()),
    ("ext2", 1024, ("-O", "^sparse_super,^resize_inode")),
    ("ext4", 1024, ("-O", "^sparse_super,^resize_inode")),       # a superblock in every (uninit) group
    ("ext4", 1024, ("-O", "dir_prealloc")),                        # compat bit 0 set (by debugfs)
])
def test_the_map_is_exactly_the_used_blocks_e2fsprogs_reports(tmp_path, tree, fs, block_size, extra):
    """Every block dumpe2fs counts used (bitmaps and uninitialised groups' metadata alike),
    nothing more but the boot block, which 1 KiB blocks leave outside the bitmap."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(72 * MiB)
    later = [o for o in extra[1:2] if o == "dir_prealloc"]      # mke2fs will not set it, debugfs will
    subprocess.run([f"mkfs.{fs}", "-q", "-F", "-E", "nodiscard", "-b", str(block_size),
                    *(() if later else extra), "-d", str(tree), str(image)], capture_output=True, check=True)
    for feature in later:
        subprocess.run(["debugfs", "-w", "-R", f"feature {feature}", str(image)], capture_output=True, check=True)
    # mke2fs -d writes the tree front to back, so each group's bitmap would be one run from its
    # first bit; deleting files leaves free holes between used blocks.
    # (Not with mmp: debugfs -w then waits out the MMP interval, some ten seconds.)
    if "mmp" not in extra:
        script = tmp_path / "rm.debugfs"
        script.write_text("rm /big.bin\n" + "".join(f"rm /small/file{i:03d}.dat\n" for i in range(1, 300, 2)))
        subprocess.run(["debugfs", "-w", "-f", str(script), str(image)], capture_output=True, check=True)
    data = image.read_bytes()
    info = ext.probe(reader(data), len(data))
    assert list(info.used) == list(merge_ranges(dumpe2fs_map(image) + [(0, 2048)], len(data)))
    assert info.fs == fs and info.block_size == block_size and info.warnings == ()


def test_without_group_checksums_an_uninit_flag_is_not_trusted(tmp_path, tree):
    """Only a checksummed descriptor's BLOCK_UNINIT flag is believed (the kernel does the same):
    set on a filesystem without gdt_csum or metadata_csum, every bitmap is still read."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(72 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "1024", "-O", "^metadata_csum,^uninit_bg",
                    "-d", str(tree), str(image)], capture_output=True, check=True)
    data = bytearray(image.read_bytes())
    before = ext.probe(reader(bytes(data)), len(data)).used
    geo = ext._Geometry(sb_of(bytes(data)), len(data))
    assert not geo.csum_groups
    for group in range(geo.group_count):
        at = geo.gdt_block(0) * geo.block_size + group * geo.desc_size + 0x12
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | ext.BG_BLOCK_UNINIT)
    assert ext.probe(reader(bytes(data)), len(data)).used == before
    assert sum(n for _a, n in before) > 10 * MiB         # the tree's data, found through the bitmaps


def file_reader(path):
    fd = os.open(path, os.O_RDONLY)
    return fd, pread_reader(fd)


@pytest.mark.parametrize("extra", [
    (),                                                         # a descriptor table of several blocks
    ("-O", "^flex_bg"),                                         # each group's tables inside it
    ("-O", "meta_bg,^resize_inode"),                            # three meta groups
    ("-O", "meta_bg,^resize_inode,sparse_super2"),
    ("-O", "bigalloc,meta_bg,^resize_inode", "-C", "4096"),    # 1 KiB blocks, the boot block in cluster 0
    ("-O", "bigalloc", "-C", "2048"),                           # two blocks a cluster
])
def test_a_filesystem_of_forty_groups_maps_what_e2fsprogs_calls_used(tmp_path, extra):
    """Empty, so most groups are BLOCK_UNINIT and only their metadata is used: the descriptor
    blocks meta_bg spreads into the first, second and last group of each meta group, the tables.
    With bigalloc an uninitialised group is kept whole instead."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(320 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-b", "1024", *extra, str(image)],
                   capture_output=True, check=True)
    fd, read = file_reader(image)
    try:
        info = ext.probe(read, 320 * MiB)
    finally:
        os.close(fd)
    expected = dumpe2fs_map(image) + [(0, 2048)]
    text = subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True).stdout
    uninit = [(int(a), int(b)) for a, b in re.findall(r"^Group \d+: \(Blocks (\d+)-(\d+)\).*BLOCK_UNINIT", text, re.M)]
    assert len(uninit) > 5
    if "bigalloc" in " ".join(extra):
        expected += [(a * 1024, (b + 1 - a) * 1024) for a, b in uninit]
    assert list(info.used) == list(merge_ranges(expected, 320 * MiB))
    if extra[1:2] and extra[1].startswith("meta_bg"):  # the second meta group's descriptors cut off
        data = image.read_bytes()[:16 * 8192 * 1024]
        with pytest.raises(FsMapError) as err:
            ext.probe(reader(data), 320 * MiB)
        assert str(err.value) == "ext metadata is damaged (a meta_bg descriptor block lies past the end of the partition)"


def test_an_inode_table_part_of_a_block_takes_the_whole_block(images):
    geo = ext._Geometry(patched(images["ext4-1k"], (0x28, "I", 3)), 32 * MiB)    # 3 x 256 bytes
    assert geo.inode_table_blocks == 1
    geo = ext._Geometry(patched(images["ext4-1k"], (0x28, "I", 5)), 32 * MiB)
    assert geo.inode_table_blocks == 2


def uninit_groups(geo, image: bytes) -> list[int]:
    base = geo.gdt_block(0) * geo.block_size
    return [g for g in range(geo.group_count)
            if struct.unpack_from("<H", image, base + g * geo.desc_size + 0x12)[0] & ext.BG_BLOCK_UNINIT]


def test_an_uninitialised_groups_bitmap_block_is_never_read(images):
    """Its content is whatever was on the disk: here every bit set, and the map stays the same."""
    image = bytearray(images["ext4-1k"])
    geo = ext._Geometry(sb_of(bytes(image)), len(image))
    before = ext.probe(reader(bytes(image)), len(image)).used
    groups = uninit_groups(geo, bytes(image))
    assert groups
    for group, (block_bitmap, _ib, _it, _flags) in enumerate(ext._descriptors(reader(bytes(image)), geo)):
        if group in groups:
            image[block_bitmap * 1024: (block_bitmap + 1) * 1024] = b"\xff" * 1024
    assert ext.probe(reader(bytes(image)), len(image)).used == before


def covered(ranges, start: int, length: int) -> bool:
    return any(a <= start and start + length <= a + n for a, n in ranges)


def test_sparse_super2_backups_are_kept_in_uninitialised_groups(tmp_path):
    data = bytearray(mkfs(tmp_path, "fs.img", 72 * MiB, "-b", "1024", "-O", "sparse_super2"))
    geo = ext._Geometry(sb_of(bytes(data)), len(data))
    assert geo.backup_bgs == (1, geo.group_count - 1)
    base = geo.gdt_block(0) * 1024
    for group in range(1, geo.group_count):           # as if no group had its bitmap initialised
        at = base + group * geo.desc_size + 0x12
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | ext.BG_BLOCK_UNINIT)
    used = ext.probe(reader(bytes(data)), len(data)).used
    for group in (1, geo.group_count - 1):
        assert covered(used, geo.group_start(group) * 1024, (1 + geo.gdt_after_super + geo.reserved_gdt) * 1024)
    for group in (3, 5, 7):                             # sparse_super's places, not sparse_super2's
        assert not covered(used, geo.group_start(group) * 1024, 1024)


def test_64bit_descriptors_reach_past_block_2_to_the_32(images):
    """A filesystem of more than 2^32 blocks, in memory: the high words of group 0's descriptor."""
    image = bytearray(images["ext4"])
    image[SB: SB + 1024] = patched(bytes(image), (0x150, "I", 1))
    size = 1 << 50
    geo = ext._Geometry(sb_of(bytes(image)), size)
    at = geo.gdt_block(0) * geo.block_size
    for field, hi_at in ((0x0, 0x20), (0x4, 0x24), (0x8, 0x28)):
        struct.pack_into("<I", image, at + hi_at, 1)
    low = struct.unpack_from("<III", image, at)
    head = bytes(image[: at + geo.desc_size])         # the other 131072 groups' descriptors: zeros
    descs = ext._descriptors(lambda o, n: (head[o: o + n] + bytes(n))[:n], geo)
    assert descs[0][:3] == tuple((1 << 32) | v for v in low)


# Layouts mke2fs alone never writes, made by e2fsprogs itself (mke2fs, then debugfs or resize2fs),
# each checked by e2fsck and mapped against dumpe2fs.

def e2fs(tmp_path, size: int, *options: str, debugfs: str = "", grow_to: int = 0, fs: str = "ext4"):
    """An image made by mke2fs, then changed by a debugfs script, then grown by resize2fs."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([f"mkfs.{fs}", "-q", "-F", *options, str(image)], capture_output=True, check=True)
    if debugfs:
        run_debugfs(image, debugfs)
    if grow_to:
        os.truncate(image, grow_to)
        subprocess.run(["resize2fs", str(image)], capture_output=True, check=True)
    subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=True)
    return image


def run_debugfs(image, script: str) -> None:
    (image.parent / "script.debugfs").write_text(script)
    subprocess.run(["debugfs", "-w", "-f", str(image.parent / "script.debugfs"), str(image)],
                   capture_output=True, check=True)


def dumpe2fs_text(image) -> str:
    return subprocess.run(["dumpe2fs", str(image)], capture_output=True, text=True, check=True).stdout


def free_blocks(text: str) -> set[int]:
    free = set()
    for listed in re.findall(r"^  Free blocks: ?(.*)$", text, re.M):
        for item in filter(None, (x.strip() for x in listed.split(","))):
            a, _, b = item.partition("-")
            free.update(range(int(a), int(b or a) + 1))
    return free


def probe_file(image):
    data = image.read_bytes()
    return ext.probe(reader(data), len(data))


def test_bitmaps_resize2fs_placed_with_free_blocks_after_them_map_exactly(tmp_path):
    """Grown from one group to two, the new group's bitmaps go into the flex_bg slots after
    group 0's: the block after each is free, and must stay out of the map."""
    image = e2fs(tmp_path, 1 * MiB, "-E", "nodiscard", "-b", "1024", "-g", "2048",
                 "-O", "^resize_inode,^has_journal", grow_to=3 * MiB)
    text = dumpe2fs_text(image)
    free = free_blocks(text)
    after = [int(b) + 1 for b in re.findall(r"(?:Block|Inode) bitmap at (\d+)", text)]
    assert len(after) == 4 and [b in free for b in after] == [False, False, True, True]
    info = probe_file(image)
    assert list(info.used) == list(merge_ranges(dumpe2fs_map(image) + [(0, 2048)], 3 * MiB))


def test_the_last_groups_bitmap_near_the_partitions_end_is_read_without_reading_past_it(tmp_path):
    """33 groups of 256 blocks, the last one 63 blocks long, on a partition that ends with the
    filesystem: that group's bitmap is the 33rd read and lies 62 blocks before the end."""
    size = 8256 * 1024
    image = e2fs(tmp_path, size, "-b", "1024", "-g", "256", "-I", "128", fs="ext2")
    geo = ext._Geometry(sb_of(image.read_bytes()), size)
    last_bitmap = ext._descriptors(reader(image.read_bytes()), geo)[-1][0]
    assert (geo.blocks_count, geo.group_count, geo.blocks_count - last_bitmap) == (8256, 33, 62)
    info = probe_file(image)
    assert list(info.used) == list(merge_ranges(dumpe2fs_map(image) + [(0, 2048)], size))


@pytest.mark.parametrize("first_meta_bg,size,grow_to,groups,gdt_blocks", [
    (1, 4 * MiB, 10 * MiB, 40, 3),     # meta group 1 (groups 16-31) holds backups 25 and 27
    (2, 6 * MiB, 14 * MiB, 56, 4),     # two blocks after each superblock; group 49's backup in meta group 3
])
def test_descriptors_of_a_filesystem_switched_to_meta_bg_then_grown_are_read_where_they_are(
        tmp_path, first_meta_bg, size, grow_to, groups, gdt_blocks):
    """An online resize past the reserved GDT blocks switches a filesystem to meta_bg, keeping
    its first descriptor blocks after the superblock (first_meta_bg); only a mounted filesystem
    resizes that way, so debugfs sets the two fields here, and resize2fs then grows it offline
    with the new descriptor blocks in their meta groups. Superblock backups in those later meta
    groups have no descriptor table after them."""
    image = e2fs(tmp_path, size, "-E", "nodiscard", "-b", "1024", "-g", "256", "-O", "^resize_inode,^has_journal",
                 debugfs=f"feature meta_bg\nssv first_meta_bg {first_meta_bg}\n", grow_to=grow_to)
    text = dumpe2fs_text(image)
    assert re.search(rf"^First meta block group:\s+{first_meta_bg}$", text, re.M)
    geo = ext._Geometry(sb_of(image.read_bytes()), grow_to)
    assert (geo.group_count, geo.gdt_blocks, geo.gdt_after_super, geo.descs_per_block) == \
        (groups, gdt_blocks, first_meta_bg, 16)
    # Where dumpe2fs says each descriptor block is: first_meta_bg of them after the primary
    # superblock, then one in the first group of each later meta group.
    primary = re.search(r"Primary superblock at \d+, Group descriptors at (\d+)-(\d+)", text)
    meta = dict((int(g), int(b)) for g, b in re.findall(
        r"^Group (\d+): .*\n(?:  Backup superblock at \d+, )?\s*Group descriptor at (\d+)", text, re.M))
    assert [geo.gdt_block(i) for i in range(gdt_blocks)] == \
        list(range(int(primary[1]), int(primary[2]) + 1)) + [meta[16 * i] for i in range(first_meta_bg, gdt_blocks)]
    info = probe_file(image)
    assert list(info.used) == list(merge_ranges(dumpe2fs_map(image) + [(0, 2048)], grow_to))


def mmp_image(tmp_path) -> tuple[bytearray, int, ext._Geometry]:
    image = e2fs(tmp_path, 4 * MiB, "-E", "nodiscard", "-b", "1024", "-O", "mmp,^has_journal")
    data = bytearray(image.read_bytes())
    geo = ext._Geometry(sb_of(bytes(data)), len(data))
    assert geo.incompat & ext.INCOMPAT_MMP and geo.mmp_block > 1
    return data, geo.mmp_block, geo


def clear_bit(data: bytearray, geo, block: int) -> None:
    """Mark `block` free in its group's block bitmap, in memory."""
    group, bit = divmod(block - geo.first_data_block, geo.blocks_per_group)
    bitmap = ext._descriptors(reader(bytes(data)), geo)[group][0]
    data[bitmap * geo.block_size + bit // 8] &= ~(1 << bit % 8)


def debugfs_testb(tmp_path, data: bytes, block: int) -> str:
    (tmp_path / "changed.img").write_bytes(data)
    out = subprocess.run(["debugfs", "-n", "-R", f"testb {block}", str(tmp_path / "changed.img")],
                         capture_output=True, text=True, check=True).stdout
    return out.strip()


def test_the_mmp_block_is_kept_when_its_bitmap_lost_it(tmp_path):
    """The MMP block is counted from the superblock, not only from a bitmap that could forget
    it; and only that block: the one after it is free."""
    data, mmp, geo = mmp_image(tmp_path)
    expected = merge_ranges(dumpe2fs_map(tmp_path / "fs.img") + [(0, 2048)], len(data))
    assert covered(expected, mmp * 1024, 1024) and not covered(expected, (mmp + 1) * 1024, 1024)
    clear_bit(data, geo, mmp)
    assert debugfs_testb(tmp_path, bytes(data), mmp) == f"Block {mmp} not in use"
    assert ext.probe(reader(bytes(data)), len(data)).used == expected


@pytest.mark.parametrize("other_incompat", [0, 0x1])     # 0x1: a feature the map does not read
def test_an_mmp_field_left_behind_without_the_feature_is_not_kept(tmp_path, other_incompat):
    """With the feature off (debugfs `feature ^mmp` leaves the field; tune2fs frees the block
    and clears it), the block the stale field names is an ordinary free block."""
    data, mmp, geo = mmp_image(tmp_path)
    before = merge_ranges(dumpe2fs_map(tmp_path / "fs.img") + [(0, 2048)], len(data))
    clear_bit(data, geo, mmp)
    data[SB: SB + 1024] = patched(bytes(data), (0x60, "I", geo.incompat & ~ext.INCOMPAT_MMP | other_incompat))
    used = ext.probe(reader(bytes(data)), len(data)).used
    assert not covered(used, mmp * 1024, 1024)
    assert blocks_in(used) == blocks_in(before) - {mmp}         # what e2fsprogs called used, less that block


def blocks_in(ranges, block_size: int = 1024) -> set[int]:
    return {b for a, n in ranges for b in range(a // block_size, (a + n) // block_size)}


def test_bitmaps_out_of_group_order_are_each_read_for_their_own_group(tmp_path):
    """With flex_bg a bitmap may sit in any block: debugfs moves group 30's block bitmap to a
    free block below 30 and group 0's to block 31, free blocks between them. Each group's bits
    are still read from its own block (a row of bitmaps joins only adjacent blocks), so group
    0's root directory and lost+found stay mapped."""
    image = e2fs(tmp_path, 16 * MiB, "-E", "nodiscard", "-b", "1024", "-g", "256", "-N", "512", "-I", "128", "-G", "2",
                 "-O", "^resize_inode,^has_journal,^metadata_csum,^uninit_bg,^64bit")
    text = dumpe2fs_text(image)
    free = sorted(free_blocks(text))
    bitmaps = [int(b) for b in re.findall(r"Block bitmap at (\d+)", text)]
    low = free[0]                          # the first free block, after group 0's directories
    assert low < 30 and low + 1 in free and 31 in free
    run_debugfs(image, f"set_bg 30 block_bitmap {low}\nset_bg 0 block_bitmap 31\nsetb {low}\nsetb 31\n"
                       f"freeb {bitmaps[0]}\nfreeb {bitmaps[30]}\n")
    # debugfs leaves the groups' free counts as they were: e2fsck fixes them, then finds nothing.
    assert subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True).returncode == 1
    subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, check=True)
    moved = [int(b) for b in re.findall(r"Block bitmap at (\d+)", dumpe2fs_text(image))]
    assert (moved[0], moved[30]) == (31, low)
    info = probe_file(image)
    assert list(info.used) == list(merge_ranges(dumpe2fs_map(image) + [(0, 2048)], 16 * MiB))
