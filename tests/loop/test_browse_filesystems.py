"""Every filesystem family the browse promises, beyond the PC of test_browse (FAT32, ext4,
NTFS, exFAT): FAT12, FAT16, ext2 and ext3, on an MBR disk as an old PC or a camera card has
them. Backed up with the real CLI, then `ls` names each one and `get` copies each whole
filesystem out; every file is compared with what the filesystem's own tools read from the
image before the backup (mtools for FAT, debugfs for ext).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import lifeboat
from tests.own_mounts import views

pytestmark = pytest.mark.loop
MiB = 1024 * 1024

# number -> (what to make, mkfs's FAT bits or ext family, size, label)
FILESYSTEMS = {1: ("vfat", 12, 24 * MiB, "CARD12"), 2: ("vfat", 16, 40 * MiB, "OLDPC16"),
               3: ("ext2", None, 32 * MiB, "boot-ext2"), 4: ("ext3", None, 40 * MiB, "home-ext3")}


def _tree(root: Path, number: int) -> Path:
    fi.make_tree(root, seed=100 + number)
    (root / "Photos 2009").mkdir()
    (root / "Photos 2009" / "Été à la plage – n°1.txt").write_text(f"partition {number}\n")
    (root / (("long name " * 20).strip() + ".txt")).write_text("a long name (199 characters)\n")
    return root


@pytest.fixture(scope="module")
def old_pc(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    work = tmp_path_factory.mktemp("oldpc")
    specs, expected = [], {}
    for number, (kind, bits, size, label) in FILESYSTEMS.items():
        tree = _tree(work / f"tree{number}", number)
        image = work / f"p{number}.img"
        if kind == "vfat":
            fi.make_vfat(image, size, tree, fat=bits, label=label)
            expected[number] = fi.vfat_tree(image)
            specs.append(di.PartSpec(size, "e" if bits == 16 else "1", content=str(image)))
        else:
            fi.make_ext4(image, size, tree, label=label, fs=kind)
            expected[number] = fi.ext_tree(image)
            specs.append(di.PartSpec(size, "83", content=str(image)))
    disk = work / "old-pc.img"
    di.make_disk(disk, 140 * MiB, "dos", specs)
    repo = work / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "old-pc")
    return repo, expected


def test_ls_names_fat12_fat16_ext2_ext3_as_browsable(old_pc):
    repo, _ = old_pc
    out = lifeboat("ls", "latest", "--repo", repo, "--json", json_out=True).data
    parts = {p["number"]: p for p in out["partitions"]}
    assert {n: (p["fs"], p["label"], p["browsable"]) for n, p in parts.items()} == {
        1: ("vfat", "CARD12", True), 2: ("vfat", "OLDPC16", True),
        3: ("ext2", "boot-ext2", True), 4: ("ext3", "home-ext3", True)}
    assert parts[2]["description"] == "OLDPC16 FAT 40.0 MiB"
    listing = lifeboat("ls", "latest", "4:/Photos 2009", "--repo", repo).stdout
    assert listing.rstrip().endswith("Été à la plage – n°1.txt")


@pytest.mark.parametrize("number", sorted(FILESYSTEMS))
def test_get_copies_each_filesystem_whole(old_pc, tmp_path, number):
    repo, expected = old_pc
    dest = tmp_path / "out"
    proc = lifeboat("get", "latest", f"{number}:/", dest, "--repo", repo, "--json", json_out=True)
    assert proc.data["unreadable"] == [] and proc.data["renamed"] == [] and not proc.data["partial"]
    got = fi.tree_hashes(dest / f"p{number}")
    want = expected[number]
    if FILESYSTEMS[number][0] == "vfat":
        # FAT keeps short names in capitals with a lower-case flag that fusefat (the FAT driver
        # where the kernel has no vfat) does not read, and shows the volume label as an entry.
        got = {k.casefold(): v for k, v in got.items() if k != FILESYSTEMS[number][3].lower()
               and k.casefold() != FILESYSTEMS[number][3].casefold()}
        want = {k.casefold(): v for k, v in want.items()}
    assert got == want
    assert len(want) > 300            # the whole tree was compared, not an empty folder
    assert views() == []
