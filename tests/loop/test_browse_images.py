"""Getting files back from an image another tool made, without restoring it or importing it:
`lifeboat ls` and `get` take a Clonezilla image folder (partclone images, zstd, split) in place
of a snapshot, no repository needed. Files copied out are compared with the original disk's."""

from __future__ import annotations

import json

import pytest

from tests import clonezilla_images as cz
from tests import fsimages as fi
from tests.integration.engine_fixtures import lifeboat

pytestmark = pytest.mark.loop


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from tests.conftest import LoopDevices

    work = tmp_path_factory.mktemp("cz")
    loops = LoopDevices(work)
    try:
        return cz.clonezilla_image("linux", "zstd-split", loops, work)
    finally:
        loops.detach_all()


def test_ls_lists_the_images_partitions_and_folders(image):
    disk, folder = image
    out = lifeboat("ls", folder, "--json", json_out=True).data
    assert [(p["number"], p["fs"], p["browsable"]) for p in out["partitions"]][:3] == [
        (1, "vfat", True), (2, "ext4", True), (3, "ntfs", True)]
    human = lifeboat("ls", folder).stdout
    assert human.splitlines()[0].startswith("Clonezilla image ")
    entries = {e["name"]: e["type"] for e in lifeboat("ls", folder, "2:/", "--json", json_out=True).data["entries"]}
    assert entries["one"] == "dir" and entries["readme.txt"] == "file"


@pytest.mark.parametrize("number,fs", [(2, "ext4"), (3, "ntfs")])
def test_get_copies_a_filesystem_out_of_the_image(image, tmp_path, number, fs):
    disk, folder = image
    start = {p["number"]: p["start"] for p in json.loads(
        lifeboat("inspect", folder, "--json").stdout)["partitions"]}[number]
    want = fi.ext_tree(disk, start) if fs == "ext4" else fi.ntfs_tree(disk, start)
    dest = tmp_path / "out"
    proc = lifeboat("get", folder, f"{number}:/", dest, "--json", json_out=True)
    assert proc.data["unreadable"] == [] and proc.data["renamed"] == []
    assert fi.tree_hashes(dest / f"p{number}") == want


def test_a_snapshot_reference_without_a_repository_is_one_plain_line(tmp_path):
    proc = lifeboat("ls", "latest", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("lifeboat: latest is neither an image file or folder nor, without --repo, "
                                   "a snapshot: name the repository with --repo (or set LIFEBOAT_REPO)")


def test_mount_shows_the_images_partitions_and_filesystems(image, tmp_path):
    """`lifeboat mount IMAGE MOUNTPOINT`, no repository: each partition of the Clonezilla image
    as an image file holding the disk's bytes, and its filesystem mounted read-only beneath."""
    import hashlib
    import os
    import subprocess
    import sys

    from tests.integration.engine_fixtures import ROOT
    from tests.own_mounts import views

    disk, folder = image
    parts = {p["number"]: p for p in json.loads(lifeboat("inspect", folder, "--json").stdout)["partitions"]}
    where = tmp_path / "snap"
    proc = subprocess.Popen([sys.executable, "-m", "recovery", "mount", str(folder), str(where)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        for line in proc.stderr:
            banner.append(line)
            if line.startswith("stop with"):
                break
        else:
            raise AssertionError("".join(banner))
        assert "".join(banner).startswith("Clonezilla image ") and "mounted read-only at" in banner[0]
        assert {"p2", "p2.img", "p3", "p3.img"} <= set(os.listdir(where))
        assert fi.tree_hashes(where / "p2") == fi.ext_tree(disk, parts[2]["start"])
        assert fi.tree_hashes(where / "p3") == fi.ntfs_tree(disk, parts[3]["start"])
        # The image file is the partition as saved: its first 4 MiB (superblock, group
        # descriptors, bitmaps, inode table, all in use) are the disk's.
        with open(disk, "rb") as f:
            f.seek(parts[2]["start"])
            head = f.read(4 * 1024 * 1024)
        assert hashlib.sha256((where / "p2.img").read_bytes()[:len(head)]).digest() == hashlib.sha256(head).digest()
        lifeboat("umount", where)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert views() == []
