"""Browsing reaches a snapshot's blobs through the places it recorded: mounting it, listing
the root of its ext4 and FAT partitions and copying every file out (each compared, byte for
byte, with what the filesystem held) reads the manifest and pack ranges, never an index file
or a pack footer, and never builds the repository's index. The same through `lifeboat ls`
and `get` with every index file and pack footer of the repository garbled: the snapshot's
own tables are all they need."""

from __future__ import annotations

import os
import random

import pytest

from recovery.backup import backup
from recovery.browse.files import copy_out, list_dir
from recovery.browse.saved import open_snapshot
from recovery.browse.view import temporary_view
from recovery.repo.repository import Repository
from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import lifeboat
from tests.integration.test_browse_locations import CountingStorage

pytestmark = pytest.mark.loop
MiB = 1024 * 1024


def tree_of(root) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root).casefold()] = f.read()
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    work = tmp_path_factory.mktemp("locations")
    src = work / "tree"
    (src / "docs").mkdir(parents=True)
    rng = random.Random(11)
    for i in range(6):
        (src / "docs" / f"file{i}.bin").write_bytes(rng.randbytes(700_000 * (i + 1)))
    (src / "readme.txt").write_text("the snapshot's own tables lead to these bytes\n")
    ext = fi.make_ext4(work / "root.img", 40 * MiB, src, label="rootfs")
    fat = fi.make_vfat(work / "esp.img", 34 * MiB, src, fat=32, label="ESP")
    disk = work / "pc.img"
    di.make_disk(disk, 80 * MiB, "gpt", [di.PartSpec(34 * MiB, di.ESP, name="ESP", content=str(fat)),
                                         di.PartSpec(40 * MiB, di.LINUX_FS, name="root", content=str(ext))])
    repo = Repository.init(work / "repo")
    sid = backup(str(disk), repo).snapshot
    repo.close()
    return work, sid, tree_of(src)


def test_mount_list_and_copy_every_file_without_the_index(saved, tmp_path):
    work, sid, want = saved
    storage = CountingStorage((work / "repo").absolute())
    repo = Repository.open(storage)
    storage.reads.clear()
    disk = open_snapshot(repo, sid)
    try:
        with temporary_view(disk) as view:
            for number in (1, 2):
                root = view.mounted[number]
                assert {e.name.casefold() for e in list_dir(root)} >= {"docs", "readme.txt"}
                dest = tmp_path / f"p{number}"
                dest.mkdir()
                result = copy_out([root / "docs", root / "readme.txt"], root, dest)
                assert not result.unreadable and not result.skipped and result.stopped is None, result
                assert tree_of(dest) == want
    finally:
        disk.close()
    assert repo._index is None, "the repository's index was built"
    assert not [n for n in storage.reads if n.startswith("index/")]
    assert {n.split("/")[0] for n in storage.reads} == {"snapshots", "packs"}


def test_ls_and_get_need_no_index_file_nor_pack_footer(saved, tmp_path):
    """Every index file garbled and every pack's footer too: a reader that needed them would
    find no blob at all (the index skips a damaged file, a pack with a damaged footer is left
    out). The snapshot's recorded places still give every byte."""
    work, sid, want = saved
    repo = tmp_path / "repo"
    os.system(f"cp -a {work / 'repo'} {repo}")
    for idx in (repo / "index").glob("*.idx"):
        idx.write_bytes(b"\0" * idx.stat().st_size)
    for pack in (repo / "packs").glob("*/*.pack"):
        with open(pack, "r+b") as f:
            f.seek(-48, os.SEEK_END)                 # the trailer: count, footer hash, end magic
            f.write(b"\0" * 48)
        pack.with_name(pack.name + ".par").unlink(missing_ok=True)   # no mending from parity
    listing = lifeboat("ls", sid, "2:/", "--repo", repo).stdout
    assert "docs" in listing and "readme.txt" in listing
    out = tmp_path / "out"
    out.mkdir()
    lifeboat("get", sid, "2:/docs", out, "--repo", repo)
    assert tree_of(out) == {k: v for k, v in want.items() if k.startswith("docs/")}
    # A reader that needs the index cannot read this repository any more: the proof above
    # means something.
    broken = lifeboat("verify", "--repo", repo, check=False)
    assert broken.returncode != 0
