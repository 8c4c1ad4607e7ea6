"""Browsing writes nothing and replays no journal, proven on filesystems that have something to
replay: an ext4 whose journal holds a committed transaction never applied (written with
debugfs' journal commands, as a crash leaves it) and an NTFS marked dirty (not shut down
cleanly). The disk is backed up, then mounted, listed and copied from through the real CLI;
what comes out is the filesystem as it was before the journal (a replay would show the
journal's block), the saved partition still says its journal needs recovery, and every byte
of the repository and of the source disk image is what it was before browsing.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import lifeboat
from tests.loop.test_browse import _start_mount
from tests.own_mounts import views
from tests.unit.test_fs_ntfs import _poke_volume_flags

pytestmark = pytest.mark.loop
MiB = 1024 * 1024
BEFORE = b"the letter as it was saved\n"
JOURNALED = b"JOURNALED: a block the crash left in the journal\n"


def _debugfs(image: Path, *commands: str, write: bool = False) -> str:
    proc = subprocess.run(["debugfs", *(["-w"] if write else []), "-f", "-", str(image)],
                          input="\n".join(commands) + "\n", capture_output=True, text=True, check=True)
    return proc.stdout


def dirty_ext4(work: Path) -> Path:
    """An ext4 whose journal holds one committed transaction rewriting letter.txt's block."""
    tree = work / "ext-tree"
    fi.make_tree(tree, seed=21)
    (tree / "letter.txt").write_bytes(BEFORE)
    image = fi.make_ext4(work / "ext.img", 48 * MiB, tree, label="crashed")
    block = int(_debugfs(image, "blocks /letter.txt").split()[-1])
    new = work / "journal-block.bin"
    new.write_bytes(JOURNALED.ljust(4096, b"\0"))
    _debugfs(image, "jo", f"jw -b {block} {new}", "jc", write=True)
    features = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True).stdout
    assert "needs_recovery" in features
    # What a replay would give (e2fsck on a copy): the journal's block, so the test can tell.
    replayed = work / "replayed.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(replayed)], check=True)
    subprocess.run(["e2fsck", "-fy", str(replayed)], capture_output=True)
    assert subprocess.run(["debugfs", "-R", "cat /letter.txt", str(replayed)], capture_output=True,
                          check=True).stdout == JOURNALED[:len(BEFORE)]
    replayed.unlink()
    return image


def dirty_ntfs(work: Path) -> Path:
    tree = work / "ntfs-tree"
    (tree / "Users" / "Ann" / "Documents").mkdir(parents=True)
    (tree / "Users" / "Ann" / "Documents" / "letter.txt").write_bytes(BEFORE)
    (tree / "Users" / "Ann" / "Documents" / "scan.pdf").write_bytes(random.Random(4).randbytes(700_000))
    image = fi.make_ntfs(work / "ntfs.img", 32 * MiB, tree, label="Windows")
    _poke_volume_flags(image, 0x0001)           # VOLUME_DIRTY, in $MFT's record of $Volume
    # ... and in $MFTMirr's copy of it, as Windows writes both (ntfs-3g compares them).
    with open(image, "rb") as f:
        boot = f.read(512)
    cluster = int.from_bytes(boot[0x0B:0x0D], "little") * boot[0x0D]
    mft, mirror = (int.from_bytes(boot[at:at + 8], "little") * cluster for at in (0x30, 0x38))
    per = int.from_bytes(boot[0x40:0x41], "little", signed=True)
    record = (per * cluster if per > 0 else 1 << -per)
    with open(image, "r+b") as f:
        f.seek(mft + 3 * record)
        volume = f.read(record)
        f.seek(mirror + 3 * record)
        f.write(volume)
    return image


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def every_byte(folder: Path) -> dict[str, tuple[str, int]]:
    """Each file under `folder`: its hash and size (what browsing must leave as it was)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            out[str(p.relative_to(folder))] = (digest(p), p.stat().st_size)
        out.update({str((Path(dirpath) / d).relative_to(folder)) + "/": ("dir", 0) for d in dirnames})
    return out


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    work = tmp_path_factory.mktemp("crashed")
    ext = dirty_ext4(work)
    ext_expected = fi.ext_tree(ext)           # debugfs reads without replaying: the state before
    ntfs = dirty_ntfs(work)
    ntfs_expected = fi.ntfs_tree(ntfs)
    disk = work / "crashed-pc.img"
    di.make_disk(disk, 90 * MiB, "gpt", [di.PartSpec(48 * MiB, di.LINUX_FS, name="root", content=str(ext)),
                                         di.PartSpec(32 * MiB, di.BASIC_DATA, name="Basic data partition",
                                                     content=str(ntfs))])
    repo = work / "repo"
    lifeboat("repo", "init", repo)
    backup = lifeboat("backup", disk, "--repo", repo, "--name", "crashed-pc")
    assert "needs recovery" in backup.stdout + backup.stderr
    assert "marked dirty" in backup.stdout + backup.stderr
    return disk, repo, {1: ext_expected, 2: ntfs_expected}


def test_browsing_replays_no_journal_and_writes_nothing(crashed, tmp_path):
    disk, repo, expected = crashed
    repo_before, disk_before = every_byte(repo), digest(disk)

    where = tmp_path / "snap"
    proc = _start_mount(repo, where)
    try:
        assert (where / "p1" / "letter.txt").read_bytes() == BEFORE
        assert fi.tree_hashes(where / "p1") == expected[1]
        assert fi.tree_hashes(where / "p2") == expected[2]
        # The saved partition, read through the mount, still has its journal to recover.
        header = subprocess.run(["dumpe2fs", "-h", str(where / "p1.img")], capture_output=True, text=True,
                                check=True).stdout
        assert "needs_recovery" in header
        lifeboat("umount", where)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

    listing = lifeboat("ls", "latest", "2:/Users/Ann/Documents", "--repo", repo, "--json", json_out=True).data
    assert sorted(e["name"] for e in listing["entries"]) == ["letter.txt", "scan.pdf"]
    for number in (1, 2):
        lifeboat("get", "latest", f"{number}:/", tmp_path / "out", "--repo", repo)
        assert fi.tree_hashes(tmp_path / "out" / f"p{number}") == expected[number]
    assert (tmp_path / "out" / "p1" / "letter.txt").read_bytes() == BEFORE

    assert every_byte(repo) == repo_before
    assert digest(disk) == disk_before
    assert views() == []
