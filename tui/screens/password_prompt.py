"""Ask for the password of a network location's account (an SSH server's): masked, handed to
the engine for this login only. After a refused login it says so plainly and asks again."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class PasswordPrompt(ModalScreen["str | None"]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, who: str, refused: int = 0, tries: int = 3):
        super().__init__()
        self.who, self.refused, self.tries = who, refused, tries

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-error" if self.refused else "-info"):
            yield Static("Password", classes="dialog-title")
            if self.refused:
                yield Static(f"The server refused the login: the password is wrong. Type it again "
                             f"(try {self.refused + 1} of {self.tries}).", id="refused", markup=False)
            yield Static(f"The password of {self.who}:", markup=False)
            yield Input(password=True, id="password")
            with Horizontal(classes="buttons"):
                yield Button("Log in", compact=True, id="login", variant="primary")
                yield Button("Cancel", compact=True, id="cancel")

    def on_mount(self) -> None:
        self.query_one("#password", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value:
            self.dismiss(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        value = self.query_one("#password", Input).value
        if event.button.id == "cancel":
            self.dismiss(None)
        elif value:
            self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
