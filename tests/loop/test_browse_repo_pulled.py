"""A repository on a USB drive that is pulled out while `lifeboat get` copies from it: the drive
is a real ext4 filesystem holding the repository, on a loop device over a FUSE file that
answers EIO to every read after a number of bytes, as a pulled drive answers the kernel.
The copy ends with a plain message and its exit code, no traceback; every file it reports
copied is whole, and the file cut short is not left behind."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest

from tests import fsimages as fi
from tests.conftest import run
from tests.integration.engine_fixtures import lifeboat
from tests.integration.faulty_disk import faulty_disk
from tests.integration.test_repository_safety import one_partition_disk

pytestmark = pytest.mark.loop
MiB = 1024 * 1024


def repository_on_a_stick(tmp_path: Path) -> tuple[Path, Path, dict, int]:
    """A PC's disk with a folder of photos and notes, backed up; the repository copied onto an
    ext4 "USB stick" image. (disk, stick image, the docs folder's tree, bytes in packs)."""
    rng = random.Random(15)
    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    for i in range(8):                                   # incompressible: the packs hold ~24 MiB
        (tree / "docs" / f"photo{i}.jpg").write_bytes(rng.randbytes(3 * MiB))
    for i in range(20):
        (tree / "docs" / f"note{i:02d}.txt").write_bytes(rng.randbytes(rng.randrange(100, 9000)))
    want = fi.tree_hashes(tree / "docs")
    ext = fi.make_ext4(tmp_path / "p1.img", 48 * MiB, tree, garbage=False)
    disk, _ = one_partition_disk(tmp_path, "pc", ext, 56 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "pc")
    pack_bytes = sum(p.stat().st_size for p in (repo / "packs").rglob("*.pack"))
    assert pack_bytes > 20 * MiB
    # The USB drive: an ext4 filesystem holding the repository.
    holding = tmp_path / "stick-tree"
    holding.mkdir()
    run("cp", "-a", repo, holding / "repo")
    stick = fi.make_ext4(tmp_path / "stick.img", 64 * MiB, holding, garbage=False, label="STICK")
    return disk, stick, want, pack_bytes


def test_repository_drive_pulled_out_mid_get(tmp_path, loops):
    disk, stick, want, pack_bytes = repository_on_a_stick(tmp_path)

    # Reads fail after what mounting, opening and about half of the packs take.
    with faulty_disk(stick, tmp_path / "fuse", "--fail-reads-after", str(pack_bytes // 2), "--errno", "EIO") as img:
        dev = loops.attach(img, read_only=True)
        drive = tmp_path / "drive"
        drive.mkdir()
        run("mount", "-o", "ro,noload", dev, drive)
        try:
            out = tmp_path / "out"
            proc = lifeboat("get", "latest", "1:/docs", out, "--repo", drive / "repo", "--json", check=False)
        finally:
            subprocess.run(["umount", str(drive)], capture_output=True)
            loops.detach_all()              # before the FUSE file goes, or it cannot unmount

    assert proc.returncode == 5, proc.stderr                      # 5: repository
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lifeboat: the repository could not be read any more ("), lines
    assert "Input/output error" in lines[0] and "was its drive removed?" in lines[0]
    data = json.loads(proc.stdout)
    assert data["stopped"] and "Input/output error" in data["stopped"] and data["partial"]
    # The file being copied when the drive went: listed, and not left behind cut short.
    assert len(data["unreadable"]) == 1
    cut = data["unreadable"][0]
    assert cut["path"].startswith("/docs/photo") and "(the copy was removed)" in cut["error"]
    got = fi.tree_hashes(out / "docs")
    assert Path(cut["path"]).name not in got
    # Every file that is there is whole; the drive really went mid-copy (some photos made it,
    # some did not), and the count reported is the count on disk.
    assert got and all(got[name] == want[name] for name in got)
    assert data["files"] == len(got)
    assert 0 < len([n for n in got if n.startswith("photo")]) < 8
    assert len(got) < len(want)
