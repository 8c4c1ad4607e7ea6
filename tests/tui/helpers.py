"""Helpers to drive the Lifeboat app with Pilot in tests."""

from __future__ import annotations

import time
from pathlib import Path


def make_app(machine: Path, disks=("demo-pc.img", "new-disk.img"), repo: str | None = "repo", **kw):
    from tui.app import create_app

    kw.setdefault("system_disks", False)
    kw.setdefault("scan_partitions", False)
    kw.setdefault("live", False)
    kw.setdefault("demo", False)
    return create_app(str(machine / repo) if repo else None, [str(machine / d) for d in disks], **kw)


async def wait_for(pilot, condition, timeout: float = 30.0, what: str = "condition"):
    """Let the app run until ``condition()`` is true (workers finish, screens appear)."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.05)
        try:
            if condition():
                return
        except AssertionError:
            raise
        except Exception:
            pass
        if time.monotonic() > deadline:
            stack = [type(s).__name__ for s in pilot.app.screen_stack]
            raise AssertionError(f"timed out waiting for {what}; screens: {stack}")


async def wait_screen(pilot, screen_type, timeout: float = 30.0):
    from tui.screens.message import MessageDialog

    def arrived():
        screen = pilot.app.screen
        if isinstance(screen, MessageDialog) and not issubclass(screen_type, MessageDialog):
            raise AssertionError(f"unexpected dialog: {screen.title_text}: {screen.message}")
        return isinstance(screen, screen_type)

    await wait_for(pilot, arrived, timeout,
                   f"screen {screen_type.__name__}")
    await pilot.pause(0.05)
    return pilot.app.screen


async def ready(pilot):
    """Home is up and the first scan of disks and repositories has finished."""
    from tui.screens.home import HomeScreen

    await wait_screen(pilot, HomeScreen)
    await wait_for(pilot, lambda: not pilot.app.scanning and pilot.app.session.disks, what="scan")


def screen_text(app) -> str:
    """What the terminal shows now (the current screen and any screens behind a dialog), as text."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(  # noqa: SLF001 - same path as export_screenshot
        full=True, screen_stack=app._background_screens))
    return console.export_text()




def damage_chunk(repo_dir: Path, partition: int) -> str:
    """Overwrite 4 bytes inside the stored form of the middle data chunk of ``partition`` in the
    newest snapshot (real damage, as a failing stick does); returns the snapshot's id."""
    from recovery.repo.packs import pack_path
    from recovery.repo.repository import Repository
    from recovery.verify import chunk_table, table_ids

    repo = Repository.open(repo_dir)
    try:
        sid = repo.resolve("latest")
        part = next(p for p in repo.load_manifest(sid).partitions if p.number == partition)
        ids = list(table_ids(chunk_table(repo, part)))
        _, bid = ids[len(ids) // 2]
        loc = repo.index.get(bid)
        with open(pack_path(repo.path, loc.pack_id), "r+b") as f:
            f.seek(loc.offset + loc.stored_len // 2)
            f.write(b"\xde\xad\xbe\xef")
        # And its parity gone, so the damage stays (what verify --repair cannot fix).
        Path(f"{pack_path(repo.path, loc.pack_id)}.par").unlink(missing_ok=True)
        return sid
    finally:
        repo.close()


def interrupted_restore(repo_dir: Path, target: Path) -> None:
    """A real restore of the newest snapshot onto ``target``, stopped with its CancelToken as
    soon as the first data is written: the disk keeps the "incomplete restore" mark."""
    import pytest

    from recovery.errors import Cancelled
    from recovery.events import CancelToken, Progress
    from recovery.jobs import RestoreJob
    from recovery.repo.repository import Repository

    repo = Repository.open(repo_dir)
    try:
        job = RestoreJob(repo, "latest", str(target))
        plan = job.plan()
        token = CancelToken()

        def on_event(event) -> None:
            if isinstance(event, Progress) and event.phase == "restore" and event.done > 0:
                token.cancel()

        with pytest.raises(Cancelled):
            job.run(plan, on_event, token)
    finally:
        repo.close()


async def to_place_picker(pilot):
    """From the home screen: Back up -> the first disk offered -> the place picker, returned."""
    from tui.screens.disk_picker import DiskPickerScreen
    from tui.screens.place_picker import PlacePickerScreen

    await ready(pilot)
    await pilot.press("b")
    await wait_screen(pilot, DiskPickerScreen)
    await pilot.press("enter")
    return await wait_screen(pilot, PlacePickerScreen)


async def type_folder(pilot, path) -> None:
    """In a picker that offers "Type a folder" (t): type `path` and confirm it."""
    from textual.widgets import Input

    from tui.screens.path_prompt import PathPrompt

    await pilot.press("t")
    prompt = await wait_screen(pilot, PathPrompt)
    prompt.query_one(Input).value = str(path)
    await pilot.press("enter")
