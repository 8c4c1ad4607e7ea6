"""Snapshots of the main screens at 80x25 (pytest-textual-snapshot; `--snapshot-update` to accept).

The app runs on the real engine and real disk images. What would vary between runs is frozen:
free space on the test's filesystem (fixed at 8 GiB), and in widgets marked ``-volatile`` the
snapshot ids and dates (content hashes and clock times) are replaced by fixed ones.
"""

from __future__ import annotations

import re

import pytest

from tests.tui.helpers import make_app, ready, wait_screen

pytestmark = pytest.mark.tui
SIZE = (80, 25)


@pytest.fixture(autouse=True)
def frozen(machine, monkeypatch):
    from recovery import discover

    monkeypatch.setattr(discover, "_free_bytes", lambda _path: 8 * 1024**3)
    monkeypatch.setenv("LIFEBOAT_LOG_DIR", str(machine / "logs"))    # shown as logs/...


def freeze_volatile(app) -> None:
    for widget in app.screen.query(".-volatile"):
        text = str(widget.content)
        text = re.sub(r"\b[0-9a-f]{8}\b", "0123abcd", text)
        text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "2026-01-01 12:00", text)
        widget.update(text)


def test_home(machine, snap_compare):
    async def before(pilot):
        await ready(pilot)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_home_live_system(machine, snap_compare):
    async def before(pilot):
        await ready(pilot)

    assert snap_compare(make_app(machine, live=True), terminal_size=SIZE, run_before=before)


def test_help(machine, snap_compare):
    from tui.screens.help import HelpScreen

    async def before(pilot):
        await ready(pilot)
        await pilot.press("f1")
        await wait_screen(pilot, HelpScreen)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_disks(machine, snap_compare):
    from tui.screens.disks import DisksScreen

    async def before(pilot):
        await ready(pilot)
        await pilot.press("d")
        await wait_screen(pilot, DisksScreen)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_backup_destination(machine, snap_compare):
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen

    async def before(pilot):
        await ready(pilot)
        await pilot.press("b")
        await wait_screen(pilot, DiskPickerScreen)
        await pilot.press("enter")
        await wait_screen(pilot, PlacePickerScreen)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_backup_summary(machine, snap_compare):
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen

    async def before(pilot):
        await ready(pilot)
        await pilot.press("b")
        await wait_screen(pilot, DiskPickerScreen)
        await pilot.press("enter")
        await wait_screen(pilot, PlacePickerScreen)
        await pilot.press("enter")
        await wait_screen(pilot, BackupSummaryScreen)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


async def _to_target_picker(pilot):
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    await ready(pilot)
    await pilot.press("r")
    await wait_screen(pilot, PlacePickerScreen)
    await pilot.press("enter")
    await wait_screen(pilot, SnapshotPickerScreen)
    await pilot.press("enter")
    await wait_screen(pilot, DiskPickerScreen)


def test_restore_plan(machine, snap_compare):
    from tui.screens.plan import PlanScreen

    async def before(pilot):
        await _to_target_picker(pilot)
        await pilot.press("down", "enter")
        await wait_screen(pilot, PlanScreen, timeout=60)
        freeze_volatile(pilot.app)
        await pilot.pause(0.1)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_restore_confirm(machine, snap_compare):
    from tui.screens.confirm import ConfirmScreen
    from tui.screens.plan import PlanScreen

    async def before(pilot):
        await _to_target_picker(pilot)
        await pilot.press("down", "enter")
        await wait_screen(pilot, PlanScreen, timeout=60)
        await pilot.press("enter")
        await wait_screen(pilot, ConfirmScreen)
        await pilot.press(*"new-disk")
        for field in pilot.app.screen.query("Input"):
            field.cursor_blink = False                   # a blinking cursor would make two pictures
        await pilot.pause(0.1)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_refusal_dialog(machine, snap_compare):
    from tui.screens.message import MessageDialog

    async def before(pilot):
        await _to_target_picker(pilot)
        await pilot.press("down", "enter")
        await wait_screen(pilot, MessageDialog, timeout=60)

    app = make_app(machine, disks=("demo-pc.img", "small.img"))
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_home_console_colours(machine, snap_compare):
    """What the Linux console shows: the ansi-dark theme main() picks for TERM=linux."""
    async def before(pilot):
        await ready(pilot)

    app = make_app(machine, theme="ansi-dark")
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_file_browser(machine, snap_compare):
    """Get files back: the browser in a user's folder, one folder marked, with its total."""
    from tests.tui.test_tui_get_files import open_browser
    from tests.tui.helpers import wait_for

    async def before(pilot):
        browser = await open_browser(pilot)
        for name in ("home", "alice"):
            await pilot.press(*name)
            await pilot.press("enter")
            await wait_for(pilot, lambda: browser.folder.name == name)
        await pilot.press("down", "space")
        await wait_for(pilot, lambda: None not in browser.marked.values())
        table = browser.query_one("DataTable")
        for row in range(len(browser.entries)):
            table.update_cell(str(row), "date", "2026-01-01 12:00")     # the files' times vary by run
        freeze_volatile(pilot.app)
        await pilot.pause(0.1)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)


def test_manage_backups(machine, snap_compare, monkeypatch):
    """Four backups of one small disk, the standard policy's preview. Dates, ages and the day
    buckets in the reasons are frozen (they are clock times)."""
    from textual.widgets import DataTable

    from tests.integration.prune_history import history, new_repo
    from tests.tui.helpers import wait_for
    from tui.screens.manage import ManageScreen
    from tui.screens.place_picker import PlacePickerScreen

    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(256 * 1024))
    versions = machine / "versions"
    versions.mkdir()
    history(versions, new_repo(machine / "history"), 4)

    async def before(pilot):
        await ready(pilot)
        await pilot.press("m")
        places = await wait_screen(pilot, PlacePickerScreen)
        places.query_one("#places").highlighted = next(
            i for i, p in enumerate(places.places) if str(p.path).endswith("history"))
        await pilot.press("enter")
        screen = await wait_screen(pilot, ManageScreen)
        await wait_for(pilot, lambda: "removed" in str(screen.query_one("#preview").content), what="preview")
        await wait_for(pilot, lambda: not [w for w in screen.workers if w.group == "preview" and w.is_running],
                       what="the last preview")
        await pilot.pause(0.2)
        table = screen.query_one("#snapshots", DataTable)
        columns = list(table.columns)
        for n, row in enumerate(table.rows):
            table.update_cell(row, columns[1], f"2026-01-01 12:0{n}")
            table.update_cell(row, columns[2], "5 minutes")
            why = str(table.get_cell(row, columns[5]))
            frozen = re.sub(r"\d{4}-(W?)\d\d(-\d\d)?",
                            lambda m: "2026-" + ("W01" if m[1] else "01") + ("-01" if m[2] else ""), why)
            table.update_cell(row, columns[5], frozen)
        await pilot.pause(0.1)

    assert snap_compare(make_app(machine, repo="history"), terminal_size=(100, 30), run_before=before)

def test_network_location(machine, snap_compare, monkeypatch):
    """The location screen for an S3 location: the URL, the masked key fields and the endpoint."""
    from textual.widgets import Input

    from tui.screens.network_location import NetworkLocationScreen
    from tui.screens.place_picker import PlacePickerScreen

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LIFEBOAT_S3_ENDPOINT", "LIFEBOAT_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIFEBOAT_DATA_DIR", str(machine / "data"))

    async def before(pilot):
        await ready(pilot)
        await pilot.press("r")
        await wait_screen(pilot, PlacePickerScreen)
        await pilot.press("n")
        form = await wait_screen(pilot, NetworkLocationScreen)
        form.query_one("#url", Input).value = "s3://backups/office"
        form.query_one("#aws_access_key_id", Input).value = "AKIAEXAMPLE"
        form.query_one("#aws_secret_access_key", Input).value = "secret-example"
        await pilot.pause(0.1)

    assert snap_compare(make_app(machine), terminal_size=SIZE, run_before=before)
