"""Every flow of the TUI, driven with Pilot against the real engine on disk-image files."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, OptionList, Static

from recovery.repo.repository import Repository
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen, to_place_picker, type_folder

pytestmark = pytest.mark.tui


def run(coro):
    return asyncio.run(coro)


def snapshots(repo: Path):
    r = Repository.open(repo)
    try:
        return r.snapshots()
    finally:
        r.close()


def test_home_shows_what_was_found(machine):
    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            text = screen_text(app)
            assert "Back up a disk" in text and "Restore a backup" in text and "Check backups" in text
            assert "2 disks · 1 backup repository (1 snapshot)" in text
            assert "Reboot" not in text and "Power off" not in text and "Shell" not in text

    run(scenario())


def test_live_system_offers_shell_reboot_poweroff(machine):
    async def scenario():
        app = make_app(machine, live=True)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            text = screen_text(app)
            for entry in ("Shell", "Reboot", "Power off"):
                assert entry in text

    run(scenario())


def test_help_on_f1_and_question_mark(machine):
    from tui.screens.help import HelpScreen
    from tui.screens.home import HomeScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("f1")
            await wait_screen(pilot, HelpScreen)
            assert "Keys" in screen_text(app)
            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)
            await pilot.press("question_mark")
            await wait_screen(pilot, HelpScreen)
            await pilot.press("escape")
            await wait_screen(pilot, HomeScreen)

    run(scenario())


def test_disks_screen_draws_each_disk(machine):
    from tui.screens.disks import DisksScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("d")
            await wait_screen(pilot, DisksScreen)
            text = screen_text(app)
            assert "demo-pc.img" in text and "new-disk.img" in text
            assert "vfat" in text and "DEMO-ESP" in text and "ext4" in text and "demo-root" in text
            assert "no partition table" in text

    run(scenario())


def test_backup_flow_makes_a_snapshot(machine):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.home import HomeScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.result import ResultScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("b")
            picker = await wait_screen(pilot, DiskPickerScreen)
            assert picker.query_one(OptionList).highlighted == 0      # demo-pc.img first
            await pilot.press("enter")
            places = await wait_screen(pilot, PlacePickerScreen)
            assert "(suggested)" in screen_text(app) and "1 snapshot" in screen_text(app)
            assert places.default is not None and places.default.is_repository
            await pilot.press("enter")
            summary = await wait_screen(pilot, BackupSummaryScreen)
            name = summary.query_one("#name", Input)
            assert name.value == "demo-pc"          # the name already used for this disk image...
            name.value = ""
            name.focus()
            await pilot.press(*"office-pc")          # ...but a person may type another
            await pilot.press("enter")
            done = await wait_screen(pilot, ResultScreen, timeout=120)
            text = screen_text(app)
            assert "Backup finished" in text and "office-pc" in text
            await pilot.press("enter")
            await wait_screen(pilot, HomeScreen)
            await wait_for(pilot, lambda: "2 snapshots" in screen_text(app), what="status updated")
            del done

    run(scenario())
    names = [s.name for s in snapshots(machine / "repo")]
    assert names == ["demo-pc", "office-pc"]


def test_backup_to_a_typed_new_folder(machine):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.new_repository import NewRepositoryDialog
    from tui.screens.result import ResultScreen

    target = machine / "usb" / "backups"
    target.parent.mkdir()          # a stick's folder; Lifeboat makes only the last folder of a typed path

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            await type_folder(pilot, target)
            summary = await wait_screen(pilot, BackupSummaryScreen)
            assert "a new one will be made here" in screen_text(app)
            assert summary.query_one("#name", Input).value == "demo-pc"   # default from the image's name
            await pilot.press("f10")
            await wait_screen(pilot, NewRepositoryDialog)
            await pilot.press("enter")                                   # no passphrase: not encrypted
            await wait_screen(pilot, ResultScreen, timeout=120)

    run(scenario())
    assert [s.name for s in snapshots(target)] == ["demo-pc"]


def _sfdisk(path: Path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["partitiontable"]


def _ext4_file(image: Path, part_index: int, inside: str) -> bytes:
    table = _sfdisk(image)
    p = table["partitions"][part_index]
    offset, size = p["start"] * 512, p["size"] * 512
    raw = image.parent / f"part{part_index}.raw"
    subprocess.run(["dd", f"if={image}", f"of={raw}", "bs=1M", f"skip={offset}", f"count={size}",
                    "iflag=skip_bytes,count_bytes", "status=none"], check=True)
    out = subprocess.run(["debugfs", "-R", f"cat {inside}", str(raw)], capture_output=True, check=True)
    return out.stdout


def test_restore_flow_with_typed_confirmation(machine):
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.home import HomeScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.plan import PlanScreen
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            history = await wait_screen(pilot, SnapshotPickerScreen)
            assert history.query_one(DataTable).row_count == 1
            assert "demo-pc" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("down", "enter")                   # new-disk.img
            plan = await wait_screen(pilot, PlanScreen, timeout=60)
            text = screen_text(app)
            assert "Now" in text and "After" in text and "will be destroyed" in text
            assert plan.plan.target.path.endswith("new-disk.img")
            await pilot.press("enter")                           # Continue
            confirm = await wait_screen(pilot, ConfirmScreen)
            await pilot.press(*"demo-pc.img", "enter")                # the wrong disk's name: refused
            await pilot.pause(0.2)
            assert app.screen is confirm
            assert "That is not the name" in screen_text(app)
            field = confirm.query_one(Input)
            field.value = ""
            await pilot.press(*"new-disk.img", "enter")
            await wait_screen(pilot, ResultScreen, timeout=120)
            assert "Restore finished" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, HomeScreen)

    run(scenario())
    before, after = _sfdisk(machine / "demo-pc.img"), _sfdisk(machine / "new-disk.img")
    assert after["id"] == before["id"]
    assert [p["uuid"] for p in after["partitions"]] == [p["uuid"] for p in before["partitions"]]
    letter = _ext4_file(machine / "new-disk.img", 1, "/home/alice/Documents/letter.txt")
    assert letter == _ext4_file(machine / "demo-pc.img", 1, "/home/alice/Documents/letter.txt")
    assert b"Lifeboat had a backup" in letter


def test_restore_refuses_a_too_small_target(machine):
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.message import MessageDialog
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", "small.img"))
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)
            await pilot.press("down", "enter")                   # small.img
            dialog = await wait_screen(pilot, MessageDialog, timeout=60)
            text = screen_text(app)
            assert "too small" in text
            assert "Details are in" in text and dialog.log_path and Path(dialog.log_path).exists()
            assert "Traceback" not in text
            await pilot.press("enter")
            await wait_screen(pilot, DiskPickerScreen)          # back to choosing a target

    run(scenario())
    assert (machine / "small.img").stat().st_size == 32 * 1024 * 1024
    assert subprocess.run(["sfdisk", "-d", str(machine / "small.img")], capture_output=True).returncode != 0


def test_foreign_folder_is_an_error_dialog_not_a_traceback(machine):
    from tui.screens.message import MessageDialog
    from tui.screens.place_picker import PlacePickerScreen

    foreign = machine / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"not a repository")

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("c")
            await wait_screen(pilot, PlacePickerScreen)
            await type_folder(pilot, foreign)
            await wait_screen(pilot, MessageDialog)
            # The dialog's words, not the screen's: a long path wraps the sentence across lines.
            said = " ".join(str(w.render()) for w in app.screen.query(Static))
            assert "not a Lifeboat repository" in said and "Traceback" not in said + screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, PlacePickerScreen)

    run(scenario())


def test_check_all_intact(machine):
    from tui.screens.check_report import CheckReportScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("c")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")                           # All snapshots
            report = await wait_screen(pilot, CheckReportScreen, timeout=120)
            assert report.report.ok
            assert "intact" in screen_text(app)

    run(scenario())


def _damage_repository(repo: Path) -> None:
    """Flip one byte in the middle of the biggest pack: real damage, as a bad USB stick does."""
    packs = sorted((p for p in (repo / "packs").rglob("*.pack") if p.is_file()), key=lambda p: p.stat().st_size)
    assert packs, "the repository has no pack files"
    biggest = packs[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 3] ^= 0xFF
    biggest.write_bytes(bytes(data))
    biggest.with_name(biggest.name + ".par").unlink(missing_ok=True)   # no parity: the damage stays


def test_damaged_repository_is_shown_in_red(machine):
    from tui.screens.check_report import CheckReportScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    _damage_repository(machine / "repo")

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("c")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, SnapshotPickerScreen)
            await pilot.press("enter")
            report = await wait_screen(pilot, CheckReportScreen, timeout=120)
            assert not report.report.ok
            text = screen_text(app)
            assert "DAMAGED" in text and "partition" in text
            table = report.query_one(DataTable)
            cell = table.get_row_at(0)[3]
            assert "DAMAGED" in cell.plain and "red" in str(cell.style)
            title = report.query_one(".screen-title")
            assert title.has_class("-bad")

    run(scenario())


def test_power_actions_ask_first_and_are_refused_off_the_live_system(machine, monkeypatch):
    """The live menu's Reboot asks, then recovery.system refuses: this is not the live system
    (LIFEBOAT_LIVE is unset here, so nothing can switch the test machine off)."""
    from tui.screens.home import HomeScreen
    from tui.screens.message import MessageDialog
    from tui.screens.question import QuestionDialog

    monkeypatch.delenv("LIFEBOAT_LIVE", raising=False)

    async def scenario():
        app = make_app(machine, live=True)          # the menu of the live system, on a test machine
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            menu = app.screen.query_one(OptionList)
            menu.highlighted = menu.get_option_index("reboot")
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            assert "Restart the computer?" in screen_text(app)
            await pilot.press("escape")                  # Cancel: nothing happens
            await wait_screen(pilot, HomeScreen)
            await pilot.press("enter")
            await wait_screen(pilot, QuestionDialog)
            await pilot.press("tab", "enter")            # "Restart"
            await wait_screen(pilot, MessageDialog)
            assert "only available on the Lifeboat live system" in screen_text(app)

    run(scenario())


def test_an_unreadable_disk_is_named_not_fatal(machine):
    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", "gone.img"))
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            text = screen_text(app)
            assert "1 disk · 1 backup repository" in text and "1 unreadable" in text

    run(scenario())


def test_restore_asks_which_computer_when_a_repository_holds_several(machine):
    from recovery.backup import backup
    from tui.screens.name_picker import NamePickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    repo = Repository.open(machine / "repo")
    backup(str(machine / "demo-pc.img"), repo, "office-pc")
    repo.close()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            assert "2 snapshots of demo-pc, office-pc" in screen_text(app)
            await pilot.press("enter")
            await wait_screen(pilot, NamePickerScreen)
            text = screen_text(app)
            assert "demo-pc" in text and "office-pc" in text
            await pilot.press("down", "enter")
            history = await wait_screen(pilot, SnapshotPickerScreen)
            assert "Backups of “office-pc”" in screen_text(app)
            assert [s.name for s in history.snapshots] == ["office-pc"]
            await pilot.press("escape")                      # back to the computers
            await wait_screen(pilot, NamePickerScreen)

    run(scenario())


def test_a_flow_replaced_while_it_waits_for_the_scan_shows_no_error(machine):
    """Found in the live system: "Restore finished" → Done starts a rescan, which takes a while
    there, and the restore flow waits for it; choosing the next thing on Home meanwhile (the
    flow group is exclusive) cancelled that flow inside Textual's Worker.wait, which cancelled
    the scan too and showed "Could not finish that: WorkerCancelled" over the menu. Here the
    scan is made slow (the real one, 1.5 s late), Check is started and waits for it, and Disks
    replaces Check: no dialog, the scan ends, and its result is shown."""
    from tui.screens.disks import DisksScreen
    from tui.screens.message import MessageDialog

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            refresh = app.session.refresh

            def slow_refresh():
                import time

                time.sleep(1.5)
                refresh()

            app.session.refresh = slow_refresh
            await pilot.press("f5")
            await wait_for(pilot, lambda: app.scanning, what="the slow scan to start")
            app.start("check")
            await pilot.pause(0.3)
            assert app.scanning, "the check flow must still be waiting for the scan"
            app.start("disks")
            await wait_screen(pilot, DisksScreen, timeout=10)
            await wait_for(pilot, lambda: not app.scanning, timeout=10, what="the scan to end")
            await pilot.pause(0.3)
            assert not any(isinstance(s, MessageDialog) for s in app.screen_stack), screen_text(app)
            assert app.scan_error is None
            assert "Looking for disks" not in app.status_text()

    run(scenario())
