"""Type a path: the way to name a repository folder that was not found by the scan."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class PathPrompt(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Back")]

    def __init__(self, title: str, hint: str, value: str = ""):
        super().__init__()
        self.title_text, self.hint, self.value = title, hint, value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-info"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.hint, markup=False)
            yield Input(self.value, placeholder="/media/usb/lifeboat", id="path")
            yield Static("Enter: use this folder · Esc: back", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        if value:
            self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
