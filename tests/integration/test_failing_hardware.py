"""Failing disks through the kernel's FUSE: an unreadable source sector, a target that vanishes."""

from __future__ import annotations

import os
import random

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat
from tests.integration.faulty_disk import faulty_disk
from tests.integration.test_repository_safety import one_line_error

pytestmark = pytest.mark.loop   # mounting FUSE needs root here


def small_pc(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(4)
    for i in range(6):
        (tree / f"f{i}.bin").write_bytes(rng.randbytes(MiB))
    ext = fi.make_ext4(tmp_path / "r.img", 16 * MiB, tree)
    disk = tmp_path / "pc.img"
    layout = di.make_disk(disk, 24 * MiB, "gpt", [di.PartSpec(16 * MiB, di.LINUX_FS, content=str(ext))])
    return disk, layout


def test_unreadable_source_sector_is_named_and_repository_stays_valid(tmp_path):
    disk, layout = small_pc(tmp_path)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    earlier = lifeboat("backup", disk, "--repo", repo, "--json", json_out=True).data["snapshot"]
    bad = layout.partitions[0].start + 4 * MiB            # inside the used data
    with faulty_disk(disk, tmp_path / "mnt", "--bad-read", f"{bad}:4096") as failing:
        line = one_line_error(lifeboat("backup", failing, "--repo", repo, "--name", "pc2", check=False), 3)
    assert "cannot read" in line and "partition 1" in line and f"byte {bad}" in line
    assert not (repo / "lock").exists()
    snaps = lifeboat("snapshots", "--repo", repo, "--json", json_out=True).data["snapshots"]
    assert [s["id"] for s in snaps] == [earlier]
    assert lifeboat("verify", "--repo", repo, "--json", json_out=True).data["ok"]


@pytest.mark.parametrize("err,words,code", [("ENODEV", "vanished", 3), ("EIO", "cannot write", 3),
                                            ("ENOSPC", "no space left writing", 7)])
def test_target_failing_mid_restore_says_what_state_it_is_in(tmp_path, err, words, code):
    disk, _ = small_pc(tmp_path)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo)
    target = tmp_path / "target.img"
    with open(target, "wb") as f:
        f.truncate(32 * MiB)
    with faulty_disk(target, tmp_path / "mnt", "--fail-writes-after", str(3 * MiB), "--errno", err) as failing:
        line = one_line_error(lifeboat("restore", "latest", failing, "--repo", repo, "--layout", "keep", "--yes",
                                       check=False), code)
    assert words in line and "incomplete and will not boot" in line
    assert os.path.exists(target)
