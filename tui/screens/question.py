"""A yes/no question. Escape means no."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuestionDialog(ModalScreen[bool]):
    BINDINGS = [
        Binding("escape", "answer(False)", "No"),
        Binding("left,right,tab", "app.focus_next", "Switch", show=False),
    ]

    def __init__(self, title: str, message: str, yes: str = "Yes", no: str = "No", *, danger: bool = False):
        super().__init__()
        self.title_text, self.message, self.yes, self.no, self.danger = title, message, yes, no, danger

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="-error" if self.danger else "-info"):
            yield Static(self.title_text, classes="dialog-title", markup=False)
            yield Static(self.message, id="message", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(self.no, compact=True, id="no", variant="primary")
                yield Button(self.yes, compact=True, id="yes", variant="error" if self.danger else "default")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)
