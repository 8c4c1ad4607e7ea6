"""The pieces every filesystem map shares (recovery/fs/__init__.py): ranges merged and clipped,
the space past a filesystem's end, a partition imaged whole and why, readers that never leave
the partition, boot sectors that look like an MBR, and the dispatcher's line between damaged
content (imaged whole, said plainly) and a drive that fails (raised, never hidden)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from recovery.errors import DiskError
from recovery.fs import (LARGE_TAIL, FsInfo, boot_sector_filesystem, clipped, identify, merge_ranges,
                         pread_reader, probe_partition, tail_after, whole)
from tests import fsimages

MiB = fsimages.MiB


def test_ranges_are_sorted_clipped_and_merged_where_they_touch():
    ranges = [(30, 10), (10, 5), (4, 2), (0, 4), (11, 1), (50, 0), (40, 5), (20, 0)]
    assert merge_ranges(ranges, 35) == ((0, 6), (10, 5), (30, 5))
    assert merge_ranges([(0, 4), (5, 1)], 100) == ((0, 4), (5, 1))          # a gap of one byte stays
    assert merge_ranges([], 10) == () and merge_ranges([(0, 10)], 0) == ()


def test_an_fsinfo_says_nothing_unless_told_and_cannot_be_changed():
    info = FsInfo("ext2/3/4")
    assert (info.label, info.uuid, info.block_size, info.used, info.warnings, info.whole) == (
        None, None, 4096, (), (), False)
    assert FsInfo("x", used=((0, 10), (20, 5))).used_bytes == 15
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.label = "changed"


def test_the_space_past_a_filesystem_is_kept_and_a_large_one_said():
    assert tail_after("ext4", 100, 100) == ([], []) and tail_after("ext4", 200, 100) == ([], [])
    assert tail_after("ext4", 100, 150) == ([(100, 50)], [])
    # Said from 64 MiB on (README: a shrunk filesystem's tail is copied as it is).
    assert LARGE_TAIL == 64 * MiB
    assert tail_after("ext4", 0, 64 * MiB - 1) == ([(0, 64 * MiB - 1)], [])
    assert tail_after("ntfs", MiB, 65 * MiB) == (
        [(MiB, 64 * MiB)], ["ntfs ends 64 MiB before its partition does; that space is copied as it is"])


def test_a_partition_imaged_whole_says_why():
    assert whole("crypto_LUKS", 4096, "LUKS-encrypted", "vault", "u-u") == FsInfo(
        "crypto_LUKS", "vault", "u-u", used=((0, 4096),),
        warnings=("LUKS-encrypted; imaged whole (every block copied)",), whole=True)
    assert whole("unknown", 0, "empty").used == ()


def test_a_clipped_reader_never_reads_outside_the_partition():
    seen = []

    def raw(offset, length):
        seen.append((offset, length))
        return bytes(length)

    read = clipped(raw, 100)
    assert len(read(90, 20)) == 10 and seen == [(90, 10)]
    assert read(99, 5) == bytes(1) and seen.pop() == (99, 1)
    assert read(100, 5) == b"" and read(120, 5) == b"" and read(-1, 5) == b"" and read(0, 0) == b""
    assert seen == [(90, 10)]


def test_a_pread_reader_reads_its_window_of_the_file(tmp_path):
    path = tmp_path / "f"
    data = os.urandom(10_000)
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole_file = pread_reader(fd)
        assert whole_file(0, 20_000) == data and whole_file(9_990, 100) == data[9_990:]
        window = pread_reader(fd, 1000, 500)
        assert window(0, 10) == data[1000:1010] and window(490, 100) == data[1490:1500]
        assert window(7, 1) == data[1007:1008] and window(499, 5) == data[1499:1500]
        assert window(500, 1) == b"" and window(600, 1) == b"" and window(-1, 5) == b"" and window(5, 0) == b""
        tail = pread_reader(fd, 9_000)
        assert tail(0, 5_000) == data[9_000:]
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def vfat_image(tmp_path_factory):
    return fsimages.make_vfat(tmp_path_factory.mktemp("fat") / "f.img", 16 * MiB, fat=16, label="DISPATCH").read_bytes()


def reader(buf: bytes):
    return lambda offset, length: bytes(buf[offset : offset + length])


def failing_after(buf: bytes, limit: int, error):
    """A reader of `buf` that raises `error` for any read reaching past byte `limit`."""
    def read(offset, length):
        if offset + length > limit:
            raise error
        return bytes(buf[offset : offset + length])
    return read


def test_metadata_that_breaks_a_map_is_imaged_whole_with_the_error_named(vfat_image):
    size = len(vfat_image)
    info = probe_partition(failing_after(vfat_image, 512, ValueError("bad")), size)
    assert (info.fs, info.label, info.whole, info.used) == ("vfat", "DISPATCH", True, ((0, size),))
    assert info.uuid == identify(reader(vfat_image), size)[2]
    assert info.warnings == ("vfat metadata is damaged (ValueError: bad); imaged whole (every block copied)",)
    # When even the signature cannot be read back, the module's own name stands in.
    info = probe_partition(failing_after(vfat_image, 512, KeyError("bad")), size)
    assert (info.fs, info.label, info.uuid) == ("fat", None, None)
    assert info.warnings == ("fat metadata is damaged (KeyError: 'bad'); imaged whole (every block copied)",)


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), DiskError("the disk went away")])
def test_a_drive_that_fails_is_never_taken_for_damaged_content(vfat_image, error):
    size = len(vfat_image)
    for limit in (0, 512):
        with pytest.raises(type(error)):
            probe_partition(failing_after(vfat_image, limit, error), size)
        with pytest.raises(type(error)):
            identify(failing_after(vfat_image, limit, error), size)
    with pytest.raises(type(error)):
        boot_sector_filesystem(failing_after(vfat_image, 0, error), size)


def test_a_boot_sector_is_named_when_its_filesystem_fits(vfat_image, tmp_path):
    size = len(vfat_image)
    assert boot_sector_filesystem(reader(vfat_image), size) == "vfat"
    assert boot_sector_filesystem(reader(vfat_image), size - 1) is None
    ntfs = fsimages.make_ntfs(tmp_path / "n.img", 8 * MiB).read_bytes()
    assert boot_sector_filesystem(reader(ntfs), len(ntfs)) == "ntfs"
    assert boot_sector_filesystem(reader(bytes(4096)), 4096) is None
    broken = bytearray(vfat_image[:4096])
    broken[11:13] = (3).to_bytes(2, "little")            # 3 bytes per sector: no sane BPB
    assert boot_sector_filesystem(reader(bytes(broken)), size) is None


def test_content_nobody_knows_is_imaged_whole_and_said_so():
    info = probe_partition(reader(bytes(8192)), 8192)
    assert (info.fs, info.whole, info.used) == ("unknown", True, ((0, 8192),))
    assert info.warnings == ("no known filesystem or signature found; imaged whole (every block copied)",)


def test_a_pread_reader_joins_the_short_reads_of_a_file_that_gives_a_page_at_a_time():
    # /proc/kallsyms answers each read with at most a page or so, long before its end: the
    # reader asks again until it has what was asked for.
    with open("/proc/kallsyms", "rb") as f:
        want = f.read(20_000)                 # a buffered read also asks until it has it all
    fd = os.open("/proc/kallsyms", os.O_RDONLY)
    try:
        assert 0 < len(os.pread(fd, 20_000, 0)) < 20_000 == len(want)       # it does read short
        assert pread_reader(fd)(0, 20_000) == want
    finally:
        os.close(fd)


def test_a_module_whose_check_breaks_does_not_hide_a_filesystem_a_later_one_knows(tmp_path):
    # An ext4 whose boot block (bytes 0-1023, unused by ext4) still holds a broken NTFS boot
    # sector: 0 sectors per cluster, on which the NTFS check fails with an exception of its own.
    from recovery.fs import FsMapError, ntfs

    image = fsimages.make_ext4(tmp_path / "e.img", 8 * MiB, label="after-ntfs")
    data = bytearray(image.read_bytes())
    sector = bytearray(512)
    sector[3:11] = b"NTFS    "
    sector[0x0B:0x0D] = (512).to_bytes(2, "little")
    sector[0x28:0x30] = (16384).to_bytes(8, "little")
    sector[0x40] = 0xF6                       # 1 KiB MFT records
    sector[510:512] = b"\x55\xaa"
    data[:512] = sector
    with pytest.raises(Exception) as err:
        ntfs.identify(reader(data), len(data))
    assert not isinstance(err.value, (FsMapError, OSError, DiskError))
    assert identify(reader(data), len(data))[:2] == ("ext4", "after-ntfs")
