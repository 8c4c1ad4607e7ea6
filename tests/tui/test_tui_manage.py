"""Manage backups: a repository of one machine's history; a policy picked by preset and by
numbers, its preview (what goes, what it frees), then removed and pruned for real."""

from __future__ import annotations

import asyncio
import pytest
from textual.widgets import Button, DataTable, Input, Static

from recovery.repo.repository import Repository
from tests.integration.prune_history import history, new_repo, restores_exactly
from tests.tui.helpers import make_app, ready, screen_text, wait_for, wait_screen

pytestmark = pytest.mark.tui


@pytest.fixture
def kept_history(machine, monkeypatch):
    """machine/history: four backups of one small disk ("pc"), a second apart."""
    monkeypatch.setenv("LIFEBOAT_PACK_SIZE", str(256 * 1024))
    repo = new_repo(machine / "history")
    versions = machine / "versions"
    versions.mkdir()
    return repo, history(versions, repo, 4)


def preview_text(app) -> str:
    return str(app.screen.query_one("#preview", Static).content)


def set_rules(screen, **values) -> None:
    for rule in ("last", "daily", "weekly", "monthly", "yearly"):
        screen.query_one(f"#keep-{rule}", Input).value = str(values.get(rule, 0))


def test_manage_previews_then_removes_and_frees(machine, kept_history):
    from tui.screens.job import JobScreen  # noqa: F401 - the run passes through it
    from tui.screens.manage import ManageScreen
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.question import QuestionDialog
    from tui.screens.result import ResultScreen

    repo, snaps = kept_history

    async def scenario():
        app = make_app(machine, repo="history")
        async with app.run_test(size=(100, 30)) as pilot:
            await ready(pilot)
            await pilot.press("m")
            places = await wait_screen(pilot, PlacePickerScreen)
            pick = next(i for i, p in enumerate(places.places) if str(p.path).endswith("history"))
            places.query_one("#places").highlighted = pick
            await pilot.press("enter")
            screen = await wait_screen(pilot, ManageScreen)
            # The standard preset: all four were made today, so the three newest stay.
            await wait_for(pilot, lambda: "removed" in preview_text(app) or "kept" in preview_text(app),
                           what="the first preview")
            assert "1 of 4 backups are removed" in preview_text(app)
            table = screen.query_one("#snapshots", DataTable)
            assert table.row_count == 4
            oldest = [str(c) for c in table.get_row(snaps[0][0])]
            assert oldest[0] == "pc" and oldest[-1] == "REMOVE" and oldest[2].endswith(("minute", "minutes"))
            assert "last 3" in str(table.get_row(snaps[-1][0])[-1])
            # The numbers: keep only the newest.
            set_rules(screen, last=1)
            await wait_for(pilot, lambda: "3 of 4 backups are removed" in preview_text(app), what="new preview")
            assert "freeing about" in preview_text(app)
            # No rule at all: nothing can be applied.
            set_rules(screen)
            await wait_for(pilot, lambda: screen.query_one("#apply", Button).disabled, what="apply disabled")
            set_rules(screen, last=1)
            await wait_for(pilot, lambda: not screen.query_one("#apply", Button).disabled, what="apply enabled")
            screen.query_one("#apply", Button).press()
            await wait_screen(pilot, QuestionDialog)
            await pilot.click("#yes")
            result = await wait_screen(pilot, ResultScreen, timeout=120)
            text = screen_text(app)
            assert "Removed 3 backup(s); 1 kept." in text and "Freed" in text
            assert result.ok

    asyncio.run(scenario())
    r = Repository.open(repo)
    try:
        assert [s.id for s in r.snapshots()] == [snaps[-1][0]]
    finally:
        r.close()
    restores_exactly(repo, snaps[-1][0], snaps[-1][1], machine)
