"""The disk map and the words for people: pure functions, checked without running the app."""

from __future__ import annotations

import pytest
from rich.console import Console

from recovery.events import Progress
from recovery.model.disk import DiskInfo, PartInfo
from tui import humanize
from tui.screens.job import describe
from tui.widgets.disk_map import DiskMapRenderable, Segment, _widths, from_disk

pytestmark = pytest.mark.tui
MiB = 1024 * 1024


def render(model, width=60) -> list[str]:
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    console.print(DiskMapRenderable(model))
    return console.export_text().splitlines()


def disk(**kw) -> DiskInfo:
    parts = (
        PartInfo(1, "/dev/sdz1", 1 * MiB, 100 * MiB, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "vfat", "ESP"),
        PartInfo(2, "/dev/sdz2", 101 * MiB, 16 * MiB, "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"),
        PartInfo(3, "/dev/sdz3", 117 * MiB, 800 * MiB, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "ntfs", "Windows"),
    )
    base = dict(path="/dev/sdz", size=1024 * MiB, model="Samsung SSD 870", serial="S6PNNX0", transport="sata",
                table="gpt", partitions=parts)
    base.update(kw)
    return DiskInfo(**base)


def test_widths_are_to_scale_and_fill_the_bar():
    segs = tuple(Segment(i, 0, size) for i, size in enumerate((10, 30, 60), 1))
    assert _widths(segs, 100, 50) == [5, 15, 30]
    tiny = (Segment(1, 0, 1), Segment(2, 1, 999))
    cells = _widths(tiny, 1000, 40)
    assert sum(cells) == 40 and cells[0] >= 3          # a tiny partition stays visible


def test_disk_map_names_model_serial_bus_and_partitions():
    lines = render(from_disk(disk()))
    head = " ".join(lines[:2])                          # a long head wraps rather than being cut
    assert "sdz" in head and "Samsung SSD 870" in head and "serial S6PNNX0" in head and "sata" in head
    assert "GPT" in head and "1.0 GiB" in head
    bar = next(line for line in lines if "3 ntfs Windows" in line)
    assert len(bar) == 60                               # the bar fills the width
    legend = " ".join(lines[lines.index(bar) + 1:])
    assert "1 vfat “ESP” 100.0 MiB" in legend and "3 ntfs “Windows” 800.0 MiB" in legend
    assert "2 unknown" in legend


def test_system_disk_and_repository_disk_are_marked():
    head = " ".join(render(from_disk(disk(is_system=True, holds_repository=True)))[:2])
    assert "SYSTEM DISK" in head and "HOLDS BACKUPS" in head


def test_used_share_is_shown_when_known():
    legend = " ".join(render(from_disk(disk(), used={3: 200 * MiB})))
    assert "25% used" in legend


def test_progress_words():
    head, detail = describe(Progress("backup", 50 * MiB, 200 * MiB, partition=2, stored_new=5 * MiB,
                                     rate=100 * MiB, eta=1.5))
    assert head == "Copying the used blocks · partition 2"
    assert "50.0 MiB of 200.0 MiB" in detail and "100.0 MiB/s" in detail and "2 s left" in detail
    assert "90% saved" in detail


def test_humanize():
    assert humanize.size(512) == "512 B"
    assert humanize.size(3 * 1024**3) == "3.0 GiB"
    assert humanize.duration(75) == "1 min 15 s"
    assert humanize.duration(None) == "--"
    assert humanize.when(None) == "never"
    assert humanize.percent(1, 4) == "25%"


def test_disk_picker_starts_on_the_first_disk_that_may_be_chosen():
    import asyncio

    from textual.app import App
    from textual.widgets import OptionList

    from tui.screens.disk_picker import DiskPickerScreen

    disks = [disk(path="/dev/sdy", is_system=True), disk(path="/dev/sdz")]

    chosen = []

    class Probe(App):
        def on_mount(self):
            self.push_screen(DiskPickerScreen("Pick", "", disks, {"/dev/sdy": "the system runs from this disk"}),
                             chosen.append)

    async def scenario():
        app = Probe()
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.pause()
            options = app.screen.query_one(OptionList)
            assert options.get_option_at_index(0).disabled
            assert options.highlighted == 1               # index 1: the separator is not an option
            await pilot.press("up", "enter")             # the system disk cannot be reached
            await pilot.pause()

    asyncio.run(scenario())
    assert [d.path for d in chosen] == ["/dev/sdz"]
