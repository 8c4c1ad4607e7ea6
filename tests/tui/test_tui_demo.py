"""scripts/demo end to end: build the demo PC and its first backup, crash it, restore it in the TUI."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from recovery.repo.repository import Repository
from tests.tui.conftest import DEMO
from tests.tui.helpers import make_app, ready, screen_text, wait_screen
from tests.tui.test_tui_flows import _ext4_file, _sfdisk

pytestmark = pytest.mark.tui


def demo(demo_dir, *args):
    env = dict(os.environ, LIFEBOAT_DEMO_DIR=str(demo_dir))
    return subprocess.run([str(DEMO), *args], env=env, capture_output=True, text=True, timeout=600)


def test_demo_crash_and_restore(tmp_path, monkeypatch):
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    d = tmp_path / "demo"
    built = demo(d, "--no-tui")
    assert built.returncode == 0, built.stderr
    repo = Repository.open(d / "repo")
    assert [s.name for s in repo.snapshots()] == ["demo-pc"]
    repo.close()
    letter_before = _ext4_file(d / "demo-pc.img", 1, "/home/alice/Documents/letter.txt")

    crashed = demo(d, "--crash", "--no-tui")
    assert crashed.returncode == 0, crashed.stderr
    assert "CRASH" in crashed.stdout
    assert (d / "demo-pc.img").stat().st_size == 128 * 1024 * 1024
    assert subprocess.run(["sfdisk", "-d", str(d / "demo-pc.img")], capture_output=True).returncode != 0

    monkeypatch.chdir(d)

    async def scenario():
        app = make_app(d, demo=True)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.pause(0.2)
            assert "“crashed”" in screen_text(app)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("enter")                           # demo-pc.img, blank now
            await wait_screen(pilot, PlanScreen, timeout=60)
            await pilot.press("enter")
            await wait_screen(pilot, ConfirmScreen)
            await pilot.press(*"demo-pc.img", "enter")
            await wait_screen(pilot, ResultScreen, timeout=120)

    asyncio.run(scenario())
    assert _sfdisk(d / "demo-pc.img")["id"] == "5E1F0B0A-7D3C-4C1B-9E5A-1D2C3B4A5F60"
    assert _ext4_file(d / "demo-pc.img", 1, "/home/alice/Documents/letter.txt") == letter_before
