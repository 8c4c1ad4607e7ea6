"""The index cache: a second backup into a network repository costs the requests its
changed chunks need, not one download per index file of the repository."""

from __future__ import annotations

import os
import subprocess

import pytest

pytestmark = pytest.mark.loop            # mounts the disk image to change a file in place

from recovery.backup import backup
from recovery.repo.repository import Repository, WriteSession
from tests import fsimages as fi
from tests.integration.engine_fixtures import MiB
from tests.integration.test_repository_safety import data_tree, one_partition_disk


@pytest.fixture
def s3env(seaweedfs, monkeypatch, tmp_path):
    for key, value in seaweedfs.env(LIFEBOAT_LOG_DIR=str(tmp_path / "logs")).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(MiB))
    monkeypatch.setattr(WriteSession, "INDEX_EVERY", 1)       # many index files, as a large disk has
    return seaweedfs


def second_backup_requests(tmp_path, where: str, cache: str) -> tuple[int, int]:
    """(requests of the second backup, index files in the repository)"""
    tree = data_tree(tmp_path / f"tree-{cache}", 40, MiB, seed=7)
    ext = fi.make_ext4(tmp_path / f"e-{cache}.img", 64 * MiB, tree, garbage=False)
    disk, offset = one_partition_disk(tmp_path, f"d-{cache}", ext, 72 * MiB)
    repo = Repository.init(where)
    backup(str(disk), repo, "pc", verify=False)
    index_files = sum(1 for i in repo.storage.list("index/") if i.name.endswith(".idx"))
    # One file changes in place: a few chunks are new.
    mnt = tmp_path / f"m-{cache}"
    mnt.mkdir()
    subprocess.run(["mount", "-o", f"loop,offset={offset}", str(disk), str(mnt)], check=True)
    try:
        with open(mnt / "f003.bin", "r+b") as f:
            f.write(os.urandom(2 * MiB))
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    again = Repository.open(where)
    result = backup(str(disk), again, "pc", verify=False)
    assert 0 < result.bytes_stored_new < 4 * MiB
    return again.storage.requests, index_files


def test_second_backup_costs_what_changed_not_the_whole_index(tmp_path, s3env, monkeypatch):
    s3env.bucket("cached")
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", str(tmp_path / "cache"))
    warm, index_files = second_backup_requests(tmp_path, "s3://cached/with", "warm")
    monkeypatch.setenv("LIFEBOAT_CACHE_DIR", "none")
    cold, index_files_cold = second_backup_requests(tmp_path, "s3://cached/without", "cold")
    print(f"second backup: {warm} requests with the index cache, {cold} without; "
          f"{index_files} / {index_files_cold} index files in the repository")
    assert index_files >= 40
    # Without the cache every index file is fetched again; with it none is.
    assert cold - warm >= index_files - 5
    assert warm < 60
