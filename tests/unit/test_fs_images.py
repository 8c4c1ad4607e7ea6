"""The image builders and tree readers everyone's tests rely on: the tree has what it claims,
free space really holds garbage, readers work at an offset, and fsck_clean can say no."""

from __future__ import annotations

import os
import random

import pytest

from tests import fsimages

MiB = fsimages.MiB


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return fsimages.make_tree(tmp_path_factory.mktemp("tree") / "tree")


def nonzero_fraction(image, sample: int = 200) -> float:
    size = os.path.getsize(image)
    rng = random.Random(11)
    with open(image, "rb") as f:
        hits = 0
        for _ in range(sample):
            f.seek(rng.randrange(size // 4096) * 4096)
            hits += any(f.read(4096))
    return hits / sample


def test_tree_has_every_kind_of_entry(tree):
    hashes = fsimages.tree_hashes(tree)
    assert hashes["link-to-readme"] == "-> readme.txt"
    assert os.stat(tree / "hardlink.dat").st_ino == os.stat(tree / "small" / "file007.dat").st_ino
    sparse = os.stat(tree / "sparse.img")
    assert sparse.st_blocks * 512 < sparse.st_size // 4
    assert hashes["empty-dir"] == "dir" and hashes["one/two/three/four/deep.txt"].startswith("sha256:")
    assert any(not name.isascii() for name in hashes)
    total = sum(os.path.getsize(tree / p) for p, v in hashes.items() if v.startswith("sha256:"))
    assert 8 * MiB < total < 20 * MiB
    assert fsimages.make_tree(tree) == tree and fsimages.tree_hashes(tree) == hashes   # deterministic


@pytest.mark.parametrize("kind", ["ext4", "vfat", "ntfs", "swap"])
def test_free_space_holds_garbage_unless_asked_not_to(tmp_path, kind):
    build = {
        "ext4": lambda p, g: fsimages.make_ext4(p, 32 * MiB, None, garbage=g),
        "vfat": lambda p, g: fsimages.make_vfat(p, 40 * MiB, None, garbage=g),
        "ntfs": lambda p, g: fsimages.make_ntfs(p, 32 * MiB, None, garbage=g),
        "swap": lambda p, g: fsimages.make_swap(p, 16 * MiB, garbage=g),
    }[kind]
    assert nonzero_fraction(build(tmp_path / "g.img", True)) > 0.7
    assert nonzero_fraction(build(tmp_path / "z.img", False)) < 0.3


def embed(part, disk, offset: int, total: int):
    fsimages.fill_garbage(disk, total, seed=4)
    with open(disk, "r+b") as f:
        f.seek(offset)
        f.write(part.read_bytes())
    return disk


def test_ext_reader_and_checker_at_an_offset(tmp_path, tree):
    part = fsimages.make_ext4(tmp_path / "p.img", 32 * MiB, tree)
    disk = embed(part, tmp_path / "disk.img", 3 * MiB, 40 * MiB)
    assert fsimages.ext_tree(disk, offset=3 * MiB, size=32 * MiB) == fsimages.ext_tree(part) \
        == fsimages.tree_hashes(tree)
    assert fsimages.fsck_clean("ext4", disk, offset=3 * MiB, size=32 * MiB)


def test_vfat_reader_and_checker_at_an_offset(tmp_path, tree):
    part = fsimages.make_vfat(tmp_path / "p.img", 40 * MiB, tree, fat=16)
    disk = embed(part, tmp_path / "disk.img", MiB, 48 * MiB)
    assert fsimages.vfat_tree(disk, offset=MiB) == fsimages.vfat_tree(part) \
        == fsimages.tree_hashes(tree, follow_symlinks=True)
    assert fsimages.fsck_clean("vfat", disk, offset=MiB, size=40 * MiB)


def test_fsck_clean_says_no_to_damage(tmp_path, tree):
    ext4 = fsimages.make_ext4(tmp_path / "e.img", 32 * MiB, tree)
    assert fsimages.fsck_clean("ext4", ext4)
    with open(ext4, "r+b") as f:
        f.seek(4096)                         # the group descriptor table
        f.write(bytes(4096))
    assert not fsimages.fsck_clean("ext4", ext4)

    vfat = fsimages.make_vfat(tmp_path / "f.img", 40 * MiB, tree, fat=32)
    assert fsimages.fsck_clean("vfat", vfat)
    with open(vfat, "rb") as f:
        boot = f.read(512)
    reserved = int.from_bytes(boot[14:16], "little")
    with open(vfat, "r+b") as f:
        f.seek(reserved * 512 + 3 * 4)       # cluster 3's entry: cut the root's chain short
        f.write(bytes(4 * 64))
    assert not fsimages.fsck_clean("vfat", vfat)

    ntfs = fsimages.make_ntfs(tmp_path / "n.img", 32 * MiB)
    assert fsimages.fsck_clean("ntfs", ntfs)
    with open(ntfs, "r+b") as f:
        boot = f.read(512)
        cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
        f.seek(int.from_bytes(boot[0x30:0x38], "little") * cluster)
        f.write(bytes(8192))                 # the first MFT records
    assert not fsimages.fsck_clean("ntfs", ntfs)


def test_ntfs_mirror_that_disagrees_is_not_clean(tmp_path):
    """ntfsfix -n judged by its exit code: $MFTMirr no longer matching $MFT is a problem."""
    ntfs = fsimages.make_ntfs(tmp_path / "n.img", 16 * MiB)
    assert fsimages.fsck_clean("ntfs", ntfs)
    with open(ntfs, "r+b") as f:
        boot = f.read(512)
        cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
        f.seek(int.from_bytes(boot[0x38:0x40], "little") * cluster + 100)
        f.write(b"\xde\xad\xbe\xef" * 4)
    assert not fsimages.fsck_clean("ntfs", ntfs)


def test_ext_reader_fails_on_whatever_debugfs_reports(tmp_path, tree):
    """An inode table overwritten: debugfs still exits 0, but what it says on stderr fails the
    read (no list of words to match), rather than yielding a tree with files missing."""
    import re
    import subprocess

    ext4 = fsimages.make_ext4(tmp_path / "e.img", 32 * MiB, tree)
    stats = subprocess.run(["debugfs", "-R", "stats", str(ext4)], capture_output=True, text=True, check=True).stdout
    table = int(re.search(r"Group\s+0:.*?inode table at (\d+)", stats, re.S)[1])
    with open(ext4, "r+b") as f:
        f.seek(table * 4096 + 11 * 256)         # the first inodes after the reserved ones
        f.write(os.urandom(16 * 256))
    with pytest.raises(AssertionError, match="debugfs rdump: "):
        fsimages.ext_tree(ext4)
