"""`lifeboat disks --record` on this machine, with a real partitioned loop disk attached: the
record holds the disk and its partitions as the listing reads them, and the sysfs shape it
keeps, rebuilt in a folder, links them as the kernel's own sysfs does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from recovery.probe.mounts import devices_of_disk
from recovery.probe.record import build_sysfs
from tests.diskimages import ESP, LINUX_FS, MiB, PartSpec, make_disk
from tests.fsimages import make_ext4

pytestmark = pytest.mark.loop


def test_record_of_a_loop_disk_matches_the_kernels_sysfs(tmp_path, loops):
    img = tmp_path / "disk.img"
    make_disk(img, 48 * MiB, "gpt", [PartSpec(8 * MiB, ESP),
                                     PartSpec(None, LINUX_FS, content=str(make_ext4(tmp_path / "r.fs", 38 * MiB, label="rec-root")))])
    dev = loops.attach(img)
    name = os.path.basename(dev)
    out = subprocess.run([sys.executable, "-m", "recovery", "disks", "--record"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    recording = json.loads(out.stdout)
    record = next(r for r in recording["records"] if r["name"] == name)
    assert [p["name"] for p in record["partitions"]] == [f"{name}p1", f"{name}p2"]
    assert record["attrs"]["loop/backing_file"] == str(img)
    root_part = record["partitions"][1]
    assert "rec-root" in (root_part.get("blkid", {}).get("LABEL"), root_part.get("udev", {}).get("ID_FS_LABEL"))
    rebuilt = build_sysfs(recording["sysfs"], tmp_path / "sys")
    assert devices_of_disk(name, str(rebuilt)) == devices_of_disk(name)
