"""The last gate before a restore writes: the person types the target disk's name."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from tui import humanize
from tui.widgets.disk_map import display_path


class ConfirmScreen(Screen[bool]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, target, step: str = "", name: str | None = None):
        """``name``: what must be typed (the job's ``confirm_name``); the target's name by default."""
        super().__init__()
        self.target, self.step = target, step
        self.name_to_type = name or target.name

    def compose(self) -> ComposeResult:
        t = self.target
        yield Header(show_clock=False, icon="")
        yield Static("Confirm: erase the target disk" + (f"  [{self.step}]" if self.step else ""),
                     classes="screen-title -bad")
        with Vertical(id="confirm"):
            what = Text()
            what.append("Everything on ", "bold")
            what.append(display_path(t.path), "bold red")
            what.append(f" ({humanize.size(t.size)}"
                        + (f", {t.model}" if t.model else "") + (f", serial {t.serial}" if t.serial else "")
                        + ") will be replaced by the backup.", "bold")
            yield Static(what)
            yield Static(Text.assemble("To go ahead, type the disk's name: ", (self.name_to_type, "bold reverse")))
            yield Input(placeholder="type the name here", id="typed")
            yield Static("", id="mismatch", classes="error")
            yield Static("Enter: restore · Esc: back, nothing is written", classes="hint")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#typed", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.name_to_type:
            self.dismiss(True)
        else:
            self.query_one("#mismatch", Static).update(
                f"That is not the name. Type {self.name_to_type} exactly, or press Esc.")

    def action_back(self) -> None:
        self.dismiss(False)
