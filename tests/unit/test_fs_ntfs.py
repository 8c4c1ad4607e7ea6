"""NTFS used-block map on mkntfs images populated with ntfscp (no root needed here; the full
tree through an ntfs-3g mount is in tests/loop/test_fs_ntfs.py)."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from recovery.fs import FsInfo, ntfs, pread_reader, probe_partition
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


def ntfscluster_info(image) -> dict[str, int]:
    out = subprocess.run(["ntfscluster", "-i", str(image)], capture_output=True, text=True).stdout
    return {k.strip(): int(v) for k, v in re.findall(r"^(.+?)\s*:\s*(\d+)$", out, re.M)}


def gaps(ranges, start: int, end: int) -> list[tuple[int, int]]:
    holes, pos = [], start
    for a, n in ranges:
        if a > pos:
            holes.append((pos, min(a, end)))
        pos = max(pos, a + n)
    if pos < end:
        holes.append((pos, end))
    return [(a, z) for a, z in holes if a < z]


def owners_of(image, first_cluster: int, last_cluster: int) -> list[str]:
    """Files ntfscluster finds in a cluster range (it walks every file's runs)."""
    out = subprocess.run(["ntfscluster", "-c", f"{first_cluster}-{last_cluster}", str(image)],
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.startswith("Inode ")]


def assert_map_agrees_with_ntfs_tools(image, info):
    facts = ntfscluster_info(image)
    cluster = facts["bytes per cluster"]
    clusters = facts["bytes per volume"] // cluster
    used_clusters = clusters - facts["clusters of free space"]
    in_volume = sum(min(a + n, clusters * cluster) - a for a, n in info.used if a < clusters * cluster)
    assert in_volume == used_clusters * cluster
    # No file owns a cluster the map leaves out.
    for a, z in gaps(info.used, 0, clusters * cluster):
        assert owners_of(image, a // cluster, z // cluster - 1) == [], (a, z)


def test_top_level_files_map_and_identity(tmp_path, tree):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 64 * MiB, tree, mount=False, label="Windows Data")
    info = probe_file(image)
    assert info.fs == "ntfs" and not info.whole and info.warnings == ()
    assert_map_agrees_with_ntfs_tools(image, info)
    # The backup boot sector, in the partition's last sector, is kept.
    assert info.used[-1][0] + info.used[-1][1] == 64 * MiB
    assert info.used_bytes < 20 * MiB
    assert fsimages.free_space_garbage(image, info.used) > 0.9
    fields = {key: subprocess.run(["blkid", "-s", key, "-o", "value", str(image)],
                                  capture_output=True, text=True).stdout.strip() for key in ("LABEL", "UUID")}
    assert (info.label, info.uuid) == (fields["LABEL"], fields["UUID"]) == ("Windows Data", fields["UUID"])
    assert re.fullmatch(r"[0-9A-F]{16}", info.uuid)
    fd = os.open(image, os.O_RDONLY)
    try:
        assert ntfs.identify(pread_reader(fd), 64 * MiB) == ("ntfs", "Windows Data", info.uuid)
    finally:
        os.close(fd)


def test_copy_of_mapped_ranges_passes_ntfsfix_and_needs_the_backup_boot_sector(tmp_path, tree):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 48 * MiB, tree, mount=False)
    info = probe_file(image)
    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ntfs", copy)
    for name in ("big.bin", "readme.txt", "sparse.img"):
        original = subprocess.run(["ntfscat", str(image), name], capture_output=True, check=True).stdout
        assert subprocess.run(["ntfscat", str(copy), name], capture_output=True, check=True).stdout == original
        assert original == (tree / name).read_bytes()
    # Without the last sector (the backup boot sector) ntfsfix is no longer satisfied.
    without_tail = [(a, n) for a, n in info.used if a + n < 48 * MiB]
    broken = fsimages.copy_ranges(image, without_tail, tmp_path / "broken.img")
    assert not fsimages.fsck_clean("ntfs", broken)


def _poke_volume_flags(image, flags: int) -> None:
    """Set $Volume's VOLUME_INFORMATION flags by walking MFT record 3 by hand."""
    with open(image, "r+b") as f:
        boot = f.read(512)
        cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
        mft = int.from_bytes(boot[0x30:0x38], "little") * cluster
        per = int.from_bytes(boot[0x40:0x41], "little", signed=True)
        record_size = per * cluster if per > 0 else 1 << -per
        f.seek(mft + 3 * record_size)
        record = f.read(record_size)
        assert record[:4] == b"FILE"
        off = int.from_bytes(record[0x14:0x16], "little")
        while int.from_bytes(record[off:off + 4], "little") != 0x70:
            off += int.from_bytes(record[off + 4:off + 8], "little")
        value = off + int.from_bytes(record[off + 0x14:off + 0x16], "little")
        assert (value + 0xA) % 512 < 510          # not a fixup-protected position
        f.seek(mft + 3 * record_size + value + 0xA)
        f.write(flags.to_bytes(2, "little"))


def test_dirty_volume_warns(tmp_path):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    _poke_volume_flags(image, ntfs.VOLUME_DIRTY)
    info = probe_file(image)
    assert not info.whole and info.warnings == (ntfs.DIRTY_WARNING,)
    assert "not shut down cleanly" in info.warnings[0]


@pytest.mark.parametrize("magic", [b"HIBR", b"hibr", b"WAKE", b"wake"])
def test_hibernated_volume_warns(tmp_path, magic):
    hiberfil = tmp_path / "hiberfil.sys"
    hiberfil.write_bytes(magic + os.urandom(64 * 1024))
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    subprocess.run(["ntfscp", "-f", str(image), str(hiberfil), "hiberfil.sys"], capture_output=True, check=True)
    info = probe_file(image)
    assert info.warnings == (
        "NTFS was not shut down cleanly (Windows Fast Startup or hibernation); "
        "the image holds the state as Windows left it",)


def test_cleared_hiberfil_does_not_warn(tmp_path):
    hiberfil = tmp_path / "hiberfil.sys"
    hiberfil.write_bytes(bytes(64 * 1024))        # what Windows leaves after a full shutdown
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    subprocess.run(["ntfscp", "-f", str(image), str(hiberfil), "hiberfil.sys"], capture_output=True, check=True)
    assert probe_file(image).warnings == ()


def test_damaged_mft_falls_back_to_whole(tmp_path):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    with open(image, "r+b") as f:
        boot = f.read(512)
        cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
        f.seek(int.from_bytes(boot[0x30:0x38], "little") * cluster)
        f.write(b"BAAD")
    info = probe_file(image)
    assert info.whole and info.fs == "ntfs" and info.used == ((0, 32 * MiB),)
    assert "damaged" in info.warnings[0] and info.warnings[0].endswith("imaged whole (every block copied)")


def test_torn_record_is_detected(tmp_path):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    with open(image, "r+b") as f:
        boot = f.read(512)
        cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
        f.seek(int.from_bytes(boot[0x30:0x38], "little") * cluster + 6 * 1024 + 510)
        f.write(b"\x12\x34")                      # breaks $Bitmap record's update sequence
    info = probe_file(image)
    assert info.whole and "update sequence" in info.warnings[0]


def test_truncated_partition_falls_back_to_whole(tmp_path):
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB)
    os.truncate(image, 24 * MiB)
    info = probe_file(image)
    assert info.whole and "larger than its partition" in info.warnings[0]


@pytest.mark.parametrize("options", [
    ("-c", "512"),                   # 1 KiB MFT records span two clusters
    ("-c", "65536"),                 # a few big clusters
    ("-s", "4096", "-c", "4096"),    # 4Kn sectors
])
def test_other_geometries(tmp_path, tree, options):
    image = tmp_path / "fs.img"
    fsimages.fill_garbage(image, 64 * MiB)
    subprocess.run(["mkntfs", "-F", "-Q", "-q", *options, str(image)], capture_output=True, check=True)
    for name in ("big.bin", "readme.txt"):
        subprocess.run(["ntfscp", "-f", str(image), str(tree / name), name], capture_output=True, check=True)
    info = probe_file(image)
    assert info.fs == "ntfs" and not info.whole, info.warnings
    assert info.block_size == int(options[options.index("-c") + 1])
    assert_map_agrees_with_ntfs_tools(image, info)
    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ntfs", copy)
    got = subprocess.run(["ntfscat", str(copy), "big.bin"], capture_output=True, check=True).stdout
    assert got == (tree / "big.bin").read_bytes()
