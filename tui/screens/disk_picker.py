"""Pick a disk: each one drawn as a map; disks that must not be chosen are shown but disabled."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option
from rich.console import Group
from rich.text import Text

from recovery.model.disk import DiskInfo
from tui.widgets.disk_map import DiskMapRenderable, from_disk


class DiskPickerScreen(Screen[DiskInfo | None]):
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, title: str, hint: str, disks: list[DiskInfo],
                 refusals: dict[str, str] | None = None, step: str = "",
                 usage: dict[str, dict[int, int]] | None = None):
        """``refusals`` maps a disk's path to why it cannot be chosen; ``usage`` a disk's path
        to the bytes used per partition."""
        super().__init__()
        self.usage = usage or {}
        self.title_text, self.hint, self.disks = title, hint, disks
        self.refusals = refusals or {}
        self.step = step

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static(self.title_text + (f"  [{self.step}]" if self.step else ""), classes="screen-title",
                     markup=False)
        yield Static(self.hint, classes="hint", markup=False)
        options = []
        for i, disk in enumerate(self.disks):
            why = self.refusals.get(disk.path)
            parts = [DiskMapRenderable(from_disk(disk, used=self.usage.get(disk.path)))]
            if why:
                parts.append(Text(f"Cannot be chosen: {why}.", "italic"))
            options.append(Option(Group(*parts), id=str(i), disabled=bool(why)))
            options.append(None)
        if not options:
            options = [Option("No disks found.", disabled=True)]
        yield OptionList(*options[:-1] if options[-1] is None else options, id="disks")
        yield Footer()

    def on_mount(self) -> None:
        options = self.query_one("#disks", OptionList)
        options.focus()
        choosable = [i for i in range(options.option_count) if not options.get_option_at_index(i).disabled]
        options.highlighted = choosable[0] if choosable else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_id is not None:
            self.dismiss(self.disks[int(event.option_id)])

    def action_back(self) -> None:
        self.dismiss(None)
