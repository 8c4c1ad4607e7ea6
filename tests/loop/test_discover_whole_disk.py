"""A USB drive formatted without a partition table: its repository is still found."""

from __future__ import annotations

import os
import subprocess

import pytest

from recovery import discover
from recovery.probe.disks import describe
from recovery.repo.repository import Repository

pytestmark = pytest.mark.loop


def test_repository_on_a_disk_without_partition_table_is_found(tmp_path, loops):
    content = tmp_path / "content"
    content.mkdir()
    Repository.init(content / "lifeboat")
    image = tmp_path / "stick.img"
    with open(image, "wb") as f:
        f.truncate(48 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "WHOLE-STICK", "-d", content, image], check=True)
    dev = loops.attach(image)
    disk = describe(dev)
    assert disk.partitions == () and disk.table is None
    places = discover.scan([disk])
    found = [p for p in places if p.is_repository]
    assert len(found) == 1 and found[0].disk == dev and found[0].label == "WHOLE-STICK"
    assert f"{dev} " not in open("/proc/mounts").read()    # unmounted after the search
