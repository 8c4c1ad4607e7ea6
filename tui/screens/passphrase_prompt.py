"""Ask for an encrypted repository's passphrase: masked, kept in memory only for the unlock."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PassphrasePrompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, where: str, wrong: bool = False):
        super().__init__()
        self.where, self.wrong = where, wrong

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-error" if self.wrong else "-info"):
            yield Static("Passphrase", classes="dialog-title")
            if self.wrong:
                yield Static("That passphrase is wrong. Type it again (capital letters count).",
                             id="wrong", markup=False)
            yield Static(f"The backups at {self.where} are encrypted. Type their passphrase.", markup=False)
            yield Input(password=True, id="passphrase")
            yield Static("Enter: unlock · Esc: back", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value:
            self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
