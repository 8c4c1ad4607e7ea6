"""grow_filesystem on real filesystems in partitions bigger than they are (a smaller one is the shrink
step's, tests/loop/test_shrink.py): every file kept, fsck clean, new size reached; on partition
devices, whole-disk devices and image files."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest

from recovery.apply.resize import grow_filesystem
from recovery.errors import ToolError
from tests.conftest import run
from tests.diskimages import BASIC_DATA, LINUX_FS, LINUX_SWAP, MiB, PartSpec, make_disk

pytestmark = pytest.mark.loop


def file_tree(root: Path, seed: int = 1) -> dict[str, str]:
    rng = random.Random(seed)
    digests = {}
    for i in range(30):
        rel = f"d{i % 4}/f{i:02d}.bin" if i % 3 else f"top{i:02d} é.txt"
        data = rng.randbytes(rng.randrange(0, 300_000))
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel.startswith("lost+found") or rel.startswith("System Volume Information"):
                continue
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_ext4(tmp_path: Path, size: int, files: bool = True) -> tuple[Path, dict]:
    tree = tmp_path / "tree"
    tree.mkdir()
    digests = file_tree(tree) if files else {}
    fs = tmp_path / "fs.ext4"
    with open(fs, "wb") as f:
        f.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-U", "4f0c3b1e-2d7a-4e55-9a31-0c5f3b2a9d11", "-L", "ROOT", "-d", tree, fs)
    return fs, digests


def ext_size(dev_or_spec: str) -> int:
    info = {}
    for line in run("dumpe2fs", "-h", dev_or_spec).stdout.splitlines():
        k, _, v = line.partition(":")
        info[k.strip()] = v.strip()
    return int(info["Block count"]) * int(info["Block size"])


def mounted_digests(dev: str, tmp_path: Path, fstype: str | None = None) -> dict[str, str]:
    mnt = tmp_path / "mnt"
    mnt.mkdir(exist_ok=True)
    if fstype == "ntfs":
        run("ntfs-3g", "-o", "ro", dev, mnt)
    else:
        run("mount", "-o", "ro", dev, mnt)
    try:
        return tree_digests(mnt)
    finally:
        run("umount", mnt)


def entry_of(layout, number):
    return next(p for p in layout.partitions if p.number == number)


# ----------------------------------------------------------------------------- ext4


@pytest.mark.parametrize("how", ["image", "partition", "disk"])
def test_ext4_grows_to_fill_its_partition(tmp_path, loops, how):
    fs, digests = make_ext4(tmp_path, 48 * MiB)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 256 * MiB, "gpt", [PartSpec(8 * MiB, LINUX_FS), PartSpec(160 * MiB, LINUX_FS, content=str(fs))])
    entry = entry_of(layout, 2)
    if how == "image":
        target = str(img)
    else:
        disk = loops.attach(img)
        target = f"{disk}p2" if how == "partition" else disk
    note = grow_filesystem(target, entry, "ext4", 48 * MiB, None, None)
    assert "grown from 48.0 MiB to 160.0 MiB" in note and "checked clean" in note
    if how == "image":
        disk = loops.attach(img)
    dev = f"{disk}p2"
    assert ext_size(dev) == 160 * MiB
    assert subprocess.run(["e2fsck", "-f", "-n", dev], capture_output=True).returncode == 0
    assert run("blkid", "-o", "value", "-s", "UUID", dev).stdout.strip() == "4f0c3b1e-2d7a-4e55-9a31-0c5f3b2a9d11"
    assert mounted_digests(dev, tmp_path) == digests
    if how == "image":
        assert not any(str(img) in line for line in run("losetup", "-a").stdout.splitlines()
                       if disk not in line), "the loop device used for growing was not detached"


def test_ext4_on_a_4kn_disk(tmp_path, loops):
    fs, digests = make_ext4(tmp_path, 32 * MiB)
    img = tmp_path / "disk4k.img"
    layout = make_disk(img, 128 * MiB, "gpt", [PartSpec(96 * MiB, LINUX_FS, content=str(fs))], sector_size=4096)
    disk = loops.attach(img, sector_size=4096)
    note = grow_filesystem(disk, entry_of(layout, 1), "ext4", 32 * MiB, None, None)
    assert "grown" in note
    assert ext_size(f"{disk}p1") == 96 * MiB
    assert mounted_digests(f"{disk}p1", tmp_path) == digests


def test_damaged_ext4_raises_tool_error_saying_the_state(tmp_path, loops):
    fs, _ = make_ext4(tmp_path, 32 * MiB, files=False)
    with open(fs, "r+b") as f:      # wipe the only superblock: e2fsck cannot repair that
        f.seek(0)
        f.write(bytes(64 * 1024))
    img = tmp_path / "disk.img"
    layout = make_disk(img, 96 * MiB, "gpt", [PartSpec(64 * MiB, LINUX_FS, content=str(fs))])
    with pytest.raises(ToolError) as exc:
        grow_filesystem(str(img), entry_of(layout, 1), "ext4", 32 * MiB, None, None)
    msg = str(exc.value)
    assert "e2fsck could not repair" in msg and "old size of 32.0 MiB" in msg and "\n" not in msg


# ----------------------------------------------------------------------------- NTFS


def test_ntfs_grows_and_keeps_every_file(tmp_path, loops):
    fs = tmp_path / "fs.ntfs"
    with open(fs, "wb") as f:
        f.truncate(40 * MiB)
    run("mkntfs", "-q", "-F", "-f", "-L", "Windows", fs)
    mnt = tmp_path / "fill"
    mnt.mkdir()
    run("ntfs-3g", fs, mnt)
    try:
        digests = file_tree(mnt, seed=5)
    finally:
        run("umount", mnt)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 192 * MiB, "gpt", [PartSpec(128 * MiB, BASIC_DATA, content=str(fs))])
    entry = entry_of(layout, 1)
    note = grow_filesystem(str(img), entry, "ntfs", 40 * MiB, None, None)
    assert "NTFS grown from 40.0 MiB to 128.0 MiB" in note
    with open(img, "rb") as f:
        f.seek(entry.start)
        boot = f.read(512)
    bytes_per_sector = struct.unpack_from("<H", boot, 0x0B)[0]
    total_sectors = struct.unpack_from("<Q", boot, 0x28)[0]
    assert (total_sectors + 1) * bytes_per_sector > 127 * MiB      # NTFS keeps its backup boot sector last
    disk = loops.attach(img)
    check = subprocess.run(["ntfsfix", "-n", f"{disk}p1"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert mounted_digests(f"{disk}p1", tmp_path, "ntfs") == digests


@pytest.mark.parametrize("fs", ["ext4", "ntfs"])
def test_a_smaller_partition_is_left_to_the_shrink_step(tmp_path, fs):
    # shrinking needs the data beyond the new end: recovery.apply.shrink (tests/loop/test_shrink.py)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 64 * MiB, "gpt", [PartSpec(32 * MiB, BASIC_DATA)])
    with pytest.raises(ToolError, match=f"partition 1 \\({fs}\\) is smaller than its saved filesystem"):
        grow_filesystem(str(img), entry_of(layout, 1), fs, 40 * MiB, None, None)


# ----------------------------------------------------------------------------- swap, FAT, not root


def test_swap_is_recreated_with_its_uuid_and_label(tmp_path, loops):
    sw = tmp_path / "swap"
    with open(sw, "wb") as f:
        f.truncate(16 * MiB)
    uuid = "0b7d4d4e-8c1c-4a3e-9d0b-7c9e1e2f3a4b"
    run("mkswap", "-U", uuid, "-L", "SWAP", sw)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 96 * MiB, "gpt", [PartSpec(64 * MiB, LINUX_SWAP, content=str(sw))])
    note = grow_filesystem(str(img), entry_of(layout, 1), "swap", 16 * MiB, uuid, "SWAP")
    assert "swap re-created over 64.0 MiB" in note
    disk = loops.attach(img)
    dev = f"{disk}p1"
    probe = run("blkid", "-p", "-o", "export", dev).stdout
    assert f"UUID={uuid}" in probe and "LABEL=SWAP" in probe and "TYPE=swap" in probe
    with open(dev, "rb") as f:
        f.seek(1024 + 4)
        last_page = struct.unpack("<I", f.read(4))[0]
    assert (last_page + 1) * 4096 == 64 * MiB


def test_fat_is_left_as_it_is_with_a_note(tmp_path):
    fat = tmp_path / "esp"
    with open(fat, "wb") as f:
        f.truncate(32 * MiB)
    run("mkfs.vfat", "-F", "32", "-s", "1", fat)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 96 * MiB, "gpt", [PartSpec(64 * MiB, LINUX_FS, content=str(fat))])
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    note = grow_filesystem(str(img), entry_of(layout, 1), "vfat", 32 * MiB, None, None)
    assert "keeps its size of 32.0 MiB in the 64.0 MiB partition" in note
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before


def test_not_root_leaves_an_image_alone_with_a_note(tmp_path, monkeypatch):
    fs, _ = make_ext4(tmp_path, 32 * MiB, files=False)
    img = tmp_path / "disk.img"
    layout = make_disk(img, 96 * MiB, "gpt", [PartSpec(64 * MiB, LINUX_FS, content=str(fs))])
    before = hashlib.sha256(img.read_bytes()).hexdigest()
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    note = grow_filesystem(str(img), entry_of(layout, 1), "ext4", 32 * MiB, None, None)
    assert "left at its old size of 32.0 MiB" in note and "needs root" in note
    assert hashlib.sha256(img.read_bytes()).hexdigest() == before
