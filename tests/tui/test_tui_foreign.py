"""Images other tools made are found on attached drives beside repositories, with their origin,
and restored through the same disk choice, plan, confirmation and progress. A real VHDX (made by
qemu-img from the demo PC) on a real ext4 partition of a loop device."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from textual.widgets import OptionList

from tests import fsimages as fi
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen
from tests.tui.test_tui_discover import mounted_devices
from tests.tui.test_tui_restore import confirm_and_run

pytestmark = [pytest.mark.tui, pytest.mark.loop]


def make_drive_with_vhdx(machine: Path) -> Path:
    """images.img: GPT, one ext4 partition "OLD-BACKUPS" holding Backups/demo-pc.vhdx."""
    content = machine / "drive-content"
    (content / "Backups").mkdir(parents=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", str(machine / "demo-pc.img"),
                    str(content / "Backups" / "demo-pc.vhdx")], check=True)
    part = machine / "drive-part.img"
    subprocess.run(["truncate", "-s", "127M", str(part)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "OLD-BACKUPS", "-d", str(content), str(part)], check=True)
    disk = machine / "images.img"
    subprocess.run(["truncate", "-s", "129M", str(disk)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, size=260096, type=L\n",
                   text=True, check=True)
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
                   check=True)
    part.unlink()
    return disk


def test_a_vhdx_on_a_drive_is_listed_and_restored(machine, loops):
    from recovery.probe.table import read_layout
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.home import HomeScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.result import ResultScreen

    dev = loops.attach(make_drive_with_vhdx(machine))
    target = machine / "new-disk.img"

    async def scenario():
        app = make_app(machine, disks=(dev, "new-disk.img"), repo=None, scan_partitions=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            text = screen_text(app)
            assert f"{dev}p1 (OLD-BACKUPS):/Backups/demo-pc.vhdx" in text
            assert "VHDX image, " in text and ", 2 partitions" in text
            await pilot.press("enter")
            picker = await wait_screen(pilot, DiskPickerScreen, timeout=60)
            options = picker.query_one(OptionList)
            by_path = {d.path: i for i, d in enumerate(picker.disks)}
            assert options.get_option(str(by_path[dev])).disabled      # the drive the image is on
            options.highlighted = by_path[str(target)]
            await pilot.press("enter")
            plan = await wait_screen(pilot, PlanScreen, timeout=60)
            assert "(the VHDX image " in screen_text(app)
            assert plan.plan.actions[0].describe().startswith("Read and check the VHDX image")
            await confirm_and_run(pilot)
            await wait_screen(pilot, ResultScreen, timeout=180)
            assert "Restore finished" in screen_text(app)
            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)
            await pilot.pause(0.5)
            await wait_for(pilot, lambda: not app.scanning, what="the rescan after the restore")
        assert f"{dev}p1" not in mounted_devices()      # the session unmounted what it mounted

    asyncio.run(scenario())
    saved = {p.number: p for p in read_layout(str(machine / "demo-pc.img")).partitions}
    restored = {p.number: p for p in read_layout(str(target)).partitions}
    for number, p in saved.items():
        q = restored[number]
        fs = "ext4" if p.type.upper() != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" else "vfat"
        assert fi.fsck_clean(fs, target, q.start, q.size)
        if fs == "ext4":
            assert fi.ext_tree(target, q.start, q.size) == fi.ext_tree(machine / "demo-pc.img", p.start, p.size)
        else:
            assert fi.vfat_tree(target, q.start) == fi.vfat_tree(machine / "demo-pc.img", p.start)
