"""A new repository's last question: encrypt it? A passphrase typed twice (masked) makes it
encrypted; both fields left empty make a plain one. The passphrase lives only in memory."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from recovery.repo.keys import MIN_PASSPHRASE
from tui.screens.message import MessageDialog


class NewRepositoryDialog(ModalScreen[str | None]):
    """Dismisses with the passphrase, "" for no encryption, or None (back)."""

    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-info"):
            yield Static("New repository: encrypt it?", classes="dialog-title")
            yield Static(f"A new repository will be made at {self.where}. With a passphrase, only someone "
                         "who knows it (or has its recovery code) can read these backups. Leave both "
                         "fields empty for no encryption.", markup=False)
            yield Input(password=True, id="first", placeholder="passphrase (empty: not encrypted)", compact=True)
            yield Input(password=True, id="second", placeholder="the same passphrase again", compact=True)
            yield Static("", id="problem", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Back", compact=True, id="back")
                yield Button("Make it", compact=True, id="make", variant="success")

    def on_mount(self) -> None:
        self.query_one("#first", Input).focus()

    def _say(self, text: str) -> None:
        self.query_one("#problem", Static).update(text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "first" and event.value:
            self.query_one("#second", Input).focus()
        else:
            self.action_make()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "make":
            self.action_make()
        else:
            self.action_cancel()

    def action_make(self) -> None:
        first = self.query_one("#first", Input).value
        second = self.query_one("#second", Input).value
        if not first and not second:
            self.dismiss("")
            return
        if len(first) < MIN_PASSPHRASE:
            self._say(f"A passphrase needs at least {MIN_PASSPHRASE} characters.")
            self.query_one("#first", Input).focus()
            return
        if first != second:
            self._say("The two passphrases differ. Type the same one twice.")
            self.query_one("#second", Input).value = ""
            self.query_one("#second", Input).focus()
            return
        self.dismiss(first)

    def action_cancel(self) -> None:
        self.dismiss(None)


class RecoveryCodeDialog(MessageDialog):
    """The recovery code of a repository just made, shown this once."""

    def __init__(self, code: str):
        super().__init__("Recovery code (shown only this once)", code, error=False)
        self.code = code

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-info"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(code_lines(self.code), id="code", markup=False)
            yield Static("It opens these backups if the passphrase is forgotten. Print it or write it down "
                         "now, and keep it apart from the backups (not on the same drive, not in the same "
                         "bag). Lifeboat keeps no copy of it.", markup=False)
            yield Button("I have written it down", compact=True, id="ok", variant="primary")


def code_lines(code: str) -> str:
    """The code in two lines of whole groups, so no group is broken where the dialog wraps
    (the dashes are part of it either way: the engine ignores them and spaces)."""
    groups = code.split("-")
    half = (len(groups) + 1) // 2
    return "-".join(groups[:half]) + "-\n" + "-".join(groups[half:])
