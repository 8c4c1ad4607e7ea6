"""Get files back, driven with Pilot against the real engine: the demo PC's backup is opened,
its ext4 root mounted read-only, folders marked in the browser, copied to a folder, and every
byte compared with the filesystem the backup was made from. A damaged chunk under one file:
that file is listed as unreadable, the rest is copied."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import fsimages as fi
from tests.own_mounts import views
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen, type_folder

pytestmark = [pytest.mark.tui,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting a saved filesystem needs root")]


def root_partition(image: Path) -> tuple[int, int]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    p = table["partitions"][1]
    return p["start"] * 512, p["size"] * 512


def row_names(browser) -> list[str]:
    return [e.name for e in browser.entries]


async def open_browser(pilot):
    from tui.screens.place_picker import PlacePickerScreen

    await ready(pilot)
    await pilot.press("g")
    await wait_screen(pilot, PlacePickerScreen)
    return await open_from_place(pilot)


async def open_from_place(pilot):
    """From the place picker (the repository highlighted) to the root partition's browser."""
    from tui.screens.file_browser import FileBrowserScreen
    from tui.screens.partition_picker import PartitionPickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    await pilot.press("enter")
    await wait_screen(pilot, SnapshotPickerScreen)
    await pilot.press("enter")
    await wait_screen(pilot, PartitionPickerScreen)
    text = screen_text(pilot.app)
    assert "demo-root  ext4  " in text and "DEMO-ESP  FAT" in text
    await pilot.press("enter")        # the largest readable partition is highlighted: the root
    return await wait_screen(pilot, FileBrowserScreen)


async def copy_marked(pilot, dest: Path):
    from tui.screens.destination_picker import DestinationPickerScreen

    await pilot.press("f2")
    await wait_screen(pilot, DestinationPickerScreen)
    await type_folder(pilot, dest)


async def mark_in_browser(pilot, name: str):
    """In the file browser that opens, go down to the entry `name` and mark it (its size
    counted)."""
    from tui.screens.file_browser import FileBrowserScreen

    browser = await wait_screen(pilot, FileBrowserScreen)
    await wait_for(pilot, lambda: name in row_names(browser))
    while browser.current().name != name:
        await pilot.press("down")
    await pilot.press("space")
    await wait_for(pilot, lambda: None not in browser.marked.values(), what="marked and counted")


async def copy_and_close(pilot, dest: Path):
    """Copy what is marked to `dest`, see it end whole, and leave: the view is unmounted."""
    from tui.screens.result import ResultScreen

    await copy_marked(pilot, dest)
    result = await wait_screen(pilot, ResultScreen, timeout=60)
    assert result.title_text == "Files copied"
    await pilot.press("escape")
    await wait_for(pilot, lambda: not views(), what="the view unmounted")


def test_browse_mark_and_copy_every_byte(machine, tmp_path, monkeypatch):
    from tui.screens import job

    dest = tmp_path / "usb"
    dest.mkdir()
    marked_total = []
    shown = []          # the copy's progress lines, as the job screen words them

    def words(event, phases=None):
        head, detail = real_describe(event, phases)
        shown.append((head, detail))
        return head, detail

    real_describe = job.describe
    from tui import humanize
    monkeypatch.setattr(job, "describe", words)

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            browser = await open_browser(pilot)
            assert len(views()) == 1
            names = row_names(browser)
            dirs = [e.name for e in browser.entries if e.kind == "dir"]
            assert names[:len(dirs)] == sorted(dirs, key=str.casefold)      # folders first
            await pilot.press("h")                                           # type-ahead
            assert browser.current().name == "home"
            await pilot.press("enter")
            await wait_for(pilot, lambda: browser.folder.name == "home")
            await pilot.press("enter")                                       # alice
            await wait_for(pilot, lambda: browser.folder.name == "alice")
            assert row_names(browser) == ["Documents", "Pictures"]
            await pilot.press("enter")                                       # into Documents: sizes, dates
            await wait_for(pilot, lambda: browser.folder.name == "Documents")
            text = screen_text(app)
            assert any(e.kind == "file" for e in browser.entries)
            for e in browser.entries:
                row = next(line for line in text.splitlines() if f" {e.name} " in f" {line} ")
                assert humanize.size(e.size) in row and time.strftime("%Y-%m-%d %H:%M",
                                                                      time.localtime(e.mtime)) in row, row
            await pilot.press("backspace")
            await wait_for(pilot, lambda: browser.folder.name == "alice")
            await pilot.press("space", "space")                              # both marked
            await wait_for(pilot, lambda: None not in browser.marked.values(), what="folders counted")
            marked_total.append(sum(browser.marked.values()))
            assert "Marked: 2 items" in screen_text(app)
            await copy_and_close(pilot, dest)

    asyncio.run(scenario())
    # Progress with rate and time left, ending at the marked total.
    total = humanize.size(marked_total[0])
    assert shown and all(head == "Copying files" for head, _ in shown)
    assert all(f" of {total} · " in detail and "/s · " in detail and detail.endswith(" left")
               for _, detail in shown), shown
    assert shown[-1][1].startswith(f"{total} of {total} · ")
    start, size = root_partition(machine / "demo-pc.img")
    want = fi.ext_tree(machine / "demo-pc.img", start, size)
    (copied,) = dest.iterdir()
    assert copied.name.startswith("Lifeboat demo-pc ")
    got = fi.tree_hashes(copied)
    assert got == {k[len("home/alice/"):]: v for k, v in want.items() if k.startswith("home/alice/")}
    assert "Pictures/holiday-001.jpg" in got and "Documents/letter.txt" in got
    # The running total was what the copy holds.
    assert marked_total == [sum(p.stat().st_size for p in copied.rglob("*") if p.is_file())]


def test_damaged_file_is_listed_and_the_rest_copied(machine, tmp_path):
    from tests.integration.test_salvage import _ext_blocks
    from tui.screens.result import ResultScreen

    # Damage the stored chunk under the middle of holiday-002.jpg (where it lies: debugfs).
    start, size = root_partition(machine / "demo-pc.img")
    with fi.region(machine / "demo-pc.img", start, size) as img:
        blocks = _ext_blocks(img, "/home/alice/Pictures/holiday-002.jpg")
        stats = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True, check=True).stdout
    block_size = int(next(line.split(":")[1] for line in stats.splitlines() if line.startswith("Block size")))
    from tests.loop.test_browse import _damage_window_under

    _damage_window_under(machine / "repo", 2, blocks[len(blocks) // 2] * block_size)
    dest = tmp_path / "usb"
    dest.mkdir()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            browser = await open_browser(pilot)
            for name in ("home", "alice"):
                await pilot.press(*name)
                await pilot.press("enter")
                await wait_for(pilot, lambda: browser.folder.name == name)
            await pilot.press("space", "space")
            await wait_for(pilot, lambda: None not in browser.marked.values())
            await copy_marked(pilot, dest)
            result = await wait_screen(pilot, ResultScreen, timeout=60)
            assert result.title_text == "Files copied, in part"
            text = screen_text(app)
            assert "Could not read: /home/alice/Pictures/holiday-002.jpg" in text
            assert "1 file(s) could not be read" in text
            await pilot.press("escape")

    asyncio.run(scenario())
    want = fi.ext_tree(machine / "demo-pc.img", start, size)
    (copied,) = dest.iterdir()
    got = fi.tree_hashes(copied)
    assert got == {k[len("home/alice/"):]: v for k, v in want.items()
                   if k.startswith("home/alice/") and not k.endswith("holiday-002.jpg")}
    assert not views()


def test_quitting_while_browsing_unmounts(machine):
    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await open_browser(pilot)
            assert len(views()) == 1
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: not views(), what="the view unmounted on quit")

    asyncio.run(scenario())
    assert not views()


def test_a_crash_of_the_tui_while_browsing_unmounts(machine):
    """An error the app does not handle (here raised from a callback on the UI's own loop, as a
    slip in a widget would) ends the TUI with its traceback; the partition it was browsing is
    unmounted on the way out, images and filesystem alike."""
    class Slip(RuntimeError):
        pass

    def slip():
        raise Slip("a slip in the UI")

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await open_browser(pilot)
            assert len(views()) == 1
            app.call_later(slip)
            await pilot.pause(0.5)

    with pytest.raises(Slip):
        asyncio.run(scenario())
    assert not views()


def test_destination_offers_other_drives_with_their_room(machine, tmp_path, loops):
    """With the disks' partitions scanned, the picker offers a USB-like drive (an image with an
    ext4 partition) with its free space, never the saved computer's own disk; the copy lands
    on that drive."""
    from tui.screens.destination_picker import DestinationPickerScreen
    from tui.screens.result import ResultScreen

    stick = machine / "stick.img"
    part = tmp_path / "stick-part.img"
    fi.make_ext4(part, 48 * 1024 * 1024, garbage=False, label="STICK")
    subprocess.run(["truncate", "-s", "50M", str(stick)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(stick)], input="label: gpt\nstart=2048, type=L\n", text=True,
                   check=True)
    subprocess.run(["dd", f"if={part}", f"of={stick}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
                   check=True)
    dev = loops.attach(stick)             # a drive with a partition node, as a USB stick has
    offered = []

    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", "new-disk.img", dev), scan_partitions=True)
        async with app.run_test(size=(80, 25)) as pilot:
            browser = await open_browser(pilot)
            await pilot.press("h", "enter")
            await wait_for(pilot, lambda: browser.folder.name == "home")
            await pilot.press("enter", )
            await wait_for(pilot, lambda: browser.folder.name == "alice")
            await pilot.press("space")
            await wait_for(pilot, lambda: None not in browser.marked.values())
            await pilot.press("f2")
            picker = await wait_screen(pilot, DestinationPickerScreen)
            offered.extend(p.disk for p in picker.places)
            text = screen_text(app)
            assert "(STICK)" in text and " free" in text, text
            await pilot.press("enter")
            await wait_screen(pilot, ResultScreen, timeout=60)
            await pilot.press("escape")

    asyncio.run(scenario())
    assert offered == [dev]                  # not demo-pc.img, the disk the backup was made of
    start, size = root_partition(machine / "demo-pc.img")
    want = fi.ext_tree(machine / "demo-pc.img", start, size)
    got = fi.ext_tree(stick, 1024 * 1024, 48 * 1024 * 1024)
    (folder,) = [k for k, v in got.items() if k.startswith("Lifeboat demo-pc") and "/" not in k]
    docs = {k[len(folder) + 1:]: v for k, v in got.items() if k.startswith(folder + "/")}
    assert docs == {k[len("home/alice/"):]: v for k, v in want.items() if k.startswith("home/alice/Documents")}


def _drive(machine: Path, tmp_path: Path, loops, name: str, label: str, tree: Path | None = None) -> str:
    """A USB-like drive: a disk image with one ext4 partition (holding `tree`), on a loop device."""
    disk = machine / f"{name}.img"
    part = tmp_path / f"{name}-part.img"
    fi.make_ext4(part, 48 * 1024 * 1024, tree, garbage=False, label=label)
    subprocess.run(["truncate", "-s", "50M", str(disk)], check=True)
    subprocess.run(["sfdisk", "--quiet", str(disk)], input="label: gpt\nstart=2048, type=L\n", text=True,
                   check=True)
    subprocess.run(["dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc", "status=none"],
                   check=True)
    part.unlink()
    return loops.attach(disk)


def test_destination_is_never_the_repositorys_drive(machine, tmp_path, loops):
    """The repository on a drive of its own (opened from there, found by the scan): the drives
    offered for the copy are the other stick only, neither the repository's drive nor the
    saved computer's disk, though both are writable and have room."""
    import shutil

    from tui.screens.destination_picker import DestinationPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.result import ResultScreen

    tree = tmp_path / "backup-drive"
    shutil.copytree(machine / "repo", tree / "backups")
    backup_drive = _drive(machine, tmp_path, loops, "backup-drive", "BACKUPS", tree)
    shutil.rmtree(tree)
    stick = _drive(machine, tmp_path, loops, "stick", "STICK")
    offered = []

    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", "new-disk.img", backup_drive, stick), repo=None,
                       scan_partitions=True)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("g")
            picker = await wait_screen(pilot, PlacePickerScreen)
            assert [p.disk for p in picker.places if p.is_repository] == [backup_drive]
            browser = await open_from_place(pilot)
            await pilot.press("h", "enter")
            await wait_for(pilot, lambda: browser.folder.name == "home")
            await pilot.press("enter")
            await wait_for(pilot, lambda: browser.folder.name == "alice")
            await pilot.press("space")
            await wait_for(pilot, lambda: None not in browser.marked.values())
            await pilot.press("f2")
            dest = await wait_screen(pilot, DestinationPickerScreen)
            offered.extend(p.disk for p in dest.places)
            await pilot.press("enter")
            await wait_screen(pilot, ResultScreen, timeout=60)
            await pilot.press("escape")

    asyncio.run(scenario())
    assert offered == [stick]
    got = fi.ext_tree(machine / "stick.img", 1024 * 1024, 48 * 1024 * 1024)
    assert any(k.startswith("Lifeboat demo-pc") and k.endswith("/Documents/letter.txt") for k in got)


def test_files_back_from_an_image_found_on_a_drive(machine, tmp_path, loops):
    """An image another tool made (a VHDX of the demo PC, made by qemu-img) on an attached
    drive is listed in Get files back beside the repository, with its origin; picked, it goes
    straight to its partitions, and a folder copied out of it matches the PC's disk byte for byte."""
    from tests.tui.test_tui_foreign import make_drive_with_vhdx
    from tui.screens.place_picker import PlacePickerScreen

    drive = loops.attach(make_drive_with_vhdx(machine))
    dest = tmp_path / "usb"
    dest.mkdir()

    async def scenario():
        app = make_app(machine, disks=("demo-pc.img", drive), scan_partitions=True)
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("g")
            picker = await wait_screen(pilot, PlacePickerScreen)
            text = screen_text(app)
            assert f"{drive}p1 (OLD-BACKUPS):/Backups/demo-pc.vhdx" in text and "VHDX image, " in text
            assert "Lifeboat repository · 1 snapshot" in text
            from textual.widgets import OptionList

            picker.query_one(OptionList).highlighted = next(i for i, p in enumerate(picker.places) if p.is_image)
            await pilot.press("enter")
            await wait_screen(pilot, PartitionPickerScreen, timeout=60)
            assert "demo-root  ext4  " in screen_text(app)
            await pilot.press("enter")
            browser = await wait_screen(pilot, FileBrowserScreen)
            for name in ("home", "alice"):
                await pilot.press(*name)
                await pilot.press("enter")
                await wait_for(pilot, lambda: browser.folder.name == name)
            await pilot.press("enter")                    # into Documents; every file marked
            await wait_for(pilot, lambda: browser.folder.name == "Documents")
            files = [e for e in browser.entries if e.kind == "file"]
            assert files and len(files) == len(browser.entries)
            await pilot.press(*["space"] * len(files))
            await wait_for(pilot, lambda: len(browser.marked) == len(files) and None not in browser.marked.values())
            assert f"Marked: {len(files)} items" in screen_text(app)
            await copy_and_close(pilot, dest)

    from tui.screens.file_browser import FileBrowserScreen
    from tui.screens.partition_picker import PartitionPickerScreen

    asyncio.run(scenario())
    start, size = root_partition(machine / "demo-pc.img")
    want = fi.ext_tree(machine / "demo-pc.img", start, size)
    (copied,) = dest.iterdir()
    got = fi.tree_hashes(copied)
    assert got and got == {k[len("home/alice/Documents/"):]: v for k, v in want.items()
                           if k.startswith("home/alice/Documents/")}


def test_names_an_exfat_stick_cannot_hold_are_renamed_and_listed(machine, tmp_path, loops):
    """A backed-up ext4 holding names exFAT refuses (`:` and `?`, a trailing dot, two names
    that differ only in case) copied through the TUI onto an exFAT stick: each is renamed, the
    result screen lists old -> new, and every file's content is what was saved. The same
    laptop's partition list shows its swap with a plain note and its Windows NTFS as
    `Windows (C:)`."""
    from tests import diskimages as di
    from tests.integration.engine_fixtures import lifeboat
    from tui.screens.partition_picker import PartitionPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    MiB = 1024 * 1024
    tree = tmp_path / "tree"
    (tree / "Taxes").mkdir(parents=True)
    (tree / "Taxes" / "Taxes 2025: final?.pdf").write_bytes(b"%PDF final\n" * 1000)
    (tree / "Taxes" / "draft.").write_text("a trailing dot\n")
    (tree / "Taxes" / "plain.txt").write_text("kept as it is\n")
    (tree / "Taxes" / "Notes.txt").write_text("capital N\n")      # exFAT holds one of these two
    (tree / "Taxes" / "notes.txt").write_text("small n\n")
    part = fi.make_ext4(tmp_path / "part.img", 24 * MiB, tree, label="data")
    swap = fi.make_swap(tmp_path / "swap.img", 4 * MiB)
    win_tree = tmp_path / "win-tree"
    (win_tree / "Windows" / "System32").mkdir(parents=True)
    (win_tree / "Windows" / "System32" / "hal.dll").write_bytes(b"MZ" + bytes(4000))
    win = fi.make_ntfs(tmp_path / "win.img", 16 * MiB, win_tree, label="Windows")
    di.make_disk(machine / "laptop.img", 48 * MiB, "gpt", [di.PartSpec(4 * MiB, di.LINUX_SWAP, content=str(swap)),
                                                           di.PartSpec(24 * MiB, di.LINUX_FS, content=str(part)),
                                                           di.PartSpec(16 * MiB, di.BASIC_DATA, content=str(win))])
    for made in (part, swap, win):
        made.unlink()
    lifeboat("repo", "init", machine / "laptop-repo")
    lifeboat("backup", machine / "laptop.img", "--repo", machine / "laptop-repo", "--name", "laptop")

    stick = tmp_path / "stick.img"
    subprocess.run(["truncate", "-s", "32M", str(stick)], check=True)
    subprocess.run(["mkfs.exfat", "-L", "STICK", str(stick)], check=True, capture_output=True)
    mnt = tmp_path / "stick"
    mnt.mkdir()
    subprocess.run(["mount.exfat-fuse", loops.attach(stick), str(mnt)], check=True, capture_output=True)
    listed = []
    try:
        async def scenario():
            app = make_app(machine, disks=("laptop.img",), repo="laptop-repo")
            async with app.run_test(size=(80, 25)) as pilot:
                await ready(pilot)
                await pilot.press("g")
                await wait_screen(pilot, PlacePickerScreen)
                await pilot.press("enter")
                await wait_screen(pilot, SnapshotPickerScreen)
                await pilot.press("enter")
                picker = await wait_screen(pilot, PartitionPickerScreen)
                # Swap is shown, with a plain note, and cannot be chosen; the ext4 is highlighted.
                assert "lifeboat-swap  swap  4.0 MiB" in screen_text(app)
                assert "Lifeboat cannot look inside this filesystem" in screen_text(app)
                # The NTFS holding Windows/System32 is shown as Windows shows it: label, letter.
                assert "Windows (C:)  NTFS  16.0 MiB" in screen_text(app)
                from textual.widgets import OptionList

                options = picker.query_one(OptionList)
                assert options.get_option("0").disabled and not options.get_option("1").disabled
                await pilot.press("enter")
                await mark_in_browser(pilot, "Taxes")
                await copy_marked(pilot, mnt)
                result = await wait_screen(pilot, ResultScreen, timeout=60)
                assert result.title_text == "Files copied"
                text = screen_text(app)
                assert "3 name(s) the drive cannot hold were changed (listed below)." in text
                listed.extend(result.damaged)
                await pilot.press("escape")
                await wait_for(pilot, lambda: not views(), what="the view unmounted")

        asyncio.run(scenario())
        (copied,) = mnt.iterdir()
        assert sorted(listed) == ["Renamed: /Taxes/Taxes 2025: final?.pdf → Taxes 2025_ final_.pdf",
                                  "Renamed: /Taxes/draft. → draft",
                                  "Renamed: /Taxes/notes.txt → notes (2).txt"]
        got = fi.tree_hashes(copied / "Taxes")
        want = fi.tree_hashes(tree / "Taxes")
        assert got == {"Taxes 2025_ final_.pdf": want["Taxes 2025: final?.pdf"], "draft": want["draft."],
                       "plain.txt": want["plain.txt"], "Notes.txt": want["Notes.txt"],
                       "notes (2).txt": want["notes.txt"]}
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_backup_drive_pulled_out_mid_copy(tmp_path, loops):
    """The repository on a USB drive that stops answering (EIO, as a pulled drive) halfway
    through a copy in the TUI: the result says, in plain words, that the copy stopped and why,
    names the file being copied (removed, not left cut short), and every file it left is whole."""
    from tests.conftest import run
    from tests.integration.faulty_disk import faulty_disk
    from tests.loop.test_browse_repo_pulled import repository_on_a_stick
    from tui.app import create_app
    from tui.screens.partition_picker import PartitionPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.result import ResultScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    disk, stick, want, pack_bytes = repository_on_a_stick(tmp_path)
    dest = tmp_path / "usb"
    dest.mkdir()
    seen = {}
    with faulty_disk(stick, tmp_path / "fuse", "--fail-reads-after", str(pack_bytes // 2), "--errno", "EIO") as img:
        dev = loops.attach(img, read_only=True)
        drive = tmp_path / "drive"
        drive.mkdir()
        run("mount", "-o", "ro,noload", dev, drive)
        try:
            async def scenario():
                app = create_app(str(drive / "repo"), [str(disk)], system_disks=False, scan_partitions=False,
                                 live=False, demo=False)
                async with app.run_test(size=(80, 25)) as pilot:
                    await ready(pilot)
                    await pilot.press("g")
                    await wait_screen(pilot, PlacePickerScreen)
                    await pilot.press("enter")
                    await wait_screen(pilot, SnapshotPickerScreen)
                    await pilot.press("enter")
                    await wait_screen(pilot, PartitionPickerScreen)
                    await pilot.press("enter")
                    await mark_in_browser(pilot, "docs")
                    await copy_marked(pilot, dest)
                    result = await wait_screen(pilot, ResultScreen, timeout=120)
                    seen["title"], seen["text"], seen["listed"] = result.title_text, screen_text(app), result.damaged
                    await pilot.press("escape")
                    await wait_for(pilot, lambda: not views(), what="the view unmounted")

            asyncio.run(scenario())
        finally:
            # The view's last reads of the drive may still be ending (a loaded machine): wait for
            # the drive to be let go, so that the faulty file under it can be unmounted too.
            for _ in range(40):
                if subprocess.run(["umount", str(drive)], capture_output=True).returncode == 0 \
                        or not os.path.ismount(drive):
                    break
                time.sleep(0.25)
            loops.detach_all()              # before the FUSE file goes, or it cannot unmount

    assert seen["title"] == "Files copied, in part"
    assert "The copy stopped: the backup's drive could not be read any more (" in seen["text"]
    assert "Was it removed?" in seen["text"]
    (cut,) = seen["listed"]
    assert cut.startswith("Could not read: /docs/photo") and "(the copy was removed)" in cut
    (copied,) = dest.iterdir()
    got = fi.tree_hashes(copied / "docs")
    assert cut.split()[3].removeprefix("/docs/") not in got and cut.split()[3].startswith("/docs/photo")
    assert got and all(got[name] == want[name] for name in got)      # every file left is whole
    assert len(got) < len(want)                                        # the drive went mid-copy


def test_get_files_back_asks_which_computer_when_a_repository_holds_several(machine):
    """Repository -> computer -> snapshot -> partition: with two computers' backups in the
    repository, the computer is asked for, and the browser opens on the one chosen."""
    from recovery.backup import backup
    from recovery.repo.repository import Repository
    from tui.screens.file_browser import FileBrowserScreen
    from tui.screens.name_picker import NamePickerScreen
    from tui.screens.partition_picker import PartitionPickerScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    repo = Repository.open(machine / "repo")
    backup(str(machine / "demo-pc.img"), repo, "office-pc")
    repo.close()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("g")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            await wait_screen(pilot, NamePickerScreen)
            text = screen_text(app)
            assert "demo-pc" in text and "office-pc" in text
            await pilot.press("down", "enter")
            history = await wait_screen(pilot, SnapshotPickerScreen)
            assert [x.name for x in history.snapshots] == ["office-pc"]
            await pilot.press("enter")
            await wait_screen(pilot, PartitionPickerScreen)
            assert "Inside “office-pc”" in screen_text(app)
            await pilot.press("enter")
            browser = await wait_screen(pilot, FileBrowserScreen)
            await wait_for(pilot, lambda: "home" in row_names(browser))
            assert "“office-pc”" in screen_text(app)
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: not views(), what="the view unmounted on quit")

    asyncio.run(scenario())


def test_result_says_the_copy_stopped_when_the_backups_drive_went_away(tmp_path):
    from recovery.browse.files import CopyResult
    from tui.get_files import result_lines

    result = CopyResult(str(tmp_path), files=3, bytes=3000, unreadable=[("/a.jpg", "Input/output error (the copy was removed)")],
                        stopped="cannot read /mnt/repo/packs/x.pack: Input/output error")
    lines, listed = result_lines(result, tmp_path)
    assert lines[0].startswith("3 files (")
    assert lines[1].startswith("The copy stopped: the backup's drive could not be read any more (cannot read "
                               "/mnt/repo/packs/x.pack: Input/output error). Was it removed?")
    assert listed == ["Could not read: /a.jpg (Input/output error (the copy was removed))"]
    damaged_only = CopyResult(str(tmp_path), files=3, unreadable=[("/a.jpg", "Input/output error")])
    assert "could not be read from the backup" in result_lines(damaged_only, tmp_path)[0][1]


def test_partition_picker_shows_the_drive_letter_when_known():
    from recovery.sources.base import SourcePartition
    from tui.screens.partition_picker import partition_prompt

    win = SourcePartition(number=3, start=0, size=238 * 10**9, fs="ntfs", label="Windows",
                          uuid=None, used_bytes=10**9, whole=False)
    assert partition_prompt(win, "C:").plain.startswith("Windows (C:)  NTFS  ")
    assert partition_prompt(win).plain.startswith("Windows  NTFS  ")
    data = SourcePartition(number=4, start=0, size=10**9, fs="ntfs", label=None, uuid=None, used_bytes=0, whole=False)
    assert partition_prompt(data).plain.startswith("Partition 4  NTFS  ")


def test_files_back_from_a_clonezilla_image_typed_as_a_folder(machine, tmp_path, tmp_path_factory):
    """Get files back takes an image another tool made: typed as a folder, it goes straight to
    its partitions; the ext4 one is browsed and one folder copied, every byte compared."""
    from tests import clonezilla_images as cz
    from tests.conftest import LoopDevices
    from tui.screens.partition_picker import PartitionPickerScreen
    from tui.screens.place_picker import PlacePickerScreen

    work = tmp_path_factory.mktemp("cz")
    loops = LoopDevices(work)
    try:
        disk, folder = cz.clonezilla_image("linux", "zstd-split", loops, work)
    finally:
        loops.detach_all()
    dest = tmp_path / "usb"
    dest.mkdir()

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            await pilot.press("g")
            await wait_screen(pilot, PlacePickerScreen)
            await type_folder(pilot, folder)
            picker = await wait_screen(pilot, PartitionPickerScreen)
            assert "Clonezilla" in screen_text(app) or "rootfs" in screen_text(app)
            ext4 = next(i for i, p in enumerate(picker.partitions) if p.fs == "ext4")
            from textual.widgets import OptionList
            picker.query_one(OptionList).highlighted = ext4
            await pilot.press("enter")
            await mark_in_browser(pilot, "one")
            await copy_and_close(pilot, dest)

    asyncio.run(scenario())
    start = next(p for p in json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, text=True,
                                                      check=True).stdout)["partitiontable"]["partitions"]
                 if p["node"].endswith("2"))["start"] * 512
    want = fi.ext_tree(disk, start)
    (copied,) = dest.iterdir()
    got = fi.tree_hashes(copied / "one")
    assert got and got == {k[len("one/"):]: v for k, v in want.items() if k.startswith("one/")}
