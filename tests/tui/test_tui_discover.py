"""Repositories are found, not typed: partitions of attached disks are mounted read-only,
searched, and unmounted; a disk holding backups is never offered as a restore target."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from textual.widgets import OptionList

from recovery import discover
from tests.tui.conftest import copy_tree
from tests.tui.helpers import make_app, ready, screen_text, wait_screen


def make_backup_drive(machine: Path) -> Path:
    """backups.img: GPT, one ext4 partition "USB-BACKUP" holding the golden repository in
    the folder lifeboat/ (one level down, where people put it)."""
    content = machine / "usb-content"
    content.mkdir()
    copy_tree(machine / "repo", content / "lifeboat")
    (content / "holiday-photos").mkdir()
    part = machine / "usb-part.img"
    subprocess.run(["truncate", "-s", "63M", str(part)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "USB-BACKUP", "-d", str(content), str(part)], check=True)
    disk = machine / "backups.img"
    subprocess.run(["truncate", "-s", "65M", str(disk)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, size=129024, type=L\n",
                   text=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
                   check=True)
    part.unlink()
    return disk


def mounted_devices() -> set[str]:
    return {line.split()[0] for line in Path("/proc/mounts").read_text().splitlines()}


def test_plain_directories(machine):
    place = discover.check_directory(machine / "repo")
    assert place.is_repository and place.snapshots == 1 and place.names == ("demo-pc",)
    assert place.free > 0
    empty = discover.check_directory(machine / "nothing-yet")
    assert not empty.is_repository and empty.path.endswith("nothing-yet")
    (machine / "photos").mkdir()
    (machine / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(discover.RepositoryError):
        discover.check_directory(machine / "photos")


@pytest.mark.loop
def test_scan_finds_repository_one_level_down_and_unmounts(machine, loops):
    from recovery.probe.disks import describe

    dev = loops.attach(make_backup_drive(machine))
    disk = describe(dev)
    places = discover.scan([disk])
    repos = [p for p in places if p.is_repository]
    assert len(repos) == 1
    found = repos[0]
    assert found.disk == dev and found.partition == f"{dev}p1" and found.subpath == "lifeboat"
    assert found.snapshots == 1 and found.names == ("demo-pc",) and found.label == "USB-BACKUP"
    assert found.free > 0 and found.path is None
    assert f"{dev}p1" not in mounted_devices()          # unmounted after the look
    assert discover.disks_holding_repositories(places) == {dev}
    # Using it mounts it again (read-only), and closing unmounts.
    mounts = discover.Mounts()
    path = mounts.path_of(found)
    assert (path / "lifeboat-repo.json").is_file()
    assert f"{dev}p1" in mounted_devices()
    mounts.close()
    assert f"{dev}p1" not in mounted_devices()


@pytest.mark.loop
@pytest.mark.tui
def test_disk_holding_backups_is_found_and_not_a_restore_target(machine, loops):
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    dev = loops.attach(make_backup_drive(machine))

    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", "new-disk.img", dev), repo=None, scan_partitions=True)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            assert "1 backup repository (1 snapshot)" in screen_text(app)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            text = screen_text(app)
            assert f"{dev}p1 (USB-BACKUP):/lifeboat" in text and "1 snapshot of demo-pc" in text
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            picker = await wait_screen(pilot, DiskPickerScreen)
            options = picker.query_one(OptionList)
            by_path = {d.path: i for i, d in enumerate(picker.disks)}
            usb = options.get_option(str(by_path[dev]))
            assert usb.disabled
            assert not options.get_option(str(by_path[str(machine / "new-disk.img")])).disabled
            text = screen_text(app)
            assert "HOLDS BACKUPS" in text and "Cannot be chosen: it holds backups" in text
            await pilot.press("escape", "escape")
        assert f"{dev}p1" not in mounted_devices()      # the session unmounted what it mounted

    asyncio.run(scenario())
