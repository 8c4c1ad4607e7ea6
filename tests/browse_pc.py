"""A PC to browse: a GPT disk with a FAT32 ESP, an ext4 Linux root, an NTFS Windows volume
holding a user's profile, and swap; backed up with the real CLI.

What each filesystem holds was written with the real tools (mkfs -d, mcopy, an ntfs-3g mount)
and read back by them before the backup (mtools, the host's own walk, ntfs-3g): `expected`
maps each partition number to {relative path: "sha256:..." | "dir" | "-> target"}.

The trees hold what makes copying out hard: sparse files, hard links, names of 255 bytes,
non-ASCII names, a folder 40 levels deep; on NTFS a Windows profile (Desktop, Documents,
AppData, NTUSER.DAT), files NTFS compresses, names no FAT or exFAT drive can hold
(`Taxes 2025: final?.pdf`) and a name of 200 non-ASCII characters (400 bytes in UTF-8, more
than any Linux filesystem takes).
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import lifeboat

MiB = 1024 * 1024
NTFS_COMPRESSED = 0x800
LONG_NTFS_NAME = "é" * 200 + ".txt"
UNSAFE_NAME = "Taxes 2025: final?.pdf"
COMPRESSED_DIR = "Users/Ann/Documents/Archive"
DEEP = "/".join(f"level{i:02d}" for i in range(40))


@dataclass
class BrowsePC:
    disk: Path
    repo: Path
    expected: dict[int, dict[str, str]]
    images: dict[int, Path]          # the filesystems as they were before the backup


def linux_tree(root: Path) -> Path:
    fi.make_tree(root, seed=15)
    (root / ("n" * 251 + ".txt")).write_text("a name of 255 bytes\n")
    (root / ("ü" * 125 + ".txt")).write_text("a name of 254 bytes, non-ASCII\n")
    deep = root / DEEP
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("forty levels down\n")
    with open(root / "sparse-big.img", "wb") as f:        # 64 MiB apparent, 2 MiB of data
        f.seek(31 * MiB)
        f.write(random.Random(3).randbytes(2 * MiB))
        f.truncate(64 * MiB)
    return root


def esp_tree(root: Path) -> Path:
    rng = random.Random(5)
    boot = root / "EFI" / "BOOT"
    boot.mkdir(parents=True)
    (boot / "BOOTX64.EFI").write_bytes(rng.randbytes(700_000))
    ms = root / "EFI" / "Microsoft" / "Boot"
    ms.mkdir(parents=True)
    (ms / "BCD").write_bytes(rng.randbytes(32768))
    (root / "A long file name on FAT.txt").write_text("long name\n")
    return root


def windows_profile(mnt: Path) -> None:
    """Write a Windows user's profile into a mounted NTFS (ntfs-3g)."""
    rng = random.Random(7)
    ann = mnt / "Users" / "Ann"
    for d in ("Desktop", "Documents", "Downloads", "Pictures/Holiday 2025", "Music",
              "AppData/Local/Temp", "AppData/Roaming/Mozilla/Firefox/Profiles/x1.default"):
        (ann / d).mkdir(parents=True, exist_ok=True)
    (ann / "NTUSER.DAT").write_bytes(rng.randbytes(262_144))
    (ann / "Desktop" / "Shopping list.txt").write_text("milk\r\nbread\r\n")
    (ann / "Documents" / "Letter to the bank.docx").write_bytes(rng.randbytes(40_000))
    (ann / "Documents" / "Résumé – Ann Müller.docx").write_bytes(rng.randbytes(30_000))
    (ann / "Documents" / UNSAFE_NAME).write_bytes(rng.randbytes(12_345))
    (ann / "Documents" / LONG_NTFS_NAME).write_bytes(b"a very long name\n")
    for i in range(40):
        (ann / "Pictures" / "Holiday 2025" / f"IMG_{i:04d}.JPG").write_bytes(rng.randbytes(rng.randrange(20_000, 200_000)))
    (ann / "AppData" / "Roaming" / "Mozilla" / "Firefox" / "Profiles" / "x1.default" / "places.sqlite").write_bytes(
        rng.randbytes(98_304))
    (ann / "AppData" / "Local" / "Temp" / "~$tmp.docx").write_bytes(b"lock")
    # NTFS compression: a folder marked compressed makes every file written into it compressed.
    arch = mnt / COMPRESSED_DIR
    arch.mkdir()
    os.setxattr(arch, "system.ntfs_attrib_be", struct.pack(">I", 0x10 | NTFS_COMPRESSED))
    words = [b"invoice", b"January", b"total", b"EUR", b"paid", b"\r\n"]
    for i in range(5):
        (arch / f"ledger-{i}.csv").write_bytes(b" ".join(rng.choice(words) for _ in range(150_000)))
    for f in arch.iterdir():
        attrs = struct.unpack(">I", os.getxattr(f, "system.ntfs_attrib_be"))[0]
        assert attrs & NTFS_COMPRESSED, f"{f} is not compressed"
    os.link(ann / "NTUSER.DAT", ann / "ntuser.dat.LOG1")
    # An installed Windows: what makes this partition C:.
    etc = mnt / "Windows" / "System32" / "drivers" / "etc"
    etc.mkdir(parents=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\r\n")


def build(work: Path) -> BrowsePC:
    work.mkdir(parents=True, exist_ok=True)
    esp = fi.make_vfat(work / "esp.img", 34 * MiB, esp_tree(work / "esp-tree"), fat=32, label="ESP")
    root_tree = linux_tree(work / "linux-tree")
    root = fi.make_ext4(work / "root.img", 128 * MiB, root_tree, label="rootfs")
    ntfs = fi.make_ntfs(work / "win.img", 64 * MiB, None, label="Windows")
    with fi.ntfs_mounted(ntfs, read_only=False) as mnt:
        windows_profile(Path(mnt))
    with fi.ntfs_mounted(ntfs) as mnt:
        ntfs_expected = fi.tree_hashes(mnt)
    swap = fi.make_swap(work / "swap.img", 4 * MiB)
    exfat, exfat_expected = make_exfat(work / "stick.img", 16 * MiB)
    parts = [
        di.PartSpec(34 * MiB, di.ESP, name="EFI system partition", content=str(esp)),
        di.PartSpec(128 * MiB, di.LINUX_FS, name="root", content=str(root)),
        di.PartSpec(64 * MiB, di.BASIC_DATA, name="Basic data partition", content=str(ntfs)),
        di.PartSpec(4 * MiB, di.LINUX_SWAP, name="swap", content=str(swap)),
        di.PartSpec(16 * MiB, di.BASIC_DATA, name="exfat data", content=str(exfat)),
    ]
    disk = work / "pc.img"
    di.make_disk(disk, 260 * MiB, "gpt", parts)
    repo = work / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "ann-pc")
    expected = {1: fi.vfat_tree(esp), 2: fi.tree_hashes(root_tree), 3: ntfs_expected, 5: exfat_expected}
    return BrowsePC(disk, repo, expected, {1: esp, 2: root, 3: ntfs, 5: exfat})


def make_exfat(path: Path, size: int) -> tuple[Path, dict]:
    """An exFAT filesystem (mkfs.exfat) filled through exfat-fuse on a loop device (it takes
    only block devices), and what it holds as read back through the same driver."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.exfat", "-L", "STICK", str(path)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "--find", "--show", str(path)], check=True, capture_output=True,
                         text=True).stdout.strip()
    mnt = path.with_suffix(".mnt")
    mnt.mkdir()
    try:
        subprocess.run(["mount.exfat-fuse", dev, str(mnt)], check=True, capture_output=True)
        try:
            rng = random.Random(9)
            (mnt / "Photos 2025").mkdir()
            for i in range(12):
                (mnt / "Photos 2025" / f"DSC_{i:04d}.JPG").write_bytes(rng.randbytes(rng.randrange(10_000, 400_000)))
            (mnt / "Übersicht – notes.txt").write_text("exFAT keeps long, non-ASCII names\n")
            os.sync()
            expected = fi.tree_hashes(mnt)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)
        mnt.rmdir()
    return path, expected
