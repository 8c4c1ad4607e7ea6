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


