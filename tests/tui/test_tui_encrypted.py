"""The TUI opens an encrypted repository: it asks for the passphrase (masked), says when it
is wrong and asks again, and keeps it nowhere on disk."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from textual.widgets import DataTable, Input

from tests.integration.engine_fixtures import ROOT
from tests.tui.helpers import make_app, ready, screen_text, wait_screen, to_place_picker, type_folder

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


def test_backup_into_a_new_encrypted_repository_shows_the_recovery_code_once(machine, tmp_path):
    """A backup to a new folder asks whether to encrypt: the passphrase typed twice (masked),
    two that differ or one too short are said and asked again; the recovery code is shown
    once, with the advice to print it; the repository made is encrypted, opens with the
    passphrase and with the recovery code, and the passphrase is nowhere on disk."""
    from recovery.repo.keys import Unlock
    from recovery.repo.repository import Repository
    from tui.screens.backup_summary import BackupSummaryScreen
    from tui.screens.new_repository import NewRepositoryDialog, RecoveryCodeDialog
    from tui.screens.result import ResultScreen

    target = machine / "stick" / "backups"
    target.parent.mkdir()
    shown: list[str] = []

    async def scenario():
        app = make_app(machine)
        async with app.run_test(size=(80, 25)) as pilot:
            await to_place_picker(pilot)
            await type_folder(pilot, target)
            await wait_screen(pilot, BackupSummaryScreen)
            await pilot.press("f10")
            dialog = await wait_screen(pilot, NewRepositoryDialog)
            first, second = dialog.query_one("#first", Input), dialog.query_one("#second", Input)
            assert first.password and second.password
            first.value = "short"
            await pilot.press("enter")                                   # Enter in the first goes to the second
            assert second.has_focus
            second.value = "short"
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert "at least 8 characters" in screen_text(app)
            first.value, second.value = PASSPHRASE, PASSPHRASE + "x"
            second.focus()
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert "The two passphrases differ" in screen_text(app) and second.value == ""
            assert PASSPHRASE not in screen_text(app)                     # masked
            second.value = PASSPHRASE
            second.focus()
            await pilot.press("enter")
            code = await wait_screen(pilot, RecoveryCodeDialog, timeout=60)
            await pilot.pause(0.2)
            text = screen_text(app)
            assert "shown only this once" in text and "Print it or" in text and "write it down now" in text
            for line in code.query_one("#code").render().plain.splitlines():   # the code, whole, on two lines
                assert line in text and len(line) > 20
            shown.append(code.code)
            await pilot.press("enter")
            await wait_screen(pilot, ResultScreen, timeout=120)
            assert "Backup finished" in screen_text(app)

    asyncio.run(scenario())
    repo = Repository.open(target, Unlock(passphrase=PASSPHRASE, terminal=False))
    try:
        assert repo.encrypted and [s.name for s in repo.snapshots()] == ["demo-pc"]
    finally:
        repo.close()
    code_file = tmp_path / "code"
    code_file.write_text(shown[0] + "\n")
    code_file.chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "recovery", "snapshots", "--repo", str(target),
                          "--recovery-code-file", str(code_file)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "demo-pc" in out.stdout, out.stderr
    for path in list(machine.rglob("*")) + list(tmp_path.rglob("*")):
        if path.is_file() and path.stat().st_size < 64 * 1024 * 1024:
            assert PASSPHRASE.encode() not in path.read_bytes(), path
