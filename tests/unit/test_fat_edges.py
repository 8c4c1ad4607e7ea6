"""FAT at its edges (recovery/fs/fat.py), on real mkfs.vfat images changed in memory: the
cluster counts where FAT12 becomes FAT16 and FAT16 becomes FAT32, boot sectors that only look
like FAT, the root directory's entries that are not its label (long names, deleted entries,
files), "NO NAME", and FAT32's reserved top bits, which do not make a cluster used."""

from __future__ import annotations

import struct

import pytest

from recovery.fs import fat, identify, probe_partition
from tests import fsimages

MiB = fsimages.MiB


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    work = tmp_path_factory.mktemp("fat")
    return {
        16: fsimages.make_vfat(work / "f16.img", 16 * MiB, fat=16, label="EDGES", garbage=False).read_bytes(),
        32: fsimages.make_vfat(work / "f32.img", 40 * MiB, fat=32, label="EDGES32", garbage=False).read_bytes(),
    }


def reader(buf):
    return lambda offset, length: bytes(buf[offset : offset + length])


def with_total(boot: bytes, sectors: int) -> bytes:
    """The boot sector with its total sector count set (in the 32-bit field)."""
    out = bytearray(boot[:512])
    struct.pack_into("<H", out, 19, 0)
    struct.pack_into("<I", out, 0x20, sectors)
    return bytes(out)


@pytest.mark.parametrize("clusters,bits", [(4084, 12), (4085, 16), (65524, 16), (65525, 32)])
def test_the_cluster_count_decides_the_fat_width(images, clusters, bits):
    bpb = fat._Bpb(images[16][:512])
    boot = with_total(images[16], bpb.data_start + clusters * bpb.sectors_per_cluster)
    got = fat._Bpb(boot)
    assert (got.cluster_count, got.bits, got.name) == (clusters, bits, f"FAT{bits}")


def test_boot_sectors_that_only_look_like_fat(images):
    boot = bytearray(images[16][:512])
    assert fat.boot_sector_size(reader(bytes(boot))) == len(images[16])
    for oem in (b"NTFS    ", b"EXFAT   "):
        other = bytearray(boot)
        other[3:11] = oem
        assert fat.boot_sector_size(reader(bytes(other))) is None
    for jump, fat_like in ((0xEB, True), (0xE9, True), (0x00, False), (0xEA, False)):
        other = bytearray(boot)
        other[0] = jump
        assert (fat.boot_sector_size(reader(bytes(other))) is not None) is fat_like
    assert fat.boot_sector_size(reader(bytes(boot[:511]))) is None


def root_directory(image: bytes) -> tuple[int, fat._Bpb]:
    bpb = fat._Bpb(image[:512])
    return (bpb.reserved + bpb.fat_count * bpb.fat_size) * bpb.bytes_per_sector, bpb


def entry(name: bytes, attr: int, first: int | None = None) -> bytes:
    raw = bytearray(32)
    raw[0:11] = name.ljust(11)
    raw[11] = attr
    if first is not None:
        raw[0] = first
    return bytes(raw)


def test_only_the_volume_label_entry_names_the_volume(images):
    image = bytearray(images[16])
    at, _ = root_directory(bytes(image))
    entries = [
        entry(b"\x41LONG NAME", 0x0F),               # a long-name piece: its attribute has the label bit
        entry(b"README  TXT", 0x01),                  # a read-only file
        entry(b"ARCHIVE BIN", 0x20),
        entry(b"OLDLABEL", 0x08, first=0xE5),         # a deleted label
        entry(b"ROOTLABEL", 0x08),
    ]
    image[at : at + 32 * len(entries)] = b"".join(entries)
    assert identify(reader(bytes(image)), len(image))[1] == "ROOTLABEL"
    assert probe_partition(reader(bytes(image)), len(image)).label == "ROOTLABEL"
    # Without a label entry the boot sector's label stands; "NO NAME" is no label at all.
    image[at + 32 * 4 : at + 32 * 5] = bytes(32)
    assert identify(reader(bytes(image)), len(image))[1] == "EDGES"
    bpb_ext = 0x24
    image[bpb_ext + 7 : bpb_ext + 18] = b"NO NAME    "
    assert identify(reader(bytes(image)), len(image))[1] is None
    assert fat._label_text(b"NO NAME    ") is None and fat._label_text(b"NO NAMES   ") == "NO NAMES"


def test_fat32_reserved_bits_do_not_make_a_cluster_used(images):
    image = bytearray(images[32])
    bpb = fat._Bpb(bytes(image[:512]))
    assert bpb.bits == 32
    before = probe_partition(reader(bytes(image)), len(image)).used
    fat_at = bpb.reserved * bpb.bytes_per_sector
    free = next(c for c in range(bpb.cluster_count + 1, 2, -1)
                if image[fat_at + 4 * c : fat_at + 4 * c + 4] == bytes(4))
    for copy in range(bpb.fat_count):
        top = fat_at + copy * bpb.fat_size * bpb.bytes_per_sector + 4 * free + 3
        image[top] = 0xF0                          # the reserved nibble only
    assert probe_partition(reader(bytes(image)), len(image)).used == before
    image[fat_at + 4 * free] = 0x01                # a real entry in the first copy: now used
    after = probe_partition(reader(bytes(image)), len(image)).used
    data = bpb.data_start * bpb.bytes_per_sector + (free - 2) * bpb.cluster_bytes
    assert after != before and any(o <= data < o + n for o, n in after)


@pytest.mark.parametrize("offset,fmt,value,fat_like", [
    (11, "<H", 512, True), (11, "<H", 1024, True), (11, "<H", 2048, True), (11, "<H", 4096, True),
    (11, "<H", 256, False), (11, "<H", 1000, False), (11, "<H", 8192, False),
    (13, "<B", 1, True), (13, "<B", 128, True), (13, "<B", 0, False), (13, "<B", 3, False),
    (14, "<H", 0, False),                                      # no reserved sector
    (16, "<B", 1, True), (16, "<B", 4, True), (16, "<B", 0, False), (16, "<B", 5, False),
    (21, "<B", 0xF0, True), (21, "<B", 0xF8, True), (21, "<B", 0xFF, True),
    (21, "<B", 0xEF, False), (21, "<B", 0xF1, False), (21, "<B", 0xF7, False),
])
def test_each_bpb_field_is_checked_for_sanity(images, offset, fmt, value, fat_like):
    boot = bytearray(images[16][:512])
    struct.pack_into(fmt, boot, offset, value)
    got = fat._bpb(reader(bytes(boot)))
    assert (got is not None) is bool(fat_like)
    if got is not None:
        assert struct.unpack_from(fmt, boot, offset)[0] in (got.bytes_per_sector, got.sectors_per_cluster,
                                                            got.reserved, got.fat_count, got.media)


def test_no_sectors_at_all_is_not_fat(images):
    assert fat._bpb(reader(with_total(images[16], 0))) is None


@pytest.mark.parametrize("signature,serial,label", [(0x29, True, True), (0x28, True, False), (0x00, False, False)])
def test_the_extended_bpb_signature_says_what_follows(images, signature, serial, label):
    boot = bytearray(images[16][:512])
    boot[0x24 + 2] = signature
    bpb = fat._Bpb(bytes(boot))
    assert bpb.has_ext_bpb is serial and (bpb.serial is not None) is serial
    assert bpb.boot_label == (b"EDGES      " if label else b"")
    assert fat._serial_text(0x1A2B3C4D) == "1A2B-3C4D" and fat._serial_text(None) is None


def fsck_geometry(image: bytes, tmp_path) -> dict[str, int]:
    """What fsck.fat says of the image's layout, read apart from this module."""
    import re
    import subprocess

    path = tmp_path / "g.img"
    path.write_bytes(image)
    out = subprocess.run(["fsck.vfat", "-n", "-v", str(path)], capture_output=True, text=True).stdout
    return {"root": int(re.search(r"Root directory starts at byte (\d+)", out).group(1)) if "Root directory starts"
            in out else -1,
            "data": int(re.search(r"Data area starts at byte (\d+)", out).group(1)),
            "clusters": int(re.search(r"(\d+) data clusters", out).group(1))}


@pytest.mark.parametrize("bits", [16, 32])
def test_the_layout_is_the_one_fsck_reads(images, bits, tmp_path):
    image = images[bits]
    bpb = fat._Bpb(image[:512])
    want = fsck_geometry(image, tmp_path)
    assert bpb.data_start * bpb.bytes_per_sector == want["data"] and bpb.cluster_count == want["clusters"]
    if bits == 16:
        assert root_directory(image)[0] == want["root"]


def test_fat32_serial_and_root_label_come_from_their_own_places(images, tmp_path):
    import subprocess

    image = bytearray(images[32])
    image[0x40 + 7 : 0x40 + 18] = b"BOOTLABEL  "        # the boot sector's copy differs from the root's
    path = tmp_path / "f32.img"
    path.write_bytes(bytes(image))
    blkid = dict(line.split("=", 1) for line in subprocess.run(
        ["blkid", "-o", "export", str(path)], capture_output=True, text=True).stdout.split())
    assert identify(reader(bytes(image)), len(image)) == ("vfat", "EDGES32", blkid["UUID"])
    assert blkid["LABEL"] == "EDGES32"


def fat32_root_chain(image: bytes, chain: list[int], label_in: int | None, copies: int | None = None) -> bytes:
    """The FAT32 image with its root directory the clusters of `chain` (from cluster 2), every
    entry a read-only file except one volume label at the start of the chain's cluster number
    `label_in` (counted from 0), if any; the chain written in the first `copies` FATs (all)."""
    out = bytearray(image)
    bpb = fat._Bpb(image[:512])
    assert bpb.root_cluster == 2 == chain[0]
    bps, size = bpb.bytes_per_sector, bpb.cluster_bytes
    for copy in range(bpb.fat_count if copies is None else copies):
        table = (bpb.reserved + copy * bpb.fat_size) * bps
        for here, nxt in zip(chain, chain[1:] + [0x0FFFFFFF]):
            struct.pack_into("<I", out, table + 4 * here, nxt)
    files = entry(b"FILE    TXT", 0x01) * (size // 32)
    for n, cluster in enumerate(chain):
        at = bpb.data_start * bps + (cluster - 2) * size
        if at + size > len(out):              # past the volume: the partition goes on
            out += bytes(at + size - len(out))
        out[at : at + size] = files
        if n == label_in:
            out[at : at + 32] = entry(b"CHAINED", 0x08)
    return bytes(out)


def backwards(length: int) -> list[int]:
    """`length` clusters: 2, then the free clusters after it, backwards (2, length + 1, ..., 3)."""
    return [2] + list(range(length + 1, 2, -1))


@pytest.mark.parametrize("chain,label_in,label", [
    (backwards(2), 1, "CHAINED"),              # the label in the root's second cluster
    (backwards(16), 15, "CHAINED"),            # in the 16th: still read
    (backwards(17), 16, "EDGES32"),            # in the 17th: past what is read, the boot sector's label stands
    # Through the last entry of the 64 KiB of FAT that identify reads (cluster 16383).
    ([2, 16383, 3], 2, "CHAINED"),
    ([2, 16384, 3], 2, "EDGES32"),             # one past it: the chain ends there for identify
    ([2, 16384], 0, "CHAINED"),                # ... and what was read before still counts
    ("last", 1, "CHAINED"),                    # the volume's last cluster
    ("past", 1, "EDGES32"),                    # one past it: outside the volume, not followed
])
def test_a_fat32_root_directory_is_followed_through_its_chain(images, chain, label_in, label):
    count = fat._Bpb(images[32][:512]).cluster_count
    if isinstance(chain, str):
        chain = {"last": [2, count + 1], "past": [2, count + 2]}[chain]
    image = fat32_root_chain(images[32], chain, label_in)
    assert identify(reader(image), len(image))[1] == label


def test_fat12_entries_are_read_from_their_twelve_bits():
    # Entries 0-7: 0x800, 0x000, 0x000, 0x001, 0x005, 0x000, 0xFFF, 0x010 packed two in three bytes.
    values = [0x800, 0x000, 0x000, 0x001, 0x005, 0x000, 0xFFF, 0x010]
    packed = bytearray()
    for even, odd in zip(values[::2], values[1::2]):
        packed += bytes([even & 0xFF, (even >> 8) | ((odd & 0x0F) << 4), odd >> 4])
    flags = fat._nonzero_entries(bytes(packed) + bytes(2), 12, len(values))
    assert [bool(f) for f in flags] == [bool(v) for v in values]


def test_a_label_ending_in_x_keeps_it():
    assert fat._label_text(b"FAX        ") == "FAX" and fat._label_text(b"BOX\0\0\0\0\0\0\0\0") == "BOX"


def test_the_label_is_looked_up_in_the_first_fat(images):
    image = fat32_root_chain(images[32], backwards(2), 1, copies=1)
    assert identify(reader(image), len(image))[1] == "CHAINED"
    assert probe_partition(reader(image), len(image)).label == "CHAINED"


def fat16_root(image: bytes, entries: list[bytes], fill: bytes | None = None) -> bytes:
    """The FAT16 image with its root directory's first entries replaced (and every other one
    `fill`, when given)."""
    out = bytearray(image)
    at, bpb = root_directory(image)
    if fill is not None:
        out[at : at + bpb.root_entries * 32] = fill * bpb.root_entries
    out[at : at + 32 * len(entries)] = b"".join(entries)
    return bytes(out)


def test_the_root_directory_ends_at_its_end_marker_and_at_its_last_entry(images):
    label = entry(b"ROOTLABEL", 0x08)
    after_end = fat16_root(images[16], [entry(b"README  TXT", 0x01), bytes(32), label])
    assert identify(reader(after_end), len(after_end))[1] == "EDGES"
    blank_deleted = fat16_root(images[16], [bytes([0xE5]) + bytes(31), label])
    assert identify(reader(blank_deleted), len(blank_deleted))[1] == "ROOTLABEL"
    at, bpb = root_directory(images[16])
    full = fat16_root(images[16], [], fill=entry(b"README  TXT", 0x01))
    info = probe_partition(reader(full), len(full))
    assert not info.whole and info.label == "EDGES"
    last = bytearray(full)
    last[at + 32 * (bpb.root_entries - 1) : at + 32 * bpb.root_entries] = label
    assert identify(reader(bytes(last)), len(last))[1] == "ROOTLABEL"
    # What follows the root directory (the first cluster) is not read as part of it.
    data = bpb.data_start * bpb.bytes_per_sector
    past = bytearray(full)
    past[data : data + 32] = label
    assert identify(reader(bytes(past)), len(past))[1] == "EDGES"


def test_damaged_geometry_is_refused_with_its_reason(images):
    boot = images[16]
    bpb = fat._Bpb(boot[:512])
    size = len(boot)
    with pytest.raises(fat.FsMapError) as err:
        fat.probe(reader(boot), size - 512)
    assert str(err.value) == (f"FAT16 is larger than its partition ({size} bytes in {size - 512}); "
                              "the partition looks truncated")
    spc = bpb.sectors_per_cluster
    assert spc >= 2
    short = with_total(boot, bpb.data_start + spc - 1) + boot[512:]       # less than one cluster of data
    with pytest.raises(fat.FsMapError) as err:
        fat.probe(reader(short), size)
    assert str(err.value) == "FAT12 boot sector is damaged (no data area)"
    one = with_total(boot, bpb.data_start + spc) + boot[512:]             # exactly one cluster: mapped
    info = fat.probe(reader(one), size)
    assert info.fs == "vfat" and info.used[-1] == (0, size)


def test_a_fat_exactly_as_large_as_its_clusters_need_is_enough(images):
    boot = images[16]
    bpb = fat._Bpb(boot[:512])
    bps, spc = bpb.bytes_per_sector, bpb.sectors_per_cluster
    clusters = bpb.fat_size * bps // 2 - 2                 # 16-bit entries fill every FAT sector
    image = with_total(boot, bpb.data_start + clusters * spc) + boot[512:]
    size = (bpb.data_start + clusters * spc) * bps
    info = fat.probe(reader(image), size)                   # past the image, the reader gives nothing: zeros are free
    assert info.used[0] == (0, bpb.data_start * bps)
    one_more = with_total(boot, bpb.data_start + (clusters + 1) * spc) + boot[512:]
    with pytest.raises(fat.FsMapError) as err:
        fat.probe(reader(one_more), size + spc * bps)
    assert str(err.value) == "FAT16 boot sector is damaged (FAT too small for its clusters)"
