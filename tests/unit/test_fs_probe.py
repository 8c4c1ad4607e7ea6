"""The dispatcher: swap keeps only its header, foreign and unknown content is imaged whole
with a plain reason, and no content whatsoever makes it raise."""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from recovery.fs import FsInfo, identify, merge_ranges, pread_reader, probe_partition
from tests import fsimages

MiB = fsimages.MiB


def probe_file(path) -> FsInfo:
    fd = os.open(path, os.O_RDONLY)
    try:
        return probe_partition(pread_reader(fd), os.path.getsize(path))
    finally:
        os.close(fd)


def identify_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return identify(pread_reader(fd), os.path.getsize(path))
    finally:
        os.close(fd)


def write_at(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_swap_keeps_only_its_header_page(tmp_path):
    image = fsimages.make_swap(tmp_path / "swap.img", 16 * MiB, label="myswap")
    info = probe_file(image)
    assert info.fs == "swap" and not info.whole and info.used == ((0, 4096),)
    uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", str(image)],
                          capture_output=True, text=True).stdout.strip()
    assert (info.label, info.uuid) == ("myswap", uuid)
    assert identify_file(image) == ("swap", "myswap", uuid)


def test_swap_holding_a_hibernation_image_is_imaged_whole(tmp_path):
    image = fsimages.make_swap(tmp_path / "swap.img", 16 * MiB)
    write_at(image, 4096 - 10, b"S1SUSPEND\0")
    info = probe_file(image)
    assert info.whole and info.used == ((0, 16 * MiB),) and "hibernation" in info.warnings[0]


@pytest.mark.parametrize("kind,offset,signature,reason", [
    ("crypto_LUKS", 0, b"LUKS\xba\xbe\x00\x02", "LUKS-encrypted"),
    ("BitLocker", 0, b"\xebR\x90-FVE-FS-", "BitLocker-encrypted"),
    ("LVM2_member", 512, b"LABELONE" + bytes(16) + b"LVM2 001" + b"abcdefghijklmnopqrstuvwxyz012345", "LVM"),
    ("exfat", 0, b"\xebv\x90EXFAT   ", "exFAT"),
    ("xfs", 0, b"XFSB", "XFS"),
    ("btrfs", 0x10040, b"_BHRfS_M", "btrfs"),
])
def test_foreign_signatures_are_imaged_whole(tmp_path, kind, offset, signature, reason):
    image = tmp_path / "part.img"
    fsimages.fill_garbage(image, 4 * MiB)
    write_at(image, offset, signature)
    info = probe_file(image)
    assert info.fs == kind and info.whole and info.used == ((0, 4 * MiB),)
    assert len(info.warnings) == 1 and reason in info.warnings[0]
    assert info.warnings[0].endswith("; imaged whole (every block copied)")
    assert identify_file(image)[0] == kind


def test_luks_wins_over_a_stale_ext4_superblock(tmp_path):
    tree = fsimages.make_tree(tmp_path / "tree")
    image = fsimages.make_ext4(tmp_path / "fs.img", 32 * MiB, tree)
    write_at(image, 0, b"LUKS\xba\xbe\x00\x01")
    assert probe_file(image).fs == "crypto_LUKS"


@pytest.mark.parametrize("content", ["zeros", "random", "tiny", "empty"])
def test_unknown_content_is_imaged_whole(tmp_path, content):
    image = tmp_path / "part.img"
    size = {"zeros": 4 * MiB, "random": 4 * MiB, "tiny": 700, "empty": 0}[content]
    if content == "random" or content == "tiny":
        fsimages.fill_garbage(image, size, seed=5)
    else:
        with open(image, "wb") as f:
            f.truncate(size)
    info = probe_file(image)
    assert info.whole and info.fs == "unknown"
    assert info.used == merge_ranges([(0, size)], size)
    assert "no known filesystem" in info.warnings[0]
    assert identify_file(image) is None


def test_probe_never_raises_on_corrupted_metadata(tmp_path):
    tree = fsimages.make_tree(tmp_path / "tree")
    images = {
        "ext4": fsimages.make_ext4(tmp_path / "e.img", 24 * MiB, tree, block_size=1024),
        "vfat": fsimages.make_vfat(tmp_path / "f.img", 24 * MiB, tree, fat=16),
        "ntfs": fsimages.make_ntfs(tmp_path / "n.img", 24 * MiB, tree, mount=False),
    }
    # Where parsing happens: boot sector, superblock, descriptors, FATs, the first MFT records.
    hot = {"ext4": 16384, "vfat": 16384, "ntfs": 32768}
    rng = random.Random(3)
    for name, image in images.items():
        pristine = image.read_bytes()
        for _ in range(40):
            damaged = bytearray(pristine)
            for _ in range(rng.randrange(1, 40)):
                damaged[rng.randrange(0, hot[name])] = rng.randrange(256)
            image.write_bytes(bytes(damaged))
            info = probe_file(image)
            size = len(pristine)
            assert info.used and info.used[-1][0] + info.used[-1][1] <= size
            if info.whole:
                assert info.used == ((0, size),) and info.warnings
            identify_file(image)


def test_reads_never_leave_the_partition(tmp_path):
    # A 32 KiB partition followed by a btrfs superblock and a swap signature that belong to
    # the next partition: a reader that does not clip would let them leak in.
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(128 * 1024)
    write_at(image, 0x10040, b"_BHRfS_M")
    write_at(image, 65536 - 10, b"SWAPSPACE2")
    seen = []
    fd = os.open(image, os.O_RDONLY)
    try:
        raw = pread_reader(fd)

        def spy(offset, length):
            seen.append((offset, length))
            return raw(offset, length)

        info = probe_partition(spy, 32 * 1024)
        assert identify(spy, 32 * 1024) is None
    finally:
        os.close(fd)
    assert info.fs == "unknown" and info.used == ((0, 32 * 1024),)
    assert seen and all(offset + length <= 32 * 1024 for offset, length in seen)


def test_real_exfat_is_imaged_whole_with_its_serial(tmp_path):
    image = tmp_path / "exfat.img"
    fsimages.fill_garbage(image, 32 * MiB)
    subprocess.run(["mkfs.exfat", str(image)], capture_output=True, check=True)
    info = probe_file(image)
    uuid = subprocess.run(["blkid", "-s", "UUID", "-o", "value", str(image)],
                          capture_output=True, text=True).stdout.strip()
    assert info.fs == "exfat" and info.whole and info.uuid == uuid
    assert info.warnings == ("exFAT (no used-block map for it yet); imaged whole (every block copied)",)


def test_identify_is_cheap_and_agrees_with_probe(tmp_path):
    tree = fsimages.make_tree(tmp_path / "tree")
    images = [
        fsimages.make_ext4(tmp_path / "e.img", 64 * MiB, tree),
        fsimages.make_vfat(tmp_path / "f.img", 64 * MiB, tree),
        fsimages.make_ntfs(tmp_path / "n.img", 64 * MiB, tree, mount=False),
        fsimages.make_swap(tmp_path / "s.img", 8 * MiB),
    ]
    for image in images:
        read_bytes = []
        fd = os.open(image, os.O_RDONLY)
        try:
            raw = pread_reader(fd)

            def counting(offset, length):
                data = raw(offset, length)
                read_bytes.append(len(data))
                return data

            found = identify(counting, os.path.getsize(image))
        finally:
            os.close(fd)
        info = probe_file(image)
        assert found == (info.fs, info.label, info.uuid)
        assert sum(read_bytes) <= 128 * 1024, (image.name, sum(read_bytes))
