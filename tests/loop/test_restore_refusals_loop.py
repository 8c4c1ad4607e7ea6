"""Restore's own refusals on real block devices, through the CLI: the disk the running system
is on, a read-only disk, a mounted disk, the disk that holds the repository. Each exits 4 with
one line, and the target's first MiB (where a restore's first write, the wipe, lands) and its
data are unchanged. And exit 8 when a filesystem tool fails mid-restore."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import fsimages as fi
from recovery.probe.restore_mark import read_mark
from tests.integration.engine_fixtures import MiB, ROOT, lifeboat
from tests.integration.test_repository_safety import data_tree, one_line_error, one_partition_disk
from tests.own_mounts import DROP_COPIED_MOUNTS

pytestmark = pytest.mark.loop


def head(path) -> bytes:
    with open(path, "rb") as f:
        return f.read(MiB)


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def saved(tmp_path):
    """A small PC backed up as "pc", and a target disk image holding another computer's ext4."""
    tree = data_tree(tmp_path / "tree", 3, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "pc.ext4", 16 * MiB, tree), 24 * MiB)
    repo = tmp_path / "repo"
    lifeboat("repo", "init", repo)
    lifeboat("backup", disk, "--repo", repo, "--name", "pc")
    other = data_tree(tmp_path / "other", 2, MiB, seed=8)
    target, _ = one_partition_disk(tmp_path, "target", fi.make_ext4(tmp_path / "t.ext4", 40 * MiB, other), 48 * MiB)
    return repo, target


def test_refuses_the_disk_the_running_system_is_on(saved, tmp_path, loops):
    """Seen as the system's when a partition of it is mounted at a system path (/boot here). The
    mount is made in a mount namespace of the restore's own, so the host's /boot is untouched."""
    repo, target = saved
    dev = loops.attach(target)
    before = digest(target)
    script = DROP_COPIED_MOUNTS + f'mount -o ro,noload {dev}p1 /boot && exec "$@"'
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           sys.executable, "-m", "recovery", "restore", "latest", dev, "--repo", str(repo), "--yes"],
                          capture_output=True, text=True, cwd=ROOT)
    line = one_line_error(proc, 4)
    assert f"cannot restore onto {dev}: it holds the running system" in line
    assert digest(target) == before
    assert not any(m.split()[4] == "/boot" and dev in m for m in Path("/proc/self/mountinfo").read_text().splitlines())


def test_refuses_a_read_only_disk(saved, loops):
    repo, target = saved
    dev = loops.attach(target, read_only=True)
    before = digest(target)
    line = one_line_error(lifeboat("restore", "latest", dev, "--repo", repo, "--yes", check=False), 4)
    assert f"cannot restore onto {dev}: it is read-only" in line
    assert digest(target) == before


def test_refuses_a_mounted_disk(saved, tmp_path, loops):
    repo, target = saved
    dev = loops.attach(target)
    before = digest(target)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "ro,noload", f"{dev}p1", mnt], check=True)
    try:
        line = one_line_error(lifeboat("restore", "latest", dev, "--repo", repo, "--yes", check=False), 4)
        assert f"{dev}p1 on it is mounted at {mnt} (unmount it first)" in line
        assert sorted(p.name for p in mnt.iterdir()) == ["f000.bin", "f001.bin", "lost+found"]
    finally:
        subprocess.run(["umount", mnt], check=True)
    assert digest(target) == before


def test_refuses_the_disk_that_holds_the_repository(tmp_path, loops):
    """The repository lives on the target's own filesystem: restoring would destroy the backup
    being restored."""
    target, _ = one_partition_disk(tmp_path, "usb", fi.make_ext4(tmp_path / "usb.ext4", 56 * MiB, None,
                                                                 garbage=False), 64 * MiB)
    tree = data_tree(tmp_path / "tree", 2, MiB)
    disk, _ = one_partition_disk(tmp_path, "pc", fi.make_ext4(tmp_path / "pc.ext4", 16 * MiB, tree), 24 * MiB)
    dev = loops.attach(target)
    mnt = tmp_path / "usb"
    mnt.mkdir()
    subprocess.run(["mount", f"{dev}p1", mnt], check=True)
    try:
        repo = mnt / "repo"
        lifeboat("repo", "init", repo)
        sid = lifeboat("backup", disk, "--repo", repo, "--name", "pc", "--json", json_out=True).data["snapshot"]
        table = head(dev)
        line = one_line_error(lifeboat("restore", "latest", dev, "--repo", repo, "--yes", check=False), 4)
        assert f"cannot restore onto {dev}: it holds the backup being restored from" in line
        assert head(dev) == table
        assert lifeboat("verify", "--repo", repo, sid, "--json", json_out=True).data["ok"]
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_a_failing_filesystem_tool_is_exit_8_and_the_target_stays_marked(saved, tmp_path, monkeypatch):
    """resize2fs failing while the restore grows the ext4 (a stand-in that exits 1, found first
    on PATH; the disk and everything else are real): one line naming the tool, exit 8, and the
    disk keeps its incomplete-restore mark, so nothing takes it for a working system."""
    repo, _ = saved
    tools = tmp_path / "broken-tools"
    tools.mkdir()
    shim = tools / "resize2fs"
    shim.write_text("#!/bin/sh\necho 'resize2fs: Attempt to read block from filesystem resulted in short read' >&2\n"
                    "exit 1\n")
    shim.chmod(0o755)
    target = tmp_path / "bigger.img"
    target.write_bytes(b"")
    os.truncate(target, 64 * MiB)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    proc = lifeboat("restore", "latest", target, "--repo", repo, "--layout", "grow", "--yes", check=False)
    line = one_line_error(proc, 8)
    assert "resize2fs failed" in line and "short read" in line, line
    assert read_mark(str(target)) is not None
