"""NTFS with the full test tree (hard links, symlinks, sparse file, nested and non-ASCII names),
put in and read back through ntfs-3g FUSE mounts (root)."""

from __future__ import annotations

import os
import subprocess

import pytest

from recovery.fs import pread_reader, probe_partition
from tests import fsimages
from tests.conftest import require
from tests.unit.test_fs_ntfs import assert_map_agrees_with_ntfs_tools

MiB = fsimages.MiB

pytestmark = pytest.mark.loop


@pytest.fixture(autouse=True)
def needs_root():
    require(os.geteuid() == 0, "ntfs-3g mounts need root")


def test_full_tree_copy_of_mapped_ranges_is_identical(tmp_path):
    tree = fsimages.make_tree(tmp_path / "tree")
    image = fsimages.make_ntfs(tmp_path / "fs.img", 96 * MiB, tree, mount=True)
    fd = os.open(image, os.O_RDONLY)
    try:
        info = probe_partition(pread_reader(fd), 96 * MiB)
    finally:
        os.close(fd)
    assert info.fs == "ntfs" and not info.whole and info.warnings == ()
    assert_map_agrees_with_ntfs_tools(image, info)
    assert info.used_bytes < 30 * MiB
    assert fsimages.free_space_garbage(image, info.used) > 0.9

    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ntfs", copy)
    original = fsimages.ntfs_tree(image)
    assert original == fsimages.tree_hashes(tree)          # symlink and names survive ntfs-3g
    assert fsimages.ntfs_tree(copy) == original


def test_ntfs_inside_a_disk_image_at_an_offset(tmp_path):
    # Readers and checkers take an offset: an NTFS "partition" 1 MiB into a bigger file.
    tree = fsimages.make_tree(tmp_path / "tree")
    part = fsimages.make_ntfs(tmp_path / "part.img", 40 * MiB, tree, mount=True)
    disk = tmp_path / "disk.img"
    fsimages.fill_garbage(disk, 42 * MiB, seed=9)
    with open(disk, "r+b") as f:
        f.seek(MiB)
        f.write(part.read_bytes())
    assert fsimages.fsck_clean("ntfs", disk, offset=MiB, size=40 * MiB)
    assert fsimages.ntfs_tree(disk, offset=MiB, size=40 * MiB) == fsimages.ntfs_tree(part)


def test_fragmented_volume_with_attribute_lists(tmp_path):
    # Fill the volume with 4 KiB files, delete every other one, then write a big file into the
    # holes: its data runs (and the root index's) overflow into extension records named by an
    # $ATTRIBUTE_LIST. Named hiberfil.sys with a "HIBR" header, it is also what hibernation
    # detection must read through those extension records.
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB, None)
    with fsimages.ntfs_mounted(image, read_only=False) as mnt:
        count = 0
        try:
            while True:
                (mnt / f"s{count}").write_bytes(os.urandom(4096))
                count += 1
        except OSError:
            pass
        for i in range(0, count, 2):
            (mnt / f"s{i}").unlink()
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_bsize
        (mnt / "hiberfil.sys").write_bytes(b"HIBR" + os.urandom(int(free * 0.8) - 4))
    listing = subprocess.run(["ntfsinfo", "-F", "hiberfil.sys", str(image)], capture_output=True, text=True).stdout
    assert "$ATTRIBUTE_LIST" in listing, "the test did not manage to fragment the file"

    fd = os.open(image, os.O_RDONLY)
    try:
        info = probe_partition(pread_reader(fd), 32 * MiB)
    finally:
        os.close(fd)
    assert not info.whole
    assert info.warnings == (
        "NTFS was not shut down cleanly (Windows Fast Startup or hibernation); "
        "the image holds the state as Windows left it",)
    assert_map_agrees_with_ntfs_tools(image, info)
    copy = fsimages.copy_ranges(image, info.used, tmp_path / "copy.img")
    assert fsimages.fsck_clean("ntfs", copy)
    assert fsimages.ntfs_tree(copy) == fsimages.ntfs_tree(image)


@pytest.mark.parametrize("made, holds", [
    (["Windows/System32/drivers/etc/hosts"] + [f"Windows/file{i:03d}.dll" for i in range(300)], True),
    (["windows/system32/config/SYSTEM", "Users/Ann/a.txt"], True),        # any case, as Windows names it
    (["Windows/System/x.dll"] + [f"Windows/file{i:03d}.dll" for i in range(300)], False),
    (["Users/Ann/Windows/System32/x"], False),                          # not at the root
])
def test_holds_windows_finds_windows_system32_at_the_root(tmp_path, made, holds):
    from recovery.fs import ntfs

    tree = tmp_path / "tree"
    for rel in made:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(b"x" * 100)
    image = fsimages.make_ntfs(tmp_path / "fs.img", 32 * MiB, tree)
    fd = os.open(image, os.O_RDONLY)
    try:
        assert ntfs.holds_windows(pread_reader(fd), os.path.getsize(image)) is holds
    finally:
        os.close(fd)
