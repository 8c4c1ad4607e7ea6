"""A disk left by an interrupted restore, seen as a real block device: `lifeboat disks` names
it as an incomplete restore (the kernel and blkid see no table and no filesystem on it)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.integration.engine_fixtures import lifeboat
from tests.integration.test_restore_trust import backed_up_pc, interrupted_restore

pytestmark = pytest.mark.loop


def test_disks_names_an_incomplete_restore_and_the_rerun_resumes(tmp_path, loops):
    pc, repo, image = backed_up_pc(tmp_path)
    shutil.copyfile(pc.disk, image)                 # the target holds a working disk first
    dev = loops.attach(image)
    assert os.path.exists(f"{dev}p1")
    interrupted_restore(repo, dev)
    assert not os.path.exists(f"{dev}p1"), "the kernel still shows the old partitions of a marked disk"

    listed = {d["path"]: d for d in lifeboat("disks", "--json", json_out=True).data["disks"]}
    assert listed[dev]["incomplete_restore"].startswith("incomplete restore of pc ")
    human = lifeboat("disks").stdout
    assert "incomplete restore of pc" in human and "NOT USABLE" in human

    result = json.loads(lifeboat("restore", "latest", dev, "--repo", repo, "--yes", "--json").stdout)
    assert result["status"] == "ok" and result["bytes_skipped"] > 0
    listed = {d["path"]: d for d in lifeboat("disks", "--json", json_out=True).data["disks"]}
    assert listed[dev]["incomplete_restore"] is None and listed[dev]["table"] == "gpt"
