"""Where copied files go: drives that are neither the backup's disk nor the repository's,
with the room each has, or a folder typed by hand."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, OptionList, Static
from textual.widgets.option_list import Option

from tui import humanize
from tui.screens.place_picker import TYPE_PATH, ChoosesAPlace
from tui.widgets.disk_map import display_path


class DestinationPickerScreen(ChoosesAPlace, Screen["object | None"]):
    """Dismisses with a Place, TYPE_PATH, or None (back)."""

    BINDINGS = [Binding("escape", "back", "Back"), Binding("t", "type_path", "Type a folder")]

    def __init__(self, places: list, need: int, step: str = ""):
        super().__init__()
        self.places, self.need, self.step = places, need, step

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="")
        yield Static("Copy the files to which drive?" + (f"  [{self.step}]" if self.step else ""),
                     classes="screen-title", markup=False)
        yield Static(f"Marked: {humanize.size(self.need)}. The backup's own disk and the drive holding the "
                     f"backups are not offered.", classes="hint", markup=False)
        options: list = []
        for i, p in enumerate(self.places):
            t = Text(p.describe() if p.partition else display_path(p.path or "?"), "bold")
            t.append(f"\n  {humanize.size(p.free)} free" + (f" · {p.fs}" if p.fs else ""))
            small = p.free is not None and p.free < self.need
            if small:
                t.append(" · not enough room", "italic")
            options.append(Option(t, id=str(i), disabled=small))
        if not options:
            options.append(Option(Text("No other drive was found: plug in a USB drive and press Esc, "
                                       "or type a folder.", "italic"), disabled=True))
        options += [None, Option("Type the path of a folder…", id=TYPE_PATH)]
        yield OptionList(*options, id="destinations")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#destinations", OptionList).focus()
