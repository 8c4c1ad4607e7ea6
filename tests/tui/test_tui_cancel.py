"""Cancel is safe: a cancelled backup leaves the repository valid, with nothing half-made in it."""

from __future__ import annotations

import asyncio

import pytest

from recovery.repo.repository import Repository
from recovery.verify import verify
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen

pytestmark = pytest.mark.tui


def test_cancel_a_backup_keeps_the_repository_valid(machine, slow_pc):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.home import HomeScreen
    from tui.screens.job import JobScreen
    from tui.screens.message import MessageDialog
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.question import QuestionDialog

    async def scenario():
        # zstd level 19 on 110 MB of base64 text: the job runs long enough for a person to press Cancel.
        app = make_app(machine, disks=(slow_pc.name,), repo="fresh", zstd_level=19)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("b")
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            summary = await wait_screen(pilot, BackupSummaryScreen)
            summary.query_one("#name").value = "to-be-cancelled"
            await pilot.press("f10")
            job = await wait_screen(pilot, JobScreen)
            await pilot.press("escape")                      # Cancel asks first
            await wait_screen(pilot, QuestionDialog)
            assert "earlier backup" in screen_text(app)
            await pilot.press("tab", "enter")                # "Stop"
            await wait_for(pilot, lambda: job.token.cancelled, what="the job told to stop")
            await wait_screen(pilot, MessageDialog, timeout=120)
            assert "Backup stopped" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, HomeScreen)

    asyncio.run(scenario())
    repo = Repository.open(machine / "fresh")
    try:
        assert repo.snapshots() == []
        report = verify(repo)
        assert report.ok, report.damaged
    finally:
        repo.close()
