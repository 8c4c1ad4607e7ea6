"""The TUI opens an encrypted repository: it asks for the passphrase (masked), says when it
is wrong and asks again, and keeps it nowhere on disk."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from textual.widgets import DataTable, Input

from tests.integration.engine_fixtures import ROOT
from tests.tui.helpers import make_app, ready, screen_text, wait_screen

pytestmark = pytest.mark.tui
PASSPHRASE = "harbour-lights-at-dusk"


def cli(*args):
    subprocess.run([sys.executable, "-m", "recovery", *map(str, args)], cwd=ROOT, check=True, capture_output=True)


def test_restore_asks_for_the_passphrase_until_it_is_right(machine, tmp_path):
    from tui.screens.passphrase_prompt import PassphrasePrompt
    from tui.screens.place_picker import PlacePickerScreen
    from tui.screens.snapshot_picker import SnapshotPickerScreen

    secret = tmp_path / "pass"
    secret.write_text(PASSPHRASE + "\n")
    repo = machine / "enc-repo"
    cli("repo", "init", repo, "--encrypt", "--passphrase-file", secret, "--kdf-memory", "8", "--kdf-iterations", "1")
    cli("backup", machine / "demo-pc.img", "--repo", repo, "--passphrase-file", secret)
    secret.unlink()

    async def scenario():
        app = make_app(machine, repo="enc-repo")
        async with app.run_test(size=(80, 25)) as pilot:
            await ready(pilot)
            assert "1 backup repository (1 snapshot)" in screen_text(app)
            await pilot.press("r")
            await wait_screen(pilot, PlacePickerScreen)
            await pilot.press("enter")
            prompt = await wait_screen(pilot, PassphrasePrompt)
            field = prompt.query_one(Input)
            assert field.password
            assert "encrypted" in screen_text(app)
            field.value = "not the passphrase"
            await pilot.press("enter")
            await pilot.pause(0.2)
            again = await wait_screen(pilot, PassphrasePrompt)
            assert again is not prompt and again.wrong
            assert "That passphrase is wrong" in screen_text(app)
            again.query_one(Input).value = PASSPHRASE
            assert PASSPHRASE not in screen_text(app)            # masked
            await pilot.press("enter")
            history = await wait_screen(pilot, SnapshotPickerScreen)
            assert history.query_one(DataTable).row_count == 1
            assert "demo-pc" in screen_text(app)
            # opened again in this run (a backup opens it twice): not asked again
            reopened = await app.blocking(app.session.open_repository, app.session.repositories()[0])
            assert reopened.sealer is not None
            reopened.close()

    asyncio.run(scenario())
    for path in list(machine.rglob("*")) + list(tmp_path.rglob("*")):
        if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
            assert PASSPHRASE.encode() not in path.read_bytes(), path
