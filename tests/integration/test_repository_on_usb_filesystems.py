"""The repository on the filesystems people's USB drives carry: FAT32, exFAT and NTFS (each
mounted through FUSE, the way this machine's kernel allows), then checked by their own fsck."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import diskimages as di
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB, lifeboat

pytestmark = pytest.mark.loop   # FUSE mounts need root here


def make_fs(kind: str, path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(200 * MiB)
    cmd = {"fat32": ["mkfs.vfat", "-F", "32", "-n", "BACKUPS"],
           "exfat": ["mkfs.exfat", "-L", "BACKUPS"],
           "ntfs": ["mkntfs", "-F", "-Q", "-q", "-L", "Backups"]}[kind]
    subprocess.run([*cmd, str(path)], check=True, capture_output=True)


@contextlib.contextmanager
def mounted(kind: str, image: Path, where: Path, loops):
    where.mkdir(exist_ok=True)
    cmd = {"fat32": ["fusefat", "-o", "rw+"], "exfat": ["mount.exfat-fuse"], "ntfs": ["ntfs-3g"]}[kind]
    device = loops.attach(image) if kind == "exfat" else image    # exfat-fuse wants a block device
    daemon = None
    if kind == "fat32":
        # In the foreground, so that its end can be waited for: fusefat writes the FATs and
        # clears the volume's dirty bit after fusermount -u has returned, and an fsck run in
        # between saw a volume not properly unmounted.
        daemon = subprocess.Popen([*cmd, "-f", str(device), str(where)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.ismount(where):
            assert daemon.poll() is None and time.monotonic() < deadline, "fusefat did not mount"
            time.sleep(0.05)
    else:
        subprocess.run([*cmd, str(device), str(where)], check=True, capture_output=True)
    try:
        yield where
    finally:
        subprocess.run(["fusermount", "-u", str(where)], check=True)
        if daemon is not None:
            daemon.wait(timeout=60)


FSCK = {"fat32": ["fsck.vfat", "-n"], "exfat": ["fsck.exfat", "-n"], "ntfs": ["ntfsfix", "-n"]}


@pytest.mark.parametrize("kind", ["fat32", "exfat", "ntfs"])
def test_backup_verify_restore_with_the_repository_on(kind, tmp_path, loops):
    tree = fi.make_tree(tmp_path / "tree")
    ext = fi.make_ext4(tmp_path / "root.img", 24 * MiB, tree)
    disk = tmp_path / "pc.img"
    di.make_disk(disk, 32 * MiB, "gpt", [di.PartSpec(24 * MiB, di.LINUX_FS, content=str(ext))])
    stick = tmp_path / "stick.img"
    make_fs(kind, stick)

    with mounted(kind, stick, tmp_path / "mnt", loops) as mnt:
        lifeboat("repo", "init", mnt / "lifeboat")
        sid = lifeboat("backup", disk, "--repo", mnt / "lifeboat", "--json", json_out=True).data["snapshot"]
    check = subprocess.run([*FSCK[kind], str(stick)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    with mounted(kind, stick, tmp_path / "mnt", loops) as mnt:      # as if plugged in again
        assert lifeboat("verify", "--repo", mnt / "lifeboat", "--json", json_out=True).data["ok"]
        target = tmp_path / "new.img"
        with open(target, "wb") as f:
            f.truncate(40 * MiB)
        lifeboat("restore", sid[:12], target, "--repo", mnt / "lifeboat", "--layout", "keep", "--yes")
    p = di.read_layout(str(target)).partitions[0]
    assert fi.ext_tree(target, p.start, p.size) == fi.ext_tree(ext)
