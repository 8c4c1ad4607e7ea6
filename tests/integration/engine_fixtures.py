"""A small "PC" made of real filesystems in real partition tables, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests import diskimages as di
from tests import fsimages as fi

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def lifeboat(*args, check=True, json_out=False, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a person would. LIFEBOAT_CLI names another
    program to run instead (the frozen bundle: build/freeze/dist/lifeboat/lifeboat), so the
    same tests prove the binary that ships on the ISO."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    program = [os.environ["LIFEBOAT_CLI"]] if os.environ.get("LIFEBOAT_CLI") else [sys.executable, "-m", "recovery"]
    proc = subprocess.run([*program, *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"lifeboat {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr}")
    if json_out:
        proc.data = json.loads(proc.stdout)
    return proc


@dataclass
class PC:
    disk: Path
    trees: dict[int, tuple[str, dict]]   # partition number -> (fs, expected tree)
    layout: object


def build_gpt_pc(work: Path, tree: Path, size: int = 96 * MiB) -> PC:
    """A UEFI-style disk: FAT32 ESP, ext4 system, NTFS data, swap; garbage in all free space."""
    esp = fi.make_vfat(work / "esp.img", 34 * MiB, tree, fat=32, label="ESP")
    root = fi.make_ext4(work / "root.img", 32 * MiB, tree, label="rootfs")
    ntfs = fi.make_ntfs(work / "data.img", 16 * MiB, tree, label="Data")
    swap = fi.make_swap(work / "swap.img", 4 * MiB)
    parts = [
        di.PartSpec(34 * MiB, di.ESP, name="EFI system partition", content=str(esp), attrs="GUID:63"),
        di.PartSpec(32 * MiB, di.LINUX_FS, name="root", content=str(root)),
        di.PartSpec(16 * MiB, di.BASIC_DATA, name="Basic data partition", content=str(ntfs)),
        di.PartSpec(4 * MiB, di.LINUX_SWAP, name="swap", content=str(swap), attrs="RequiredPartition"),
    ]
    disk = work / "pc.img"
    layout = di.make_disk(disk, size, "gpt", parts)
    trees = {1: ("vfat", fi.vfat_tree(esp)), 2: ("ext4", fi.ext_tree(root)), 3: ("ntfs", fi.ntfs_tree(ntfs))}
    return PC(disk, trees, layout)


def read_tree(fs: str, image: Path, offset: int, size: int) -> dict:
    if fs == "vfat":
        return fi.vfat_tree(image, offset)
    if fs.startswith("ext"):
        return fi.ext_tree(image, offset, size)
    return fi.ntfs_tree(image, offset)


def sfdisk_json(path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["partitiontable"]


def identity(table: dict) -> tuple:
    """What booting depends on: ids, types, names, attrs and places of every partition."""
    parts = tuple(
        (p.get("start"), p.get("size"), p.get("type"), p.get("uuid"), p.get("name"), p.get("attrs"), p.get("bootable"))
        for p in table["partitions"]
    )
    return table["label"], table.get("id"), parts


def assert_restored(pc: PC, target: Path) -> None:
    """Every partition's files identical and its filesystem clean."""
    from recovery.probe.table import read_layout

    layout = {p.number: p for p in read_layout(str(target)).partitions}
    for number, (fs, expected) in pc.trees.items():
        p = layout[number]
        assert fi.fsck_clean(fs, target, p.start, p.size), f"partition {number} ({fs}) is not clean"
        assert read_tree(fs, target, p.start, p.size) == expected, f"partition {number} ({fs}) differs"
