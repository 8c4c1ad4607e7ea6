"""Pick a machine: a repository may hold the backups of many computers."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from tui import humanize


class NamePickerScreen(Screen[str | None]):
    BINDINGS = [Binding("escape", "back", "Back")]

    def __init__(self, snapshots: list, step: str = ""):
        super().__init__()
        self.by_name: dict[str, list] = {}
        for s in snapshots:
            self.by_name.setdefault(s.name, []).append(s)
        self.step = step

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Which computer?" + (f"  [{self.step}]" if self.step else ""), classes="screen-title")
        yield Static("This repository holds backups of several computers.", classes="hint")
        options = []
        for name, snaps in sorted(self.by_name.items()):
            t = Text(name, "bold")
            t.append(f"\n  {len(snaps)} snapshot{'' if len(snaps) == 1 else 's'}, "
                     f"latest {humanize.when(snaps[-1].created)}")
            options.append(Option(t, id=name))
        yield OptionList(*options, id="names")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#names", OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option_id)

    def action_back(self) -> None:
        self.dismiss(None)
