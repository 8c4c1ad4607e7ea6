"""Restore in the TUI through the engine's job layer: the plan's own sentences, an interrupted
restore shown and resumed, a damaged snapshot salvaged. Real images, a real repository, real
damage (4 bytes overwritten in a pack) and a real interrupted restore (stopped by its CancelToken)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import pytest
from rich.console import Console
from textual.widgets import Input

from recovery.probe.restore_mark import read_mark
from tests.tui.helpers import (
    damage_chunk, interrupted_restore, make_app, ready, screen_text, wait_for, wait_screen,
)

pytestmark = pytest.mark.tui


def run(coro):
    return asyncio.run(coro)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def words(text: str) -> str:
    return " ".join(text.split())


def widget_text(widget) -> str:
    """All of a Static's text (also what is scrolled away), with wrapping undone."""
    console = Console(width=1000, file=io.StringIO(), record=True)
    console.print(widget.content)
    return words(console.export_text())


async def to_plan(pilot, *, target_down: int = 1):
    """From Home: restore, the repository, its snapshot, the target; returns the PlanScreen."""
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    await pilot.press("r")
    await wait_screen(pilot, PlacePickerScreen)
    await pilot.press("enter")
    await wait_screen(pilot, SnapshotPickerScreen)
    await pilot.press("enter")
    await wait_screen(pilot, DiskPickerScreen)
    await pilot.press(*["down"] * target_down, "enter")
    return await wait_screen(pilot, PlanScreen, timeout=60)


async def confirm_and_run(pilot, name: str = "new-disk.img") -> None:
    from tui.screens.confirm import ConfirmScreen

    await pilot.press("enter")                               # Continue on the plan
    confirm = await wait_screen(pilot, ConfirmScreen)
    confirm.query_one(Input).value = name
    await pilot.press("enter")


def test_plan_screen_shows_the_engine_sentences(machine):
    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            screen = await to_plan(pilot)
            plan = screen.plan
            assert plan.actions and plan.layout_changes and not plan.resume
            steps = widget_text(screen.query_one("#actions"))
            for i, action in enumerate(plan.actions, 1):
                assert f"{i}. {words(action.describe())}" in steps
            changes = widget_text(screen.query_one("#changes"))
            for sentence in plan.layout_changes:
                assert words(sentence) in changes
            destroyed = widget_text(screen.query_one("#destroyed"))
            assert all(words(d) in destroyed for d in plan.destroyed)
            # The target is named once, in the heading, as the person knows it.
            assert str(machine) not in steps + changes + destroyed
            assert "onto new-disk.img" in screen_text(app)
            assert not screen.query("#resume") and not screen.query("#salvage")

    run(scenario())


def test_an_incomplete_restore_is_shown_and_resumed(machine):
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.disks import DisksScreen
    from tui.screens.home import HomeScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.question import QuestionDialog
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    target = machine / "new-disk.img"
    interrupted_restore(machine / "repo", target)
    mark = read_mark(str(target))
    assert mark is not None and mark.name == "demo-pc"

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("d")
            disks = await wait_screen(pilot, DisksScreen)
            await wait_for(pilot, lambda: "new-disk.img" in screen_text(app), what="the disk maps")
            text = screen_text(app)
            assert "incomplete restore of demo-pc" in text and "not usable" in text
            line = next(m for m in disks.query("DiskMap") if m.model.title == "new-disk.img")
            assert line.model.warning.startswith("incomplete restore of demo-pc ")
            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)

            # "No" to the offer: the usual steps, and the disk picker says the same.
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            text = screen_text(app)
            assert "new-disk.img holds an incomplete restore of “demo-pc” from" in text and "Resume it?" in text
            await pilot.press("escape")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)
            assert "incomplete restore of demo-pc" in screen_text(app)
            await pilot.press("escape", "escape")
            await wait_screen(pilot, HomeScreen)

            # "Resume": straight to the plan for that snapshot and disk.
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            await pilot.press("tab", "enter")                    # Resume
            screen = await wait_screen(pilot, PlanScreen, timeout=60)
            assert screen.plan.resume and screen.plan.target.path == str(target)
            text = screen_text(app)
            assert "it is resumed" in text and "already written and intact is kept" in text
            assert "Resume the incomplete restore" in widget_text(screen.query_one("#actions"))
            await confirm_and_run(pilot)
            await wait_screen(pilot, ResultScreen, timeout=120)
            text = words(screen_text(app))
            assert "Restore finished" in text and "already there from the interrupted restore" in text, text
            await pilot.press("enter")
            await wait_screen(pilot, HomeScreen)

    run(scenario())
    assert read_mark(str(target)) is None


def test_a_damaged_snapshot_is_refused_then_salvaged(machine):
    from tui.screens.home import HomeScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.question import QuestionDialog
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    damage_chunk(machine / "repo", 2)
    target = machine / "new-disk.img"
    untouched = sha256(target)

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await to_plan(pilot)
            await confirm_and_run(pilot)
            offer = await wait_screen(pilot, QuestionDialog, timeout=120)
            text = screen_text(app)
            assert "This backup is damaged" in text and "partition 2" in offer.message
            assert "nothing was written to the target" in offer.message
            assert "`lifeboat" not in offer.message                 # the CLI's advice is a button here
            assert "Restore what is readable (salvage)" in text
            assert sha256(target) == untouched
            await pilot.press("escape")                              # Back
            await wait_screen(pilot, SnapshotPickerScreen)
            assert sha256(target) == untouched

            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)
            await to_plan(pilot)
            await confirm_and_run(pilot)
            await wait_screen(pilot, QuestionDialog, timeout=120)
            await pilot.press("tab", "enter")                        # salvage
            screen = await wait_screen(pilot, PlanScreen, timeout=60)
            assert screen.plan.salvage and "The backup is damaged" in screen_text(app)
            await confirm_and_run(pilot)
            result = await wait_screen(pilot, ResultScreen, timeout=180)
            text = screen_text(app)
            assert "Restore finished, in part" in text and "written as zeros" in text
            assert result.query_one(".screen-title").has_class("-bad")
            listed = widget_text(result.query_one("#damaged Static"))
            return listed, result.damaged

    listed, damaged = run(scenario())
    assert damaged and all(line.startswith("Partition 2") for line in damaged)
    assert any(": /" in line for line in damaged), damaged       # a file named by its path
    assert words(damaged[0]) in listed
    assert read_mark(str(target)) is None                        # the table was written at the end


def test_a_snapshot_a_check_found_damaged_offers_salvage_first(machine):
    from recovery.repo.repository import Repository
    from recovery.verify import verify
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.question import QuestionDialog
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    damage_chunk(machine / "repo", 2)
    repo = Repository.open(machine / "repo")
    try:
        assert not verify(repo).ok
        assert repo.snapshots()[0].damaged, "verify did not record the damage on the snapshot"
    finally:
        repo.close()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            assert "This backup is damaged" in screen_text(app)
            await pilot.press("escape")                              # Back: pick again
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            await pilot.press("tab", "enter")                        # salvage
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("down", "enter")
            screen = await wait_screen(pilot, PlanScreen, timeout=60)
            assert screen.plan.salvage
            assert any(a.kind == "name-damaged-files" for a in screen.plan.actions)

    run(scenario())


def test_a_stopped_restore_says_the_disk_is_marked_and_resumable(machine):
    """The words after Cancel, for a disk a real restore was really stopped on."""
    from recovery.errors import Cancelled
    from recovery.jobs import RestoreJob
    from recovery.repo.repository import Repository
    from tui.flows import restore_finished
    from tui.screens.job import JobOutcome
    from tui.screens.message import MessageDialog

    target = machine / "new-disk.img"
    repo = Repository.open(machine / "repo")
    try:
        snap = repo.snapshots()[0]
        plan = RestoreJob(repo, snap.id, str(target)).plan()
    finally:
        repo.close()
    interrupted_restore(machine / "repo", target)

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            app.run_worker(restore_finished(app, JobOutcome(error=Cancelled(), cancelled=True), "demo-pc", snap,
                                            plan))
            dialog = await wait_screen(pilot, MessageDialog)
            assert dialog.title_text == "Restore stopped"
            assert "marked as an incomplete restore of demo-pc" in dialog.message
            assert "Running the same restore again resumes it" in dialog.message

    run(scenario())
