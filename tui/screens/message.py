"""A dialog with a plain message: errors from the engine (with the log's path), or notes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class MessageDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(self, title: str, message: str, *, log_path: str | None = None, error: bool = True):
        super().__init__()
        self.title_text = title
        self.message = message
        self.log_path = log_path
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-error" if self.error else "-info"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.message, id="message", markup=False)
            if self.log_path:
                yield Static(f"Details are in {self.log_path}", id="log-path", markup=False)
            yield Button("OK", compact=True, id="ok", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#ok", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
