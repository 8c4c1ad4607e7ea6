"""A disk left by an interrupted restore, seen as a real block device: `lifeboat disks` names
it as an incomplete restore (the kernel and blkid see no table and no filesystem on it)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from recovery.errors import Cancelled
from recovery.events import CancelToken, Progress
from recovery.jobs import RestoreJob, run_job
from recovery.repo.repository import Repository
from tests.integration.engine_fixtures import lifeboat
from tests.integration.test_restore_trust import backed_up_pc

pytestmark = pytest.mark.loop


def interrupted_restore(repo_dir, target) -> None:
    """Start a real restore onto `target` and stop it at its first write."""
    token = CancelToken()

    def stop_at_first_write(event):
        if isinstance(event, Progress) and event.phase == "restore" and event.done:
            token.cancel()

    repo = Repository.open(repo_dir)
    try:
        with pytest.raises(Cancelled):
            run_job(RestoreJob(repo, "latest", str(target)), confirm=lambda plan: True,
                    on_event=stop_at_first_write, cancel=token)
    finally:
        repo.close()


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
