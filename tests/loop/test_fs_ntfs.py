"""NTFS with the full test tree (hard links, symlinks, sparse file, nested and non-ASCII names),
put in and read back through ntfs-3g FUSE mounts (root)."""

from __future__ import annotations

import os

import pytest

from recovery.fs import pread_reader, probe_partition
from tests import fsimages
from tests.unit.test_fs_ntfs import assert_map_agrees_with_ntfs_tools

MiB = fsimages.MiB

pytestmark = pytest.mark.loop


@pytest.fixture(autouse=True)
def needs_root():
    if os.geteuid() != 0:
        pytest.skip("ntfs-3g mounts need root")


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
