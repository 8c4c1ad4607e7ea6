"""Cancel is safe: a cancelled backup leaves the repository valid, with nothing half-made in it."""

from __future__ import annotations

import asyncio

import pytest

from recovery.repo.repository import Repository
from recovery.verify import verify
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen, to_place_picker

pytestmark = pytest.mark.tui


def test_cancel_a_backup_keeps_the_repository_valid(machine, slow_pc):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.home import HomeScreen
    from tui.screens.job import JobScreen
    from tui.screens.message import MessageDialog
    from tui.screens.question import QuestionDialog

    async def scenario():
        # zstd level 19 on 110 MB of base64 text: the job runs long enough for a person to press Cancel.
        app = make_app(machine, disks=(slow_pc.name,), repo="fresh", zstd_level=19)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            await pilot.press("enter")
            summary = await wait_screen(pilot, BackupSummaryScreen)
            summary.query_one("#name").value = "to-be-cancelled"
            await pilot.press("f10")
            from tui.screens.new_repository import NewRepositoryDialog
            await wait_screen(pilot, NewRepositoryDialog)              # "fresh" is new: not encrypted
            await pilot.press("enter")
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


def test_cancel_a_restore_leaves_the_target_marked_and_says_so(machine):
    """Stop pressed while the restore writes (onto a slow disk, as a cheap USB stick is): the
    app says the disk is marked as an incomplete restore, and it is."""
    from recovery.probe.restore_mark import read_mark
    from tests.integration.faulty_disk import faulty_disk
    from tests.tui.test_tui_restore import confirm_and_run, to_plan
    from tui.screens.home import HomeScreen
    from tui.screens.job import JobScreen
    from tui.screens.message import MessageDialog
    from tui.screens.question import QuestionDialog

    backing = machine / "new-disk.img"
    with faulty_disk(backing, machine / "slow", "--write-mibps", "2") as slow:
        async def scenario():
            app = make_app(machine, disks=("demo-pc.img", "slow/disk.img"))
            async with app.run_test(size=(80, 25)) as pilot:
                await ready(pilot)
                plan = await to_plan(pilot)
                assert plan.plan.target.path == str(slow)
                await confirm_and_run(pilot, "disk.img")
                job = await wait_screen(pilot, JobScreen)
                await wait_for(pilot, lambda: read_mark(str(backing)) is not None, timeout=120,
                               what="the restore to start writing")
                await pilot.press("escape")
                await wait_screen(pilot, QuestionDialog)
                assert "incomplete restore" in screen_text(app)
                await pilot.press("tab", "enter")                # "Stop"
                await wait_for(pilot, lambda: job.token.cancelled, what="the job told to stop")
                await wait_screen(pilot, MessageDialog, timeout=120)
                text = " ".join(screen_text(app).split())
                assert "Restore stopped" in text and "marked as an incomplete restore" in text, text
                await pilot.press("enter")
                await wait_screen(pilot, HomeScreen)

        asyncio.run(scenario())
    mark = read_mark(str(backing))
    assert mark is not None and mark.name == "demo-pc"


def test_sigterm_mid_copy_stops_the_copy_and_removes_its_partial_file(machine, tmp_path):
    """SIGTERM (or SIGHUP) while a job runs: the app cancels it as its Cancel button does, then
    ends. A real copy_out of a real file, held after its first MiB until the signal is handled:
    it stops at its next block and removes the partial file; the app ends with 128 + 15."""
    import random
    import signal
    import threading

    from recovery.browse.files import copy_out
    from recovery.events import Progress
    from tui.screens.job import JobScreen

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(random.Random(1).randbytes(8 * 1024 * 1024))
    dest = tmp_path / "dest"
    dest.mkdir()
    midway = threading.Event()
    seen = {}

    def job(on_event, cancel):
        def sink(event):
            on_event(event)
            if isinstance(event, Progress) and 0 < event.done < event.total and not midway.is_set():
                seen["partial"] = (dest / "big.bin").exists()
                midway.set()
                for _ in range(200):            # until the app has handled the signal
                    if cancel.cancelled:
                        break
                    threading.Event().wait(0.05)
        try:
            return copy_out([src / "big.bin"], src, dest, on_event=sink, cancel=cancel)
        except BaseException as exc:
            seen["ended"] = type(exc).__name__
            raise

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            app.push_screen(JobScreen("Copying", job, cancel_title="Stop?", cancel_text="Stop copying?"))
            await wait_for(pilot, midway.is_set, what="the copy halfway")
            app.stop_for_signal(signal.SIGTERM)
            await pilot.pause(0.2)
        return app.return_value

    assert asyncio.run(scenario()) == 143
    assert seen == {"partial": True, "ended": "Cancelled"}
    assert list(dest.iterdir()) == []          # the file being written was removed
